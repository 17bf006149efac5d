// One row of the seed's table, run for real at a scale: the two VMs' disks are brought into the row's
// state (replication broken, then churn), the peers run on the same image pairs, and our resync runs
// twice per VM — once over a link with the row's latency and no rate limit (the local work, S), once
// over the row's simulated link while the guest keeps writing through the tracker (when that run fits
// the time budget; otherwise its time is computed, see model.mjs).
import { randomBytes } from 'node:crypto';
import { copyFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createVhd, diffDisks, EventLog, getCore, openDisk, openTrackedDisk, resync } from '../../dist/index.js';
import { churn, workload } from './disks.mjs';
import { oursComputed } from './model.mjs';
import { plainCopy, rsync, sameFile } from './peers.mjs';
import { HYPERV, LINKS } from './seed.mjs';

/** Guest writes larger than this reach the disk in pieces (a guest's I/O size), so the rate stays smooth. */
const PIECE = 64 * 1024;
/** The resync's region (host/resync/tree.ts DEFAULT_REGION): the guest stops writing once the last one is being compared. */
const LAST_REGION = 16 * 1024 * 1024;

/**
 * A VM's workload writing through the tracker at a steady rate, from when the resync starts tracking
 * (event 29242) until its compare reaches the last region. It stops there, a little before the compare
 * ends, because the resync reads the tracking log once after the merge and then deletes it: a write
 * still in flight at that moment would reach the primary but never the replica (the check after each
 * run would show it). Writes after the resync belong to normal replication, which is not run here.
 */
class LiveWriter {
  constructor(vm, path, rate, seed) {
    Object.assign(this, { vm, path, rate, seed });
    this.writes = 0;
    this.bytes = 0;
    this.stopped = false;
    this.wake = undefined;
    this.running = undefined;
  }

  start() {
    this.running ??= this.loop();
  }

  async loop() {
    const disk = await openTrackedDisk(this.path);
    const t0 = performance.now();
    try {
      for (const w of workload(this.vm, disk.virtualSize, this.seed)) {
        for (let off = 0; off < w.data.byteLength; off += PIECE) {
          const wait = t0 + (this.bytes / this.rate) * 1000 - performance.now();
          if (wait > 0) await new Promise((resolve) => ((this.wake = resolve), setTimeout(resolve, wait)));
          if (this.stopped) return;
          const piece = w.data.subarray(off, off + PIECE);
          await disk.write(w.offset + off, piece);
          this.writes++;
          this.bytes += piece.byteLength;
        }
      }
    } finally {
      await disk.close();
    }
  }

  async stop() {
    this.stopped = true;
    this.wake?.();
    await this.running;
  }
}

/** True when the replica's virtual contents equal the primary's (the library's own sector diff). */
async function sameContents(primary, replica) {
  const a = await openDisk(primary, { readOnly: true });
  const b = await openDisk(replica, { readOnly: true });
  try {
    return (await diffDisks(getCore(), a, b)).identical;
  } finally {
    await a.close();
    await b.close();
  }
}

/** One resync with the library; the guest writes through the tracker meanwhile when `writer` is given. */
async function ours({ primary, replica, link, vm, writer, verify, memory, label, compressForRate }) {
  const events = new EventLog();
  const live = writer ? new LiveWriter(vm, primary, writer.rate, writer.seed) : undefined;
  if (live) {
    events.onEvent((e) => {
      if (e.id === 29242) live.start();
      if (e.id === 29244) live.stopped = true;
    });
  }
  const onProgress = (p) => {
    if (live && (p.phase !== 'comparing' || p.bytesCompared >= p.virtualSize - LAST_REGION)) live.stopped = true;
  };
  let res;
  try {
    res = await memory.during(label, () => resync({ primary, replica, link, compress: true, compressForRate, vm: vm.name, events, onProgress }));
  } finally {
    await live?.stop();
  }
  if (res.result !== 'completed') throw new Error(`${vm.name}: resync ended '${res.result}'`);
  return {
    seconds: res.seconds,
    wireBytes: res.wireBytes,
    wireBytesSent: res.wireBytesSent,
    wireBytesReceived: res.wireBytesReceived,
    bytesSent: res.bytesSent,
    payloadWireBytes: res.payloadWireBytes,
    blocksSent: res.blocksSent,
    bytesReadPrimary: res.bytesReadPrimary,
    trackedWritesApplied: res.trackedWritesApplied,
    phases: res.phases,
    compression: res.compression,
    events: res.events.map((e) => e.id),
    guestWrites: live ? { writes: live.writes, bytes: live.bytes } : undefined,
    identical: verify ? await sameContents(primary, replica) : undefined,
  };
}

