/**
 * The VHDX metadata log ([MS-VHDX] 2.3): a circular buffer of 4 KiB sectors holding entries (header,
 * 32-byte `desc`/`zero` descriptors, `data` sectors), each sealed with a CRC-32C over the whole entry and
 * tagged with the header's LogGuid. A non-zero LogGuid means an active sequence may have to be replayed
 * before the image is read.
 *
 * Reading: the active sequence is the run of valid, consecutively numbered entries whose head has the
 * highest sequence number (qemu `vhdx_log_search`); when the head's Tail points at an entry of the run,
 * the run starts there ([MS-VHDX] 2.3.3). qemu writes a stale Tail after its first entry of a session,
 * so a Tail outside the run is tolerated — replaying already-applied entries in order is harmless.
 *
 * Writing: every metadata change (BAT pages, sector bitmap pages) goes through the log in cycles, as qemu
 * does: data made durable, a fresh LogGuid in the header, one entry at the start of the log, sync, the
 * pages written in place, sync, the LogGuid cleared. A crash at any point leaves either the old metadata
 * or a log that any VHDX reader replays to the new metadata.
 */
import { VhdsyncError } from '../../errors.js';
import { formatSize } from '../../units.js';
import type { ImageFile } from '../file-io.js';
import { HEADER_SECTION_SIZE } from './header.js';
import {
  crcWithZeroField, guidEqual, le32, le64, le64Big, putLe32, putLe64, putLe64Big, putSignature, randomGuid, sealCrc, signature,
} from './le.js';
import type { Extent } from './region.js';

export const LOG_SECTOR = 4096;
const ENTRY_HEADER_SIZE = 64;
const DESCRIPTOR_SIZE = 32;
/** A log larger than this is not read into memory (Hyper-V and qemu use 1 MiB). */
export const MAX_LOG_LENGTH = 64 * 1024 * 1024;

export type LogWrite =
  /** 4 KiB of file content at a 4 KiB-aligned offset. */
  | { kind: 'data'; offset: number; data: Uint8Array }
  /** `length` zero bytes (a multiple of 4 KiB) at a 4 KiB-aligned offset. */
  | { kind: 'zero'; offset: number; length: number };

export interface LogEntry {
  /** Byte offset of the entry in the log. */
  at: number;
  sectors: number;
  sequenceNumber: bigint;
  tail: number;
  flushedFileOffset: number;
  lastFileOffset: number;
  writes: LogWrite[];
}

/** Sectors taken by the entry header and `count` descriptors (qemu `vhdx_compute_desc_sectors`). */
export function descriptorSectors(count: number): number {
  return Math.ceil((count + 2) / 128);
}

/**
 * Decode and check the entry whose bytes are `b` (exactly EntryLength long, already unwrapped from the
 * circular buffer). Returns null for anything that is not a valid entry of log `logGuid`.
 */
export function parseEntry(b: Uint8Array, logGuid: Uint8Array, at: number): LogEntry | null {
  const h = checkEntryHeader(b, logGuid, b.length);
  if (!h) return null;
  if (h.entryLength !== b.length) return null;
  if (le32(b, 4) !== crcWithZeroField(b)) return null;
  const seq = le64Big(b, 16);
  const writes: LogWrite[] = [];
  let dataSector = descriptorSectors(h.count);
  for (let i = 0; i < h.count; i++) {
    const d = ENTRY_HEADER_SIZE + i * DESCRIPTOR_SIZE;
    const sig = signature(b, d, 4);
    const fileOffset = le64(b, d + 16);
    if (le64Big(b, d + 24) !== seq || fileOffset % LOG_SECTOR !== 0 || !Number.isSafeInteger(fileOffset)) return null;
    if (sig === 'zero') {
      const length = le64(b, d + 8);
      if (length % LOG_SECTOR !== 0 || !Number.isSafeInteger(length)) return null;
      writes.push({ kind: 'zero', offset: fileOffset, length });
    } else if (sig === 'desc') {
      const s = dataSector * LOG_SECTOR;
      if (s + LOG_SECTOR > b.length) return null;
      if (signature(b, s, 4) !== 'data') return null;
      const dataSeq = (BigInt(le32(b, s + 4)) << 32n) | BigInt(le32(b, s + 4092));
      if (dataSeq !== seq) return null;
      const data = new Uint8Array(LOG_SECTOR);
      data.set(b.subarray(d + 8, d + 16), 0); // leading bytes
      data.set(b.subarray(s + 8, s + 4092), 8);
      data.set(b.subarray(d + 4, d + 8), 4092); // trailing bytes
      writes.push({ kind: 'data', offset: fileOffset, data });
      dataSector++;
    } else {
      return null;
    }
  }
  return {
    at,
    sectors: b.length / LOG_SECTOR,
    sequenceNumber: seq,
    tail: h.tail,
    flushedFileOffset: le64(b, 48),
    lastFileOffset: le64(b, 56),
    writes,
  };
}

