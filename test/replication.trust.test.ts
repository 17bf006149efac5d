import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { MiB } from '../host/units.js';
import { cli, homeCli, killBackground, startRun, newSite } from './support/cli.js';
import { rawDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/temp-dir.js';

/** Issue 13, "Ordinary operations": what users do to a replicated VM that must not fool the replica. */
let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-repl-trust-')));
afterAll(() => {
  killBackground();
  return cleanup();
});
const site = () => newSite(dir);

describe('a missing replica is never silently re-seeded', () => {
  it('resume-replication --resynchronize refuses a missing replica folder (an unmounted volume), creating nothing', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 8 * MiB, 5);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    await rm(join(s.replica, 'vm'), { recursive: true }); // the volume is not mounted
    s.ok('suspend-replication', 'vm'); // forcing a resync from Replicating: suspend first, as Hyper-V
    const r = s.run('resume-replication', 'vm', '--resynchronize');
    expect(r.status).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/the replica is missing/);
    expect(r.stderr).toMatch(/restore it, or run the initial replication again: vhdsync start-initial-replication vm --again/);
    expect(existsSync(join(s.replica, 'vm'))).toBe(false);
    expect(await readdir(s.replica)).toEqual([]);

    // Asked for explicitly, the initial replication builds it again.
    s.ok('start-initial-replication', 'vm', '--again');
    expect(qemuIdentical(p, join(s.replica, 'vm', 'p.img'))).toBe(true);
    expect(s.json('get-replication', 'vm').State).toBe('Replicating');
  });

  it('a missing replica disk in a folder that is there is refused the same way', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 8 * MiB, 6);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    await rm(join(s.replica, 'vm', 'p.img'));
    s.ok('suspend-replication', 'vm'); // forcing a resync from Replicating: suspend first, as Hyper-V
    const r = s.run('resume-replication', 'vm', '--resynchronize');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/p\.img: the replica is missing/);
    expect(existsSync(join(s.replica, 'vm', 'p.img'))).toBe(false);
  });
});

