#!/usr/bin/env node
// npm run bench:resync [-- --sizes 1G,4G --churn 0.001,0.05 --formats raw,vpc,vhdx --image-size 1G --json out.json]
//
// Same-run ratios for a local resync against named peers on the same image pairs:
//   - rsync --inplace --no-whole-file (Debian package rsync): wall time and bytes on its wire
//   - a full copy (cp): wall time, and the whole image as bytes
//   - reading both images (the floor for any compare): time, to give our compare throughput as a share
// Images are raw, filled with a realistic mix (incompressible media, text, zeros) and resynced after a
// given churn of scattered 4–64 KiB writes. Everything runs warm in the page cache, for every tool alike.
//
// Then the images a user has (issue 17): dynamic VHD and VHDX made by qemu-img (`convert -O vpc`,
// `-O vhdx`) from a 1 GiB disk with 768 MiB allocated, then 50 scattered 64 KiB writes made through
// qemu-io; the replica is reset with cp before each run. Per format, medians of --repeat runs (default
// 3) of: our CLI, rsync --inplace --no-whole-file, and the floor — both files read in parallel by two
// `dd bs=4M` — measured in the same run. Targets: ≤ 0.6× rsync's time and ≤ 4× the floor.
// Last, the peak RSS of a CLI resync of sparse dynamic VHDs by size (--memory-sizes, default
// 1G,4G,16G; empty to skip): ≤ 256 MiB and flat.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, openSync, writeSync, closeSync, readSync, copyFileSync, statSync, writeFileSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const MiB = 1024 * 1024;

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const parseSize = (s) => {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)$/i.exec(s.trim());
  return Math.round(Number(m[1]) * { '': 1, K: 1024, M: MiB, G: 1024 * MiB }[m[2].toUpperCase()]);
};
const sizes = arg('--sizes', '1G,2G').split(',').map(parseSize);
const churns = arg('--churn', '0.001,0.05').split(',').map(Number);
const jsonOut = arg('--json');
const formats = arg('--formats', 'raw,vpc,vhdx').split(',').filter(Boolean);
for (const f of formats) if (!['raw', 'vpc', 'vhdx'].includes(f)) throw new Error(`--formats: '${f}' is not raw, vpc or vhdx (give --formats '' for none)`);
const imageSize = parseSize(arg('--image-size', '1G'));
const repeat = Number(arg('--repeat', '3'));
const CLI_BIN = join(ROOT, 'dist', 'cli', 'bin.js');
const memorySizes = arg('--memory-sizes', '1G,4G,16G').split(',').filter(Boolean).map(parseSize);

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = 'the replica disk block sector primary resync cluster volume share report invoice customer order server backup'.split(' ');
function textChunk(len, rand) {
  const s = [];
  let n = 0;
  while (n < len) {
    const w = WORDS[Math.floor(rand() * WORDS.length)] + ' ';
    s.push(w);
    n += w.length;
  }
  return Buffer.from(s.join('').slice(0, len));
}

/** A raw image: 4 MiB extents of media (random), text, or nothing (zeros) — roughly 50/30/20. */
function makeImage(path, size, seed) {
  const rand = rng(seed);
  const fd = openSync(path, 'w');
  const buf = Buffer.alloc(4 * MiB);
  for (let off = 0; off < size; off += buf.length) {
    const len = Math.min(buf.length, size - off);
    const kind = rand();
    if (kind < 0.5) randomFillSync(buf, 0, len);
    else if (kind < 0.8) textChunk(len, rand).copy(buf);
    else buf.fill(0, 0, len);
    writeSync(fd, buf, 0, len, off);
  }
  closeSync(fd);
}

/** Scattered writes of 4–64 KiB totalling `bytes`. */
function churn(path, size, bytes, seed) {
  const rand = rng(seed);
  const fd = openSync(path, 'r+');
  let done = 0;
  while (done < bytes) {
    const len = 4096 * (1 + Math.floor(rand() * 16));
    const off = Math.floor((rand() * (size - len)) / 4096) * 4096;
    const b = Buffer.alloc(len);
    randomFillSync(b);
    writeSync(fd, b, 0, len, off);
    done += len;
  }
  closeSync(fd);
  return done;
}

function timeIt(fn) {
  const t0 = process.hrtime.bigint();
  const out = fn();
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, out };
}

function readBoth(a, b) {
  const buf = Buffer.alloc(4 * MiB);
  for (const p of [a, b]) {
    const fd = openSync(p, 'r');
    while (readSync(fd, buf, 0, buf.length, null) > 0);
    closeSync(fd);
  }
}

