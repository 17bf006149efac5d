import type { Core, WasmRegion } from '../core/types.js';
import type { Disk } from '../disk/disk.js';
import { syncIoInUse } from '../disk/file-io.js';
import { VhdsyncError } from '../errors.js';
import { MiB, KiB, formatSize } from '../units.js';

/**
 * The hash tree both sides build over their disk, region by region (ARCHITECTURE.md "Resync", step 4).
 *
 * A disk is cut into regions (16 MiB): the unit of pipelining, checkpointing and bounded memory. Inside a
 * region, leaves (4 KiB by default) are hashed with XXH3-128; each level above hashes runs of `fanout`
 * child digests, up to one root per region. Identical regions cost one 16-byte root on the wire; a
 * scattered change costs a few digests per level plus its own leaves.
 */
export const DIGEST_BYTES = 16;
export const DEFAULT_LEAF = 4 * KiB;
export const DEFAULT_REGION = 16 * MiB;
export const DEFAULT_FANOUT = 16;
/** Reads land in WASM memory in chunks of this size (double-buffered). */
export const CHUNK_BYTES = 4 * MiB;

export interface TreeShape {
  virtualSize: number;
  leafSize: number;
  regionSize: number;
  fanout: number;
}

export function makeShape(virtualSize: number, leafSize = DEFAULT_LEAF, fanout = DEFAULT_FANOUT, regionSize = DEFAULT_REGION): TreeShape {
  if (!Number.isInteger(leafSize) || leafSize < 512 || leafSize > CHUNK_BYTES || (leafSize & (leafSize - 1)) !== 0) {
    throw new VhdsyncError('USAGE', `--leaf ${formatSize(leafSize)}: the leaf size must be a power of two from 512 bytes to ${formatSize(CHUNK_BYTES)}`);
  }
  return { virtualSize, leafSize, regionSize, fanout };
}

export function regionCount(s: TreeShape): number {
  return Math.ceil(s.virtualSize / s.regionSize);
}

export function regionStart(s: TreeShape, r: number): number {
  return r * s.regionSize;
}

export function regionLength(s: TreeShape, r: number): number {
  return Math.min(s.regionSize, s.virtualSize - r * s.regionSize);
}

/** Node counts per level of region r: [leaves, ..., 1]. */
export function levelCounts(s: TreeShape, r: number): number[] {
  const counts = [Math.ceil(regionLength(s, r) / s.leafSize)];
  while (counts[counts.length - 1] > 1) counts.push(Math.ceil(counts[counts.length - 1] / s.fanout));
  return counts;
}

/** Digests of one region, levels[0] = leaves ... levels[top] = the root (16 bytes). */
export interface RegionTree {
  region: number;
  levels: Uint8Array[];
  /** Bytes actually read from the disk (absent and zero blocks are not read). */
  bytesRead: number;
}

export function rootOf(t: RegionTree): Uint8Array {
  return t.levels[t.levels.length - 1];
}

/** Digests of all-zero leaves by length, so absent blocks cost no read and no hashing. */
class ZeroDigests {
  private readonly byLength = new Map<number, Uint8Array>();
  constructor(private readonly core: Core) {}
  get(length: number): Uint8Array {
    let d = this.byLength.get(length);
    if (!d) {
      d = this.core.hash128(new Uint8Array(length));
      this.byLength.set(length, d);
    }
    return d;
  }
}

/**
 * Scans a disk region by region, reading straight into WASM memory (a ring of buffers, so the next reads
 * run while the current chunk is hashed when I/O is asynchronous) and returning each region's tree.
 */
export class RegionScanner {
  private readonly buffers: WasmRegion[];
  private readonly zeros: ZeroDigests;
  /** The tree of a region with no data at all, by region length: sparse disks are mostly such regions. */
  private readonly emptyTrees = new Map<number, Uint8Array[]>();