/** An image command (no replication home): must exit 0. */
function image(...args: string[]): string {
  const r = cli(args, { home: join(dir, 'home') });
  if (r.status !== 0) throw new Error(`vhdsync ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

describe("another VM's replica is never taken over", () => {
  it('a second home enabling a VM of the same name on the same local replica folder is refused in one line; the first VM replicates on', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 8 * MiB, 11);
    const b = await rawDisk(join(s.d, 'b.img'), 8 * MiB, 12);
    s.ok('enable-replication', 'vm', '--disk', a, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    const other = homeCli(join(s.d, 'home-other'));
    const r = other.run('enable-replication', 'vm', '--disk', b, '--replica', s.replica);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/vm[/\\]replica\.json: this replica belongs to another VM \(id [0-9a-f-]{36}\); choose another replica directory/)]);
    expect(other.run('get-replication', 'vm').status).not.toBe(0); // nothing was enabled there
    s.ok('write', 'vm', '--disk', '0', '--offset', '1M', '--length', '64K', '--pattern', '0xab');
    expect(s.json('service', '--once')[0].Cycle.Result).toBe('replicated');
    expect(qemuIdentical(a, join(s.replica, 'vm', 'a.img'))).toBe(true);
  });
});

describe('a resized disk', () => {
  it('the VM record follows a disk grown on both sides, so writes past the old end replicate', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 8 * MiB, 7);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    image('resize', p, '16M');
    image('resize', join(s.replica, 'vm', 'p.img'), '+8M');
    s.ok('suspend-replication', 'vm'); // forcing a resync from Replicating: suspend first, as Hyper-V
    expect(s.json('resume-replication', 'vm', '--resynchronize').State).toBe('Replicating');
    expect(s.json('get-replication', 'vm').ReplicatedDisks[0].VirtualSize).toBe(16 * MiB);
    // The guest writes all over the grown disk; the logs apply (no Resynchronization Required).
    const w = s.json('workload', 'vm', '--pattern', 'random', '--bytes', '2M', '--rate', 'unlimited', '--duration', '10s');
    expect(w.Triggers ?? []).toEqual([]);
    expect(s.json('get-replication', 'vm').State).toBe('Replicating');
  });

  it('a running VM holds its disks: resize is refused (exit 2, one line naming the running VM), and goes through once it stops', async () => {
    const s = await site();
    const p = join(s.d, 'p.vhd');
    image('create', p, '--size', '8M');
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    const running = await startRun(s.home, ['vm', '--socket', join(s.d, 'vm.sock')]);
    try {
      const r = cli(['resize', p, '16M'], { home: join(dir, 'home') });
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(new RegExp(`p\\.vhd is in use by process ${running.child.pid} on .*run vm`));
    } finally {
      s.ok('stop-vm', 'vm');
      await running.exited;
    }
    expect(image('resize', p, '16M')).toMatch(/-> 16 MiB/);

    // The other way round: the VM does not start while another process writes one of its disks.
    const dist = join(ROOT, 'dist', 'writer-lock.js');
    const holder = spawn(process.execPath, ['--input-type=module', '-e', `
      import { lockFile } from ${JSON.stringify(dist)};
      await lockFile(${JSON.stringify(p)}, { what: ${JSON.stringify(p)} });
      process.stdout.write('held\\n');
      setInterval(() => {}, 1000);
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((res) => holder.stdout.on('data', (d: Buffer) => d.toString().includes('held') && res()));
      const w = s.run('write', 'vm', '--offset', '0', '--length', '4K', '--pattern', '0x01');
      expect(w.status).toBe(2);
      expect(w.stderr).toMatch(new RegExp(`virtual machine 'vm' cannot start: .*p\\.vhd is in use by process ${holder.pid}`));
    } finally {
      holder.kill('SIGKILL');
    }
    await new Promise((r) => holder.once('exit', r));
    expect(s.json('write', 'vm', '--offset', '0', '--length', '4K', '--pattern', '0x01').Triggers.map((t: { Reason: string }) => t.Reason)).toEqual(['ModifiedWhileOff']);
  });

  for (const ext of ['vhd', 'vhdx']) {
    it(`${ext.toUpperCase()} primary and replica grown with vhdsync resize: one resync (the disk changed while off), then writes past the old end replicate cycle after cycle`, async () => {
      const s = await site();
      const p = join(s.d, `p.${ext}`);
      image('create', p, '--size', '8M', ...(ext === 'vhdx' ? ['--block-size', '1M'] : []));
      s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
      s.ok('write', 'vm', '--offset', '1M', '--length', '64K', '--pattern', '0xab');
      s.ok('start-initial-replication', 'vm');
      const r = join(s.replica, 'vm', `p.${ext}`);
      expect(qemuIdentical(p, r)).toBe(true);

      // Both sides grown while the VM is off, by the command the issue asked for.
      expect(image('resize', p, '24M')).toMatch(/-> 24 MiB/);
      expect(image('resize', r, '24M')).toMatch(/-> 24 MiB/);

      // The first run of the VM sees a disk changed while it was off: Resynchronization Required, once.
      const first = s.json('write', 'vm', '--offset', '20M', '--length', '64K', '--pattern', '0x5a');
      expect(first.Triggers.map((t: { Reason: string }) => t.Reason)).toEqual(['ModifiedWhileOff']);
      expect(s.json('resume-replication', 'vm', '--resynchronize').State).toBe('Replicating');
      const vm = s.json('get-replication', 'vm');
      expect(vm.ReplicatedDisks[0].VirtualSize).toBe(24 * MiB);
      expect(qemuIdentical(p, r)).toBe(true);

      // Then normal cycles: writes past the old end are tracked, shipped and applied, with no trigger.
      for (let i = 0; i < 3; i++) {
        const w = s.json('write', 'vm', '--offset', String((9 + 4 * i) * MiB), '--length', '128K', '--pattern', `0x${(0x61 + i).toString(16)}`);
        expect(w.Triggers ?? []).toEqual([]);
        const cycle = s.json('service', '--once');
        expect(cycle[0]).toMatchObject({ VMName: 'vm', State: 'Replicating', Health: 'Normal' });
        expect(qemuIdentical(p, r), `cycle ${i}`).toBe(true);
      }
      const w = s.json('workload', 'vm', '--pattern', 'random', '--bytes', '2M', '--rate', 'unlimited', '--duration', '10s');
      expect(w.Triggers ?? []).toEqual([]);
      s.ok('service', '--once');
      expect(s.json('get-replication', 'vm')).toMatchObject({ State: 'Replicating', Health: 'Normal' });
      expect(qemuIdentical(p, r)).toBe(true);
    });
  }
});
