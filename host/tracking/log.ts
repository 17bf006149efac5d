import { open, type FileHandle } from 'node:fs/promises';
import { bytesEqual, concatBytes } from '../bytes.js';
import { getCore } from '../core/index.js';
import { VhdsyncError, ioError } from '../errors.js';
import { nodeLogFs, type LogFile, type LogFs } from './log-fs.js';
import { MiB } from '../units.js';

/**
 * The tracking log: every write made to a primary disk through vhdsync, in order, each record with
 * its own CRC-32C so a torn tail (a crash mid-append) is recognised and cut, never replayed.
 *
 * Layout (little-endian), HRL-like (reference/hyperv-replica.md §2.1, [MS-HRL] header semantics):
 *   header, 512 bytes: magic "VHDSTRK1", version u32 (2; 1 is still read), header size u32 = 512,
 *     sequence u64 (the replication cycle; 0 = the log of a resync, never shipped),
 *     data-write id (16 bytes: the writing session that last took the log),
 *     created ms u64, end-of-log offset u64 (0 while open — with a dead writer: not closed gracefully),
 *     VM id (16 bytes) at 56, disk id (16 bytes) at 72, disk index u32 at 88,
 *     writer pid u32 at 92 (the process appending now; 0 = none),
 *     header CRC-32C u32 at 508 (over the header with that field zero).
 *   records: magic "TREC", offset u64, length u32, CRC-32C u32 (over offset, length and data), data.
 */
export const TRACK_MAGIC = 'VHDSTRK1';
export const TRACK_VERSION = 2;
export const HEADER_BYTES = 512;
export const RECORD_HEAD = 20;
const REC_MAGIC = 0x43455254; // "TREC" little-endian
/** A single tracked write is bounded so a damaged length can never make a reader allocate wildly. */
export const MAX_RECORD_BYTES = 64 * MiB;

export interface TrackHeader {
  version: number;
  sequence: number;
  dataWriteId: Uint8Array;
  createdMs: number;
  endOfLog: number;
  vmId: Uint8Array;
  diskId: Uint8Array;
  diskIndex: number;
  writerPid: number;
}

export interface TrackRecord {
  offset: number;
  data: Uint8Array;
}

/** What a new log is made with; everything is optional for a standalone resync. */
export interface LogInit {
  sequence?: number;
  vmId?: Uint8Array;
  diskId?: Uint8Array;
  diskIndex?: number;
  dataWriteId?: Uint8Array;
}

const ZERO_ID = new Uint8Array(16);

export function buildHeader(h: TrackHeader): Uint8Array {
  const b = new Uint8Array(HEADER_BYTES);
  const v = new DataView(b.buffer);
  b.set(new TextEncoder().encode(TRACK_MAGIC), 0);
  v.setUint32(8, h.version, true);
  v.setUint32(12, HEADER_BYTES, true);
  setU64(v, 16, h.sequence);
  b.set(h.dataWriteId.subarray(0, 16), 24);
  setU64(v, 40, h.createdMs);
  setU64(v, 48, h.endOfLog);
  b.set(h.vmId.subarray(0, 16), 56);
  b.set(h.diskId.subarray(0, 16), 72);
  v.setUint32(88, h.diskIndex, true);
  v.setUint32(92, h.writerPid, true);
  v.setUint32(508, getCore().crc32c(b), true);
  return b;
}

/** Pure: decode and check a header. */
export function parseHeader(b: Uint8Array, path: string): TrackHeader {
  if (b.byteLength < HEADER_BYTES || new TextDecoder().decode(b.subarray(0, 8)) !== TRACK_MAGIC) {
    throw new VhdsyncError('BAD_COOKIE', `${path}: not a vhdsync tracking log`);
  }
  const v = new DataView(b.buffer, b.byteOffset, HEADER_BYTES);
  const stored = v.getUint32(508, true);
  const copy = b.slice(0, HEADER_BYTES);
  copy.fill(0, 508, 512);
  if (getCore().crc32c(copy) !== stored) throw new VhdsyncError('BAD_CHECKSUM', `${path}: tracking log header checksum is wrong`);
  const version = v.getUint32(8, true);
  if (version !== 1 && version !== TRACK_VERSION) throw new VhdsyncError('UNSUPPORTED', `${path}: tracking log version ${version} is not supported`);
  const v2 = version >= 2;
  return {
    version,
    sequence: getU64(v, 16),
    dataWriteId: b.slice(24, 40),
    createdMs: getU64(v, 40),
    endOfLog: getU64(v, 48),
    vmId: v2 ? b.slice(56, 72) : ZERO_ID.slice(),
    diskId: v2 ? b.slice(72, 88) : ZERO_ID.slice(),
    diskIndex: v2 ? v.getUint32(88, true) : 0,
    writerPid: v2 ? v.getUint32(92, true) : 0,
  };
}

