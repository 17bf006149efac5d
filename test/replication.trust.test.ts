import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { homeCli, qemuIdentical, tempDir } from './support/files.js';
import { MiB, rawDisk } from './replication.support.js';

/** Issue 13, "Ordinary operations": what users do to a replicated VM that must not fool the replica. */
let dir: string;
let cleanup: () => Promise<void>;
let n = 0;
beforeAll(async () => ({ dir, cleanup } = await tempDir('vhdsync-repl-trust-')));
afterAll(() => cleanup());

async function site() {
  const d = join(dir, `s${++n}`);
  await mkdir(d);
  const home = join(d, 'home');
  return { d, home, replica: join(d, 'replica'), ...homeCli(home) };
}

describe('a missing replica is never silently re-seeded', () => {
  it('resume-replication --resynchronize refuses a missing replica folder (an unmounted volume), creating nothing', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 8 * MiB, 5);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    await rm(join(s.replica, 'vm'), { recursive: true }); // the volume is not mounted
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
    const r = s.run('resume-replication', 'vm', '--resynchronize');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/p\.img: the replica is missing/);
    expect(existsSync(join(s.replica, 'vm', 'p.img'))).toBe(false);
  });
});

describe('a resized disk', () => {
  it('the VM record follows a disk grown on both sides, so writes past the old end replicate', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 8 * MiB, 7);
    s.ok('enable-replication', 'vm', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'vm');
    await truncate(p, 16 * MiB);
    await truncate(join(s.replica, 'vm', 'p.img'), 16 * MiB);
    expect(s.json('resume-replication', 'vm', '--resynchronize').State).toBe('Replicating');
    expect(s.json('get-replication', 'vm').ReplicatedDisks[0].VirtualSize).toBe(16 * MiB);
    // The guest writes all over the grown disk; the logs apply (no Resynchronization Required).
    const w = s.json('workload', 'vm', '--pattern', 'random', '--bytes', '2M', '--rate', 'unlimited', '--duration', '10s');
    expect(w.Triggers ?? []).toEqual([]);
    expect(s.json('get-replication', 'vm').State).toBe('Replicating');
  });
});
