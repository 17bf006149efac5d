import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createConnection, createServer, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { createDeflateRaw } from 'node:zlib';
import { join } from 'node:path';
import { resync } from '../host/index.js';
import { decode, encode, PROTOCOL_VERSION, type Message } from '../host/transport/protocol.js';
import { loadTlsMaterial, type TlsMaterial } from '../host/transport/tls-config.js';
import { dialReplicaServer } from '../host/transport/tls-connect.js';
import { parseReplicaAddress } from '../host/transport/replica-address.js';
import type { TlsLink } from '../host/transport/tls-link.js';
import { randomBytes } from './support/bytes.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { cliCerts, replicaServer, type ServedReplica } from './support/served-replica.js';
import { MiB } from '../host/units.js';

/**
 * Issue 13, "Hostile peers": a real `vhdsync replica serve` process, attacked the way a stranger on the
 * network (items 8) or a client holding a valid certificate (item 9) can, with the server's resident
 * memory sampled from /proc throughout.
 */
let dir: string;
let cleanup: () => void;
let certs: string;
let root: string;
let server: ServedReplica;
let port: number;
let tls: TlsMaterial;

/** The server's resident set in MiB, from /proc. */
function rssMiB(): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.child.pid}/status`, 'utf8'));
  return Math.round(Number(m![1]) / 1024);
}

/** Samples the server's RSS every 100 ms until stopped; returns the peak. */
function sampleRss(): { stop: () => number; samples: number[] } {
  const samples = [rssMiB()];
  const timer = setInterval(() => samples.push(rssMiB()), 100);
  return { samples, stop: () => (clearInterval(timer), Math.max(...samples)) };
}

beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-hostile-'));
  certs = join(dir, 'certs');
  const made = cliCerts(certs, { home: join(dir, 'home') }, { serverNames: '127.0.0.1' });
  root = join(dir, 'root');
  // The default handshake deadline (10 s) and caps: what a user runs.
  server = await replicaServer(made, root, { home: join(dir, 'server-home') });
  port = server.port;
  tls = await loadTlsMaterial({ cert: join(certs, 'primary.crt'), key: join(certs, 'primary.key'), ca: join(certs, 'ca.crt') });
});
afterAll(async () => {
  await server?.stop();
  cleanup?.();
});

async function pair(name: string, size: number, seed: number): Promise<{ primary: string; replica: string; url: string }> {
  const writes: [number, Uint8Array][] = [];
  for (let off = 0; off < size; off += 4 * MiB) writes.push([off, randomBytes(256 * 1024, seed + off / MiB)]);
  const primary = await rawImage(join(dir, `${name}.img`), size, writes);
  await mkdir(join(root, name));
  const replica = await rawImage(join(root, name, 'disk.img'), size);
  return { primary, replica, url: `tls://127.0.0.1:${port}/${name}/disk.img` };
}

/** The first bytes a real TLS client sends (its ClientHello), captured once from Node's own client. */
async function clientHello(): Promise<Buffer> {
  return new Promise((resolve) => {
    const catcher = createServer((s) => {
      s.once('data', (d: Buffer) => {
        resolve(d);
        s.destroy();
        catcher.close();
      });
    });
    catcher.listen(0, '127.0.0.1', () => {
      const c = tlsConnect({ host: '127.0.0.1', port: (catcher.address() as { port: number }).port, rejectUnauthorized: false });
      c.on('error', () => {});
    });
  });
}

/**
 * Attackers without a certificate: `count` sockets from `from`, each doing `behave` once connected, and
 * reconnecting whenever the server drops them (as a flood would) until stopped.
 */
class Flood {
  private readonly sockets = new Set<Socket>();
  private stopped = false;
  connects = 0;
  drops = 0;
  constructor(
    private readonly from: string,
    count: number,
    private readonly behave: (s: Socket) => void,
    private readonly reconnect = true,
  ) {
    for (let i = 0; i < count; i++) this.open();
  }

  private open(): void {
    const s = createConnection({ host: '127.0.0.1', port, localAddress: this.from });
    this.connects++;
    this.sockets.add(s);
    s.on('connect', () => this.behave(s));
    s.on('error', () => {});
    s.on('close', () => {
      this.sockets.delete(s);
      if (this.stopped) return;
      this.drops++;
      if (this.reconnect) setTimeout(() => this.open(), 250);
    });
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.sockets) s.destroy();
  }
}

const sum = (floods: Flood[], k: 'connects' | 'drops') => floods.reduce((n, f) => n + f[k], 0);

