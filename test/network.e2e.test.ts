import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { createConnection } from 'node:net';
import { readFileSync } from 'node:fs';
import { copyFile, mkdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { openTrackedDisk, resync, startResync, type ResyncOptions } from '../host/index.js';
import { listTakenLogs } from '../host/tracking/log-files.js';
import { encode, PROTOCOL_VERSION } from '../host/transport/protocol.js';
import { serverTlsOptions, loadTlsMaterial } from '../host/transport/tls-config.js';
import { TlsLink } from '../host/transport/tls-link.js';
import { bandwidthLimiter } from '../host/transport/token-bucket.js';
import { dialReplicaServer } from '../host/transport/tls-connect.js';
import { parseReplicaAddress } from '../host/transport/replica-address.js';
import type { ServerEvent } from '../host/replica/server.js';
import { randomBytes } from './support/bytes.js';
import { material, type TestCerts } from './support/certs.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { serverFixture, type ServerFixture, startServer } from './support/replica-server.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { snapshot } from './support/tree-snapshot.js';
import { MiB } from '../host/units.js';

let dir: string;
let certs: TestCerts;
let root: string;
let port: number;
let events: ServerEvent[];
let net: ServerFixture | undefined;

beforeAll(async () => {
  net = await serverFixture('vhdsync-net-', { openTimeoutMs: 400 });
  ({ dir, certs, root, port, events } = net);
});
afterAll(() => net?.close());

/** A primary with `changes` scattered 64 KiB writes over `size`, and an empty replica under the root. */
async function pair(name: string, size: number, changes: number, seed: number): Promise<{ primary: string; replica: string; target: string; offsets: number[] }> {
  const writes: [number, Uint8Array][] = [];
  for (let i = 0; i < changes; i++) writes.push([Math.floor(((i + 0.5) / changes) * (size / 65536)) * 65536, randomBytes(65536, seed + i)]);
  const primary = await rawImage(join(dir, `${name}-p.img`), size, writes);
  await mkdir(join(root, name), { recursive: true });
  const replica = await rawImage(join(root, name, 'disk.img'), size);
  return { primary, replica, target: `${name}/disk.img`, offsets: writes.map(([o]) => o) };
}

async function network(name: 'client' | 'rogue' = 'client', ca: 'ca' | 'other' = 'ca', extra: Partial<NonNullable<ResyncOptions['network']>> = {}): Promise<NonNullable<ResyncOptions['network']>> {
  const m = await loadTlsMaterial(certs.files(name, ca));
  return { tls: m, ...extra };
}

const url = (target: string, p = port) => `tls://127.0.0.1:${p}/${target}`;

describe('resync over mutual TLS on loopback', () => {
  it('makes the replica identical, with the same payload and wire bytes as the local link (plus the open exchange)', async () => {
    const size = 128 * MiB;
    const { primary, replica, target } = await pair('same', size, 200, 1);
    // Same file name as the remote one: the replica's name travels in 'welcome'.
    await mkdir(join(dir, 'local'));
    const localReplica = join(dir, 'local', 'disk.img');
    await copyFile(replica, localReplica);
    const local = await resync({ primary, replica: localReplica });
    const proxy = await new TcpProxy(port).listen();
    const t0 = performance.now();
    const remote = await resync({ primary, replica: url(target, proxy.port), network: await network() });
    const seconds = (performance.now() - t0) / 1000;
    await proxy.close();

    expect(remote.result).toBe('completed');
    expect(qemuIdentical(primary, replica)).toBe(true);
    expect(qemuIdentical(primary, localReplica)).toBe(true);
    expect(remote.bytesSent).toBe(local.bytesSent);
    expect(remote.blocksSent).toBe(local.blocksSent);
    expect(remote.bytesSent).toBe(200 * 65536);
    expect(remote.payloadWireBytes).toBe(local.payloadWireBytes);
    // Extra frames: 'open' up, 'opened' down. Control frames ('end', 'credit') are batched by time, so
    // their count may differ by a few between any two runs: a few hundred bytes at most.
    const openBytes = 4 + encode({ t: 'control', op: 'open', body: { version: PROTOCOL_VERSION, target } }).byteLength;
    const openedBytes = 4 + encode({ t: 'control', op: 'opened', body: { version: PROTOCOL_VERSION } }).byteLength;
    expect(Math.abs(remote.wireBytes - local.wireBytes - openBytes - openedBytes)).toBeLessThan(1024);
    // TLS costs record headers, tags and the handshake on top.
    const overhead = (proxy.bytesUp + proxy.bytesDown) / remote.wireBytes - 1;
    expect(overhead).toBeGreaterThan(0);
    expect(overhead).toBeLessThan(0.05);
    console.log(`[network] TLS resync: ${remote.wireBytes} link bytes (local link: ${local.wireBytes}), ${proxy.bytesUp + proxy.bytesDown} TCP bytes (TLS overhead ${(overhead * 100).toFixed(2)} %), ${seconds.toFixed(2)} s`);
    await until(() => events.some((e) => e.event === 'finished'));
    expect(events.find((e) => e.event === 'finished')).toMatchObject({ target, outcome: 'committed' });
  });

  describe('refusals leave nothing written under the root', () => {
    let before: string[];
    let target: string;
    beforeAll(async () => {
      ({ target } = await pair('guarded', 32 * MiB, 4, 50));
      await mkdir(join(dir, 'outside'), { recursive: true });
      await rawImage(join(dir, 'outside', 'disk.img'), 32 * MiB);
      await symlink(join(dir, 'outside'), join(root, 'escape'));
      await symlink(join(dir, 'outside', 'disk.img'), join(root, 'guarded', 'link.img'));
      before = await snapshot(root);
    });
    afterAll(async () => {
      expect(await snapshot(root)).toEqual(before);
      expect(await snapshot(join(dir, 'outside'))).toHaveLength(1);
    });

    const lastRefusal = () => events.filter((e) => e.event === 'refused').at(-1) as Extract<ServerEvent, { event: 'refused' }> | undefined;
    const primaryFor = (size = 32 * MiB) => rawImage(join(dir, 'refused-p.img'), size, [[0, randomBytes(4096, 9)]]);

    it('a client without a certificate', async () => {
      const n = events.length;
      const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
        const s = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(certs.files('client').ca) }, () => s.write(encode({ t: 'control', op: 'open', body: { version: 1, target } })));
        s.on('error', resolve);
        s.on('close', () => resolve(undefined));
      });
      expect(err?.code).toBe('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
      await until(() => events.length > n);
      expect(lastRefusal()?.reason).toMatch(/PEER_DID_NOT_RETURN_A_CERTIFICATE/);
    });

    it('a client certificate from another CA', async () => {
      const n = events.length;
      const refused = resync({ primary: await primaryFor(), replica: url(target), network: await network('rogue', 'ca') });
      await expect(refused).rejects.toThrow(/refuses a certificate it does not trust/);
      await expect(refused).rejects.toMatchObject({ code: 'AUTH' }); // not LINK: nothing retries it
      await until(() => events.length > n);
      expect(lastRefusal()?.reason).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
    });

    it('an expired client certificate (refused by us up front, and by the server)', async () => {
      await expect(loadTlsMaterial(certs.files('expired'))).rejects.toThrow(/the certificate expired on/);
      const n = events.length;
      const files = certs.files('expired');
      await new Promise<void>((resolve) => {
        const s = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(files.ca), cert: readFileSync(files.cert), key: readFileSync(files.key) });
        s.on('error', () => resolve());
        s.on('close', () => resolve());
      });
      await until(() => events.length > n);
      expect(lastRefusal()?.reason).toBe('CERT_HAS_EXPIRED');
    });

    it('a server whose certificate is not from our CA', async () => {
      const refused = resync({ primary: await primaryFor(), replica: url(target), network: await network('client', 'other') });
      await expect(refused).rejects.toThrow(/its certificate is not signed by our --ca/);
      // AUTH, not LINK: scripts can tell a certificate problem from a network one, and nothing retries it.
      await expect(refused).rejects.toMatchObject({ code: 'AUTH' });
    });

    it('paths that escape the root', async () => {
      const net = await network();
      const p = await primaryFor();
      for (const [t, msg] of [
        ['../outside/disk.img', /'\.\.'/],
        ['guarded/../../outside/disk.img', /'\.\.'/],
        [`/${join(dir, 'outside', 'disk.img')}`, /absolute paths/],
        ['escape/disk.img', /leads out of the server's root/],
        ['guarded/link.img', /leads out of the server's root/],
        ['guarded/missing.img', /no such replica disk/],
      ] as const) {
        await expect(resync({ primary: p, replica: url(t), network: net }), t).rejects.toThrow(msg);
      }
    });

    it('a protocol version from the future (either side)', async () => {
      const address = parseReplicaAddress(url(target));
      await expect(dialReplicaServer(address, { ...(await network()), version: 99 })).rejects.toThrow(
        /protocol version 99 is not supported by this replica server \(it speaks 1\); upgrade vhdsync on both sides/,
      );
      // A server from the future answers 'opened' with its version: the client says so.
      const future = createTlsServer(serverTlsOptions(await material(certs, 'server')), (s) => {
        const link = new TlsLink(s);
        link.onFrame(() => void link.send(encode({ t: 'control', op: 'opened', body: { version: 2 } })));
      });
      await new Promise<void>((r) => future.listen(0, '127.0.0.1', r));
      const fport = (future.address() as { port: number }).port;
      await expect(dialReplicaServer(parseReplicaAddress(url(target, fport)), await network())).rejects.toThrow(/speaks protocol version 2; this vhdsync speaks 1/);
      future.close();
    });

    it('a frame claiming 4 GiB, garbage after the handshake, garbage instead of TLS', async () => {
      const tls = await material(certs, 'client');
      const send = (bytes: Uint8Array) =>
        new Promise<void>((resolve) => {
          const s = tlsConnect({ host: '127.0.0.1', port, ca: tls.ca, cert: tls.cert, key: tls.key }, () => s.write(bytes));
          s.resume(); // read what the server says, so its end is seen
          s.on('error', () => resolve());
          s.on('close', () => resolve());
        });
      let n = events.length;
      await send(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
      await until(() => events.length > n);
      expect(lastRefusal()?.reason).toMatch(/frame of 4294967295 bytes; the limit is 65536/);

      n = events.length;
      const junk = randomBytes(64, 3);
      await send(Buffer.concat([Uint8Array.from([64, 0, 0, 0]), junk]));
      await until(() => events.length > n);
      expect(lastRefusal()?.reason).toMatch(/protocol error/);

      n = events.length;
      await new Promise<void>((resolve) => {
        const s = createConnection({ host: '127.0.0.1', port }, () => s.write(randomBytes(300, 4)));
        s.on('error', () => resolve());
        s.on('close', () => resolve());
      });
      await until(() => events.length > n);
      expect(lastRefusal()?.reason).toMatch(/ERR_SSL|ECONNRESET/);
    });

    it('a client that connects and says nothing (before TLS, and after)', async () => {
      let n = events.length;
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        const s = createConnection({ host: '127.0.0.1', port });
        s.resume();
        s.on('error', () => resolve());
        s.on('close', () => resolve());
      });
      await until(() => events.length > n);
      expect(lastRefusal()?.reason).toMatch(/HANDSHAKE_TIMEOUT/);
      expect(performance.now() - t0).toBeGreaterThanOrEqual(390);

      n = events.length;
      const tls = await material(certs, 'client');
      await new Promise<void>((resolve) => {
        const s = tlsConnect({ host: '127.0.0.1', port, ca: tls.ca, cert: tls.cert, key: tls.key });
        s.resume();
        s.on('error', () => resolve());
        s.on('close', () => resolve());
      });
      await until(() => events.length > n);
      expect(lastRefusal()?.reason).toMatch(/no 'open' within 0.4 s/);
    });
  });

  it('--max-active-transfers 1: a second resync waits in the queue, then both complete', async () => {
    const { server: one, port: onePort, events: log } = await startServer(certs, root, { maxActiveTransfers: 1 });
    try {
      const a = await pair('q1', 64 * MiB, 64, 100);
      const b = await pair('q2', 64 * MiB, 64, 200);
      const net = await network();
      const [ra, rb] = await Promise.all([resync({ primary: a.primary, replica: url(a.target, onePort), network: net }), resync({ primary: b.primary, replica: url(b.target, onePort), network: net })]);
      expect([ra.result, rb.result]).toEqual(['completed', 'completed']);
      expect(qemuIdentical(a.primary, a.replica)).toBe(true);
      expect(qemuIdentical(b.primary, b.replica)).toBe(true);
      expect(one.peakActive).toBe(1);
      await until(() => log.filter((e) => e.event === 'finished').length === 2);
      const order = log.filter((e) => e.event !== 'listening').map((e) => e.event);
      expect(order).toEqual(['started', 'queued', 'finished', 'started', 'finished']);
    } finally {
      await one.close();
    }
  });

  it('reconnects after the link drops mid-compare and resumes from the checkpoint', async () => {
    const size = 256 * MiB;
    // 4 MiB of changes spread over all 16 regions, so every region carries data.
    const { primary, replica, target, offsets } = await pair('drop', size, 64, 300);
    const proxy = await new TcpProxy(port, 2).listen();
    proxy.dropAfter(0.8 * MiB, 1.6 * MiB, 2.4 * MiB); // all before the 4 MiB of changes are through
    const r = await resync({ primary, replica: url(target, proxy.port), network: await network(), reconnect: { delayMs: 50 } });
    await proxy.close();
    expect(r.result).toBe('completed');
    expect(proxy.drops).toBe(3);
    expect(r.reconnects).toHaveLength(3);
    expect(r.reconnects.some((x) => x.resumedFrom > 0)).toBe(true);
    for (const x of r.reconnects) expect(x.error).toMatch(/lost|reset/);
    expect(qemuIdentical(primary, replica)).toBe(true);
    // Nothing below a resume point is sent again: at most the changes at or after it, once per drop.
    const changed = 64 * 65536;
    const resendable = r.reconnects.reduce((n, x) => n + offsets.filter((o) => o >= x.resumedFrom).length * 65536, 0);
    expect(r.bytesSent).toBeGreaterThanOrEqual(changed);
    expect(r.bytesSent).toBeLessThanOrEqual(changed + resendable);
    expect(r.bytesCompared).toBe(size);
    console.log(`[network] reconnect: ${r.reconnects.map((x) => x.resumedFrom / MiB + ' MiB').join(', ')}; sent ${r.bytesSent} for ${changed} changed`);
  });

  it('reconnects after the link drops at the merge and again while tracked writes are sent: none of them is lost', async () => {
    const size = 64 * MiB;
    const { primary, replica, target } = await pair('mergedrop', size, 64, 700);
    const proxy = await new TcpProxy(port).listen();
    let compared = 0;
    const cutAt = new Set<string>();
    const h = startResync({
      primary,
      replica: url(target, proxy.port),
      network: await network('client', 'ca', { limiter: bandwidthLimiter({ rate: 8e6 }) }),
      reconnect: { delayMs: 50 },
      onProgress: (p) => {
        compared = p.bytesCompared;
        // Cut once as the merge starts, and once as the tracked writes are about to go.
        if ((p.phase === 'merging' || p.phase === 'applying') && !cutAt.has(p.phase)) {
          cutAt.add(p.phase);
          proxy.cut();
        }
      },
    });
    while (compared === 0) await new Promise((res) => setTimeout(res, 5));
    const guest = await openTrackedDisk(primary);
    await guest.write(0, randomBytes(4096, 701));
    await guest.write(size - 65536, randomBytes(65536, 702));
    await guest.close();
    const r = await h.done;
    await proxy.close();
    expect(r.result).toBe('completed');
    expect([...cutAt]).toEqual(['merging', 'applying']);
    expect(r.reconnects).toHaveLength(2);
    expect(r.reconnects.every((x) => x.resumedFrom === size)).toBe(true);
    expect(r.trackedWritesApplied).toBe(2);
    expect(qemuIdentical(primary, replica)).toBe(true);
    expect(await listTakenLogs(primary)).toEqual([]);
  });

  it('a run that dies between taking the tracked writes and the commit: the next run still sends them', async () => {
    const size = 32 * MiB;
    const { primary, replica, target } = await pair('takedie', size, 16, 800);
    const proxy = await new TcpProxy(port).listen();
    let compared = 0;
    const h = startResync({
      primary,
      replica: url(target, proxy.port),
      network: await network('client', 'ca', { limiter: bandwidthLimiter({ rate: 4e6 }) }),
      reconnect: { attempts: 0 },
      onProgress: (p) => {
        compared = p.bytesCompared;
        if (p.phase === 'applying') proxy.cut();
      },
    });
    while (compared === 0) await new Promise((res) => setTimeout(res, 5));
    const guest = await openTrackedDisk(primary);
    await guest.write(4096, randomBytes(4096, 801));
    await guest.write(size - 4096, randomBytes(4096, 802));
    await guest.close();
    await expect(h.done).rejects.toThrow(/the link was lost during the merge/);
    await proxy.close();
    expect(await listTakenLogs(primary)).toHaveLength(1); // kept: the replica never committed them
    expect(qemuIdentical(primary, replica)).toBe(false);
    const r = await resync({ primary, replica: url(target), network: await network() });
    expect(r).toMatchObject({ result: 'completed', trackedWritesApplied: 2 });
    expect(qemuIdentical(primary, replica)).toBe(true);
    expect(await listTakenLogs(primary)).toEqual([]);
  });

  it('a lost link that cannot be re-established ends with one clear line', async () => {
    const { primary, target } = await pair('gone', 256 * MiB, 64, 400);
    const proxy = await new TcpProxy(port, 2).listen();
    proxy.dropAfter(MiB);
    const run = resync({ primary, replica: url(target, proxy.port), network: await network(), reconnect: { attempts: 2, delayMs: 50 } });
    await until(() => proxy.drops === 1);
    await proxy.close();
    await expect(run).rejects.toThrow(/the link was lost during the compare .* and 2 attempts to reconnect failed \(last: .*connection refused.*\); run the same command again to resume/);
  });

  it('--bandwidth 8mbps: bytes over elapsed time stay at or below the limit', async () => {
    const { primary, replica, target } = await pair('slow', 32 * MiB, 40, 500);
    const limiter = bandwidthLimiter({ rate: 1e6 })!; // 8 Mbps = 1 MB/s
    const t0 = performance.now();
    const r = await resync({ primary, replica: url(target), network: await network('client', 'ca', { limiter }) });
    const seconds = (performance.now() - t0) / 1000;
    expect(qemuIdentical(primary, replica)).toBe(true);
    expect(r.wireBytesSent).toBeGreaterThan(40 * 65536);
    // Nearly every byte goes out during the compare phase; the burst covers the handshake before it.
    expect(r.phases.compare).toBeGreaterThanOrEqual((r.wireBytesSent - limiter.burst) / 1e6);
    const mbps = (b: number, s: number) => ((b * 8) / s / 1e6).toFixed(2);
    console.log(`[network] --bandwidth 8mbps: ${r.wireBytesSent} bytes, ${mbps(r.wireBytesSent, r.phases.compare)} Mbps over the compare, ${mbps(r.wireBytesSent, seconds)} Mbps over the whole run (${seconds.toFixed(2)} s)`);
  });

  it('server --bandwidth caps what it receives from all clients together', async () => {
    const limiter = bandwidthLimiter({ rate: 2e6 })!; // 16 Mbps
    const { server: capped, port: cport, events: log } = await startServer(certs, root, { limiter });
    try {
      const a = await pair('cap1', 32 * MiB, 24, 600);
      const b = await pair('cap2', 32 * MiB, 24, 700);
      const net = await network();
      const t0 = performance.now();
      await Promise.all([resync({ primary: a.primary, replica: url(a.target, cport), network: net }), resync({ primary: b.primary, replica: url(b.target, cport), network: net })]);
      const seconds = (performance.now() - t0) / 1000;
      await until(() => log.filter((e) => e.event === 'finished').length === 2);
      const received = log.filter((e) => e.event === 'finished').reduce((n, e) => n + (e as { bytesReceived: number }).bytesReceived, 0);
      expect(received).toBeGreaterThan(48 * 65536);
      expect(seconds).toBeGreaterThanOrEqual((received - limiter.burst) / 2e6);
      expect(qemuIdentical(a.primary, a.replica) && qemuIdentical(b.primary, b.replica)).toBe(true);
      console.log(`[network] server --bandwidth 16mbps: ${received} bytes in ${seconds.toFixed(2)} s = ${((received * 8) / seconds / 1e6).toFixed(2)} Mbps`);
    } finally {
      await capped.close();
    }
  });
});

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}