/** The cheap checks on an entry's first sector, before its whole length is read and summed. */
function checkEntryHeader(b: Uint8Array, logGuid: Uint8Array, logLength: number): { entryLength: number; tail: number; count: number } | null {
  if (b.length < LOG_SECTOR || signature(b, 0, 4) !== 'loge') return null;
  const entryLength = le32(b, 8);
  const count = le32(b, 24);
  if (entryLength === 0 || entryLength % LOG_SECTOR !== 0 || entryLength > logLength) return null;
  if (le64Big(b, 16) === 0n || !guidEqual(b, 32, logGuid)) return null;
  if (descriptorSectors(count) * LOG_SECTOR > entryLength) return null;
  return { entryLength, tail: le32(b, 12), count };
}

/**
 * Find the active sequence in the whole log `log` (LogLength bytes). Returns its entries oldest first,
 * or an empty list when nothing is to be replayed.
 */
export function findActiveSequence(log: Uint8Array, logGuid: Uint8Array): LogEntry[] {
  const n = Math.floor(log.length / LOG_SECTOR);
  const memo = new Map<number, LogEntry | null>();
  const entryAt = (sector: number): LogEntry | null => {
    if (memo.has(sector)) return memo.get(sector)!;
    let found: LogEntry | null = null;
    const first = log.subarray(sector * LOG_SECTOR, (sector + 1) * LOG_SECTOR);
    const h = checkEntryHeader(first, logGuid, log.length);
    if (h) found = parseEntry(unwrap(log, sector * LOG_SECTOR, h.entryLength), logGuid, sector * LOG_SECTOR);
    memo.set(sector, found);
    return found;
  };
  let best: LogEntry[] = [];
  for (let s = 0; s < n; s++) {
    const e = entryAt(s);
    if (!e) continue;
    const run = [e];
    let used = e.sectors;
    let pos = (s + e.sectors) % n;
    while (used < n) {
      const next = entryAt(pos);
      if (!next || next.sequenceNumber !== run[run.length - 1].sequenceNumber + 1n || used + next.sectors > n) break;
      run.push(next);
      used += next.sectors;
      pos = (pos + next.sectors) % n;
    }
    const head = run[run.length - 1].sequenceNumber;
    const bestHead = best.length ? best[best.length - 1].sequenceNumber : -1n;
    if (head > bestHead || (head === bestHead && run.length > best.length)) best = run;
  }
  if (best.length > 1) {
    const tail = best[best.length - 1].tail;
    const from = best.findIndex((e) => e.at === tail);
    if (from > 0) best = best.slice(from);
  }
  return best;
}

function unwrap(log: Uint8Array, at: number, length: number): Uint8Array {
  if (at + length <= log.length) return log.subarray(at, at + length);
  const out = new Uint8Array(length);
  const first = log.length - at;
  out.set(log.subarray(at), 0);
  out.set(log.subarray(0, length - first), first);
  return out;
}

export interface ReplayPlan {
  writes: LogWrite[];
  /** The file must be at least this long for the log to apply (else it was truncated). */
  flushedFileOffset: number;
  /** The file is extended to this size by the replay. */
  lastFileOffset: number;
  entries: number;
}

/**
 * Turn an active sequence into the writes to apply, refusing a log that would write into the header
 * section or the log itself, or far past the end of the file.
 */
