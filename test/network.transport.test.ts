import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { createServer, createConnection, type Socket } from 'node:net';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TokenBucket, parseBandwidthSchedule, scheduledRate, bandwidthLimiter } from '../host/transport/token-bucket.js';
import { TlsLink } from '../host/transport/tls-link.js';
import { parseReplicaAddress, parseListen, isReplicaAddress } from '../host/transport/replica-address.js';
import { confineTarget } from '../host/replica/root.js';
import { tempDir } from './support/temp-dir.js';

/** Two ends of a loopback TCP connection (the framing does not care whether TLS is underneath). */
async function socketPair(): Promise<[Socket, Socket]> {
  return new Promise((resolve) => {
    const server = createServer((b) => {
      server.close();
      resolve([a, b]);
    });
    let a: Socket;
    server.listen(0, '127.0.0.1', () => {
      a = createConnection({ host: '127.0.0.1', port: (server.address() as { port: number }).port });
    });
  });
}

function closed(link: TlsLink): Promise<Error | undefined> {
  return new Promise((resolve) => link.onClose(resolve));
}

describe('token bucket', () => {
  it('lets a burst through, then makes the caller wait for the debt at the rate', () => {
    const b = new TokenBucket(() => 1_000_000, 10_000);
    expect(b.reserve(10_000)).toBe(0);
    // 100 kB more at 1 MB/s: about 100 ms of debt (a little less, as time passed since construction)
    const wait = b.reserve(100_000);
    expect(wait).toBeGreaterThan(95);
    expect(wait).toBeLessThanOrEqual(100);
  });

  it('take() waits at least bytes/rate beyond the burst', async () => {
    const b = new TokenBucket(() => 500_000, 16_384);
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) await b.take(16_384);
    const ms = performance.now() - t0;
    expect(ms).toBeGreaterThanOrEqual(((10 * 16_384 - 16_384) / 500_000) * 1000 - 2);
  });

  it('unlimited never waits, and forgives debt', () => {
    let rate = 1000;
    const b = new TokenBucket(() => rate, 100);
    expect(b.reserve(10_000)).toBeGreaterThan(9000);
    rate = Infinity;
    expect(b.reserve(1e9)).toBe(0);
    expect(bandwidthLimiter({})).toBeUndefined();
    expect(bandwidthLimiter({ rate: Infinity })).toBeUndefined();
    expect(bandwidthLimiter({ rate: 1e6 })?.rate).toBe(1e6);
  });

  it('parses schedules, with windows across midnight', () => {
    const s = parseBandwidthSchedule('08:00-18:00=2mbps,18:00-08:00=unlimited');
    const at = (h: number, m = 0) => new Date(2026, 0, 1, h, m);
    expect(scheduledRate(s, at(8), 1)).toBe(250_000);
    expect(scheduledRate(s, at(17, 59), 1)).toBe(250_000);
    expect(scheduledRate(s, at(18), 1)).toBe(Infinity);
    expect(scheduledRate(s, at(3), 1)).toBe(Infinity);
    const part = parseBandwidthSchedule('22:00-24:00=1mbps, 00:00-02:00=10MB/s');
    expect(scheduledRate(part, at(23, 30), 7)).toBe(125_000);
    expect(scheduledRate(part, at(1), 7)).toBe(10e6);
    expect(scheduledRate(part, at(12), 7)).toBe(7); // outside every window: --bandwidth
    expect(scheduledRate(parseBandwidthSchedule('00:00-24:00=1mbps'), at(12), 7)).toBe(125_000);
  });

  it('refuses malformed, empty and overlapping schedules with one line', () => {
    for (const [text, msg] of [
      ['8-18=2mbps', /not a window/],
      ['08:00-18:00=fast', /not a rate/],
      ['08:00-08:00=1mbps', /empty/],
      ['25:00-02:00=1mbps', /outside 00:00–24:00/],
      ['08:00-18:00=1mbps,17:00-19:00=2mbps', /overlaps '08:00-18:00=1mbps'/],
      ['22:00-06:00=1mbps,05:00-07:00=2mbps', /overlaps/],
    ] as const) {
      expect(() => parseBandwidthSchedule(text), text).toThrow(msg);
    }
  });
});

