import type { Core } from '../core/types.js';
import type { Disk } from '../disk/disk.js';
import { VhdsyncError } from '../errors.js';
import type { Codec } from '../transport/protocol.js';
import type { Channel } from './channel.js';
import { AdaptiveCompression } from './compression.js';
import type { Compressor } from '../transport/codec.js';
import {
  RegionScanner,
  childrenOf,
  levelCounts,
  regionCount,
  regionLength,
  regionStart,
  rootOf,
  sameDigest,
  type RegionTree,
  type TreeShape,
} from './tree.js';

/** Regions the replica may hash ahead of the primary: bounds its memory (≈ 64 KiB of digests each). */
export const CREDIT_WINDOW = 64;
/** Regions whose digests are being walked down at the same time: hides round trips on slow links. */
const MAX_DESCENTS = 32;
/** Payload per data frame at most (on slow links frames follow the window: see flowFor). */
const DATA_FRAME_BYTES = 1 << 20;
/** While waiting for acknowledgements, check this often whether a pause was asked for. */
const STOP_POLL_MS = 100;
/** Differing leaves at most this far apart are read in one call, up to this span (see readLeaves). */
const MAX_READ_GAP = 256 << 10;
const SPAN_READ_BYTES = 4 << 20;
/**
 * Payload bytes sent but not yet written by the replica. Past this the primary waits for the replica's
 * acknowledgements, so a replica slower than the link never queues an unbounded amount of data.
 */
export const DATA_WINDOW_BYTES = 32 << 20;
/** The smallest window, whatever the link's rate. */
export const MIN_DATA_WINDOW_BYTES = 256 << 10;
/** How often a replica acknowledges data unless the primary asks for less (`ackBytes` in start); old replicas always. */
export const DEFAULT_ACK_BYTES = 4 << 20;
/** The smallest acknowledgement interval a replica agrees to. */
export const MIN_ACK_BYTES = 16 << 10;

/** How much data is in flight, in frames of what size, acknowledged how often. */
export interface DataFlow {
  windowBytes: number;
  frameBytes: number;
  ackBytes: number;
}

/**
 * The data flow for a link of `rate` bytes/s (Infinity when unknown): about one second of transfer in
 * flight (MIN_DATA_WINDOW_BYTES to DATA_WINDOW_BYTES), frames of a quarter of that (at most 1 MiB),
 * acknowledged every quarter window (at most DEFAULT_ACK_BYTES). So a pause waits for about a second
 * of data to cross the link, not minutes, and acks (every ≤ window/4) always free the window.
 */
export function flowFor(rate: number): DataFlow {
  const windowBytes = Number.isFinite(rate) && rate > 0 ? Math.round(Math.min(DATA_WINDOW_BYTES, Math.max(MIN_DATA_WINDOW_BYTES, rate))) : DATA_WINDOW_BYTES;
  const quarter = Math.floor(windowBytes / 4);
  return { windowBytes, frameBytes: Math.min(DATA_FRAME_BYTES, quarter), ackBytes: Math.max(MIN_ACK_BYTES, Math.min(DEFAULT_ACK_BYTES, quarter)) };
}

/**
 * The flow once the replica has answered `start`: a replica that agreed to `ackBytes` gets the window;
 * one that did not (older, acks every DEFAULT_ACK_BYTES) keeps the full window, which its acks free.
 */
export function agreedFlow(asked: DataFlow, replicaAckBytes: unknown): DataFlow {
  if (replicaAckBytes === asked.ackBytes) return asked;
  return { windowBytes: DATA_WINDOW_BYTES, frameBytes: asked.frameBytes, ackBytes: DEFAULT_ACK_BYTES };
}

interface Waiter {
  resolve: (d: Uint8Array) => void;
  reject: (e: Error) => void;
}

export interface CompareCounters {
  bytesCompared: number;
  bytesRead: number;
  leavesSent: number;
  bytesSent: number;
  payloadWireBytes: number;
  regionsDiffering: number;
}

export interface CompareOptions {
  dryRun: boolean;
  compress: boolean;
  /** Payload codecs both ends support, preferred first (negotiated in hello/welcome). */
  codecs: Codec[];
  /** Bytes per second of the link (Infinity when unlimited): compression is used only where it pays. */
  linkRate: number;
  /**
   * Checked between regions and between data frames: when it returns true, no new region starts, a
   * region being sent stops where it is (unfinished, it is not ended, so a resumed run redoes it) and
   * the compare stops cleanly.
   */
  shouldStop: () => boolean;
  /** Window, frame size and ack interval agreed with the replica (default: flowFor(Infinity)). */
  flow?: DataFlow;
  onRegion?: (c: CompareCounters) => void;
  /** A scoped resync: the byte ranges compared (resync/scope.ts); undefined = the whole disk. */
  scope?: readonly [number, number][];
  /** The replica granted CREDIT_WINDOW with 'started' (asked for in 'start'): no first 'credit' to send. */
  credited?: boolean;
  /** A compressor started ahead of the compare (its thread warm by the first frame); kept open. */
  compressor?: Compressor;
}

