import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import * as zlib from 'node:zlib';
import { promisify } from 'node:util';
import { VhdsyncError } from '../errors.js';
import type { Codec, PayloadCodec } from './protocol.js';
import { checkZstdPayload } from './zstd-frame.js';

export type { Codec, PayloadCodec };

/**
 * Payload codecs of data messages, and what each end supports. zstd is preferred: at level 1 it
 * compresses disk data 2–3× faster than deflate at level 1, and higher levels are affordable on slow
 * links. deflate (node:zlib) is the fallback every vhdsync speaks. Which codecs a session may use is
 * negotiated in hello/welcome (host/resync): the primary offers its list, the replica answers with
 * the ones it accepts; an older replica answers nothing, which means deflate only.
 *
 * zstd comes from Node's zlib where it has it (Node ≥ 22.15: native, on the libuv thread pool) and
 * otherwise from a WASM build (@bokuweb/zstd-wasm, the same module browsers load), compressing on a
 * worker thread of its own so it runs on a second core.
 */
/** zstd levels used by the adaptive rule (host/resync/compression.ts); past 9 disk data gains < 1 %. */
export const ZSTD_LEVELS = [1, 3, 6, 9] as const;

interface BuiltinZstd {
  zstdCompress(buf: Uint8Array, opts: object, cb: (e: Error | null, out: Buffer) => void): void;
  zstdDecompress(buf: Uint8Array, opts: object, cb: (e: Error | null, out: Buffer) => void): void;
  constants: Record<string, number>;
}
const builtin: BuiltinZstd | undefined = typeof (zlib as unknown as { zstdCompress?: unknown }).zstdCompress === 'function' ? (zlib as unknown as BuiltinZstd) : undefined;

const deflateRawAsync = promisify(zlib.deflateRaw);
const inflateRawAsync = promisify(zlib.inflateRaw);

type Wasm = typeof import('@bokuweb/zstd-wasm');
let wasm: Promise<Wasm | undefined> | undefined;
/**
 * The WASM zstd, loaded once per thread (its init() must run once: a second one re-instantiates the
 * module under calls in progress); undefined where it cannot load.
 */
export function loadWasm(): Promise<Wasm | undefined> {
  // require(), not import(): the CLI bundle runs as a vm.Script (host/cli/code-cache.ts), where
  // import() is refused; the package is CommonJS either way.
  wasm ??= (async () => {
    const m = createRequire(import.meta.url)('@bokuweb/zstd-wasm') as Wasm;
    await m.init();
    return m;
  })().catch(() => undefined);
  return wasm;
}

/** Whether the WASM zstd is installed, without loading it (a resync that compresses nothing never does). */
function wasmInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('@bokuweb/zstd-wasm');
    return true;
  } catch {
    return false;
  }
}

/**
 * The codecs this end supports, preferred first, settled once per thread. `VHDSYNC_CODECS` (a comma
 * list) narrows it, e.g. to `deflate` to rule zstd out on one side (tests use it to play an older peer).
 */
export function localCodecs(): Promise<Codec[]> {
  local ??= (async () => {
    const all: Codec[] = [];
    if (builtin || wasmInstalled()) all.push('zstd');
    all.push('deflate');
    const only = process.env.VHDSYNC_CODECS?.split(',').map((s) => s.trim());
    return only ? all.filter((c) => only.includes(c)) : all;
  })();
  return local;
}
let local: Promise<Codec[]> | undefined;

/** Codecs both ends support, in our order of preference. An absent list (an older peer) means deflate. */
export function commonCodecs(ours: Codec[], theirs: unknown): Codec[] {
  const list = Array.isArray(theirs) ? theirs : ['deflate'];
  return ours.filter((c) => list.includes(c));
}

export interface Packed {
  payload: Uint8Array;
  /** Milliseconds of compressor time (on whichever thread ran it). */
  ms: number;
}

/**
 * Compresses payloads with one codec, off the calling thread: zstd on Node's thread pool or on worker
 * threads of its own (WASM; `threads` of them, each payload to the least busy), deflate on Node's
 * thread pool. `close()` ends the workers.
 */
export class Compressor {
  private workers: { worker: Worker; ready: Promise<void>; busy: number }[] = [];
  private nextId = 1;
  private pending = new Map<number, { resolve: (p: Packed) => void; reject: (e: Error) => void }>();
  private useBuiltin = builtin !== undefined;
  /** Payloads handed to compress() and not yet back. */
  inFlight = 0;

  constructor(
    readonly codec: Codec,
    readonly threads = 1,
  ) {}

  async compress(raw: Uint8Array, level: number): Promise<Packed> {
    this.inFlight++;
    try {
      return await this.run(raw, level);
    } finally {
      this.inFlight--;
    }
  }

