import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { copyFile, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { homeCli } from './support/cli.js';
import { rawDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';

// Through the built CLI (dist/): run `npx tsc -p host` first.
let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-failover-cli-'));
});
afterAll(() => cleanup());

describe('failover commands through the CLI', () => {
  it('get-recovery-points, start-failover --test / stop-failover --test, and --keep-pre-resync-point then start-failover --unplanned to it', async () => {
    const home = join(dir, 'home');
    const replica = join(dir, 'replica');
    const { run, ok } = homeCli(home);
    await mkdir(dir, { recursive: true });
    const a = await rawDisk(join(dir, 'a.img'), 4 * MiB, 7);
    ok('enable-replication', 'vm', '--disk', a, '--replica', replica);
    ok('start-initial-replication', 'vm');
    const replicaDisk = join(replica, 'vm', 'a.img');
    await copyFile(a, join(dir, 'a.before.img'));

    const points = JSON.parse(ok('get-recovery-points', 'vm', '--json').stdout) as { Kind: string; Time: string }[];
    expect(points.map((p) => p.Kind)).toEqual(['Latest']);

    ok('start-failover', 'vm', '--test');
    expect(existsSync(`${replicaDisk}.test-failover.vhd`)).toBe(true);
    ok('stop-failover', 'vm', '--test');
    expect(existsSync(`${replicaDisk}.test-failover.vhd`)).toBe(false);
    const none = run('stop-failover', 'vm', '--test');
    expect(none.status).not.toBe(0);
    expect(none.stderr.trim().split('\n')).toEqual([expect.stringMatching(/has no test failover to stop/)]);
    // A user's own file where the view goes is neither replaced nor deleted.
    await writeFile(`${replicaDisk}.test-failover.vhd`, 'my notes');
    const taken = run('start-failover', 'vm', '--test');
    expect(taken.status).toBe(2);
    expect(taken.stderr.trim().split('\n')).toEqual([expect.stringMatching(/test-failover\.vhd: a file of that name is already there and is not a view of .*a\.img; move it away/)]);
    expect(await readFile(`${replicaDisk}.test-failover.vhd`, 'utf8')).toBe('my notes');
    await rm(`${replicaDisk}.test-failover.vhd`);

    const usage = run('resume-replication', 'vm', '--keep-pre-resync-point');
    expect(usage.status).not.toBe(0);
    expect(usage.stderr).toMatch(/--keep-pre-resync-point needs --resynchronize/);

    // The primary diverges behind vhdsync's back; the resync keeps the replica before it as one point.
    const fh = await open(a, 'r+');
    await fh.write(randomBytes(256 * 1024, 99), 0, 256 * 1024, MiB);
    await fh.close();
    ok('suspend-replication', 'vm'); // forcing a resync from Replicating: suspend first, as Hyper-V
    ok('resume-replication', 'vm', '--resynchronize', '--keep-pre-resync-point');
    expect(await readFile(replicaDisk)).toEqual(await readFile(a));
    const after = JSON.parse(ok('get-recovery-points', 'vm', '--json').stdout) as { Kind: string; Time: string; PreResync?: boolean }[];
    expect(after.map((p) => [p.Kind, p.PreResync === true])).toEqual([['Latest', false], ['Standard', true]]);
    expect(ok('get-recovery-points', 'vm').stdout).toMatch(/Standard \(pre-resync\)/);

    ok('start-failover', 'vm', '--unplanned', '--point', after[1].Time);
    // An unplanned failover waits for completion (Hyper-V's FailedOverWaitingCompletion); completing it
    // makes the replica disk itself the point.
    ok('complete-failover', 'vm');
    expect(Buffer.compare(await readFile(replicaDisk), await readFile(join(dir, 'a.before.img')))).toBe(0);
  });

  it('start-failover --planned, then reverse-replication makes the old primary a replica of the failed-over disk; refused otherwise with one line', async () => {
    const d = join(dir, 'rev');
    await mkdir(d, { recursive: true });
    const home = join(d, 'home');
    const { run, ok } = homeCli(home);
    const a = await rawDisk(join(d, 'a.img'), 4 * MiB, 8);
    ok('enable-replication', 'vm', '--disk', a, '--replica', join(d, 'replica'));
    ok('start-initial-replication', 'vm');
    const early = run('reverse-replication', 'vm');
    expect(early.status).not.toBe(0);
    expect(early.stderr.trim().split('\n')).toEqual([expect.stringMatching(/reverse-replication needs 'vm' failed over with start-failover vm --planned or --unplanned; it is Replicating/)]);
    ok('start-failover', 'vm', '--planned');
    ok('complete-failover', 'vm');
    const newPrimary = join(d, 'replica', 'vm', 'a.img');
    const fh = await open(newPrimary, 'r+');
    await fh.write(randomBytes(128 * 1024, 98), 0, 128 * 1024, 2 * MiB);
    await fh.close();
    expect(qemuIdentical(newPrimary, a)).toBe(false);
    ok('reverse-replication', 'vm');
    expect(qemuIdentical(newPrimary, a)).toBe(true);
    const state = JSON.parse(ok('get-replication', 'vm', '--json').stdout);
    expect(JSON.stringify(state)).toContain('Replicating');
  });
});
