// Throughput of the WebAssembly core's batch XXH3-128 against named peers, measured in one run.
//
//   npm run bench:core                  (needs `npm run build`: it loads dist/core/index.js)
//   node bench/core.mjs --json out.json
//
// GB/s (10^9 bytes/s) over the same 64 MiB of random data, cut into blocks of 4 KiB, 64 KiB and
// 2 MiB. "from JS" includes copying each block from a JS buffer into WASM memory (as every peer
// here must do); "in place" hashes data that already sits in WASM memory (the zero-copy path the
// resync uses when it reads disk data straight into a region). Plain timed loops give the GB/s
// figures (per case: median over 3 interleaved rounds of the median of 2 passes after a warm-up); tinybench gives per-call latency.
// Ratios are against hash-wasm's XXH3-128 through its synchronous hasher (createXXHash128), its
// fastest API; the one-shot `xxhash128()` (a promise per call) is listed too. Only ratios carry
// over between machines: this VM is noisy (±20%).

import { createHash, randomFillSync } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { Bench } from 'tinybench';
import { createXXHash128, createXXHash64, xxhash128, xxhash64 } from 'hash-wasm';
import xxhashWasm from 'xxhash-wasm';

const distCore = new URL('../dist/core/index.js', import.meta.url);
if (!existsSync(distCore)) {
  console.error('bench/core: dist/core/index.js is missing; run `npm run build` first');
  process.exit(1);
}
const { loadCoreSync } = await import(distCore.href);

const args = process.argv.slice(2);
const jsonIndex = args.indexOf('--json');
const jsonFile = jsonIndex >= 0 ? args[jsonIndex + 1] : undefined;
if (jsonIndex >= 0 && !jsonFile) {
  console.error('bench/core: --json needs a file name');
  process.exit(2);
}

const TOTAL = 64 << 20;
const BLOCK_SIZES = [4096, 65536, 2 << 20];
const PASSES = 2;
const ROUNDS = 3;
const BASELINE = 'hash-wasm xxhash128 (hasher)';

const data = new Uint8Array(TOTAL);
randomFillSync(data);

const simd = loadCoreSync({ simd: true });
const scalar = loadCoreSync({ simd: false });
if (!simd.simd) console.warn('bench/core: this engine rejected the SIMD build; "simd" rows run scalar');
const regions = new Map([simd, scalar].map((core) => {
  const region = core.alloc(TOTAL);
  region.bytes().set(data);
  return [core, region];
}));

const hw128 = await createXXHash128();
const hw64 = await createXXHash64();
const { h64Raw } = await xxhashWasm();

/** Cases: name -> (blockSize) => one pass over TOTAL bytes (sync or async). */
const cases = [
  ['vhdsync XXH3-128 simd, in place', (bs) => simd.hashBlocksIn(regions.get(simd), 0, TOTAL, bs)],
  ['vhdsync XXH3-128 scalar, in place', (bs) => scalar.hashBlocksIn(regions.get(scalar), 0, TOTAL, bs)],
  ['vhdsync XXH3-128 simd, from JS', (bs) => simd.hashBlocks(data, bs)],
  ['vhdsync XXH3-128 scalar, from JS', (bs) => scalar.hashBlocks(data, bs)],
  [BASELINE, (bs) => eachBlock(bs, (b) => { hw128.init(); hw128.update(b); hw128.digest('binary'); })],
  ['hash-wasm xxhash128() one-shot', async (bs) => { for (let o = 0; o < TOTAL; o += bs) await xxhash128(data.subarray(o, o + bs)); }],
  ['hash-wasm xxhash64 (hasher)', (bs) => eachBlock(bs, (b) => { hw64.init(); hw64.update(b); hw64.digest('binary'); })],
  ['hash-wasm xxhash64() one-shot', async (bs) => { for (let o = 0; o < TOTAL; o += bs) await xxhash64(data.subarray(o, o + bs)); }],
  ['xxhash-wasm h64Raw', (bs) => eachBlock(bs, (b) => h64Raw(b))],
  ['node:crypto md5', (bs) => eachBlock(bs, (b) => createHash('md5').update(b).digest())],
  ['node:crypto sha256', (bs) => eachBlock(bs, (b) => createHash('sha256').update(b).digest())],
];

function eachBlock(bs, fn) {
  for (let o = 0; o < TOTAL; o += bs) fn(data.subarray(o, o + bs));
}

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median GB/s of `passes` timed passes after one warm-up pass. */
async function measure(fn, bs, passes) {
  await fn(bs);
  const rates = [];
  for (let i = 0; i < passes; i++) {
    const t = performance.now();
    await fn(bs);
    rates.push(TOTAL / ((performance.now() - t) / 1000) / 1e9);
  }
  return median(rates);
}

