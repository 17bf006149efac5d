/**
 * What the page derives from a compare result, as pure functions: the bytes a resync would send at a
 * given transfer granularity, how long that takes on a link, and the block map's cells.
 * Browser-safe and DOM-free, so Node tests check the arithmetic.
 */
import { KiB, MiB, formatSize } from '../units.js';

export interface ByteRange {
  start: number;
  end: number;
}

/** The granularities the page prices a resync at: 4 KiB leaves, 64 KiB, 2 MiB (a VHD block). */
export const GRANULARITIES = [4 * KiB, 64 * KiB, 2 * MiB] as const;

/** The two links of the seed scenarios, in bits per second. */
export const LINKS = [
  { name: '1 Gbps', bitsPerSecond: 1e9 },
  { name: '1.5 Mbps', bitsPerSecond: 1.5e6 },
] as const;

/**
 * Bytes a resync sends when it ships every `granularity`-aligned unit that holds at least one
 * differing byte (the last unit is cut at `size`). `ranges` are sorted and disjoint, as diffDisks
 * returns them.
 */
export function resyncBytes(ranges: readonly ByteRange[], size: number, granularity: number): number {
  let total = 0;
  let counted = -1; // index of the last unit already paid for
  for (const r of ranges) {
    if (r.end <= r.start) continue;
    const first = Math.max(Math.floor(r.start / granularity), counted + 1);
    const last = Math.floor((r.end - 1) / granularity);
    for (let u = first; u <= last; u++) total += Math.min(granularity, size - u * granularity);
    if (last > counted) counted = last;
  }
  return total;
}

/** Seconds to move `bytes` at `bitsPerSecond` (payload only, no protocol overhead). */
export function transferSeconds(bytes: number, bitsPerSecond: number): number {
  return (bytes * 8) / bitsPerSecond;
}

/** "0 s", "66 µs", "17 ms", "2.35 s", "12.4 s", "3 min 20 s", "2 h 5 min", "3 d 4 h". */
export function formatDuration(seconds: number): string {
  if (seconds <= 0) return '0 s';
  if (seconds < 1e-6) return '< 1 µs';
  if (seconds < 0.0009995) return `${Math.round(seconds * 1e6)} µs`;
  if (seconds < 0.9995) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 10) return `${seconds.toFixed(2).replace(/\.?0+$/, '')} s`;
  if (seconds < 60) return `${seconds.toFixed(1).replace(/\.0$/, '')} s`;
  const s = Math.round(seconds);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** Decimal megabytes per second, the unit disk and network throughput are quoted in. */
export function formatRate(bytes: number, seconds: number): string {
  if (seconds <= 0) return '–';
  const mbps = bytes / seconds / 1e6;
  return `${mbps < 10 ? mbps.toFixed(1) : Math.round(mbps)} MB/s`;
}

// --- block map ----------------------------------------------------------------------------------

export const CELL_IDENTICAL = 0;
export const CELL_DIFFERENT = 1;
/** No data on either side (both read as zeros without being stored): nothing to compare or send. */
export const CELL_ABSENT = 2;

/** Most cells the map draws; a larger disk gets larger cells. */
export const MAX_CELLS = 8192;

/** Bytes per map cell: a power of two, at least 4 KiB, with at most MAX_CELLS cells for `size`. */
export function cellBytesFor(size: number): number {
  let cell = 4 * KiB;
  while (Math.ceil(size / cell) > MAX_CELLS) cell *= 2;
  return cell;
}

/** The byte range [start, end) that map cell `index` covers on a disk of `size` bytes. */
export function cellRange(index: number, cellBytes: number, size: number): ByteRange {
  return { start: index * cellBytes, end: Math.min((index + 1) * cellBytes, size) };
}

/**
 * Settles the block map's cells as a compare goes: `advance(done, ranges)` fixes every cell wholly
 * below `done` (all of them once `done` reaches the size) from the ranges found so far, which are final
 * below `done`. A cell with a differing byte is different whatever else holds; otherwise it is absent
 * when `absentOnBoth(start, end)` says neither disk stores data there, else identical.
 */
export class CellMapBuilder {
  readonly cells: Uint8Array;
  /** Cells [0, settled) are final. */
  settled = 0;
  private range = 0; // first range that may reach a cell not yet settled

  constructor(
    readonly size: number,
    readonly cellBytes: number,
    private readonly absentOnBoth: (start: number, end: number) => boolean,
  ) {
    this.cells = new Uint8Array(Math.ceil(size / cellBytes));
  }

  /** Settle the cells `done` completes; returns the first and the end of the cells settled now. */
  advance(done: number, ranges: readonly ByteRange[]): { from: number; to: number } {
    const from = this.settled;
    const to = done >= this.size ? this.cells.length : Math.max(from, Math.floor(done / this.cellBytes));
    for (let i = from; i < to; i++) {
      const { start, end } = cellRange(i, this.cellBytes, this.size);
      while (this.range < ranges.length && ranges[this.range].end <= start) this.range++;
      const r = ranges[this.range];
      this.cells[i] = r && r.start < end ? CELL_DIFFERENT : this.absentOnBoth(start, end) ? CELL_ABSENT : CELL_IDENTICAL;
    }
    this.settled = to;
    return { from, to };
  }
}

/** The whole map at once: one status byte per cell (see CellMapBuilder). */
export function buildCellMap(
  ranges: readonly ByteRange[],
  size: number,
  cellBytes: number,
  absentOnBoth: (start: number, end: number) => boolean,
): Uint8Array {
  const builder = new CellMapBuilder(size, cellBytes, absentOnBoth);
  builder.advance(size, ranges);
  return builder.cells;
}

/** A label on the block map's axes: `at` is a row (left axis) or a column (top axis). */
export interface AxisLabel {
  at: number;
  offset: number;
  text: string;
}

/** Rows between two offset labels on the map's left axis (a row is `columns` cells). */
export const ROWS_PER_LABEL = 8;

/**
 * The block map's offset labels: on the left, the disk offset where every ROWS_PER_LABEL-th row
 * starts ("0 B", "4 MiB", ...); on top, the offset within a row at each quarter ("+0 B", "+128 KiB", ...).
 */
export function mapAxes(cellCount: number, cellBytes: number, columns: number): { rows: AxisLabel[]; columns: AxisLabel[] } {
  const rows: AxisLabel[] = [];
  const rowCount = Math.ceil(cellCount / columns);
  for (let r = 0; r < rowCount; r += ROWS_PER_LABEL) {
    const offset = r * columns * cellBytes;
    rows.push({ at: r, offset, text: formatSize(offset) });
  }
  const cols: AxisLabel[] = [];
  for (let c = 0; c < columns; c += columns / 4) {
    const offset = c * cellBytes;
    cols.push({ at: c, offset, text: `+${formatSize(offset)}` });
  }
  return { rows, columns: cols };
}

/** Differing bytes inside [start, end) (binary search over sorted, disjoint ranges). */
export function differingIn(ranges: readonly ByteRange[], start: number, end: number): number {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ranges[mid].end <= start) lo = mid + 1;
    else hi = mid;
  }
  let total = 0;
  for (let i = lo; i < ranges.length && ranges[i].start < end; i++) {
    total += Math.min(end, ranges[i].end) - Math.max(start, ranges[i].start);
  }
  return total;
}
