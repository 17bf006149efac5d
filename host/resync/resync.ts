import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { getCore } from '../core/index.js';
import type { Disk } from '../disk/disk.js';
import { discardOverlay } from '../disk/index.js';
import { asVhdsyncError, VhdsyncError } from '../errors.js';
import { removeIfExists } from '../fsutil.js';
import { fileIdentity as fileIdentityOf } from '../file-identity.js';
import { holdResyncSource, refuseResyncSource } from '../resync-source.js';
import { askToStop, describeHolder, fileIdentity, lockFile, type HeldLock, type Holder } from '../writer-lock.js';
import { EventLog, type EventRecord } from '../events/event-log.js';
import type { CounterStore } from '../events/counters.js';
import type { LinkShape } from '../transport/memory-link.js';
import { PROTOCOL_VERSION, type Codec } from '../transport/protocol.js';
import { commonCodecs, Compressor, localCodecs } from '../transport/codec.js';
import type { DialOptions } from '../transport/tls-connect.js';
import { isReplicaAddress, parseReplicaAddress } from '../transport/replica-address.js';
import { HEADER_BYTES, scanTrackingLog, type LogInit } from '../tracking/log.js';
import { dropTakenLogs, listTakenLogs, openPrimary, takeTrackingLog, trackingLogPathFor } from '../tracking/log-files.js';
import { formatSize } from '../units.js';
import { readDirtyMap, type DirtyMap } from '../tracking/dirty-map.js';
import { rangesOfMap, replicaKey, scopeBytes, scopeWire, type ResyncScopeKind } from './scope.js';
import { Channel } from './channel.js';
import { connectReplica, type ReplicaConnection } from './connect.js';
import { readCheckpoint, type Checkpoint, type PrimaryStamp } from './checkpoint.js';
import { mergeJournalPath } from '../disk/index.js';
import { checkpointPathFor, overlayPathFor } from './paths.js';
import { dropPreResyncPoint } from './pre-resync-point.js';
import type { CompressionStats } from './compression.js';
import { CREDIT_WINDOW, PrimaryCompare, agreedFlow, flowFor, type CompareCounters } from './primary.js';
import { makeShape, regionCount, DEFAULT_LEAF, type TreeShape } from './tree.js';

export interface ResyncOptions {
  primary: string;
  replica: string;
  /** Simulated link between the two sites (default: unlimited, no latency). */
  link?: LinkShape;
  /** Certificates and bandwidth limit for a `tls://HOST:PORT/NAME/disk.vhd` replica. */
  network?: DialOptions;
  /** A link lost during the compare is re-established with backoff (default: 8 attempts, from 0.5 s doubling to 30 s). */
  reconnect?: { attempts?: number; delayMs?: number; maxDelayMs?: number };
  /** Leaf size in bytes (default 4 KiB). When resuming, the checkpoint's leaf size is used unless this is given. */
  leafSize?: number;
  /** Compress the data sent (zstd where both ends have it, else deflate) where that pays. */
  compress?: boolean;
  /**
   * Size the compression for a link of this rate (bytes/s) when the link's own rate is not known
   * (a real network without --bandwidth): slower links get stronger levels.
   */
  compressForRate?: number;
  dryRun?: boolean;
  /** Discard a checkpoint and overlay left by an earlier run and start from the beginning. */
  restart?: boolean;
  /**
   * Keep the replica as it was before this resync as an undo log beside it (`--keep-pre-resync-point`),
   * instead of deleting every recovery point; the replication layer makes it a protected point.
   */
  keepPreResyncPoint?: boolean;
  /**
   * Serve a local replica smaller than REPLICA_THREAD_MIN_BYTES in this thread instead of its own
   * (the `vhdsync resync` command does: a thread costs more to start than it gains on a small disk).
   * Off by default: the replication layer's timing (pause at region boundaries) is tuned with the thread.
   */
  smallReplicaInThread?: boolean;
  /** Name used in events and counters (default: the primary's file name). */
  vm?: string;
  /**
   * Compare seconds of the earlier sessions of this same resync (paused, then continued): 29244's time
   * taken covers the whole resync (`seconds`), and says this session's apart (`sessionSeconds`).
   */
  priorCompareSeconds?: number;
  /**
   * Another process writing this replica: refuse at once with one line naming it (default), or wait
   * for it (true: forever; a number: at most that many ms). `onWait` hears whom we wait for.
   */
  wait?: boolean | number;
  onWait?: (holder: Holder | undefined) => void;
  events?: EventLog;
  counters?: CounterStore;
  onProgress?: (p: ResyncProgress) => void;
  /**
   * Replication (host/replication): the ids written into the resync's tracking log, and the log that
   * normal replication continues with once the tracked writes are applied (opened in the same instant).
   */
  tracking?: { log?: LogInit; next?: LogInit };
  /** How the replica endpoint is reached (default connectReplica; tests serve it in-process to inject faults). */
  connect?: typeof connectReplica;
  /**
   * `auto`: when the primary has a dirty map for this replica (tracking/dirty-map.ts: a crash or an
   * overflow of replication's logs), compare only its extents; `full` (default): every block.
   */
  scope?: 'auto' | 'full';
}

export type ResyncPhase = 'preflight' | 'comparing' | 'merging' | 'applying' | 'done';

export interface ResyncProgress {
  phase: ResyncPhase;
  virtualSize: number;
  /** Bytes of the disk compared so far, counting regions done by an earlier run that this one resumed. */
  bytesCompared: number;
  bytesSent: number;
  wireBytes: number;
  seconds: number;
  /**
   * Estimated seconds left in the compare, when it can be estimated: the longer of the compare at its
   * measured rate and the data already handed to the link crossing it (sendSeconds).
   */
  etaSeconds?: number;
  /** Seconds until the data handed to the link so far has crossed it, at the link's rate (0 if unknown). */
  sendSeconds?: number;
  /** Payload bytes per second: the link's rate when it has one, else as measured since the first send. */
  sendRate?: number;
  mergeDone?: number;
  mergeTotal?: number;
}

