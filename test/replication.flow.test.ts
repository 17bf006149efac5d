import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { copyFile, readdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { loadCore } from '../host/core/index.js';
import { createVhdx, openDisk } from '../host/disk/index.js';
import { getRecoveryPoints, startFailover, stopFailover } from '../host/replication/failover.js';
import { RunningVm } from '../host/replication/running-vm.js';
import { replicateCycle } from '../host/replication/cycle.js';
import { driveWorkload } from '../host/replication/workload-driver.js';
import { ReplicationService } from '../host/service/service.js';
import { nodeLogFs, type LogFs } from '../host/tracking/log-fs.js';
import { listSealedLogs, trackingLogPathFor } from '../host/tracking/log-files.js';
import { readTrackingLog, HEADER_BYTES, RECORD_HEAD } from '../host/tracking/log.js';
import { resumeReplication, stopReplication, suspendReplication } from '../host/replication/control.js';
import { evaluateTriggers } from '../host/replication/resync-required.js';
import { runResync } from '../host/replication/resync-run.js';
import { healthNow, measureReplication } from '../host/replication/views.js';
import { MiB } from '../host/units.js';
import { fileBytes, randomBytes } from './support/bytes.js';
import { sha256File, imageDigest } from './support/digest.js';
import { rawDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { replicatedVm } from './support/replicated-vm.js';
import { tempDir, subDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-repl-flow-'));
});
afterAll(() => cleanup());

/** A fresh sub-directory per test. */
const sub = () => subDir(dir);

describe('replication cycles', () => {
  it('logs are sealed, shipped and applied strictly in sequence; after each cycle the replica equals the primary as of the seal', async () => {
    const d = await sub();
    const a = await rawDisk(join(d, 'a.img'), 16 * MiB, 3);
    const b = await rawDisk(join(d, 'b.img'), 8 * MiB);
    const rep = await replicatedVm(d, 'vm', [a, b]);
    const vm = await RunningVm.start(rep, 'vm');
    const site = rep.localSite(await rep.get('vm'));
    const applied: number[][] = [];
    for (let cycle = 0; cycle < 3; cycle++) {
      for (let i = 0; i < 5; i++) await vm.write(cycle % 2, (cycle * 5 + i) * 65536, randomBytes(65536, 100 + cycle * 10 + i));
      // The VM keeps running: the seal opens the next cycle's logs in the same instant.
      const c = await replicateCycle(rep, 'vm');
      expect(c.result).toBe('replicated');
      if (c.result === 'replicated') applied.push(c.sequences);
      expect(qemuIdentical(a, site.diskPath(0))).toBe(true);
      expect(qemuIdentical(b, site.diskPath(1))).toBe(true);
    }
    // IR continued with sequence 1; each cycle sealed the next one.
    expect(applied).toEqual([[1], [2], [3]]);
    expect(await site.lastApplied()).toBe(3);
    const cur = await readTrackingLog(trackingLogPathFor(a));
    expect(cur.header.sequence).toBe(4);
    expect(cur.header.writerPid).toBe(0); // taken by the VM only when it writes next
    await vm.close();
    const measured = await measureReplication(rep, 'vm');
    expect(measured.SuccessfulReplicationCount).toBe(3);
    expect(measured.Counters['Replication Count']).toBe(3);
    expect(measured.Health).toBe('Normal');
  });

  it('a clean shutdown seals the logs (end-of-log written) and records fingerprints; nothing is lost in the next cycle', async () => {
    const d = await sub();
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB);
    const rep = await replicatedVm(d, 'vm', [a]);
    const vm = await RunningVm.start(rep, 'vm');
    await driveWorkload(vm, { pattern: 'sql', rate: Infinity, durationMs: 10_000, seed: 4, bytes: 512 * 1024 });
    await vm.close();
    expect(existsSync(trackingLogPathFor(a))).toBe(false);
    const sealed = await listSealedLogs(a);
    expect(sealed.map((s) => s.sequence)).toEqual([1]);
    const log = await readTrackingLog(sealed[0].path);
    expect(log.header.endOfLog).toBe(sealed[0].size);
    expect(log.records.length).toBeGreaterThan(10);
    expect((await rep.get('vm')).disks[0].fingerprint?.probes.filter((p) => p.kind === 'written').length).toBeGreaterThan(0);
    expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    expect(qemuIdentical(a, rep.localSite(await rep.get('vm')).diskPath(0))).toBe(true);
  });
});

