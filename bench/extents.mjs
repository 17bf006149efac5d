#!/usr/bin/env node
// npm run bench:extents [-- --writes 2000 --no-nbd --json out.json]
//
// What the dirty-extent machinery (host/tracking: activity log, dirty map) costs and buys, measured in
// one run:
//  1. Extent size: the bytes a crash's scope holds after 64 MiB of writes on an 8 GiB disk (hot spots:
//     the `hot` workload; scattered pages: `sql`) for extent sizes 64 KiB … 16 MiB, and the activity-log
//     transactions 64 KiB random writes in a 1 GiB working set need per 1000 writes once warm
//     (1024 hot extents). Pure: the seeded plans and an LRU of the activity log's size.
//  2. Write path, library: 64 KiB random writes in a 1 GiB working set through the tracker (log
//     appended and synced before each write), with the activity log on and off, passes alternated.
//  3. Write path, NBD: `vhdsync run` exporting a 1 GiB raw disk of a replicated VM, `qemu-img bench -w
//     -s 65536` through it, with the activity log on and off (VHDSYNC_ACTIVITY_LOG=off), alternated.
// Prints a table and the ratio (cost = 1 − on/off throughput); --json writes everything.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { openTrackedDisk, loadCore } = await import(join(ROOT, 'dist', 'index.js'));
const { planWrites, rng } = await import(join(ROOT, 'dist', 'tracking', 'workload.js'));
const { createTrackingLog } = await import(join(ROOT, 'dist', 'tracking', 'log.js'));
const { trackingLogPathFor } = await import(join(ROOT, 'dist', 'tracking', 'log-files.js'));
await loadCore();

const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const WRITES = Number(arg('--writes', 1500));
const nbd = !args.includes('--no-nbd');
const jsonOut = arg('--json');
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const out = { extentSize: [], library: [], nbd: [] };

// ---- 1. Extent size ----
const SIZES = [64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB];
for (const pattern of ['hot', 'sql']) {
  const writes = [...planWrites(pattern, { diskSize: 8 * GiB, bytes: 64 * MiB, seed: 11 })];
  for (const e of SIZES) {
    const touched = new Set();
    for (const w of writes) for (let x = Math.floor(w.offset / e); x <= Math.floor((w.offset + w.data.byteLength - 1) / e); x++) touched.add(x);
    out.extentSize.push({ pattern, extentSize: e, scopeBytes: touched.size * e, scopeShare: (touched.size * e) / (8 * GiB) });
  }
}
const lruMisses = (extent, capacity) => {
  const rand = rng(5);
  const lru = new Map();
  let misses = 0;
  const span = GiB / (64 * KiB);
  for (let i = 0; i < 40000; i++) {
    const off = Math.floor(rand() * span) * 64 * KiB;
    const x = Math.floor(off / extent);
    const hit = lru.delete(x);
    lru.set(x, true);
    if (!hit) {
      if (i >= 20000) misses++;
      if (lru.size > capacity) lru.delete(lru.keys().next().value);
    }
  }
  return misses / 20;
};
for (const e of SIZES) {
  const row = out.extentSize.find((r) => r.pattern === 'hot' && r.extentSize === e);
  row.alTransactionsPer1000Warm = lruMisses(e, 1024);
}

// ---- 2. Library path ----
const dir = mkdtempSync(join(tmpdir(), 'vhdsync-bench-extents-'));
try {
  const disk = join(dir, 'lib.raw');
  writeFileSync(disk, new Uint8Array(0));
  spawnSync('truncate', ['-s', String(GiB), disk]);
  await createTrackingLog(trackingLogPathFor(disk), { sequence: 1 });
  const data = new Uint8Array(64 * KiB).fill(7);
  const pass = async (activityLog, seed, count) => {
    const d = await openTrackedDisk(disk, { activityLog });
    const rand = rng(seed);
    const t0 = performance.now();
    for (let i = 0; i < count; i++) await d.write(Math.floor(rand() * (GiB / data.byteLength)) * data.byteLength, data);
    const seconds = (performance.now() - t0) / 1000;
    const transactions = d.activityLogTransactions;
    await d.close();
    return { activityLog, writes: count, seconds, mbPerSecond: (count * data.byteLength) / seconds / 1e6, transactions };
  };
  // Warm: one write into every extent, so the activity log holds the working set (as a running VM's does).
  const w = await openTrackedDisk(disk);
  for (let e = 0; e < GiB / MiB; e++) await w.write(e * MiB, data.subarray(0, 4096));
  await w.close();
  for (let round = 0; round < 2; round++) {
    out.library.push(await pass(false, 100 + round, WRITES));
    out.library.push(await pass(true, 200 + round, WRITES));
  }
  // Cold: a fresh activity log (every extent's first write costs a transaction).
  rmSync(`${disk}.vhdsync-al`, { force: true });
  out.libraryCold = await pass(true, 300, WRITES);

  // ---- 3. NBD ----
  if (nbd) out.nbd = await nbdBench(dir);
} finally {
  rmSync(dir, { recursive: true, force: true });
}