export interface ResyncResult {
  /** 'cancelled': another process asked this one to stop (`resync --cancel`); the overlay is gone, the base untouched. */
  result: 'completed' | 'paused' | 'failed' | 'cancelled';
  identical: boolean;
  dryRun: boolean;
  virtualSize: number;
  leafSize: number;
  bytesCompared: number;
  blocksSent: number;
  bytesSent: number;
  payloadWireBytes: number;
  wireBytes: number;
  wireBytesSent: number;
  wireBytesReceived: number;
  bytesReadPrimary: number;
  /** Bytes read from the primary: the compare's scan, plus the differing leaves read again to send. */
  bytesRead: number;
  /** What was compared: every block, or the dirty extents (scopeBytes of them). */
  scope: ResyncScopeKind;
  scopeBytes: number;
  seconds: number;
  resumedFrom: number;
  /** What went wrong beside a completed resync (the replica is equal): e.g. counters not written. */
  warnings?: string[];
  /**
   * Why the compare ran a second time from the start: a resumed resync found its primary changed outside
   * the tracking log (another file, or written by something else) while it was interrupted.
   */
  comparedAgain?: string;
  /** Links lost during the compare and re-established: where the replica resumed, and why the link dropped. */
  reconnects: { resumedFrom: number; error: string }[];
  trackedWritesApplied: number;
  recoveryPointsDeleted: boolean;
  phases: { preflight: number; compare: number; merge: number; apply: number };
  /** What compression did: the codec both ends agreed on, frames compressed and raw, levels, compressor time. */
  compression: CompressionStats;
  events: EventRecord[];
}

export interface ResyncHandle {
  /**
   * Stop within ~2 s whatever the link's rate (PauseDeadline): the checkpoint holds the finished regions;
   * the run resolves with result 'paused' and can be resumed.
   */
  pause(): void;
  /**
   * Stop as pause() does, for a cancel (Stop-VMReplication): 29244 says `cancelled`. The caller then
   * discards the overlay and the checkpoint (cancelResync), as for any cancel.
   */
  cancel(): void;
  readonly done: Promise<ResyncResult>;
}

export function startResync(opts: ResyncOptions): ResyncHandle {
  let pauseRequested = false;
  let cancelRequested = false;
  const done = runLocked(opts, () => pauseRequested, () => cancelRequested);
  return {
    pause: () => {
      pauseRequested = true;
    },
    cancel: () => {
      cancelRequested = pauseRequested = true;
    },
    done,
  };
}

export function resync(opts: ResyncOptions): Promise<ResyncResult> {
  return startResync(opts).done;
}

/**
 * `vhdsync resync --cancel`: drop the overlay and the checkpoint, leaving the replica base as it was
 * before the resync. Refused once the merge has started writing the base (the point of no return).
 * A resync running on the replica is asked to stop (it cleans up itself and exits as cancelled); this
 * never deletes files under a running writer. `stopped` names the process that was stopped.
 */
export async function cancelResync(replicaPath: string, network?: DialOptions): Promise<{ cancelled: boolean; stopped?: Holder }> {
  if (isReplicaAddress(replicaPath)) {
    // The replica server runs this same function on the file under its root.
    if (!network) throw new VhdsyncError('USAGE', `${replicaPath}: a replica server needs --cert, --key and --ca`);
    const address = parseReplicaAddress(replicaPath);
    const { callReplicaServer } = await import('../transport/tls-connect.js'); // node:tls only when needed
    const value = (await callReplicaServer(address, network, { target: address.target, call: 'cancel' })) as { cancelled?: unknown; stopped?: Holder } | null;
    return { cancelled: value?.cancelled === true, ...(value?.stopped ? { stopped: value.stopped } : {}) };
  }
  let stopped: Holder | undefined;
  for (let attempt = 0; ; attempt++) {
    const asked = await askToStop(replicaPath, 'cancel');
    if (asked !== 'free') {
      if (!asked.answer.stopping) {
        throw new VhdsyncError('BUSY', `${describeHolder(replicaPath, asked.holder)} and it cannot be cancelled now: ${asked.answer.why}`);
      }
      // It stops at its next region boundary, removes its overlay and checkpoint, and lets go.
      const outcome = await asked.released;
      stopped = asked.holder;
      if (outcome === 'cancelled') return { cancelled: true, ...(stopped ? { stopped } : {}) };
      if (outcome === 'completed') throw new VhdsyncError('STATE', `${replicaPath}: the resync of process ${stopped?.pid ?? '?'} completed before it could stop; nothing to cancel`);
      // It died, or let go without a word: clean up here, under the lock.
    }
    let lock: HeldLock;
    try {
      lock = await lockFile(replicaPath, { what: replicaPath });
    } catch (e) {
      // Someone took it between its release and our lock: ask again (a few times), then give up.
      if (e instanceof VhdsyncError && e.code === 'BUSY' && attempt < 3) continue;
      throw e;
    }
    try {
      const r = await cancelLocked(replicaPath);
      return { cancelled: r.cancelled, ...(stopped ? { stopped } : {}) };
    } finally {
      await lock.release();
    }
  }
}

