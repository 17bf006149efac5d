import { Compressor, type Codec, type PayloadCodec } from '../transport/codec.js';

/**
 * Compressor speed (raw bytes/s, one thread) per level, measured on the reference 2-core machine on
 * the file-server mix (bench/scenarios), WASM zstd and node:zlib deflate. Only the shape matters: the
 * measured speed of the level in use rescales the whole table (a faster machine, native zstd).
 */
const PRIOR_SPEED: Record<Codec, [level: number, bytesPerSecond: number][]> = {
  zstd: [
    [1, 200e6],
    [3, 170e6],
    [6, 85e6],
    [9, 40e6],
  ],
  deflate: [
    [1, 90e6],
    [6, 35e6],
  ],
};
/** A level is chosen only if it compresses this many times faster than the link carries. */
const HEADROOM = 4;
/** Compressions queued at once when the compressor is slower than the link (more go raw). */
const QUEUE_WHEN_SLOWER = 2;
/**
 * ... and when what was sent is backed up downstream (the link, or a replica writing slower than the
 * link): the link does not wait for the compressor then, and raw frames would only cost bytes.
 */
const QUEUE_WHEN_BACKLOGGED = 8;
/** Frames must shrink at least this much to go compressed (else the replica decompresses for nothing). */
const MIN_SAVING = 0.01;
/**
 * A frame whose sampled bytes carry at least this many bits per byte (order-0 entropy) is media, an
 * archive or ciphertext: zstd and deflate gain < 1 % there, so it goes raw without being tried. A
 * frame that mixes such data with anything compressible stays below it and is compressed.
 */
const RAW_ENTROPY_BITS = 7.95;
/** The entropy is estimated from SAMPLE_BYTES of every SAMPLE_STRIDE bytes of a frame (1/16 of it). */
const SAMPLE_BYTES = 4096;
const SAMPLE_STRIDE = 65536;

export interface CompressionStats {
  /** The codec used for data ('none' when compression is off or nothing was negotiated). */
  codec: PayloadCodec;
  framesCompressed: number;
  framesRaw: number;
  /** Frames compressed at each level. */
  levels: Record<number, number>;
  /** Raw bytes through the compressor, and its busy milliseconds (its own thread's time). */
  compressorBytes: number;
  compressorMs: number;
}

/**
 * `--compress`, applied where it pays. The link carries R bytes/s; the compressor does C raw bytes/s on
 * its own core (measured on recent frames). When C ≥ R every frame is compressed, at the highest level
 * still ≥ HEADROOM × R (so slow links get stronger compression). When C < R, compressing every frame
 * would slow the transfer to C: frames go compressed while the compressor keeps up and raw past that,
 * so the link never idles waiting for it — unless what was sent is backed up downstream anyway (a
 * replica writing slower than the link, a loaded machine), where raw frames save no time. With no known rate every frame is compressed at level 1 while
 * the compressor keeps up. A frame that looks incompressible (sampled entropy, looksIncompressible)
 * goes raw at once: decided per frame, so the text between a disk's media files is still compressed.
 */
export class AdaptiveCompression {
  readonly stats: CompressionStats;
  private readonly compressor: Compressor | undefined;
  private readonly codec: Codec | undefined;
  /** Measured speed / prior speed (EWMA), once something was compressed. */
  private scale: number | undefined;

  /** A compressor handed in (warm) stays open for its owner; one made here is closed by close(). */
  private readonly owned: boolean;

  constructor(
    enabled: boolean,
    codecs: Codec[],
    private linkRate: number,
    given?: Compressor,
  ) {
    this.codec = enabled ? codecs[0] : undefined;
    const fits = given !== undefined && given.codec === this.codec;
    this.owned = !fits;
    this.compressor = this.codec ? (fits ? given : new Compressor(this.codec)) : undefined;
    this.stats = { codec: this.codec ?? 'none', framesCompressed: 0, framesRaw: 0, levels: {}, compressorBytes: 0, compressorMs: 0 };
  }

  /** The level for the current link rate and compressor speed. */
  level(): number {
    const table = PRIOR_SPEED[this.codec ?? 'zstd'];
    if (!Number.isFinite(this.linkRate)) return table[0][0];
    const scale = this.scale ?? 1;
    let level = table[0][0];
    for (const [l, speed] of table) if (speed * scale >= HEADROOM * this.linkRate) level = l;
    return level;
  }

  /** Raw bytes/s the compressor is expected to do at `level`. */
  private speedAt(level: number): number {
    const table = PRIOR_SPEED[this.codec ?? 'zstd'];
    return (table.find(([l]) => l === level)?.[1] ?? table[0][1]) * (this.scale ?? 1);
  }

  /** `backlogged`: the sender's window is half full or more (what was sent is not yet written on the replica). */
  async pack(raw: Uint8Array, backlogged = false): Promise<{ payload: Uint8Array; codec: PayloadCodec }> {
    if (!this.compressor || !this.codec) return this.raw(raw);
    if (looksIncompressible(raw)) return this.raw(raw);
    const level = this.level();
    const keepsUp = this.speedAt(level) >= this.linkRate;
    if (!keepsUp && this.compressor.inFlight >= (backlogged ? QUEUE_WHEN_BACKLOGGED : QUEUE_WHEN_SLOWER)) return this.raw(raw);
    const z = await this.compressor.compress(raw, level);
    this.stats.compressorBytes += raw.byteLength;
    this.stats.compressorMs += z.ms;
    const prior = this.speedAt(level) / (this.scale ?? 1);
    const sample = raw.byteLength / Math.max(z.ms / 1000, 1e-6) / prior;
    this.scale = this.scale === undefined ? sample : 0.8 * this.scale + 0.2 * sample;
    if (z.payload.byteLength > raw.byteLength * (1 - MIN_SAVING)) return this.raw(raw);
    this.stats.framesCompressed++;
    this.stats.levels[level] = (this.stats.levels[level] ?? 0) + 1;
    return { payload: z.payload, codec: this.codec };
  }

  close(): void {
    if (this.owned) this.compressor?.close();
  }

  private raw(raw: Uint8Array): { payload: Uint8Array; codec: PayloadCodec } {
    this.stats.framesRaw++;
    return { payload: raw, codec: 'none' };
  }
}

/**
 * Whether a frame of at least SAMPLE_STRIDE bytes looks incompressible: the order-0 entropy of a 1/16
 * sample (~0.1 ms for 1 MiB) at or above RAW_ENTROPY_BITS. Smaller frames are always tried (cheap,
 * and a small sample's estimate is biased low).
 */
export function looksIncompressible(frame: Uint8Array): boolean {
  if (frame.byteLength < SAMPLE_STRIDE) return false;
  const counts = new Uint32Array(256);
  let n = 0;
  for (let at = 0; at < frame.byteLength; at += SAMPLE_STRIDE) {
    const end = Math.min(at + SAMPLE_BYTES, frame.byteLength);
    for (let i = at; i < end; i++) counts[frame[i]]++;
    n += end - at;
  }
  let bits = 0;
  for (const c of counts) {
    if (c === 0) continue;
    const p = c / n;
    bits -= p * Math.log2(p);
  }
  return bits >= RAW_ENTROPY_BITS;
}
