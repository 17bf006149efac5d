import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { copyFile, mkdir, open, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { homeCli, qemuIdentical, randomBytes, sha256File, tempDir } from './support/files.js';
import { MiB, rawDisk } from './replication.support.js';

/** Issue 18, "Initial replication options", through the built binary. */
let dir: string;
let cleanup: () => Promise<void>;
let n = 0;
beforeAll(async () => ({ dir, cleanup } = await tempDir('vhdsync-initial-')));
afterAll(() => cleanup());

async function site() {
  const d = join(dir, `s${++n}`);
  await mkdir(d);
  const home = join(d, 'home');
  return { d, home, replica: join(d, 'replica'), ...homeCli(home) };
}

/** Local time as "YYYY-MM-DD HH:MM:SS" (what --initial-replication-start-time takes, besides MM/dd/yyyy). */
function localTime(d: Date): string {
  const p = (x: number) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

async function scribble(path: string, offset: number, length: number, seed: number): Promise<void> {
  const fh = await open(path, 'r+');
  await fh.write(randomBytes(length, seed), 0, length, offset);
  await fh.close();
}

describe('--initial-replication-start-time', () => {
  it('on enable: the service starts the initial replication at that time, not before; more than 7 days ahead is refused', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 8 * MiB, 3);
    const week = s.run('enable-replication', 'RESYNC VM', '--disk', p, '--replica', s.replica, '--initial-replication-start-time', localTime(new Date(Date.now() + 8 * 24 * 3600_000)));
    expect(week.status).toBe(2);
    expect(week.stderr).toMatch(/--initial-replication-start-time: .* is more than 7 days ahead; Hyper-V allows at most 7 days/);
    const at = new Date(Date.now() + 4000);
    at.setMilliseconds(0);
    const vm = s.json('enable-replication', 'RESYNC VM', '--disk', p, '--replica', s.replica, '-InitialReplicationStartTime', localTime(at));
    expect(vm).toMatchObject({ State: 'ReadyForInitialReplication', InitialReplicationStartTime: at.toISOString() });
    expect(vm.ReplicationHealthDetails).toContain(`Initial replication is scheduled for ${at.toISOString()}.`);
    // The service leaves it alone before its time and starts it from then on (no fixed sleep: a pass at a time).
    let passes = 0;
    for (;;) {
      const [pass] = s.json('service', '--once');
      passes++;
      if (pass.InitialReplication) {
        expect(pass.InitialReplication).toMatchObject({ Started: true, Outcome: 'completed' });
        break;
      }
      expect(pass.State).toBe('ReadyForInitialReplication');
      expect(passes).toBeLessThan(200);
    }
    const started = s.json('events', 'RESYNC VM', '--id', '90001').find((e: { To: string }) => e.To === 'InitialReplicationInProgress');
    expect(Date.parse(started.TimeCreated)).toBeGreaterThanOrEqual(at.getTime());
    expect(s.json('get-replication', 'RESYNC VM')).toMatchObject({ State: 'Replicating', InitialReplicationStartTime: null });
    expect(qemuIdentical(p, s.json('get-replication', 'RESYNC VM').ReplicatedDisks[0].ReplicaPath)).toBe(true);
    // On start-initial-replication it only schedules, and only before the initial replication ran.
    const late = s.run('start-initial-replication', 'RESYNC VM', '--initial-replication-start-time', localTime(new Date(Date.now() + 3600_000)));
    expect(late.status).toBe(2);
    expect(late.stderr).toMatch(/is Replicating; only an initial replication not yet started can be scheduled/);
    const q = await rawDisk(join(s.d, 'q.img'), 4 * MiB, 4);
    s.ok('enable-replication', 'other', '--disk', q, '--replica', s.replica);
    const later = new Date(Date.now() + 3600_000);
    later.setMilliseconds(0);
    expect(s.json('start-initial-replication', 'other', '--initial-replication-start-time', localTime(later))).toMatchObject({ State: 'ReadyForInitialReplication', InitialReplicationStartTime: later.toISOString() });
    expect(s.json('service', '--once').find((x: { VMName: string }) => x.VMName === 'other').InitialReplication).toBeUndefined();
  });
});

describe('a replica disk placed by hand', () => {
  it('is refused as the initial copy unless --use-existing-replica, and then made equal by a resync that sends only the differences', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 32 * MiB, 5);
    s.ok('enable-replication', 'RESYNC VM', '--disk', p, '--replica', s.replica);
    const folder = join(s.replica, s.json('get-replication', 'RESYNC VM').ReplicatedDisks[0].ReplicaPath.split('/').slice(-2)[0]);
    await mkdir(folder, { recursive: true });
    const seed = join(folder, 'p.img');
    await copyFile(p, seed); // carried over by hand (a backup), then the primary moves on
    await scribble(p, 3 * MiB, 256 * 1024, 11);
    await scribble(p, 20 * MiB, 64 * 1024, 12);
    const seedSum = await sha256File(seed);

    const refused = s.run('start-initial-replication', 'RESYNC VM');
    expect(refused.status).toBe(2);
    expect(refused.stderr.trim()).toBe(`vhdsync: ${seed}: a replica disk is already there; to use it as the initial copy add --use-existing-replica (compared block by block: a resynchronization, only the differences are sent), or remove it`);
    expect(await sha256File(seed)).toBe(seedSum);
    expect(s.json('get-replication', 'RESYNC VM').State).toBe('ReadyForInitialReplication');

    const before = s.json('events', 'RESYNC VM').length;
    const out = s.json('start-initial-replication', 'RESYNC VM', '--use-existing-replica');
    expect(out).toMatchObject({ Result: 'completed', State: 'Replicating', Health: 'Normal' });
    const sent = out.Disks[0].BytesSent;
    expect(sent).toBeGreaterThanOrEqual(320 * 1024); // the two changed ranges…
    expect(sent).toBeLessThan(2 * MiB); // …and not the disk
    expect(out.Disks[0].BytesCompared).toBe(32 * MiB);
    expect(qemuIdentical(p, seed)).toBe(true);
    const ids = s.json('events', 'RESYNC VM').slice(before).map((e: { Id: number }) => e.Id);
    expect(ids).toEqual(expect.arrayContaining([29242, 29244]));
    expect(s.json('measure-replication', 'RESYNC VM').Counters['Resynchronized Bytes']).toBe(sent);
    // Then it replicates as any VM.
    s.ok('write', 'RESYNC VM', '--offset', '1M', '--length', '64K', '--pattern', '0x42');
    expect(s.json('service', '--once')[0].Cycle.Result).toBe('replicated');
    expect(qemuIdentical(p, seed)).toBe(true);
    expect(await readdir(folder)).toContain('replica.json');

    // Not on a VM that already replicates (unless --again).
    const r = s.run('start-initial-replication', 'RESYNC VM', '--use-existing-replica');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/is Replicating; --use-existing-replica starts an initial replication/);
  });
});
