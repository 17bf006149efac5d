import { VhdsyncError } from '../errors.js';
import { MAX_FRAME_BYTES } from './link.js';
import { KiB, MiB } from '../units.js';

/**
 * The resync protocol, version 1. A frame is one message: a type byte, then fields in little-endian.
 * Hot messages (digests, data) are binary; rare control messages carry a small JSON body.
 *
 *   P = primary endpoint (drives the compare), R = replica endpoint.
 *   P→R hello      R→P welcome          handshake: parameters, resume point
 *   R→P roots      one root digest per region, streamed ahead as R hashes its disk
 *   P→R credit     R may hash this many more regions ahead (bounds R's memory)
 *   P→R want       digests of these nodes of one tree level of one region, please
 *   R→P digests    the answer, in the order asked
 *   P→R data       payload of differing leaves: raw, deflate or zstd (the codecs negotiated in hello)
 *   P→R end        these regions are complete: R may checkpoint past them
 *   P→R write      one tracked write, applied after the merge
 *   both control   JSON: compare-done, merge, commit, pause, stats, progress, error ...
 *   Data flow: P says in start {ackBytes} how often R acknowledges written data (data-ack); R answers
 *   in started {ackBytes} with what it agreed to. A replica without the field acks every 4 MiB, and P
 *   then keeps its full 32 MiB window (a smaller one would wait forever for an ack).
 *
 *   Round trips (each one is a link's latency twice, paid in full on a slow WAN): nothing that the next
 *   message would confirm anyway is waited for. Every addition is a field an older peer ignores, and
 *   an older peer's silence about it means "do as before":
 *   - hello {start}: a fresh run's start goes with the hello; R takes it only where it is the start P
 *     would send after reading the welcome (no checkpoint, or restart, or a dry run; same virtual and
 *     sector size) and says so in welcome {started: true}, then answers started. Else P sends start.
 *   - start {credit}: R grants that much credit at once (started {credit} echoes it); roots flow
 *     without waiting for a first 'credit'.
 *   - merge follows compare-done at once: R handles them in order and merges only after a complete
 *     compare. The tracked writes and commit wait for merged: R forgets its checkpoint at the commit,
 *     so P must know the merge is done before, or a link lost there would restart the compare.
 *
 * Over the network (tls-link.ts: u32 little-endian length, then the frame; a zero length is a
 * keepalive) a session opens before hello, so that a replica server can check the version and the
 * disk before any disk is touched (host/replica/server.ts):
 *   P→R open       control {version, target: 'NAME/disk.vhd'}. Always the first frame, always this
 *                  JSON shape in every version, so a version mismatch is one clear line either way.
 *                  Two more kinds of session open the same way and make one call each:
 *                  {version, target, call: 'cancel'} drops that disk's unfinished resync;
 *                  {version, site: {vm, vmId, disks}, call, args} is one operation of a VM's replica
 *                  site (host/replica/remote-site.ts, host/replica/site-calls.ts)
 *   R→P queued     control {position}: waiting for a transfer slot (--max-active-transfers)
 *                  A resync's open may carry the hello itself ({hello: {...}}): the server hands it to
 *                  the replica endpoint and says opened {hello: true}, and the welcome follows unasked
 *                  (one round trip for both). An older server ignores the field: P sends hello itself.
 *   R→P opened     control {version}: the replica endpoint answers hello ... commit from here on
 *                  (a call: P sends what it needs — a log's bytes as 'write' frames at their offsets)
 *   R→P result     control {value}: a call's answer, then close
 *   R→P error      control {code, message}, then close: refused (version, path, busy) or failed
 */
export const PROTOCOL_VERSION = 1;