  constructor(
    private readonly core: Core,
    private readonly disk: Disk,
    private readonly shape: TreeShape,
    /**
     * Reads kept in flight ahead of the hashing. None with synchronous I/O: each read is done when its
     * call returns, and one buffer instead of three spares the first touch of 8 MiB of WASM memory.
     */
    private readonly depth = syncIoInUse() ? 0 : 2,
    /**
     * A scoped resync (resync/scope.ts): only leaves meeting these sorted byte ranges are read; the
     * rest are known equal on both sides and take the zero digest, as absent blocks do.
     */
    private readonly scope?: readonly [number, number][],
  ) {
    this.buffers = Array.from({ length: depth + 1 }, () => core.alloc(CHUNK_BYTES));
    this.zeros = new ZeroDigests(core);
    // Warm the core's scratch space to its steady-state size now, so no memory growth (which would
    // detach views that reads are filling) happens while a read is in flight.
    core.hashTree(new Uint8Array((shape.regionSize / shape.leafSize) * DIGEST_BYTES), shape.fanout);
  }

  async scan(r: number): Promise<RegionTree> {
    const s = this.shape;
    const start = regionStart(s, r);
    const length = regionLength(s, r);
    const leafCount = Math.ceil(length / s.leafSize);

    // Runs of leaves that must be read (some block under them has data); the rest are zero digests.
    const runs = this.presentRuns(start, length);
    const cached = runs.length === 0 ? this.emptyTrees.get(length) : undefined;
    if (cached) {
      await new Promise((resolve) => setImmediate(resolve));
      return { region: r, levels: cached, bytesRead: 0 }; // shared: nobody writes into a tree's levels
    }
    // Allocated only past the shortcut: 64 KiB per 16 MiB region, which across the empty regions of a
    // large sparse disk was garbage that grew the peak RSS with the disk's size (issue 17).
    const leaves = new Uint8Array(leafCount * DIGEST_BYTES);
    let bytesRead = 0;
    let covered = 0; // leaves filled so far
    const fillZeros = (upTo: number) => {
      for (let i = covered; i < upTo; i++) {
        const leafLen = Math.min(s.leafSize, length - i * s.leafSize);
        leaves.set(this.zeros.get(leafLen), i * DIGEST_BYTES);
      }
      covered = Math.max(covered, upTo);
    };

    // Chunks of present runs, read into alternating buffers; the read of chunk k+1 overlaps hashing of k.
    const chunks: { leaf: number; offset: number; length: number }[] = [];
    for (const [first, end] of runs) {
      for (let l = first; l < end; l += CHUNK_BYTES / s.leafSize) {
        const lastLeaf = Math.min(end, l + CHUNK_BYTES / s.leafSize);
        const off = start + l * s.leafSize;
        const len = Math.min(lastLeaf * s.leafSize, length) - l * s.leafSize;
        chunks.push({ leaf: l, offset: off, length: len });
      }
    }
    const ring = this.buffers.length;
    const reads: Promise<void>[] = [];
    const readInto = (k: number) => {
      if (k >= chunks.length) return;
      const c = chunks[k];
      reads[k] = this.disk.read(c.offset, this.buffers[k % ring].bytes().subarray(0, c.length));
      reads[k].catch(() => {}); // a read ahead may fail before its turn: it is awaited (and thrown) then
    };
    try {
      for (let k = 0; k < this.depth; k++) readInto(k);
      for (let k = 0; k < chunks.length; k++) {
        if (this.depth === 0) readInto(k);
        await reads[k];
        if (this.depth > 0) readInto(k + this.depth);
        const c = chunks[k];
        fillZeros(c.leaf);
        const digests = this.core.hashBlocksIn(this.buffers[k % ring], 0, c.length, s.leafSize);
        leaves.set(digests, c.leaf * DIGEST_BYTES);
        covered = c.leaf + digests.byteLength / DIGEST_BYTES;
        bytesRead += c.length;
      }
    } catch (e) {
      // A failed read: the reads started ahead must finish before the caller frees their buffers.
      await Promise.allSettled(reads);
      throw e;
    }
    fillZeros(leafCount);

    const levels: Uint8Array[] = [leaves];
    while (levels[levels.length - 1].byteLength > DIGEST_BYTES) {
      levels.push(this.core.hashTree(levels[levels.length - 1], s.fanout));
    }
    if (runs.length === 0) this.emptyTrees.set(length, levels);
    // With synchronous disk I/O (useSyncIo) a scan never waits: let timers, signals and messages run.
    await new Promise((resolve) => setImmediate(resolve));
    return { region: r, levels, bytesRead };
  }

