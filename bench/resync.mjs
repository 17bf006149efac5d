#!/usr/bin/env node
// npm run bench:resync [-- --sizes 1G,4G --churn 0.001,0.05 --json out.json]
//
// Same-run ratios for a local resync against named peers on the same image pairs:
//   - rsync --inplace --no-whole-file (Debian package rsync): wall time and bytes on its wire
//   - a full copy (cp): wall time, and the whole image as bytes
//   - reading both images (the floor for any compare): time, to give our compare throughput as a share
// Images are raw, filled with a realistic mix (incompressible media, text, zeros) and resynced after a
// given churn of scattered 4–64 KiB writes. Everything runs warm in the page cache, for every tool alike.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, openSync, writeSync, closeSync, readSync, copyFileSync, statSync, writeFileSync } from 'node:fs';
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

const fmt = (n, d = 2) => n.toFixed(d);
const fmtMiB = (b) => `${fmt(b / MiB)} MiB`;
const dir = mkdtempSync(join(tmpdir(), 'vhdsync-bench-'));
const rows = [];
try {
  if (!haveRsync()) throw new Error('rsync is not installed (apt-get install rsync)');
  for (const size of sizes) {
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
        const r = spawnSync(process.execPath, [CLI, 'resync', primary, rOurs, '--json'], { encoding: 'utf8' });
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
  const targets = {
    timeVsRsyncAtMost: 0.25,
    bytesVsRsyncAtMost: 1,
    compareThroughputVsReadBothAtLeast: 0.6,
  };
  const met = rows.every((r) => r.ratios.timeVsRsync <= targets.timeVsRsyncAtMost && r.ratios.bytesVsRsync <= targets.bytesVsRsyncAtMost);
  const summary = { bench: 'resync', node: process.version, rows, targets, targetsMet: met, rsync: execFileSync('rsync', ['--version'], { encoding: 'utf8' }).split('\n')[0] };
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(summary, null, 2) + '\n');
  console.log(met ? 'targets met: time ≤ 0.25× rsync and bytes ≤ rsync on every row' : 'targets NOT met on every row (see above)');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