/** The 12 bytes a record's CRC starts with (offset, length): one array reused, not one per record. */
const CRC_HEAD = new Uint8Array(12);
const CRC_HEAD_VIEW = new DataView(CRC_HEAD.buffer);

function recordCrc(offset: number, data: Uint8Array): number {
  setU64(CRC_HEAD_VIEW, 0, offset);
  CRC_HEAD_VIEW.setUint32(8, data.byteLength, true);
  const core = getCore();
  return core.crc32c(data, core.crc32c(CRC_HEAD));
}

/**
 * Pure: a run of records as the pieces written one after another — each record's 20-byte head, then
 * its data itself (not copied: a log append writes them with one writev).
 */
export function recordParts(records: readonly TrackRecord[]): Uint8Array[] {
  const heads = new Uint8Array(records.length * RECORD_HEAD);
  const v = new DataView(heads.buffer);
  const parts: Uint8Array[] = [];
  records.forEach((r, i) => {
    if (r.data.byteLength > MAX_RECORD_BYTES) throw new VhdsyncError('USAGE', `a single tracked write is limited to ${MAX_RECORD_BYTES} bytes`);
    const at = i * RECORD_HEAD;
    v.setUint32(at, REC_MAGIC, true);
    setU64(v, at + 4, r.offset);
    v.setUint32(at + 12, r.data.byteLength, true);
    v.setUint32(at + 16, recordCrc(r.offset, r.data), true);
    parts.push(heads.subarray(at, at + RECORD_HEAD), r.data);
  });
  return parts;
}

/** Pure: the bytes of a run of records, ready to append, in one buffer. */
export function encodeRecords(records: readonly TrackRecord[]): Uint8Array {
  return concatBytes(recordParts(records));
}

export function newHeader(init: LogInit = {}): TrackHeader {
  const id = new Uint8Array(16);
  crypto.getRandomValues(id);
  return {
    version: TRACK_VERSION,
    sequence: init.sequence ?? 1,
    dataWriteId: init.dataWriteId ?? id,
    createdMs: Date.now(),
    endOfLog: 0,
    vmId: init.vmId ?? ZERO_ID.slice(),
    diskId: init.diskId ?? ZERO_ID.slice(),
    diskIndex: init.diskIndex ?? 0,
    writerPid: 0,
  };
}

/**
 * Create a new, open log (end-of-log 0). Fails if the file exists. The second argument may be a bare
 * sequence number (the older form). Callers that share the log with a running writer hold its lock
 * (`log-files.ts`).
 */
export async function createTrackingLog(path: string, init: LogInit | number = {}): Promise<TrackHeader> {
  const header = newHeader(typeof init === 'number' ? { sequence: init } : init);
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, 'wx');
    await fh.write(buildHeader(header), 0, HEADER_BYTES, 0);
    await fh.sync();
  } catch (e) {
    throw ioError(path, e);
  } finally {
    await fh?.close();
  }
  return header;
}

export async function readTrackingHeader(path: string): Promise<{ header: TrackHeader; size: number }> {
  const fh = await open(path, 'r').catch((e) => {
    throw ioError(path, e);
  });
  try {
    const { size } = await fh.stat();
    const hb = new Uint8Array(HEADER_BYTES);
    const { bytesRead } = await fh.read(hb, 0, HEADER_BYTES, 0);
    if (bytesRead < HEADER_BYTES) throw new VhdsyncError('TRUNCATED', `${path}: tracking log is shorter than its header`);
    return { header: parseHeader(hb, path), size };
  } finally {
    await fh.close();
  }
}