/** Read frames from an authenticated session until a control 'error' (or the link closes). */
function nextError(link: TlsLink): Promise<{ code: string; message: string } | undefined> {
  return new Promise((resolve) => {
    link.onFrame((f) => {
      const m = decode(f);
      if (m.t === 'control' && m.op === 'error') resolve({ code: String(m.body.code), message: String(m.body.message) });
    });
    link.onClose(() => resolve(undefined));
  });
}

function expectReply(link: TlsLink, op: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    link.onFrame((f) => {
      const m = decode(f);
      if (m.t !== 'control') return;
      if (m.op === op) resolve(m.body);
      else if (m.op === 'error') reject(new Error(`${m.body.code}: ${m.body.message}`));
    });
  });
}

/** An authenticated session on `target` that has said hello and started a resync of the given shape. */
async function session(target: string, shape?: Record<string, unknown>): Promise<TlsLink> {
  const link = await dialReplicaServer(parseReplicaAddress(`tls://127.0.0.1:${port}/${target}`), { tls });
  const welcome = expectReply(link, 'welcome');
  await link.send(encode({ t: 'control', op: 'hello', body: { version: PROTOCOL_VERSION } }));
  const w = (await welcome) as { replica: { virtualSize: number } };
  if (shape) {
    const started = expectReply(link, 'started');
    await link.send(encode({ t: 'control', op: 'start', body: { shape: { virtualSize: w.replica.virtualSize, ...shape }, primary: 'p.img' } }));
    await started;
  }
  return link;
}

async function refused(target: string, frames: (size: number) => Message[], startShape?: Record<string, unknown>): Promise<{ code: string; message: string } | undefined> {
  const link = await session(target, startShape);
  const err = nextError(link);
  for (const m of frames(64 * MiB)) await link.send(encode(m)).catch(() => {});
  const e = await Promise.race([err, new Promise<undefined>((r) => setTimeout(() => r(undefined), 15_000))]);
  link.destroy();
  return e;
}

const SHAPE = { leafSize: 4096, regionSize: 16 * MiB, fanout: 16 };

