import { MiB } from '../units.js';

/**
 * Request payloads and read replies of one connection, reused instead of allocated per request. A
 * fresh 64 KiB array per request is zero-filled, and its memory outside V8's heap is what sets off
 * its full collections: at a queue-depth client's pace, a collection every few megabytes written.
 * Kept per connection, so a reused array never carries one client's data to another; bounded, so a
 * burst of large requests is not held afterwards.
 */
export class BufferPool {
  private readonly free = new Map<number, Uint8Array[]>();
  private kept = 0;

  constructor(private readonly maxBytes = 8 * MiB) {}

  /** An array of exactly `n` bytes; its content is whatever it held before. */
  take(n: number): Uint8Array {
    const b = this.free.get(n)?.pop();
    if (!b) return new Uint8Array(n);
    this.kept -= n;
    return b;
  }

  /** `b` is no longer referenced by anyone: a later `take` may hand it out again. */
  give(b: Uint8Array): void {
    const n = b.byteLength;
    if (n === 0 || this.kept + n > this.maxBytes || b.byteOffset !== 0 || b.buffer.byteLength !== n) return;
    let list = this.free.get(n);
    if (!list) this.free.set(n, (list = []));
    list.push(b);
    this.kept += n;
  }
}