function rsyncRun(src, dst) {
  const r = spawnSync('rsync', ['--inplace', '--no-whole-file', '--stats', src, dst], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`rsync failed: ${r.stderr}`);
  const num = (label) => Number((new RegExp(`${label}: ([\\d,]+)`).exec(r.stdout)?.[1] ?? '0').replace(/,/g, ''));
  return { sent: num('Total bytes sent'), received: num('Total bytes received') };
}

function haveRsync() {
  return spawnSync('rsync', ['--version']).status === 0;
}

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

/** Both files read at once by two `dd bs=4M` processes: the floor for any tool that compares them. */
async function readBothParallel(a, b) {
  const t0 = process.hrtime.bigint();
  await Promise.all([a, b].map((p) => new Promise((res, rej) => {
    const c = spawn('dd', [`if=${p}`, 'of=/dev/null', 'bs=4M'], { stdio: 'ignore' });
    c.on('exit', (code) => (code === 0 ? res() : rej(new Error(`dd ${p} exited ${code}`))));
  })));
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/**
 * A raw disk with 3 of every 4 extents of 4 MiB written (media-like random data and text), the 4th
 * left zero: qemu-img leaves those blocks unallocated, so a 1 GiB disk has 768 MiB allocated.
 */
function makeThreeQuartersImage(path, size, seed) {
  const rand = rng(seed);
  const fd = openSync(path, 'w');
  const buf = Buffer.alloc(4 * MiB);
  for (let off = 0, i = 0; off < size; off += buf.length, i++) {
    const len = Math.min(buf.length, size - off);
    if (i % 4 === 3) continue;
    if (rand() < 0.6) randomFillSync(buf, 0, len);
    else textChunk(len, rand).copy(buf);
    writeSync(fd, buf, 0, len, off);
  }
  ftruncateSync(fd, size);
  closeSync(fd);
}

/** 50 writes of 64 KiB at scattered offsets, through qemu-io (so the image stays as qemu writes it). */
function qemuChurn(path, format, size, seed) {
  const rand = rng(seed);
  const cmds = [];
  for (let i = 0; i < 50; i++) {
    const off = Math.floor(rand() * (size / 65536)) * 65536;
    cmds.push('-c', `write -P ${1 + (i % 250)} ${off} 64k`);
  }
  execFileSync('qemu-io', ['-f', format, ...cmds, path], { stdio: 'ignore' });
  return 50 * 65536;
}

async function qemuRows(dir) {
  const out = [];
  if (!formats.some((f) => f !== 'raw')) return out;
  const raw = join(dir, 'qemu-base.raw');
  makeThreeQuartersImage(raw, imageSize, 3);
  for (const format of formats.filter((f) => f !== 'raw')) {
    const ext = format === 'vpc' ? 'vhd' : format;
    const primary = join(dir, `primary.${ext}`);
    const base = join(dir, `base.${ext}`);
    const rOurs = join(dir, `replica-vhdsync.${ext}`);
    const rRsync = join(dir, `replica-rsync.${ext}`);
    execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', format, raw, base]);
    copyFileSync(base, primary);
    const changed = qemuChurn(primary, format, imageSize, 11);
    const samples = { vhdsync: [], rsync: [], floor: [], compare: [] };
    let last;
    for (let i = 0; i < repeat; i++) {
      copyFileSync(base, rOurs);
      copyFileSync(base, rRsync);
      execFileSync('sync');
      await readBothParallel(primary, rOurs); // warm
      samples.floor.push(await readBothParallel(primary, rOurs));
      const ours = timeIt(() => {
        const r = spawnSync(process.execPath, [CLI_BIN, 'resync', primary, rOurs, '--json'], { encoding: 'utf8', env: cliEnv });
        if (r.status !== 0) throw new Error(`vhdsync resync failed: ${r.stderr}`);
        return JSON.parse(r.stdout);
      });
      samples.vhdsync.push(ours.seconds);
      samples.compare.push(ours.out.phases.compare);
      last = ours.out;
      const rs = timeIt(() => rsyncRun(primary, rRsync));
      samples.rsync.push(rs.seconds);
      last.rsync = rs.out;
      const cmp = spawnSync('qemu-img', ['compare', '-q', '-f', format, '-F', format, primary, rOurs]);
      if (cmp.status !== 0) throw new Error(`${rOurs} differs from the primary after the run (qemu-img compare)`);
    }
    const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
    const allocated = Number(/"actual-size": (\d+)/.exec(execFileSync('qemu-img', ['info', '--output=json', base], { encoding: 'utf8' }))?.[1] ?? 0);
    const row = {
      format: `${format} (qemu-img)`,
      size: imageSize,
      fileBytes: statSync(base).size,
      actualBytes: allocated,
      changedBytes: changed,
      repeat,
      vhdsync: { seconds: m.vhdsync, compareSeconds: m.compare, wireBytes: last.wireBytes, bytesSent: last.bytesSent, samples: samples.vhdsync },
      rsync: { seconds: m.rsync, wireBytes: last.rsync.sent + last.rsync.received, samples: samples.rsync },
      readBothParallelSeconds: m.floor,
      ratios: { timeVsRsync: m.vhdsync / m.rsync, timeVsReadBoth: m.vhdsync / m.floor, bytesVsRsync: last.wireBytes / (last.rsync.sent + last.rsync.received) },
    };
    row.met = row.ratios.timeVsRsync <= 0.6 && row.ratios.timeVsReadBoth <= 4;
    out.push(row);
    console.log(
      `${row.format.padEnd(16)} ${fmtMiB(imageSize)} (${fmtMiB(row.fileBytes)} file), 50 × 64 KiB changed | vhdsync ${fmt(m.vhdsync)} s (compare ${fmt(m.compare)} s), ${fmtMiB(last.wireBytes)} | ` +
        `rsync ${fmt(m.rsync)} s, ${fmtMiB(row.rsync.wireBytes)} | read both (2× dd bs=4M) ${fmt(m.floor)} s | time ×${fmt(row.ratios.timeVsRsync)} of rsync, ×${fmt(row.ratios.timeVsReadBoth)} of the floor ${row.met ? '(targets met)' : '(targets NOT met: ≤ 0.6× rsync, ≤ 4× floor)'}`,
    );
    for (const f of [primary, base, rOurs, rRsync]) rmSync(f, { force: true });
  }
  rmSync(raw, { force: true });
  return out;
}

/**
 * Peak RSS of a plain CLI resync (the whole process, both threads) by disk size: sparse dynamic VHDs
 * (qemu-img create -f vpc) with 32 extents of 256 KiB written, then 32 × 64 KiB changed on the
 * primary. GNU time (Debian package time) reports the peak; without it the series is skipped.
 */
function memorySeries(dir) {
  if (memorySizes.length === 0) return [];
  if (spawnSync('/usr/bin/time', ['-f', '%M', 'true'], { encoding: 'utf8' }).status !== 0) {
    console.log('memory series skipped: /usr/bin/time is missing (apt-get install time)');
    return [];
  }
  const out = [];
  for (const size of memorySizes) {
    const base = join(dir, 'mem-base.vhd');
    const primary = join(dir, 'mem-primary.vhd');
    const replica = join(dir, 'mem-replica.vhd');
    execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', base, String(size)]);
    const writes = (pattern, shift, len) => Array.from({ length: 32 }, (_, i) => ['-c', `write -P ${pattern + i} ${Math.floor(((i * 7919) % 1000) * (size / 1000) / 65536) * 65536 + shift} ${len}`]).flat();
    execFileSync('qemu-io', ['-f', 'vpc', ...writes(1, 0, '256k'), base], { stdio: 'ignore' });
    copyFileSync(base, primary);
    execFileSync('qemu-io', ['-f', 'vpc', ...writes(100, 65536, '64k'), primary], { stdio: 'ignore' });
    copyFileSync(base, replica);
    const t0 = process.hrtime.bigint();
    const r = spawnSync('/usr/bin/time', ['-f', 'peak-kib %M', process.execPath, CLI_BIN, 'resync', primary, replica, '--json'], { encoding: 'utf8', env: cliEnv });
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (r.status !== 0) throw new Error(`vhdsync resync failed: ${r.stderr}`);
    const peak = Number(/peak-kib (\d+)/.exec(r.stderr)[1]) * 1024;
    out.push({ size, peakRssBytes: peak, seconds, bytesSent: JSON.parse(r.stdout).bytesSent });
    for (const f of [base, primary, replica]) rmSync(f, { force: true });
  }
  const flat = out.length > 0 ? out[out.length - 1].peakRssBytes / out[0].peakRssBytes : 1;
  console.log(`peak RSS of a CLI resync (sparse dynamic VHDs, 2 MiB changed): ${out.map((m) => `${fmtGiB(m.size)} ${fmtMiB(m.peakRssBytes)}`).join(' · ')} (largest ÷ smallest ×${fmt(flat)}; target ≤ 256 MiB, flat)`);
  return out;
}

const fmtGiB = (b) => `${+(b / (1024 * MiB)).toFixed(2)} GiB`;
const fmt = (n, d = 2) => n.toFixed(d);
const fmtMiB = (b) => `${fmt(b / MiB)} MiB`;
const dir = mkdtempSync(join(tmpdir(), 'vhdsync-bench-'));
// The CLI's events and counters go to the bench's folder, not to the user's ~/.vhdsync.
const cliEnv = { ...process.env, VHDSYNC_HOME: join(dir, 'home') };
const rows = [];
try {
  if (!haveRsync()) throw new Error('rsync is not installed (apt-get install rsync)');
  for (const size of formats.includes('raw') ? sizes : []) {
    const base = join(dir, 'base.img');
    makeImage(base, size, 1);
    for (const rate of churns) {
      const primary = join(dir, 'primary.img');
      copyFileSync(base, primary);
      const changed = churn(primary, size, Math.round(size * rate), 7);
      const rOurs = join(dir, 'replica-vhdsync.img');
      const rRsync = join(dir, 'replica-rsync.img');
      const rCopy = join(dir, 'replica-copy.img');
      copyFileSync(base, rOurs);
      copyFileSync(base, rRsync);
      execFileSync('sync'); // write back the setup's dirty pages now, so no tool is charged for them
      readBoth(primary, rOurs); // warm the cache for everyone
      const floor = timeIt(() => readBoth(primary, rOurs));
      const ours = timeIt(() => {
        const r = spawnSync(process.execPath, [CLI_BIN, 'resync', primary, rOurs, '--json'], { encoding: 'utf8', env: cliEnv });
        if (r.status !== 0) throw new Error(`vhdsync resync failed: ${r.stderr}`);
        return JSON.parse(r.stdout);
      });
      const rs = timeIt(() => rsyncRun(primary, rRsync));
      const cp = timeIt(() => copyFileSync(primary, rCopy));
      for (const r of [rOurs, rRsync]) {
        if (spawnSync('cmp', ['-s', primary, r]).status !== 0) throw new Error(`${r} differs from the primary after the run`);
      }
      const oursWire = ours.out.wireBytes;
      const rsWire = rs.out.sent + rs.out.received;
      const row = {
        size,
        churn: rate,
        changedBytes: changed,
        vhdsync: { seconds: ours.seconds, compareSeconds: ours.out.phases.compare, wireBytes: oursWire, bytesSent: ours.out.bytesSent },
        rsync: { seconds: rs.seconds, wireBytes: rsWire },
        copy: { seconds: cp.seconds, wireBytes: size },
        readBothSeconds: floor.seconds,
        ratios: {
          timeVsRsync: ours.seconds / rs.seconds,
          bytesVsRsync: oursWire / rsWire,
          timeVsCopy: ours.seconds / cp.seconds,
          compareThroughputVsReadBoth: floor.seconds / ours.out.phases.compare,
        },
      };
      rows.push(row);
      console.log(
        `${fmtMiB(size).padStart(12)} churn ${String(rate * 100).padStart(5)} % | vhdsync ${fmt(ours.seconds)} s, ${fmtMiB(oursWire)} | rsync ${fmt(rs.seconds)} s, ${fmtMiB(rsWire)} | copy ${fmt(cp.seconds)} s | ` +
          `time ×${fmt(row.ratios.timeVsRsync)} of rsync, bytes ×${fmt(row.ratios.bytesVsRsync)} of rsync, compare at ${fmt(row.ratios.compareThroughputVsReadBoth * 100, 0)} % of read-both`,
      );
      rmSync(rCopy);
    }
  }
  const qemu = await qemuRows(dir);
  const memory = memorySeries(dir);
  const targets = {
    timeVsRsyncAtMost: 0.25,
    bytesVsRsyncAtMost: 1,
    compareThroughputVsReadBothAtLeast: 0.6,
  };
  const met = rows.every((r) => r.ratios.timeVsRsync <= targets.timeVsRsyncAtMost && r.ratios.bytesVsRsync <= targets.bytesVsRsyncAtMost);
  const summary = { bench: 'resync', node: process.version, rows, qemuRows: qemu, qemuTargets: { timeVsRsyncAtMost: 0.6, timeVsReadBothAtMost: 4 }, qemuTargetsMet: qemu.every((r) => r.met), memorySeries: memory, targets, targetsMet: met, rsync: execFileSync('rsync', ['--version'], { encoding: 'utf8' }).split('\n')[0] };
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(summary, null, 2) + '\n');
  if (rows.length > 0) console.log(met ? 'raw rows: targets met: time ≤ 0.25× rsync and bytes ≤ rsync on every row' : 'raw rows: targets NOT met on every row (see above)');
  if (qemu.length > 0) console.log(summary.qemuTargetsMet ? 'qemu-made rows: targets met: ≤ 0.6× rsync and ≤ 4× read-both' : 'qemu-made rows: targets NOT met on every row (see above)');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