describe('a replica server under hostile peers (a real `replica serve` process, RSS sampled)', () => {
  it('200 idle TCP sockets, 1-byte drips and 120 stalled TLS handshakes do not lock a primary out', async () => {
    const { primary, replica, url } = await pair('flood', 64 * MiB, 7);
    const hello = await clientHello();
    const rss = sampleRss();
    const before = rss.samples[0];
    // Strangers on other addresses, reconnecting as soon as they are dropped; and idle ones from the
    // primary's own address, which must not keep it out either.
    // 200 idle sockets from 20 addresses: more than the server's pending cap altogether.
    const idle = Array.from({ length: 20 }, (_, i) => new Flood(`127.0.1.${i + 1}`, 10, () => {}));
    const drips = new Flood('127.0.0.3', 20, (s) => {
      let i = 0;
      const t = setInterval(() => (s.destroyed ? clearInterval(t) : s.write(hello.subarray(i, ++i))), 1000);
    });
    const slowTls = new Flood('127.0.0.4', 120, (s) => s.write(hello)); // then never answers the server
    const sameAddress = new Flood('127.0.0.1', 50, () => {}, false);
    await new Promise((r) => setTimeout(r, 1500)); // let the flood fill whatever it can
    try {
      const t0 = performance.now();
      const r = await resync({ primary, replica: url, network: { tls } });
      const seconds = (performance.now() - t0) / 1000;
      expect(r.result).toBe('completed');
      expect(qemuIdentical(primary, replica)).toBe(true);
      // A second primary session while the flood goes on: a resync that finds nothing to send.
      const again = await resync({ primary, replica: url, network: { tls } });
      expect(again.bytesSent).toBe(0);
      const peak = rss.stop();
      console.log(`flood: resync ${seconds.toFixed(1)} s under attack; connects idle ${sum(idle, 'connects')} drips ${drips.connects} slowTls ${slowTls.connects} sameAddress ${sameAddress.connects}; drops ${sum(idle, 'drops') + drips.drops + slowTls.drops + sameAddress.drops}; server RSS ${before} MiB before, peak ${peak} MiB`);
      expect(peak).toBeLessThan(before + 300);
    } finally {
      rss.stop();
      for (const f of [...idle, drips, slowTls, sameAddress]) f.stop();
    }
    expect(server.child.exitCode).toBe(null);
  }, 120_000);

  it('a drip that never completes the handshake is dropped by the deadline, not kept alive by its bytes', async () => {
    const hello = await clientHello();
    const s = createConnection({ host: '127.0.0.1', port, localAddress: '127.0.0.5' });
    s.on('error', () => {});
    let i = 0;
    const t = setInterval(() => s.write(hello.subarray(i, ++i)), 500);
    const t0 = performance.now();
    await new Promise((r) => s.on('close', r));
    clearInterval(t);
    // The deadline is 10 s from accept; a drip of a byte every 500 ms would otherwise live for ever.
    expect((performance.now() - t0) / 1000).toBeLessThan(30);
    expect(i).toBeLessThan(hello.byteLength);
  }, 60_000);

  describe('an authenticated client gets a protocol error for every out-of-bounds field, and the server stays up', () => {
    let target: string;
    beforeAll(async () => {
      await mkdir(join(root, 'bounds'));
      await rawImage(join(root, 'bounds', 'disk.img'), 64 * MiB, [[0, randomBytes(MiB, 3)]]);
      target = 'bounds/disk.img';
    });

    it.each([
      ['leafSize 1', { ...SHAPE, leafSize: 1 }, /leaf size/],
      ['leafSize 0', { ...SHAPE, leafSize: 0 }, /leaf size/],
      ['leafSize not a power of two', { ...SHAPE, leafSize: 3000 }, /leaf size/],
      ['fanout 1', { ...SHAPE, fanout: 1 }, /fanout/],
      ['regionSize 1 GiB', { ...SHAPE, regionSize: 1024 * MiB }, /region size/],
      ['virtualSize 2^60', { ...SHAPE, virtualSize: 2 ** 60 }, /virtual size/],
      ['virtualSize not a number', { ...SHAPE, virtualSize: 'x' }, /virtual size/],
    ])('start with %s', async (_name, shape, message) => {
      const link = await session(target);
      const err = nextError(link);
      await link.send(encode({ t: 'control', op: 'start', body: { shape: { virtualSize: 64 * MiB, ...shape }, primary: 'p.img' } }));
      const e = await Promise.race([err, new Promise<undefined>((r) => setTimeout(() => r(undefined), 15_000))]);
      link.destroy();
      expect(e?.code).toBe('PROTOCOL');
      expect(e?.message).toMatch(message);
      expect(server.child.exitCode).toBe(null);
    }, 30_000);

    it('a 2 MB compressed data frame claiming 2 GiB is refused before it is inflated; RSS stays bounded', async () => {
      // 1 GiB of zeros deflates to about 1 MB: the bomb a client with a certificate can send.
      const deflater = createDeflateRaw({ level: 9 });
      const parts: Buffer[] = [];
      deflater.on('data', (d: Buffer) => parts.push(d));
      const zeros = Buffer.alloc(4 * MiB);
      for (let i = 0; i < 256; i++) if (!deflater.write(zeros)) await new Promise((r) => deflater.once('drain', r));
      await new Promise((r) => deflater.end(r));
      const bomb = new Uint8Array(Buffer.concat(parts));
      expect(bomb.byteLength).toBeLessThan(2 * MiB);
      const rss = sampleRss();
      const before = rss.samples[0];
      const leaves = Uint32Array.from({ length: 4096 }, (_, i) => i);
      const cases: [string, Message][] = [
        ['rawLength 2 GiB', { t: 'data', region: 0, codec: 'deflate', rawLength: 2 * 1024 * MiB, leaves, payload: bomb }],
        ['rawLength matching the leaves, payload inflating past it', { t: 'data', region: 0, codec: 'deflate', rawLength: 16 * MiB, leaves, payload: bomb }],
        ['region past the disk', { t: 'data', region: 1_000_000, codec: 'none', rawLength: 4096, leaves: Uint32Array.of(0), payload: new Uint8Array(4096) }],
        ['leaves not ascending', { t: 'data', region: 0, codec: 'none', rawLength: 8192, leaves: Uint32Array.of(5, 5), payload: new Uint8Array(8192) }],
        ['4 billion regions of credit', { t: 'credit', regions: 0xffffffff }],
        ['want of a million nodes', { t: 'want', req: 1, region: 0, level: 0, nodes: new Uint32Array(1_000_000) }],
      ];
      const seen: string[] = [];
      for (const [name, m] of cases) {
        const e = await refused(target, () => [m], SHAPE);
        seen.push(`${name}: ${e?.code} ${e?.message}`);
        expect(e?.code, name).toBe('PROTOCOL');
        expect(server.child.exitCode).toBe(null);
      }
      const peak = rss.stop();
      console.log(`hostile frames: server RSS ${before} MiB before, peak ${peak} MiB after ${cases.length} crafted frames\n  ${seen.join('\n  ')}`);
      expect(peak).toBeLessThan(before + 200);
      // And an honest resync still runs.
      const { primary, replica, url } = await pair('after-bombs', 32 * MiB, 11);
      expect((await resync({ primary, replica: url, network: { tls } })).result).toBe('completed');
      expect(qemuIdentical(primary, replica)).toBe(true);
    }, 120_000);
  });
});