export function replayPlan(entries: LogEntry[], fileSize: number, log: Extent, path: string): ReplayPlan {
  const head = entries[entries.length - 1];
  if (fileSize < head.flushedFileOffset) {
    throw new VhdsyncError(
      'TRUNCATED',
      `${path}: the VHDX log needs a file of at least ${head.flushedFileOffset} bytes but the file has ${fileSize}; the image was truncated`,
    );
  }
  const limit = Math.max(fileSize, ...entries.map((e) => e.lastFileOffset));
  const writes: LogWrite[] = [];
  for (const e of entries) {
    for (const w of e.writes) {
      const len = w.kind === 'data' ? LOG_SECTOR : w.length;
      const end = w.offset + len;
      if (w.offset < HEADER_SECTION_SIZE || (w.offset < log.offset + log.length && log.offset < end)) {
        throw new VhdsyncError('BAD_CHECKSUM', `${path}: the VHDX log would overwrite the ${w.offset < HEADER_SECTION_SIZE ? 'header section' : 'log'} (at ${w.offset}); the log is corrupt`);
      }
      if (end > limit) {
        throw new VhdsyncError('BAD_SIZE', `${path}: the VHDX log writes up to ${formatSize(end)}, past the ${formatSize(limit)} file; the log is corrupt`);
      }
      writes.push(w);
    }
  }
  return { writes, flushedFileOffset: head.flushedFileOffset, lastFileOffset: Math.max(...entries.map((e) => e.lastFileOffset)), entries: entries.length };
}

/**
 * A replay never writes or extends the file past `maxFileSize`, the largest file the image's own
 * structures describe (image.ts): an entry with a valid CRC but a 1 TiB zero descriptor or a
 * LastFileOffset of 2 TiB would otherwise write until the disk is full.
 */
export function checkReplayBound(plan: ReplayPlan, maxFileSize: number, path: string): void {
  let end = plan.lastFileOffset;
  for (const w of plan.writes) end = Math.max(end, w.offset + (w.kind === 'data' ? LOG_SECTOR : w.length));
  if (end > maxFileSize) {
    throw new VhdsyncError('BAD_SIZE', `${path}: the VHDX log would grow the file to ${formatSize(end)}, past the ${formatSize(maxFileSize)} its structures can hold; the log is corrupt`);
  }
}

/** Apply a replay plan to the file and make it durable. */
export async function applyPlan(file: ImageFile, plan: ReplayPlan, fileSize: number): Promise<number> {
  const zeros = new Uint8Array(1024 * 1024);
  for (const w of plan.writes) {
    if (w.kind === 'data') {
      await file.writeAt(w.data, w.offset);
    } else {
      for (let done = 0; done < w.length; done += zeros.length) {
        await file.writeAt(zeros.subarray(0, Math.min(zeros.length, w.length - done)), w.offset + done);
      }
    }
  }
  let size = Math.max(fileSize, ...plan.writes.map((w) => w.offset + (w.kind === 'data' ? LOG_SECTOR : w.length)));
  if (size < plan.lastFileOffset) {
    await file.truncate(plan.lastFileOffset);
    size = plan.lastFileOffset;
  }
  await file.sync();
  return size;
}

/**
 * A read-only view of a file with a replay plan laid over it (for an image opened read-only whose log
 * is not empty: qemu refuses those, we read through the replayed bytes).
 */
export class ReplayedView {
  /** Logical size of the replayed file. */
  readonly size: number;

  constructor(
    private readonly plan: ReplayPlan,
    fileSize: number,
  ) {
    const written = plan.writes.map((w) => w.offset + (w.kind === 'data' ? LOG_SECTOR : w.length));
    this.size = Math.max(fileSize, plan.lastFileOffset, ...written);
  }

  /** Patch `into`, which holds the file's bytes at `position`, with the log's writes (in log order). */
  patch(into: Uint8Array, position: number): void {
    const end = position + into.length;
    for (const w of this.plan.writes) {
      const len = w.kind === 'data' ? LOG_SECTOR : w.length;
      const from = Math.max(position, w.offset);
      const to = Math.min(end, w.offset + len);
      if (from >= to) continue;
      if (w.kind === 'data') into.set(w.data.subarray(from - w.offset, to - w.offset), from - position);
      else into.fill(0, from - position, to - position);
    }
  }
}

export interface LogEntrySpec {
  sequenceNumber: bigint;
  logGuid: Uint8Array;
  /** Byte offset in the log of the first entry of the sequence (this one, for a one-entry sequence). */
  tail: number;
  flushedFileOffset: number;
  lastFileOffset: number;
  writes: LogWrite[];
}

