import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { resync } from '../host/index.js';
import { openDisk } from '../host/disk/index.js';
import { loadCoreSync } from '../host/core/index.js';
import type { Disk } from '../host/disk/disk.js';
import { Channel } from '../host/resync/channel.js';
import { connectReplica, type ReplicaConnection } from '../host/resync/connect.js';
import { ReplicaEndpoint } from '../host/resync/replica.js';
import { createMemoryLink, MemoryLink } from '../host/transport/memory-link.js';
import { VhdsyncError } from '../host/errors.js';
import { randomBytes } from './support/bytes.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-faults-')));
afterAll(() => cleanup());

/** Fails the test instead of hanging it: the promise must settle within `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: still running after ${ms} ms (hung)`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** A Node system error as fs raises it on an open handle: a code and a syscall, no path. */
function systemError(code: string, syscall: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected, ${syscall}`), { code, errno: -1, syscall });
}

type Fault = { method: 'read' | 'write' | 'flush'; afterBytes: number; error: () => Error };

/** Opens disks normally, then makes `method` of each disk (writable ones, for write and flush) throw once `afterBytes` went through it. */
function faultyOpen(fault: Fault): typeof openDisk {
  return async (path, options) => {
    const disk = await openDisk(path, options);
    if (fault.method !== 'read' && options?.readOnly) return disk;
    let bytes = 0;
    return new Proxy(disk, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target) as unknown;
        if (typeof v !== 'function') return v;
        if (prop !== fault.method) return (v as (...a: unknown[]) => unknown).bind(target);
        return async (...args: unknown[]) => {
          const data = args[1] as Uint8Array | undefined;
          bytes += data?.byteLength ?? 0;
          if (bytes > fault.afterBytes) throw fault.error();
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    }) as Disk;
  };
}

/** The replica endpoint in this thread (so its disks can be wrapped), reached over an in-memory link. */
function inProcess(open: typeof openDisk): { connect: typeof connectReplica; ended: () => Promise<void> } {
  let ended: Promise<void> = Promise.resolve();
  const connect: typeof connectReplica = async (replica, o) => {
    const { local, remotePort } = createMemoryLink(o.link);
    ended = new ReplicaEndpoint(new MemoryLink(remotePort, o.link), replica, loadCoreSync(), open).run();
    const conn: ReplicaConnection = {
      link: local,
      failed: new Promise<never>(() => {}),
      async close() {
        local.close();
        await ended;
      },
    };
    return conn;
  };
  return { connect, ended: () => ended };
}

async function pair(name: string, size: number): Promise<{ primary: string; replica: string }> {
  const writes: [number, Uint8Array][] = [];
  for (let off = 0; off < size; off += 2 * MiB) writes.push([off, randomBytes(MiB, off / MiB + 7)]);
  return { primary: await rawImage(join(dir, `${name}-p.img`), size, writes), replica: await rawImage(join(dir, `${name}-r.img`), size) };
}

describe('a failure on either side ends both sides with one line', () => {
  it('an exception in a channel handler reaches the peer as an error frame, and both links close', async () => {
    const { local, remotePort } = createMemoryLink({ rate: Infinity, latencyMs: 0 });
    const a = new Channel(local);
    const b = new Channel(new MemoryLink(remotePort, { rate: Infinity, latencyMs: 0 }));
    const closed = (ch: Channel) => new Promise<Error | undefined>((resolve) => ch.onClosed(resolve));
    const aClosed = closed(a);
    const bClosed = closed(b);
    b.on('end', () => {
      throw new TypeError("Cannot read properties of undefined (reading 'levels')");
    });
    const waiting = a.expect('never-sent');
    await a.send({ t: 'end', regions: Uint32Array.of(1) });
    const err = await within(waiting.catch((e: unknown) => e), 5000, 'the peer of the failing side');
    expect(err).toBeInstanceOf(VhdsyncError);
    expect((err as VhdsyncError).code).toBe('INTERNAL');
    expect((err as VhdsyncError).message).toMatch(/^internal error \(TypeError: Cannot read properties/);
    await within(Promise.all([aClosed, bClosed]), 5000, 'both channels closing');
    expect(b.failed).toBeDefined();
  });

  const faults: [string, Fault, RegExp, string][] = [
    ['ENOSPC on an overlay write', { method: 'write', afterBytes: 6 * MiB, error: () => systemError('ENOSPC', 'write') }, /no space left on the device/, 'IO'],
    ['a TypeError on an overlay write', { method: 'write', afterBytes: 3 * MiB, error: () => new TypeError('x is not a function') }, /^internal error \(TypeError: x is not a function\)/, 'INTERNAL'],
    ['EIO on the flush before a checkpoint', { method: 'flush', afterBytes: -1, error: () => systemError('EIO', 'fsync') }, /input\/output error/, 'IO'],
    ['EIO reading the replica while hashing it', { method: 'read', afterBytes: 40 * MiB, error: () => systemError('EIO', 'read') }, /input\/output error/, 'IO'],
  ];
  for (const [name, fault, message, code] of faults) {
    it(`${name} on the replica: the primary fails with that line, the replica endpoint ends, a rerun finishes identical`, async () => {
      const { primary, replica } = await pair(name.replace(/\W+/g, '-'), 96 * MiB);
      const served = inProcess(faultyOpen(fault));
      const failed = await within(resync({ primary, replica, connect: served.connect }).then(() => undefined, (e: unknown) => e), 30_000, 'the primary');
      expect(failed).toBeInstanceOf(VhdsyncError);
      expect((failed as VhdsyncError).code).toBe(code);
      expect((failed as VhdsyncError).message).toMatch(message);
      expect((failed as VhdsyncError).message).not.toMatch(/\n/);
      await within(served.ended(), 10_000, 'the replica endpoint');
      const again = await resync({ primary, replica });
      expect(again).toMatchObject({ result: 'completed', identical: true });
      expect(qemuIdentical(primary, replica)).toBe(true);
    });
  }
});
