/**
 * The compare page end to end in real headless Chromium: `vhdsync web` serves it, the images go in
 * through the file inputs, and what the page finds must be what `vhdsync compare --json` finds.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createVhd, openDisk } from '../host/disk/index.js';
import { formatSize, KiB, MiB } from '../host/units.js';
import { compareInPage, launchChromium, OUTPUT, startWebCli } from './support/browser.js';
import { randomBytes } from './support/bytes.js';
import { cli } from './support/cli.js';
import { FIXTURES } from './support/fixtures.js';
import { tempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
let browser: Awaited<ReturnType<typeof launchChromium>>;
let context: BrowserContext;
let server: Awaited<ReturnType<typeof startWebCli>>;

/** As the page prints a byte count: "512 B", or "70 KiB (71,680 bytes)". */
function formatSizeText(n: number): string {
  return n < 1024 ? `${n} B` : `${formatSize(n)} (${n.toLocaleString('en-US')} bytes)`;
}

/** `vhdsync compare --json` on the same pair. */
function cliCompare(a: string, b: string) {
  const r = cli(['compare', '--json', a, b], { home: join(dir, 'home') });
  expect(r.status, r.stderr).not.toBe(2);
  return JSON.parse(r.stdout) as { identical: boolean; differingBytes: number; ranges: { start: number; end: number }[]; sizeA: number; sizeB: number };
}

/** A dynamic VHD with the given writes. */
async function makeVhd(path: string, size: number, blockSize: number, writes: [number, Uint8Array][]): Promise<void> {
  await createVhd(path, { size, type: 'dynamic', blockSize });
  const d = await openDisk(path);
  for (const [offset, data] of writes) await d.write(offset, data);
  await d.close();
}

/** The 4 KiB units holding a differing sector, counted from the ranges themselves. */
function unitsTouched(ranges: { start: number; end: number }[], unit: number): number {
  const set = new Set<number>();
  for (const r of ranges) for (let s = r.start; s < r.end; s += 512) set.add(Math.floor(s / unit));
  return set.size;
}

beforeAll(async () => {
  mkdirSync(OUTPUT, { recursive: true });
  ({ dir, cleanup } = tempDir('vhdsync-web-e2e-'));
  // primary.vhd: 32 MiB dynamic with data in blocks 0, 1, 5 and 9 (2 MiB blocks).
  await makeVhd(join(dir, 'primary.vhd'), 32 * MiB, 2 * MiB, [
    [0, randomBytes(3 * MiB, 1)],
    [10 * MiB + 12 * KiB, randomBytes(100 * KiB, 2)],
    [18 * MiB, randomBytes(2 * MiB, 3)],
  ]);
  // replica.img: raw, the primary's contents with scattered changes.
  const primary = await openDisk(join(dir, 'primary.vhd'), { readOnly: true });
  const raw = new Uint8Array(primary.virtualSize);
  await primary.read(0, raw);
  await primary.close();
  raw[4608] ^= 0xff; // one sector
  raw.set(randomBytes(70 * KiB, 4), 3 * MiB - 1000); // across the end of primary data
  raw.set(randomBytes(512, 5), 24 * MiB); // where the primary has no block
  raw.fill(0, 18 * MiB + 5 * KiB, 18 * MiB + 9 * KiB); // zeros over primary data
  writeFileSync(join(dir, 'replica.img'), raw);
  writeFileSync(join(dir, 'short.img'), raw.subarray(0, 16 * MiB));
  // A 96 MiB raw pair (24 chunks of 4 MiB) with changes spread over it: the map is drawn as it goes.
  const big = randomBytes(96 * MiB, 10);
  writeFileSync(join(dir, 'big-a.img'), big);
  for (let at = 1 * MiB; at < 96 * MiB; at += 7 * MiB + 4608) big.set(randomBytes(3000, at), at);
  writeFileSync(join(dir, 'big-b.img'), big);
  // 1500 one-sector changes 8 KiB apart: more ranges than the page lists.
  const many = randomBytes(16 * MiB, 11);
  writeFileSync(join(dir, 'many-a.img'), many);
  for (let i = 0; i < 1500; i++) many[i * 8 * KiB + 100] ^= 0x5a;
  writeFileSync(join(dir, 'many-b.img'), many);
  // A pair of dynamic VHDs with 512 KiB blocks, mostly unallocated on both sides.
  await makeVhd(join(dir, 'sparse-a.vhd'), 16 * MiB, 512 * KiB, [
    [0, randomBytes(300 * KiB, 6)],
    [3 * 512 * KiB, randomBytes(8 * KiB, 7)],
  ]);
  await makeVhd(join(dir, 'sparse-b.vhd'), 16 * MiB, 512 * KiB, [
    [0, randomBytes(300 * KiB, 6)],
    [100 * KiB, randomBytes(1 * KiB, 8)],
    [7 * 512 * KiB, randomBytes(4 * KiB, 9)],
  ]);
  writeFileSync(join(dir, 'corrupt-bat-past-eof.vhd'), gunzipSync(readFileSync(join(FIXTURES, 'corrupt-bat-past-eof.vhd.gz'))));
  writeFileSync(join(dir, 'diff-child-aligned.vhd'), gunzipSync(readFileSync(join(FIXTURES, 'diff-child-aligned.vhd.gz'))));

  server = await startWebCli({ home: join(dir, 'home') });
  browser = await launchChromium();
  context = browser.context;
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await cleanup?.();
});

