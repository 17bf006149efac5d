import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openDisk } from '../host/disk/index.js';
import { loadCore } from '../host/core/index.js';
import { replicateCycle } from '../host/replication/cycle.js';
import { ExtendedReplication } from '../host/replication/extended.js';
import { RunningVm } from '../host/replication/running-vm.js';
import { ReplicationService } from '../host/service/service.js';
import { Replication } from '../host/replication/replication.js';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { homeCli, background, stopChild } from './support/cli.js';
import { rawDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { FakeClock, replicatedVm } from './support/replicated-vm.js';
import { tempDir } from './support/temp-dir.js';
import { cliCerts, replicaServer, type CliCerts, type ServedReplica } from './support/served-replica.js';

// Extended replication (issue 18): A (primary) → B (replica server) → C (extended replica, a replica
// server too), every step a real CLI process, mutual TLS between the sites. B's side runs in its own
// home (`enable-replication --extended --replica-path <B's root>`), its cycles by `service --once`.
let dir: string;
let cleanup: () => void;
let certs: string;
let tlsCerts: CliCerts;
const servers = new Set<ChildProcess>();

async function serve(root: string, port = 0): Promise<ServedReplica> {
  const server = await replicaServer(tlsCerts, root, { home: join(dir, 'server-home') }, { port });
  servers.add(server.child);
  server.child.once('exit', () => servers.delete(server.child));
  return server;
}

const kill = stopChild;

/** A CLI process in the background (for a kill at a moment of the test's choosing). */
function inBackground(args: string[]): { child: ChildProcess; done: Promise<number | null> } {
  const bg = background(args, { home: join(dir, 'home') });
  return { child: bg.child, done: bg.exited.then((r) => r.code) };
}

beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-extended-'));
  certs = join(dir, 'certs');
  tlsCerts = cliCerts(certs, { home: join(dir, 'home') });
});
afterAll(async () => {
  for (const s of [...servers]) await kill(s, 'SIGTERM');
  await cleanup();
});

const tls = () => ['--cert', join(certs, 'primary.crt'), '--key', join(certs, 'primary.key'), '--ca', join(certs, 'ca.crt')];

/** Three sites: A's disk and home, B's server root and home, C's server root; the VM replicating A → B, and enabled onward B → C. */
async function threeSites(name: string, size: number, seed: number) {
  const base = join(dir, name);
  const rootB = join(base, 'rootB');
  const rootC = join(base, 'rootC');
  await mkdir(rootB, { recursive: true });
  await mkdir(rootC, { recursive: true });
  const b = await serve(rootB);
  const c = await serve(rootC);
  const disk = await rawDisk(join(base, 'a.img'), size, seed);
  const A = homeCli(join(base, 'homeA'));
  const B = homeCli(join(base, 'homeB'));
  // Enable-VMReplication's own spellings: -ReplicaServerName / -ReplicaServerPort / -AuthenticationType.
  A.ok('enable-replication', 'vm', '--disk', disk, '-ReplicaServerName', '127.0.0.1', '-ReplicaServerPort', String(b.port), '-AuthenticationType', 'Certificate', ...tls());
  A.ok('start-initial-replication', 'vm');
  const sites = {
    base, rootB, rootC, disk, A, B, b, c,
    diskB: join(rootB, 'vm', 'a.img'),
    diskC: join(rootC, 'vm', 'a.img'),
    extendTo: () => `tls://127.0.0.1:${sites.c.port}/vm`,
    /** A's disk, B's replica and C's extended replica hold the same bytes. */
    allEqual(): boolean {
      return qemuIdentical(disk, sites.diskB) && qemuIdentical(sites.diskB, sites.diskC);
    },
    /** Writes at A and one cycle A → B. */
    writeAndShip(bytes: string, s: number) {
      A.ok('workload', 'vm', '--bytes', bytes, '--rate', 'unlimited', '--seed', String(s));
      expect(A.json('service', '--once')[0].Cycle.Result).toBe('replicated');
    },
    /** One extended cycle B → C. */
    extendedCycle() {
      const passes = B.json('service', '--once');
      expect(passes).toHaveLength(1);
      return passes[0].Extended;
    },
  };
  return sites;
}

