/**
 * Crash safety: a child process (node on the built dist/disk/index.js) allocates blocks or merges an
 * overlay and is SIGKILLed at a random moment, many times. Every time the image must open and read
 * consistently, acknowledged (flushed) writes must be there, and a resumed merge must finish with the
 * right bytes.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOverlay, createVhd, mergeJournalPath, mergeOverlay, openDisk, type Disk } from '../host/disk/index.js';
import { MiB, expectSameBytes, readAll, removeDir, tempDir } from './disk.support.js';

const DIST = fileURLToPath(new URL('../dist/disk/index.js', import.meta.url));
const ITERATIONS = 20;

let dir: string;
beforeAll(() => {
  if (!existsSync(DIST)) throw new Error(`${DIST} is missing: run 'npm run build' first (npm test does)`);
  dir = tempDir('vhdsync-crash-');
});
afterAll(() => removeDir(dir));

/** Deterministic bytes for write `i` (never all zero, so "old" and "new" are always distinguishable). */
function payload(i: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let k = 0; k < len; k++) b[k] = ((i * 31 + k * 7) % 251) + 1;
  return b;
}

/** Where write `i` lands: each write has its own region, some sub-sector, some spanning blocks. */
function region(i: number, blockSize: number): { offset: number; length: number } {
  const base = i * 3 * 4096 + 512 * (i % 5);
  const length = i % 3 === 0 ? 700 : i % 3 === 1 ? 4096 : 2 * 4096 + 100;
  void blockSize;
  return { offset: base + (i % 7), length };
}

const ALLOC_WRITES = 120;

const ALLOC_SCRIPT = `
import { openDisk } from ${JSON.stringify(DIST)};
const [path] = process.argv.slice(2);
${payload.toString()}
${region.toString()}
const disk = await openDisk(path);
process.stdout.write('ready\\n');
for (let i = 0; i < ${ALLOC_WRITES}; i++) {
  const r = region(i, disk.blockSize);
  await disk.write(r.offset, payload(i, r.length));
  // Flush every other write, so kills land both inside an allocation and inside a flush.
  if (i % 2 === 1) {
    await disk.flush();
    process.stdout.write('durable ' + (i + 1) + '\\n');
  }
}
await disk.close();
process.stdout.write('done\\n');
`;

const MERGE_SCRIPT = `
import { mergeOverlay } from ${JSON.stringify(DIST)};
const [path] = process.argv.slice(2);
process.stdout.write('ready\\n');
await mergeOverlay(path, { checkpointBytes: 1 });
process.stdout.write('done\\n');
`;

const scripts = new Map<string, string>();

interface RunResult {
  lines: string[];
  killed: boolean;
  ms: number;
}

/** Run a script; SIGKILL it `killAfterMs` after it says "ready" (never, when undefined). */
function runChild(script: string, args: string[], killAfterMs?: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const file = join(dir, `script-${scripts.size}.mjs`);
    if (!scripts.has(script)) {
      writeFileSync(file, script);
      scripts.set(script, file);
    }
    const child = spawn(process.execPath, [scripts.get(script)!, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let start = 0;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!start && out.includes('ready\n')) {
        start = Date.now();
        if (killAfterMs !== undefined) setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL' && code !== 0) reject(new Error(`child failed (${code}): ${err}`));
      else resolve({ lines: out.split('\n').filter(Boolean), killed: signal === 'SIGKILL', ms: Date.now() - start });
    });
  });
}

