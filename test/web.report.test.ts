/** The page's arithmetic: resync bytes per granularity, link times, and the block map's cells. */
import { describe, expect, it } from 'vitest';
import {
  CELL_ABSENT,
  CELL_DIFFERENT,
  CELL_IDENTICAL,
  CellMapBuilder,
  MAX_CELLS,
  ROWS_PER_LABEL,
  buildCellMap,
  cellBytesFor,
  cellRange,
  differingIn,
  formatDuration,
  formatRate,
  mapAxes,
  resyncBytes,
  transferSeconds,
} from '../host/web/report.js';
import { KiB, MiB } from '../host/units.js';

/** Brute force: mark every granularity unit that holds a differing byte, sum the units' lengths. */
function bruteResyncBytes(ranges: { start: number; end: number }[], size: number, g: number): number {
  const units = new Set<number>();
  for (const r of ranges) for (let b = r.start; b < r.end; b += 512) units.add(Math.floor(b / g));
  let total = 0;
  for (const u of units) total += Math.min(g, size - u * g);
  return total;
}

describe('resyncBytes', () => {
  it('pays a whole unit for one differing sector, once per unit, and cuts the last unit at the disk end', () => {
    const size = 10 * MiB + 512;
    const ranges = [
      { start: 512, end: 1024 }, // unit 0 at every granularity
      { start: 3584, end: 4608 }, // straddles the first 4 KiB boundary
      { start: 60 * KiB, end: 61 * KiB }, // same 64 KiB unit as the first ones
      { start: 10 * MiB, end: 10 * MiB + 512 }, // the last, short unit
    ];
    expect(resyncBytes(ranges, size, 4 * KiB)).toBe(3 * 4 * KiB + 512); // units 0, 1, 15 and the last
    expect(resyncBytes(ranges, size, 64 * KiB)).toBe(64 * KiB + 512);
    expect(resyncBytes(ranges, size, 2 * MiB)).toBe(2 * MiB + 512);
    expect(resyncBytes([], size, 4 * KiB)).toBe(0);
  });

  it('agrees with a brute-force count on scattered ranges', () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const size = 64 * MiB;
    const ranges: { start: number; end: number }[] = [];
    let at = 0;
    while (ranges.length < 200) {
      at += (1 + rand(4000)) * 512;
      const end = at + (1 + rand(300)) * 512;
      if (end > size) break;
      ranges.push({ start: at, end });
      at = end;
    }
    for (const g of [4 * KiB, 64 * KiB, 2 * MiB]) expect(resyncBytes(ranges, size, g)).toBe(bruteResyncBytes(ranges, size, g));
  });
});

describe('link times and rates', () => {
  it('2 MiB takes 16.8 ms at 1 Gbps and 11.2 s at 1.5 Mbps', () => {
    expect(transferSeconds(2 * MiB, 1e9)).toBeCloseTo(0.016777, 5);
    expect(transferSeconds(2 * MiB, 1.5e6)).toBeCloseTo(11.185, 2);
  });

  it('formats durations and rates for people', () => {
    expect(formatDuration(0)).toBe('0 s');
    expect(formatDuration(0.0000655)).toBe('66 µs');
    expect(formatDuration(1e-9)).toBe('< 1 µs');
    expect(formatDuration(0.0168)).toBe('17 ms');
    expect(formatDuration(2.5)).toBe('2.5 s');
    expect(formatDuration(11.185)).toBe('11.2 s');
    expect(formatDuration(200)).toBe('3 min 20 s');
    expect(formatDuration(7500)).toBe('2 h 5 min');
    expect(formatDuration(3 * 86400 + 4 * 3600 + 5)).toBe('3 d 4 h');
    expect(formatRate(850e6, 1)).toBe('850 MB/s');
    expect(formatRate(5e6, 2)).toBe('2.5 MB/s');
  });
});

