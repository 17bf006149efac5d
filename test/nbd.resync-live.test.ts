import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { join } from 'node:path';
import { loadCore } from '../host/core/index.js';
import { suspendReplication } from '../host/replication/control.js';
import { RunningVm } from '../host/replication/running-vm.js';
import { stopTracking } from '../host/replication/vm-logs.js';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { rawDisk } from './support/images.js';
import { replicatedVm } from './support/replicated-vm.js';
import { killBackground, newSite, startRun } from './support/cli.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { until } from './support/until.js';

/**
 * A guest writes fresh blocks of a dynamic VHD or VHDX through `vhdsync run` (real qemu-io over NBD,
 * no flush until the end) while a resynchronization or an initial replication of that running VM
 * runs. Every write acknowledged before, during and after it must reach the replica: by the compare,
 * or by the resync's tracking log, or by the next cycle. The hostile tester's F0/F0b/F0c: writes that
 * allocated blocks while the resync opened the primary were lost (Replicating/Normal, "nothing new"),
 * or a healthy primary was called corrupt ("BAT entry ... points past the end of the file").
 */
let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-nbd-live-'));
});
afterAll(async () => {
  killBackground();
  await cleanup();
});

const DISK = 32 * MiB;
const STEP = 512 * 1024;
const WRITES = DISK / STEP;

/**
 * One qemu-io on the export, writing 64 KiB at every 512 KiB (a new block every few writes), without a
 * flush. Each command is sent once the one before is acknowledged (qemu-io leaves lines that arrive
 * together unread until more input comes), 15 ms apart: the writes keep going while the resync runs.
 */
function guest(uri: string) {
  const child = spawn('stdbuf', ['-oL', 'qemu-io', '-f', 'raw', uri], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let heard = () => {};
  child.stdout.on('data', (x) => {
    out += x;
    heard();
  });
  child.stderr.on('data', (x) => (out += x));
  child.stdin.on('error', () => undefined);
  const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
  const written = () => (out.match(/wrote 65536\/65536 bytes/g) ?? []).length;
  const acknowledged = (n: number) =>
    new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`write ${n} not acknowledged in 20 s; qemu-io said: ${out.slice(-400)}`)), 20_000);
      heard = () => {
        if (written() < n) return;
        clearTimeout(timer);
        res();
      };
      heard();
    });
  const pumping = (async () => {
    for (let i = 0; i < WRITES; i++) {
      child.stdin.write(`write -P ${0x10 + i} ${i * STEP} 64k\n`);
      await acknowledged(i + 1);
      await new Promise((r) => setTimeout(r, 15));
    }
  })();
  pumping.catch(() => undefined);
  return {
    written,
    async finish() {
      await pumping;
      child.stdin.end('flush\nquit\n');
      return exited;
    },
  };
}

async function liveRun(format: 'vhd' | 'vhdx', verb: 'resync' | 'initial', before: number) {
  const s = await newSite(dir);
  const sock = join(s.d, 'vm.sock');
  const name = `d.${format}`;
  const disk = join(s.d, name);
  // Small blocks (VHD 2 MiB, VHDX 1 MiB): most writes of the guest allocate one.
  if (format === 'vhd') execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', disk, String(DISK)]);
  else execFileSync('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', disk, String(DISK)]);
  s.ok('enable-replication', 'vm', '--disk', disk, '--replica', s.replica);
  if (verb === 'resync') s.ok('start-initial-replication', 'vm');
  const run = await startRun(s.home, ['vm', '--socket', sock]);
  if (verb === 'resync') s.ok('suspend-replication', 'vm');
  const io = guest(`nbd+unix:///0?socket=${sock}`);
  await until(() => io.written() >= before, `${before} writes before the ${verb}`, 2000);
  const args = verb === 'resync' ? ['resume-replication', 'vm', '--resynchronize'] : ['start-initial-replication', 'vm'];
  const op = await s.background(...args, '--link', '8MB/s', '--json').exited;
  const during = io.written();
  expect(during).toBeGreaterThan(before); // the guest wrote while it ran
  expect(await io.finish()).toBe(0);
  expect(io.written()).toBe(WRITES);
  expect(op.stderr).not.toMatch(/corrupt|truncated|points past/);
  expect({ code: op.code, stderr: op.stderr }).toEqual({ code: 0, stderr: '' });
  expect(JSON.parse(op.stdout).Result).toBe('completed');
  s.ok('stop-vm', 'vm');
  expect((await run.exited).code).toBe(0);
  s.ok('service', '--once');
  expect(s.json('get-replication', 'vm')).toMatchObject({ State: 'Replicating', Health: 'Normal' });
  // The guest's writes are on the primary (qemu reads the file itself) ...
  expect(execFileSync('qemu-io', ['-r', '-f', format === 'vhd' ? 'vpc' : 'vhdx', '-c', `read -P ${0x10 + WRITES - 1} ${(WRITES - 1) * STEP} 64k`, disk], { encoding: 'utf8' })).toMatch(/read 65536\/65536/);
  // ... and on the replica, every one of them.
  expect(qemuIdentical(disk, join(s.replica, 'vm', name))).toBe(true);
}

describe('a running VM resynchronized while its guest allocates blocks: no acknowledged write is lost', () => {
  // Each verb on each format, the guest's first writes (block allocations pending in the VM's memory)
  // before it started early or late.
  it.each([
    ['vhd', 'resync', 2],
    ['vhd', 'initial', 20],
    ['vhdx', 'resync', 20],
    ['vhdx', 'initial', 2],
  ] as const)('%s: %s of the running VM after %i of the guest\'s writes to fresh blocks: the replica equals the primary', async (format, verb, before) => {
    await liveRun(format, verb, before);
  });
});

describe('a running VM while a resync starts', () => {
  it('a write that finds no log between the resync removing the logs and saving its state is not taken for a lost log', async () => {
    const s = await newSite(dir);
    const a = await rawDisk(join(s.d, 'a.img'), 8 * MiB);
    const rep = await replicatedVm(s.d, 'vm', [a]);
    await suspendReplication(rep, 'vm');
    const vm = await RunningVm.start(rep, 'vm');
    try {
      // As a resync's start does (resync-run.ts): in one update of the record, the logs go, then the state is saved.
      await rep.store.update('vm', async (v) => {
        await stopTracking(v);
        await vm.write(0, 0, randomBytes(4096, 1)); // no log: the VM checks whether one should be there
        await new Promise((r) => setTimeout(r, 300)); // that check runs while the update is not saved yet
        v.state = 'Resynchronizing';
      });
      await vm.settle();
      expect(vm.triggers).toEqual([]);
      expect((await rep.get('vm')).state).toBe('Resynchronizing');
    } finally {
      await vm.close();
    }
  });
});
