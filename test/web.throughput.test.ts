/**
 * Throughput of the compare page in Chromium next to `vhdsync compare` on the same 1 GiB pair (a fixed
 * VHD against a raw image, fully allocated, so every byte of both is read). A measurement, not an
 * assertion on speed; skipped unless VHDSYNC_WEB_BENCH=1. Prints a table and writes
 * test-output/web-throughput.json.
 *
 *   VHDSYNC_WEB_BENCH=1 npx vitest run test/web.throughput.test.ts
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVhd, openDisk } from '../host/disk/index.js';
import { compareInPage, launchChromium, OUTPUT, startWebCli } from './support/browser.js';
import { randomBytes } from './support/bytes.js';
import { cli } from './support/cli.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

const SIZE = 1024 * MiB;
const RUNS = 3;

let dir: string;
let cleanup: () => void;

/** Read a file end to end so that every run, CLI or browser, starts from the page cache. */
function warm(path: string): void {
  const fd = openSync(path, 'r');
  const buf = Buffer.allocUnsafe(16 * MiB);
  while (readSync(fd, buf) > 0);
  closeSync(fd);
}

const mbps = (bytes: number, ms: number) => Math.round(bytes / 1e6 / (ms / 1000));

describe.skipIf(!process.env.VHDSYNC_WEB_BENCH)('compare throughput on a 1 GiB pair: browser vs CLI', () => {
  beforeAll(async () => {
    ({ dir, cleanup } = tempDir('vhdsync-web-bench-'));
    const pattern = randomBytes(4 * MiB, 11);
    await createVhd(join(dir, 'primary.vhd'), { size: SIZE, type: 'fixed' });
    const vhd = await openDisk(join(dir, 'primary.vhd'));
    const fd = openSync(join(dir, 'replica.img'), 'w');
    for (let off = 0; off < SIZE; off += pattern.length) {
      pattern[0] = off / pattern.length; // every chunk a little different
      await vhd.write(off, pattern);
      // The replica differs in one sector of every 64 MiB.
      if (off % (64 * MiB) === 0) pattern[4096] ^= 0xff;
      writeSync(fd, pattern);
      if (off % (64 * MiB) === 0) pattern[4096] ^= 0xff;
    }
    closeSync(fd);
    await vhd.close();
  }, 300_000);
  afterAll(async () => cleanup?.());

  it('measures both', async () => {
    const a = join(dir, 'primary.vhd');
    const b = join(dir, 'replica.img');
    warm(a);
    warm(b);

    const cliMs: number[] = [];
    let cliJson = '';
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      const r = cli(['compare', '--json', a, b], { home: join(dir, 'home') });
      cliMs.push(performance.now() - t0);
      expect(r.status, r.stderr).toBe(1);
      cliJson = r.stdout;
    }
    const expected = JSON.parse(cliJson);
    expect(expected.ranges).toHaveLength(16);

    const server = await startWebCli({ home: join(dir, 'home') });
    const browser = await launchChromium();
    const pageMs: Record<string, number[]> = { simd: [], scalar: [] };
    const stalls: number[] = [];
    try {
      for (const [build, query] of [
        ['simd', ''],
        ['scalar', '?core=scalar'],
      ] as const) {
        for (let i = 0; i < RUNS; i++) {
          const page = await browser.context.newPage();
          const run = await compareInPage(page, server.url + query, a, b, 300_000, watchMainThread);
          expect(run.json).toEqual(expected);
          // The worker's own clock: from both images opened to the result, what the page shows.
          pageMs[build].push(Number(await page.getAttribute('#progress-text', 'data-elapsed-ms')));
          stalls.push(await page.evaluate(() => (window as unknown as { longestGap: number }).longestGap));
          await page.close();
        }
      }
    } finally {
      await browser.close();
      await server.stop();
    }

    const best = (xs: number[]) => Math.min(...xs);
    const rows = [
      { what: 'vhdsync compare (CLI, wall incl. node start)', ms: best(cliMs) },
      { what: 'page in Chromium, SIMD core (worker time)', ms: best(pageMs.simd) },
      { what: 'page in Chromium, scalar core (worker time)', ms: best(pageMs.scalar) },
    ].map((r) => ({ ...r, ms: Math.round(r.ms), diskMBps: mbps(SIZE, r.ms), readMBps: mbps(2 * SIZE, r.ms) }));
    const mainThreadLongestGapMs = Math.round(Math.max(...stalls));
    const report = { pair: '1 GiB fixed VHD vs 1 GiB raw, page cache warm', runs: RUNS, cores: cores(), rows, cliMs, pageMs, mainThreadLongestGapMs };
    mkdirSync(OUTPUT, { recursive: true });
    writeFileSync(join(OUTPUT, 'web-throughput.json'), JSON.stringify(report, null, 2));
    console.table(rows);
    console.log(`page main thread: longest gap between 10 ms timer ticks during the compares: ${mainThreadLongestGapMs} ms`);
  }, 600_000);
});

/** A 10 ms timer on the page's main thread that records its longest gap: how responsive the page stayed. */
async function watchMainThread(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { longestGap: number };
    w.longestGap = 0;
    let last = performance.now();
    setInterval(() => {
      const now = performance.now();
      w.longestGap = Math.max(w.longestGap, now - last);
      last = now;
    }, 10);
  });
}

function cores(): number {
  return Number(spawnSync('nproc', { encoding: 'utf8' }).stdout.trim()) || 0;
}