/** Payload codecs (host/transport/codec.ts); which ones a session may use is negotiated in hello/welcome. */
export type Codec = 'zstd' | 'deflate';
export type PayloadCodec = 'none' | Codec;
/** Wire ids (data message byte 5). 0 and 1 are what protocol 1 always had: raw and deflate. */
export const CODEC_IDS: Record<PayloadCodec, number> = { none: 0, deflate: 1, zstd: 2 };
const CODEC_BY_ID = new Map(Object.entries(CODEC_IDS).map(([k, v]) => [v, k as PayloadCodec]));


/**
 * Bounds on every field a peer sends, checked before anything is allocated or computed from it: a peer
 * holding a valid certificate still cannot make us allocate more than a frame's worth, loop, or write
 * past a disk. An honest primary stays far inside them (resync/tree.ts shapes, resync/primary.ts windows).
 */
export const LIMITS = {
  /** Leaf size: a power of two in [min, max] (the range `--leaf` offers). */
  minLeafBytes: 512,
  maxLeafBytes: 4 * MiB,
  /** Region size: a power of two, at least one leaf, at most this; at most maxLeavesPerRegion leaves. */
  maxRegionBytes: 64 * MiB,
  maxLeavesPerRegion: 32 * KiB,
  /** Children per tree node. */
  minFanout: 2,
  maxFanout: 256,
  /** Largest virtual disk (VHDX's own limit, [MS-VHDX] 2.6.2.2: 64 TiB). */
  maxVirtualBytes: 64 * 1024 * 1024 * MiB,
  /** Raw bytes of one data frame (after inflating): at most one region's worth. */
  maxDataRawBytes: 16 * MiB,
  /** Regions the replica may hold digests for ahead of the primary (credit granted, trees kept). */
  maxCreditRegions: 256,
  /** Nodes asked for in one 'want', regions in one 'end'. */
  maxNodesPerWant: 32 * KiB,
  maxRegionsPerEnd: 1024,
  /** Strings in control bodies (names, paths): characters. */
  maxNameChars: 1024,
} as const;

/** The shape of a resync's hash tree, as a peer states it in 'start' (resync/tree.ts TreeShape). */
export interface WireShape {
  virtualSize: number;
  leafSize: number;
  regionSize: number;
  fanout: number;
}

/** A peer's tree shape, every field within LIMITS, or a PROTOCOL error naming the first that is not. */
export function checkShape(shape: unknown): WireShape {
  if (typeof shape !== 'object' || shape === null) throw bad('start: no tree shape');
  const { virtualSize, leafSize, regionSize, fanout } = shape as Record<string, unknown>;
  const pow2 = (n: number) => (n & (n - 1)) === 0;
  if (!isInt(virtualSize, 1, LIMITS.maxVirtualBytes)) throw bad(`start: virtual size ${show(virtualSize)} is out of bounds`);
  if (!isInt(leafSize, LIMITS.minLeafBytes, LIMITS.maxLeafBytes) || !pow2(leafSize)) {
    throw bad(`start: leaf size ${show(leafSize)} is not a power of two from ${LIMITS.minLeafBytes} to ${LIMITS.maxLeafBytes} bytes`);
  }
  if (!isInt(regionSize, leafSize, LIMITS.maxRegionBytes) || !pow2(regionSize) || regionSize / leafSize > LIMITS.maxLeavesPerRegion) {
    throw bad(`start: region size ${show(regionSize)} is out of bounds for leaf size ${leafSize}`);
  }
  if (!isInt(fanout, LIMITS.minFanout, LIMITS.maxFanout)) throw bad(`start: fanout ${show(fanout)} is out of bounds`);
  return { virtualSize, leafSize, regionSize, fanout };
}

/** A string field of a control body, bounded (undefined stays undefined). */
export function checkName(what: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length > LIMITS.maxNameChars) throw bad(`${what} is not a string of at most ${LIMITS.maxNameChars} characters`);
  return value;
}

function isInt(n: unknown, min: number, max: number): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= min && n <= max;
}

function show(v: unknown): string {
  return String(typeof v === 'string' ? JSON.stringify(v.slice(0, 20)) : v).slice(0, 40);
}

