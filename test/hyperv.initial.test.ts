import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { cli, newSite } from './support/cli.js';
import { sha256File } from './support/digest.js';
import { rawDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { cliCerts, replicaServer, type CliCerts, type ServedReplica } from './support/served-replica.js';

/** Issue 18, "Initial replication options", through the built binary. */
let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-initial-')));
afterAll(() => cleanup());

const site = () => newSite(dir);

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
    const seedSum = sha256File(seed);

    const refused = s.run('start-initial-replication', 'RESYNC VM');
    expect(refused.status).toBe(2);
    expect(refused.stderr.trim()).toBe(`vhdsync: ${seed}: a replica disk is already there; to use it as the initial copy add --use-existing-replica (compared block by block: a resynchronization, only the differences are sent), or remove it`);
    expect(sha256File(seed)).toBe(seedSum);
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

describe('offline initial replication', () => {
  it('start-initial-replication --destination-path exports the replica; import-initial-replication adopts it at the replica site; the writes made meanwhile follow as normal cycles', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 16 * MiB, 21);
    const b = await rawDisk(join(s.d, 'b.img'), 8 * MiB, 22);
    s.ok('enable-replication', 'OFFLINE VM', '--disk', a, b, '--replica', s.replica);
    const media = join(s.d, 'usb');
    const out = s.json('start-initial-replication', 'OFFLINE VM', '-DestinationPath', media);
    expect(out).toMatchObject({ Result: 'completed', State: 'InitialReplicationInProgress', DestinationPath: media });
    const [folder] = await readdir(media);
    expect(folder).toMatch(/^OFFLINE_VM\+[0-9a-f]{12}$/);
    expect((await readdir(join(media, folder))).sort()).toEqual(['a.img', 'b.img', 'export.json', 'replica.json']);
    expect(qemuIdentical(a, join(media, folder, 'a.img'))).toBe(true); // the copy is the primary as of the export
    expect(existsSync(s.replica)).toBe(false); // nothing crossed to the replica site
    const exported = sha256File(join(media, folder, 'a.img'));

    // Meanwhile the VM runs: its writes are tracked and wait; cycles do not ship before the import.
    s.ok('write', 'OFFLINE VM', '--offset', '2M', '--length', '128K', '--pattern', '0x71');
    s.ok('write', 'OFFLINE VM', '--disk', '1', '--offset', '5M', '--length', '64K', '--pattern', '0x72');
    const waiting = s.json('get-replication', 'OFFLINE VM');
    expect(waiting).toMatchObject({ State: 'InitialReplicationInProgress', Health: 'Warning' });
    expect(waiting.ReplicationHealthDetails[1]).toMatch(/exported to .*usb at .*; import it at the replica site/);
    const [pass] = s.json('service', '--once');
    expect(pass.Cycle).toBeUndefined();
    expect(pass.Imported).toBeUndefined();
    const again = s.run('start-initial-replication', 'OFFLINE VM');
    expect(again.status).toBe(2);
    expect(again.stderr).toMatch(/was exported for offline initial replication to .*usb .*; import it at the replica site \(vhdsync import-initial-replication 'OFFLINE VM' --path DIR\)/);

    // Media from elsewhere names no other place: a manifest whose disk or folder is a path is refused in one line.
    const manifestPath = join(media, folder, 'export.json');
    const manifest = await readFile(manifestPath, 'utf8');
    const tampered: [string, (m: { folder: string; disks: { name: string }[] }) => void][] = [
      ['disks[0].name', (m) => (m.disks[0].name = '../../../escape.img')],
      ['folder', (m) => (m.folder = '../escape')],
    ];
    for (const [field, change] of tampered) {
      const m = JSON.parse(manifest);
      change(m);
      await writeFile(manifestPath, JSON.stringify(m));
      const refused = s.run('import-initial-replication', 'OFFLINE VM', '--path', media);
      expect(refused.status).toBe(2);
      expect(refused.stderr.trim().split('\n')).toHaveLength(1);
      expect(refused.stderr).toContain(`${field} is not a plain file name`);
    }
    await writeFile(manifestPath, manifest);
    // A disk swapped on the media (smaller, larger, not a disk of that size) is refused in one line, and no copy stays.
    const exportedDisk = join(media, folder, 'a.img');
    const original = await readFile(exportedDisk);
    for (const swapped of [original.subarray(0, 1000), Buffer.concat([original, Buffer.alloc(MiB)])]) {
      await writeFile(exportedDisk, swapped);
      const refused = s.run('import-initial-replication', 'OFFLINE VM', '--path', media);
      expect(refused.status).toBe(2);
      expect(refused.stderr.trim().split('\n')).toEqual([expect.stringMatching(/a\.img: a raw disk of \d+ bytes, not the raw disk of 16777216 bytes its export recorded; this is not the exported disk/)]);
      expect(existsSync(join(s.replica, folder, 'a.img'))).toBe(false);
    }
    // Same format and size, other bytes (a bit flipped on the media): the export's checksum says so.
    const flipped = Buffer.from(original);
    flipped[5 * MiB + 17] ^= 0x01;
    await writeFile(exportedDisk, flipped);
    const damaged = s.run('import-initial-replication', 'OFFLINE VM', '--path', media);
    expect(damaged.status).toBe(2);
    expect(damaged.stderr.trim().split('\n')).toEqual([expect.stringMatching(/a\.img: its checksum [0-9a-f]{32} is not the [0-9a-f]{32} its export recorded; the media's copy is damaged/)]);
    expect(existsSync(join(s.replica, folder, 'a.img'))).toBe(false);
    await writeFile(exportedDisk, original);
    // A manifest whose disks are not the VM's (a size edited to match a swapped file) is refused too.
    await writeFile(manifestPath, manifest.replace('"virtualSize": 8388608', '"virtualSize": 4096'));
    const foreign = s.run('import-initial-replication', 'OFFLINE VM', '--path', media);
    expect(foreign.status).toBe(2);
    expect(foreign.stderr.trim().split('\n')).toEqual([expect.stringMatching(/export\.json: its disks are not the disks of 'OFFLINE VM' \(export again\)/)]);
    await writeFile(manifestPath, manifest);
    await rm(s.replica, { recursive: true, force: true });
    expect(existsSync(s.replica)).toBe(false);
    expect(existsSync(join(s.d, 'escape.img')) || existsSync(join(s.d, 'escape'))).toBe(false);

    // At the replica site: the import.
    const imported = s.json('import-initial-replication', 'offline vm', '--path', media);
    expect(imported).toMatchObject({ VMName: 'OFFLINE VM', State: 'Replicating', Folder: join(s.replica, folder) });
    expect(sha256File(join(s.replica, folder, 'a.img'))).toBe(exported);
    const cycle = s.json('service', '--once')[0].Cycle;
    expect(cycle.Result).toBe('replicated');
    expect(cycle.Bytes).toBeGreaterThanOrEqual(192 * 1024); // the writes made since the export, not the disks
    expect(cycle.Bytes).toBeLessThan(MiB);
    expect(qemuIdentical(a, join(s.replica, folder, 'a.img'))).toBe(true);
    expect(qemuIdentical(b, join(s.replica, folder, 'b.img'))).toBe(true);
    const twice = s.run('import-initial-replication', 'OFFLINE VM', '--path', media);
    expect(twice.status).toBe(2);
    expect(twice.stderr).toMatch(/is Replicating; nothing waits for an import/);
  });

  describe('through a replica server', () => {
    let certs: string;
    let root: string;
    let server: ServedReplica | undefined;
    let port: number;
    let tls: CliCerts;
    const client = () => tls.clientFlags();
    beforeAll(async () => {
      certs = join(dir, 'certs');
      tls = cliCerts(certs, { home: join(dir, 'home') }, { serverNames: '127.0.0.1' });
      root = join(dir, 'server-root');
      server = await replicaServer(tls, root, { home: join(dir, 'server-home') });
      port = server.port;
    });
    afterAll(() => server?.stop());

    it('imported under the server\'s root (--replica-root), the primary sees it at its next pass and replicates', async () => {
      const s = await site();
      const a = await rawDisk(join(s.d, 'srv.img'), 8 * MiB, 23);
      s.ok('enable-replication', 'FAR VM', '--disk', a, '--replica', `tls://127.0.0.1:${port}/far`, ...client());
      const media = join(s.d, 'media');
      expect(s.json('start-initial-replication', 'FAR VM', '--destination-path', media).Result).toBe('completed');
      expect(await readdir(media)).toEqual(['far']);
      s.ok('write', 'FAR VM', '--offset', '1M', '--length', '64K', '--pattern', '0x73');
      expect(s.json('service', '--once')[0].Imported).toBeUndefined();
      const wrong = cli(['import-initial-replication', 'OTHER', '--path', media, '--replica-root', root], { home: join(dir, 'home') });
      expect(wrong.status).toBe(2);
      expect(wrong.stderr).toMatch(/this is the export of 'FAR VM', not 'OTHER'/);
      // On the server's machine: no VM record there, only its root.
      const imp = cli(['import-initial-replication', '--path', media, '--replica-root', root, '--json'], { home: join(dir, 'home') });
      expect(imp.status, imp.stderr).toBe(0);
      expect(JSON.parse(imp.stdout)).toMatchObject({ VMName: 'FAR VM', Folder: join(root, 'far') });
      const [pass] = s.json('service', '--once');
      expect(pass).toMatchObject({ Imported: true });
      expect(pass.Cycle.Result).toBe('replicated');
      expect(s.json('get-replication', 'FAR VM').State).toBe('Replicating');
      expect(qemuIdentical(a, join(root, 'far', 'srv.img'))).toBe(true);
    });
  });
});