/** Cancel with the replica's lock held (by the caller): refused past the point of no return. */
export async function cancelLocked(replicaPath: string): Promise<{ cancelled: boolean }> {
  const cpPath = checkpointPathFor(replicaPath);
  const cp = await readCheckpoint(cpPath).catch(() => undefined);
  const overlay = overlayPathFor(replicaPath);
  if (cp?.phase === 'merging' || cp?.phase === 'merged' || (await pathExistsQuiet(mergeJournalPath(overlay)))) {
    throw new VhdsyncError('STATE', `${replicaPath}: the resync is merging its overlay into the replica (the point of no return); run the resync again to finish it`);
  }
  let cancelled = false;
  try {
    await discardOverlay(overlay);
    cancelled = true;
  } catch (e) {
    if ((e as VhdsyncError).code !== 'NOT_FOUND') throw e;
  }
  cancelled = (await removeIfExists(cpPath)) || cancelled;
  await dropPreResyncPoint(replicaPath);
  return { cancelled };
}

async function pathExistsQuiet(path: string): Promise<boolean> {
  return (await fileIdentity(path)) !== undefined;
}

/**
 * Issue 13 item 6: a replica that is the primary by another name (hard link, symlink), or one of the
 * files of the primary's parent chain, would be written under the primary. Compared by identity.
 */
async function refuseReplicaInPrimary(opts: ResyncOptions, pd: Disk): Promise<void> {
  const replica = await fileIdentity(opts.replica);
  if (!replica) return;
  const same = (id: { dev: bigint; ino: bigint } | undefined) => id !== undefined && id.dev === replica.dev && id.ino === replica.ino;
  if (same(await fileIdentity(opts.primary))) {
    throw new VhdsyncError('USAGE', `${opts.replica}: is the primary ${opts.primary} itself (the same file by another name); choose another replica`);
  }
  for (let d = pd.parent; d; d = d.parent) {
    if (same(await fileIdentity(d.path))) {
      throw new VhdsyncError('USAGE', `${opts.replica}: is in the parent chain of the primary ${opts.primary}; a resync would change the primary — choose another replica`);
    }
  }
}

/** 29244's time taken: the whole resync across pauses, and this session's part of it. */
function timeTaken(session: number, prior = 0): { seconds: number; sessionSeconds: number } {
  return { seconds: prior + session, sessionSeconds: session };
}

/**
 * One writer (ARCHITECTURE.md): a replica on this machine is locked by its identity for the whole run (a
 * replica server locks its own files), and the primary is held as a resync's source (host/resync-source.ts).
 * A `resync --cancel` from another process is answered here: the run stops at its next region boundary,
 * removes its overlay and checkpoint, and ends as 'cancelled' — unless the merge was already asked for,
 * which is past the point of no return.
 */
async function runLocked(opts: ResyncOptions, shouldPause: () => boolean, cancelAsked: () => boolean = () => false): Promise<ResyncResult> {
  if (opts.dryRun) return runResync(opts, shouldPause, { cancel: false, merging: false }, cancelAsked);
  if (isReplicaAddress(opts.replica)) return asSource(opts, () => runResync(opts, shouldPause, { cancel: false, merging: false }, cancelAsked));
  const lock = await lockFile(opts.replica, { what: opts.replica, wait: opts.wait, onWait: opts.onWait });
  let handedOver = false; // from then on runLockedReplica releases it, with the outcome
  try {
    await refuseResyncSource(opts.replica, 'a resync onto it');
    return await asSource(opts, () => {
      handedOver = true;
      return runLockedReplica(opts, lock, shouldPause, cancelAsked);
    });
  } finally {
    if (!handedOver) await lock.release();
  }
}

/** Run `fn` holding the primary as this resync's source (host/resync-source.ts). */
async function asSource<T>(opts: ResyncOptions, fn: () => Promise<T>): Promise<T> {
  const source = await holdResyncSource(opts.primary, { wait: opts.wait, onWait: opts.onWait }).catch((e: unknown) => {
    if (e instanceof VhdsyncError && e.code === 'NOT_FOUND') return undefined; // openDisk says it in its words
    throw e;
  });
  try {
    return await fn();
  } finally {
    await source?.release();
  }
}

async function runLockedReplica(opts: ResyncOptions, lock: HeldLock, shouldPause: () => boolean, cancelAsked: () => boolean): Promise<ResyncResult> {
  const stop = { cancel: false, merging: false };
  lock.onStop((reason) => {
    if (reason !== 'cancel') return { stopping: false, why: `unknown request '${reason}'` };
    if (stop.merging) return { stopping: false, why: 'it is merging its overlay into the replica (the point of no return)' };
    stop.cancel = true;
    return { stopping: true };
  });
  let outcome: string | undefined;
  try {
    let r = await runResync(opts, () => shouldPause() || stop.cancel, stop, cancelAsked);
    if (stop.cancel && r.result === 'paused') {
      await cancelLocked(opts.replica);
      r = { ...r, result: 'cancelled', identical: false };
    }
    outcome = r.result;
    return r;
  } finally {
    lock.onStop(undefined);
    await lock.release(outcome);
  }
}

/**
 * A resumed resync whose primary changed outside its tracking while it was interrupted finishes what it
 * had (the replica's checkpoint trusts the regions before it), then compares everything once more from
 * the start: only the regions that differ are sent again, and "completed" means equal.
 */
async function runResync(opts: ResyncOptions, shouldStop: () => boolean, stop: { cancel: boolean; merging: boolean }, cancelAsked: () => boolean = () => false): Promise<ResyncResult> {
  const first = await runResyncOnce(opts, shouldStop, stop, cancelAsked);
  if (first.result !== 'completed' || first.comparedAgain === undefined) return first;
  stop.merging = false;
  const again = await runResyncOnce({ ...opts, restart: true }, shouldStop, stop, cancelAsked);
  return { ...again, comparedAgain: first.comparedAgain, events: [...first.events, ...again.events] };
}

/** The primary file as a resumed resync finds it again (host/resync/checkpoint.ts). */
async function primaryStamp(path: string): Promise<PrimaryStamp> {
  const id = await fileIdentityOf(path);
  return { dev: id.dev, ino: id.ino, ctimeNs: id.ctimeNs };
}

