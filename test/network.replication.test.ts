import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, open, readdir, readFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { loadCore } from '../host/core/index.js';
import { replicateCycle } from '../host/replication/cycle.js';
import { completeFailover, getRecoveryPoints, readFailover, startFailover, stopFailover } from '../host/replication/failover.js';
import { reverseReplication } from '../host/replication/reverse.js';
import { Replication } from '../host/replication/replication.js';
import { RunningVm } from '../host/replication/running-vm.js';
import type { ServerEvent } from '../host/replica/server.js';
import { cancelResync } from '../host/resync/resync.js';
import { encode } from '../host/transport/protocol.js';
import { parseSiteAddress } from '../host/transport/replica-address.js';
import { loadTlsMaterial } from '../host/transport/tls-config.js';
import { callReplicaServer } from '../host/transport/tls-connect.js';
import { resumeReplication, suspendReplication } from '../host/replication/control.js';
import { enableReplication, removeReplication } from '../host/replication/enable.js';
import { runResync, startInitialReplication } from '../host/replication/resync-run.js';
import { measureReplication } from '../host/replication/views.js';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { type TestCerts } from './support/certs.js';
import { rawDisk, sameContents } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { serverFixture, type ServerFixture, startServer } from './support/replica-server.js';
import { FakeClock } from './support/replicated-vm.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { snapshot } from './support/tree-snapshot.js';
import { subDir } from './support/temp-dir.js';

/**
 * `enable-replication --replica tls://HOST:PORT/NAME`: a VM replicated to a replica server on
 * loopback, with certificates made in the test — initial replication, cycles, triggers seen by the
 * replica, resync, a server that goes away, and every way a primary can ask for what it must not.
 */
let dir: string;
let certs: TestCerts;
let root: string;
let port: number;
let events: ServerEvent[];
let net: ServerFixture | undefined;

beforeAll(async () => {
  await loadCore();
  net = await serverFixture('vhdsync-net-repl-', { maxActiveTransfers: 2 });
  ({ dir, certs, root, port, events } = net);
});
afterAll(() => net?.close());

const sub = () => subDir(dir);

const client = () => certs.files('client');

async function remoteVm(d: string, name: string, disks: string[], folder = name): Promise<Replication> {
  const rep = new Replication(join(d, 'home'));
  await enableReplication(rep, { name, disks, replica: `tls://127.0.0.1:${port}/${folder}`, network: client() });
  return rep;
}

/** Each primary disk equals its replica under the server's root. */
function identical(disks: string[], folder: string): boolean {
  return disks.every((p) => qemuIdentical(p, join(root, folder, p.split('/').pop()!)));
}