describe('VHDX disks (Hyper-V\'s own format)', () => {
  it('a VM with a qemu-made VHDX and a 4K-sector VHDX: initial replication, cycles, a resync and a test failover, all equal', async () => {
    const d = await sub();
    const a = join(d, 'sys.vhdx');
    execFileSync('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'subformat=dynamic', a, String(24 * MiB)]);
    const b = join(d, 'data4k.vhdx');
    await createVhdx(b, { size: 16 * MiB, type: 'dynamic', logicalSectorSize: 4096, blockSize: 1 * MiB });
    for (const [p, seed] of [[a, 1], [b, 2]] as const) {
      const disk = await openDisk(p);
      for (let off = 0; off < disk.virtualSize; off += 3 * MiB) await disk.write(off, randomBytes(65536, seed * 100 + off / MiB));
      await disk.close();
    }
    const rep = await replicatedVm(d, 'vm', [a, b], { settings: { recoveryHistory: 1 } });
    const site = rep.localSite(await rep.get('vm'));
    const replicas = [site.diskPath(0), site.diskPath(1)];
    expect((await rep.get('vm')).disks.map((x) => [x.format, x.sectorSize])).toEqual([['vhdx', 512], ['vhdx', 4096]]);
    const same = async () => (await checksums([a, b])).join() === (await checksums(replicas)).join();
    expect(await same()).toBe(true);
    expect(qemuIdentical(a, replicas[0])).toBe(true); // qemu reads the 512-byte one too
    // qemu opens no 4K-sector VHDX; libvhdi does.
    expect(execFileSync('vhdiinfo', [replicas[1]], { encoding: 'utf8' })).toMatch(/Format\s*: VHDX[\s\S]*Bytes per sector\s*: 4096 bytes/);

    const vm = await RunningVm.start(rep, 'vm');
    for (let i = 0; i < 16; i++) await vm.write(i % 2, ((i * 7) % 15) * MiB + (i % 2) * 4096, randomBytes(8192, 300 + i));
    await vm.close();
    expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    expect(await same()).toBe(true);
    const point = await checksums([a, b]);

    const vm2 = await RunningVm.start(rep, 'vm');
    await vm2.write(0, 5 * MiB, randomBytes(65536, 400));
    await vm2.close();
    expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    await suspendReplication(rep, 'vm');
    await resumeReplication(rep, 'vm', { resynchronize: true });
    const out = await runResync(rep, 'vm');
    expect(out.result).toBe('completed');
    expect(await same()).toBe(true);

    const pts = await getRecoveryPoints(rep, 'vm');
    expect(pts.length).toBeGreaterThanOrEqual(1);
    // A resync deletes the points; one more cycle makes one at the state before it.
    const again = await RunningVm.start(rep, 'vm');
    await again.write(1, 0, randomBytes(4096, 401));
    await again.close();
    expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    const test = await startFailover(rep, 'vm', 'test', { point: 'latest' });
    expect(test.disks.every((x) => x.endsWith('.test-failover.vhdx'))).toBe(true);
    expect((await checksums(test.disks)).join()).toBe((await checksums([a, b])).join());
    expect((await checksums(test.disks)).join()).not.toBe(point.join());
    await stopFailover(rep, 'vm', 'test');
  });
});

/** Format-independent digests of disks, read through our disk layer. */
const checksums = (paths: string[]) => Promise.all(paths.map(imageDigest));

describe('resync triggers detected from evidence (in process)', () => {
  it('a write failure to the tracking log (injected in the file layer) requires a resync; the guest write still lands', async () => {
    const d = await sub();
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB);
    const rep = await replicatedVm(d, 'vm', [a]);
    let budget = 3; // the 4th append hits a broken volume
    const failing: LogFs = {
      async open(path) {
        const f = await nodeLogFs.open(path);
        return {
          ...f,
          async write(data, position) {
            if (position >= HEADER_BYTES && budget-- <= 0) throw Object.assign(new Error(`EIO: i/o error, write '${path}'`), { code: 'EIO' });
            return f.write(data, position);
          },
          async writev(parts, position) {
            if (budget-- <= 0) throw Object.assign(new Error(`EIO: i/o error, write '${path}'`), { code: 'EIO' });
            return f.writev!(parts, position);
          },
        };
      },
    };
    const vm = await RunningVm.start(rep, 'vm', { logFs: failing });
    for (let i = 0; i < 6; i++) await vm.write(0, i * 65536, randomBytes(65536, 200 + i));
    await vm.settle();
    expect(vm.triggers.map((t) => t.reason)).toEqual(['TrackingLogWriteFailure']);
    expect(vm.triggers[0].evidence).toMatch(/a\.img\.vhdsync-track: a write could not be appended \(EIO/);
    const after = await rep.get('vm');
    expect(after.state).toBe('WaitingForStartResynchronize');
    expect(healthNow(rep, after).health).toBe('Critical');
    // Tracking stopped: no log, but the guest's writes reached the disk.
    expect(existsSync(trackingLogPathFor(a))).toBe(false);
    const disk = await fileBytes(a);
    expect(Buffer.from(disk.subarray(5 * 65536, 6 * 65536)).equals(randomBytes(65536, 205))).toBe(true);
    await vm.close();
    const run = await resumeReplication(rep, 'vm', { resynchronize: true });
    const out = await runResync(rep, 'vm', { restart: run.run?.restart });
    expect(out.result).toBe('completed');
    expect(out.disks[0].result.bytesSent).toBe(6 * 65536);
    expect((await rep.get('vm')).state).toBe('Replicating');
    expect(qemuIdentical(a, rep.localSite(out.vm).diskPath(0))).toBe(true);
  });

  it('tracking logs above 50 % of the VM\'s disks while replication is suspended require a resync (seen by the running tracker)', async () => {
    const d = await sub();
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB);
    const b = await rawDisk(join(d, 'b.img'), 8 * MiB);
    const rep = await replicatedVm(d, 'vm', [a, b]);
    await suspendReplication(rep, 'vm');
    const vm = await RunningVm.start(rep, 'vm');
    let written = 0;
    for (let i = 0; written <= 9 * MiB; i++) {
      await vm.write(i % 2, ((i >> 1) % 120) * 65536, randomBytes(65536, 300 + i));
      written += 65536;
    }
    await vm.settle();
    expect(vm.triggers.map((t) => t.reason)).toEqual(['TrackingLogTooLarge']);
    expect(vm.triggers[0].evidence).toMatch(/more than 50 % of the VM's 16 MiB/);
    expect((await rep.get('vm')).state).toBe('WaitingForStartResynchronize');
    expect(await listSealedLogs(a)).toEqual([]);
    await vm.close();
    await resumeReplication(rep, 'vm', { resynchronize: true });
    const out = await runResync(rep, 'vm');
    expect(out.result).toBe('completed');
    for (const [i, p] of [a, b].entries()) expect(qemuIdentical(p, rep.localSite(out.vm).diskPath(i))).toBe(true);
  });

  it('a corrupted log is refused by the replica as invalid; nothing of it is applied', async () => {
    const d = await sub();
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB);
    const rep = await replicatedVm(d, 'vm', [a]);
    const replica = rep.localSite(await rep.get('vm')).diskPath(0);
    const vm = await RunningVm.start(rep, 'vm');
    for (let i = 0; i < 4; i++) await vm.write(0, i * 8192, randomBytes(8192, 400 + i));
    await vm.close();
    const before = sha256File(replica);
    const [sealed] = await listSealedLogs(a);
    const bytes = await fileBytes(sealed.path);
    bytes[HEADER_BYTES + 2 * (RECORD_HEAD + 8192) + RECORD_HEAD + 100] ^= 0x01; // one bit of the third write's data
    await writeFile(sealed.path, bytes);
    const c = await replicateCycle(rep, 'vm');
    expect(c).toMatchObject({ result: 'resync-required', trigger: { reason: 'ReplicaLogInvalid' } });
    if (c.result === 'resync-required') expect(c.trigger.evidence).toMatch(/a record is damaged \(CRC-32C mismatch/);
    expect(sha256File(replica)).toBe(before);
    expect((await rep.get('vm')).state).toBe('WaitingForStartResynchronize');
  });

  it('a stale log (already applied) showing up on the replica is out of sequence', async () => {
    const d = await sub();
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB);
    const rep = await replicatedVm(d, 'vm', [a]);
    const site = rep.localSite(await rep.get('vm'));
    let vm = await RunningVm.start(rep, 'vm');
    await vm.write(0, 0, randomBytes(4096, 1));
    await vm.close();
    const [log1] = await listSealedLogs(a);
    await copyFile(log1.path, join(d, 'log1.keep'));
    expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    vm = await RunningVm.start(rep, 'vm');
    await vm.write(0, 4096, randomBytes(4096, 2));
    await vm.close();
    await copyFile(join(d, 'log1.keep'), join(site.logsDir, '00000001-0.log')); // an old copy restored into the replica
    const c = await replicateCycle(rep, 'vm');
    expect(c).toMatchObject({ result: 'resync-required', trigger: { reason: 'ReplicaLogOutOfSequence' } });
    if (c.result === 'resync-required') expect(c.trigger.evidence).toBe('log 1 arrived but the replica has already applied up to log 1');
  });

  it('a tracking log put back after it was shipped shows the primary volume went back in time', async () => {
    const d = await sub();
    const a = await rawDisk(join(d, 'a.img'), 8 * MiB);
    const rep = await replicatedVm(d, 'vm', [a]);
    const vm = await RunningVm.start(rep, 'vm');
    await vm.write(0, 0, randomBytes(4096, 1));
    await vm.close();
    const [log1] = await listSealedLogs(a);
    await copyFile(log1.path, join(d, 'log1.keep'));
    expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    await copyFile(join(d, 'log1.keep'), log1.path);
    expect(await evaluateTriggers(rep, 'vm')).toMatchObject({ reason: 'RevertedToOlderPoint', evidence: expect.stringMatching(/sequence 1 is back although log 1 was already shipped/) });
  });
});

