import { describe, it, expect } from 'vitest';
import { encode, decode, type Message } from '../host/transport/protocol.js';
import { createMemoryLink, MemoryLink } from '../host/transport/memory-link.js';
import { parseRate } from '../host/transport/rate.js';

describe('protocol', () => {
  const samples: Message[] = [
    { t: 'roots', first: 7, digests: new Uint8Array(48).fill(3) },
    { t: 'credit', regions: 64 },
    { t: 'want', req: 9, region: 4_000_000_000, level: 2, nodes: Uint32Array.from([0, 5, 15]) },
    { t: 'digests', req: 9, digests: new Uint8Array(32).fill(1) },
    { t: 'data', region: 3, codec: 'zstd', rawLength: 8192, leaves: Uint32Array.from([1, 2]), payload: new Uint8Array([1, 2, 3]) },
    { t: 'end', regions: Uint32Array.from([1, 2, 3]) },
    { t: 'write', offset: 2 ** 40 + 512, data: new Uint8Array([9, 9]) },
    { t: 'control', op: 'hello', body: { version: 1, x: 'y' } },
  ];
  it.each(samples.map((m) => [m.t, m] as const))('%s round-trips', (_, m) => {
    expect(decode(encode(m))).toEqual(m);
  });

  it('rejects malformed frames with a protocol error, never a crash', () => {
    const bad = [new Uint8Array(0), new Uint8Array([99]), new Uint8Array([1, 0, 0]), new Uint8Array([4, 0, 0, 0, 0, 1]), new Uint8Array([8, 123]), new Uint8Array([5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255])];
    for (const f of bad) expect(() => decode(f)).toThrow(/protocol error/);
  });
});

describe('memory link', () => {
  it('delivers in order and simulates the rate and latency', async () => {
    const { local, remotePort } = createMemoryLink({ rate: 10e6, latencyMs: 20 });
    const remote = new MemoryLink(remotePort, { rate: 10e6, latencyMs: 20 });
    const got: number[] = [];
    const all = new Promise<void>((resolve) =>
      remote.onFrame((f) => {
        got.push(f[0]);
        if (got.length === 10) resolve();
      }),
    );
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) await local.send(new Uint8Array(100_000).fill(i));
    await all;
    const ms = performance.now() - t0;
    expect(got).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // 1,000,040 bytes at 10 MB/s = 100 ms, plus 20 ms latency
    expect(ms).toBeGreaterThanOrEqual(115);
    expect(local.stats.bytesSent).toBe(10 * 100_004);
    expect(remote.stats.bytesReceived).toBe(10 * 100_004);
    local.close();
    remote.close();
  });

  it('parses link rates', () => {
    expect(parseRate('1gbps')).toBe(125e6);
    expect(parseRate('1.5mbps')).toBe(187_500);
    expect(parseRate('10mbit')).toBe(1.25e6);
    expect(parseRate('10MB/s')).toBe(10e6);
    expect(parseRate('125000')).toBe(125000);
    expect(parseRate('unlimited')).toBe(Infinity);
    expect(() => parseRate('fast')).toThrow(/not a rate/);
  });
});
