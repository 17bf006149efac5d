import type { TrackRecord } from '../tracking/log.js';
import { MiB } from '../units.js';
import { planWrites, type WorkloadPattern } from '../tracking/workload.js';
import type { RunningVm } from './running-vm.js';

export interface WorkloadOptions {
  pattern: WorkloadPattern;
  /** Bytes per second over all disks (Infinity: as fast as the disks go). */
  rate: number;
  durationMs: number;
  seed: number;
  /** Stop after this many bytes (default: rate × duration). */
  bytes?: number;
  /** Polled between bursts: true ends the run early (SIGTERM / SIGINT). */
  shouldStop?: () => boolean;
  /** Called after each burst. */
  onBurst?: (bytes: number, writes: number) => void;
}

export interface WorkloadResult {
  writes: number;
  bytes: number;
  seconds: number;
  perDisk: number[];
  stoppedEarly: boolean;
}

const TICK_MS = 50;
/** At most this many bytes are planned and held per tick, so an unlimited rate stays bounded in memory. */
const MAX_BURST_BYTES = 16 * MiB;
const FLUSH_MS = 1000;

/**
 * Drive a running VM with a realistic, seeded write mix (host/tracking/workload.ts), spread over its
 * disks, at a steady rate: each 50 ms tick writes the bytes the rate allows so far, one burst per disk
 * (one lock and one log sync per burst, as a guest's queue of writes would be).
 */
export async function driveWorkload(vm: RunningVm, o: WorkloadOptions): Promise<WorkloadResult> {
  const limit = o.bytes ?? (Number.isFinite(o.rate) ? Math.floor((o.rate * o.durationMs) / 1000) : Number.MAX_SAFE_INTEGER);
  const n = vm.disks.length;
  const plans = vm.disks.map((d, i) =>
    planWrites(o.pattern, { diskSize: d.virtualSize, bytes: Math.ceil(limit / n) + 4096, seed: o.seed * 1000 + i }),
  );
  const exhausted = plans.map(() => false);
  const perDisk = plans.map(() => 0);
  const t0 = performance.now();
  let bytes = 0;
  let writes = 0;
  let turn = 0;
  let stoppedEarly = false;
  let flushedAt = t0;
  for (;;) {
    const elapsed = performance.now() - t0;
    if (o.shouldStop?.()) {
      stoppedEarly = true;
      break;
    }
    if (elapsed >= o.durationMs || bytes >= limit || exhausted.every(Boolean)) break;
    const due = Number.isFinite(o.rate) ? (o.rate * (elapsed + TICK_MS)) / 1000 : limit;
    const allowed = Math.min(limit, due, bytes + MAX_BURST_BYTES);
    const bursts: TrackRecord[][] = plans.map(() => []);
    while (bytes < allowed && !exhausted.every(Boolean)) {
      const i = turn++ % n;
      if (exhausted[i]) continue;
      const next = plans[i].next();
      if (next.done) {
        exhausted[i] = true;
        continue;
      }
      bursts[i].push(next.value);
      bytes += next.value.data.byteLength;
      perDisk[i] += next.value.data.byteLength;
      writes++;
    }
    let burstBytes = 0;
    let burstWrites = 0;
    for (const [i, burst] of bursts.entries()) {
      if (burst.length === 0) continue;
      await vm.writeMany(i, burst);
      burstBytes += burst.reduce((s, w) => s + w.data.byteLength, 0);
      burstWrites += burst.length;
    }
    if (burstWrites > 0) o.onBurst?.(burstBytes, burstWrites);
    // A guest's file system commits about once a second (a FLUSH): what came before is on the disk.
    if (performance.now() - flushedAt >= FLUSH_MS) {
      for (const d of vm.disks) await d.flush();
      flushedAt = performance.now();
    }
    const wait = Number.isFinite(o.rate) ? t0 + elapsed + TICK_MS - performance.now() : 0;
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  await vm.settle();
  return { writes, bytes, seconds: (performance.now() - t0) / 1000, perDisk, stoppedEarly };
}
