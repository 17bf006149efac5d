import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { resync, startResync } from '../host/index.js';
import { connectReplica } from '../host/resync/connect.js';
import { decode, encode, type Message } from '../host/transport/protocol.js';
import { loadTlsMaterial } from '../host/transport/tls-config.js';
import { randomBytes } from './support/bytes.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { serverFixture, type ServerFixture } from './support/replica-server.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

/**
 * The resync's round trips (protocol.ts, "Round trips"): a fresh run sends its start with the hello,
 * the roots flow on the credit granted in start, and the merge follows compare-done at once — and a
 * peer that does none of it (an older one) still gets a complete, identical resync.
 */
let dir: string;
let cleanup: () => void;
let net: ServerFixture;
beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-rtt-'));
  net = await serverFixture('vhdsync-rtt-net-');
  await mkdir(join(net.root, 'vm'), { recursive: true });
});
afterAll(async () => {
  await net?.close();
  cleanup();
});

async function pair(name: string, where = dir): Promise<{ primary: string; replica: string }> {
  const size = 48 * MiB;
  const writes: [number, Uint8Array][] = [0, 17, 40].map((m, i) => [m * MiB, randomBytes(64 * 1024, 300 + i)]);
  return { primary: await rawImage(join(dir, `${name}-p.img`), size, writes), replica: await rawImage(join(where, `${name}-r.img`), size) };
}

type Traced = { dir: 'up' | 'down'; what: string };

function what(frame: Uint8Array): string {
  const m: Message = decode(frame);
  return m.t === 'control' ? m.op : m.t;
}

/**
 * A connect that records every frame the primary sends (up) and receives (down), in order; `older`
 * strips what an older replica would not understand from the primary's messages (start in hello,
 * credit in start, the hello in a server's open).
 */
function traced(trace: Traced[], older = false): typeof connectReplica {
  return async (replica, o) => {
    const conn = await connectReplica(replica, older ? { ...o, hello: undefined } : o);
    const link = conn.link;
    const send = link.send.bind(link);
    link.send = (frame: Uint8Array) => {
      let out = frame;
      const m = decode(frame);
      if (older && m.t === 'control' && (m.op === 'hello' || m.op === 'start')) {
        const { start: _s, credit: _c, ...body } = m.body;
        out = encode({ t: 'control', op: m.op, body });
      }
      trace.push({ dir: 'up', what: what(out) });
      return send(out);
    };
    const onFrame = link.onFrame.bind(link);
    link.onFrame = (h) => onFrame((frame) => {
      trace.push({ dir: 'down', what: what(frame) });
      return h(frame);
    });
    return conn;
  };
}

const ups = (t: Traced[]) => t.filter((e) => e.dir === 'up').map((e) => e.what);

describe('round trips of a resync', () => {
  it('a fresh run: start goes with hello, no first credit, merge right behind compare-done; the replica is identical', async () => {
    const { primary, replica } = await pair('fresh');
    const trace: Traced[] = [];
    const r = await resync({ primary, replica, connect: traced(trace) });
    expect(r.result).toBe('completed');
    expect(qemuIdentical(primary, replica)).toBe(true);
    const sent = ups(trace);
    expect(sent).not.toContain('start');
    expect(sent[0]).toBe('hello');
    // Credit is only given back for ended regions: none before the first 'end'.
    expect(sent.indexOf('credit')).toBeGreaterThan(sent.indexOf('end'));
    const i = trace.findIndex((e) => e.what === 'compare-done');
    expect(trace[i + 1]).toEqual({ dir: 'up', what: 'merge' });
    expect(trace.findIndex((e) => e.what === 'commit')).toBeGreaterThan(trace.findIndex((e) => e.what === 'merged'));
  });

  it('with a replica that takes neither the start in hello nor the credit in start (older), it sends both itself and completes', async () => {
    const { primary, replica } = await pair('older');
    const trace: Traced[] = [];
    const r = await resync({ primary, replica, connect: traced(trace, true) });
    expect(r.result).toBe('completed');
    expect(qemuIdentical(primary, replica)).toBe(true);
    const sent = ups(trace);
    expect(sent.slice(0, 3)).toEqual(['hello', 'start', 'credit']);
  });

  it('a paused run resumes with a start of its own (the replica has a checkpoint) and finishes identical', async () => {
    const { primary, replica } = await pair('resume');
    // Pause as soon as the first region is done.
    const handle: { h?: ReturnType<typeof startResync> } = {};
    handle.h = startResync({ primary, replica, link: { rate: 1e6, latencyMs: 1 }, onProgress: (p) => void (p.bytesCompared > 0 && handle.h?.pause()) });
    expect((await handle.h.done).result).toBe('paused');
    const trace: Traced[] = [];
    const r = await resync({ primary, replica, connect: traced(trace) });
    expect(r.result).toBe('completed');
    expect(r.resumedFrom).toBeGreaterThan(0);
    expect(ups(trace).slice(0, 2)).toEqual(['hello', 'start']);
    expect(qemuIdentical(primary, replica)).toBe(true);
  });

  it('over mutual TLS, the hello rides in open: welcome and started come back without a hello frame', async () => {
    const { primary, replica } = await pair('tls', join(net.root, 'vm'));
    const tls = await loadTlsMaterial(net.certs.files('client'));
    const trace: Traced[] = [];
    const r = await resync({ primary, replica: `tls://127.0.0.1:${net.port}/vm/tls-r.img`, network: { tls }, connect: traced(trace) });
    expect(r.result).toBe('completed');
    expect(qemuIdentical(primary, replica)).toBe(true);
    expect(ups(trace)).not.toContain('hello');
    expect(ups(trace)).not.toContain('start');
    expect(trace.slice(0, 2)).toEqual([{ dir: 'down', what: 'welcome' }, { dir: 'down', what: 'started' }]);
  });

  it('over mutual TLS, a client that keeps its hello out of open (older) is served as before', async () => {
    const { primary, replica } = await pair('tls-old', join(net.root, 'vm'));
    const tls = await loadTlsMaterial(net.certs.files('client'));
    const trace: Traced[] = [];
    const r = await resync({ primary, replica: `tls://127.0.0.1:${net.port}/vm/tls-old-r.img`, network: { tls }, connect: traced(trace, true) });
    expect(r.result).toBe('completed');
    expect(qemuIdentical(primary, replica)).toBe(true);
    expect(ups(trace).slice(0, 3)).toEqual(['hello', 'start', 'credit']);
  });
});