/**
 * Why a resumed resync cannot trust the regions it compared before it was interrupted, if it cannot: the
 * primary is another file, or it changed since the last session started and its last change is not a
 * tracked write (a tracked write appends to the log first, then writes the disk, so the disk's change
 * time follows the log's by far less than a second). An older checkpoint has no stamp: trusted, as before.
 */
async function changedOutsideTracking(primary: string, was: PrimaryStamp | undefined, now: PrimaryStamp): Promise<string | undefined> {
  if (!was) return undefined;
  if (was.dev !== now.dev || was.ino !== now.ino) return `${primary} is not the file the interrupted resync compared (it was replaced or copied)`;
  if (was.ctimeNs === now.ctimeNs) return undefined;
  // A run interrupted after its take keeps its tracked writes in the taken logs until the replica commits them.
  for (const path of [trackingLogPathFor(primary), ...(await listTakenLogs(primary))]) {
    const log = await stat(path, { bigint: true }).catch(() => undefined);
    if (log && log.size > BigInt(HEADER_BYTES) && BigInt(now.ctimeNs) <= log.mtimeNs + TRACKED_WRITE_SLACK_NS) return undefined;
  }
  return `${primary} was written while the resync was interrupted, not through its tracking log`;
}

const TRACKED_WRITE_SLACK_NS = 2_000_000_000n;

