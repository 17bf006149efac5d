import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { resync } from '../host/index.js';
import { Channel } from '../host/resync/channel.js';
import { ReplicaEndpoint } from '../host/resync/replica.js';
import { makeShape } from '../host/resync/tree.js';
import { commonCodecs, decompressPayload, loadWasm, localCodecs } from '../host/transport/codec.js';
import { AdaptiveCompression, looksIncompressible } from '../host/resync/compression.js';
import { createMemoryLink, MemoryLink } from '../host/transport/memory-link.js';
import { loadTlsMaterial } from '../host/transport/tls-config.js';
import { PROTOCOL_VERSION } from '../host/transport/protocol.js';
import { readZstdFrame } from '../host/transport/zstd-frame.js';
import { VhdsyncError } from '../host/errors.js';
import { randomBytes } from './support/bytes.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { serverFixture, type ServerFixture } from './support/replica-server.js';
import { tempDir } from './support/temp-dir.js';
import { KiB, MiB } from '../host/units.js';

let dir: string;
let cleanup: () => void;
let net: ServerFixture | undefined;
let zstdCompress: (data: Uint8Array, level: number) => Uint8Array;
beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-zstd-'));
  zstdCompress = (await loadWasm())!.compress;
});
afterAll(async () => {
  await net?.close();
  await cleanup();
});

/** Text-like, compressible bytes (a disk's documents and logs), seeded. */
function textBytes(length: number, seed: number): Uint8Array {
  const words = ['replica', 'primary', 'resync', 'block', 'sector', 'the', 'a', 'disk', 'log', 'write', 'of', 'and'];
  const out = new Uint8Array(length);
  let s = seed >>> 0;
  let at = 0;
  while (at < length) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const w = words[s % words.length] + (s & 0x100 ? '\n' : ' ');
    for (let i = 0; i < w.length && at < length; i++) out[at++] = w.charCodeAt(i);
  }
  return out;
}

/** A primary with compressible and incompressible changes over `size`, and its replica before them. */
async function pair(name: string, size: number, where = dir): Promise<{ primary: string; replica: string }> {
  const writes: [number, Uint8Array][] = [];
  for (let i = 0; i < 24; i++) writes.push([Math.floor(size / 24 / MiB) * MiB * i, i % 4 === 3 ? randomBytes(256 * KiB, i) : textBytes(256 * KiB, i)]);
  const primary = await rawImage(join(dir, `${name}-p.img`), size, writes);
  const replica = await rawImage(join(where, `${name}-r.img`), size);
  return { primary, replica };
}

/** A zstd frame: magic, single-segment descriptor with a 4-byte content size, then the given blocks. */
function craftedFrame(contentSize: number, blocks: Uint8Array[]): Uint8Array {
  const head = new Uint8Array(9);
  const v = new DataView(head.buffer);
  v.setUint32(0, 0xfd2fb528, true);
  head[4] = 0xa0; // FCS field 4 bytes, single segment
  v.setUint32(5, contentSize, true);
  const parts = [head, ...blocks];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), (at += p.byteLength));
  return out;
}

/** One RLE block ([RFC 8878] 3.1.1.2): `size` copies of one byte, 4 bytes on the wire. */
function rleBlock(size: number, last: boolean): Uint8Array {
  const h = (last ? 1 : 0) | (1 << 1) | (size << 3);
  return Uint8Array.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff, 0x41]);
}

async function expectProtocol(p: Promise<unknown>, message: RegExp): Promise<void> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(VhdsyncError);
  expect((e as VhdsyncError).code).toBe('PROTOCOL');
  expect((e as VhdsyncError).message).toMatch(message);
}

