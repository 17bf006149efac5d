#!/usr/bin/env node
// npm run bench:fixed [-- --node /path/to/node --runs 11 --json out.json]
//
// The fixed cost of a vhdsync run as a user meets it: whole processes, started one after the other
// in interleaved rounds (median of --runs), page cache warm. Floor: `node -e 0` under the same
// runtime. Peer: rsync --inplace --no-whole-file on the same pair. Cases:
//   --version, --help                        the bundled CLI (dist/cli/bin.js, the package's bin)
//   resync of an identical 16 MiB pair       dynamic VHDs made by qemu-img (convert -O vpc)
//   the same, unbundled (dist/cli/main.js)   what the bundle saves
//   the same, compile cache off              what module.enableCompileCache() saves (Node >= 22.1;
//                                            on Node 20 there is no cache and both rows are alike)
// Targets (issue 17): --version and --help <= 1.5x `node -e 0`; the 16 MiB resync <= 0.12 s.
// Run it under each runtime: `npm run bench:fixed` and `scripts/node24.sh npm run bench:fixed`.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = join(ROOT, 'dist', 'cli', 'bin.js');
const UNBUNDLED = join(ROOT, 'dist', 'cli', 'main.js');

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const node = arg('--node', process.execPath);
const runs = Number(arg('--runs', '11'));
const jsonOut = arg('--json');

const dir = mkdtempSync(join(tmpdir(), 'vhdsync-fixed-'));
const cacheDir = join(dir, 'compile-cache');
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

function timeRun(cmd, args, env = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, NODE_COMPILE_CACHE: cacheDir, ...env } });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return s;
}

try {
  const version = execFileSync(node, ['-p', 'process.version'], { encoding: 'utf8' }).trim();
  const raw = join(dir, 'disk.raw');
  const data = Buffer.alloc(16 << 20);
  randomFillSync(data);
  writeFileSync(raw, data);
  const primary = join(dir, 'primary.vhd');
  const replica = join(dir, 'replica.vhd');
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', raw, primary]);
  copyFileSync(primary, replica);
  const events = join(dir, 'home');
  const env = { VHDSYNC_HOME: events };
  const noCache = { ...env, NODE_DISABLE_COMPILE_CACHE: '1' };
  const cases = [
    ['node -e 0', () => timeRun(node, ['-e', '0'])],
    ['vhdsync --version', () => timeRun(node, [BIN, '--version'], env)],
    ['vhdsync --help', () => timeRun(node, [BIN, '--help'], env)],
    ['vhdsync --help, compile cache off', () => timeRun(node, [BIN, '--help'], noCache)],
    ['vhdsync --help, unbundled', () => timeRun(node, [UNBUNDLED, '--help'], env)],
    ['resync 16 MiB identical', () => timeRun(node, [BIN, 'resync', primary, replica, '--json'], env)],
    ['resync 16 MiB, compile cache off', () => timeRun(node, [BIN, 'resync', primary, replica, '--json'], noCache)],
    ['resync 16 MiB, unbundled', () => timeRun(node, [UNBUNDLED, 'resync', primary, replica, '--json'], env)],
    ['rsync --inplace --no-whole-file', () => timeRun('rsync', ['--inplace', '--no-whole-file', primary, replica])],
  ];
  for (const [, f] of cases) f(); // warm the page cache and the compile cache
  const samples = new Map(cases.map(([n]) => [n, []]));
  for (let i = 0; i < runs; i++) for (const [n, f] of cases) samples.get(n).push(f());
  const m = Object.fromEntries([...samples].map(([n, v]) => [n, median(v)]));
  const floor = m['node -e 0'];
  console.log(`fixed cost, ${version}, median of ${runs} (seconds; ratio to node -e 0)`);
  for (const [n] of cases) console.log(`  ${n.padEnd(36)} ${m[n].toFixed(3)} s  ${(m[n] / floor).toFixed(2)}×`);
  const targets = [
    { what: '--version ≤ 1.5× node -e 0', value: m['vhdsync --version'] / floor, limit: 1.5 },
    { what: '--help ≤ 1.5× node -e 0', value: m['vhdsync --help'] / floor, limit: 1.5 },
    { what: 'resync of an identical 16 MiB pair ≤ 0.12 s', value: m['resync 16 MiB identical'], limit: 0.12 },
  ].map((t) => ({ ...t, met: t.value <= t.limit }));
  for (const t of targets) console.log(`  ${t.met ? 'met   ' : 'MISSED'} ${t.what}: ${t.value.toFixed(3)}`);
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ bench: 'fixed-cost', node: version, runs, medianSeconds: m, samples: Object.fromEntries(samples), targets }, null, 2) + '\n');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
