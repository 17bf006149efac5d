import { appendFile, readFile } from 'node:fs/promises';
import { replaceAtomic } from '../fsutil.js';
import type { Disk } from './disk.js';

/**
 * An undo log: the before-images of byte ranges of a disk, so that writing them back (newest first)
 * gives the disk as it was. Recovery points keep one per applied cycle (replica/recovery-points.ts), a
 * resync with `--keep-pre-resync-point` one for the whole resync (resync/pre-resync-point.ts).
 *
 * A record is [offset u64 LE][length u32 LE][before-image: length bytes]; a log is records end to end.
 */
export const UNDO_RECORD_HEADER = 12;

export interface UndoRecord {
  offset: number;
  data: Uint8Array;
}

/** The record of `length` bytes at `offset` as `disk` holds them now (call before overwriting them). */
export async function undoRecord(disk: Disk, offset: number, length: number): Promise<Uint8Array> {
  const rec = new Uint8Array(UNDO_RECORD_HEADER + length);
  const v = new DataView(rec.buffer);
  v.setBigUint64(0, BigInt(offset), true);
  v.setUint32(8, length, true);
  await disk.read(offset, rec.subarray(UNDO_RECORD_HEADER));
  return rec;
}

/** Write a whole undo log: under a temporary name, then renamed, so it is whole or absent. */
export async function writeUndoLog(path: string, fill: (add: (rec: Uint8Array) => Promise<void>) => Promise<void>): Promise<void> {
  await replaceAtomic(path, async (fh) => {
    await fill(async (rec) => {
      await fh.write(rec);
    });
  });
}

/** Add one record to the end of an undo log. */
export async function appendUndoRecord(path: string, rec: Uint8Array): Promise<void> {
  await appendFile(path, rec);
}

/** The records of an undo log, in the order they were written. A record cut short at the end is kept as far as it goes. */
export function parseUndoLog(bytes: Uint8Array): UndoRecord[] {
  const records: UndoRecord[] = [];
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at + UNDO_RECORD_HEADER <= bytes.length; ) {
    const offset = Number(v.getBigUint64(at, true));
    const length = v.getUint32(at + 8, true);
    records.push({ offset, data: bytes.subarray(at + UNDO_RECORD_HEADER, at + UNDO_RECORD_HEADER + length) });
    at += UNDO_RECORD_HEADER + length;
  }
  return records;
}

/** Write an undo log's before-images back into `disk`, last record first (the oldest before-image of a byte wins). */
export async function undoInto(path: string, disk: Disk): Promise<void> {
  const records = parseUndoLog(new Uint8Array(await readFile(path)));
  for (let i = records.length - 1; i >= 0; i--) await disk.write(records[i].offset, records[i].data);
}
