import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { openDisk } from '../host/disk/index.js';
import { mergeJournalPath } from '../host/disk/merge.js';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { homeCli, killBackground, startRun, background } from './support/cli.js';
import { rawDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { cliCerts, replicaServer, type CliCerts, type ServedReplica } from './support/served-replica.js';
import { imageDigest } from './support/digest.js';

// Hyper-V's failover lifecycle through the built CLI (dist/): prepare → fail over → complete or stop,
// with a local replica directory and through a replica server (mutual TLS), and killed between steps.
let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-failover-life-'));
});
afterAll(async () => {
  killBackground();
  await cleanup();
});

/** Write into a failed-over VM's running copy (a view), as the VM would. */
async function writeView(view: string, offset: number, data: Uint8Array): Promise<void> {
  const d = await openDisk(view);
  await d.write(offset, data);
  await d.close();
}

function oneLine(r: { status: number | null; stderr: string }, re: RegExp): void {
  expect(r.status).toBe(2);
  expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(re)]);
}

describe('failover lifecycle (local replica directory)', () => {
  it('prepare → stop returns to Replicating; prepare → fail over → stop rolls back (the replica as it was, cycles resume); --planned → complete commits the running copy', async () => {
    const d = join(dir, 'local');
    await mkdir(d, { recursive: true });
    const { run, ok, json } = homeCli(join(d, 'home'));
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB, 3);
    ok('enable-replication', 'vm', '--disk', a, '--replica', join(d, 'replica'));
    ok('start-initial-replication', 'vm');
    const replica = join(d, 'replica', 'vm', 'a.img');
    const view = `${replica}.failover.vhd`;
    ok('workload', 'vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '11');

    // The failover step needs a prepared primary (or --unplanned): said in one line, nothing changes.
    oneLine(run('start-failover', 'vm'), /'vm' is Replicating, not PreparedForFailover: prepare the planned failover first \(start-failover vm --prepare/);
    expect(json('start-failover', 'vm', '--prepare')).toMatchObject({ VMName: 'vm', State: 'PreparedForFailover' });
    // Prepare shipped what was left: the replica equals the primary.
    expect(qemuIdentical(a, replica)).toBe(true);
    expect(json('get-replication', 'vm')).toMatchObject({ State: 'PreparedForFailover', Health: 'Warning' });
    // A prepared primary does not run: its writes would be lost by the failover that follows.
    oneLine(run('workload', 'vm', '--bytes', '64K', '--rate', 'unlimited', '--seed', '15'), /'vm' is prepared for a planned failover .*; fail over \(start-failover vm\) or cancel it first \(stop-failover vm\)/);
    expect(json('stop-failover', 'vm')).toMatchObject({ Kind: 'prepared', State: 'Replicating' });

    // Prepare, then the failover itself: the running copy is a view over the replica.
    ok('start-failover', 'vm', '--prepare');
    const fo = json('start-failover', 'vm');
    expect(fo).toMatchObject({ Kind: 'planned', State: 'FailedOverWaitingCompletion', Point: { Kind: 'Latest' }, Disks: [view] });
    expect(await imageDigest(view)).toBe(await imageDigest(a));
    await writeView(view, 3 * MiB, randomBytes(200_000, 12));
    expect(await imageDigest(view)).not.toBe(await imageDigest(a));
    expect(json('get-replication', 'vm')).toMatchObject({ State: 'FailedOverWaitingCompletion' });
    oneLine(run('start-failover', 'vm', '--test'), /already has a planned failover in effect, waiting for completion: complete-failover vm commits it, stop-failover vm rolls it back/);
    // Stop-VMFailover: the failed-over writes go, the replica is as it was, replication resumes.
    const stopped = json('stop-failover', 'vm');
    expect(stopped).toMatchObject({ Kind: 'planned', Removed: [view], State: 'Replicating' });
    expect(existsSync(view)).toBe(false);
    expect(qemuIdentical(a, replica)).toBe(true);
    ok('workload', 'vm', '--bytes', '512K', '--rate', 'unlimited', '--seed', '13');
    expect(json('service', '--once')[0].Cycle.Result).toBe('replicated');
    expect(qemuIdentical(a, replica)).toBe(true);
    oneLine(run('stop-failover', 'vm'), /has no failover to stop: it is Replicating/);

    // --planned is prepare + failover in one; complete-failover makes the running copy the replica disk.
    const planned = json('start-failover', 'vm', '--planned');
    expect(planned).toMatchObject({ Kind: 'planned', State: 'FailedOverWaitingCompletion', Disks: [view] });
    await writeView(view, 5 * MiB, randomBytes(100_000, 14));
    const running = await imageDigest(view);
    const done = json('complete-failover', 'vm');
    expect(done).toMatchObject({ Kind: 'planned', State: 'FailedOver', Disks: [replica] });
    expect(existsSync(view)).toBe(false);
    expect(await imageDigest(replica)).toBe(running);
    expect(json('get-recovery-points', 'vm').map((p: { Kind: string }) => p.Kind)).toEqual(['Latest']);
    oneLine(run('stop-failover', 'vm'), /has no failover to stop: its planned failover is complete \(reverse-replication vm replicates back\)/);
    oneLine(run('complete-failover', 'vm'), /complete-failover needs 'vm' failed over and waiting for completion .*its failover is already complete/);
    expect(json('get-replication', 'vm')).toMatchObject({ State: 'FailedOver', Health: 'Warning' });

    // And back: the old primary becomes the replica of the failed-over disk.
    ok('reverse-replication', 'vm');
    expect(qemuIdentical(replica, a)).toBe(true);
    expect(json('get-replication', 'vm')).toMatchObject({ State: 'Replicating' });
  });

  it('an unplanned failover is rolled back by stop-failover: what the primary tracked before and during it is shipped after it', async () => {
    const d = join(dir, 'unplanned');
    await mkdir(d, { recursive: true });
    const { ok, json } = homeCli(join(d, 'home'));
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB, 4);
    ok('enable-replication', 'vm', '--disk', a, '--replica', join(d, 'replica'));
    ok('start-initial-replication', 'vm');
    const replica = join(d, 'replica', 'vm', 'a.img');
    const before = await readFile(replica);
    // Writes tracked on the primary and not shipped: the loss an unplanned failover accepts.
    ok('workload', 'vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '21');
    const fo = json('start-failover', 'vm', '--unplanned');
    expect(fo).toMatchObject({ Kind: 'unplanned', State: 'FailedOverWaitingCompletion', Disks: [`${replica}.failover.vhd`] });
    expect(Buffer.compare(await readFile(replica), before)).toBe(0);
    expect(json('service', '--once')[0].Cycle?.Result ?? 'skipped').not.toBe('replicated');
    await writeView(fo.Disks[0], 0, randomBytes(65536, 22));
    // The primary is still up and keeps writing while the failover waits: tracked as before.
    ok('workload', 'vm', '--bytes', '512K', '--rate', 'unlimited', '--seed', '23');
    expect(json('stop-failover', 'vm')).toMatchObject({ Kind: 'unplanned', State: 'Replicating' });
    expect(Buffer.compare(await readFile(replica), before)).toBe(0);
    // What the primary tracked meanwhile is shipped now: nothing was lost by failing over and back.
    expect(json('service', '--once')[0].Cycle.Result).toBe('replicated');
    expect(qemuIdentical(a, replica)).toBe(true);
  });
});

describe('the failed-over VM runs from its running copy', () => {
  it('run --failover-view serves the views writable over NBD (qemu-io); complete and stop are refused while it runs; completing keeps what the VM wrote', async () => {
    const d = join(dir, 'nbd');
    await mkdir(d, { recursive: true });
    const home = join(d, 'home');
    const { run, ok, json } = homeCli(home);
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB, 9);
    ok('enable-replication', 'vm', '--disk', a, '--replica', join(d, 'replica'));
    ok('start-initial-replication', 'vm');
    const replica = join(d, 'replica', 'vm', 'a.img');
    const early = run('run', 'vm', '--failover-view', '--socket', join(d, 'early.sock'));
    oneLine(early, /has no failover waiting for completion \(it is Replicating\)/);
    ok('start-failover', 'vm', '--planned');
    const sock = join(d, 'fo.sock');
    const served = await startRun(home, ['vm', '--failover-view', '--socket', sock]);
    const uri = `nbd+unix:///0?socket=${sock}`;
    expect(spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri, a]).status).toBe(0);
    expect(execFileSync('qemu-io', ['-f', 'raw', uri, '-c', 'write -P 0x5a 2M 256k', '-c', 'flush'], { encoding: 'utf8' })).toMatch(/wrote 262144\/262144/);
    const busy = run('complete-failover', 'vm');
    expect(busy.status).not.toBe(0);
    expect(busy.stderr.trim().split('\n')).toEqual([expect.stringMatching(/failed-over disk .*a\.img\.failover\.vhd is in use by process \d+ .*; stop the failed-over VM first/)]);
    expect(run('stop-failover', 'vm').stderr).toMatch(/in use by process \d+/);
    served.child.kill('SIGTERM');
    expect((await served.exited).code).toBe(0);
    expect(json('complete-failover', 'vm')).toMatchObject({ State: 'FailedOver' });
    expect(execFileSync('qemu-io', ['-r', '-f', 'raw', replica, '-c', 'read -P 0x5a 2M 256k'], { encoding: 'utf8' })).toMatch(/read 262144\/262144/);
    expect(qemuIdentical(a, replica)).toBe(false);
  });
});

