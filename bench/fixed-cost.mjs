#!/usr/bin/env node
// npm run bench:fixed [-- --node /path/to/node --runs 11 --json out.json]
//
// The fixed cost of a vhdsync run as a user meets it: whole processes, started one after the other
// in interleaved rounds (median of --runs), page cache warm. Floor: `node -e 0` under the same
// runtime. Peer: rsync --inplace --no-whole-file on the same pair. Cases:
//   --version, --help                        the bundled CLI (dist/cli/bin.js, the package's bin)
//   resync of an identical 16 MiB pair       dynamic VHDs made by qemu-img (convert -O vpc)
//   the same, unbundled (dist/cli/main.js)   what the bundle saves
//   the same, compile cache off              what the code caches save (NODE_DISABLE_COMPILE_CACHE=1):
//                                            the bundle's own V8 cache (host/cli/code-cache.ts, every
//                                            Node) and Node's compile cache (Node >= 22.1)
// With GNU time installed each row also gets its median CPU seconds (user + sys, all threads).
// Targets (issue 17): --version and --help <= 1.5x `node -e 0`; the 16 MiB resync <= 0.12 s.
// Run it under each runtime: `npm run bench:fixed` and `scripts/node24.sh npm run bench:fixed`.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
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

// CPU seconds (user + sys, all threads) by GNU time where it is installed: on a shared machine the
// wall time mostly measures the queue for a core, the CPU time what a run costs.
const gnuTime = spawnSync('/usr/bin/time', ['-f', '%U', 'true'], { encoding: 'utf8' }).status === 0;
const cpu = new Map();

function timeRun(cmd, args, env = {}, name) {
  const t0 = process.hrtime.bigint();
  const [file, argv] = gnuTime ? ['/usr/bin/time', ['-f', 'cpu-seconds %U %S', cmd, ...args]] : [cmd, args];
  const r = spawnSync(file, argv, { encoding: 'utf8', env: { ...process.env, NODE_COMPILE_CACHE: cacheDir, ...env } });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  const m = /cpu-seconds ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr);
  if (name && m) cpu.set(name, [...(cpu.get(name) ?? []), Number(m[1]) + Number(m[2])]);
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
    ['node -e 0', (n) => timeRun(node, ['-e', '0'], {}, n)],
    ['vhdsync --version', (n) => timeRun(node, [BIN, '--version'], env, n)],
    ['vhdsync --help', (n) => timeRun(node, [BIN, '--help'], env, n)],
    ['vhdsync --help, compile cache off', (n) => timeRun(node, [BIN, '--help'], noCache, n)],
    ['vhdsync --help, unbundled', (n) => timeRun(node, [UNBUNDLED, '--help'], env, n)],
    ['resync 16 MiB identical', (n) => timeRun(node, [BIN, 'resync', primary, replica, '--json'], env, n)],
    ['resync 16 MiB, compile cache off', (n) => timeRun(node, [BIN, 'resync', primary, replica, '--json'], noCache, n)],
    ['resync 16 MiB, unbundled', (n) => timeRun(node, [UNBUNDLED, 'resync', primary, replica, '--json'], env, n)],
    ['rsync --inplace --no-whole-file', (n) => timeRun('rsync', ['--inplace', '--no-whole-file', primary, replica], {}, n)],
  ];
  for (const [, f] of cases) f(); // warm the page cache and the compile cache
  const samples = new Map(cases.map(([n]) => [n, []]));
  for (let i = 0; i < runs; i++) for (const [n, f] of cases) samples.get(n).push(f(n));
  const m = Object.fromEntries([...samples].map(([n, v]) => [n, median(v)]));
  const floor = m['node -e 0'];
  const c = Object.fromEntries([...cpu].map(([n, v]) => [n, median(v)]));
  console.log(`fixed cost, ${version}, median of ${runs} (seconds; ratio to node -e 0${gnuTime ? '; CPU seconds, user + sys' : ''}), load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  for (const [n] of cases) console.log(`  ${n.padEnd(36)} ${m[n].toFixed(3)} s  ${(m[n] / floor).toFixed(2)}×${n in c ? `   cpu ${c[n].toFixed(2)} s` : ''}`);
  const targets = [
    { what: '--version ≤ 1.5× node -e 0', value: m['vhdsync --version'] / floor, limit: 1.5 },
    { what: '--help ≤ 1.5× node -e 0', value: m['vhdsync --help'] / floor, limit: 1.5 },
    { what: 'resync of an identical 16 MiB pair ≤ 0.12 s', value: m['resync 16 MiB identical'], limit: 0.12 },
  ].map((t) => ({ ...t, met: t.value <= t.limit }));
  for (const t of targets) console.log(`  ${t.met ? 'met   ' : 'MISSED'} ${t.what}: ${t.value.toFixed(3)}`);
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ bench: 'fixed-cost', node: version, runs, loadAverage: loadavg(), medianSeconds: m, medianCpuSeconds: c, samples: Object.fromEntries(samples), targets }, null, 2) + '\n');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