async function runResyncOnce(opts: ResyncOptions, shouldStop: () => boolean, stop: { cancel: boolean; merging: boolean }, cancelAsked: () => boolean = () => false): Promise<ResyncResult> {
  const t0 = performance.now();
  const secs = () => (performance.now() - t0) / 1000;
  // A dry run writes nothing, events included: they stay in memory and come back marked dryRun.
  const events = opts.dryRun === true ? new EventLog() : (opts.events ?? new EventLog());
  const eventsBefore = events.records.length;
  const vm = opts.vm ?? basename(opts.primary).replace(/\.[^.]+$/, '');
  const dryRun = opts.dryRun === true;
  const core = getCore();
  const phases = { preflight: 0, compare: 0, merge: 0, apply: 0 };

  let primary: Disk | undefined;
  let session: Session | undefined;
  let pauseDeadline: PauseDeadline | undefined;
  let warmCompressor: Compressor | undefined;
  // Wire bytes of sessions whose link was lost, plus the current one's.
  const lostWire = { sent: 0, received: 0 };
  const wireSent = () => lostWire.sent + (session?.conn.link.stats.bytesSent ?? 0);
  const wireReceived = () => lostWire.received + (session?.conn.link.stats.bytesReceived ?? 0);
  const wire = () => wireSent() + wireReceived();
  try {
    const trackInit = { sequence: 0, ...opts.tracking?.log };
    // Opened as a running VM's writer leaves it between two batches (log-files.ts openPrimary), for the
    // preflight; the compare reads the disk opened again once tracking has started (trackAndReopen).
    let pd = await openPrimary(opts.primary);
    primary = pd;
    /**
     * Tracking starts and the disk is opened again in one hold of the log's lock: a write before it is
     * in what the compare reads (the writer published it, block allocations included), one after it is
     * in the log, applied after the merge. Nothing falls between the two.
     */
    const trackAndReopen = async (fresh: boolean) => {
      const again = await openPrimary(opts.primary, { init: trackInit, fresh });
      const old = pd;
      pd = again;
      primary = again;
      await old.close();
    };
    if (!isReplicaAddress(opts.replica)) await refuseReplicaInPrimary(opts, pd);
    // Compressing threads start now, while the link is set up (the codec is settled in welcome).
    if (opts.compress === true && !dryRun && (await localCodecs())[0] === 'zstd') warmCompressor = new Compressor('zstd').warm();
    // About a second of data in flight at the link's rate: what a pause waits for (issue 13 item 13).
    const linkRate = opts.link?.rate ?? opts.network?.limiter?.rate ?? Infinity;
    const askedFlow = flowFor(linkRate);
    const stamp = dryRun ? undefined : await primaryStamp(opts.primary);
    const startOf = (shape: TreeShape, scopeMap?: DirtyMap) => ({
      shape, dryRun, restart: opts.restart === true, primary: basename(opts.primary), keepPreResyncPoint: opts.keepPreResyncPoint === true,
      ackBytes: askedFlow.ackBytes, credit: CREDIT_WINDOW, sectorSize: pd.sectorSize,
      ...(scopeMap ? { scope: scopeWire(scopeMap) } : {}),
      ...(stamp ? { primaryFile: stamp } : {}),
    });
    // The start of a fresh run goes with the hello (the replica takes it only if it is the one we would
    // send after its welcome: see ReplicaEndpoint.hello). A scoped resync reads its map after tracking
    // starts, and that depends on the welcome: it sends its start after.
    const early = opts.scope !== 'auto' && pd.virtualSize % 512 === 0 ? startOf(makeShape(pd.virtualSize, opts.leafSize ?? DEFAULT_LEAF)) : undefined;
    session = await openSession(opts, pd, early);
    let c = session.ch;
    const welcome = session.welcome;

    // 1. Preflight (in openSession): same virtual size and sector size, or refuse before anything is written.
    const cp = welcome.checkpoint as Checkpoint | null;
    const resuming = !dryRun && !opts.restart && cp !== null;
    if (resuming) checkResumable(opts, pd, cp!);
    const compareAgain = resuming ? (cp!.compareAgain ?? (await changedOutsideTracking(opts.primary, cp!.primaryFile, stamp!))) : undefined;
    const leafSize = resuming && opts.leafSize === undefined ? cp!.leafSize : (opts.leafSize ?? DEFAULT_LEAF);
    const shape: TreeShape = makeShape(pd.virtualSize, leafSize);
    phases.preflight = secs();

    // 2–3. Start tracking, create (or reopen) the overlay on the replica. A scoped resync starts
    //    tracking first and reads the dirty map after: a write before went into the map, one after
    //    goes into the log (applied after the merge), so none falls between the two.
    let tracking = false;
    let scopeMap: DirtyMap | undefined;
    if (opts.scope === 'auto') {
      if (!dryRun) {
        await trackAndReopen(!resuming || (cp!.nextRegion === 0 && cp!.phase === 'comparing'));
        tracking = true;
      }
      const map = await readDirtyMap(opts.primary).catch(() => undefined);
      if (map && map.replica === replicaKey(opts.replica) && map.virtualSize === pd.virtualSize) scopeMap = map;
    }
    const scope = scopeMap ? rangesOfMap(scopeMap, pd.virtualSize) : undefined;
    const scopeKind: ResyncScopeKind = scope ? 'DirtyExtents' : 'Full';
    const scopeSize = scopeBytes(scope, pd.virtualSize);
    const start = session.startTaken ? early! : { ...startOf(shape, scopeMap), ...(compareAgain ? { compareAgain } : {}) };
    let startedReply = session.started;
    if (!session.startTaken) {
      startedReply ??= c.expect('started');
      await c.control('start', start);
    }
    const started = await startedReply!;
    let credited = started.credit === CREDIT_WINDOW;
    let flow = agreedFlow(askedFlow, started.ackBytes);
    let resumeRegion = Number(started.resumeFrom);
    let phase = String(started.phase) as Checkpoint['phase'];
    if (!dryRun && !tracking) await trackAndReopen(resumeRegion === 0 && phase === 'comparing');
    const resumedFrom = Math.min(resumeRegion * shape.regionSize, shape.virtualSize);
    const blocks = pd.blockCount;
    await events.emit({
      id: 29242,
      level: 'Information',
      vm,
      disks: [opts.primary],
      startBlock: Math.min(Math.floor(resumedFrom / pd.blockSize), blocks - 1),
      endBlock: blocks - 1,
      scope: scopeKind,
      scopeBytes: scopeSize,
    });

    /** A lost link: count what crossed it, connect again with backoff, restart the session there. */
    const reestablish = async (lost: Error, during: string): Promise<Record<string, unknown>> => {
      lostWire.sent += session!.conn.link.stats.bytesSent;
      lostWire.received += session!.conn.link.stats.bytesReceived;
      await closeSession(session);
      session = undefined;
      const again = await reconnect(opts, pd, start, lost, during);
      session = again.session;
      c = session.ch;
      return again.started;
    };

    // 4. Compare and sync. A link lost on the way is re-established and the replica resumes from its
    //    checkpoint, so only the regions that were in flight are compared (and sent) again.
    const k: CompareCounters = { bytesCompared: 0, bytesRead: 0, leavesSent: 0, bytesSent: 0, payloadWireBytes: 0, regionsDiffering: 0 };
    const compression: CompressionStats = { codec: 'none', framesCompressed: 0, framesRaw: 0, levels: {}, compressorBytes: 0, compressorMs: 0 };
    const reconnects: ResyncResult['reconnects'] = [];
    const tCompare = performance.now();
    const sending = new SendEstimate(linkRate);
    const reportCompare = (from: number, now: CompareCounters) => {
      const elapsed = secs() - phases.preflight;
      const doneBytes = from + now.bytesCompared;
      const sent = k.bytesSent + now.bytesSent;
      const rate = (doneBytes - resumedFrom) / Math.max(elapsed, 1e-3);
      const compareLeft = rate > 0 ? (shape.virtualSize - doneBytes) / rate : undefined;
      const sendLeft = sending.update(sent);
      opts.onProgress?.({
        phase: 'comparing',
        virtualSize: shape.virtualSize,
        bytesCompared: doneBytes,
        bytesSent: sent,
        wireBytes: wire(),
        seconds: secs(),
        sendRate: sending.rate(),
        sendSeconds: sendLeft,
        etaSeconds: compareLeft === undefined && sendLeft === 0 ? undefined : Math.max(compareLeft ?? 0, sendLeft),
      });
    };
    const pausing = (pauseDeadline = new PauseDeadline(shouldStop, () => session?.conn.link.abort()));
    let next: number;
    let compared: Record<string, unknown> | undefined;
    const progress = (phase: ResyncPhase, extra: Partial<ResyncProgress> = {}) =>
      opts.onProgress?.({ phase, virtualSize: shape.virtualSize, bytesCompared: shape.virtualSize, bytesSent: k.bytesSent, wireBytes: wire(), seconds: secs(), ...extra });
    /** Send 'merge'; its reply is awaited later (MergeAsked), its progress reported meanwhile. */
    const askMerge = async (ch: Channel): Promise<MergeAsked> => {
      ch.onControl('merge-progress', (b) => progress('merging', { mergeDone: Number(b.done), mergeTotal: Number(b.total) }));
      const merged = ch.expect('merged');
      merged.catch(() => {});
      await ch.control('merge', {});
      return { merged };
    };
    /** The merge asked for right behind 'compare-done' (undefined once a link was lost: ask again). */
    let merging: MergeAsked | undefined;
    for (;;) {
      const from = Math.min(resumeRegion * shape.regionSize, shape.virtualSize);
      const compare = new PrimaryCompare(c, core, pd, shape, {
        dryRun,
        compress: opts.compress === true,
        codecs: session.codecs,
        linkRate: knownRate(opts),
        shouldStop: pausing.check,
        scope,
        flow,
        credited,
        compressor: warmCompressor,
        onRegion: (now) => reportCompare(from, now),
      });
      // Also between regions: a region of differing data can take minutes to cross a slow link.
      const ticker = opts.onProgress ? setInterval(() => reportCompare(from, compare.counters), PROGRESS_TICK_MS) : undefined;
      ticker?.unref();
      try {
        next = phase === 'comparing' ? await compare.run(resumeRegion) : regionCount(shape);
        if (next === regionCount(shape)) {
          // The point of no return, decided in one step (no await between): a cancel asked from now on
          // is refused as merging. The merge follows 'compare-done' on the wire at once: the replica
          // handles them in order and merges only if the compare was complete, so waiting for its
          // 'compared' in between would only cost a round trip.
          const mergeNow = !dryRun && !stop.cancel;
          if (mergeNow) stop.merging = true;
          // The reply comes after every queued data frame reached the replica and was written.
          const reply = c.expect('compared');
          await c.control('compare-done', {});
          merging = mergeNow ? await askMerge(c) : undefined;
          compared = await reply;
        }
        break;
      } catch (e) {
        if (pausing.dropped && isLinkLost(e)) {
          // The pause dropped the link: the replica keeps its checkpoint (finished regions only).
          next = resumeRegion;
          break;
        }
        if (!isLinkLost(e) || dryRun || shouldStop()) throw e;
        const started = await reestablish(e as Error, 'the compare');
        resumeRegion = Number(started.resumeFrom);
        phase = String(started.phase) as Checkpoint['phase'];
        flow = agreedFlow(askedFlow, started.ackBytes);
        credited = started.credit === CREDIT_WINDOW;
        merging = undefined;
        reconnects.push({ resumedFrom: Math.min(resumeRegion * shape.regionSize, shape.virtualSize), error: (e as Error).message });
      } finally {
        clearInterval(ticker);
        for (const key of Object.keys(k) as (keyof CompareCounters)[]) k[key] += compare.counters[key];
        addCompression(compression, compare.compression.stats);
      }
    }
    const base = {
      dryRun,
      virtualSize: shape.virtualSize,
      leafSize: shape.leafSize,
      // Counted by position: regions redone after a reconnect count once.
      bytesCompared: Math.min(next * shape.regionSize, shape.virtualSize) - resumedFrom,
      blocksSent: k.leavesSent,
      bytesSent: k.bytesSent,
      payloadWireBytes: k.payloadWireBytes,
      bytesReadPrimary: k.bytesRead,
      bytesRead: k.bytesRead + k.bytesSent,
      scope: scopeKind,
      scopeBytes: scopeSize,
      resumedFrom,
      reconnects,
    };
    const finish = async (result: ResyncResult['result'], extra: Partial<ResyncResult> = {}): Promise<ResyncResult> => ({
      result,
      identical: false,
      ...base,
      wireBytes: wire(),
      wireBytesSent: wireSent(),
      wireBytesReceived: wireReceived(),
      seconds: secs(),
      trackedWritesApplied: 0,
      recoveryPointsDeleted: false,
      phases,
      compression,
      events: events.records.slice(eventsBefore).map((e) => (dryRun ? { ...e, dryRun: true } : e)),
      ...extra,
    });

    // Decided at the end of the compare (stop.merging), or cancelled before it.
    const cancelled = stop.cancel && !dryRun && !stop.merging;
    if (next < regionCount(shape) || cancelled) {
      // Paused at a region boundary: the replica checkpoints; the next run continues from there
      // (or, cancelled, the caller removes the overlay and the checkpoint once the replica let go).
      // Not confirmed in time (a slow link still delivering), the link is dropped: same checkpoint.
      if (!pausing.dropped) {
        try {
          await c.request('pause', {}, 'paused');
        } catch (e) {
          if (!(pausing.dropped && isLinkLost(e))) throw e;
        }
      }
      pausing.end();
      phases.compare = (performance.now() - tCompare) / 1000;
      await events.emit({
        id: 29244, level: 'Warning', vm, disk: opts.primary, blocksSent: k.leavesSent, ...timeTaken(phases.compare, opts.priorCompareSeconds),
        result: cancelled || cancelAsked() ? 'cancelled' : 'paused', scope: scopeKind, bytesRead: base.bytesRead,
      });
      return finish('paused');
    }
    pausing.end();
    phases.compare = (performance.now() - tCompare) / 1000;
    const totalLeaves = dryRun ? k.leavesSent : Number(compared!.leavesReceived);
    await events.emit({ id: 29244, level: 'Information', vm, disk: opts.primary, blocksSent: totalLeaves, ...timeTaken(phases.compare, opts.priorCompareSeconds), result: 'completed', scope: scopeKind, bytesRead: base.bytesRead });
    if (dryRun) {
      c.close();
      return finish('completed', { identical: k.leavesSent === 0 });
    }

    // 6. Merge the overlay into the base: the point of no return. 7. Writes tracked since the start
    //    replicate now; then recovery points go and the resync commits. A link lost here is
    //    re-established too: the replica resumes its merge (journaled), and the taken writes are sent
    //    again until a commit confirms them (tracking keeps them until then). The commit waits for
    //    'merged': a replica commits (and forgets its checkpoint) only once the primary knows it merged,
    //    so a link lost before the commit resumes the merge, never the compare.
    const mergeAndCommit = async (ch: Channel, asked?: MergeAsked) => {
      progress('merging');
      const tMerge = performance.now();
      await (asked ?? (await askMerge(ch))).merged;
      phases.merge += (performance.now() - tMerge) / 1000;
      const tApply = performance.now();
      progress('applying');
      const tracked = { records: 0, bytes: 0 };
      for (const log of await takeTrackingLog(opts.primary, opts.tracking?.next)) {
        await scanTrackingLog(log, async (rec) => {
          await ch.send({ t: 'write', offset: rec.offset, data: rec.data });
          tracked.records++;
          tracked.bytes += rec.data.byteLength;
        });
      }
      const committed = await ch.request('commit', {}, 'committed');
      await dropTakenLogs(opts.primary);
      phases.apply += (performance.now() - tApply) / 1000;
      return { tracked, committed };
    };
    let done: Awaited<ReturnType<typeof mergeAndCommit>>;
    for (;;) {
      try {
        done = await mergeAndCommit(c, merging);
        break;
      } catch (e) {
        merging = undefined;
        if (!isLinkLost(e)) throw e;
        await reestablish(e as Error, 'the merge');
        reconnects.push({ resumedFrom: shape.virtualSize, error: (e as Error).message });
      }
    }
    // The replica is equal now: counters that cannot be written (a full home) are a warning, not a failure.
    const warnings: string[] = [];
    await opts.counters
      ?.add(vm, {
        'Resynchronized Bytes': k.bytesSent + done.tracked.bytes,
        'Network Bytes Sent': wireSent(),
        'Network Bytes Received': wireReceived(),
        'Resynchronization Bytes Read': base.bytesRead,
      })
      .catch((e: unknown) => warnings.push(`the counters were not updated: ${asVhdsyncError(e).message}`));
    progress('done');
    return finish('completed', {
      identical: true,
      ...(warnings.length > 0 ? { warnings } : {}),
      ...(compareAgain ? { comparedAgain: compareAgain } : {}),
      trackedWritesApplied: done.tracked.records,
      recoveryPointsDeleted: done.committed.recoveryPointsDeleted === true,
    });
  } catch (e) {
    if (session && !session.ch.failed) await session.ch.sendError(e);
    throw e;
  } finally {
    pauseDeadline?.end();
    warmCompressor?.close();
    await closeSession(session);
    await primary?.close().catch(() => {});
  }
}