/**
 * Run one row. `ctx`: { dir, scale, bases: Map(vm name → base image), vms, writeRate, maxLinkSeconds,
 * computeLinks: Set of link ids never run over the link, verify, rsyncZ, memory, log, peerCache }.
 * Returns the raw measurements, per VM.
 */
export async function runRow(ctx, row) {
  const link = LINKS[row.link];
  const ir = row.scenario === 'ir';
  const divergence = ir ? 0 : HYPERV[row.id].bytes * ctx.scale;
  const perVm = [];
  for (const vm of ctx.vms) {
    const base = ctx.bases.get(vm.name);
    const file = (name) => join(ctx.dir, `${vm.name}-${row.scenario}-${row.link}-${name}.vhd`);
    const made = [];
    const replicaAtBreak = async (name) => {
      const p = file(name);
      made.push(p);
      if (ir) await createVhd(p, { size: (await sizeOf(base)), type: 'dynamic', overwrite: true });
      else copyFileSync(base, p);
      return p;
    };
    try {
      // The state: in sync until the break (the replica is the primary as it was then), then the guest
      // keeps writing, untracked, until the resync starts. Online IR starts from an empty replica.
      let primary = base;
      let churned;
      if (!ir) {
        primary = file('primary');
        made.push(primary);
        copyFileSync(base, primary);
        churned = await churn(vm, primary, divergence / ctx.vms.length, hashSeed(`${row.id}/${vm.name}/churn`));
      }

      // Peers on the same pair (the primary as the resync will find it, the replica at the break).
      const peerKey = `${ir ? 'ir' : row.id}/${vm.name}`;
      let peers = ctx.peerCache.get(peerKey);
      if (!peers) {
        peers = await ctx.memory.during('peers', async () => {
          const out = {};
          const runRsync = async (options) => {
            const target = await replicaAtBreak('rsync');
            const res = rsync(primary, target, options);
            if (!sameFile(primary, target)) throw new Error(`${vm.name}: rsync left ${target} different from ${primary}`);
            rmSync(made.pop());
            return res;
          };
          out.rsync = await runRsync();
          if (ctx.rsyncZ) out.rsyncZ = await runRsync({ compress: true });
          out.copy = plainCopy(primary, file('copy'));
          return out;
        });
        ctx.peerCache.set(peerKey, peers);
      }

      // Ours, local work: the same resync without a rate limit (no guest writes, so S is the scan alone).
      // Compression is sized for the row's link, as it is over the link (the level is part of the work).
      const local = await ours({
        primary, replica: await replicaAtBreak('local'), link: { rate: Infinity, latencyMs: link.latencyMs }, vm, verify: ctx.verify, memory: ctx.memory, label: `ours ${row.id}`,
        compressForRate: link.rate,
      });
      rmSync(made.pop());

      // Ours over the row's link, with the guest writing, when it fits the budget.
      const writer = ir ? undefined : { rate: ctx.writeRate / ctx.vms.length, seed: hashSeed(`${row.id}/${vm.name}/live`) };
      const predicted = ir
        ? local.seconds + local.wireBytes / link.rate
        : oursComputed({ localSeconds: local.seconds, wireBytes: local.wireBytes, rate: link.rate, writeRate: writer.rate });
      const predictedSeconds = typeof predicted === 'number' ? predicted : predicted.seconds;
      let measured;
      if (!ctx.computeLinks.has(row.link) && predictedSeconds <= ctx.maxLinkSeconds) {
        measured = await ours({ primary, replica: await replicaAtBreak('link'), link, vm, writer, verify: ctx.verify, memory: ctx.memory, label: `ours ${row.id}`, compressForRate: link.rate });
      }

      // All three tools over the real shaped link (real-link.mjs), when there is one and the slowest
      // of them is predicted to fit the budget. No guest writes here: the resync alone, as the peers.
      let real;
      const slowestOnLink = Math.max(local.seconds, local.wireBytes / link.rate, ...['rsync', 'rsyncZ'].filter((k) => peers[k]).map((k) => Math.max(peers[k].seconds, peers[k].sent / link.rate)));
      if (ctx.realLink && !ctx.computeLinks.has(row.link) && slowestOnLink <= ctx.maxLinkSeconds) {
        real = await realRow(ctx, row, vm, primary, await replicaAtBreak('real'), link);
        rmSync(made.pop());
      }
      const entry = {
        vm: vm.name,
        churn: churned,
        peers,
        local,
        measured,
        real,
        computed: measured
          ? undefined
          : { seconds: predictedSeconds, trackedBytes: typeof predicted === 'number' ? 0 : predicted.trackedBytes, wireBytes: local.wireBytes },
        predictedSeconds,
      };
      perVm.push(entry);
      ctx.log(describeVm(row, entry));
    } finally {
      for (const p of made) rmSync(p, { force: true });
    }
  }
  return { ...row, link, divergenceTarget: divergence, perVm };
}

