import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from './support/bytes.js';
import { cli, background, type CliAt } from './support/cli.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

/**
 * Issue 13 item 13: control over a slow link. Ctrl-C pauses within ~2 s whatever the link's rate
 * (exit 3, a checkpoint with work left), and the same command without --link then finishes the
 * resync to an identical replica. The in-flight window follows the link's rate, and a pause that the
 * replica has not confirmed in time drops the link without delivering what is still queued.
 */
let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir()));
afterAll(() => cleanup());

/** Generous for a loaded 2-core machine, far below the runs' full length (≥ 45 s at these rates). */
const EXIT_BOUND_MS = 15_000;

async function sizeOf(path: string): Promise<number> {
  return (await stat(path).catch(() => undefined))?.size ?? -1;
}

/**
 * Start `vhdsync resync` at `rate`, SIGINT it once data has reached the replica's overlay (its file
 * grows past its size at creation), and measure how long it takes to exit from then.
 */
async function interruptWhileSending(p: string, r: string, rate: string, at: CliAt): Promise<{ code: number | null; ms: number; stdout: string; stderr: string }> {
  const run = background(['resync', p, r, '--link', rate], at);
  const { child } = run;
  let exitedEarly = false;
  const exited = run.exited.then((x) => ((exitedEarly = true), x.code));
  const overlay = r + '.resync.vhd';
  let created = -1;
  // Sending has started once the overlay has grown past its size at creation (data was written into it).
  for (;;) {
    if (exitedEarly) throw new Error(`the resync ended before it sent anything: ${run.output().stderr}`);
    const now = await sizeOf(overlay);
    if (created < 0 && now > 0) created = now;
    else if (created > 0 && now > created) break;
    await new Promise((res) => setTimeout(res, 20));
  }
  const t0 = performance.now();
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_BOUND_MS);
  const code = await exited;
  clearTimeout(timer);
  return { code, ms: performance.now() - t0, ...run.output() };
}

describe('pause over a slow link (issue 13 item 13)', () => {
  // The replica endpoint in its own thread, and in the primary's (both drop the link the same way).
  for (const { rate, size, differing, thread } of [
    { rate: '10mbps', size: 64 * MiB, differing: 32 * MiB, thread: 'always' },
    { rate: '1.5mbps', size: 32 * MiB, differing: 16 * MiB, thread: 'never' },
  ]) {
    it(`Ctrl-C at ${rate} (replica thread: ${thread}) pauses within the bound (exit 3, work left), and the same command resumes to identical`, async () => {
      const data = randomBytes(differing, rate.length);
      const p = await rawImage(join(dir, `${rate}-p.img`), size, [[0, data]]);
      const r = await rawImage(join(dir, `${rate}-r.img`), size);
      const home = join(dir, `home-${rate}`);
      const paused = await interruptWhileSending(p, r, rate, { home, env: { VHDSYNC_REPLICA_THREAD: thread } });
      console.log(`pause at ${rate}: exit ${paused.code} ${(paused.ms / 1000).toFixed(2)} s after SIGINT`);
      expect(paused.code, paused.stderr).toBe(3);
      expect(paused.ms).toBeLessThan(EXIT_BOUND_MS);
      const cp = JSON.parse(await readFile(r + '.resync.json', 'utf8'));
      expect(cp.phase).toBe('comparing');
      expect(cp.nextRegion).toBeLessThan(size / (16 * MiB));
      expect(qemuIdentical(p, r)).toBe(false);

      const resumed = cli(['resync', p, r], { home, env: { VHDSYNC_REPLICA_THREAD: thread } });
      expect(resumed.status, resumed.stderr).toBe(0);
      expect(qemuIdentical(p, r)).toBe(true);
    }, 60_000);
  }
});
