import { readdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { getCore, type Core } from '../core/index.js';
import type { Disk } from '../disk/disk.js';
import { openDisk, createOverlay, mergeOverlay, mergeJournalPath, discardOverlay } from '../disk/index.js';
import { VhdsyncError } from '../errors.js';
import { pathExists } from '../fsutil.js';
import type { Link } from '../transport/link.js';
import { MAX_FRAME_BYTES } from '../transport/link.js';
import { checkName, checkShape, LIMITS, PROTOCOL_VERSION, type Codec, type PayloadCodec } from '../transport/protocol.js';
import { decompressPayload, localCodecs } from '../transport/codec.js';
import { Channel } from './channel.js';
import { DEFAULT_ACK_BYTES, MIN_ACK_BYTES } from './primary.js';
import { asPrimaryStamp, readCheckpoint, writeCheckpoint, deleteCheckpoint, type Checkpoint } from './checkpoint.js';
import { checkpointPathFor, overlayPathFor, preResyncUndoPathFor, recoveryPointsDirFor } from './paths.js';
import { capturePreResyncPoint, capturePreResyncWrite, dropPreResyncPoint } from './pre-resync-point.js';
import { scopeFromWire } from './scope.js';
import { RegionScanner, regionCount, regionStart, regionLength, digestAt, DIGEST_BYTES, type RegionTree, type TreeShape } from './tree.js';

const protocolError = (what: string) => new VhdsyncError('PROTOCOL', `protocol error: ${what}`);

/**
 * The replica acknowledges written data this often, which lets the primary keep sending (see
 * DATA_WINDOW_BYTES): DEFAULT_ACK_BYTES, or less when the primary asks (`ackBytes` in start, from
 * MIN_ACK_BYTES; the reply `started` says what was agreed). A small window on a slow link needs it.
 */
function ackInterval(asked: unknown): number {
  return typeof asked === 'number' && Number.isInteger(asked) && asked >= MIN_ACK_BYTES && asked <= DEFAULT_ACK_BYTES ? asked : DEFAULT_ACK_BYTES;
}

/**
 * A checkpoint (a flush of the overlay, then an atomic write of the checkpoint file) follows a
 * completed region, at most this often: a crash repeats at most this much work, and a disk with many
 * small differing regions is not slowed down by a flush per region.
 */
const CHECKPOINT_INTERVAL_MS = 250;

/**
 * The replica side of one resync. It hashes its own disk (through the overlay, so a resumed run sees
 * what it already received), answers the primary's digest requests, writes differing leaves into the
 * overlay, checkpoints, and at the end merges the overlay into the base and applies tracked writes.
 *
 * A fresh run creates the overlay only when it first needs it (issue 17): for the first differing
 * leaf, or for a checkpoint that records progress. Until then it hashes the base itself, opened
 * read-only, and keeps doing so after the overlay appears: the overlay then holds only leaves of
 * regions already hashed, so the regions still to scan read the same through either. A resync of
 * identical disks thus creates, flushes, merges and deletes no overlay. On disk this only ever shows
 * states the eager overlay showed too: a checkpoint without an overlay (restarted from scratch, as
 * before), and `merged` without an overlay, written before the first tracked write reaches the base.
 */
export class ReplicaEndpoint {
  private readonly ch: Channel;
  private readonly checkpointPath: string;
  private readonly overlayPath: string;
  /** What the scan reads: the overlay, or (a fresh run) the base until the end of the compare. */
  private disk: Disk | undefined;
  /** What received leaves are written to; undefined while a fresh run has not needed one yet. */
  private overlay: Disk | undefined;
  /** A fresh run that has not created its overlay yet (see the class comment). */
  private overlayPending = false;
  /** merge() found no overlay to merge: tracked writes go straight into the base. */
  private nothingMerged = false;
  /** nextRegion as last written in the checkpoint file. */
  private savedRegion = 0;
  private shape: TreeShape | undefined;
  /** A scoped resync's ranges (undefined: the whole disk). */
  private scope: [number, number][] | undefined;
  private checkpoint: Checkpoint | undefined;
  private dryRun = false;
  /** `--keep-pre-resync-point`: keep the replica as it was before this resync as one undo log. */
  private keepPreResync = false;
  /** Tracked writes add their before-images to the pre-resync point (known once, at the merge). */
  private capturingWrites: boolean | undefined;
  private trees = new Map<number, RegionTree>();
  private done = new Set<number>();
  private nextRegion = 0;
  private credit = 0;
  private creditWaiter: (() => void) | undefined;
  private scanning: Promise<void> | undefined;
  private lastCheckpoint = 0;
  private finished = false;
  private base: Disk | undefined;
  private dataWritten = 0;
  private dataAckedAt = 0;
  private ackBytes = DEFAULT_ACK_BYTES;
  /** Payload codecs this replica told the primary it accepts (in welcome). */
  private codecs: Codec[] = [];
  /** The replica's virtual size, as told in 'welcome': the only size a 'start' may name. */
  private replicaSize: number | undefined;
  private broken = false;

  constructor(
    link: Link,
    private readonly replicaPath: string,
    /** Its own core (own memory) when it shares a thread with the primary's side. */
    private readonly core: Core = getCore(),
    /** How disks are opened (tests wrap them to inject faults). */
    private readonly open: typeof openDisk = openDisk,
  ) {
    this.ch = new Channel(link);
    this.checkpointPath = checkpointPathFor(replicaPath);
    this.overlayPath = overlayPathFor(replicaPath);
  }

  /** Serve one resync until it is committed, paused, or the primary goes away. */
  async run(): Promise<void> {
    const ended = new Promise<void>((resolve) => {
      this.ch.onClosed(async () => {
        await this.settle().catch(() => {});
        resolve();
      });
      this.ch.onControl('hello', (b) => this.hello(b));
      this.ch.onControl('start', (b) => this.start(b));
      // A peer's mistake (or malice) in any of these ends the session with an error frame, not a hang.
      this.ch.onImmediate('credit', (m) => this.guard(async () => this.grant(m.regions)));
      this.ch.onImmediate('want', (m) => this.guard(() => this.want(m.req, m.region, m.level, m.nodes)));
      this.ch.on('data', (m) => this.guard(() => this.data(m.region, m.codec, m.rawLength, m.leaves, m.payload)));
      this.ch.on('end', (m) => this.guard(() => this.end(m.regions)));
      this.ch.onControl('compare-done', () => this.compareDone());
      this.ch.onControl('merge', () => this.merge());
      this.ch.on('write', (m) => this.guard(() => this.trackedWrite(m.offset, m.data)));
      this.ch.onControl('commit', () => this.commit());
      this.ch.onControl('pause', () => this.pause());
    });
    await ended;
  }

  private async guard(work: () => Promise<void>): Promise<void> {
    if (this.broken) return; // after an error, nothing more a peer sends is acted on
    try {
      await work();
    } catch (e) {
      this.broken = true;
      this.ch.abort(e);
    }
  }

  private hello(b: Record<string, unknown>): Promise<void> {
    return this.guard(async () => {
      if (b.version !== PROTOCOL_VERSION) {
        throw new VhdsyncError('PROTOCOL', `protocol version ${String(b.version)} is not supported by this replica (it speaks ${PROTOCOL_VERSION}); upgrade vhdsync on both sides`);
      }
      const checkpoint = await readCheckpoint(this.checkpointPath);
      const probe = await this.open(this.replicaPath, { readOnly: true });
      const info = { virtualSize: probe.virtualSize, sectorSize: probe.sectorSize, format: probe.format, type: probe.type, name: basename(this.replicaPath) };
      await probe.close();
      this.codecs = await localCodecs();
      this.replicaSize = info.virtualSize;
      // A 'start' sent with the hello (protocol.ts) holds only where it is the one the primary would send
      // after reading this welcome: a fresh run (no checkpoint to resume, or restart, or a dry run) on a
      // replica of the primary's size and sector size. Else the primary sends its own.
      const start = b.start;
      const takeStart =
        typeof start === 'object' && start !== null && !Array.isArray(start) &&
        (checkpoint === undefined || (start as Record<string, unknown>).restart === true || (start as Record<string, unknown>).dryRun === true) &&
        (start as { shape?: { virtualSize?: unknown } }).shape?.virtualSize === info.virtualSize &&
        (start as Record<string, unknown>).sectorSize === info.sectorSize;
      await this.ch.control('welcome', { version: PROTOCOL_VERSION, replica: info, checkpoint: checkpoint ?? null, codecs: this.codecs, started: takeStart });
      if (takeStart) await this.start(start as Record<string, unknown>);
    });
  }

  private start(b: Record<string, unknown>): Promise<void> {
    return this.guard(async () => {
      // Every field checked before anything is created or allocated from it.
      if (this.replicaSize === undefined || this.shape) throw protocolError("'start' out of turn");
      const shape: TreeShape = checkShape(b.shape);
      if (shape.virtualSize !== this.replicaSize) throw protocolError(`start: virtual size ${shape.virtualSize} is not the replica's (${this.replicaSize})`);
      const primaryName = checkName('start: primary', b.primary) ?? '';
      this.dryRun = b.dryRun === true;
      this.keepPreResync = b.keepPreResyncPoint === true;
      this.ackBytes = ackInterval(b.ackBytes);
      this.shape = shape;
      this.scope = scopeFromWire(b.scope, shape.virtualSize);
      let resumeFrom = 0;
      let phase: Checkpoint['phase'] = 'comparing';
      if (this.dryRun) {
        this.disk = await this.open(this.replicaPath, { readOnly: true });
      } else {
        const existing = b.restart === true ? undefined : await readCheckpoint(this.checkpointPath);
        // Past the point of no return the overlay may already be merged (and gone): merge() knows.
        if (existing && (existing.phase === 'merging' || existing.phase === 'merged' || (await pathExists(this.overlayPath)))) {
          this.checkpoint = existing;
          resumeFrom = existing.nextRegion;
          phase = existing.phase;
          // This session's primary, and a compare to run again (the primary decided): kept for the next resume.
          const stamp = asPrimaryStamp(b.primaryFile);
          const again = typeof b.compareAgain === 'string' ? b.compareAgain.slice(0, 500) : undefined;
          if (stamp || again) {
            if (stamp) existing.primaryFile = stamp;
            if (again) existing.compareAgain = again;
            await writeCheckpoint(this.checkpointPath, existing);
          }
          if (phase === 'comparing' || phase === 'compared') this.disk = this.overlay = await this.open(this.overlayPath);
        } else {
          await this.discardLeftovers();
          this.overlayPending = true;
          this.checkpoint = {
            version: 1,
            primary: primaryName,
            virtualSize: shape.virtualSize,
            leafSize: shape.leafSize,
            regionSize: shape.regionSize,
            fanout: shape.fanout,
            nextRegion: 0,
            phase: 'comparing',
            bytesReceived: 0,
            leavesReceived: 0,
            startedAt: new Date().toISOString(),
            updatedAt: '',
            ...(asPrimaryStamp(b.primaryFile) ? { primaryFile: asPrimaryStamp(b.primaryFile) } : {}),
          };
          await writeCheckpoint(this.checkpointPath, this.checkpoint);
          this.lastCheckpoint = Date.now();
          this.disk = await this.open(this.replicaPath, { readOnly: true });
        }
      }
      this.savedRegion = resumeFrom;
      this.nextRegion = resumeFrom;
      // Credit asked for in 'start' is granted at once: the roots flow without waiting for a 'credit'.
      const credit = typeof b.credit === 'number' && Number.isInteger(b.credit) && b.credit > 0 && b.credit <= LIMITS.maxCreditRegions ? b.credit : 0;
      this.credit += credit;
      await this.ch.control('started', {
        resumeFrom, phase, ackBytes: this.ackBytes, credit,
        received: this.checkpoint ? { bytes: this.checkpoint.bytesReceived, leaves: this.checkpoint.leavesReceived } : null,
      });
      if (phase === 'comparing') this.scanning = this.scan(resumeFrom);
    });
  }

  /** Hash regions in order and stream their roots, staying within the credit the primary granted. */
  private async scan(from: number): Promise<void> {
    const shape = this.shape!;
    const scanner = new RegionScanner(this.core, this.disk!, shape, undefined, this.scope);
    try {
      const total = regionCount(shape);
      for (let r = from; r < total; r++) {
        // Trees are held until their region's 'end' is handled, which queues behind the data writes while
        // credit arrives at once: the scan also waits for the trees to drain, so they stay bounded.
        while ((this.credit <= 0 || this.trees.size >= LIMITS.maxCreditRegions) && !this.finished) await new Promise<void>((res) => (this.creditWaiter = res));
        if (this.finished) return;
        this.credit--;
        const tree = await scanner.scan(r);
        this.trees.set(r, tree);
        await this.ch.send({ t: 'roots', first: r, digests: tree.levels[tree.levels.length - 1] });
      }
    } catch (e) {
      if (!this.finished) this.ch.abort(e);
    } finally {
      scanner.free();
    }
  }

  private grant(regions: number): void {
    // The primary grants a region per region it ends: the credit stays bounded (the trees held are bounded
    // by the scan). Its 'end's may still be queued behind data here, so they are not counted against it.
    if (this.credit + regions > LIMITS.maxCreditRegions) throw protocolError(`credit beyond ${LIMITS.maxCreditRegions} regions`);
    this.credit += regions;
    this.creditWaiter?.();
    this.creditWaiter = undefined;
  }

  private async want(req: number, region: number, level: number, nodes: Uint32Array): Promise<void> {
    const tree = this.trees.get(region);
    if (!tree || level >= tree.levels.length) throw new VhdsyncError('PROTOCOL', `protocol error: digests asked for unknown region ${region} level ${level}`);
    const lv = tree.levels[level];
    if (nodes.length > lv.byteLength / DIGEST_BYTES) throw protocolError(`want of ${nodes.length} nodes from a level of ${lv.byteLength / DIGEST_BYTES}`);
    const out = new Uint8Array(nodes.length * DIGEST_BYTES);
    for (let i = 0; i < nodes.length; i++) {
      if (nodes[i] * DIGEST_BYTES >= lv.byteLength) throw new VhdsyncError('PROTOCOL', `protocol error: node ${nodes[i]} out of range`);
      out.set(digestAt(lv, nodes[i]), i * DIGEST_BYTES);
    }
    await this.ch.send({ t: 'digests', req, digests: out });
  }

  private async data(region: number, codec: PayloadCodec, rawLength: number, leaves: Uint32Array, payload: Uint8Array): Promise<void> {
    const shape = this.shape;
    if (!shape || this.dryRun || !this.disk) throw new VhdsyncError('PROTOCOL', 'protocol error: data outside a resync');
    if (codec !== 'none' && !this.codecs.includes(codec)) throw new VhdsyncError('PROTOCOL', `protocol error: data compressed with ${codec}, which this replica did not accept`);
    // The legal maximum of a payload: its leaves, and a frame. Nothing a peer claims allocates past it.
    if (rawLength > leaves.length * shape.leafSize || rawLength > MAX_FRAME_BYTES) throw new VhdsyncError('PROTOCOL', 'protocol error: data length larger than its leaves');
    if (region >= regionCount(shape)) throw protocolError(`data for region ${region} of ${regionCount(shape)}`);
    const start = regionStart(shape, region);
    const length = regionLength(shape, region);
    // The leaves say how many bytes there are; the header must agree before a byte is inflated.
    let expected = 0;
    for (let k = 0; k < leaves.length; k++) {
      if (leaves[k] * shape.leafSize >= length || (k > 0 && leaves[k] <= leaves[k - 1])) throw protocolError('data leaves out of range or not ascending');
      expected += Math.min(shape.leafSize, length - leaves[k] * shape.leafSize);
    }
    if (rawLength !== expected) throw protocolError(`data of ${rawLength} bytes for ${leaves.length} leaves of ${expected}`);
    const raw = await decompressPayload(codec, payload, expected);
    if (raw.byteLength !== rawLength) throw new VhdsyncError('PROTOCOL', 'protocol error: data length does not match its header');
    // Coalesce consecutive leaves into one write each.
    const overlay = this.overlay ?? (await this.createOverlayNow());
    let pos = 0;
    let i = 0;
    while (i < leaves.length) {
      let j = i + 1;
      while (j < leaves.length && leaves[j] === leaves[j - 1] + 1) j++;
      const from = leaves[i] * shape.leafSize;
      const to = Math.min(leaves[j - 1] * shape.leafSize + shape.leafSize, length);
      if (from >= length || pos + (to - from) > raw.byteLength) throw new VhdsyncError('PROTOCOL', 'protocol error: data leaves out of range');
      await overlay.write(start + from, raw.subarray(pos, pos + (to - from)));
      pos += to - from;
      i = j;
    }
    if (pos !== raw.byteLength) throw new VhdsyncError('PROTOCOL', 'protocol error: data payload longer than its leaves');
    this.dataWritten += rawLength;
    if (this.dataWritten - this.dataAckedAt >= this.ackBytes) {
      this.dataAckedAt = this.dataWritten;
      await this.ch.control('data-ack', { bytes: this.dataWritten });
    }
    this.checkpoint!.bytesReceived += rawLength;
    this.checkpoint!.leavesReceived += leaves.length;
  }

  private async end(regions: Uint32Array): Promise<void> {
    const total = this.shape ? regionCount(this.shape) : 0;
    for (const r of regions) if (r >= total) throw protocolError(`end of region ${r} of ${total}`);
    for (const r of regions) {
      this.done.add(r);
      this.trees.delete(r);
    }
    this.creditWaiter?.();
    this.creditWaiter = undefined;
    let advanced = false;
    while (this.done.has(this.nextRegion)) {
      this.done.delete(this.nextRegion);
      this.nextRegion++;
      advanced = true;
    }
    if (advanced && !this.dryRun && Date.now() - this.lastCheckpoint >= CHECKPOINT_INTERVAL_MS) {
      await this.saveCheckpoint();
    }
  }

  private async saveCheckpoint(phase?: Checkpoint['phase']): Promise<void> {
    if (this.dryRun || !this.checkpoint) return;
    if (this.overlayPending && phase !== 'merged') {
      // Nothing received yet. `compared` alone is not worth a file (a crash before the merge redoes
      // the compare); progress is, and a checkpoint past region 0 stands only beside an overlay.
      if (phase === 'compared' || this.nextRegion === this.savedRegion) return;
      await this.createOverlayNow();
    }
    if (this.overlay) await this.overlay.flush();
    this.checkpoint.nextRegion = this.nextRegion;
    if (phase) this.checkpoint.phase = phase;
    await writeCheckpoint(this.checkpointPath, this.checkpoint);
    this.savedRegion = this.nextRegion;
    this.lastCheckpoint = Date.now();
  }

  /** A fresh run's overlay, made when first needed; the scan goes on reading the base (class comment). */
  private async createOverlayNow(): Promise<Disk> {
    if (!this.overlayPending) throw new VhdsyncError('INTERNAL', `${this.replicaPath}: no overlay to create`);
    this.overlayPending = false;
    await createOverlay(this.replicaPath, this.overlayPath);
    this.overlay = await this.open(this.overlayPath);
    this.lastCheckpoint = 0; // the next finished region is checkpointed, as after an eager overlay's start
    return this.overlay;
  }

  private async closeDisks(): Promise<void> {
    const disks = new Set([this.disk, this.overlay]);
    this.disk = this.overlay = undefined;
    for (const d of disks) await d?.close();
  }

  private compareDone(): Promise<void> {
    return this.guard(async () => {
      this.finished = true;
      this.creditWaiter?.();
      await this.scanning;
      if (this.dryRun) {
        await this.ch.control('compared', {});
        return;
      }
      if (this.nextRegion !== regionCount(this.shape!)) {
        throw new VhdsyncError('PROTOCOL', `protocol error: compare reported done at region ${this.nextRegion} of ${regionCount(this.shape!)}`);
      }
      // A resumed run past the compare keeps its phase: never back from merging (issue 13 item 5).
      await this.saveCheckpoint(this.checkpoint!.phase === 'comparing' ? 'compared' : undefined);
      await this.ch.control('compared', { bytesReceived: this.checkpoint!.bytesReceived, leavesReceived: this.checkpoint!.leavesReceived });
    });
  }

  /**
   * The point of no return: the overlay goes into the base. Resumable (the disk layer journals it).
   * The phase says `merging` only once the journal exists, just before the base is first written, and
   * `merged` once every block is in it; a missing overlay is accepted as merged only on that word.
   */
  private merge(): Promise<void> {
    return this.guard(async () => {
      await this.closeDisks();
      const cp = this.checkpoint!;
      // Nothing was received (identical disks): no overlay, nothing to merge. The checkpoint stays as
      // it was; `merged` is written before a tracked write touches the base (trackedWrite).
      if (this.overlayPending && !this.keepPreResync) {
        this.nothingMerged = true;
        await dropPreResyncPoint(this.replicaPath);
        await this.ch.control('merged', {});
        return;
      }
      if (this.overlayPending) {
        // The pre-resync point is made from an overlay (empty here): the common path, as before.
        await this.createOverlayNow();
        await this.closeDisks();
      }
      const journal = mergeJournalPath(this.overlayPath);
      const overlayThere = await pathExists(this.overlayPath);
      const journalThere = await pathExists(journal);
      const began = cp.phase === 'merging' || cp.phase === 'merged' || journalThere;
      if (!overlayThere && !journalThere) {
        if (cp.phase !== 'merged') {
          throw new VhdsyncError('STATE', `${this.replicaPath}: the resync's overlay ${this.overlayPath} is gone but no merge journal says it was merged (phase ${cp.phase}); the replica was not changed by it — start over with --restart`);
        }
        // A run killed after the merge deleted the overlay (and its journal) but before the commit.
        // Its tracked writes may already be in the base: the pre-resync point could not be trusted.
        await dropPreResyncPoint(this.replicaPath);
      } else {
        // The base is untouched until the journal exists: its before-images are exact. Once begun, never again.
        if (!began) {
          if (this.keepPreResync) await capturePreResyncPoint(this.replicaPath, this.overlayPath);
          else await dropPreResyncPoint(this.replicaPath);
        }
        let last = 0;
        await mergeOverlay(this.overlayPath, {
          onJournal: async () => {
            if (cp.phase !== 'merging' && cp.phase !== 'merged') await this.saveCheckpoint('merging');
          },
          onCopied: () => this.saveCheckpoint('merged'),
          onProgress: (done: number, total: number) => {
            const now = Date.now();
            if (now - last > 200) {
              last = now;
              void this.ch.control('merge-progress', { done, total }).catch(() => {});
            }
          },
        });
      }
      await this.ch.control('merged', {});
    });
  }

  private async trackedWrite(offset: number, data: Uint8Array): Promise<void> {
    if (this.dryRun) throw new VhdsyncError('PROTOCOL', 'protocol error: tracked write during a dry run');
    if (this.overlayPending) {
      if (!this.nothingMerged) throw protocolError('tracked write before the merge');
      // The base changes from here: past the point of no return, as an overlay's merge leaves it.
      if (this.checkpoint?.phase !== 'merged') await this.saveCheckpoint('merged');
    }
    const base = (this.base ??= await this.open(this.replicaPath));
    this.capturingWrites ??= this.keepPreResync && (await pathExists(preResyncUndoPathFor(this.replicaPath)));
    if (this.capturingWrites) await capturePreResyncWrite(this.replicaPath, base, offset, data.byteLength);
    await base.write(offset, data);
  }

  private commit(): Promise<void> {
    return this.guard(async () => {
      if (this.base) {
        await this.base.close();
        this.base = undefined;
      }
      // Recovery points were built on the old baseline (Hyper-V deletes them after a resync).
      // With --keep-pre-resync-point the pre-resync undo log stays; the replication layer adopts it.
      const rp = recoveryPointsDirFor(this.replicaPath);
      const keep = this.keepPreResync ? basename(preResyncUndoPathFor(this.replicaPath)) : undefined;
      const names = await readdir(rp).catch(() => [] as string[]);
      const hadPoints = names.some((n) => n !== keep);
      if (keep && names.includes(keep)) {
        for (const n of names) if (n !== keep) await rm(join(rp, n), { recursive: true, force: true });
      } else {
        await rm(rp, { recursive: true, force: true });
      }
      await deleteCheckpoint(this.checkpointPath);
      this.finished = true;
      await this.ch.control('committed', { recoveryPointsDeleted: hadPoints });
      this.ch.close();
    });
  }

  private pause(): Promise<void> {
    return this.guard(async () => {
      this.finished = true;
      this.creditWaiter?.();
      await this.scanning;
      await this.saveCheckpoint();
      await this.ch.control('paused', { nextRegion: this.nextRegion });
      this.ch.close();
    });
  }

  /** The primary went away: keep what is durable, close files. */
  private async settle(): Promise<void> {
    this.finished = true;
    this.creditWaiter?.();
    await this.scanning?.catch(() => {});
    if (this.checkpoint && this.disk && this.checkpoint.phase === 'comparing') await this.saveCheckpoint().catch(() => {});
    await this.closeDisks().catch(() => {});
    await this.base?.close().catch(() => {});
    this.base = undefined;
  }

  private async discardLeftovers(): Promise<void> {
    // A merge that started is past the point of no return: --restart cannot undo it, a plain run finishes it.
    const cp = await readCheckpoint(this.checkpointPath).catch(() => undefined);
    if (cp?.phase === 'merging' || cp?.phase === 'merged' || (await pathExists(mergeJournalPath(this.overlayPath)))) {
      throw new VhdsyncError('STATE', `${this.replicaPath}: an interrupted resync${cp ? ` from '${cp.primary}'` : ''} has started merging into this replica (the point of no return), so it cannot start over; run the resync again without --restart to finish it (any primary of its size will do: it finishes the merge, then compares again)`);
    }
    if (await pathExists(this.overlayPath)) await discardOverlay(this.overlayPath);
    await deleteCheckpoint(this.checkpointPath);
    await dropPreResyncPoint(this.replicaPath);
  }
}


