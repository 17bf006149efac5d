/** Argument checks shared by every backend: one wording for out-of-range and read-only errors. */
import { VhdsyncError } from '../errors.js';

export function checkRange(path: string, virtualSize: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > virtualSize) {
    throw new VhdsyncError(
      'OUT_OF_RANGE',
      `${path}: access at byte ${offset} (+${length}) is outside the disk (virtual size ${virtualSize} bytes)`,
    );
  }
}

export function checkBlockIndex(path: string, blockCount: number, index: number): void {
  if (!Number.isSafeInteger(index) || index < 0 || index >= blockCount) {
    throw new VhdsyncError('OUT_OF_RANGE', `${path}: block ${index} does not exist (the disk has ${blockCount} blocks)`);
  }
}

export function checkWritable(path: string, readOnly: boolean): void {
  if (readOnly) throw new VhdsyncError('READ_ONLY', `${path}: opened read-only; open it writable to change it`);
}

export function checkOpen(path: string, closed: boolean): void {
  if (closed) throw new VhdsyncError('STATE', `${path}: disk is closed`);
}

/** True when every byte is zero. Word-at-a-time where the view is aligned. */
export function isAllZero(data: Uint8Array): boolean {
  let i = 0;
  const n = data.length;
  if ((data.byteOffset & 3) === 0 && n >= 64) {
    const words = new Uint32Array(data.buffer, data.byteOffset, n >>> 2);
    for (let w = 0; w < words.length; w++) if (words[w] !== 0) return false;
    i = words.length << 2;
  }
  for (; i < n; i++) if (data[i] !== 0) return false;
  return true;
}