/** A 'merge' sent, its reply to come. */
interface MergeAsked {
  merged: Promise<Record<string, unknown>>;
}

/** A pause not confirmed by the replica this long after it was asked for drops the link. */
export const PAUSE_DROP_MS = 1500;
/** How often the compare checks for a pause besides at its own checkpoints (regions, frames). */
const PAUSE_POLL_MS = 100;

/**
 * Pausing within ~2 s at any link rate (issue 13 item 13). The compare stops sending at once (even
 * mid-region: unfinished regions are redone on resume), then asks the replica to checkpoint behind
 * the data still on the link — about a second of it (flowFor). If the replica has not confirmed
 * PAUSE_DROP_MS after the pause was asked for, the link is dropped without delivering what is queued:
 * the replica keeps its checkpoint (finished regions only) as for any lost connection.
 */
class PauseDeadline {
  dropped = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly poll: ReturnType<typeof setInterval>;
  private ended = false;

  constructor(
    private readonly shouldStop: () => boolean,
    private readonly drop: () => void,
  ) {
    this.poll = setInterval(() => this.check(), PAUSE_POLL_MS);
    this.poll.unref();
  }

  /** Whether a pause was asked for; the first time it is seen, the deadline starts. */
  readonly check = (): boolean => {
    if (!this.shouldStop()) return false;
    if (this.timer === undefined && !this.ended) {
      this.timer = setTimeout(() => {
        if (this.ended) return;
        this.dropped = true;
        this.drop();
      }, PAUSE_DROP_MS);
    }
    return true;
  };

