/**
 * One writer on the replica server (issue 13, items 1 and 2): its queue is keyed by file identity, its
 * sessions hold the replica's lock like a local resync, and a cancel asks the running session to stop.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { copyFile, link, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { cancelResync, resync, startResync } from '../host/index.js';
import { lockHolderOf } from '../host/writer-lock.js';
import { loadTlsMaterial } from '../host/transport/tls-config.js';
import { bandwidthLimiter } from '../host/transport/token-bucket.js';
import { randomBytes } from './support/bytes.js';
import { sha256File } from './support/digest.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { serverFixture, type ServerFixture } from './support/replica-server.js';
import { MiB } from '../host/units.js';

let net: ServerFixture;
beforeAll(async () => (net = await serverFixture('vhdsync-netw-')));
afterAll(() => net?.close());

async function pair(name: string): Promise<{ primary: string; replica: string }> {
  const writes: [number, Uint8Array][] = [];
  for (let i = 0; i < 48; i++) writes.push([i * MiB, randomBytes(256 * 1024, 900 + i)]);
  const primary = await rawImage(join(net.dir, `${name}-p.img`), 64 * MiB, writes);
  await mkdir(join(net.root, name), { recursive: true });
  return { primary, replica: await rawImage(join(net.root, name, 'disk.img'), 64 * MiB) };
}

const url = (target: string) => `tls://127.0.0.1:${net.port}/${target}`;
const slow = async () => ({ tls: await loadTlsMaterial(net.certs.files('client', 'ca')), limiter: bandwidthLimiter({ rate: 2e6 })! });
const client = async () => ({ tls: await loadTlsMaterial(net.certs.files('client', 'ca')) });

async function heldBy(path: string, pid: number): Promise<void> {
  for (;;) {
    const h = await lockHolderOf(path);
    if (h !== 'free' && h?.pid === pid && existsSync(`${path}.resync.json`)) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('one writer on the replica server', () => {
  it('two resyncs of one disk under two hard-linked names run one after the other, never at once', async () => {
    const { primary, replica } = await pair('hl');
    await link(replica, join(net.root, 'hl', 'other-name.img'));
    // Two primaries of the same content: one primary is the source of one resync at a time (resync-source.ts).
    const twin = join(net.root, 'hl-twin.img');
    await copyFile(primary, twin);
    const before = net.server.peakActive;
    const [a, b] = await Promise.all([
      resync({ primary, replica: url('hl/disk.img'), network: await slow() }),
      resync({ primary: twin, replica: url('hl/other-name.img'), network: await slow() }),
    ]);
    expect([a.result, b.result]).toEqual(['completed', 'completed']);
    expect(qemuIdentical(primary, replica)).toBe(true);
    const queued = net.events.filter((e) => e.event === 'queued' && e.target.startsWith('hl/'));
    expect(queued).toHaveLength(1);
    expect(net.server.peakActive - before).toBeLessThanOrEqual(1);
  });

  it('a served resync holds the replica: a local resync of the same file is refused; a cancel stops the session and leaves the base untouched', async () => {
    const { primary, replica } = await pair('cx');
    const before = sha256File(replica);
    const running = startResync({ primary, replica: url('cx/disk.img'), network: await slow() });
    const outcome = running.done.then(() => 'completed', (e) => e);
    await heldBy(replica, process.pid); // the server runs in this test's process
    await expect(resync({ primary, replica })).rejects.toMatchObject({ code: 'BUSY', message: expect.stringMatching(/is in use by process \d+/) });
    const c = await cancelResync(url('cx/disk.img'), await client());
    expect(c.cancelled).toBe(true);
    expect(c.stopped?.pid).toBe(process.pid);
    const ended = await outcome;
    expect(ended).toMatchObject({ code: 'CANCELLED' });
    expect(sha256File(replica)).toBe(before);
    expect(existsSync(`${replica}.resync.json`)).toBe(false);
    expect(existsSync(`${replica}.resync.vhd`)).toBe(false);
    const again = await resync({ primary, replica: url('cx/disk.img'), network: await client() });
    expect(again).toMatchObject({ result: 'completed', identical: true, resumedFrom: 0 });
    expect(qemuIdentical(primary, replica)).toBe(true);
  });
});
