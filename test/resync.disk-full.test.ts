import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { resync } from '../host/index.js';
import { VhdsyncError } from '../host/errors.js';
import { loadTlsMaterial } from '../host/transport/tls-config.js';
import type { ReplicaServer, ServerEvent } from '../host/replica/server.js';
import { randomBytes } from './support/bytes.js';
import { makeCerts, type TestCerts } from './support/certs.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { startServer } from './support/replica-server.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';
import { cli } from './support/cli.js';

/**
 * A replica on a real, small file system that fills up during the compare (a 40 MiB tmpfs; the
 * overlay needs about 48 MiB). Needs mount(8) permission (root in CI); skipped with a message otherwise.
 */
const SIZE = 96 * MiB;
let dir: string;
let cleanup: () => void;
const mounts: string[] = [];
let mountError = '';

/** A fresh 40 MiB tmpfs of its own, or '' (and a warning) where mount is not permitted. */
async function smallFs(name: string): Promise<string> {
  const mnt = join(dir, name);
  await mkdir(mnt);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', mnt], { stdio: ['ignore', 'ignore', 'pipe'] });
    mounts.push(mnt);
    return mnt;
  } catch (e) {
    mountError = String((e as { stderr?: Buffer }).stderr ?? e).trim();
    console.warn(`resync.disk-full: skipped, cannot mount a small tmpfs here (${mountError}); run as root to test a full replica disk`);
    return '';
  }
}

beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-full-')));
afterAll(async () => {
  for (const m of mounts) spawnSync('umount', ['-l', m]);
  await cleanup();
});

/** Give the file system room: the rerun after the user freed space. */
function grow(mnt: string): void {
  execFileSync('mount', ['-o', 'remount,size=200m', mnt]);
}

/** Half of every 2 MiB differs: the overlay needs ~48 MiB, more than the 40 MiB file system holds. */
async function pair(mnt: string, name: string): Promise<{ primary: string; replica: string }> {
  const writes: [number, Uint8Array][] = [];
  for (let off = 0; off < SIZE; off += 2 * MiB) writes.push([off, randomBytes(MiB, off / MiB + 3)]);
  const primary = await rawImage(join(dir, `${name}-p.img`), SIZE, writes);
  await mkdir(join(mnt, name));
  const replica = await rawImage(join(mnt, name, 'disk.img'), SIZE);
  return { primary, replica };
}

describe.skipIf(process.platform !== 'linux')('a replica disk that fills up during the compare', () => {
  it('local: exit 2 within seconds with one line naming the full device; with space, the rerun resumes and finishes identical', async (ctx) => {
    const mnt = await smallFs('local-fs');
    if (!mnt) return ctx.skip();
    const { primary, replica } = await pair(mnt, 'local');
    const at = { home: join(dir, 'home') };
    const full = cli(['resync', primary, replica, '--no-progress'], at, 60_000);
    expect(full.signal, 'the resync hung on a full disk and was killed').toBeNull();
    expect(full.status).toBe(2);
    const lines = full.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^vhdsync: ${mnt}/local/disk\\.img\\S*: no space left on the device holding ${mnt}/local/disk\\.img\\S*; free space there`));

    grow(mnt);
    const again = cli(['resync', primary, replica, '--json'], at, 120_000);
    expect(again.status, again.stderr).toBe(0);
    const r = JSON.parse(again.stdout);
    expect(r).toMatchObject({ result: 'completed', identical: true });
    expect(r.resumedFrom, 'the rerun resumed from the checkpoint of the run that filled the disk').toBeGreaterThan(0);
    expect(qemuIdentical(primary, replica)).toBe(true);
  });

  describe('over TLS, the replica server on the full file system', () => {
    let certs: TestCerts;
    let server: ReplicaServer | undefined;
    let port = 0;
    let events: ServerEvent[] = [];
    let mnt = '';
    beforeAll(async () => {
      mnt = await smallFs('remote-fs');
      if (!mnt) return;
      certs = await makeCerts(join(dir, 'certs'));
      ({ server, port, events } = await startServer(certs, mnt, { maxActiveTransfers: 1 }));
    });
    afterAll(() => server?.close());

    it('the primary fails within seconds with the line, the server frees its transfer slot, and a rerun with space finishes identical', async (ctx) => {
      if (!mnt) return ctx.skip();
      const { primary, replica } = await pair(mnt, 'remote');
      const network = { tls: await loadTlsMaterial(certs.files('client')) };
      const url = `tls://127.0.0.1:${port}/remote/disk.img`;
      const t0 = performance.now();
      const failed = await resync({ primary, replica: url, network }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const seconds = (performance.now() - t0) / 1000;
      expect(failed).toBeInstanceOf(VhdsyncError);
      expect((failed as VhdsyncError).message).toMatch(/no space left on the device holding .*remote\/disk\.img/);
      expect(seconds, 'the resync should fail, not hang until a stall timeout').toBeLessThan(50);
      // The one transfer slot (maxActiveTransfers 1) is free again: the server finished the session.
      for (let i = 0; i < 100 && !events.some((e) => e.event === 'finished' && e.target === 'remote/disk.img'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(events.find((e) => e.event === 'finished' && e.target === 'remote/disk.img')).toMatchObject({ outcome: expect.stringMatching(/no space left/) });

      grow(mnt);
      const again = await resync({ primary, replica: url, network });
      expect(again).toMatchObject({ result: 'completed', identical: true });
      expect(again.resumedFrom).toBeGreaterThan(0);
      expect(qemuIdentical(primary, replica)).toBe(true);
    });
  });
});