  /** Past the compare (and its pause): nothing is dropped any more. */
  end(): void {
    this.ended = true;
    clearInterval(this.poll);
    if (this.timer) clearTimeout(this.timer);
  }
}

/** How often a running compare reports progress besides at each region's end. */
const PROGRESS_TICK_MS = 250;

/**
 * Where the data handed to the link stands: the link drains at its rate (a simulated link, or the
 * --bandwidth cap), so what was handed to it beyond that is still on its way. Without a known rate
 * the sender is held back by the link itself and only the measured rate is reported.
 */
class SendEstimate {
  private seen = 0;
  private freeAt = 0;
  private firstAt: number | undefined;

  constructor(private readonly linkRate: number) {}

  /** Feed the payload bytes handed over so far; returns the seconds until they have crossed the link. */
  update(sent: number): number {
    const now = performance.now() / 1000;
    if (sent > this.seen) {
      this.firstAt ??= now;
      if (Number.isFinite(this.linkRate)) this.freeAt = Math.max(now, this.freeAt) + (sent - this.seen) / this.linkRate;
      this.seen = sent;
    }
    return Math.max(0, this.freeAt - now);
  }

  rate(): number | undefined {
    if (Number.isFinite(this.linkRate)) return this.linkRate;
    if (this.firstAt === undefined) return undefined;
    const t = performance.now() / 1000 - this.firstAt;
    return t > 0.05 ? this.seen / t : undefined;
  }
}

/** One connection to the replica endpoint, past hello/welcome and the preflight. */
interface Session {
  conn: ReplicaConnection;
  ch: Channel;
  welcome: Record<string, unknown>;
  /** Payload codecs both ends support, ours first. */
  codecs: Codec[];
  /** The replica took the 'start' sent with the hello: its 'started' is `started`. */
  startTaken: boolean;
  /** The reply 'started', awaited from before the hello when a start went with it. */
  started?: Promise<Record<string, unknown>>;
}

/**
 * Connect and say hello (with a replica server, inside 'open': one round trip for both). `start`, when
 * given, goes with the hello; the welcome says whether the replica took it (see ReplicaEndpoint.hello).
 */