/** Ours, rsync and rsync -z over the real shaped link, each onto a fresh copy of the replica at the break. */
async function realRow(ctx, row, vm, primary, replicaAtBreak, link) {
  const rl = ctx.realLink;
  await rl.configure(link);
  const name = `${vm.name}-${row.id.replace('@', '-')}.vhd`;
  const out = {};
  let staged = rl.stage(replicaAtBreak, name);
  out.ours = await ctx.memory.during(`ours ${row.id} real`, () => rl.ours(resync, primary, name, { compressForRate: link.rate }));
  out.ours.identical = ctx.verify ? await sameContents(primary, staged.vhdsync) : undefined;
  for (const [key, compress] of [['rsync', false], ['rsyncZ', true]]) {
    if (key === 'rsyncZ' && !ctx.rsyncZ) continue;
    staged = rl.stage(replicaAtBreak, name);
    out[key] = rl.rsync(primary, name, { compress });
    if (!sameFile(primary, staged.rsync)) throw new Error(`${vm.name}: rsync over the real link left ${staged.rsync} different from ${primary}`);
  }
  rmSync(staged.vhdsync, { force: true });
  rmSync(staged.rsync, { force: true });
  ctx.log(
    `  ${row.id.padEnd(18)} ${vm.name.padEnd(5)} real link: ours ${mb(out.ours.vethBytes)} in ${out.ours.seconds.toFixed(2)} s` +
      ` | rsync ${mb(out.rsync.vethBytes)} in ${out.rsync.seconds.toFixed(2)} s` +
      (out.rsyncZ ? ` | rsync -z ${mb(out.rsyncZ.vethBytes)} in ${out.rsyncZ.seconds.toFixed(2)} s` : ''),
  );
  return out;
}

async function sizeOf(path) {
  const d = await openDisk(path, { readOnly: true });
  try {
    return d.virtualSize;
  } finally {
    await d.close();
  }
}

/** A stable 32-bit seed from a name, so every row's writes are the same run after run. */
function hashSeed(text) {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
  return h >>> 0;
}

const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;
function describeVm(row, e) {
  const o = e.measured ?? { seconds: e.computed.seconds, wireBytes: e.computed.wireBytes + e.computed.trackedBytes };
  const how = e.measured ? 'measured' : 'computed';
  const churned = e.churn ? ` churn ${mb(e.churn.distinctBytes)} distinct;` : '';
  return (
    `  ${row.id.padEnd(18)} ${e.vm.padEnd(5)}${churned} ours ${mb(o.wireBytes)} in ${o.seconds.toFixed(2)} s (${how}; local ${e.local.seconds.toFixed(2)} s)` +
    ` | rsync ${mb(e.peers.rsync.sent + e.peers.rsync.received)} in ${e.peers.rsync.seconds.toFixed(2)} s local`
  );
}

/**
 * Fixed cost of one run, whatever the disk size: the median of 3 runs on a 16 MiB pair that differs in
 * 1 MiB, for ours at each latency and for the peers. It is what does not grow when the disks do.
 */
export async function fixedCosts(ctx, latencies) {
  const p = join(ctx.dir, 'fixed-primary.vhd');
  const r = join(ctx.dir, 'fixed-replica.vhd');
  const size = 16 * 1024 * 1024;
  await createVhd(p, { size, type: 'dynamic', overwrite: true });
  const d = await openDisk(p);
  const data = new Uint8Array(4 * 1024 * 1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
  await d.write(0, data);
  await d.close();
  const median = async (fn) => {
    const xs = [];
    for (let k = 0; k < 3; k++) xs.push(await fn());
    return xs.sort((a, b) => a - b)[1];
  };
  const fresh = async () => {
    copyFileSync(p, r);
    const d2 = await openDisk(p);
    await d2.write(1024 * 1024, randomBytes(1024 * 1024));
    await d2.close();
  };
  const vm = { name: 'fixed' };
  const out = { ours: {}, rsync: 0, rsyncZ: 0, copy: 0 };
  try {
    for (const latencyMs of latencies) {
      out.ours[latencyMs] = await median(async () => {
        await fresh();
        return (await ours({ primary: p, replica: r, link: { rate: Infinity, latencyMs }, vm, memory: ctx.memory, label: 'fixed' })).seconds;
      });
    }
    out.rsync = await median(async () => (await fresh(), rsync(p, r).seconds));
    out.rsyncZ = await median(async () => (await fresh(), rsync(p, r, { compress: true }).seconds));
    out.copy = await median(async () => plainCopy(p, join(ctx.dir, 'fixed-copy.vhd')).seconds);
  } finally {
    rmSync(p, { force: true });
    rmSync(r, { force: true });
  }
  return out;
}