describe('VM replication to a replica server over mutual TLS', () => {
  it('initial replication, cycles and a resync all reach the replica under the root, and end identical', async () => {
    const d = await sub();
    const disks = [await rawDisk(join(d, 'sys.img'), 16 * MiB, 5), await rawDisk(join(d, 'data.img'), 8 * MiB, 6)];
    const rep = await remoteVm(d, 'vm1', disks);
    const vm0 = await rep.get('vm1');
    expect(vm0.replica).toBe(`tls://127.0.0.1:${port}/vm1`);
    expect(vm0.disks.map((x) => x.replicaPath)).toEqual([`tls://127.0.0.1:${port}/vm1/sys.img`, `tls://127.0.0.1:${port}/vm1/data.img`]);
    expect(vm0.network?.cert).toBe(client().cert);

    const ir = await startInitialReplication(rep, 'vm1');
    expect(ir.result).toBe('completed');
    expect(identical(disks, 'vm1')).toBe(true);
    expect(JSON.parse(await readFile(join(root, 'vm1', 'replica.json'), 'utf8')).vmId).toBe(vm0.vmId);

    // Two cycles of guest writes: shipped as whole logs, applied there in sequence.
    for (let cycle = 0; cycle < 2; cycle++) {
      const vm = await RunningVm.start(rep, 'vm1');
      for (let i = 0; i < 24; i++) await vm.write(i % 2, ((i * 97 + cycle * 13) % 120) * 65536, randomBytes(65536 - (i % 3) * 4096, 100 * cycle + i));
      await vm.close();
      const out = await replicateCycle(rep, 'vm1');
      expect(out.result === 'failed' ? out.error : out.result).toBe('replicated');
      if (out.result === 'replicated') expect(out.bytes).toBeGreaterThan(24 * 56 * 1024);
      expect(identical(disks, 'vm1')).toBe(true);
    }
    expect(await readdir(join(root, 'vm1', 'logs')).catch(() => [])).toEqual([]);
    expect((await measureReplication(rep, 'vm1')).SuccessfulReplicationCount).toBe(2);

    // A forced resync while the guest writes: over TLS, continuing with normal cycles afterwards.
    await suspendReplication(rep, 'vm1');
    await resumeReplication(rep, 'vm1', { resynchronize: true, keepPreResyncPoint: true });
    const vm = await RunningVm.start(rep, 'vm1');
    await vm.write(0, 3 * MiB, randomBytes(256 * 1024, 77));
    const out = await runResync(rep, 'vm1');
    await vm.write(1, 5 * MiB, randomBytes(64 * 1024, 78));
    await vm.close();
    expect(out.result).toBe('completed');
    expect(out.disks.every((x) => x.result.result === 'completed')).toBe(true);
    expect(out.disks[0].result.bytesSent).toBeGreaterThanOrEqual(256 * 1024);
    // The protected pre-resync point was adopted there, beside the replica disk.
    expect(JSON.parse(await readFile(join(root, 'vm1', 'sys.img.recovery-points', 'index.json'), 'utf8'))).toMatchObject({ points: [{ protected: true }] });
    expect(await replicateCycle(rep, 'vm1')).toMatchObject({ result: 'replicated' });
    expect(identical(disks, 'vm1')).toBe(true);
    const ids = rep.events.records.map((e) => e.id);
    expect(ids.filter((i) => i === 29242).length).toBe(2); // one per disk, as Hyper-V
    expect(ids.filter((i) => i === 29244).length).toBe(2);
    // Every operation went through the server: site calls and one resync session per disk.
    const started = events.filter((e) => e.event === 'started').map((e) => (e as { target: string }).target);
    expect(started).toContain('vm1 (receive)');
    expect(started).toContain('vm1 (apply)');
    expect(started).toContain('vm1 (rebase)');
    expect(started).toContain('vm1/sys.img');
  });

  it('a VHDX VM: its replica on the server is a VHDX of the same sector size, kept equal by cycles', async () => {
    const d = await sub();
    const disk = join(d, 'sys.vhdx');
    execFileSync('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'subformat=dynamic', disk, String(16 * MiB)]);
    const rep = await remoteVm(d, 'vmx', [disk]);
    expect((await startInitialReplication(rep, 'vmx')).result).toBe('completed');
    const vm = await RunningVm.start(rep, 'vmx');
    for (let i = 0; i < 8; i++) await vm.write(0, i * 2 * MiB, randomBytes(65536, 900 + i));
    await vm.close();
    expect(await replicateCycle(rep, 'vmx')).toMatchObject({ result: 'replicated' });
    expect(execFileSync('qemu-img', ['info', '--output=json', join(root, 'vmx', 'sys.vhdx')], { encoding: 'utf8' })).toMatch(/"format": "vhdx"/);
    expect(identical([disk], 'vmx')).toBe(true);
  });

  it('the replica notices a replica disk changed behind its back: the cycle requires a resync, which repairs it', async () => {
    const d = await sub();
    const disks = [await rawDisk(join(d, 'a.img'), 8 * MiB, 9)];
    const rep = await remoteVm(d, 'vm2', disks, 'folder2');
    expect((await startInitialReplication(rep, 'vm2')).result).toBe('completed');
    const vm = await RunningVm.start(rep, 'vm2');
    await vm.write(0, 0, randomBytes(4096, 1));
    await vm.close();
    // Someone writes to the replica disk on the server.
    const fh = await open(join(root, 'folder2', 'a.img'), 'r+');
    await fh.write(randomBytes(4096, 2), 0, 4096, 1 * MiB);
    await fh.close();
    const out = await replicateCycle(rep, 'vm2');
    expect(out).toMatchObject({ result: 'resync-required', trigger: { reason: 'ReplicaLogOutOfSequence' } });
    expect((await rep.get('vm2')).state).toBe('WaitingForStartResynchronize');
    await resumeReplication(rep, 'vm2', { resynchronize: true });
    expect((await runResync(rep, 'vm2')).result).toBe('completed');
    expect(identical(disks, 'folder2')).toBe(true);
  });

  it('a server that goes away fails the cycle (retried later, nothing lost); the next cycle ships everything', async () => {
    const d = await sub();
    const disks = [await rawDisk(join(d, 'a.img'), 8 * MiB, 11)];
    const { server: own, port: ownPort } = await startServer(certs, root);
    const rep = new Replication(join(d, 'home'));
    await enableReplication(rep, { name: 'vm3', disks, replica: `tls://127.0.0.1:${ownPort}/vm3`, network: client() });
    expect((await startInitialReplication(rep, 'vm3')).result).toBe('completed');
    const vm = await RunningVm.start(rep, 'vm3');
    await vm.write(0, 2 * MiB, randomBytes(65536, 3));
    await vm.close();
    await own.close();
    const failed = await replicateCycle(rep, 'vm3');
    expect(failed.result).toBe('failed');
    if (failed.result === 'failed') expect(failed.error).toMatch(/127\.0\.0\.1:\d+/);
    expect((await rep.get('vm3')).retry?.attempt).toBe(1);
    const again = await startServer(certs, root, { port: ownPort });
    try {
      const out = await replicateCycle(rep, 'vm3');
      expect(out.result).toBe('replicated');
      expect(identical(disks, 'vm3')).toBe(true);
    } finally {
      await again.server.close();
    }
  });

  it('a link that drops while a log is shipped: the cycle fails, nothing half-shipped stays, the retry replicates it', async () => {
    const d = await sub();
    const disks = [await rawDisk(join(d, 'a.img'), 16 * MiB, 21)];
    const proxy = await new TcpProxy(port, 1).listen();
    try {
      const rep = new Replication(join(d, 'home'));
      await enableReplication(rep, { name: 'vm6', disks, replica: `tls://127.0.0.1:${proxy.port}/vm6`, network: client() });
      expect((await startInitialReplication(rep, 'vm6')).result).toBe('completed');
      const vm = await RunningVm.start(rep, 'vm6');
      for (let i = 0; i < 48; i++) await vm.write(0, i * 256 * 1024, randomBytes(65536, 600 + i));
      await vm.close();
      proxy.dropAfter(proxy.bytesUp + 1.5 * MiB); // inside the 3 MiB log
      const failed = await replicateCycle(rep, 'vm6');
      expect(failed.result).toBe('failed');
      expect(proxy.drops).toBe(1);
      // The server sees the drop on its own time: give it a moment to clean up.
      const temporary = async () => (await readdir(join(root, 'vm6', 'logs'))).filter((f) => f.endsWith('.tmp'));
      for (let i = 0; i < 200 && (await temporary()).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
      expect(await temporary()).toEqual([]);
      expect(JSON.parse(await readFile(join(root, 'vm6', 'replica.json'), 'utf8')).lastAppliedSequence).toBe(0);
      const out = await replicateCycle(rep, 'vm6');
      expect(out.result === 'failed' ? out.error : out.result).toBe('replicated');
      expect(identical(disks, 'vm6')).toBe(true);
    } finally {
      await proxy.close();
    }
  });

  it("the VM's bandwidth limit paces what it ships", async () => {
    const d = await sub();
    const disks = [await rawDisk(join(d, 'a.img'), 8 * MiB, 51)];
    const rep = new Replication(join(d, 'home'));
    await enableReplication(rep, { name: 'vm8', disks, replica: `tls://127.0.0.1:${port}/vm8`, network: { ...client(), bandwidth: '16mbps' } });
    expect((await rep.get('vm8')).network?.bandwidth).toBe('16mbps');
    expect((await startInitialReplication(rep, 'vm8')).result).toBe('completed');
    const vm = await RunningVm.start(rep, 'vm8');
    for (let i = 0; i < 32; i++) await vm.write(0, i * 131072, randomBytes(65536, 800 + i));
    await vm.close();
    const t0 = performance.now();
    const out = await replicateCycle(rep, 'vm8');
    const seconds = (performance.now() - t0) / 1000;
    expect(out.result).toBe('replicated');
    const bytes = out.result === 'replicated' ? out.bytes : 0;
    expect(bytes).toBeGreaterThan(2 * MiB);
    // 16 Mbps = 2 MB/s; each session may start with a burst of at most 1 MiB... here 100 kB (50 ms).
    expect(seconds).toBeGreaterThanOrEqual((bytes - 100_000) / 2e6);
    console.log(`[network] a ${bytes} B cycle at --bandwidth 16mbps took ${seconds.toFixed(2)} s (${((bytes * 8) / seconds / 1e6).toFixed(1)} Mbps)`);
    expect(identical(disks, 'vm8')).toBe(true);
  });

  it('a VM whose replica server is gone can still be removed (with a warning)', async () => {
    const d = await sub();
    const disks = [await rawDisk(join(d, 'a.img'), 4 * MiB, 61)];
    const { server: own, port: ownPort } = await startServer(certs, root);
    const rep = new Replication(join(d, 'home'));
    await enableReplication(rep, { name: 'vm9', disks, replica: `tls://127.0.0.1:${ownPort}/vm9`, network: client() });
    expect((await startInitialReplication(rep, 'vm9')).result).toBe('completed');
    await suspendReplication(rep, 'vm9');
    await resumeReplication(rep, 'vm9', { resynchronize: true });
    expect((await runResync(rep, 'vm9', { shouldPause: () => true })).result).toBe('paused');
    expect((await rep.get('vm9')).state).toBe('ResynchronizeSuspended');
    await own.close();
    const out = await removeReplication(rep, 'vm9');
    expect(out.warnings).toHaveLength(1);
    expect(out.warnings[0]).toMatch(/unfinished resynchronization on tls:\/\/127\.0\.0\.1:\d+\/vm9 was left there: .*connection refused/);
    expect(await rep.list()).toEqual([]);
  });

  it('enable checks the server first: a wrong CA, a dead port or a folder of another VM is one line and no VM', async () => {
    const d = await sub();
    const disks = [await rawDisk(join(d, 'a.img'), 4 * MiB, 1)];
    const rep = new Replication(join(d, 'home'));
    await expect(enableReplication(rep, { name: 'x', disks, replica: `tls://127.0.0.1:${port}/x`, network: certs.files('rogue', 'other') })).rejects.toThrow(/127\.0\.0\.1/);
    await expect(enableReplication(rep, { name: 'x', disks, replica: `tls://127.0.0.1:${port}/x` })).rejects.toThrow(/needs --cert, --key, --ca/);
    await expect(enableReplication(rep, { name: 'x', disks, replica: join(d, 'r'), network: client() })).rejects.toThrow(/--cert applies to a replica server/);
    await expect(enableReplication(rep, { name: 'x', disks, replica: `tls://127.0.0.1:${port}/../x`, network: client() })).rejects.toThrow(/not a replica server address/);
    const { server: gone, port: gonePort } = await startServer(certs, root);
    await gone.close();
    await expect(enableReplication(rep, { name: 'x', disks, replica: `tls://127.0.0.1:${gonePort}/x`, network: client() })).rejects.toThrow(new RegExp(`127\\.0\\.0\\.1:${gonePort}`));
    expect(await rep.list()).toEqual([]);
    // A folder that holds another VM's replica.
    const owner = new Replication(join(d, 'home2'));
    await enableReplication(owner, { name: 'owner', disks, replica: `tls://127.0.0.1:${port}/taken`, network: client() });
    expect((await startInitialReplication(owner, 'owner')).result).toBe('completed');
    await expect(enableReplication(rep, { name: 'x', disks, replica: `tls://127.0.0.1:${port}/taken`, network: client() })).rejects.toThrow(/belongs to another VM/);
    expect(await rep.list()).toEqual([]);
  });

  it('recovery points are kept on the server; test and unplanned failovers run there, at the point asked for', async () => {
    const d = await sub();
    const disks = [await rawDisk(join(d, 'a.img'), 8 * MiB, 31), await rawDisk(join(d, 'b.img'), 4 * MiB, 32)];
    const clock = new FakeClock(new Date('2026-11-20T08:00:00Z'));
    const rep = new Replication(join(d, 'home'), { clock });
    await enableReplication(rep, { name: 'vm7', disks, replica: `tls://127.0.0.1:${port}/vm7`, network: client(), settings: { recoveryHistory: 2 } });
    expect((await startInitialReplication(rep, 'vm7')).result).toBe('completed');
    // Three hourly cycles; a copy of the primaries as of each.
    const copies = new Map<number, string[]>();
    for (let k = 1; k <= 3; k++) {
      clock.advance(3600_000);
      const vm = await RunningVm.start(rep, 'vm7');
      await vm.write(0, k * 65536, randomBytes(65536, 700 + k));
      await vm.write(1, 0, randomBytes(4096, 710 + k));
      await vm.close();
      expect(await replicateCycle(rep, 'vm7')).toMatchObject({ result: 'replicated' });
      copies.set(k, await Promise.all(disks.map(async (p, i) => {
        const c = join(d, `copy-${k}-${i}`);
        await copyFile(p, c);
        return c;
      })));
    }
    const pts = await getRecoveryPoints(rep, 'vm7');
    expect(pts.map((p) => [p.kind, p.sequence])).toEqual([['Latest', 3], ['Standard', 2], ['Standard', 1]]);
    expect(pts.slice(1).every((p) => p.sizeOnDisk > 0)).toBe(true);

    const url = `tls://127.0.0.1:${port}/vm7`;
    const test = await startFailover(rep, 'vm7', 'test', { point: pts[2].time });
    expect(test.disks).toEqual([`${url}/a.img.test-failover.vhd`, `${url}/b.img.test-failover.vhd`]);
    expect(await sameContents(test.disks.map((x) => join(root, 'vm7', x.split('/').pop()!)), copies.get(1)!)).toBe(true);
    await expect(startFailover(rep, 'vm7', 'unplanned')).rejects.toThrow(/already has a test failover in effect/);
    expect((await stopFailover(rep, 'vm7', 'test')).removed).toEqual(test.disks);
    expect(existsSync(join(root, 'vm7', 'a.img.test-failover.vhd'))).toBe(false);

    // The running copy is a view on the server until complete-failover merges it into the replica disks.
    const out = await startFailover(rep, 'vm7', 'unplanned', { point: pts[1].time });
    expect(out.disks).toEqual([`${url}/a.img.failover.vhd`, `${url}/b.img.failover.vhd`]);
    expect(out.vm.state).toBe('FailedOverWaitingCompletion');
    expect(await sameContents(out.disks.map((x) => join(root, 'vm7', x.split('/').pop()!)), copies.get(2)!)).toBe(true);
    expect(await readFailover(rep, out.vm)).toMatchObject({ kind: 'unplanned', sequence: 2, phase: 'waiting' });
    const done = await completeFailover(rep, 'vm7');
    expect(done.disks).toEqual([`${url}/a.img`, `${url}/b.img`]);
    expect(done.vm.state).toBe('FailedOver');
    expect(await sameContents(done.disks.map((x) => join(root, 'vm7', x.split('/').pop()!)), copies.get(2)!)).toBe(true);
    expect((await getRecoveryPoints(rep, 'vm7')).map((p) => p.kind)).toEqual(['Latest']);
    await expect(reverseReplication(rep, 'vm7')).rejects.toThrow(/failed over to the replica server .*: reverse it on that server's machine \(vhdsync reverse-replication vm7 --replica-path/);
  });

  it('resync --cancel reaches the server', async () => {
    const d = await sub();
    const disks = [await rawDisk(join(d, 'a.img'), 4 * MiB, 1)];
    const rep = await remoteVm(d, 'vm5', disks);
    expect((await startInitialReplication(rep, 'vm5')).result).toBe('completed');
    const network = { tls: await loadTlsMaterial(client()) };
    expect(await cancelResync(`tls://127.0.0.1:${port}/vm5/a.img`, network)).toEqual({ cancelled: false });
    await expect(cancelResync(`tls://127.0.0.1:${port}/vm5/nothere.img`, network)).rejects.toThrow(/no such replica disk/);
  });
});

describe('a replica server refuses site requests it must not serve, and writes nothing for them', () => {
  const disk = (name: string, i = 0) => ({ index: i, name, diskId: '0123456789abcdef0123456789abcdef', virtualSize: 4 * MiB, format: 'raw' });
  const site = (vm: string, disks = [disk('a.img')]) => ({ vm, vmId: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', disks });

  async function call(request: Record<string, unknown>, upload?: Parameters<typeof callReplicaServer>[3]): Promise<unknown> {
    const address = parseSiteAddress(`tls://127.0.0.1:${port}/x`, 'x');
    return callReplicaServer(address, { tls: await loadTlsMaterial(client()) }, request, upload);
  }

  it.each([
    ['a folder named ..', { site: site('..'), call: 'lastApplied' }, /replica folder '\.\.' is refused/],
    ['a folder with a slash', { site: site('a/b'), call: 'lastApplied' }, /is refused/],
    ['a disk named logs', { site: site('ok', [disk('logs')]), call: 'createEmptyDisks' }, /not a usable disk file name/],
    ['a disk named extended-logs', { site: site('ok', [disk('extended-logs')]), call: 'createEmptyDisks' }, /not a usable disk file name/],
    ['a disk path with a slash', { site: site('ok', [disk('../../etc/x')]), call: 'createEmptyDisks' }, /not a usable disk file name/],
    ['two disks with one name', { site: site('ok', [disk('a.img'), disk('a.img', 1)]), call: 'createEmptyDisks' }, /not a usable disk file name/],
    ['an unknown call', { site: site('ok'), call: 'deleteEverything' }, /is not a replica site call/],
    ['an absurd disk size', { site: site('ok', [{ ...disk('a.img'), virtualSize: 2 ** 60 }]), call: 'createEmptyDisks' }, /size .* out of range|not a whole number/],
    ['a call on a disk other than cancel', { target: 'vm1/sys.img', call: 'format' }, /is not a call on a disk/],
    ['a failover record that is not one', { site: site('ok'), call: 'setFailoverRecord', args: { record: { version: 1, kind: 'everything', sequence: 1 } } }, /not a failover record/],
    ['a point in time that is not one', { site: site('ok'), call: 'points', args: { latestTime: 'yesterday' } }, /latestTime is not a time/],
    ['a log larger than the VM could write', { site: site('ok'), call: 'receive', args: { sequence: 1, disk: 0, size: 2 ** 40 } }, /larger than this VM's logs can be/],
  ])('%s', async (_what, request, message) => {
    const before = await snapshot(root);
    await expect(call(request)).rejects.toThrow(message);
    expect(await snapshot(root)).toEqual(before);
  });

  it('a folder that is a symbolic link out of the root, or holds one, is refused', async () => {
    const outside = join(dir, 'outside');
    await mkdir(outside, { recursive: true });
    await symlink(outside, join(root, 'linked'));
    await mkdir(join(root, 'holds'));
    await symlink(join(outside, 'x.img'), join(root, 'holds', 'a.img'));
    await expect(call({ site: site('linked'), call: 'createEmptyDisks' })).rejects.toThrow(/'linked' is refused: it is a symbolic link/);
    await expect(call({ site: site('holds'), call: 'createEmptyDisks' })).rejects.toThrow(/a\.img in it is a symbolic link/);
    expect(await readdir(outside)).toEqual([]);
  });

  it('log bytes out of order, or more than announced, leave no log behind', async () => {
    await call({ site: site('logs-test'), call: 'createEmptyDisks' });
    await mkdir(join(root, 'logs-test', 'logs'));
    await expect(
      call({ site: site('logs-test'), call: 'receive', args: { sequence: 1, disk: 0, size: 8192 } }, async (link) => {
        await link.send(encode({ t: 'write', offset: 4096, data: new Uint8Array(4096) }));
      }),
    ).rejects.toThrow(/bytes at 4096 arrived, expected 0/);
    await expect(
      call({ site: site('logs-test'), call: 'receive', args: { sequence: 1, disk: 0, size: 100 } }, async (link) => {
        await link.send(encode({ t: 'write', offset: 0, data: new Uint8Array(4096) }));
      }),
    ).rejects.toThrow(/more than the 100 bytes announced/);
    expect(await readdir(join(root, 'logs-test', 'logs'))).toEqual([]);
  });
});
