import { parentPort } from 'node:worker_threads';
import { compress, init } from '@bokuweb/zstd-wasm';

/**
 * zstd (WASM) compression on its own thread, so the primary hashes on one core while this one
 * compresses (codec.ts). One request at a time: { id, data, level } → { id, out, ms } or { id, error }.
 */
await init();
parentPort!.on('message', (m: { id: number; data: Uint8Array; level: number }) => {
  try {
    const t0 = performance.now();
    const out = compress(m.data, m.level);
    parentPort!.postMessage({ id: m.id, out, ms: performance.now() - t0 }, [out.buffer as ArrayBuffer]);
  } catch (e) {
    parentPort!.postMessage({ id: m.id, error: (e as Error).message });
  }
});
parentPort!.postMessage({ ready: true });