describe('the compare page in headless Chromium', () => {
  it('a VHD against a raw image: the same differing ranges as vhdsync compare --json, the map, the estimate and hover', async () => {
    const a = join(dir, 'primary.vhd');
    const b = join(dir, 'replica.img');
    const expected = cliCompare(a, b);
    expect(expected.ranges.length).toBeGreaterThanOrEqual(4);

    const page = await context.newPage();
    const run = await compareInPage(page, server.url, a, b);
    expect(run.state).toBe('done');
    expect(run.json).toEqual(expected);
    expect(run.errors).toEqual([]);

    // What each image is.
    await expect(page.textContent('#primary [data-field="format"]')).resolves.toBe('VHD dynamic');
    await expect(page.textContent('#replica [data-field="format"]')).resolves.toBe('raw');
    await expect(page.textContent('#primary [data-field="virtual-size"]')).resolves.toBe('32 MiB (33,554,432 bytes)');
    expect(await page.isHidden('#message')).toBe(true); // same sizes: no warning

    // Progress reached the end and shows a throughput.
    expect(await page.getAttribute('#progress', 'value')).toBe('1');
    await expect(page.textContent('#progress-text')).resolves.toMatch(/^100% · 32 MiB of 32 MiB compared · read [\d.]+ MiB at [\d.]+ MB\/s/);

    // The map: 8192 cells of 4 KiB; a cell is different exactly when a differing sector lies in it.
    const map = await page.$eval('#map', (c) => ({ ...(c as HTMLCanvasElement).dataset }));
    const different = unitsTouched(expected.ranges, 4 * KiB);
    expect(map).toEqual({ identical: String(8192 - different), different: String(different), absent: '0', drawn: '8192', cells: '8192' });

    // The estimate: bytes sent at each granularity, and the times on both links.
    const rows = await page.$$eval('#estimate tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    const sent4k = different * 4 * KiB;
    expect(await page.getAttribute('#estimate tbody tr[data-granularity="4096"] td:nth-child(2)', 'data-bytes')).toBe(String(sent4k));
    const sent2m = unitsTouched(expected.ranges, 2 * MiB) * 2 * MiB;
    expect(await page.getAttribute('#estimate tbody tr[data-granularity="2097152"] td:nth-child(2)', 'data-bytes')).toBe(String(sent2m));
    expect(rows.map((r) => r[0])).toEqual(['4 KiB', '64 KiB', '2 MiB']);
    // 2 MiB units: blocks 0, 1, 9 and 12 differ -> 8 MiB, 67 ms at 1 Gbps and 44.7 s at 1.5 Mbps.
    expect(sent2m).toBe(8 * MiB);
    expect(rows[2].slice(1)).toEqual(['8 MiB (8,388,608 bytes)', '67 ms', '44.7 s']);

    // Hover: the cell under the pointer names its offset range.
    const box = (await page.locator('#map').boundingBox())!;
    await page.mouse.move(box.x + 1 * 6 + 2, box.y + 2); // cell 1: bytes 4096-8192, holds the flipped sector at 4608
    await expect(page.textContent('#cell-info')).resolves.toBe('cell 1: bytes 4096–8192 (0x1000–0x2000), 4 KiB · different: 512 B differ');
    expect(await page.isVisible('#tooltip')).toBe(true);
    await page.mouse.move(box.x + 2 * 6 + 2, box.y + 2);
    await expect(page.textContent('#tooltip')).resolves.toBe('cell 2: bytes 8192–12288 (0x2000–0x3000), 4 KiB · identical');
    await page.screenshot({ path: join(OUTPUT, 'web-compare.png'), fullPage: true });
    await page.close();
  });

  it('at 400 px wide: one column, nothing wider than the screen, the map scaled with hover still exact; the text names VHDX', async () => {
    const a = join(dir, 'primary.vhd');
    const b = join(dir, 'replica.img');
    const page = await context.newPage();
    await page.setViewportSize({ width: 400, height: 900 });
    const run = await compareInPage(page, server.url, a, b);
    expect(run.state).toBe('done');
    expect(run.errors).toEqual([]);
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(400);
    await expect(page.textContent('header')).resolves.toMatch(/VHDX, VHD fixed or dynamic, or raw/);
    const primary = (await page.locator('#primary').boundingBox())!;
    const replica = (await page.locator('#replica').boundingBox())!;
    expect(replica.y).toBeGreaterThan(primary.y + primary.height - 1); // stacked, not side by side
    await page.locator('#map').scrollIntoViewIfNeeded();
    const box = (await page.locator('#map').boundingBox())!;
    expect(box.width).toBeLessThan(400);
    const px = box.width / 128;
    await page.mouse.move(box.x + 1 * px + px / 2, box.y + px / 2);
    await expect(page.textContent('#cell-info')).resolves.toMatch(/^cell 1: bytes 4096–8192 /);
    await page.screenshot({ path: join(OUTPUT, 'web-compare-400px.png'), fullPage: true });
    await page.close();
  });

  it('works with the SIMD build and with the scalar fallback (?core=scalar), and marks blocks absent on both', async () => {
    const a = join(dir, 'sparse-a.vhd');
    const b = join(dir, 'sparse-b.vhd');
    const expected = cliCompare(a, b);
    expect(expected.identical).toBe(false);
    for (const [query, simd] of [
      ['', 'true'],
      ['?core=scalar', 'false'],
    ]) {
      const page = await context.newPage();
      const run = await compareInPage(page, server.url + query, a, b);
      expect(run.state).toBe('done');
      expect(await page.getAttribute('#core-build', 'data-simd')).toBe(simd);
      expect(run.json).toEqual(expected);
      expect(run.errors).toEqual([]);
      // Blocks 0, 3 and 7 (of 32) are allocated somewhere; the other 29 x 512 KiB read as zeros on both.
      const map = await page.$eval('#map', (c) => ({ ...(c as HTMLCanvasElement).dataset }));
      expect(map.absent).toBe(String(29 * 128));
      expect(map.different).toBe(String(unitsTouched(expected.ranges, 4 * KiB)));
      await page.close();
    }
  });

  it('a size mismatch is a clear message on the page, and the compare still matches the CLI', async () => {
    const a = join(dir, 'primary.vhd');
    const b = join(dir, 'short.img');
    const page = await context.newPage();
    const run = await compareInPage(page, server.url, a, b);
    expect(run.state).toBe('done');
    expect(run.json).toEqual(cliCompare(a, b));
    expect(run.errors).toEqual([]);
    await expect(page.textContent('#message')).resolves.toBe(
      'Size mismatch: the replica (16 MiB, 16777216 bytes) is smaller than the primary (32 MiB, 33554432 bytes). ' +
        'A resync refuses this pair; resize the replica to 33554432 bytes first. ' +
        "The compare below counts the shorter image's missing tail as zeros, as 'vhdsync compare' does.",
    );
    expect(await page.getAttribute('#message', 'class')).toBe('warning');
    await page.close();
  });

  it('a broken image and a differencing disk are clear messages on the page, not console errors', async () => {
    const page = await context.newPage();
    const run = await compareInPage(page, server.url, join(dir, 'primary.vhd'), join(dir, 'corrupt-bat-past-eof.vhd'));
    expect(run.state).toBe('error');
    expect(run.errors).toEqual([]);
    const line = await page.textContent('#replica .image-error');
    expect(line).toMatch(/^corrupt-bat-past-eof\.vhd: .*BAT/);
    // The command line says the same thing about the same file.
    const viaCli = cli(['info', join(dir, 'corrupt-bat-past-eof.vhd')], { home: join(dir, 'home') });
    expect(viaCli.stderr.trim()).toBe(`vhdsync: ${line!.replace('corrupt-bat-past-eof.vhd', join(dir, 'corrupt-bat-past-eof.vhd'))}`);
    await expect(page.textContent('#message')).resolves.toBe(`The replica image cannot be opened: ${line}`);
    expect(await page.isVisible('#message')).toBe(true);
    expect(await page.isHidden('#result')).toBe(true);
    expect(await page.isHidden('#run')).toBe(true); // no progress bar left spinning
    await expect(page.textContent('#primary [data-field="format"]')).resolves.toBe('VHD dynamic'); // the good side still shows
    await page.screenshot({ path: join(OUTPUT, 'web-broken-image.png'), fullPage: true });

    // Picking another file restarts: a differencing child cannot be read without its parent.
    await page.setInputFiles('#replica-file', join(dir, 'diff-child-aligned.vhd'));
    await page.waitForSelector('#replica .image-error:not([hidden])');
    await expect(page.textContent('#replica .image-error')).resolves.toMatch(
      /^diff-child-aligned\.vhd: a differencing VHD; its unchanged data lives in .*, which a page cannot open from one picked file/,
    );
    expect(run.errors).toEqual([]);
    await page.close();
  });

  it('lists the differing ranges, and its JSON download is byte for byte what vhdsync compare --json prints', async () => {
    const a = join(dir, 'primary.vhd');
    const b = join(dir, 'replica.img');
    const printed = cli(['compare', '--json', a, b], { home: join(dir, 'home') });
    expect(printed.status).toBe(1);
    const expected = JSON.parse(printed.stdout) as { ranges: { start: number; end: number }[]; differingBytes: number };

    const page = await context.newPage();
    const run = await compareInPage(page, server.url, a, b);
    expect(run.state).toBe('done');
    expect(run.errors).toEqual([]);
    expect(await page.isVisible('#ranges-section')).toBe(true);
    const rows = await page.$$eval('#ranges tbody tr', (trs) =>
      trs.map((tr) => ({ start: Number((tr as HTMLElement).dataset.start), end: Number((tr as HTMLElement).dataset.end), cells: [...tr.children].map((td) => td.textContent) })),
    );
    expect(rows.map(({ start, end }) => ({ start, end }))).toEqual(expected.ranges);
    // The first range is the flipped sector at 4608: offsets with their hex, the length in units.
    expect(rows[0].cells).toEqual(['1', '4,608 (0x1200)', '5,120 (0x1400)', '512 B']);
    await expect(page.textContent('#ranges-count')).resolves.toBe(`(${expected.ranges.length}, ${formatSizeText(expected.differingBytes)})`);
    expect(await page.isHidden('#ranges-more')).toBe(true);

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-json')]);
    expect(download.suggestedFilename()).toBe('primary-vs-replica.compare.json');
    const saved = join(dir, 'downloaded.json');
    await download.saveAs(saved);
    expect(readFileSync(saved, 'utf8')).toBe(printed.stdout);
    await page.close();
  });

  it('with more ranges than it lists, the page says how many more and the download still has them all', async () => {
    const a = join(dir, 'many-a.img');
    const b = join(dir, 'many-b.img');
    const printed = cli(['compare', '--json', a, b], { home: join(dir, 'home') });
    expect(JSON.parse(printed.stdout).ranges).toHaveLength(1500);
    const page = await context.newPage();
    const run = await compareInPage(page, server.url, a, b);
    expect(run.state).toBe('done');
    expect(await page.$$eval('#ranges tbody tr', (trs) => trs.length)).toBe(1000);
    expect(await page.getAttribute('#ranges tbody tr:last-child', 'data-start')).toBe(String(999 * 8 * KiB));
    await expect(page.textContent('#ranges-more')).resolves.toBe('… and 500 more: the JSON download lists them all.');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-json')]);
    expect(download.suggestedFilename()).toBe('many-a-vs-many-b.compare.json');
    const saved = join(dir, 'many.json');
    await download.saveAs(saved);
    expect(readFileSync(saved, 'utf8')).toBe(printed.stdout);
    await page.close();
  });

  it('two image files dropped on the page are compared as primary and replica; one dropped on a box replaces that side', async () => {
    const a = join(dir, 'sparse-a.vhd');
    const b = join(dir, 'sparse-b.vhd');
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    await page.goto(server.url);
    // Real File objects from disk through a helper input, then a drop event carrying them, as a drag from a file manager.
    const drop = async (paths: string[], target: string) => {
      await page.evaluate(() => {
        document.querySelector('#drop-source')?.remove();
        const input = Object.assign(document.createElement('input'), { type: 'file', multiple: true, id: 'drop-source', hidden: true });
        document.body.append(input);
      });
      await page.setInputFiles('#drop-source', paths);
      return page.evaluate((selector) => {
        const dt = new DataTransfer();
        for (const f of (document.querySelector('#drop-source') as HTMLInputElement).files!) dt.items.add(f);
        const el = document.querySelector(selector)!;
        el.dispatchEvent(new DragEvent('dragenter', { dataTransfer: dt, bubbles: true, cancelable: true }));
        const over = !el.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }));
        const highlighted = document.querySelector('.image.drag-over')?.id ?? null;
        const dropped = !el.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
        return { over, dropped, highlighted };
      }, target);
    };

    const both = await drop([a, b], 'header h1');
    expect(both).toEqual({ over: true, dropped: true, highlighted: null }); // the page took the drop (no navigation to the file)
    await page.waitForSelector('body[data-state="done"]');
    await expect(page.textContent('#primary [data-field="file"]')).resolves.toBe('sparse-a.vhd');
    await expect(page.textContent('#replica [data-field="file"]')).resolves.toBe('sparse-b.vhd');
    expect(JSON.parse((await page.textContent('#result-json'))!)).toEqual(cliCompare(a, b));
    expect(await page.$eval('#primary-file', (i) => (i as HTMLInputElement).files![0].name)).toBe('sparse-a.vhd');

    // One file onto the replica box: the primary stays, the pair is compared again.
    const one = await drop([join(dir, 'sparse-a.vhd')], '#replica');
    expect(one).toEqual({ over: true, dropped: true, highlighted: 'replica' });
    await page.waitForSelector('body[data-state="done"]');
    await expect(page.textContent('#replica [data-field="file"]')).resolves.toBe('sparse-a.vhd');
    await expect(page.textContent('#summary')).resolves.toBe('The images are identical.');
    expect(await page.isHidden('.image.drag-over')).toBe(true);

    // Three files: refused with a message, nothing replaced.
    await drop([a, b, a], 'main');
    await expect(page.textContent('#message')).resolves.toBe('Drop one or two image files (3 were dropped).');
    await expect(page.textContent('#replica [data-field="file"]')).resolves.toBe('sparse-a.vhd');
    expect(errors).toEqual([]);
    await page.close();
  });

  it('the block map has byte-offset labels on its rows and columns, placed on the rows they name, at 1000 and 400 px', async () => {
    for (const width of [1000, 400]) {
      const page = await context.newPage();
      await page.setViewportSize({ width, height: 900 });
      const run = await compareInPage(page, server.url, join(dir, 'primary.vhd'), join(dir, 'replica.img'));
      expect(run.state).toBe('done');
      await page.locator('#map').scrollIntoViewIfNeeded();
      const map = (await page.locator('#map').boundingBox())!;
      const labels = async (selector: string) =>
        page.$$eval(selector, (spans) =>
          spans.map((s) => {
            const r = s.getBoundingClientRect();
            return { text: s.textContent, offset: Number((s as HTMLElement).dataset.offset), top: r.top, bottom: r.bottom, left: r.left, right: r.right };
          }),
        );
      // 32 MiB in 4 KiB cells: 64 rows of 512 KiB; a label every 8 rows (4 MiB).
      const rows = await labels('.map-rows span');
      expect(rows.map((l) => l.text)).toEqual(['0 B', '4 MiB', '8 MiB', '12 MiB', '16 MiB', '20 MiB', '24 MiB', '28 MiB']);
      const rowPx = map.height / 64;
      rows.forEach((l, i) => {
        expect(l.offset).toBe(i * 4 * MiB);
        expect(Math.abs(l.top - (map.y + i * 8 * rowPx))).toBeLessThanOrEqual(1); // on the row it names
        expect(l.right).toBeLessThanOrEqual(map.x + 1); // left of the map
        expect(l.left).toBeGreaterThanOrEqual(0);
        if (i > 0) expect(l.top).toBeGreaterThanOrEqual(rows[i - 1].bottom); // no overlap
      });
      const columns = await labels('.map-columns span');
      expect(columns.map((l) => l.text)).toEqual(['+0 B', '+128 KiB', '+256 KiB', '+384 KiB']);
      columns.forEach((l, i) => {
        expect(Math.abs(l.left - (map.x + (i * map.width) / 4))).toBeLessThanOrEqual(1);
        expect(l.bottom).toBeLessThanOrEqual(map.y + 1); // above the map
        if (i > 0) expect(l.left).toBeGreaterThanOrEqual(columns[i - 1].right);
      });
      // The hover and the labels agree: the first cell of the row labelled 4 MiB starts at 4 MiB.
      const px = map.width / 128;
      await page.mouse.move(map.x + px / 2, map.y + 8 * rowPx + rowPx / 2);
      await expect(page.textContent('#cell-info')).resolves.toMatch(/^cell 1024: bytes 4194304–4198400 /);
      expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(width);
      await page.screenshot({ path: join(OUTPUT, `web-map-labels-${width}px.png`), fullPage: true });
      await page.close();
    }
  });

  it('draws the map as the compare goes: cells appear while it runs, in order, and end as the final map', async () => {
    const a = join(dir, 'big-a.img');
    const b = join(dir, 'big-b.img');
    const page = await context.newPage();
    const run = await compareInPage(page, server.url, a, b, 60_000, async (p) => {
      await p.evaluate(() => {
        const seen: { drawn: number; cells: number; state: string; progress: number; resultShown: boolean }[] = [];
        (window as unknown as { mapSeen: typeof seen }).mapSeen = seen;
        document.addEventListener('vhdsync:map', (e) => {
          const { drawn, cells } = (e as CustomEvent<{ drawn: number; cells: number }>).detail;
          seen.push({
            drawn,
            cells,
            state: document.body.dataset.state ?? '',
            progress: (document.querySelector('#progress') as HTMLProgressElement).value,
            resultShown: !(document.querySelector('#result') as HTMLElement).hidden,
          });
        });
      });
    });
    expect(run.state).toBe('done');
    expect(run.errors).toEqual([]);
    expect(run.json).toEqual(cliCompare(a, b));
    const seen = await page.evaluate(() => (window as unknown as { mapSeen: { drawn: number; cells: number; state: string; progress: number; resultShown: boolean }[] }).mapSeen);
    // 96 MiB in 16 KiB cells: 6144 cells. The first report comes after the first 4 MiB chunk (256 cells).
    expect(seen[0]).toMatchObject({ drawn: 0, cells: 6144, state: 'running' }); // the map appears, empty, once the sizes are known
    const partial = seen.filter((s) => s.drawn > 0 && s.drawn < s.cells);
    expect(partial.length).toBeGreaterThanOrEqual(1);
    expect(partial[0].drawn).toBe(256);
    for (const s of partial) expect(s).toMatchObject({ state: 'running', resultShown: false });
    for (let i = 1; i < seen.length; i++) expect(seen[i].drawn).toBeGreaterThanOrEqual(seen[i - 1].drawn);
    expect(seen.at(-1)!.drawn).toBe(6144);
    const map = await page.$eval('#map', (c) => ({ ...(c as HTMLCanvasElement).dataset }));
    expect(map.drawn).toBe('6144');
    expect(Number(map.identical) + Number(map.different)).toBe(6144);
    expect(Number(map.different)).toBe(unitsTouched(run.json!.ranges, 16 * KiB));
    console.log(`map reports during a 96 MiB compare: ${partial.length} partial of ${seen.length}`);
    await page.close();
  });
});