/** Many CLI processes and three sites per test: generous on a shared 2-core machine (no wall-clock asserts). */
const SLOW = 480_000;

describe('extended replication A → B → C', () => {
  it('enable --extended on the replica side (300/900 s only), initial replication to C, cycles along the chain; Relationship Extended, Mode ExtendedReplica at C', async () => {
    const s = await threeSites('chain', 16 * MiB, 11);
    const { A, B } = s;
    expect(A.json('get-replication', 'vm')).toMatchObject({ ReplicaServerName: '127.0.0.1', ReplicaServerPort: s.b.port, AuthenticationType: 'Certificate', Relationship: 'Simple' });

    // 30 s is refused in one line; so is a place with no replica of the VM.
    const fast = B.run('enable-replication', 'vm', '--extended', '--replica-path', s.rootB, '--replica', s.extendTo(), '--frequency', '30', ...tls());
    expect(fast.status).not.toBe(0);
    expect(fast.stderr.trim().split('\n')).toEqual([expect.stringMatching(/--frequency: '30' is not a frequency for extended replication; use 300 or 900 seconds/)]);
    const nowhere = B.run('enable-replication', 'vm', '--extended', '--replica-path', s.rootC, '--replica', s.extendTo(), ...tls());
    expect(nowhere.status).not.toBe(0);
    expect(nowhere.stderr.trim().split('\n')).toEqual([expect.stringMatching(/there is no replica of 'vm' here; --extended extends a replica/)]);

    const enabled = B.json('enable-replication', 'vm', '--extended', '--replica-path', s.rootB, '--replica', s.extendTo(), '--frequency', '900', ...tls());
    expect(enabled).toMatchObject({ VMName: 'vm', Relationship: 'Extended', ReplicationRelationshipType: 'Extended', Mode: 'Replica', State: 'ReadyForInitialReplication', FrequencySec: 900, ReplicaServerPort: s.c.port });
    const initial = B.json('start-initial-replication', 'vm', '--extended');
    expect(initial).toMatchObject({ Result: 'completed', State: 'Replicating', Health: 'Normal' });
    expect(s.allEqual()).toBe(true);

    // The third site's own view: Mode ExtendedReplica, Relationship Extended (Get-VMReplication on C).
    const atC = homeCli(join(s.base, 'homeC')).json('get-replication', 'vm', '--replica-server', `tls://127.0.0.1:${s.c.port}`, ...tls());
    expect(atC).toMatchObject({ VMName: 'vm', Mode: 'ExtendedReplica', Relationship: 'Extended', State: 'Replicating' });
    // B's own view of its replica is unchanged (Replica, Simple); the extended relationship is listed with PowerShell's spelling.
    expect(B.json('get-replication', 'vm', '--replica-path', s.rootB)).toMatchObject({ Mode: 'Replica', Relationship: 'Simple' });
    expect(B.json('get-replication', 'vm', '-ReplicationRelationshipType', 'Extended')).toMatchObject({ Relationship: 'Extended', State: 'Replicating' });

    // What the primary ships to B reaches C in B's next extended cycle, cycle after cycle.
    for (const seed of [12, 13, 14]) {
      s.writeAndShip('2M', seed);
      expect(qemuIdentical(s.disk, s.diskB)).toBe(true);
      expect(qemuIdentical(s.diskB, s.diskC)).toBe(false);
      // What C lacks is pending at B (Measure-VMReplication's PendingReplicationSize: a failover to C would lose it).
      expect(B.json('measure-replication', 'vm', '--extended').PendingReplicationSize).toBeGreaterThan(2 * MiB);
      const cycle = s.extendedCycle();
      expect(cycle).toMatchObject({ Result: 'replicated' });
      expect(cycle.Sequences.length).toBeGreaterThan(0);
      expect(s.allEqual()).toBe(true);
    }
    expect(B.json('measure-replication', 'vm', '--extended')).toMatchObject({ Relationship: 'Extended', State: 'Replicating', PendingReplicationSize: 0, SuccessfulReplicationCount: 3 });
    // Logs C applied are no longer kept at B.
    expect(await readdirSafe(join(s.rootB, 'vm', 'extended-logs'))).toEqual([]);
    // A cycle with nothing new ships nothing.
    expect(s.extendedCycle()).toMatchObject({ Result: 'replicated', Sequences: [] });
    // Forcing a resync from Replicating needs a suspend first, as Hyper-V.
    const force = B.run('resume-replication', 'vm', '--extended', '--resynchronize');
    expect(force.stderr.trim().split('\n')).toEqual([expect.stringMatching(/is Replicating; to force a resynchronization, suspend it first \(vhdsync suspend-replication vm --extended\)/)]);
    expect(force.status).not.toBe(0);
    // A damaged record is one line naming the file and the field.
    const recordPath = join(s.base, 'homeB', 'extended', 'vm', 'extended.json');
    const good = await readFile(recordPath, 'utf8');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(recordPath, good.replace('"state": "Replicating"', '"state": "Sideways"'));
    const damaged = B.run('get-replication', 'vm', '--extended');
    expect(damaged.status).not.toBe(0);
    expect(damaged.stderr.trim().split('\n')).toEqual([expect.stringMatching(/extended\.json: the extended replication state is damaged \(state is not one of .*\); remove it/)]);
    // A record names no place outside the sites' folders: a folder or disk name that is a path is damage.
    for (const [field, text] of [['folder', good.replace('"folder": "vm"', '"folder": "../escape"')], ['disks[0].name', good.replace('"name": "a.img"', '"name": "../../escape.img"')]]) {
      expect(text).not.toBe(good);
      await writeFile(recordPath, text);
      const escape = B.run('service', '--once');
      expect(escape.stderr).toContain(`${field} is not a plain file name`);
      expect(existsSync(join(s.base, 'escape')) || existsSync(join(s.rootC, 'escape.img'))).toBe(false);
    }
    // A record without disks, or with its disks out of place, is damage too (nothing to replicate, or the wrong file).
    const rec = JSON.parse(good) as { disks: { index: number }[] };
    for (const [disks, detail] of [[[], 'disks is not a list of at least 1'], [[{ ...rec.disks[0], index: 3 }], 'disks[0].index is not 0']] as const) {
      await writeFile(recordPath, JSON.stringify({ ...rec, disks }));
      const r = B.run('get-replication', 'vm', '--extended');
      expect(r.status).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toEqual([expect.stringContaining(`the extended replication state is damaged (${detail})`)]);
    }
    await writeFile(recordPath, good);
    // A fourth site is refused: C is itself an extended replica.
    const fourth = homeCli(join(s.base, 'homeC')).run('enable-replication', 'vm', '--extended', '--replica-path', s.rootC, '--replica', join(s.base, 'D'));
    expect(fourth.status).not.toBe(0);
    expect(fourth.stderr.trim().split('\n')).toEqual([expect.stringMatching(/this is itself an extended replica; Hyper-V extends a replica once/)]);
  }, SLOW);

  it('a kill of B between apply and onward shipping loses no write: the applied log is kept durably, C ends up equal', async () => {
    const s = await threeSites('crash', 64 * MiB, 21);
    const { A, B } = s;
    B.ok('enable-replication', 'vm', '--extended', '--replica-path', s.rootB, '--replica', s.extendTo(), ...tls());
    B.ok('start-initial-replication', 'vm', '--extended');

    // 1. B's replica server applies a cycle and is killed before any extended cycle: the log is kept.
    s.writeAndShip('3M', 22);
    await kill(s.b.child);
    expect((await readdirSafe(join(s.rootB, 'vm', 'extended-logs'))).length).toBeGreaterThan(0);
    s.b = await serve(s.rootB, s.b.port);
    expect(s.extendedCycle()).toMatchObject({ Result: 'replicated' });
    expect(s.allEqual()).toBe(true);

    // 2. B's server killed while it applies a large cycle (or at whatever moment the kill lands):
    // the log being applied is kept before its first write, the apply is resumed by the next cycle.
    A.ok('workload', 'vm', '--bytes', '24M', '--rate', 'unlimited', '--seed', '23');
    const shipping = inBackground(['service', '--once', '--home', join(s.base, 'homeA')]);
    let caughtApplying: number | undefined;
    let keptWhileApplying = false;
    for (let i = 0; i < 20_000 && shipping.child.exitCode === null; i++) {
      const state = await readFile(join(s.rootB, 'vm', 'replica.json'), 'utf8').then(JSON.parse, () => undefined);
      if (state?.applying) {
        caughtApplying = state.applying;
        keptWhileApplying = existsSync(join(s.rootB, 'vm', 'extended-logs', `${String(state.applying).padStart(8, '0')}-0.log`));
        await kill(s.b.child);
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    await shipping.done;
    if (caughtApplying !== undefined) expect(keptWhileApplying).toBe(true);
    console.log(`kill of B's server: ${caughtApplying !== undefined ? `during the apply of cycle ${caughtApplying}` : 'missed the apply'}`);
    if (s.b.child.exitCode !== null || s.b.child.signalCode !== null) s.b = await serve(s.rootB, s.b.port);
    // The primary's next cycle resumes the apply at B (or finds it done); then B's extended cycle ships it.
    const resumed = A.json('service', '--once');
    expect(resumed[0].Cycle, JSON.stringify({ resumed, caughtApplying })).toMatchObject({ Result: 'replicated' });
    expect(qemuIdentical(s.disk, s.diskB)).toBe(true);
    expect(s.extendedCycle()).toMatchObject({ Result: 'replicated' });
    expect(s.allEqual()).toBe(true);

    // 3. B's extended cycle itself killed while it ships: the next one finishes the job.
    s.writeAndShip('16M', 24);
    const onward = inBackground(['service', '--once', '--home', join(s.base, 'homeB')]);
    await new Promise((r) => setTimeout(r, 150));
    await kill(onward.child);
    const again = s.extendedCycle();
    expect(['replicated']).toContain(again.Result);
    expect(s.allEqual()).toBe(true);
    expect(B.json('get-replication', 'vm', '--extended')).toMatchObject({ State: 'Replicating', Health: 'Normal' });
  }, SLOW);

  it('resync along the chain: C modified, B\'s onward tracking lost, B resynchronized from A, a requested one — each is found from evidence, and B↔C resync makes C equal', async () => {
    const s = await threeSites('resync', 16 * MiB, 31);
    const { A, B } = s;
    B.ok('enable-replication', 'vm', '--extended', '--replica-path', s.rootB, '--replica', s.extendTo(), ...tls());
    B.ok('start-initial-replication', 'vm', '--extended');

    // C modified behind the relationship (a restored backup, an edit): its apply refuses; resync required.
    const fh = await open(s.diskC, 'r+');
    await fh.write(randomBytes(64 * 1024, 32), 0, 64 * 1024, 5 * MiB);
    await fh.close();
    s.writeAndShip('1M', 33);
    expect(s.extendedCycle()).toMatchObject({ Result: 'resync-required', Reason: 'ReplicaLogOutOfSequence' });
    expect(B.json('get-replication', 'vm', '--extended')).toMatchObject({ State: 'WaitingForStartResynchronize', Health: 'Critical', ResynchronizationReason: 'ReplicaLogOutOfSequence' });
    const r1 = B.json('resume-replication', 'vm', '--extended', '--resynchronize');
    expect(r1).toMatchObject({ Result: 'completed', State: 'Replicating' });
    // Only the differences travel: the 64 KiB edited at C and the cycle's writes, not the 16 MiB disk.
    expect(r1.BytesSent).toBeLessThan(4 * MiB);
    expect(s.allEqual()).toBe(true);
    // Events at B: 90002 with the evidence, 29242/29244 for the resync.
    const events = (await readFile(join(s.base, 'homeB', 'events.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(events.filter((e) => e.id === 90002).map((e) => e.reason)).toEqual(['ReplicaLogOutOfSequence']);
    expect(events.some((e) => e.id === 29244 && e.result === 'completed')).toBe(true);

    // Cycles after the resync go on from its cut.
    s.writeAndShip('1M', 34);
    expect(s.extendedCycle()).toMatchObject({ Result: 'replicated' });
    expect(s.allEqual()).toBe(true);

    // B's onward tracking lost: a cycle applied at B with its kept logs gone.
    await rm(join(s.rootB, 'vm', 'extended-logs'), { recursive: true, force: true });
    s.writeAndShip('1M', 35);
    expect(s.extendedCycle()).toMatchObject({ Result: 'resync-required', Reason: 'TrackingLogWriteFailure' });
    expect(B.json('resume-replication', 'vm', '--extended', '--resynchronize')).toMatchObject({ Result: 'completed' });
    expect(s.allEqual()).toBe(true);

    // B's replica resynchronized from A (its disks changed outside the logs): the extended replica follows by a resync.
    A.ok('suspend-replication', 'vm');
    const bfh = await open(s.diskB, 'r+');
    await bfh.write(randomBytes(32 * 1024, 36), 0, 32 * 1024, 9 * MiB);
    await bfh.close();
    expect(A.json('resume-replication', 'vm', '--resynchronize')).toMatchObject({ Result: 'completed' });
    expect(qemuIdentical(s.disk, s.diskB)).toBe(true);
    expect(s.extendedCycle()).toMatchObject({ Result: 'resync-required', Reason: 'ModifiedWhileOff' });
    expect(B.json('resume-replication', 'vm', '--extended', '--resynchronize')).toMatchObject({ Result: 'completed' });
    expect(s.allEqual()).toBe(true);

    // Suspend, then resume --resynchronize: a requested resync (Hyper-V's idiom).
    B.ok('suspend-replication', 'vm', '--extended');
    expect(B.json('get-replication', 'vm', '--extended')).toMatchObject({ State: 'Suspended' });
    expect(B.json('resume-replication', 'vm', '--extended', '--resynchronize')).toMatchObject({ Result: 'completed', State: 'Replicating' });
    s.writeAndShip('1M', 37);
    expect(s.extendedCycle()).toMatchObject({ Result: 'replicated' });
    expect(s.allEqual()).toBe(true);
  }, SLOW);

  it('failover to the extended site: C becomes the running copy at its latest point; complete-failover commits it there', async () => {
    const s = await threeSites('failover', 16 * MiB, 41);
    const { B } = s;
    B.ok('enable-replication', 'vm', '--extended', '--replica-path', s.rootB, '--replica', s.extendTo(), ...tls());
    B.ok('start-initial-replication', 'vm', '--extended');
    s.writeAndShip('2M', 42);
    expect(s.extendedCycle()).toMatchObject({ Result: 'replicated' });
    expect(s.allEqual()).toBe(true);

    // At the extended site itself, from its folder alone (B unreachable): fail over, and roll back.
    await kill(s.b.child);
    const C = homeCli(join(s.base, 'homeC'));
    const atC = C.json('start-failover', 'vm', '--replica-path', s.rootC);
    expect(atC).toMatchObject({ Relationship: 'Extended', State: 'FailedOverWaitingCompletion', Disks: [join(s.rootC, 'vm', 'a.img.failover.vhd')] });
    expect(await sameBytes(atC.Disks[0], s.diskB)).toBe(true);
    expect(C.json('get-replication', 'vm', '--replica-path', s.rootC)).toMatchObject({ Mode: 'ExtendedReplica', State: 'FailedOverWaitingCompletion' });
    // B's extended cycle ships nothing while C is failed over.
    expect(s.extendedCycle()).toMatchObject({ Result: 'skipped' });
    expect(C.json('stop-failover', 'vm', '--replica-path', s.rootC)).toMatchObject({ Removed: [join(s.rootC, 'vm', 'a.img.failover.vhd')] });
    // Its text names the next steps as this site spells them (this home has no extended record: --extended alone is refused here).
    const text = C.ok('start-failover', 'vm', '--replica-path', s.rootC).stdout;
    expect(text).toContain(`commit with: vhdsync complete-failover vm --replica-path '${s.rootC}'   or roll back with: vhdsync stop-failover vm --replica-path '${s.rootC}'`);
    C.ok('stop-failover', 'vm', '--replica-path', s.rootC);
    // A replica of the primary relationship is failed over from the primary's home, not from its folder.
    const simple = C.run('start-failover', 'vm', '--replica-path', s.rootB);
    expect(simple.status).not.toBe(0);
    expect(simple.stderr.trim().split('\n')).toEqual([expect.stringMatching(/this replica is the primary's own \(Relationship Simple\): fail it over from the primary's home/)]);
    s.b = await serve(s.rootB, s.b.port);

    const points = B.json('get-recovery-points', 'vm', '--extended');
    expect(points[0]).toMatchObject({ Kind: 'Latest' });
    const planned = B.run('start-failover', 'vm', '--extended', '--planned');
    expect(planned.status).not.toBe(0);
    expect(planned.stderr.trim().split('\n')).toHaveLength(1);
    // A failover stopped before completion: C is as it was, and the cycles that follow bring it to B.
    expect(B.json('start-failover', 'vm', '--extended')).toMatchObject({ State: 'FailedOverWaitingCompletion' });
    s.writeAndShip('512K', 45);
    expect(B.json('stop-failover', 'vm', '--extended')).toMatchObject({ State: 'Replicating', Removed: [expect.stringMatching(/a\.img\.failover\.vhd$/)] });
    expect(s.extendedCycle()).toMatchObject({ Result: 'replicated' });
    expect(s.allEqual()).toBe(true);

    const out = B.json('start-failover', 'vm', '--extended');
    expect(out).toMatchObject({ Relationship: 'Extended', State: 'FailedOverWaitingCompletion', Point: { Kind: 'Latest' } });
    const view = join(s.rootC, 'vm', 'a.img.failover.vhd');
    expect(out.Disks).toEqual([`tls://127.0.0.1:${s.c.port}/vm/a.img.failover.vhd`]);
    // The running copy at C is the replica as B had it; the failed-over VM writes to it.
    expect(await sameBytes(view, s.diskB)).toBe(true);
    const v = await openDisk(view);
    await v.write(2 * MiB, randomBytes(200_000, 43));
    await v.close();
    // Extended cycles stop while C is failed over.
    s.writeAndShip('512K', 44);
    expect(s.extendedCycle()).toMatchObject({ Result: 'skipped' });

    const done = B.json('complete-failover', 'vm', '--extended');
    expect(done).toMatchObject({ State: 'FailedOver' });
    expect(existsSync(view)).toBe(false);
    expect(qemuIdentical(s.diskC, s.diskB)).toBe(false);
    const bytes = new Uint8Array(200_000);
    const c = await openDisk(s.diskC, { readOnly: true });
    await c.read(2 * MiB, bytes);
    await c.close();
    expect(Buffer.from(bytes).equals(Buffer.from(randomBytes(200_000, 43)))).toBe(true);
    expect(homeCli(join(s.base, 'homeC')).json('get-replication', 'vm', '--replica-path', s.rootC)).toMatchObject({ Mode: 'ExtendedReplica', State: 'FailedOver' });
    expect(B.json('get-replication', 'vm', '--extended')).toMatchObject({ State: 'FailedOver' });
  }, SLOW);
});

/** Both disks read through vhdsync (a failover view is a differencing VHD over a raw replica, which qemu's vpc does not open). */
describe('the extended site keeps recovery points; the service runs extended cycles every ReplicationFrequencySec', () => {
  it('failover to a point hours back makes C the replica as B had it then; complete-failover commits it', async () => {
    const d = join(dir, 'points');
    await mkdir(d, { recursive: true });
    const T0 = new Date('2026-03-02T08:00:00Z');
    const clock = new FakeClock(T0);
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB, 51);
    // A → B (a replica directory), B → C (another directory) with 4 hourly points at C.
    const rep = await replicatedVm(d, 'vm', [a], { clock });
    const ext = new ExtendedReplication(join(d, 'homeB'), { clock });
    await ext.enable({ name: 'vm', replicaPath: join(d, 'replica'), replica: join(d, 'C'), recoveryHistory: 4, frequency: 300 });
    await ext.run('vm', { initial: true });
    const copies: { sequence: number; copy: string }[] = [];
    const vm = await RunningVm.start(rep, 'vm');
    for (let i = 0; i < 4; i++) {
      clock.set(new Date(T0.getTime() + (i * 61 + 1) * 60_000));
      for (let k = 0; k < 4; k++) await vm.write(0, ((i * 5 + k) % 100) * 65536 + 512 * k, randomBytes(50_000, 100 + i * 10 + k));
      expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
      const c = await ext.cycle('vm');
      expect(c.result).toBe('replicated');
      const copy = join(d, `b.${i}.img`);
      await copyFile(join(d, 'replica', 'vm', 'a.img'), copy);
      copies.push({ sequence: c.result === 'replicated' ? c.sequences.at(-1)! : -1, copy });
    }
    await vm.close();
    const points = await ext.points('vm');
    expect(points.map((p) => p.kind)).toEqual(['Latest', 'Standard', 'Standard', 'Standard']);
    // Two hours back: the point of the second cycle.
    const back = points[2];
    const then = copies.find((c) => c.sequence === back.sequence)!;
    expect(then).toBeDefined();
    const failed = await ext.startFailover('vm', { point: back.time });
    expect(failed.rec.state).toBe('FailedOverWaitingCompletion');
    expect(await sameBytes(failed.disks[0], then.copy)).toBe(true);
    expect(await sameBytes(failed.disks[0], join(d, 'replica', 'vm', 'a.img'))).toBe(false);
    const done = await ext.completeFailover('vm');
    expect(done.rec.state).toBe('FailedOver');
    expect(await sameBytes(join(d, 'C', 'vm', 'a.img'), then.copy)).toBe(true);
  });

  it('the service runs an extended cycle when ReplicationFrequencySec has passed since the last, not before', async () => {
    const d = join(dir, 'service');
    await mkdir(d, { recursive: true });
    const clock = new FakeClock(new Date('2026-03-02T08:00:00Z'));
    const a = await rawDisk(join(d, 'a.img'), 4 * MiB, 61);
    const rep = await replicatedVm(d, 'vm', [a], { clock });
    const homeB = join(d, 'homeB');
    const ext = new ExtendedReplication(homeB, { clock });
    await ext.enable({ name: 'vm', replicaPath: join(d, 'replica'), replica: join(d, 'C'), frequency: 900 });
    await ext.run('vm', { initial: true });
    const serviceB = new ReplicationService(new Replication(homeB, { clock }));
    const vm = await RunningVm.start(rep, 'vm');
    await vm.write(0, 4096, randomBytes(8192, 62));
    await vm.close();
    expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    clock.advance(899_000);
    expect(await serviceB.pass()).toEqual([]);
    clock.advance(1000);
    expect(await serviceB.pass()).toMatchObject([{ VMName: 'vm', relationship: 'Extended', extended: { result: 'replicated' } }]);
    expect(await sameBytes(a, join(d, 'C', 'vm', 'a.img'))).toBe(true);
    expect(await serviceB.pass()).toEqual([]);
  });
});

describe("Enable-VMReplication's spellings", () => {
  it('-ReplicaServerName/-ReplicaServerPort/-AuthenticationType map onto the replica server; Kerberos, both forms at once, or nothing are one line each', async () => {
    const base = join(dir, 'spellings');
    await mkdir(base, { recursive: true });
    const disk = await rawDisk(join(base, 'a.img'), MiB);
    const A = homeCli(join(base, 'home'));
    const cases: [string[], RegExp][] = [
      [['-ReplicaServerName', '127.0.0.1', '-ReplicaServerPort', '1', '-AuthenticationType', 'Kerberos'], /--authentication-type: 'Kerberos' is not available; vhdsync authenticates with certificates only/],
      [['--replica', join(base, 'r'), '-ReplicaServerName', '127.0.0.1'], /give the replica as .* or as --replica-server-name, not both/],
      [['-ReplicaServerPort', '443'], /--replica-server-port goes with --replica-server-name/],
      [['-ReplicaServerName', '127.0.0.1', '-ReplicaServerPort', '99999'], /--replica-server-port: '99999' is not a port number/],
      [[], /give --replica DIR or tls:\/\/HOST:PORT\/NAME \(or --replica-server-name HOST\)/],
      [['--replica', join(base, 'r'), '--replica-path', base], /--replica-path goes with --extended/],
    ];
    for (const [args, line] of cases) {
      const r = A.run('enable-replication', 'vm', '--disk', disk, ...args);
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(line)]);
    }
    const ext = A.run('enable-replication', 'vm', '--extended', '--disk', disk, '--replica-path', base, '--replica', join(base, 'c'));
    expect(ext.stderr.trim().split('\n')).toEqual([expect.stringMatching(/the disks are the replica's own .*; leave out --disk/)]);
    expect(A.run('get-replication').stdout).toMatch(/No virtual machine is enabled/);
  });
});

describe('an extended replica in a folder', () => {
  it('its folder deleted: the cycle fails naming the command that copies it again (with --extended), and that command does', async () => {
    const base = join(dir, 'folders');
    await mkdir(base, { recursive: true });
    const disk = await rawDisk(join(base, 'a.img'), 4 * MiB, 31);
    const A = homeCli(join(base, 'homeA'));
    const B = homeCli(join(base, 'homeB'));
    A.ok('enable-replication', 'vm', '--disk', disk, '--replica', join(base, 'B'));
    A.ok('start-initial-replication', 'vm');
    B.ok('enable-replication', 'vm', '--extended', '--replica-path', join(base, 'B'), '--replica', join(base, 'C'));
    B.ok('start-initial-replication', 'vm', '--extended');
    await rm(join(base, 'C', 'vm'), { recursive: true });
    A.ok('write', 'vm', '--offset', '1M', '--length', '64K', '--pattern', '0x5a');
    A.ok('service', '--once');
    const failed = B.run('service', '--once');
    expect(failed.stdout).toMatch(/the replica is missing .*; restore it, or run the initial replication again: vhdsync start-initial-replication vm --extended --again\)/);
    B.ok('start-initial-replication', 'vm', '--extended', '--again');
    expect(await sameBytes(disk, join(base, 'C', 'vm', 'a.img'))).toBe(true);
  }, SLOW);
});

async function sameBytes(a: string, b: string): Promise<boolean> {
  const [x, y] = [await openDisk(a, { readOnly: true }), await openDisk(b, { readOnly: true })];
  try {
    if (x.virtualSize !== y.virtualSize) return false;
    const [bx, by] = [new Uint8Array(MiB), new Uint8Array(MiB)];
    for (let off = 0; off < x.virtualSize; off += MiB) {
      await x.read(off, bx);
      await y.read(off, by);
      if (!Buffer.from(bx).equals(Buffer.from(by))) return false;
    }
    return true;
  } finally {
    await x.close();
    await y.close();
  }
}

async function readdirSafe(p: string): Promise<string[]> {
  const { readdir } = await import('node:fs/promises');
  return readdir(p).catch(() => []);
}
