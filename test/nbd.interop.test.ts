import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { stat, writeFile } from 'node:fs/promises';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { killBackground, newSite, startRun } from './support/cli.js';
import { rawDisk, vhdDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { imageDigest } from './support/digest.js';
import { until } from './support/until.js';

/**
 * A running VM's disks written by real NBD clients (qemu-io, qemu-img, nbdcopy from Debian's
 * qemu-utils and libnbd-bin), through `vhdsync run`, then replicated, crashed, resynchronized.
 */
let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-nbd-io-')));
afterAll(async () => {
  killBackground();
  await cleanup();
});

async function site() {
  const s = await newSite(dir);
  return { ...s, sock: join(s.d, 'vm.sock') };
}
type Site = Awaited<ReturnType<typeof site>>;

const uri = (s: Site, name: string) => `nbd+unix:///${name}?socket=${s.sock}`;
const qemuIo = (s: Site, name: string, ...cmds: string[]) =>
  execFileSync('qemu-io', ['-f', 'raw', uri(s, name), ...cmds.flatMap((c) => ['-c', c])], { encoding: 'utf8' });

/** The CLI without blocking this process (so that a client it drives keeps going). */
async function cliAsync(s: Site, ...args: string[]): Promise<{ Result: string }> {
  const r = await s.background(...args).exited;
  if (r.code !== 0) throw new Error(`vhdsync ${args.join(' ')} exited ${r.code}: ${r.stderr} ${r.stdout}`);
  return JSON.parse(r.stdout);
}

const logSize = (disk: string) => stat(`${disk}.vhdsync-track`).then((x) => x.size, () => 0);

/** qemu-io reading commands on its stdin: writes go on until `stop()` (flush, quit). */
function interactiveQemuIo(s: Site, name: string) {
  // stdbuf: qemu-io's "wrote" lines arrive as they happen, not when it exits.
  const child = spawn('stdbuf', ['-oL', 'qemu-io', '-f', 'raw', uri(s, name)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (x) => (out += x));
  child.stderr.on('data', (x) => (out += x));
  child.stdin.on('error', () => undefined);
  const exited = new Promise<number | null>((res) => child.on('close', (code) => res(code)));
  let sent = 0;
  let stopped = false;
  const pump = async () => {
    while (!stopped && child.exitCode === null) {
      const at = (sent * 192 * 1024) % (12 * MiB);
      child.stdin.write(`write -P ${0x20 + (sent % 200)} ${at} 16k\n`);
      sent++;
      // About 0.8 MB/s: a guest that keeps writing, slowly enough that a resync's log stays under 50 %
      // even on a loaded machine.
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const pumping = pump();
  return {
    written: () => (out.match(/wrote \d+\/\d+ bytes/g) ?? []).length,
    output: () => out,
    exited,
    async stop() {
      stopped = true;
      await pumping;
      child.stdin.end('flush\nquit\n');
      return exited;
    },
  };
}

describe('vhdsync run: a VM whose disks real NBD clients write', () => {
  it('qemu-io write + flush: the export equals the file; after service --once the replica equals it too', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 16 * MiB, 2);
    const b = vhdDisk(join(s.d, 'b.vhd'), 32 * MiB);
    s.ok('enable-replication', 'vm', '--disk', a, b, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    const run = await startRun(s.home, ['vm', '--socket', s.sock]);
    expect(run.output().stdout).toMatch(new RegExp(`export 0 \\(a.img, 16 MiB\\): nbd\\+unix:///0\\?socket=${s.sock}`));
    expect(qemuIo(s, '0', 'write -P 0xab 1M 64k', 'flush')).toMatch(/wrote 65536\/65536 bytes at offset 1048576/);
    qemuIo(s, 'b.vhd', 'write -P 0xcd 3M 100k', 'write -P 0xce 20M 4k', 'flush');
    expect(qemuIo(s, '1', 'read -P 0xcd 3M 100k')).toMatch(/read 102400\/102400/);
    // The export and the file agree while the VM runs (raw: qemu-img reads the file itself).
    expect(spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri(s, '0'), a]).status).toBe(0);
    // Every acknowledged write is in the tracking log (the replica only learns of writes from the log).
    expect(await logSize(a)).toBeGreaterThan(64 * 1024);
    expect(s.json('stop-vm', 'vm')).toMatchObject({ State: 'Replicating' });
    expect((await run.exited).code).toBe(0);
    const [pass] = s.json('service', '--once');
    expect(pass.Cycle.Result).toBe('replicated');
    expect(qemuIdentical(a, join(s.replica, 'vm', 'a.img'))).toBe(true);
    expect(qemuIdentical(b, join(s.replica, 'vm', 'b.vhd'))).toBe(true);
  });

  it('nbdcopy a random 64 MiB image in and back out: equal (the 50 % rule then asks for a resync); qemu-img convert from the export equals vhdsync checksum', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 64 * MiB);
    const b = vhdDisk(join(s.d, 'b.vhd'), 32 * MiB);
    s.ok('enable-replication', 'vm', '--disk', a, b, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    const src = join(s.d, 'random.img');
    const rnd = new Uint8Array(64 * MiB);
    for (let off = 0; off < rnd.byteLength; off += MiB) rnd.set(randomBytes(MiB, off / MiB + 1), off);
    await writeFile(src, rnd);
    const run = await startRun(s.home, ['vm', '--socket', s.sock]);
    execFileSync('nbdcopy', ['--flush', src, uri(s, 'a.img')]);
    const back = join(s.d, 'back.img');
    execFileSync('nbdcopy', [uri(s, '0'), back]);
    expect(qemuIdentical(back, src)).toBe(true);
    // A VHD with a few writes: qemu-img convert skips its holes (base:allocation) and still equals it.
    qemuIo(s, '1', 'write -P 0x71 5M 1M', 'write -P 0x72 17M 12k', 'flush');
    const conv = join(s.d, 'conv.img');
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri(s, '1'), conv]);
    s.ok('stop-vm', 'vm');
    await run.exited;
    expect(await imageDigest(conv)).toBe(await imageDigest(b));
    expect(qemuIdentical(a, src)).toBe(true);
    // 64 MiB written into a VM of 96 MiB: the logs passed half its disks, so the 50 % rule asks for a resync.
    s.ok('service', '--once');
    expect(s.json('get-replication', 'vm')).toMatchObject({ State: 'WaitingForStartResynchronize', ResynchronizationReason: 'TrackingLogTooLarge' });
    expect(s.json('resume-replication', 'vm', '--resynchronize').Result).toBe('completed');
    expect(qemuIdentical(join(s.replica, 'vm', 'a.img'), src)).toBe(true);
    expect(qemuIdentical(join(s.replica, 'vm', 'b.vhd'), b)).toBe(true);
  });

  it('SIGKILL of vhdsync run while qemu-io writes → TrackingLogNotClosed → resync → identical', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 16 * MiB, 4);
    s.ok('enable-replication', 'vm', '--disk', a, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    const run = await startRun(s.home, ['vm', '--socket', s.sock]);
    const io = interactiveQemuIo(s, '0');
    await until(async () => io.written() > 20, 'tracked writes over NBD', 3000);
    run.child.kill('SIGKILL');
    expect((await run.exited).signal).toBe('SIGKILL');
    await io.stop(); // qemu-io sees the server gone
    // The next run finds the crash (its stale socket is no obstacle) and keeps serving.
    const again = await startRun(s.home, ['vm', '--socket', s.sock]);
    expect(again.output().stderr).toMatch(/resynchronization required: TrackingLogNotClosed: .*end-of-log is 0 and its writer \(process \d+\) is gone/);
    expect(s.json('get-replication', 'vm')).toMatchObject({ State: 'WaitingForStartResynchronize', ResynchronizationReason: 'TrackingLogNotClosed' });
    qemuIo(s, '0', 'write -P 0x99 7M 128k', 'flush');
    expect(s.json('resume-replication', 'vm', '--resynchronize').Result).toBe('completed');
    s.ok('stop-vm', 'vm');
    expect((await again.exited).code).toBe(0);
    s.ok('service', '--once');
    expect(s.json('get-replication', 'vm')).toMatchObject({ State: 'Replicating', Health: 'Normal' });
    expect(qemuIdentical(a, join(s.replica, 'vm', 'a.img'))).toBe(true);
  });

  it('a resync while qemu-io keeps writing: the replica equals the primary once the VM stops', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 64 * MiB, 6);
    s.ok('enable-replication', 'vm', '--disk', a, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 2M 4M', a]); // changed while off
    const run = await startRun(s.home, ['vm', '--socket', s.sock]);
    expect(run.output().stderr).toMatch(/resynchronization required: ModifiedWhileOff/);
    const io = interactiveQemuIo(s, '0');
    await until(() => io.written() > 5, 'writes before the resync', 3000);
    const before = io.written();
    // Asynchronously: the test's event loop keeps qemu-io writing meanwhile.
    const resync = await cliAsync(s, 'resume-replication', 'vm', '--resynchronize', '--link', '8MB/s', '--json');
    const during = io.written() - before;
    expect(resync.Result).toBe('completed');
    expect(during).toBeGreaterThan(0); // the guest wrote while the resync ran
    await until(() => io.written() > before + during + 10, 'writes after the resync', 3000);
    expect(await io.stop()).toBe(0);
    s.ok('stop-vm', 'vm');
    await run.exited;
    const [pass] = s.json('service', '--once');
    expect(pass.Cycle.Result).toBe('replicated');
    expect(qemuIdentical(a, join(s.replica, 'vm', 'a.img'))).toBe(true);
  });

  it('the 50 % rule holds for writes over NBD: logs past half the disks require a resync', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 4 * MiB);
    s.ok('enable-replication', 'vm', '--disk', a, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    const run = await startRun(s.home, ['vm', '--socket', s.sock]);
    qemuIo(s, '0', 'write -P 0x41 0 1M', 'write -P 0x42 1M 1M', 'write -P 0x43 0 1M', 'flush');
    await until(() => s.json('get-replication', 'vm').State === 'WaitingForStartResynchronize', 'the 50 % rule', 3000);
    expect(s.json('get-replication', 'vm').ResynchronizationReason).toBe('TrackingLogTooLarge');
    s.ok('stop-vm', 'vm');
    await run.exited;
  });

  it('planned failover needs the VM stopped; a test failover is served read-only with run --test-view', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 8 * MiB, 8);
    s.ok('enable-replication', 'vm', '--disk', a, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    const run = await startRun(s.home, ['vm', '--socket', s.sock]);
    qemuIo(s, '0', 'write -P 0x55 1M 256k', 'flush');
    const refused = s.run('start-failover', 'vm', '--planned');
    expect(refused.status).not.toBe(0);
    expect(refused.stderr).toMatch(/planned failover needs the primary VM off, and process \d+ is running 'vm'/);
    s.ok('stop-vm', 'vm');
    await run.exited;
    s.ok('service', '--once');
    s.ok('start-failover', 'vm', '--test');
    const viewSock = join(s.d, 'view.sock');
    const view = await startRun(s.home, ['vm', '--test-view', '--socket', viewSock]);
    const viewUri = `nbd+unix:///0?socket=${viewSock}`;
    expect(spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', viewUri, a]).status).toBe(0);
    const w = spawnSync('qemu-io', ['-f', 'raw', viewUri, '-c', 'write -P 1 0 4k'], { encoding: 'utf8' });
    // qemu sees the export's read-only flag and refuses to open it for writing.
    expect(w.stdout + w.stderr).toMatch(/Could not open image: Permission denied/);
    expect(execFileSync('qemu-io', ['-r', '-f', 'raw', viewUri, '-c', 'read -P 0x55 1M 256k'], { encoding: 'utf8' })).toMatch(/read 262144\/262144/);
    view.child.kill('SIGTERM');
    expect((await view.exited).code).toBe(0);
    s.ok('stop-failover', 'vm', '--test');
    s.ok('start-failover', 'vm', '--planned');
  });
});