/**
 * The primary side of the compare: it hashes its disk region by region, takes the replica's root for
 * each, walks down only where digests differ (many regions at once, level by level), and sends the
 * differing leaves. Returns the region count when every region is complete, else where it stopped (paused).
 */
export class PrimaryCompare {
  readonly counters: CompareCounters = { bytesCompared: 0, bytesRead: 0, leavesSent: 0, bytesSent: 0, payloadWireBytes: 0, regionsDiffering: 0 };
  private roots = new Map<number, Uint8Array>();
  private rootWaiters = new Map<number, Waiter>();
  private requests = new Map<number, Waiter>();
  private nextReq = 1;
  private endBatch: number[] = [];
  private readonly completed = new Set<number>();
  private dataSent = 0;
  private dataAcked = 0;
  private ackWaiters: (() => void)[] = [];
  readonly compression: AdaptiveCompression;
  private endTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly ch: Channel,
    private readonly core: Core,
    private readonly disk: Disk,
    private readonly shape: TreeShape,
    private readonly opts: CompareOptions,
  ) {
    this.compression = new AdaptiveCompression(opts.compress, opts.codecs, opts.linkRate, opts.compressor);
    ch.onControl('data-ack', (b) => {
      this.dataAcked = Math.max(this.dataAcked, Number(b.bytes));
      const waiters = this.ackWaiters;
      this.ackWaiters = [];
      for (const w of waiters) w();
    });
    ch.onClosed((e) => {
      for (const w of this.ackWaiters) w();
      for (const w of [...this.rootWaiters.values(), ...this.requests.values()]) w.reject(e ?? new VhdsyncError('LINK', 'the link closed'));
      this.rootWaiters.clear();
      this.requests.clear();
    });
    ch.on('roots', (m) => {
      for (let i = 0; i * 16 < m.digests.byteLength; i++) {
        const r = m.first + i;
        const d = m.digests.slice(i * 16, i * 16 + 16);
        const w = this.rootWaiters.get(r);
        if (w) {
          this.rootWaiters.delete(r);
          w.resolve(d);
        } else this.roots.set(r, d);
      }
    });
    ch.on('digests', (m) => {
      const w = this.requests.get(m.req);
      if (!w) throw new VhdsyncError('PROTOCOL', `protocol error: digests for unknown request ${m.req}`);
      this.requests.delete(m.req);
      w.resolve(m.digests);
    });
  }

  async run(from: number): Promise<number> {
    const total = regionCount(this.shape);
    const scanner = new RegionScanner(this.core, this.disk, this.shape, undefined, this.opts.scope);
    const inFlight = new Set<Promise<void>>();
    let failure: unknown;
    let next = from;
    let scanning: Promise<RegionTree> | undefined;
    try {
      if (!this.opts.credited) await this.ch.send({ t: 'credit', regions: CREDIT_WINDOW });
      // Scan one region ahead so the disk stays busy while the current root is awaited.
      scanning = next < total ? scanner.scan(next) : undefined;
      while (next < total && !this.opts.shouldStop() && failure === undefined) {
        const tree = await scanning!;
        const r = next++;
        scanning = next < total && !this.opts.shouldStop() ? scanner.scan(next) : undefined;
        const theirs = await this.rootOf(r);
        this.counters.bytesRead += tree.bytesRead;
        if (sameDigest(rootOf(tree), 0, theirs, 0)) {
          this.regionDone(r);
          continue;
        }
        this.counters.regionsDiffering++;
        while (inFlight.size >= MAX_DESCENTS) await Promise.race(inFlight);
        const p: Promise<void> = this.descend(r, tree)
          .catch((e) => {
            failure ??= e;
          })
          .finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      await scanning?.catch(() => {});
      await Promise.all(inFlight);
      if (failure !== undefined) throw failure;
      await this.flushEnds();
    } finally {
      // Also when the link is lost: the read-ahead and the descents must stop using the scanner first.
      await scanning?.catch(() => {});
      await Promise.allSettled(inFlight);
      scanner.free();
      this.compression.close();
    }
    // All regions from `from` on are complete, or the run stopped early (paused) at the first one that is not.
    let first = from;
    while (first < total && this.completed.has(first)) first++;
    return first;
  }

  private rootOf(r: number): Promise<Uint8Array> {
    const have = this.roots.get(r);
    if (have) {
      this.roots.delete(r);
      return Promise.resolve(have);
    }
    if (this.ch.failed) return Promise.reject(this.ch.failed);
    return new Promise((resolve, reject) => this.rootWaiters.set(r, { resolve, reject }));
  }

  private want(region: number, level: number, nodes: number[]): Promise<Uint8Array> {
    const req = this.nextReq++;
    if (this.ch.failed) return Promise.reject(this.ch.failed);
    return new Promise((resolve, reject) => {
      this.requests.set(req, { resolve, reject });
      this.ch.send({ t: 'want', req, region, level, nodes: Uint32Array.from(nodes) }).catch(reject);
    });
  }

  /** Walk region r's tree from the root down, asking only for children of differing nodes. */
  private async descend(r: number, mine: RegionTree): Promise<void> {
    const counts = levelCounts(this.shape, r);
    let differing = [0];
    for (let level = counts.length - 2; level >= 0; level--) {
      const candidates = childrenOf(differing, this.shape.fanout, counts[level]);
      const theirs = await this.want(r, level, candidates);
      if (theirs.byteLength !== candidates.length * 16) throw new VhdsyncError('PROTOCOL', 'protocol error: wrong number of digests in reply');
      differing = candidates.filter((node, i) => !sameDigest(mine.levels[level], node, theirs, i));
      // Pausing abandons regions whose data has not started: they are not ended, so a resumed run redoes them.
      if (this.opts.shouldStop()) return;
    }
    if (await this.sendLeaves(r, differing)) this.regionDone(r);
  }

  /**
   * Read the differing leaves again (they are few) and send them in frames of the flow's size. False
   * when a pause stopped it before the last frame: the region is not complete.
   */
  private async sendLeaves(r: number, leaves: number[]): Promise<boolean> {
    const { leafSize } = this.shape;
    const { windowBytes, frameBytes } = this.opts.flow ?? flowFor(Infinity);
    const start = regionStart(this.shape, r);
    const length = regionLength(this.shape, r);
    let i = 0;
    while (i < leaves.length) {
      if (this.opts.shouldStop()) return false;
      const batch: number[] = [];
      let bytes = 0;
      while (i < leaves.length && (batch.length === 0 || bytes + leafSize <= frameBytes)) {
        const leafLen = Math.min(leafSize, length - leaves[i] * leafSize);
        batch.push(leaves[i]);
        bytes += leafLen;
        i++;
      }
      const raw = new Uint8Array(bytes);
      await this.readLeaves(start, length, batch, raw);
      this.counters.leavesSent += batch.length;
      this.counters.bytesSent += bytes;
      if (this.opts.dryRun) continue;
      const { payload, codec } = await this.compression.pack(raw, this.dataSent - this.dataAcked >= windowBytes / 2);
      this.counters.payloadWireBytes += payload.byteLength;
      while (this.dataSent - this.dataAcked > windowBytes && !this.ch.failed) {
        // A pause must not wait for the window to free (on a slow link that is the window's time).
        if (this.opts.shouldStop()) return false;
        await new Promise<void>((resolve) => {
          const poll = setTimeout(resolve, STOP_POLL_MS);
          this.ackWaiters.push(() => {
            clearTimeout(poll);
            resolve();
          });
        });
      }
      if (this.opts.shouldStop()) return false;
      this.dataSent += bytes;
      await this.ch.send({ t: 'data', region: r, codec, rawLength: bytes, leaves: Uint32Array.from(batch), payload });
    }
    return true;
  }

  /**
   * Read the given leaves (ascending) of a region into `out`, back to back. Leaves less than
   * MAX_READ_GAP apart are read with one call over their span: copying a gap from the page cache costs
   * less than a call per scattered 4 KiB leaf.
   */
  private async readLeaves(start: number, length: number, leaves: number[], out: Uint8Array): Promise<void> {
    const { leafSize } = this.shape;
    const end = (leaf: number) => Math.min(leaf * leafSize + leafSize, length);
    let pos = 0;
    let k = 0;
    while (k < leaves.length) {
      let j = k + 1;
      let runs = 1;
      while (j < leaves.length && leaves[j] * leafSize - end(leaves[j - 1]) <= MAX_READ_GAP && end(leaves[j]) - leaves[k] * leafSize <= SPAN_READ_BYTES) {
        if (leaves[j] !== leaves[j - 1] + 1) runs++;
        j++;
      }
      const from = leaves[k] * leafSize;
      const span = end(leaves[j - 1]) - from;
      if (runs === 1) {
        await this.disk.read(start + from, out.subarray(pos, pos + span));
        pos += span;
      } else {
        const buf = new Uint8Array(span);
        await this.disk.read(start + from, buf);
        for (let i = k; i < j; i++) {
          const at = leaves[i] * leafSize - from;
          const n = end(leaves[i]) - leaves[i] * leafSize;
          out.set(buf.subarray(at, at + n), pos);
          pos += n;
        }
      }
      k = j;
    }
  }

  private regionDone(r: number): void {
    this.completed.add(r);
    this.counters.bytesCompared += regionLength(this.shape, r);
    this.endBatch.push(r);
    this.opts.onRegion?.(this.counters);
    if (this.endBatch.length >= 32) void this.flushEnds().catch(() => {});
    else this.endTimer ??= setTimeout(() => void this.flushEnds().catch(() => {}), 20);
  }

  /** Tell the replica which regions are complete (so it may checkpoint) and let it hash that many more. */
  private async flushEnds(): Promise<void> {
    if (this.endTimer) clearTimeout(this.endTimer);
    this.endTimer = undefined;
    if (this.endBatch.length === 0) return;
    const regions = Uint32Array.from(this.endBatch);
    this.endBatch = [];
    await this.ch.send({ t: 'end', regions });
    await this.ch.send({ t: 'credit', regions: regions.length });
  }
}