async function readRange(disk: Disk, offset: number, length: number): Promise<Uint8Array> {
  const b = new Uint8Array(length);
  await disk.read(offset, b);
  return b;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

describe('killed during block allocation', () => {
  it.each([
    ['a dynamic VHD', 'dynamic'],
    ['a differencing overlay over a raw image', 'overlay'],
  ])(`%s always reopens with every acknowledged write and nothing torn (${ITERATIONS} kills)`, async (_what, kind) => {
    const size = 4 * MiB;
    const original = new Uint8Array(size);
    for (let k = 0; k < size; k += 512) original[k] = 0xee; // base data for the overlay case
    const template = join(dir, `${kind}-template.vhd`);
    if (kind === 'dynamic') {
      await createVhd(template, { size, type: 'dynamic', blockSize: 64 * 1024 });
      original.fill(0);
    } else {
      writeFileSync(join(dir, 'base.img'), original);
      await createOverlay(join(dir, 'base.img'), template, { blockSize: 64 * 1024 });
    }
    // Calibrate: how long does an uninterrupted run take?
    const full = join(dir, `${kind}-full.vhd`);
    copyFileSync(template, full);
    const calib = await runChild(ALLOC_SCRIPT, [full]);
    expect(calib.lines.at(-1)).toBe('done');

    let sawPartial = 0;
    for (let iter = 0; iter < ITERATIONS; iter++) {
      const path = join(dir, `${kind}-${iter}.vhd`);
      copyFileSync(template, path);
      const run = await runChild(ALLOC_SCRIPT, [path], Math.floor(Math.random() * calib.ms * 1.1));
      // Writes below `acked` were flushed; the next two may be in flight; later ones were never issued.
      const acked = Math.max(0, ...run.lines.filter((l) => l.startsWith('durable ')).map((l) => Number(l.slice(8))));
      if (run.killed && acked < ALLOC_WRITES) sawPartial++;
      // Open read-only first (what a reader meets right after the crash), then writable (repairs footers).
      for (const readOnly of [true, false]) {
        const disk = await openDisk(path, { readOnly });
        const bs = disk.blockSize;
        for (let i = 0; i < ALLOC_WRITES; i++) {
          const r = region(i, bs);
          const got = await readRange(disk, r.offset, r.length);
          const fresh = payload(i, r.length);
          const old = original.subarray(r.offset, r.offset + r.length);
          if (i < acked) {
            expect(same(got, fresh), `iteration ${iter}: acknowledged write ${i} lost`).toBe(true);
          } else if (i < acked + 2) {
            // In flight: every sector is either entirely old or entirely new.
            for (let s = 0; s < r.length; s += 512) {
              const o = Math.min(512 - ((r.offset + s) % 512), r.length - s);
              const g = got.subarray(s, s + o);
              expect(same(g, fresh.subarray(s, s + o)) || same(g, old.subarray(s, s + o)), `iteration ${iter}: torn write ${i}`).toBe(true);
            }
          } else {
            expect(same(got, old), `iteration ${iter}: write ${i} appeared before it was issued`).toBe(true);
          }
        }
        await disk.close();
      }
    }
    expect(sawPartial).toBeGreaterThan(ITERATIONS / 4); // the kills really landed mid-run
  });
});

describe('killed during a merge', () => {
  it(`resumes and finishes with the chain's bytes every time (${ITERATIONS} kills)`, async () => {
    const size = 4 * MiB;
    const base = join(dir, 'merge-base-template.vhd');
    await createVhd(base, { size, type: 'dynamic', blockSize: 64 * 1024 });
    let d = await openDisk(base);
    await d.write(0, payload(1000, size / 2)); // half the base allocated, half not
    await d.close();
    const overlay = join(dir, 'merge-overlay-template.vhd');
    await createOverlay(base, overlay, { blockSize: 64 * 1024 });
    d = await openDisk(overlay);
    for (let i = 0; i < 64; i++) {
      const r = region(i * 5, d.blockSize);
      await d.write(r.offset, payload(i, r.length));
    }
    await d.close();
    d = await openDisk(overlay, { readOnly: true });
    const expected = await readAll(d);
    await d.close();
    const originalBase = await (async () => {
      const b = await openDisk(base, { readOnly: true });
      const bytes = await readAll(b);
      await b.close();
      return bytes;
    })();

    const calibDir = tempDir('vhdsync-crash-merge-');
    copyFileSync(base, join(calibDir, 'merge-base-template.vhd'));
    copyFileSync(overlay, join(calibDir, 'ov.vhd'));
    const calib = await runChild(MERGE_SCRIPT, [join(calibDir, 'ov.vhd')]);
    removeDir(calibDir);

    let resumedMidway = 0;
    for (let iter = 0; iter < ITERATIONS; iter++) {
      const work = tempDir('vhdsync-crash-merge-');
      try {
        const b = join(work, 'merge-base-template.vhd');
        const o = join(work, 'ov.vhd');
        copyFileSync(base, b);
        copyFileSync(overlay, o);
        await runChild(MERGE_SCRIPT, [o], Math.floor(Math.random() * calib.ms * 1.1));
        // Right after the crash the base opens and every sector is old or merged.
        let disk = await openDisk(b, { readOnly: true });
        const mid = await readAll(disk);
        await disk.close();
        for (let s = 0; s < size; s += 512) {
          const g = mid.subarray(s, s + 512);
          expect(same(g, expected.subarray(s, s + 512)) || same(g, originalBase.subarray(s, s + 512)), `iteration ${iter}: sector ${s / 512}`).toBe(true);
        }
        if (existsSync(mergeJournalPath(o))) resumedMidway++;
        if (existsSync(o) || existsSync(mergeJournalPath(o))) await mergeOverlay(o);
        expect(existsSync(o)).toBe(false);
        expect(existsSync(mergeJournalPath(o))).toBe(false);
        disk = await openDisk(b, { readOnly: true });
        expectSameBytes(await readAll(disk), expected, `iteration ${iter}: merged base`);
        await disk.close();
      } finally {
        removeDir(work);
      }
    }
    expect(resumedMidway).toBeGreaterThan(0); // some kills landed inside the merge, after the journal
  });
});
