import { describe, expect, it } from 'vitest';
import { BufferPool } from '../host/nbd/buffer-pool.js';

describe('BufferPool (one connection’s reused payloads)', () => {
  it('hands a given-back array out again for the same size only', () => {
    const pool = new BufferPool();
    const a = pool.take(65536);
    pool.give(a);
    expect(pool.take(4096)).not.toBe(a);
    expect(pool.take(65536)).toBe(a);
    expect(pool.take(65536)).not.toBe(a); // taken: a fresh one
  });

  it('keeps at most its bound, and never a view into a larger array', () => {
    const pool = new BufferPool(8192);
    const [a, b, c] = [pool.take(4096), pool.take(4096), pool.take(4096)];
    for (const x of [a, b, c]) pool.give(x);
    const again = [pool.take(4096), pool.take(4096), pool.take(4096)];
    expect(again.filter((x) => x === a || x === b || x === c)).toHaveLength(2);
    const big = new Uint8Array(8192);
    pool.give(big.subarray(0, 4096));
    expect(pool.take(4096).buffer).not.toBe(big.buffer);
  });
});
