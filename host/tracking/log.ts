import { open, type FileHandle } from 'node:fs/promises';
import { getCore } from '../core/index.js';
import { VhdsyncError, ioError } from '../errors.js';

/**
 * The tracking log: every write made to a primary disk through vhdsync, in order, each record with
 * its own CRC-32C so a torn tail (a crash mid-append) is recognised and cut, never replayed.
 *
 * Layout (little-endian), HRL-like (reference/hyperv-replica.md §2):
 *   header, 512 bytes: magic "VHDSTRK1", version u32 = 1, header size u32 = 512, sequence u64,
 *     data-write id (16 bytes), created ms u64, end-of-log offset u64 (0 while open = not closed
 *     gracefully), header CRC-32C u32 at 508 (over the header with that field zero).
 *   records: magic "TREC", offset u64, length u32, CRC-32C u32 (over offset, length and data), data.
 */
export const TRACK_MAGIC = 'VHDSTRK1';
const HEADER_BYTES = 512;
const RECORD_HEAD = 20;
const REC_MAGIC = 0x43455254; // "TREC" little-endian
/** A single tracked write is bounded so a damaged length can never make a reader allocate wildly. */
export const MAX_RECORD_BYTES = 64 * 1024 * 1024;

export interface TrackHeader {
  version: number;
  sequence: number;
  dataWriteId: Uint8Array;
  createdMs: number;
  endOfLog: number;
}

export interface TrackRecord {
  offset: number;
  data: Uint8Array;
}

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
  v.setUint32(508, getCore().crc32c(b), true);
  return b;
}

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
  if (version !== 1) throw new VhdsyncError('UNSUPPORTED', `${path}: tracking log version ${version} is not supported`);
  return { version, sequence: getU64(v, 16), dataWriteId: b.slice(24, 40), createdMs: getU64(v, 40), endOfLog: getU64(v, 48) };
}

function recordCrc(offset: number, data: Uint8Array): number {
  const head = new Uint8Array(12);
  const v = new DataView(head.buffer);
  setU64(v, 0, offset);
  v.setUint32(8, data.byteLength, true);
  const core = getCore();
  return core.crc32c(data, core.crc32c(head));
}

/** Create a new, open log (end-of-log 0). Fails if the file exists. */
export async function createTrackingLog(path: string, sequence = 1): Promise<void> {
  const id = new Uint8Array(16);
  crypto.getRandomValues(id);
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, 'wx');
    await fh.write(buildHeader({ version: 1, sequence, dataWriteId: id, createdMs: Date.now(), endOfLog: 0 }), 0, HEADER_BYTES, 0);
    await fh.sync();
  } catch (e) {
    throw ioError(path, e);
  } finally {
    await fh?.close();
  }
}

/** Append one write durably (fsync) — before the write itself reaches the disk. */
export async function appendRecord(path: string, offset: number, data: Uint8Array): Promise<void> {
  if (data.byteLength > MAX_RECORD_BYTES) throw new VhdsyncError('USAGE', `a single tracked write is limited to ${MAX_RECORD_BYTES} bytes`);
  const rec = new Uint8Array(RECORD_HEAD + data.byteLength);
  const v = new DataView(rec.buffer);
  v.setUint32(0, REC_MAGIC, true);
  setU64(v, 4, offset);
  v.setUint32(12, data.byteLength, true);
  v.setUint32(16, recordCrc(offset, data), true);
  rec.set(data, RECORD_HEAD);
  let fh: FileHandle | undefined;
  try {
    fh = await open(path, 'a');
    await fh.write(rec);
    await fh.sync();
  } catch (e) {
    throw new VhdsyncError('IO', `${path}: could not append to the tracking log (${(e as Error).message})`, { cause: e });
  } finally {
    await fh?.close();
  }
}

/** Mark the log closed gracefully: end-of-log = its current length. */
export async function sealTrackingLog(path: string): Promise<TrackHeader> {
  const fh = await open(path, 'r+').catch((e) => {
    throw ioError(path, e);
  });
  try {
    const b = new Uint8Array(HEADER_BYTES);
    await fh.read(b, 0, HEADER_BYTES, 0);
    const h = parseHeader(b, path);
    const { size } = await fh.stat();
    const sealed = { ...h, endOfLog: size };
    await fh.write(buildHeader(sealed), 0, HEADER_BYTES, 0);
    await fh.sync();
    return sealed;
  } finally {
    await fh.close();
  }
}

/**
 * Read every intact record. A torn or damaged tail ends the log (`torn: true`); records past
 * a sealed end-of-log are ignored.
 */
export async function readTrackingLog(path: string): Promise<{ header: TrackHeader; records: TrackRecord[]; torn: boolean }> {
  const fh = await open(path, 'r').catch((e) => {
    throw ioError(path, e);
  });
  try {
    const { size } = await fh.stat();
    const hb = new Uint8Array(HEADER_BYTES);
    const { bytesRead } = await fh.read(hb, 0, HEADER_BYTES, 0);
    if (bytesRead < HEADER_BYTES) throw new VhdsyncError('TRUNCATED', `${path}: tracking log is shorter than its header`);
    const header = parseHeader(hb, path);
    const end = header.endOfLog > 0 ? Math.min(header.endOfLog, size) : size;
    const records: TrackRecord[] = [];
    let pos = HEADER_BYTES;
    let torn = false;
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
      records.push({ offset, data });
      pos += RECORD_HEAD + length;
    }
    return { header, records, torn };
  } finally {
    await fh.close();
  }
}

function setU64(v: DataView, at: number, n: number): void {
  v.setUint32(at, n % 2 ** 32, true);
  v.setUint32(at + 4, Math.floor(n / 2 ** 32), true);
}

function getU64(v: DataView, at: number): number {
  return v.getUint32(at, true) + v.getUint32(at + 4, true) * 2 ** 32;
}