describe('block map cells', () => {
  it('cells are 4 KiB on small disks and double until at most MAX_CELLS cover the disk', () => {
    expect(cellBytesFor(8 * MiB)).toBe(4 * KiB);
    expect(cellBytesFor(32 * MiB)).toBe(4 * KiB);
    expect(cellBytesFor(32 * MiB + 512)).toBe(8 * KiB);
    expect(cellBytesFor(1024 * MiB)).toBe(128 * KiB);
    for (const size of [1, 12345 * 512, 2040 * 1024 * MiB]) expect(Math.ceil(size / cellBytesFor(size))).toBeLessThanOrEqual(MAX_CELLS);
    expect(cellRange(3, 4 * KiB, 14 * KiB)).toEqual({ start: 12 * KiB, end: 14 * KiB });
  });

  it('a differing byte makes its cell different even where both disks store nothing; absent elsewhere is absent', () => {
    const size = 40 * KiB; // 10 cells of 4 KiB
    const cells = buildCellMap(
      [
        { start: 4 * KiB + 512, end: 5 * KiB },
        { start: 8 * KiB - 512, end: 12 * KiB + 512 }, // cells 1 (again), 2 and 3
        { start: 36 * KiB, end: 36 * KiB + 512 },
      ],
      size,
      4 * KiB,
      (start) => start >= 24 * KiB, // the disks store nothing from 24 KiB on
    );
    expect(Array.from(cells)).toEqual([
      CELL_IDENTICAL, CELL_DIFFERENT, CELL_DIFFERENT, CELL_DIFFERENT, CELL_IDENTICAL, CELL_IDENTICAL,
      CELL_ABSENT, CELL_ABSENT, CELL_ABSENT, CELL_DIFFERENT,
    ]);
    expect(differingIn([{ start: 4 * KiB + 512, end: 5 * KiB }, { start: 8 * KiB - 512, end: 12 * KiB + 512 }], 4 * KiB, 8 * KiB)).toBe(1024);
    expect(differingIn([{ start: 0, end: 512 }], 512, 4096)).toBe(0);
  });
});

describe('the block map as the compare goes', () => {
  it('cells settled chunk by chunk, with the ranges found so far, end exactly as the whole map', () => {
    const size = 10 * MiB + 3 * KiB; // 2563 cells of 4 KiB, the last one short
    const cellBytes = 4 * KiB;
    const all = [
      { start: 512, end: 1024 },
      { start: 4 * MiB - 512, end: 4 * MiB + 8 * KiB }, // across the first chunk's end
      { start: 6 * MiB, end: 6 * MiB + 512 },
      { start: 10 * MiB + 2 * KiB, end: 10 * MiB + 3 * KiB },
    ];
    const absent = (start: number) => start >= 7 * MiB && start < 9 * MiB;
    const whole = buildCellMap(all, size, cellBytes, absent);
    const builder = new CellMapBuilder(size, cellBytes, absent);
    const settledAt: number[] = [];
    for (let done = 4 * MiB; ; done = Math.min(size, done + 4 * MiB)) {
      // What diffDisks has found when it reports `done`: ranges cut at done (the one across it grows later).
      const found = all.filter((r) => r.start < done).map((r) => ({ start: r.start, end: Math.min(r.end, done) }));
      const { from, to } = builder.advance(done, found);
      expect(from).toBe(settledAt.at(-1) ?? 0);
      settledAt.push(to);
      expect(Array.from(builder.cells.subarray(0, to))).toEqual(Array.from(whole.subarray(0, to)));
      if (done === size) break;
    }
    expect(settledAt).toEqual([1024, 2048, whole.length]);
    expect(Array.from(builder.cells)).toEqual(Array.from(whole));
    expect(whole[0]).toBe(CELL_DIFFERENT);
    expect(whole[1023]).toBe(CELL_DIFFERENT);
    expect(whole[1024 + 1]).toBe(CELL_DIFFERENT); // the range ends at 4 MiB + 8 KiB: cells 1024 and 1025
    expect(whole[1024 + 2]).toBe(CELL_IDENTICAL);
    expect(whole[(7 * MiB) / cellBytes]).toBe(CELL_ABSENT);
    expect(whole.at(-1)).toBe(CELL_DIFFERENT);
    expect(builder.advance(size, all)).toEqual({ from: whole.length, to: whole.length }); // nothing twice
  });

  it('offset labels: a row start every ROWS_PER_LABEL rows on the left, quarters of a row on top, in binary units', () => {
    // 32 MiB in 4 KiB cells, 128 a row: a row is 512 KiB, a left label every 4 MiB.
    const axes = mapAxes(8192, 4 * KiB, 128);
    expect(ROWS_PER_LABEL).toBe(8);
    expect(axes.rows.map((l) => l.text)).toEqual(['0 B', '4 MiB', '8 MiB', '12 MiB', '16 MiB', '20 MiB', '24 MiB', '28 MiB']);
    expect(axes.rows.map((l) => l.at)).toEqual([0, 8, 16, 24, 32, 40, 48, 56]);
    expect(axes.rows[3].offset).toBe(12 * MiB);
    expect(axes.columns.map((l) => l.text)).toEqual(['+0 B', '+128 KiB', '+256 KiB', '+384 KiB']);
    expect(axes.columns.map((l) => l.at)).toEqual([0, 32, 64, 96]);
    // 2 TiB in 256 MiB cells: rows of 32 GiB, a label every 256 GiB.
    const big = mapAxes(8192, 256 * MiB, 128);
    expect(big.rows.slice(0, 3).map((l) => l.text)).toEqual(['0 B', '256 GiB', '512 GiB']);
    expect(big.rows.at(-1)!.text).toBe('1.75 TiB');
    // One short row: one label.
    expect(mapAxes(5, 4 * KiB, 128).rows).toEqual([{ at: 0, offset: 0, text: '0 B' }]);
  });
});