async function nbdBench(dir) {
  const CLI = join(ROOT, 'dist', 'cli', 'main.js');
  const hasQemu = spawnSync('qemu-img', ['--version']).status === 0;
  if (!hasQemu) return { skipped: 'qemu-img is not installed' };
  const home = join(dir, 'home');
  const disk = join(dir, 'nbd.raw');
  writeFileSync(disk, new Uint8Array(0));
  spawnSync('truncate', ['-s', String(GiB), disk]);
  const cli = (...a) => {
    const r = spawnSync(process.execPath, [CLI, ...a, '--home', home], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`vhdsync ${a.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  cli('enable-replication', 'bench', '--disk', disk, '--replica', join(dir, 'replica'));
  cli('start-initial-replication', 'bench');
  const rows = [];
  const count = Math.max(2000, WRITES * 2);
  for (let round = 0; round < 2; round++) {
    for (const al of ['off', 'on']) {
      const socket = join(dir, `nbd-${round}-${al}.sock`);
      const run = spawn(process.execPath, [CLI, 'run', 'bench', '--home', home, '--socket', socket], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, VHDSYNC_ACTIVITY_LOG: al } });
      for (let i = 0; i < 600 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 50));
      const t0 = performance.now();
      const b = spawnSync('qemu-img', ['bench', '-f', 'raw', '-w', '-s', '65536', '-c', String(count), '-d', '4', `nbd+unix:///0?socket=${socket}`], { encoding: 'utf8' });
      const seconds = (performance.now() - t0) / 1000;
      run.kill('SIGTERM');
      await new Promise((r) => run.on('exit', r));
      if (b.status !== 0) return { skipped: `qemu-img bench failed: ${b.stderr.trim()}` };
      const m = /Run completed in ([\d.]+) seconds/.exec(b.stdout);
      const s = m ? Number(m[1]) : seconds;
      rows.push({ activityLog: al === 'on', writes: count, seconds: s, mbPerSecond: (count * 65536) / s / 1e6 });
    }
  }
  return rows;
}

// ---- Report ----
const mean = (rows, on) => {
  const r = rows.filter((x) => x.activityLog === on);
  return r.reduce((n, x) => n + x.mbPerSecond, 0) / r.length;
};
console.log('Extent size (64 MiB of writes on an 8 GiB disk; activity log of 1024 extents):');
console.log('pattern  extent     scope        share   AL transactions / 1000 writes (64 KiB random in 1 GiB, warm)');
for (const r of out.extentSize) {
  console.log(`${r.pattern.padEnd(8)} ${String(r.extentSize / KiB).padStart(6)} KiB ${(r.scopeBytes / MiB).toFixed(1).padStart(8)} MiB ${(r.scopeShare * 100).toFixed(2).padStart(6)} %   ${r.alTransactionsPer1000Warm ?? ''}`);
}
const libOn = mean(out.library, true);
const libOff = mean(out.library, false);
out.libraryCost = 1 - libOn / libOff;
console.log(`\nWrite path, library (64 KiB random writes in 1 GiB, ${WRITES} per pass, passes alternated): activity log off ${libOff.toFixed(1)} MB/s, on ${libOn.toFixed(1)} MB/s → cost ${(out.libraryCost * 100).toFixed(1)} % (cold activity log: ${out.libraryCold.mbPerSecond.toFixed(1)} MB/s, ${out.libraryCold.transactions} transactions)`);
if (Array.isArray(out.nbd) && out.nbd.length) {
  const on = mean(out.nbd, true);
  const off = mean(out.nbd, false);
  out.nbdCost = 1 - on / off;
  console.log(`Write path, NBD (vhdsync run + qemu-img bench -w -s 65536 -d 4, 1 GiB disk): activity log off ${off.toFixed(1)} MB/s, on ${on.toFixed(1)} MB/s → cost ${(out.nbdCost * 100).toFixed(1)} %`);
} else if (out.nbd?.skipped) console.log(`Write path, NBD: skipped (${out.nbd.skipped})`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(out, null, 2) + '\n');
