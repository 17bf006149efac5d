/**
 * The dirty-extent promise, proven with real processes: a child writes random writes (512 B – 1 MiB,
 * hot spots) through the tracker, seals and ships its logs as replication does, and is SIGKILLed —
 * at random moments, and right after the activity-log record (inside the log append) or right after
 * the append (before the data write). After each crash every sector where primary and replica differ
 * lies inside the scope collected from the activity log and the unshipped logs, and the resync scoped
 * to it makes the replica identical (qemu-img compare) reading no more than the scope.
 *
 * VHDSYNC_EXTENT_CRASHES sets the number of crashes (default 30), VHDSYNC_EXTENT_RESYNC_EVERY how
 * often a scoped resync follows (default every 5th); `npm run soak:extents` runs 300, each resynced.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { readActivityLog } from '../host/tracking/activity-log.js';
import { withLogLock } from '../host/tracking/log-files.js';
import { absorbIntoDirtyMap, scopeOfMap } from '../host/tracking/scope.js';
import { resync } from '../host/resync/resync.js';
import { MiB } from '../host/units.js';
import { requireBuild } from './support/crash-harness.js';
import { crashWriter, type KillMode, sectorsOutside, trackedPair } from './support/extent-crash.js';
import { qemuIdentical } from './support/oracles.js';
import { removeDir, tempDir } from './support/temp-dir.js';

const CRASHES = Number(process.env.VHDSYNC_EXTENT_CRASHES ?? 30);
/** The scoped resync runs after every n-th crash (every one in the soak; it costs ~1 s on a busy machine). */
const RESYNC_EVERY = Number(process.env.VHDSYNC_EXTENT_RESYNC_EVERY ?? 5);
const SIZE = 48 * MiB;

let dir: string;
beforeAll(() => {
  requireBuild();
  dir = tempDir('vhdsync-extents-').dir;
});
afterAll(() => removeDir(dir));

describe('a crash never leaves a difference outside (activity log ∪ unshipped logs)', () => {
  it(`holds over ${CRASHES} SIGKILLs at random moments and between the activity-log record and the data write; the scoped resync then makes them identical`, async () => {
    const modes: KillMode[] = ['timer', 'in-append', 'after-append'];
    const tally = { crashes: 0, differing: 0, scopeBytes: 0, byMode: { timer: 0, 'in-append': 0, 'after-append': 0 } as Record<KillMode, number>, evicting: 0, resyncs: 0, bytesRead: 0 };
    for (let i = 0; i < CRASHES; i++) {
      const work = join(dir, `crash-${i}`);
      mkdirSync(work);
      const seed = 1000 + i * 7919;
      const mode = modes[i % 3];
      // Small extents and a small activity log in some runs, so extents are evicted while writes go on.
      const extentSize = [64 * 1024, 256 * 1024, MiB][i % 3 === 0 ? (i / 3) % 3 : (i + 1) % 3];
      const alExtents = i % 2 === 0 ? 8 : 1024;
      const pair = await trackedPair(work, SIZE, seed);
      const run = await crashWriter(dir, pair, { seed, mode, extentSize, alExtents, killAt: 3 + (i % 17), killAfterMs: 20 + ((i * 37) % 180) });
      expect(run.killed, `crash ${i}: the child was killed`).toBe(true);
      const map = await withLogLock(pair.primary, () => absorbIntoDirtyMap(pair.primary, { virtualSize: SIZE, replica: pair.replica }, extentSize));
      const scope = scopeOfMap(map, SIZE);
      const { differing, outside } = await sectorsOutside(pair.primary, pair.replica, scope.ranges);
      expect(outside.slice(0, 5), `crash ${i} (${mode}, extent ${extentSize}, AL ${alExtents}): ${outside.length} differing sectors outside the scope`).toEqual([]);
      if (i % RESYNC_EVERY === 0) {
        const r = await resync({ primary: pair.primary, replica: pair.replica, scope: 'auto' });
        expect([r.result, r.scope, r.scopeBytes]).toEqual(['completed', 'DirtyExtents', scope.bytes]);
        expect(r.bytesReadPrimary).toBeLessThanOrEqual(scope.bytes);
        expect(qemuIdentical(pair.primary, pair.replica), `crash ${i}: identical after the scoped resync`).toBe(true);
        tally.resyncs++;
        tally.bytesRead += r.bytesRead;
      }
      const al = await readActivityLog(pair.primary);
      if (alExtents === 8 && (al?.extents.length ?? 0) === 8) tally.evicting++;
      tally.crashes++;
      tally.byMode[mode]++;
      tally.differing += differing;
      tally.scopeBytes += scope.bytes;
      removeDir(work);
    }
    // The scope is a real restriction, not the whole disk, and the crashes did leave differences.
    expect(tally.scopeBytes).toBeLessThan(tally.crashes * SIZE * 0.8);
    expect(tally.differing).toBeGreaterThan(0);
    process.stdout.write(`extents crash: ${JSON.stringify(tally)}\n`);
  });
});