  private async run(raw: Uint8Array, level: number): Promise<Packed> {
    const t0 = performance.now();
    if (this.codec === 'deflate') {
      const out = new Uint8Array(await deflateRawAsync(raw, { level: Math.min(level, 9) }));
      return { payload: out, ms: performance.now() - t0 };
    }
    if (this.useBuiltin) {
      const out = await new Promise<Buffer>((resolve, reject) =>
        builtin!.zstdCompress(raw, { params: { [builtin!.constants.ZSTD_c_compressionLevel]: level }, pledgedSrcSize: raw.byteLength }, (e, b) => (e ? reject(e) : resolve(b))),
      );
      try {
        // The replica requires the content size in the frame header (zstd-frame.ts).
        checkZstdPayload(out, raw.byteLength);
        return { payload: new Uint8Array(out.buffer, out.byteOffset, out.byteLength), ms: performance.now() - t0 };
      } catch {
        this.useBuiltin = false;
      }
    }
    return this.inWorker(raw, level);
  }

  /**
   * Start the compressing threads now (WASM zstd: a thread and its module take ~50 ms), so that the
   * first frame does not wait for them: a resync calls this before it connects.
   */
  warm(): this {
    if (this.codec === 'zstd' && !this.useBuiltin && this.workers.length === 0) this.spawnAll();
    return this;
  }

  close(): void {
    for (const w of this.workers) void w.worker.terminate();
    this.workers = [];
    for (const p of this.pending.values()) p.reject(new VhdsyncError('IO', 'the compressor was closed'));
    this.pending.clear();
  }

  private spawnAll(): void {
    for (let i = 0; i < Math.max(1, this.threads); i++) this.workers.push(this.spawn());
  }

  private spawn(): { worker: Worker; ready: Promise<void>; busy: number } {
    const worker = new Worker(ZSTD_WORKER_URL);
    worker.unref();
    const ready = new Promise<void>((resolve, reject) => {
      worker.once('error', (e) => {
        const err = new VhdsyncError('INTERNAL', `zstd compressor failed: ${e.message}`);
        reject(err);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
      });
      worker.on('message', (m: { ready?: boolean; id: number; out?: Uint8Array; ms?: number; error?: string }) => {
        if (m.ready) return resolve();
        const p = this.pending.get(m.id);
        this.pending.delete(m.id);
        if (m.error !== undefined || !m.out) p?.reject(new VhdsyncError('INTERNAL', `zstd compression failed: ${m.error}`));
        else p?.resolve({ payload: m.out, ms: m.ms ?? 0 });
      });
    });
    ready.catch(() => {});
    return { worker, ready, busy: 0 };
  }

  private async inWorker(raw: Uint8Array, level: number): Promise<Packed> {
    if (this.workers.length === 0) this.spawnAll();
    const w = this.workers.reduce((a, b) => (b.busy < a.busy ? b : a));
    w.busy++;
    try {
      await w.ready;
      const id = this.nextId++;
      // A copy is posted (the caller still owns `raw`); structured clone of 1 MiB costs ~0.1 ms.
      return await new Promise<Packed>((resolve, reject) => {
        this.pending.set(id, { resolve, reject });
        w.worker.postMessage({ id, data: raw, level });
      });
    } finally {
      w.busy--;
    }
  }
}

/**
 * Decompress a data payload into exactly `rawLength` bytes, never more: `rawLength` must already be
 * bounded by the caller (the frame's legal maximum), and the payload may not make the decoder
 * allocate past it. Every failure is a PROTOCOL error.
 */
export async function decompressPayload(codec: PayloadCodec, payload: Uint8Array, rawLength: number): Promise<Uint8Array> {
  if (codec === 'none') return payload;
  let out: Uint8Array;
  try {
    if (codec === 'deflate') {
      out = new Uint8Array(await inflateRawAsync(payload, { maxOutputLength: Math.max(1, rawLength) }));
    } else {
      checkZstdPayload(payload, rawLength);
      if (builtin) {
        out = await new Promise<Buffer>((resolve, reject) =>
          builtin!.zstdDecompress(payload, { maxOutputLength: Math.max(1, rawLength) }, (e, b) => (e ? reject(e) : resolve(b))),
        );
      } else {
        const z = await loadWasm();
        if (!z) throw new VhdsyncError('UNSUPPORTED', 'zstd is not available on this replica');
        // The frame declares exactly rawLength (checked above): the decoder's output buffer is that size.
        out = z.decompress(payload, { defaultHeapSize: rawLength });
      }
    }
  } catch (e) {
    if (e instanceof VhdsyncError) throw e;
    throw new VhdsyncError('PROTOCOL', `protocol error: ${codec} payload does not decompress (${(e as Error).message})`);
  }
  if (out.byteLength !== rawLength) throw new VhdsyncError('PROTOCOL', 'protocol error: data length does not match its header');
  return out;
}

const ZSTD_WORKER_URL = (() => {
  // Under the TypeScript sources (tests), run the compiled worker from dist/.
  const here = import.meta.url;
  const base = here.endsWith('.ts') ? here.replace(/\/host\/transport\/[^/]+\.ts$/, '/dist/transport/') : here;
  return new URL('./zstd-worker.js', base);
})();