/** The bytes of one log entry. */
export function buildEntry(spec: LogEntrySpec): Uint8Array {
  const count = spec.writes.length;
  const descSectors = descriptorSectors(count);
  const dataCount = spec.writes.filter((w) => w.kind === 'data').length;
  const b = new Uint8Array((descSectors + dataCount) * LOG_SECTOR);
  putSignature(b, 0, 'loge');
  putLe32(b, 8, b.length);
  putLe32(b, 12, spec.tail);
  putLe64Big(b, 16, spec.sequenceNumber);
  putLe32(b, 24, count);
  b.set(spec.logGuid, 32);
  putLe64(b, 48, spec.flushedFileOffset);
  putLe64(b, 56, spec.lastFileOffset);
  let dataSector = descSectors;
  spec.writes.forEach((w, i) => {
    const d = ENTRY_HEADER_SIZE + i * DESCRIPTOR_SIZE;
    putLe64(b, d + 16, w.offset);
    putLe64Big(b, d + 24, spec.sequenceNumber);
    if (w.kind === 'zero') {
      putSignature(b, d, 'zero');
      putLe64(b, d + 8, w.length);
      return;
    }
    putSignature(b, d, 'desc');
    b.set(w.data.subarray(4092, 4096), d + 4); // trailing bytes
    b.set(w.data.subarray(0, 8), d + 8); // leading bytes
    const s = dataSector * LOG_SECTOR;
    putSignature(b, s, 'data');
    putLe32(b, s + 4, Number(spec.sequenceNumber >> 32n));
    b.set(w.data.subarray(8, 4092), s + 8);
    putLe32(b, s + 4092, Number(spec.sequenceNumber & 0xffffffffn));
    dataSector++;
  });
  sealCrc(b);
  return b;
}

/** How many 4 KiB data writes fit one entry in a log of `logLength` bytes (one sector stays open, as qemu keeps it). */
export function pagesPerEntry(logLength: number): number {
  const sectors = logLength / LOG_SECTOR - 1;
  let n = Math.max(0, sectors - 1);
  while (n > 0 && descriptorSectors(n) + n > sectors) n--;
  return n;
}

/** What the log writer needs from the image: its file, its log, and header updates. */
export interface LogTarget {
  readonly file: ImageFile;
  readonly log: Extent;
  /** Write the non-current header with this LogGuid (zero to mark the log empty) and make it durable. */
  setLogGuid(guid: Uint8Array): Promise<void>;
  /** Current length of the file (every allocated block included). */
  fileSize(): number;
  /** Next sequence number to use (increasing within the image's lifetime of this open). */
  nextSequence(): bigint;
  /** Called between two durable steps of a commit (crash tests kill there). */
  onStep?: (step: string) => Promise<void> | void;
}

const ZERO_GUID = new Uint8Array(16);

/**
 * Write 4 KiB metadata pages through the log, in as many cycles as the log needs. The caller has made the
 * data these pages point at durable.
 */
export async function commitThroughLog(t: LogTarget, pages: Array<{ offset: number; data: Uint8Array }>): Promise<void> {
  const per = pagesPerEntry(t.log.length);
  if (per === 0) throw new VhdsyncError('UNSUPPORTED', `${t.file.path}: the VHDX log is too small to hold a metadata update`);
  for (let from = 0; from < pages.length; from += per) {
    const batch = pages.slice(from, from + per);
    const guid = randomGuid();
    await t.setLogGuid(guid);
    const size = t.fileSize();
    const entry = buildEntry({
      sequenceNumber: t.nextSequence(),
      logGuid: guid,
      tail: 0,
      flushedFileOffset: size,
      lastFileOffset: size,
      writes: batch.map((p) => ({ kind: 'data' as const, offset: p.offset, data: p.data })),
    });
    await t.file.writeAt(entry, t.log.offset);
    await t.file.sync();
    await t.onStep?.('log entry');
    for (const p of batch) await t.file.writeAt(p.data, p.offset);
    await t.file.sync();
    await t.onStep?.('pages in place');
    await t.setLogGuid(ZERO_GUID);
  }
}
