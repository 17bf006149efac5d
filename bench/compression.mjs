#!/usr/bin/env node
// npm run bench:compression [-- --scale 1/400 --json out.json]
//
// Compressor throughput on the seed's disk data (bench/scenarios/disks.mjs: the file server's mix of
// binaries, documents and media; the SQL server's pages and log), through the code the resync uses
// (host/transport/codec.ts Compressor: WASM zstd on worker threads, or Node's own zstd where present;
// deflate on Node's thread pool), in 1 MiB frames as the primary sends them. Throughput is raw bytes
// over wall time with frames kept in flight, against the 1 Gbps line rate (125 MB/s): issue 20 asks
// for ≥ 2× it on the file-server mix. Ratios are compressed / raw.
import { rmSync, mkdtempSync } from 'node:fs';
import { tmpdir, availableParallelism } from 'node:os';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { VMS, generateDisk } from './scenarios/disks.mjs';
import { openDisk } from '../dist/index.js';
import { Compressor, localCodecs } from '../dist/transport/codec.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const scaleText = opt('--scale', '1/400');
const [a, b] = scaleText.split('/').map(Number);
const scale = b ? a / b : a;
const FRAME = 1 << 20;
const LINE_1GBPS = 125e6;

const dir = mkdtempSync(join(tmpdir(), 'vhdsync-compression-'));
const results = [];
try {
  const codecs = await localCodecs();
  for (const vm of VMS) {
    const path = join(dir, `${vm.name}.vhd`);
    await generateDisk(vm, scale, path);
    const d = await openDisk(path, { readOnly: true });
    const frames = [];
    for (let blk = 0; blk < d.blockCount; blk++) {
      if (d.blockStatus(blk) !== 'present') continue;
      for (let off = 0; off < d.blockSize; off += FRAME) {
        const f = new Uint8Array(FRAME);
        await d.read(blk * d.blockSize + off, f);
        frames.push(f);
      }
    }
    await d.close();
    const bytes = frames.length * FRAME;
    const cases = [];
    for (const level of [1, 3, 6, 9]) for (const threads of [1, 2]) cases.push({ codec: 'zstd', level, threads });
    cases.push({ codec: 'deflate', level: 1, threads: 1 }, { codec: 'deflate', level: 6, threads: 1 });
    for (const c of cases) {
      if (!codecs.includes(c.codec)) continue;
      if (c.level > 3 && c.threads > 1) continue;
      const comp = new Compressor(c.codec, c.threads);
      await comp.compress(frames[0], c.level); // start the threads
      const inFlight = Math.max(2, c.threads * 2);
      let out = 0;
      let ms = 0;
      const t0 = performance.now();
      const queue = [];
      for (const f of frames) {
        queue.push(comp.compress(f, c.level).then((p) => ((out += p.payload.byteLength), (ms += p.ms))));
        if (queue.length >= inFlight) await queue.shift();
      }
      await Promise.all(queue);
      const seconds = (performance.now() - t0) / 1000;
      comp.close();
      const r = { vm: vm.name, role: vm.role, ...c, bytes, ratio: out / bytes, bytesPerSecond: bytes / seconds, vs1Gbps: bytes / seconds / LINE_1GBPS, threadBytesPerSecond: bytes / (ms / 1000) };
      results.push(r);
      console.error(`  ${vm.name.padEnd(5)} ${c.codec.padEnd(7)} level ${String(c.level).padEnd(2)} ${c.threads} thread${c.threads > 1 ? 's' : ' '}: ${(r.bytesPerSecond / 1e6).toFixed(0).padStart(4)} MB/s (${r.vs1Gbps.toFixed(2)}× 1 Gbps), ratio ${r.ratio.toFixed(3)}`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const md = [
  `## Compressor throughput (1 MiB frames, scale ${scaleText}, ${availableParallelism()} cores, Node ${process.version})`,
  '',
  '| Disk | Codec | Level | Threads | MB/s (wall) | × 1 Gbps | Ratio |',
  '|---|---|---|---|---|---|---|',
  ...results.map((r) => `| ${r.vm} (${r.role}) | ${r.codec} | ${r.level} | ${r.threads} | ${(r.bytesPerSecond / 1e6).toFixed(0)} | ${r.vs1Gbps.toFixed(2)} | ${r.ratio.toFixed(3)} |`),
].join('\n');
console.log(md);
const json = opt('--json');
if (json) writeFileSync(json, JSON.stringify({ bench: 'compression', scale, node: process.version, cores: availableParallelism(), results }, null, 2) + '\n');
