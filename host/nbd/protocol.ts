/**
 * The NBD wire protocol, stated once: magics, option and command numbers, flags, error values and the
 * fixed-size structures, with pure encoders/decoders over bytes. Numbers and layouts are those of the
 * NBD protocol document (NetworkBlockDevice/nbd `doc/proto.md`, sections cited as [proto §...]);
 * everything is big-endian ("network byte order").
 */

/** "NBDMAGIC", then "IHAVEOPT" [proto §Newstyle negotiation]. */
export const NBD_MAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
/** Magic of every option reply [proto §Option reply]. */
export const OPT_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server) and client flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const CLIENT_FLAGS_KNOWN = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const ERR = 2 ** 31;
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_PLATFORM: ERR + 4,
  ERR_TLS_REQD: ERR + 5,
  ERR_UNKNOWN: ERR + 6,
  ERR_SHUTDOWN: ERR + 7,
  ERR_BLOCK_SIZE_REQD: ERR + 8,
  ERR_TOO_BIG: ERR + 9,
} as const;

export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Transmission flags [proto §Transmission flags]. */
export const TFLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  CAN_MULTI_CONN: 1 << 8,
} as const;

export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7, RESIZE: 8 } as const;
export const CMD_FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

export const REPLY_FLAG_DONE = 1;
export const REPLY_TYPE = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 2 ** 15 + 1 } as const;

/** base:allocation status bits [proto §base:allocation]. */
export const STATE_HOLE = 1;
export const STATE_ZERO = 2;
export const BASE_ALLOCATION = 'base:allocation';
/** The one metadata context we serve; its id in replies. */
export const BASE_ALLOCATION_ID = 1;

/** Error values of the transmission phase [proto §Error values]. */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Request header: magic u32, flags u16, type u16, cookie u64, offset u64, length u32. */
export const REQUEST_BYTES = 28;
/** Option header: IHAVEOPT u64, option u32, length u32. */
export const OPTION_HEAD_BYTES = 16;
/** An option's data is small (names of up to 4 KiB, a few queries); anything larger is refused unread. */
export const MAX_OPTION_BYTES = 64 * 1024;
export const MAX_NAME_BYTES = 4096;

export interface Request {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}

/** Pure: decode a request header; undefined when the magic is wrong (the connection cannot go on). */
export function parseRequest(b: Uint8Array): Request | undefined {
  const v = view(b);
  if (b.byteLength < REQUEST_BYTES || v.getUint32(0) !== REQUEST_MAGIC) return undefined;
  return {
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    offset: Number(v.getBigUint64(16)),
    length: v.getUint32(24),
  };
}

export function encodeRequest(r: Request): Uint8Array {
  const b = new Uint8Array(REQUEST_BYTES);
  const v = view(b);
  v.setUint32(0, REQUEST_MAGIC);
  v.setUint16(4, r.flags);
  v.setUint16(6, r.type);
  v.setBigUint64(8, r.cookie);
  v.setBigUint64(16, BigInt(r.offset));
  v.setUint32(24, r.length);
  return b;
}

export function simpleReply(cookie: bigint, error: number): Uint8Array {
  const b = new Uint8Array(16);
  const v = view(b);
  v.setUint32(0, SIMPLE_REPLY_MAGIC);
  v.setUint32(4, error);
  v.setBigUint64(8, cookie);
  return b;
}

/** A structured reply chunk's 20-byte header; the payload follows. */
export function chunkHead(cookie: bigint, flags: number, type: number, length: number): Uint8Array {
  const b = new Uint8Array(20);
  const v = view(b);
  v.setUint32(0, STRUCTURED_REPLY_MAGIC);
  v.setUint16(4, flags);
  v.setUint16(6, type);
  v.setBigUint64(8, cookie);
  v.setUint32(16, length);
  return b;
}

/** A whole NBD_REPLY_TYPE_ERROR chunk (always the last one). */
export function errorChunk(cookie: bigint, error: number, message: string): Uint8Array {
  const msg = new TextEncoder().encode(message).subarray(0, 4096);
  const b = new Uint8Array(20 + 6 + msg.byteLength);
  b.set(chunkHead(cookie, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, 6 + msg.byteLength), 0);
  const v = view(b);
  v.setUint32(20, error);
  v.setUint16(24, msg.byteLength);
  b.set(msg, 26);
  return b;
}

/** An option reply: magic, option, reply type, length, data. */
export function optionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(20 + data.byteLength);
  const v = view(b);
  v.setBigUint64(0, OPT_REPLY_MAGIC);
  v.setUint32(8, option);
  v.setUint32(12, type);
  v.setUint32(16, data.byteLength);
  b.set(data, 20);
  return b;
}

/** NBD_OPT_GO / NBD_OPT_INFO data: the export name and the information requests. */
export interface GoRequest {
  name: string;
  infos: number[];
}

/** Pure: decode the data of NBD_OPT_GO / NBD_OPT_INFO; a string saying what is wrong when malformed. */
export function parseGo(b: Uint8Array): GoRequest | string {
  const v = view(b);
  if (b.byteLength < 6) return 'the option is shorter than its name length and request count';
  const nameLen = v.getUint32(0);
  if (nameLen > MAX_NAME_BYTES || 4 + nameLen + 2 > b.byteLength) return `the export name length ${nameLen} does not fit the option`;
  const count = v.getUint16(4 + nameLen);
  if (4 + nameLen + 2 + count * 2 !== b.byteLength) return `the option's length does not match its ${count} information requests`;
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(v.getUint16(4 + nameLen + 2 + i * 2));
  return { name: new TextDecoder().decode(b.subarray(4, 4 + nameLen)), infos };
}

/** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data. */
export interface MetaContextRequest {
  name: string;
  queries: string[];
}

export function parseMetaContext(b: Uint8Array): MetaContextRequest | string {
  const v = view(b);
  if (b.byteLength < 8) return 'the option is shorter than its export name length and query count';
  const nameLen = v.getUint32(0);
  if (nameLen > MAX_NAME_BYTES || 4 + nameLen + 4 > b.byteLength) return `the export name length ${nameLen} does not fit the option`;
  const name = new TextDecoder().decode(b.subarray(4, 4 + nameLen));
  const count = v.getUint32(4 + nameLen);
  const queries: string[] = [];
  let at = 8 + nameLen;
  for (let i = 0; i < count; i++) {
    if (at + 4 > b.byteLength) return `query ${i + 1} of ${count} lies past the end of the option`;
    const len = v.getUint32(at);
    if (len > MAX_NAME_BYTES || at + 4 + len > b.byteLength) return `query ${i + 1} of ${count} lies past the end of the option`;
    queries.push(new TextDecoder().decode(b.subarray(at + 4, at + 4 + len)));
    at += 4 + len;
  }
  if (at !== b.byteLength) return 'the option has bytes after its last query';
  return { name, queries };
}

export function u16(n: number): Uint8Array {
  const b = new Uint8Array(2);
  view(b).setUint16(0, n);
  return b;
}

export function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}