export type Message =
  | { t: 'roots'; first: number; digests: Uint8Array }
  | { t: 'credit'; regions: number }
  | { t: 'want'; req: number; region: number; level: number; nodes: Uint32Array }
  | { t: 'digests'; req: number; digests: Uint8Array }
  | { t: 'data'; region: number; codec: PayloadCodec; rawLength: number; leaves: Uint32Array; payload: Uint8Array }
  | { t: 'end'; regions: Uint32Array }
  | { t: 'write'; offset: number; data: Uint8Array }
  | { t: 'control'; op: string; body: Record<string, unknown> };

const T = { roots: 1, credit: 2, want: 3, digests: 4, data: 5, end: 6, write: 7, control: 8 } as const;
const NAMES = Object.fromEntries(Object.entries(T).map(([k, v]) => [v, k])) as Record<number, Message['t']>;

/** The type of a frame without decoding it (undefined for an unknown type). */
export function messageType(frame: Uint8Array): Message['t'] | undefined {
  return NAMES[frame[0]];
}

export function encode(m: Message): Uint8Array {
  switch (m.t) {
    case 'roots':
      return build(T.roots, 4, m.digests, (v) => v.setUint32(1, m.first, true));
    case 'credit':
      return build(T.credit, 4, undefined, (v) => v.setUint32(1, m.regions, true));
    case 'want':
      return build(T.want, 9, u32Bytes(m.nodes), (v) => {
        v.setUint32(1, m.req, true);
        v.setUint32(5, m.region, true);
        v.setUint8(9, m.level);
      }, 1);
    case 'digests':
      return build(T.digests, 4, m.digests, (v) => v.setUint32(1, m.req, true));
    case 'data': {
      const head = 13;
      const out = new Uint8Array(1 + head + m.leaves.length * 4 + m.payload.byteLength);
      const v = new DataView(out.buffer);
      v.setUint8(0, T.data);
      v.setUint32(1, m.region, true);
      v.setUint8(5, CODEC_IDS[m.codec]);
      v.setUint32(6, m.rawLength, true);
      v.setUint32(10, m.leaves.length, true);
      // byte 14.. leaves, then payload
      out.set(u32Bytes(m.leaves), 1 + head);
      out.set(m.payload, 1 + head + m.leaves.length * 4);
      return out;
    }
    case 'end':
      return build(T.end, 0, u32Bytes(m.regions));
    case 'write':
      return build(T.write, 8, m.data, (v) => setU64(v, 1, m.offset));
    case 'control':
      return build(T.control, 0, new TextEncoder().encode(JSON.stringify({ op: m.op, ...m.body })));
  }
}