// ROUNDS interleaved rounds over the whole matrix, median per cell: on a noisy VM a slow spell then
// lowers every case a little instead of one case a lot.
const started = performance.now();
const samples = new Map();
for (let round = 0; round < ROUNDS; round++) {
  for (const bs of BLOCK_SIZES) {
    for (const [name, fn] of cases) {
      const key = `${name}|${bs}`;
      const gbps = await measure(fn, bs, PASSES);
      samples.set(key, [...(samples.get(key) ?? []), gbps]);
    }
  }
}
const results = [];
for (const bs of BLOCK_SIZES) {
  for (const [name] of cases) results.push({ name, blockSize: bs, gbps: median(samples.get(`${name}|${bs}`)), rounds: samples.get(`${name}|${bs}`).map((g) => +g.toFixed(3)) });
}
for (const r of results) {
  const base = results.find((b) => b.name === BASELINE && b.blockSize === r.blockSize);
  r.ratio = r.gbps / base.gbps;
}

// Per-call latency with the copy included (tinybench, p50), where call overhead matters.
const latency = [];
for (const size of [4096, 65536]) {
  const block = data.subarray(0, size);
  const bench = new Bench({ name: `one ${size}-byte block`, time: 300 });
  bench
    .add('vhdsync hash128 simd', () => simd.hash128(block))
    .add('vhdsync hash128 scalar', () => scalar.hash128(block))
    .add('hash-wasm xxhash128 (hasher)', () => { hw128.init(); hw128.update(block); hw128.digest('binary'); })
    .add('xxhash-wasm h64Raw', () => h64Raw(block));
  await bench.run();
  for (const task of bench.tasks) {
    latency.push({ name: task.name, blockSize: size, p50ns: Math.round(task.result.latency.p50 * 1e6) });
  }
}

// ---- report -----------------------------------------------------------------------------------
const fmtSize = (n) => (n >= 1 << 20 ? `${n >> 20} MiB` : `${n >> 10} KiB`);
const names = cases.map(([name]) => name);
const width = Math.max(...names.map((n) => n.length));
const cell = (r) => `${r.gbps.toFixed(2).padStart(6)} ${`${r.ratio.toFixed(2)}x`.padStart(7)}`;
console.log(`\nvhdsync core throughput, GB/s and ratio vs ${BASELINE} (${TOTAL >> 20} MiB per pass, node ${process.version})\n`);
console.log(`${'case'.padEnd(width)}  ${BLOCK_SIZES.map((bs) => fmtSize(bs).padStart(14)).join('  ')}`);
for (const name of names) {
  const row = BLOCK_SIZES.map((bs) => cell(results.find((r) => r.name === name && r.blockSize === bs)));
  console.log(`${name.padEnd(width)}  ${row.join('  ')}`);
}
console.log('\nper-call latency, copy included (tinybench p50, ns)');
for (const l of latency) console.log(`  ${l.name.padEnd(30)} ${fmtSize(l.blockSize).padStart(7)}  ${String(l.p50ns).padStart(8)}`);

const get = (name, bs) => results.find((r) => r.name === name && r.blockSize === bs);
const targets = [
  { target: 'simd from JS >= 1.5x hash-wasm xxhash128 at 2 MiB', value: get('vhdsync XXH3-128 simd, from JS', 2 << 20).ratio, min: 1.5 },
  { target: 'simd from JS >= 3x hash-wasm xxhash128 at 4 KiB', value: get('vhdsync XXH3-128 simd, from JS', 4096).ratio, min: 3 },
  { target: 'simd in place >= 3x hash-wasm xxhash128 at 4 KiB', value: get('vhdsync XXH3-128 simd, in place', 4096).ratio, min: 3 },
  { target: 'simd in place >= 5 GB/s at 2 MiB', value: get('vhdsync XXH3-128 simd, in place', 2 << 20).gbps, min: 5 },
  { target: 'scalar in place >= 5 GB/s at 2 MiB', value: get('vhdsync XXH3-128 scalar, in place', 2 << 20).gbps, min: 5 },
].map((t) => ({ ...t, met: t.value >= t.min }));
console.log('\ntargets');
for (const t of targets) console.log(`  ${t.met ? 'met    ' : 'NOT MET'}  ${t.target}: ${t.value.toFixed(2)}`);
const seconds = (performance.now() - started) / 1000;
console.log(`\n(${seconds.toFixed(1)} s)`);

if (jsonFile) {
  const report = {
    benchmark: 'core',
    date: new Date().toISOString(),
    node: process.version,
    simdBuild: simd.simd,
    totalBytes: TOTAL,
    baseline: BASELINE,
    results: results.map((r) => ({ ...r, gbps: +r.gbps.toFixed(3), ratio: +r.ratio.toFixed(3) })),
    latency,
    targets,
    seconds: +seconds.toFixed(1),
  };
  writeFileSync(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`wrote ${jsonFile}`);
}