describe('failover lifecycle killed between and inside steps', () => {
  it('complete-failover killed in its merge: stop-failover is refused (point of no return) and complete-failover again finishes', async () => {
    const d = join(dir, 'kill-complete');
    await mkdir(d, { recursive: true });
    const { run, ok, json } = homeCli(join(d, 'home'));
    const a = await rawDisk(join(d, 'a.img'), 96 * MiB, 5);
    ok('enable-replication', 'vm', '--disk', a, '--replica', join(d, 'replica'));
    ok('start-initial-replication', 'vm');
    const replica = join(d, 'replica', 'vm', 'a.img');
    const { Disks: [view] } = json('start-failover', 'vm', '--planned');
    // Enough data in the running copy that the merge takes a while.
    const v = await openDisk(view);
    for (let off = 0; off < 96 * MiB; off += 4 * MiB) await v.write(off, randomBytes(2 * MiB, 100 + off / MiB));
    await v.close();
    const want = await imageDigest(view);

    const { child, exited: closed } = background(['complete-failover', 'vm', '--home', join(d, 'home')], { home: join(d, 'home') });
    const exited = closed.then((r) => r.code);
    const journal = mergeJournalPath(view);
    let killed = false;
    for (let i = 0; i < 2000 && child.exitCode === null; i++) {
      if (existsSync(journal)) {
        child.kill('SIGKILL');
        killed = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    await exited;
    // On this machine the kill lands in the merge (96 MiB to copy); a much faster one may finish first.
    console.log(`complete-failover ${killed ? 'killed in its merge' : 'finished before the kill'}`);
    if (killed) {
      // Killed inside the merge: rolling back is no longer possible, said in one line.
      oneLine(run('stop-failover', 'vm'), /complete-failover vm has started merging .* run complete-failover vm again to finish/);
      expect(json('get-replication', 'vm')).toMatchObject({ State: 'FailedOverWaitingCompletion' });
    }
    // Whether the kill landed in the merge or after it, running it again finishes.
    const again = run('complete-failover', 'vm', '--json');
    if (killed) expect(again.status, again.stderr).toBe(0);
    expect(json('get-replication', 'vm')).toMatchObject({ State: 'FailedOver' });
    expect(existsSync(view) || existsSync(journal)).toBe(false);
    expect(await imageDigest(replica)).toBe(want);
  });

  it('start-failover killed after recording itself: stop-failover rolls it back, or start-failover again finishes it', async () => {
    const d = join(dir, 'kill-start');
    await mkdir(d, { recursive: true });
    const home = join(d, 'home');
    const { ok, json } = homeCli(home);
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB, 6);
    ok('enable-replication', 'vm', '--disk', a, '--replica', join(d, 'replica'));
    ok('start-initial-replication', 'vm');
    const replica = join(d, 'replica', 'vm', 'a.img');
    const record = join(d, 'replica', 'vm', 'failover.json');
    for (const next of ['stop-failover', 'start-failover'] as const) {
      // As a kill right after the record was written leaves it: the record, no views, the state unchanged.
      ok('start-failover', 'vm', '--unplanned');
      const rec = JSON.parse(await readFile(record, 'utf8'));
      ok('stop-failover', 'vm');
      await writeFile(record, JSON.stringify(rec));
      expect(json('get-replication', 'vm')).toMatchObject({ State: 'Replicating' });
      if (next === 'stop-failover') {
        expect(json('stop-failover', 'vm')).toMatchObject({ Kind: 'unplanned', State: 'Replicating' });
        expect(existsSync(record)).toBe(false);
      } else {
        expect(json('start-failover', 'vm', '--unplanned')).toMatchObject({ Kind: 'unplanned', State: 'FailedOverWaitingCompletion' });
        expect(json('complete-failover', 'vm')).toMatchObject({ State: 'FailedOver' });
      }
      expect(qemuIdentical(a, replica)).toBe(true);
    }
  });
});

// ---- Through a replica server ----

let certs: CliCerts;
let root: string;
let server: ServedReplica | undefined;
let port: number;
const clientFlags = () => certs.clientFlags();

describe('failover lifecycle through a replica server (mutual TLS)', () => {
  beforeAll(async () => {
    certs = cliCerts(join(dir, 'certs'), { home: join(dir, 'home') });
    root = join(dir, 'root');
    server = await replicaServer(certs, root, { home: join(dir, 'server-home') });
    port = server.port;
  });
  afterAll(() => server?.stop());

  it('prepare, fail over, stop, unplanned, complete: every step runs on the server', async () => {
    const d = join(dir, 'net');
    await mkdir(d, { recursive: true });
    const { run, ok, json } = homeCli(join(d, 'home'));
    const a = await rawDisk(join(d, 'srv.img'), 8 * MiB, 7);
    const url = `tls://127.0.0.1:${port}/fo-vm`;
    ok('enable-replication', 'fo-vm', '--disk', a, '--replica', url, ...clientFlags());
    ok('start-initial-replication', 'fo-vm');
    const replica = join(root, 'fo-vm', 'srv.img');
    const view = join(root, 'fo-vm', 'srv.img.failover.vhd');
    ok('workload', 'fo-vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '31');

    expect(json('start-failover', 'fo-vm', '--prepare')).toMatchObject({ State: 'PreparedForFailover' });
    expect(qemuIdentical(a, replica)).toBe(true);
    expect(json('start-failover', 'fo-vm')).toMatchObject({ Kind: 'planned', State: 'FailedOverWaitingCompletion', Disks: [`${url}/srv.img.failover.vhd`] });
    expect(existsSync(view)).toBe(true);
    await writeView(view, MiB, randomBytes(100_000, 32));
    expect(json('stop-failover', 'fo-vm')).toMatchObject({ Kind: 'planned', Removed: [`${url}/srv.img.failover.vhd`], State: 'Replicating' });
    expect(existsSync(view)).toBe(false);
    expect(qemuIdentical(a, replica)).toBe(true);

    ok('workload', 'fo-vm', '--bytes', '512K', '--rate', 'unlimited', '--seed', '33');
    expect(json('service', '--once')[0].Cycle.Result).toBe('replicated');
    expect(qemuIdentical(a, replica)).toBe(true);

    expect(json('start-failover', 'fo-vm', '--unplanned')).toMatchObject({ Kind: 'unplanned', State: 'FailedOverWaitingCompletion' });
    await writeView(view, 2 * MiB, randomBytes(100_000, 34));
    const running = await imageDigest(view);
    oneLine(run('reverse-replication', 'fo-vm'), /replica server/);
    expect(json('complete-failover', 'fo-vm')).toMatchObject({ Kind: 'unplanned', State: 'FailedOver', Disks: [`${url}/srv.img`] });
    expect(existsSync(view)).toBe(false);
    expect(await imageDigest(replica)).toBe(running);
    expect(qemuIdentical(a, replica)).toBe(false);
  });
});