export function decode(frame: Uint8Array): Message {
  if (frame.byteLength < 1 || frame.byteLength > MAX_FRAME_BYTES) throw bad('frame size out of bounds');
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const need = (n: number) => {
    if (frame.byteLength < n) throw bad('truncated frame');
  };
  switch (frame[0]) {
    case T.roots: {
      need(5);
      const digests = frame.subarray(5);
      if (digests.byteLength % 16 !== 0) throw bad('roots: digest bytes not a multiple of 16');
      return { t: 'roots', first: v.getUint32(1, true), digests };
    }
    case T.credit: {
      need(5);
      const regions = v.getUint32(1, true);
      if (regions > LIMITS.maxCreditRegions) throw bad(`credit of ${regions} regions exceeds ${LIMITS.maxCreditRegions}`);
      return { t: 'credit', regions };
    }
    case T.want: {
      need(11);
      if ((frame.byteLength - 11) / 4 > LIMITS.maxNodesPerWant) throw bad(`want of more than ${LIMITS.maxNodesPerWant} nodes`);
      return { t: 'want', req: v.getUint32(1, true), region: v.getUint32(5, true), level: v.getUint8(9), nodes: readU32s(frame, 11) };
    }
    case T.digests: {
      need(5);
      const digests = frame.subarray(5);
      if (digests.byteLength % 16 !== 0) throw bad('digests: bytes not a multiple of 16');
      return { t: 'digests', req: v.getUint32(1, true), digests };
    }
    case T.data: {
      need(14);
      const count = v.getUint32(10, true);
      const rawLength = v.getUint32(6, true);
      // Before anything is inflated or allocated: [count] leaves of at least minLeafBytes each.
      if (rawLength > LIMITS.maxDataRawBytes) throw bad(`data of ${rawLength} bytes exceeds ${LIMITS.maxDataRawBytes}`);
      if (count > LIMITS.maxLeavesPerRegion) throw bad(`data of ${count} leaves exceeds ${LIMITS.maxLeavesPerRegion}`);
      const leavesEnd = 14 + count * 4;
      if (leavesEnd > frame.byteLength) throw bad('data: leaf list past end of frame');
      const leaves = readU32s(frame.subarray(0, leavesEnd), 14);
      const codec = CODEC_BY_ID.get(v.getUint8(5));
      if (codec === undefined) throw bad(`data: unknown payload codec ${v.getUint8(5)}`);
      return {
        t: 'data',
        region: v.getUint32(1, true),
        codec,
        rawLength,
        leaves,
        payload: frame.subarray(leavesEnd),
      };
    }
    case T.end:
      if ((frame.byteLength - 1) / 4 > LIMITS.maxRegionsPerEnd) throw bad(`end of more than ${LIMITS.maxRegionsPerEnd} regions`);
      return { t: 'end', regions: readU32s(frame, 1) };
    case T.write:
      need(9);
      return { t: 'write', offset: getU64(v, 1), data: frame.subarray(9) };
    case T.control: {
      let body: unknown;
      try {
        body = JSON.parse(new TextDecoder().decode(frame.subarray(1)));
      } catch {
        throw bad('control: body is not JSON');
      }
      if (typeof body !== 'object' || body === null || typeof (body as { op?: unknown }).op !== 'string') throw bad('control: no op');
      const { op, ...rest } = body as { op: string };
      return { t: 'control', op, body: rest };
    }
    default:
      throw bad(`unknown message type ${frame[0]}`);
  }
}

function bad(what: string): VhdsyncError {
  return new VhdsyncError('PROTOCOL', `protocol error: ${what}`);
}

function build(type: number, head: number, tail: Uint8Array | undefined, fill?: (v: DataView) => void, pad = 0): Uint8Array {
  const start = 1 + head + pad;
  const out = new Uint8Array(start + (tail?.byteLength ?? 0));
  out[0] = type;
  fill?.(new DataView(out.buffer));
  if (tail) out.set(tail, start);
  return out;
}

function u32Bytes(a: Uint32Array): Uint8Array {
  const out = new Uint8Array(a.length * 4);
  const v = new DataView(out.buffer);
  for (let i = 0; i < a.length; i++) v.setUint32(i * 4, a[i], true);
  return out;
}

function readU32s(frame: Uint8Array, at: number): Uint32Array {
  const bytes = frame.byteLength - at;
  if (bytes < 0 || bytes % 4 !== 0) throw bad('u32 list has a ragged length');
  const v = new DataView(frame.buffer, frame.byteOffset + at, bytes);
  const out = new Uint32Array(bytes / 4);
  for (let i = 0; i < out.length; i++) out[i] = v.getUint32(i * 4, true);
  return out;
}

function setU64(v: DataView, at: number, n: number): void {
  v.setUint32(at, n % 2 ** 32, true);
  v.setUint32(at + 4, Math.floor(n / 2 ** 32), true);
}

function getU64(v: DataView, at: number): number {
  const n = v.getUint32(at, true) + v.getUint32(at + 4, true) * 2 ** 32;
  if (!Number.isSafeInteger(n)) throw bad('64-bit offset out of range');
  return n;
}
