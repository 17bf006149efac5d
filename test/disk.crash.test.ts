/**
 * Crash safety: a child process (node on the built dist/disk/index.js) allocates blocks or merges an
 * overlay and is SIGKILLed at a random moment, many times. Every time the image must open and read
 * consistently, acknowledged (flushed) writes must be there, and a resumed merge must finish with the
 * right bytes.
 */
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOverlay, createVhd, openDisk } from '../host/disk/index.js';
import { MiB } from '../host/units.js';
import { acknowledged, checkWrites, killMerges, payload, readImage, requireBuild, runChild, writeScript } from './support/crash-harness.js';
import { removeDir, tempDir } from './support/temp-dir.js';

const ITERATIONS = 20;

let dir: string;
beforeAll(() => {
  requireBuild();
  dir = tempDir('vhdsync-crash-').dir;
});
afterAll(() => removeDir(dir));

/** Where write `i` lands: each write has its own region, some sub-sector, some spanning blocks. */
function region(i: number): { offset: number; length: number } {
  const base = i * 3 * 4096 + 512 * (i % 5);
  const length = i % 3 === 0 ? 700 : i % 3 === 1 ? 4096 : 2 * 4096 + 100;
  return { offset: base + (i % 7), length };
}

const ALLOC_WRITES = 120;
const ALLOC_SCRIPT = writeScript(ALLOC_WRITES, region);

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
    // Calibrate on the fastest of three uninterrupted runs (as vhdx.crash does): on a shared machine one
    // slow calibration puts most kills after the run has ended, and the test proves nothing.
    let calib: Awaited<ReturnType<typeof runChild>> | undefined;
    for (let k = 0; k < 3; k++) {
      const full = join(dir, `${kind}-full-${k}.vhd`);
      copyFileSync(template, full);
      const run = await runChild(dir, ALLOC_SCRIPT, [full]);
      expect(run.lines.at(-1)).toBe('done');
      if (!calib || run.ms < calib.ms) calib = run;
    }

    let sawPartial = 0;
    for (let iter = 0; iter < ITERATIONS; iter++) {
      const path = join(dir, `${kind}-${iter}.vhd`);
      copyFileSync(template, path);
      const run = await runChild(dir, ALLOC_SCRIPT, [path], Math.floor(Math.random() * calib!.ms * 1.1));
      // Writes below `acked` were flushed; the next two may be in flight; later ones were never issued.
      const acked = acknowledged(run);
      if (run.killed && acked < ALLOC_WRITES) sawPartial++;
      // Open read-only first (what a reader meets right after the crash), then writable (repairs footers).
      for (const readOnly of [true, false]) checkWrites(await readImage(path, readOnly), original, ALLOC_WRITES, region, acked, `iteration ${iter}`);
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
      const r = region(i * 5);
      await d.write(r.offset, payload(i, r.length));
    }
    await d.close();
    const resumedMidway = await killMerges(dir, base, overlay, ITERATIONS);
    expect(resumedMidway).toBeGreaterThan(0); // some kills landed inside the merge, after the journal
  });
});