describe('replica addresses', () => {
  it('parses tls:// targets and --listen', () => {
    expect(parseReplicaAddress('tls://127.0.0.1:4000/vm1/disk.vhd')).toMatchObject({ host: '127.0.0.1', port: 4000, target: 'vm1/disk.vhd' });
    expect(parseReplicaAddress('tls://[::1]:4000/a/b.vhd')).toMatchObject({ host: '::1', port: 4000, target: 'a/b.vhd' });
    expect(parseListen('0.0.0.0:0')).toEqual({ host: '0.0.0.0', port: 0 });
    expect(isReplicaAddress('tls://x:1/a')).toBe(true);
    expect(isReplicaAddress('/srv/replica.vhd')).toBe(false);
    expect(() => parseReplicaAddress('tls://host/disk.vhd')).toThrow(/expected tls:\/\/HOST:PORT\/NAME\/disk.vhd/);
    expect(() => parseReplicaAddress('http://host:1/disk.vhd')).toThrow(/not a replica address/);
    expect(() => parseReplicaAddress('tls://host:70000/d.vhd')).toThrow(/out of range/);
    expect(() => parseListen('4000')).toThrow(/HOST:PORT/);
  });
});

describe('replica root confinement', () => {
  let dir: string;
  let cleanup: () => void;
  beforeAll(async () => {
    ({ dir, cleanup } = tempDir());
    await mkdir(join(dir, 'root', 'vm'), { recursive: true });
    await mkdir(join(dir, 'outside'));
    await writeFile(join(dir, 'root', 'vm', 'disk.vhd'), 'x');
    await writeFile(join(dir, 'outside', 'secret.vhd'), 'x');
    await symlink(join(dir, 'outside'), join(dir, 'root', 'escape'));
    await symlink(join(dir, 'outside', 'secret.vhd'), join(dir, 'root', 'vm', 'link.vhd'));
    await symlink(join(dir, 'root', 'vm', 'disk.vhd'), join(dir, 'root', 'vm', 'inside.vhd'));
  });
  afterAll(() => cleanup());

  it('resolves a disk under the root, following links that stay inside', async () => {
    const root = join(dir, 'root');
    expect(await confineTarget(root, 'vm/disk.vhd')).toBe(join(dir, 'root', 'vm', 'disk.vhd'));
    expect(await confineTarget(root, 'vm/inside.vhd')).toBe(join(dir, 'root', 'vm', 'disk.vhd'));
  });

  it('refuses .., absolute paths and links out of the root', async () => {
    const root = join(dir, 'root');
    for (const [target, msg] of [
      ['../outside/secret.vhd', /'\.\.'/],
      ['vm/../../outside/secret.vhd', /'\.\.'/],
      ['/etc/passwd', /absolute/],
      [join(dir, 'outside', 'secret.vhd'), /absolute/],
      ['C:/x.vhd', /absolute/],
      ['vm\\..\\..\\x.vhd', /backslash/],
      ['vm//disk.vhd', /empty path segments/],
      ['escape/secret.vhd', /leads out of the server's root/],
      ['vm/link.vhd', /leads out of the server's root/],
      ['vm', /not a disk image file/],
      ['', /no replica disk named/],
      [42, /no replica disk named/],
    ] as const) {
      await expect(confineTarget(root, target), String(target)).rejects.toThrow(msg);
    }
    await expect(confineTarget(root, 'vm/missing.vhd')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('TLS link framing (over plain TCP)', () => {
  it('delivers frames in order however the bytes are cut, and skips keepalives', async () => {
    const [a, b] = await socketPair();
    const link = new TlsLink(b);
    const got: number[] = [];
    const all = new Promise<void>((resolve) =>
      link.onFrame((f) => {
        got.push(f.byteLength);
        if (got.length === 3) resolve();
      }),
    );
    // keepalive, then frames of 1, 70000 and 5 bytes, written a few bytes at a time
    const wire = Buffer.concat([Buffer.alloc(4), frame(1), frame(70_000), frame(5)]);
    for (let i = 0; i < wire.byteLength; i += 4093) {
      a.write(wire.subarray(i, i + 4093));
      await new Promise((r) => setImmediate(r));
    }
    await all;
    expect(got).toEqual([1, 70_000, 5]);
    expect(link.stats.framesReceived).toBe(3);
    expect(link.stats.bytesReceived).toBe(wire.byteLength);
    a.resetAndDestroy(); // a reset, not an orderly end
    expect(await closed(link)).toMatchObject({ code: 'LINK' });
  });

  it('refuses a frame claiming 4 GiB before allocating it', async () => {
    const [a, b] = await socketPair();
    const link = new TlsLink(b, { maxFrameBytes: 1 << 20 });
    const before = process.memoryUsage().arrayBuffers;
    a.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    const e = await closed(link);
    expect(e?.message).toMatch(/frame of 4294967295 bytes; the limit is 1048576/);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 << 20);
    a.destroy();
  });

  it('a close after whole frames is clean; one in the middle of a frame is not', async () => {
    const [a, b] = await socketPair();
    const link = new TlsLink(b);
    a.end(frame(10));
    expect(await closed(link)).toBeUndefined();

    const [c, d] = await socketPair();
    const broken = new TlsLink(d);
    c.end(frame(10).subarray(0, 8));
    expect((await closed(broken))?.message).toMatch(/in the middle of a frame/);
  });

  it('sends what was queued before close(), then ends the stream', async () => {
    const [a, b] = await socketPair();
    const sender = new TlsLink(a);
    const receiver = new TlsLink(b);
    const got: number[] = [];
    receiver.onFrame((f) => void got.push(f[0]));
    for (let i = 0; i < 5; i++) void sender.send(new Uint8Array(100_000).fill(i));
    sender.close();
    expect(await closed(receiver)).toBeUndefined();
    expect(got).toEqual([0, 1, 2, 3, 4]);
    await expect(sender.send(new Uint8Array(1))).rejects.toThrow(/closed/);
  });

  it('times out a peer that says nothing, but keepalives hold an idle link open', async () => {
    const [a, b] = await socketPair();
    const silent = new TlsLink(b, { stallMs: 200 });
    const t0 = performance.now();
    expect((await closed(silent))?.message).toMatch(/nothing heard from the peer for 0.2 s/);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(190);
    a.destroy();

    const [c, d] = await socketPair();
    const left = new TlsLink(c, { stallMs: 200 });
    const right = new TlsLink(d, { stallMs: 200 });
    let broke = false;
    left.onClose(() => (broke = true));
    right.onClose(() => (broke = true));
    await new Promise((r) => setTimeout(r, 800));
    expect(broke).toBe(false);
    expect(right.stats.bytesReceived).toBeGreaterThan(0); // keepalives
    expect(right.stats.framesReceived).toBe(0);
    left.close();
    right.close();
  });

  it('paces sends to the limiter', async () => {
    const [a, b] = await socketPair();
    const rate = 2_000_000;
    const sender = new TlsLink(a, { sendLimiter: new TokenBucket(() => rate, 16_384) });
    const receiver = new TlsLink(b);
    let bytes = 0;
    const done = new Promise<void>((resolve) =>
      receiver.onFrame((f) => {
        bytes += f.byteLength;
        if (bytes === 1_000_000) resolve();
      }),
    );
    const t0 = performance.now();
    for (let i = 0; i < 10; i++) await sender.send(new Uint8Array(100_000));
    await done;
    const seconds = (performance.now() - t0) / 1000;
    expect(seconds).toBeGreaterThanOrEqual((sender.stats.bytesSent - 16_384) / rate);
    sender.close();
    receiver.close();
  });
});

function frame(n: number): Buffer {
  const out = Buffer.alloc(4 + n, 7);
  out.writeUInt32LE(n, 0);
  return out;
}