async function openSession(opts: ResyncOptions, pd: Disk, start?: Record<string, unknown>): Promise<Session> {
  const ours = await localCodecs();
  const hello = { version: PROTOCOL_VERSION, codecs: ours, ...(start ? { start } : {}) };
  const conn = await (opts.connect ?? connectReplica)(opts.replica, { link: opts.link ?? { rate: Infinity, latencyMs: 0 }, network: opts.network, virtualSize: opts.smallReplicaInThread ? pd.virtualSize : undefined, hello });
  const session: Session = { conn, ch: new Channel(conn.link), welcome: {}, codecs: [], startTaken: false };
  // A start that grants credit has the replica's roots flowing before the compare is set up.
  session.ch.holdUntilHandled('roots');
  // Both replies are awaited before a frame can arrive (a server sends its welcome right behind 'opened').
  const welcome = session.ch.expect('welcome');
  welcome.catch(() => {});
  if (start) {
    session.started = session.ch.expect('started');
    session.started.catch(() => {});
  }
  try {
    if (!conn.helloSent) await session.ch.control('hello', hello);
    session.welcome = await Promise.race([welcome, conn.failed]);
    session.startTaken = start !== undefined && session.welcome.started === true;
    session.codecs = commonCodecs(ours, session.welcome.codecs);
    preflight(opts, pd, session.welcome.replica as { virtualSize: number; sectorSize: number });
    return session;
  } catch (e) {
    if (!session.ch.failed) await session.ch.sendError(e);
    await closeSession(session);
    throw e;
  }
}

async function closeSession(session: Session | undefined): Promise<void> {
  session?.ch.close();
  await session?.conn.close();
}

/** The link's rate where it is known (simulated, --bandwidth, or given for compression), else Infinity. */
function knownRate(opts: ResyncOptions): number {
  const rate = opts.link?.rate ?? opts.network?.limiter?.rate ?? Infinity;
  return Number.isFinite(rate) ? rate : (opts.compressForRate ?? Infinity);
}

function addCompression(into: CompressionStats, s: CompressionStats): void {
  if (s.codec !== 'none') into.codec = s.codec;
  into.framesCompressed += s.framesCompressed;
  into.framesRaw += s.framesRaw;
  into.compressorBytes += s.compressorBytes;
  into.compressorMs += s.compressorMs;
  for (const [l, n] of Object.entries(s.levels)) into.levels[Number(l)] = (into.levels[Number(l)] ?? 0) + n;
}

function isLinkLost(e: unknown): boolean {
  return e instanceof VhdsyncError && e.code === 'LINK';
}

/** Connect again with backoff and restart the session; the replica resumes from its checkpoint. */
async function reconnect(opts: ResyncOptions, pd: Disk, start: Record<string, unknown>, lost: Error, during: string): Promise<{ session: Session; started: Record<string, unknown> }> {
  const { attempts = 8, delayMs = 500, maxDelayMs = 30_000 } = opts.reconnect ?? {};
  let last = lost;
  for (let attempt = 0; attempt < attempts; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(delayMs * 2 ** attempt, maxDelayMs)));
    let session: Session | undefined;
    try {
      session = await openSession(opts, pd);
      return { session, started: await session.ch.request('start', { ...start, restart: false }, 'started') };
    } catch (e) {
      await closeSession(session);
      // The server took our certificate at the start, so a close right after the handshake (AUTH) is
      // far more likely a server restarting than a refusal: keep trying.
      if (!isLinkLost(e) && (e as VhdsyncError).code !== 'AUTH') throw e;
      last = e as Error;
    }
  }
  throw new VhdsyncError('LINK', `${opts.replica}: the link was lost during ${during} (${lost.message}) and ${attempts} attempts to reconnect failed (last: ${last.message}); run the same command again to resume from the checkpoint`);
}

function preflight(opts: ResyncOptions, primary: Disk, rep: { virtualSize: number; sectorSize: number }): void {
  if (rep.virtualSize !== primary.virtualSize) {
    const size = primary.virtualSize;
    // Growing works for every format; shrinking only for raw and fixed VHDs (disk/resize.ts).
    const fix =
      rep.virtualSize < size
        ? `grow the replica first: vhdsync resize ${opts.replica} ${size}`
        : `a replica cannot be larger: cut it (vhdsync resize ${opts.replica} ${size} --shrink, raw and fixed VHD only) or create one of the primary's size (vhdsync create ${opts.replica} --size ${size}) and resync into it`;
    throw new VhdsyncError(
      'SIZE_MISMATCH',
      `${opts.replica}: virtual size ${formatSize(rep.virtualSize)} (${rep.virtualSize} bytes) differs from ${opts.primary} (${formatSize(size)}, ${size} bytes); ${fix}`,
    );
  }
  if (rep.sectorSize !== primary.sectorSize) {
    throw new VhdsyncError('SECTOR_MISMATCH', `${opts.replica}: logical sector size ${rep.sectorSize} differs from ${opts.primary} (${primary.sectorSize}); a resync needs both the same`);
  }
  if (primary.virtualSize % 512 !== 0) {
    throw new VhdsyncError('BAD_SIZE', `${opts.primary}: size ${primary.virtualSize} is not a whole number of 512-byte sectors`);
  }
}

function checkResumable(opts: ResyncOptions, primary: Disk, cp: Checkpoint): void {
  // Past the point of no return any primary of the replica's size finishes the merge: the compare then
  // runs again against it (changedOutsideTracking tells it is another file).
  const merging = cp.phase === 'merging' || cp.phase === 'merged';
  if ((!merging && cp.primary !== basename(opts.primary)) || cp.virtualSize !== primary.virtualSize) {
    throw new VhdsyncError('CHECKPOINT', `${opts.replica}: an unfinished resync from '${cp.primary}' is in progress on this replica; finish it (vhdsync resync with that primary), or start over with --restart (or --cancel)`);
  }
  if (opts.leafSize !== undefined && opts.leafSize !== cp.leafSize && cp.phase === 'comparing') {
    throw new VhdsyncError('CHECKPOINT', `${opts.replica}: the resync in progress uses --leaf ${cp.leafSize}; continue with the same leaf size, or start over with --restart`);
  }
}
