import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from './support/bytes.js';
import { cli, background } from './support/cli.js';
import { sha256File } from './support/digest.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir()));
afterAll(() => cleanup());

/**
 * Run the CLI as a child and send it `signal` once the resync's checkpoint beside `replica` shows at
 * least one finished region; resolves with its exit and output.
 */
async function signalAfterProgress(args: string[], replica: string, signal: NodeJS.Signals): Promise<{ signalled: boolean; stdout: string; code: number | null }> {
  const run = background(args, { home: join(dir, 'home') });
  let done = false;
  const exited = run.exited.then((r) => ((done = true), r));
  const cp = replica + '.resync.json';
  while (!done && !(existsSync(cp) && JSON.parse(await readFile(cp, 'utf8').catch(() => '{}')).nextRegion > 0)) {
    await new Promise((res) => setTimeout(res, 10));
  }
  const signalled = !done;
  if (signalled) run.child.kill(signal);
  const { code, stdout } = await exited;
  return { signalled, stdout, code };
}

describe('vhdsync resync (CLI)', () => {
  it('prints one JSON object with the documented fields and exits 0 when the replica is equal', async () => {
    const p = await rawImage(join(dir, 'j-p.img'), 32 * MiB, [[MiB, randomBytes(65536, 1)]]);
    const r = await rawImage(join(dir, 'j-r.img'), 32 * MiB);
    const out = cli(['resync', p, r, '--json', '--link', '1gbps'], { home: join(dir, 'home') });
    expect(out.stderr).toBe('');
    expect(out.status).toBe(0);
    const j = JSON.parse(out.stdout);
    for (const k of ['result', 'virtualSize', 'bytesCompared', 'blocksSent', 'bytesSent', 'wireBytes', 'seconds', 'resumedFrom', 'events']) expect(j).toHaveProperty(k);
    expect(j).toMatchObject({ result: 'completed', virtualSize: 32 * MiB, bytesCompared: 32 * MiB, blocksSent: 16, bytesSent: 65536, resumedFrom: 0 });
    expect(j.events.map((e: { id: number }) => e.id)).toEqual([29242, 29244]);
    expect(qemuIdentical(p, r)).toBe(true);
    // events are also appended to the event log, and the counter accumulates
    const counters = JSON.parse(await (await import('node:fs/promises')).readFile(join(dir, 'home', 'counters.json'), 'utf8'));
    expect(counters['j-p']['Resynchronized Bytes']).toBe(65536);
  });

  it('counters that cannot be written after the replica is equal are one warning line, exit 0 (the work is done)', async () => {
    const p = await rawImage(join(dir, 'cw-p.img'), 8 * MiB, [[MiB, randomBytes(65536, 3)]]);
    const r = await rawImage(join(dir, 'cw-r.img'), 8 * MiB);
    const home = join(dir, 'home-counters');
    await mkdir(join(home, 'counters.json'), { recursive: true }); // in the way of the counters file
    const out = cli(['resync', p, r, '--no-progress'], { home });
    expect(out.status).toBe(0);
    expect(out.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^vhdsync: warning: the counters were not updated: .*counters\.json: is a directory/)]);
    expect(out.stdout).toMatch(/: completed/);
    expect(qemuIdentical(p, r)).toBe(true);
  });

  it('wrong flags and bad images fail with one line and exit 2', async () => {
    const p = await rawImage(join(dir, 'e-p.img'), 8 * MiB);
    const r = await rawImage(join(dir, 'e-r.img'), 4 * MiB);
    for (const args of [
      ['resync', p, r],
      ['resync', p, join(dir, 'missing.img')],
      ['resync', p, p + 'x', '--link', 'fast'],
      ['resync', p, r, '--leaf', '3000'],
      ['resync', p, r, '--bogus'],
    ]) {
      const out = cli(args, { home: join(dir, 'home') });
      expect(out.status, args.join(' ')).toBe(2);
      expect(out.stderr.trim().split('\n').length, out.stderr).toBeLessThanOrEqual(2);
      expect(out.stderr).not.toMatch(/at .*\.js:\d+/); // no stack trace
    }
    expect(cli(['resync', p, r], { home: join(dir, 'home') }).stderr).toMatch(/virtual size 4 MiB .* differs .* grow the replica first: vhdsync resize /);
    // An 11-day one-way latency is a typo (a pause would wait for it).
    const late = cli(['resync', p, p, '--latency', '1e9'], { home: join(dir, 'home') });
    expect(late.status).toBe(2);
    expect(late.stderr).toBe('vhdsync: --latency: 1e9 ms is more than 2000 ms (a satellite link is ~600 ms one way); give the one-way delay in milliseconds\n');
  });

  it('wire efficiency: 50 scattered 64 KiB changes on a 1 GiB disk cost at most 1.15x the changed bytes + 64 KiB', async () => {
    const size = 1024 * MiB;
    const changes: [number, Uint8Array][] = [];
    let seed = 12345;
    const next = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed / 2 ** 31);
    for (let i = 0; i < 50; i++) changes.push([Math.floor((next() * (size - 65536)) / 4096) * 4096, randomBytes(65536, 1000 + i)]);
    const p = await rawImage(join(dir, 'w-p.img'), size, [[0, randomBytes(8 * MiB, 5)], ...changes]);
    const r = await rawImage(join(dir, 'w-r.img'), size, [[0, randomBytes(8 * MiB, 5)]]);
    const out = cli(['resync', p, r, '--json'], { home: join(dir, 'home') });
    expect(out.status, out.stderr).toBe(0);
    const j = JSON.parse(out.stdout);
    const changed = j.bytesSent; // leaves that really differ (overlapping changes count once)
    expect(changed).toBeLessThanOrEqual(50 * 65536);
    expect(changed).toBeGreaterThan(45 * 65536);
    expect(j.wireBytes).toBeLessThanOrEqual(1.15 * 50 * 65536 + 65536);
    expect(qemuIdentical(p, r)).toBe(true);
  });

  it('SIGKILL at random points: every rerun continues from its checkpoint and the replica ends identical', async () => {
    const size = 512 * MiB;
    const writes: [number, Uint8Array][] = [];
    for (let off = 0; off < size; off += 16 * MiB) writes.push([off + 4096 * ((off / MiB) % 7), randomBytes(512 * 1024, off / MiB + 1)]);
    const p = await rawImage(join(dir, 'k-p.img'), size, writes);
    const r = await rawImage(join(dir, 'k-r.img'), size);
    const cp = r + '.resync.json';
    const checkpointRegion = async () => (existsSync(cp) ? JSON.parse(await readFile(cp, 'utf8')).nextRegion as number : -1);
    const args = ['resync', p, r, '--json', '--link', '10MB/s'];
    const seen: number[] = [];
    let kills = 0;
    let finishedEarly = false;
    // Kill each run at a random moment after its checkpoint has moved past the previous run's.
    for (let i = 0; i < 5 && !finishedEarly; i++) {
      const last = await checkpointRegion();
      const { child, exited } = background(args, { home: join(dir, 'home') });
      let done = false;
      void exited.then(() => (done = true));
      while (!done && (await checkpointRegion()) <= last) await new Promise((res) => setTimeout(res, 10));
      if (done) break;
      await new Promise((res) => setTimeout(res, (i * 37) % 120));
      child.kill('SIGKILL');
      await exited;
      const at = await checkpointRegion();
      // On a slow machine the first checkpoint seen may come late and the run may finish before the
      // kill lands: the resync is then complete, and nothing is left to resume.
      finishedEarly = at < 0;
      if (finishedEarly) break;
      kills++;
      seen.push(at);
    }
    expect(kills).toBeGreaterThanOrEqual(2);
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]);
    const finished = cli(args, { home: join(dir, 'home') });
    expect(finished.status, finished.stderr).toBe(0);
    const j = JSON.parse(finished.stdout);
    if (!finishedEarly) {
      expect(j.resumedFrom).toBe(seen[seen.length - 1] * 16 * MiB);
      expect(j.resumedFrom).toBeGreaterThan(0);
    }
    expect(existsSync(cp)).toBe(false);
    expect(qemuIdentical(p, r)).toBe(true);
  });

  it('SIGTERM pauses at a region boundary (exit 3, result paused); --restart then starts from the beginning', async () => {
    const size = 256 * MiB;
    const writes: [number, Uint8Array][] = [];
    for (let off = 0; off < size; off += 16 * MiB) writes.push([off, randomBytes(256 * 1024, off / MiB + 5)]);
    const p = await rawImage(join(dir, 't-p.img'), size, writes);
    const r = await rawImage(join(dir, 't-r.img'), size);
    const paused = await signalAfterProgress(['resync', p, r, '--json', '--link', '5MB/s'], r, 'SIGTERM');
    expect(paused.signalled).toBe(true);
    expect(paused.code).toBe(3);
    const j = JSON.parse(paused.stdout);
    expect(j.result).toBe('paused');
    expect(j.bytesCompared).toBeGreaterThan(0);
    expect(j.bytesCompared).toBeLessThan(size);
    expect(j.events.map((e: { id: number; result?: string }) => [e.id, e.result])).toEqual([[29242, undefined], [29244, 'paused']]);
    expect(existsSync(r + '.resync.json')).toBe(true);

    const again = cli(['resync', p, r, '--json', '--restart'], { home: join(dir, 'home') });
    expect(again.status, again.stderr).toBe(0);
    const k = JSON.parse(again.stdout);
    expect(k.resumedFrom).toBe(0);
    expect(k.bytesSent).toBe(16 * 256 * 1024);
    expect(qemuIdentical(p, r)).toBe(true);
  });

  it('--cancel leaves the replica base byte-identical; a wrong use of --cancel is a usage error', async () => {
    const size = 256 * MiB;
    const writes: [number, Uint8Array][] = [];
    for (let off = 0; off < size; off += 16 * MiB) writes.push([off, randomBytes(512 * 1024, off / MiB + 3)]);
    const p = await rawImage(join(dir, 'c-p.img'), size, writes);
    const r = await rawImage(join(dir, 'c-r.img'), size, [[0, randomBytes(4096, 9)]]);
    await copyFile(r, r + '.orig');
    const before = sha256File(r);
    const res = await signalAfterProgress(['resync', p, r, '--link', '10MB/s'], r, 'SIGKILL');
    expect(res.signalled).toBe(true);
    expect(existsSync(r + '.resync.vhd')).toBe(true);
    const out = cli(['resync', '--cancel', r], { home: join(dir, 'home') });
    expect(out.status).toBe(0);
    expect(out.stdout).toMatch(/cancelled/);
    expect(existsSync(r + '.resync.vhd')).toBe(false);
    expect(existsSync(r + '.resync.json')).toBe(false);
    expect(sha256File(r)).toBe(before);
    expect(cli(['resync', '--cancel', r, p], { home: join(dir, 'home') }).status).toBe(2);
  });
});