  /**
   * [firstLeaf, endLeaf) runs of region-relative leaves whose bytes may be non-zero: one blockStatus
   * call per disk block (not per leaf), since a 16 MiB region has thousands of leaves and few blocks.
   */
  private presentRuns(start: number, length: number): [number, number][] {
    const runs = this.blockRuns(start, length);
    return this.scope ? clipRuns(runs, this.scope, start, this.shape.leafSize) : runs;
  }

  private blockRuns(start: number, length: number): [number, number][] {
    const s = this.shape;
    const bs = this.disk.blockSize;
    const runs: [number, number][] = [];
    const leafCount = Math.ceil(length / s.leafSize);
    for (let blk = Math.floor(start / bs); blk * bs < start + length; blk++) {
      if (this.disk.blockStatus(blk) !== 'present') continue;
      const first = Math.floor(Math.max(0, blk * bs - start) / s.leafSize);
      const end = Math.min(leafCount, Math.ceil((blk * bs + bs - start) / s.leafSize));
      const last = runs[runs.length - 1];
      if (last && first <= last[1]) last[1] = Math.max(last[1], end);
      else runs.push([first, end]);
    }
    return runs;
  }

  free(): void {
    for (const b of this.buffers) b.free();
  }
}

/** Region-relative leaf runs cut to the leaves that meet the (sorted, absolute) byte ranges. */
export function clipRuns(runs: [number, number][], ranges: readonly [number, number][], start: number, leafSize: number): [number, number][] {
  const out: [number, number][] = [];
  if (runs.length === 0) return out;
  const lo = start + runs[0][0] * leafSize;
  // First range ending past the first run (binary search), then walk both lists.
  let a = 0;
  let b = ranges.length;
  while (a < b) {
    const m = (a + b) >> 1;
    if (ranges[m][1] <= lo) a = m + 1;
    else b = m;
  }
  for (const [f, e] of runs) {
    for (let k = a; k < ranges.length; k++) {
      const [rs, re] = ranges[k];
      if (re <= start + f * leafSize) continue;
      if (rs >= start + e * leafSize) break;
      const lf = Math.max(f, Math.floor((rs - start) / leafSize));
      const le = Math.min(e, Math.ceil((re - start) / leafSize));
      if (lf < le) out.push([lf, le]);
    }
  }
  return out;
}

/** Leaf indices at `level - 1` that are children of the given nodes at `level`. */
export function childrenOf(nodes: Iterable<number>, fanout: number, childCount: number): number[] {
  const out: number[] = [];
  for (const n of nodes) {
    const end = Math.min((n + 1) * fanout, childCount);
    for (let c = n * fanout; c < end; c++) out.push(c);
  }
  return out;
}

export function digestAt(level: Uint8Array, index: number): Uint8Array {
  return level.subarray(index * DIGEST_BYTES, (index + 1) * DIGEST_BYTES);
}

export function sameDigest(a: Uint8Array, ai: number, b: Uint8Array, bi: number): boolean {
  const ao = ai * DIGEST_BYTES;
  const bo = bi * DIGEST_BYTES;
  for (let k = 0; k < DIGEST_BYTES; k++) if (a[ao + k] !== b[bo + k]) return false;
  return true;
}