describe('zstd frames are checked before any decoder sees them', () => {
  it('reads the content size of frames the compressor makes, and refuses frames that do not declare it exactly', async () => {
    const data = textBytes(MiB, 7);
    const z = zstdCompress(data, 3);
    expect(readZstdFrame(z).contentSize).toBe(MiB);
    expect(Buffer.compare(await decompressPayload('zstd', z, MiB), data)).toBe(0);
    await expectProtocol(decompressPayload('zstd', z, MiB - 1), /declares 1048576 bytes but the data message 1048575/);
    // Two frames back to back, trailing bytes, a truncated frame, not zstd at all.
    const two = new Uint8Array(z.byteLength * 2);
    two.set(z);
    two.set(z, z.byteLength);
    await expectProtocol(decompressPayload('zstd', two, MiB), /bytes after the frame/);
    await expectProtocol(decompressPayload('zstd', z.subarray(0, z.byteLength - 9), MiB), /past the end|without a last block/);
    await expectProtocol(decompressPayload('zstd', data.subarray(0, 64), MiB), /bad magic/);
  });

  it('a crafted frame claiming 4 GiB is refused before anything is allocated', async () => {
    const frame = craftedFrame(0xffffffff, [rleBlock(128 * KiB, true)]);
    expect(readZstdFrame(frame).contentSize).toBe(0xffffffff);
    const before = process.memoryUsage();
    await expectProtocol(decompressPayload('zstd', frame, 4096), /declares 4294967295 bytes/);
    // A frame that declares what the message says, but whose blocks expand past it: the decoder's
    // output is exactly that size, so it stops with an error instead of growing.
    const liar = craftedFrame(4096, Array.from({ length: 64 }, (_, i) => rleBlock(128 * KiB, i === 63)));
    await expectProtocol(decompressPayload('zstd', liar, 4096), /does not decompress/);
    const after = process.memoryUsage();
    expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(16 * MiB);
  });

  it('an older peer that lists no codecs gets deflate', () => {
    expect(commonCodecs(['zstd', 'deflate'], undefined)).toEqual(['deflate']);
    expect(commonCodecs(['zstd', 'deflate'], ['deflate'])).toEqual(['deflate']);
    expect(commonCodecs(['zstd', 'deflate'], ['zstd', 'deflate', 'brotli'])).toEqual(['zstd', 'deflate']);
    expect(commonCodecs(['deflate'], ['zstd'])).toEqual([]);
  });
});

describe('a replica endpoint refuses a lying zstd data message with a protocol error', () => {
  it('claims of 4 GiB in the frame or in the message end the session, and memory stays bounded', async () => {
    const size = 8 * MiB;
    for (const [label, rawLength, frame, message] of [
      ['frame claims 4 GiB', 4096, craftedFrame(0xffffffff, [rleBlock(128 * KiB, true)]), /declares 4294967295 bytes/],
      ['message claims 4 GiB', 0xffffffff, craftedFrame(0xffffffff, [rleBlock(128 * KiB, true)]), /data length larger than its leaves|data of 4294967295 bytes exceeds/], // bounded at decode, before the leaves are looked at
    ] as const) {
      const replica = await rawImage(join(dir, `endpoint-${rawLength}.img`), size);
      const { local, remotePort } = createMemoryLink({ rate: Infinity, latencyMs: 0 });
      const served = new ReplicaEndpoint(new MemoryLink(remotePort, { rate: Infinity, latencyMs: 0 }), replica).run();
      const ch = new Channel(local);
      const welcome = await ch.request('hello', { version: PROTOCOL_VERSION, codecs: ['zstd', 'deflate'] }, 'welcome');
      expect(welcome.codecs, label).toContain('zstd');
      await ch.request('start', { shape: makeShape(size), dryRun: false, restart: true, primary: 'p.img' }, 'started');
      const before = process.memoryUsage().rss;
      const failed = ch.expect('never');
      await ch.send({ t: 'data', region: 0, codec: 'zstd', rawLength, leaves: Uint32Array.from([0]), payload: frame });
      await expectProtocol(failed, message);
      expect(process.memoryUsage().rss - before, label).toBeLessThan(64 * MiB);
      ch.close();
      await served;
    }
  });
});