describe('the resync state machine', () => {
  it('suspend during a resync → ResynchronizeSuspended; resume continues where it stopped; stop → required; the next one starts from the beginning', async () => {
    const d = await sub();
    // 64 regions of 16 MiB, each with a change: more than the engine keeps in flight, so a pause bites.
    const size = 1024 * MiB;
    const a = await rawDisk(join(d, 'a.img'), size);
    const rep = await replicatedVm(d, 'vm', [a], { link: { rate: 8e6, latencyMs: 1 } });
    // The primary diverges all over while the VM is off; a resync is requested.
    const fh = await (await import('node:fs/promises')).open(a, 'r+');
    for (let off = 0; off < size; off += 16 * MiB) await fh.write(randomBytes(128 * 1024, off / MiB + 1), 0, 128 * 1024, off + 65536);
    await fh.close();
    expect(await evaluateTriggers(rep, 'vm')).toMatchObject({ reason: 'ModifiedWhileOff' });

    // 1. Suspend during the resync: it stops at a region boundary with a checkpoint.
    const pauseAt = (limit: number) => {
      let asked: Promise<unknown> | undefined;
      return {
        onProgress: (_d: unknown, p: { bytesCompared: number }) => {
          if (p.bytesCompared >= limit) asked ??= suspendReplication(rep, 'vm');
        },
        done: () => asked,
      };
    };
    const changed = (size / (16 * MiB)) * 128 * 1024;
    await resumeReplication(rep, 'vm', { resynchronize: true });
    const s1 = pauseAt(size / 16);
    const first = await runResync(rep, 'vm', { onProgress: s1.onProgress });
    expect((await s1.done())).toMatchObject({ state: 'ResynchronizeSuspended' });
    expect(first.result).toBe('paused');
    expect((await rep.get('vm')).state).toBe('ResynchronizeSuspended');
    expect(first.disks[0].result.bytesSent).toBeGreaterThan(0);
    expect(first.disks[0].result.bytesSent).toBeLessThan(changed);
    expect(existsSync(`${rep.localSite(first.vm).diskPath(0)}.resync.vhd`)).toBe(true);

    // 2. Stop: the overlay goes, the VM is back in Resynchronization Required.
    await expect(resumeReplication(rep, 'vm', { resynchronize: true, resynchronizeStartTime: new Date(Date.now() + 3600_000).toISOString() })).rejects.toThrow(/suspended resynchronization/);
    const stopped = await stopReplication(rep, 'vm');
    expect(stopped.state).toBe('WaitingForStartResynchronize');
    expect(healthNow(rep, stopped).health).toBe('Critical');
    expect(existsSync(`${rep.localSite(stopped).diskPath(0)}.resync.vhd`)).toBe(false);
    await expect(stopReplication(rep, 'vm')).rejects.toThrow(/no resynchronization to cancel/);

    // 3. The next resync starts from the beginning (and is suspended again).
    await resumeReplication(rep, 'vm', { resynchronize: true });
    const s2 = pauseAt(size / 16);
    const second = await runResync(rep, 'vm', { onProgress: s2.onProgress });
    await s2.done();
    expect(second.result).toBe('paused');
    expect(second.disks[0].result.resumedFrom).toBe(0);

    // 4. --continue carries on from its checkpoint to the end. Only what was in flight at the pause is
    // sent again: a pause stops mid-region and a region not ended is redone (at most the 32 regions
    // that descend at once, 128 KiB of changes each here).
    const cont = await resumeReplication(rep, 'vm', { continue: true });
    expect(cont.run).toEqual({ restart: false });
    const third = await runResync(rep, 'vm', { restart: false });
    expect(third.result).toBe('completed');
    expect(third.disks[0].result.resumedFrom).toBeGreaterThan(0);
    expect(third.disks[0].result.resumedFrom).toBeLessThan(size);
    const resent = second.disks[0].result.bytesSent + third.disks[0].result.bytesSent - changed;
    expect(resent).toBeGreaterThanOrEqual(0);
    expect(resent).toBeLessThanOrEqual(32 * 128 * 1024);
    console.log(
      `suspend/stop/continue figures: 1st run sent ${first.disks[0].result.bytesSent} B then paused; after stop the 2nd started at ${second.disks[0].result.resumedFrom} and sent ${second.disks[0].result.bytesSent} B; --continue resumed at ${third.disks[0].result.resumedFrom} of ${size} and sent ${third.disks[0].result.bytesSent} B (${changed} B changed, ${resent} B sent again)`,
    );
    expect((await rep.get('vm')).state).toBe('Replicating');
    expect(qemuIdentical(a, rep.localSite(third.vm).diskPath(0))).toBe(true);
    const ids = (await rep.events.records).map((e) => e.id);
    expect(ids.filter((i) => i === 29242).length).toBe(3);
  });

  it('writes made while the resync runs reach the replica with the next cycle', async () => {
    const d = await sub();
    const size = 32 * MiB;
    const a = await rawDisk(join(d, 'a.img'), size, 7);
    const rep = await replicatedVm(d, 'vm', [a], { link: { rate: 30e6, latencyMs: 1 } });
    await suspendReplication(rep, 'vm'); // forcing a resync from Replicating: suspend first, as Hyper-V
    await resumeReplication(rep, 'vm', { resynchronize: true });
    const vm = await RunningVm.start(rep, 'vm');
    let k = 0;
    // At most 160 × 64 KiB (10 MiB) are logged: under the 50 % rule (16 MiB), which would otherwise
    // rightly cancel this resync on a slow machine.
    const writes = (async () => {
      while ((await rep.get('vm')).state !== 'Replicating' && k < 160) {
        await vm.write(0, ((k * 37) % 512) * 65536, randomBytes(65536, 500 + k));
        k++;
      }
    })();
    const out = await runResync(rep, 'vm');
    await writes;
    expect(out.result).toBe('completed');
    expect(k).toBeGreaterThan(0);
    await vm.write(0, 0, randomBytes(4096, 9));
    await vm.close();
    const svc = new ReplicationService(rep, { once: true });
    const [pass] = await svc.once();
    expect(pass.cycle?.result).toBe('replicated');
    expect(qemuIdentical(a, rep.localSite(out.vm).diskPath(0))).toBe(true);
    const seqs = (await readdir(join(d, 'replica', 'vm'))).filter((x) => x.endsWith('.log'));
    expect(seqs).toEqual([]);
    expect(JSON.parse(await readFile(join(d, 'replica', 'vm', 'replica.json'), 'utf8')).lastAppliedSequence).toBeGreaterThanOrEqual(2);
  });
});