/** Rewrite the header in place (sealing, taking or releasing the log). */
export async function writeTrackingHeader(path: string, header: TrackHeader): Promise<void> {
  const fh = await open(path, 'r+').catch((e) => {
    throw ioError(path, e);
  });
  try {
    await fh.write(buildHeader(header), 0, HEADER_BYTES, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Append records durably, before the writes reach the disk. The writer stamps the header with its pid
 * and session (data-write id) the first time it appends to a log file (`adopt`), so that a log left
 * open by a dead writer is recognisable. Returns the log's size after the append. With `sync: false`
 * the caller makes the log durable later (syncTrackingLog), before it makes the disk's data durable.
 *
 * `alongside` runs while the records are being written, once the header is taken and `beforeAppend`
 * (the activity log) is done: a caller whose crash between the two writes is covered otherwise (the
 * activity log's extents, and a log left open requires a resync) writes the disk at the same time.
 * It runs whether or not the log's write succeeds; its own failure is rethrown after the log's.
 */
export async function appendRecords(path: string, records: readonly TrackRecord[], opts: AppendOptions = {}): Promise<number> {
  const log = await LogAppender.open(path, opts.fs);
  try {
    return await log.append(records, opts);
  } finally {
    await log.close();
  }
}

export interface AppendOptions {
  fs?: LogFs;
  adopt?: { pid: number; dataWriteId: Uint8Array };
  beforeAppend?: () => Promise<void>;
  alongside?: () => Promise<void>;
  sync?: boolean;
}

/**
 * The open log of one writer across several appends (appendRecords for each), for as long as the
 * caller holds the log's lock (log-files.ts): nothing else seals, switches, takes or removes it then,
 * so its size and its checked header stay what this appender knows. Close it before the lock goes.
 * After a failed append its size is unknown: it refuses further appends (open a new one).
 */
export class LogAppender {
  private size = -1;
  private adopted?: { pid: number; dataWriteId: Uint8Array };
  private failed = false;

  private constructor(
    readonly path: string,
    private readonly f: LogFile,
  ) {}

  /** Rejects with ENOENT when there is no log (tracking is off). */
  static async open(path: string, fs: LogFs = nodeLogFs): Promise<LogAppender> {
    return new LogAppender(path, await fs.open(path));
  }

  get broken(): boolean {
    return this.failed;
  }

  async append(records: readonly TrackRecord[], opts: AppendOptions = {}): Promise<number> {
    if (this.failed) throw new VhdsyncError('STATE', `${this.path}: an earlier append failed; reopen the tracking log`);
    try {
      return await this.appendOnce(records, opts);
    } catch (e) {
      this.failed = true;
      throw e;
    }
  }

  private async appendOnce(records: readonly TrackRecord[], opts: AppendOptions): Promise<number> {
    const { path, f } = this;
    const parts = recordParts(records);
    const bytes = parts.reduce((n, p) => n + p.byteLength, 0);
    if (this.size < 0) this.size = await f.size();
    const size = this.size;
    if (opts.adopt && (this.adopted?.pid !== opts.adopt.pid || !bytesEqual(this.adopted.dataWriteId, opts.adopt.dataWriteId))) {
      const hb = new Uint8Array(HEADER_BYTES);
      if ((await f.read(hb, 0)) < HEADER_BYTES) throw new VhdsyncError('TRUNCATED', `${path}: tracking log is shorter than its header`);
      const h = parseHeader(hb, path);
      if (h.endOfLog !== 0) throw new VhdsyncError('STATE', `${path}: the tracking log is sealed; it cannot take more writes`);
      if (h.writerPid !== opts.adopt.pid || !bytesEqual(h.dataWriteId, opts.adopt.dataWriteId)) {
        await f.write(buildHeader({ ...h, writerPid: opts.adopt.pid, dataWriteId: opts.adopt.dataWriteId }), 0);
      }
      this.adopted = opts.adopt;
    }
    // The log exists (tracking is on): the activity log records the extents first.
    await opts.beforeAppend?.();
    const writing = f.writev ? f.writev(parts, size) : f.write(concatBytes(parts), size);
    if (opts.alongside) {
      const [log, other] = await Promise.allSettled([writing, opts.alongside()]);
      if (log.status === 'rejected') throw log.reason;
      this.size = size + bytes;
      if (other.status === 'rejected') throw other.reason;
    } else await writing;
    this.size = size + bytes;
    if (opts.sync !== false) await f.sync();
    return this.size;
  }

  /** Make the appended records durable (fdatasync). */
  sync(): Promise<void> {
    return this.f.sync();
  }

  close(): Promise<void> {
    return this.f.close();
  }
}

/** Make a log's appended records durable (fdatasync); false when there is no log (tracking off). */
export async function syncTrackingLog(path: string, fs: LogFs = nodeLogFs): Promise<boolean> {
  let f;
  try {
    f = await fs.open(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
  try {
    await f.sync();
    return true;
  } finally {
    await f.close();
  }
}

/** Mark the log closed gracefully: end-of-log = its current length, no writer. */
export async function sealTrackingLog(path: string): Promise<TrackHeader> {
  const fh = await open(path, 'r+').catch((e) => {
    throw ioError(path, e);
  });
  try {
    const b = new Uint8Array(HEADER_BYTES);
    await fh.read(b, 0, HEADER_BYTES, 0);
    const h = parseHeader(b, path);
    const { size } = await fh.stat();
    const sealed = { ...h, endOfLog: size, writerPid: 0 };
    await fh.write(buildHeader(sealed), 0, HEADER_BYTES, 0);
    await fh.sync();
    return sealed;
  } finally {
    await fh.close();
  }
}

export interface LogScan {
  header: TrackHeader;
  /** File size. */
  size: number;
  /** Where the last intact record ends. */
  end: number;
  records: number;
  dataBytes: number;
  /** A damaged or incomplete record stopped the scan before the end (or before end-of-log). */
  torn: boolean;
}

/**
 * Stream every intact record in order without holding the log in memory. A torn or damaged tail ends
 * the log (`torn: true`); records past a sealed end-of-log are ignored.
 */
export async function scanTrackingLog(path: string, onRecord?: (r: TrackRecord) => Promise<void> | void): Promise<LogScan> {
  const fh = await open(path, 'r').catch((e) => {
    throw ioError(path, e);
  });
  try {
    const { size } = await fh.stat();
    const hb = new Uint8Array(HEADER_BYTES);
    const { bytesRead } = await fh.read(hb, 0, HEADER_BYTES, 0);
    if (bytesRead < HEADER_BYTES) throw new VhdsyncError('TRUNCATED', `${path}: tracking log is shorter than its header`);
    const header = parseHeader(hb, path);
    // A sealed log must hold exactly end-of-log bytes of intact records; an open one, up to its size.
    let torn = header.endOfLog > 0 && header.endOfLog > size;
    const end = header.endOfLog > 0 ? Math.min(header.endOfLog, size) : size;
    let pos = HEADER_BYTES;
    let records = 0;
    let dataBytes = 0;
    const head = new Uint8Array(RECORD_HEAD);
    const hv = new DataView(head.buffer);
    while (pos < end) {
      if (end - pos < RECORD_HEAD) {
        torn = true;
        break;
      }
      await fh.read(head, 0, RECORD_HEAD, pos);
      const length = hv.getUint32(12, true);
      if (hv.getUint32(0, true) !== REC_MAGIC || length > MAX_RECORD_BYTES || pos + RECORD_HEAD + length > end) {
        torn = true;
        break;
      }
      const offset = getU64(hv, 4);
      const data = new Uint8Array(length);
      await fh.read(data, 0, length, pos + RECORD_HEAD);
      if (recordCrc(offset, data) !== hv.getUint32(16, true)) {
        torn = true;
        break;
      }
      if (onRecord) await onRecord({ offset, data });
      records++;
      dataBytes += length;
      pos += RECORD_HEAD + length;
    }
    return { header, size, end: pos, records, dataBytes, torn };
  } finally {
    await fh.close();
  }
}

/** Read every intact record into memory (small logs; resync's log of writes made during the compare). */
export async function readTrackingLog(path: string): Promise<{ header: TrackHeader; records: TrackRecord[]; torn: boolean }> {
  const records: TrackRecord[] = [];
  const scan = await scanTrackingLog(path, (r) => {
    records.push(r);
  });
  return { header: scan.header, records, torn: scan.torn };
}


function setU64(v: DataView, at: number, n: number): void {
  v.setUint32(at, n % 2 ** 32, true);
  v.setUint32(at + 4, Math.floor(n / 2 ** 32), true);
}

function getU64(v: DataView, at: number): number {
  return v.getUint32(at, true) + v.getUint32(at + 4, true) * 2 ** 32;
}
