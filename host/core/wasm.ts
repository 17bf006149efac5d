/**
 * Instantiation of the WebAssembly core: decoding the inlined bytes, choosing the SIMD or the
 * scalar build, and the memory views that must be re-created when linear memory grows.
 * Browser-safe: no `node:` imports, no fetch, no Buffer.
 */
import { SCALAR_WASM_BASE64, SIMD_WASM_BASE64 } from './generated/wasm-bytes.js';

/** The raw exports of assembly/index.ts. Pointers and lengths are u32; results come back through memory. */
export interface CoreExports {
  readonly memory: WebAssembly.Memory;
  alloc(size: number): number;
  free(ptr: number): void;
  xxh3_128(ptr: number, len: number, out: number): void;
  hashBlocks(ptr: number, len: number, blockSize: number, out: number): void;
  hashTree(ptr: number, count: number, fanout: number, out: number): void;
  zeroBlocks(ptr: number, len: number, blockSize: number, out: number): void;
  diffBlocks(a: number, b: number, len: number, blockSize: number, out: number): void;
  vhdChecksum(ptr: number, len: number, checksumOffset: number): number;
  decodeBat(ptr: number, count: number, out: number): void;
  bitmapCount(ptr: number, first: number, count: number): number;
  bitmapSet(ptr: number, first: number, count: number, value: number): void;
  crc32c(ptr: number, len: number, crc: number): number;
  simd(): number;
}

export interface LoadOptions {
  /**
   * `false` forces the scalar build. `true` or absent picks SIMD when the engine validates it.
   * Without this option, the environment variable VHDSYNC_CORE=scalar (Node) also forces scalar.
   */
  simd?: boolean;
}

export type Build = 'simd' | 'scalar';

/** base64 -> bytes with `atob`, which Node (>= 16) and every browser have. */
function decodeBase64(b64: string): Uint8Array<ArrayBuffer> {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

const bytesCache: Partial<Record<Build, Uint8Array<ArrayBuffer>>> = {};
const moduleCache: Partial<Record<Build, WebAssembly.Module>> = {};

export function wasmBytes(build: Build): Uint8Array<ArrayBuffer> {
  return (bytesCache[build] ??= decodeBase64(build === 'simd' ? SIMD_WASM_BASE64 : SCALAR_WASM_BASE64));
}

function envWantsScalar(): boolean {
  // Read through globalThis so that browsers (no `process`) and bundlers see no Node reference.
  const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  return env?.VHDSYNC_CORE === 'scalar';
}

let simdSupported: boolean | undefined;

/** The build to load: SIMD unless forced off or the engine rejects the SIMD module. */
export function chooseBuild(options: LoadOptions = {}): Build {
  const want = options.simd ?? !envWantsScalar();
  if (!want) return 'scalar';
  simdSupported ??= WebAssembly.validate(wasmBytes('simd'));
  return simdSupported ? 'simd' : 'scalar';
}

/** The compiled module of the build this thread loads, to hand to another thread (a Module can be posted). */
export function compiledModule(options: LoadOptions = {}): { build: Build; module: WebAssembly.Module } {
  const build = chooseBuild(options);
  return { build, module: (moduleCache[build] ??= new WebAssembly.Module(wasmBytes(build))) };
}

/** Use a module compiled by another thread (see compiledModule): no decode, validate or compile here. */
export function adoptCompiledModule(compiled: { build: Build; module: WebAssembly.Module }): void {
  moduleCache[compiled.build] ??= compiled.module;
  if (!envWantsScalar()) simdSupported ??= compiled.build === 'simd';
}

function asExports(instance: WebAssembly.Instance): CoreExports {
  return instance.exports as unknown as CoreExports;
}

/** Synchronous compile + instantiate (fine in Node and workers; the modules are under 10 KB). */
export function instantiateSync(build: Build): CoreExports {
  const module = (moduleCache[build] ??= new WebAssembly.Module(wasmBytes(build)));
  return asExports(new WebAssembly.Instance(module, {}));
}

export async function instantiate(build: Build): Promise<CoreExports> {
  const module = (moduleCache[build] ??= await WebAssembly.compile(wasmBytes(build)));
  return asExports(await WebAssembly.instantiate(module, {}));
}

/**
 * Cached views over linear memory. `memory.grow` detaches the old ArrayBuffer, so every access
 * checks buffer identity and re-creates the views when memory has grown.
 */
export class MemoryViews {
  private buffer: ArrayBuffer;
  private u8v: Uint8Array;

  constructor(private readonly memory: WebAssembly.Memory) {
    this.buffer = memory.buffer;
    this.u8v = new Uint8Array(this.buffer);
  }

  /** All of linear memory as bytes (valid until the next call that may allocate). */
  get u8(): Uint8Array {
    if (this.buffer !== this.memory.buffer) {
      this.buffer = this.memory.buffer;
      this.u8v = new Uint8Array(this.buffer);
    }
    return this.u8v;
  }

  /** `count` native (little-endian) u32 values at the 4-aligned `ptr`. */
  u32(ptr: number, count: number): Uint32Array {
    return new Uint32Array(this.u8.buffer, ptr, count);
  }
}