describe('zstd round trips through the real protocol', () => {
  it('over the in-memory link: the replica becomes identical, data goes as zstd, and the wire carries far less', async () => {
    const { primary, replica } = await pair('mem', 64 * MiB);
    const r = await resync({ primary, replica, compress: true, link: { rate: 200e6, latencyMs: 1 } });
    expect(r.result).toBe('completed');
    expect(qemuIdentical(primary, replica)).toBe(true);
    expect(r.compression.codec).toBe('zstd');
    expect(r.compression.framesCompressed).toBeGreaterThan(0);
    expect(r.bytesSent).toBe(24 * 256 * KiB);
    // 3/4 of the changes are text (≈ 4:1 or better), 1/4 random.
    expect(r.payloadWireBytes).toBeLessThan(r.bytesSent * 0.5);
  });

  it('over mutual TLS to a replica server: identical replica, zstd negotiated', async () => {
    net = await serverFixture('vhdsync-zstd-net-');
    await mkdir(join(net.root, 'vm'), { recursive: true });
    const { primary, replica } = await pair('tls', 32 * MiB, join(net.root, 'vm'));
    const tls = await loadTlsMaterial(net.certs.files('client'));
    const r = await resync({ primary, replica: `tls://127.0.0.1:${net.port}/vm/tls-r.img`, network: { tls }, compress: true });
    expect(r.result).toBe('completed');
    expect(qemuIdentical(primary, replica)).toBe(true);
    expect(r.compression.codec).toBe('zstd');
    expect(r.compression.framesCompressed).toBeGreaterThan(0);
    expect(r.payloadWireBytes).toBeLessThan(r.bytesSent * 0.5);
  });

  it('with a replica that speaks deflate only: deflate is negotiated and the replica still becomes identical', async () => {
    // This thread's codecs are settled first; the replica's own thread starts with VHDSYNC_CODECS=deflate.
    expect(await localCodecs()).toEqual(['zstd', 'deflate']);
    const { primary, replica } = await pair('deflate', 32 * MiB);
    process.env.VHDSYNC_CODECS = 'deflate';
    process.env.VHDSYNC_REPLICA_THREAD = 'always';
    let r;
    try {
      r = await resync({ primary, replica, compress: true, link: { rate: 50e6, latencyMs: 1 } });
    } finally {
      delete process.env.VHDSYNC_CODECS;
      delete process.env.VHDSYNC_REPLICA_THREAD;
    }
    expect(r.result).toBe('completed');
    expect(qemuIdentical(primary, replica)).toBe(true);
    expect(r.compression.codec).toBe('deflate');
    expect(r.compression.framesCompressed).toBeGreaterThan(0);
    expect(r.payloadWireBytes).toBeLessThan(r.bytesSent * 0.5);
  });
});

describe('which frames are worth compressing', () => {
  it('media-like bytes go raw untried; text, and text mixed into media, are compressed', () => {
    const frame = MiB;
    expect(looksIncompressible(randomBytes(frame, 41))).toBe(true);
    expect(looksIncompressible(textBytes(frame, 42))).toBe(false);
    const mixed = randomBytes(frame, 43);
    mixed.set(textBytes(frame / 4, 44), frame / 2);
    expect(looksIncompressible(mixed)).toBe(false);
    // Small frames are always tried.
    expect(looksIncompressible(randomBytes(16 * KiB, 45))).toBe(false);
  });

  it('a compressor slower than the link: frames past two in flight go raw, unless what was sent is backed up anyway', async () => {
    // A link far faster than any compressor: only the queue decides.
    const frames = Array.from({ length: 8 }, (_, i) => textBytes(256 * KiB, 70 + i));
    const free = new AdaptiveCompression(true, ['zstd'], 1e12);
    const backedUp = new AdaptiveCompression(true, ['zstd'], 1e12);
    try {
      const a = await Promise.all(frames.map((f) => free.pack(f)));
      const b = await Promise.all(frames.map((f) => backedUp.pack(f, true)));
      expect(a.filter((p) => p.codec === 'zstd')).toHaveLength(2);
      expect(b.filter((p) => p.codec === 'zstd')).toHaveLength(8);
    } finally {
      free.close();
      backedUp.close();
    }
  });

  it('in a disk of media files with text between them, every text frame is compressed', async () => {
    // 15 MiB of media, then 1 MiB of text, four times (a file server's shares), to an empty replica.
    const size = 64 * MiB;
    const writes: [number, Uint8Array][] = [];
    for (let at = 0, i = 0; at < size; at += 16 * MiB, i++) {
      writes.push([at, randomBytes(15 * MiB, 50 + i)]);
      writes.push([at + 15 * MiB, textBytes(MiB, 60 + i)]);
    }
    const primary = await rawImage(join(dir, 'mixed-p.img'), size, writes);
    const replica = await rawImage(join(dir, 'mixed-r.img'), size);
    // A link the compressor keeps up with even on a loaded machine (it falls back to raw past that).
    const r = await resync({ primary, replica, compress: true, link: { rate: 20e6, latencyMs: 0 } });
    expect(r.result).toBe('completed');
    expect(qemuIdentical(primary, replica)).toBe(true);
    // Each 1 MiB text frame is compressed, however many raw media frames came before it.
    expect(r.compression.framesCompressed).toBeGreaterThanOrEqual(4);
    expect(r.payloadWireBytes).toBeLessThan(60 * MiB + 4 * MiB * 0.5);
  });
});
