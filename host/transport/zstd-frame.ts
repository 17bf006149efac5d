import { VhdsyncError } from '../errors.js';

/**
 * The structure of a zstd payload, checked before any decoder sees it ([RFC 8878] 3.1.1): a peer's
 * frame header says how large the output is, and a decoder allocates what it says. A data payload
 * must be exactly one zstd frame, without a dictionary, whose Frame_Content_Size is present and equal
 * to the size the data message declares; its blocks must end exactly where the payload ends. The
 * decoder is then called with that size as its output capacity, so a frame cannot make it write or
 * allocate more, whatever its blocks claim.
 */

const MAGIC = 0xfd2fb528;
/** [RFC 8878] 3.1.1.2: Block_Maximum_Size is at most 128 KiB. */
const BLOCK_MAX = 128 * 1024;

export interface ZstdFrameInfo {
  /** Frame_Content_Size: the decompressed size the frame declares. */
  contentSize: number;
  headerBytes: number;
  blocks: number;
  checksum: boolean;
}

/** Parse and walk one zstd frame that must fill `payload` exactly. Throws PROTOCOL errors. */
export function readZstdFrame(payload: Uint8Array): ZstdFrameInfo {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const need = (n: number, what: string) => {
    if (payload.byteLength < n) throw bad(`${what} past the end of the payload`);
  };
  need(5, 'frame header');
  if (v.getUint32(0, true) !== MAGIC) throw bad('not a zstd frame (bad magic number)');
  const fhd = payload[4];
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd & 0x20) !== 0;
  if (fhd & 0x08) throw bad('reserved bit set in the frame header');
  const checksum = (fhd & 0x04) !== 0;
  if ((fhd & 0x03) !== 0) throw bad('a dictionary is not allowed');
  let at = 5;
  if (!singleSegment) at += 1; // Window_Descriptor
  const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag];
  if (fcsBytes === 0) throw bad('the frame does not declare its content size');
  need(at + fcsBytes, 'frame header');
  let contentSize: number;
  switch (fcsBytes) {
    case 1:
      contentSize = payload[at];
      break;
    case 2:
      contentSize = v.getUint16(at, true) + 256;
      break;
    case 4:
      contentSize = v.getUint32(at, true);
      break;
    default:
      contentSize = v.getUint32(at, true) + v.getUint32(at + 4, true) * 2 ** 32;
  }
  at += fcsBytes;
  const headerBytes = at;
  let blocks = 0;
  for (;;) {
    need(at + 3, 'block header');
    const h = payload[at] | (payload[at + 1] << 8) | (payload[at + 2] << 16);
    at += 3;
    const last = (h & 1) === 1;
    const type = (h >> 1) & 3;
    const size = h >>> 3;
    if (type === 3) throw bad('reserved block type');
    if (size > BLOCK_MAX) throw bad('block larger than 128 KiB');
    at += type === 1 ? 1 : size; // RLE: one byte repeated `size` times
    blocks++;
    if (last) break;
    if (at >= payload.byteLength) throw bad('frame ends without a last block');
  }
  if (checksum) at += 4;
  need(at, 'frame');
  if (at !== payload.byteLength) throw bad('bytes after the frame');
  return { contentSize, headerBytes, blocks, checksum };
}

/**
 * The check a replica makes before decompressing: one frame, declaring exactly `rawLength` bytes.
 * `rawLength` itself was bounded by the caller (the data message's legal maximum).
 */
export function checkZstdPayload(payload: Uint8Array, rawLength: number): void {
  const info = readZstdFrame(payload);
  if (info.contentSize !== rawLength) {
    throw bad(`frame declares ${info.contentSize} bytes but the data message ${rawLength}`);
  }
}

function bad(what: string): VhdsyncError {
  return new VhdsyncError('PROTOCOL', `protocol error: zstd payload: ${what}`);
}
