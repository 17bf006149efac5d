import { VhdsyncError } from '../errors.js';
import { parseRate } from './rate.js';

/**
 * Bandwidth limiting (ARCHITECTURE.md "Network"; Hyper-V has none). A token bucket that may go into debt:
 * `reserve(n)` takes n bytes at once and returns how long the caller must wait before using them,
 * so frames larger than the bucket still pass, and the long-run rate never exceeds the limit. The
 * rate is read at every refill, which lets a schedule change it in the middle of a transfer.
 */
export class TokenBucket {
  private tokens: number;
  private last = performance.now();

  constructor(
    /** Bytes per second now; Infinity for no limit. */
    private readonly rateNow: () => number,
    /** Bytes that may pass in one burst after an idle time. */
    readonly burst = 64 * 1024,
  ) {
    this.tokens = burst;
  }

  get rate(): number {
    return this.rateNow();
  }

  /** Take n bytes; returns the milliseconds to wait before they may be used (0 when they may go now). */
  reserve(n: number): number {
    this.refill();
    if (!Number.isFinite(this.rateNow())) return 0;
    this.tokens -= n;
    return this.debtMs();
  }

  /** Take n bytes and wait until they may be used. Re-checks the rate at least every second. */
  async take(n: number): Promise<void> {
    let wait = this.reserve(n);
    while (wait > 0) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 1000)));
      this.refill();
      wait = this.debtMs();
    }
  }

  private debtMs(): number {
    const rate = this.rateNow();
    return this.tokens >= 0 || !Number.isFinite(rate) ? 0 : (-this.tokens / rate) * 1000;
  }

  private refill(): void {
    const now = performance.now();
    const rate = this.rateNow();
    // Unlimited forgives any debt; a limit that starts later starts from an empty bucket.
    this.tokens = Number.isFinite(rate) ? Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * rate) : 0;
    this.last = now;
  }
}

/** One window of a bandwidth schedule, in minutes after local midnight; `end` may wrap past midnight. */
export interface ScheduleWindow {
  start: number;
  end: number;
  rate: number;
}

export interface BandwidthSchedule {
  windows: ScheduleWindow[];
  text: string;
}

/**
 * Parse `--bandwidth-schedule "08:00-18:00=2mbps,18:00-08:00=unlimited"`: comma-separated windows of
 * local time, each with a rate as `--bandwidth` takes it. Windows may wrap midnight and must not
 * overlap; outside every window, `--bandwidth` (or no limit) applies.
 */
export function parseBandwidthSchedule(text: string, what = '--bandwidth-schedule'): BandwidthSchedule {
  const windows: ScheduleWindow[] = [];
  const taken = new Array<number>(24 * 60).fill(-1);
  const parts = text.split(',').map((p) => p.trim());
  for (const [k, part] of parts.entries()) {
    const m = /^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*=\s*(.+)$/.exec(part);
    if (!m) throw new VhdsyncError('USAGE', `${what}: '${part}' is not a window (example: "08:00-18:00=2mbps,18:00-08:00=unlimited")`);
    const start = minutes(m[1], m[2]);
    const end = minutes(m[3], m[4]);
    if (start === undefined || end === undefined || start === 24 * 60) throw new VhdsyncError('USAGE', `${what}: '${part}' has a time outside 00:00–24:00`);
    if (start === end) throw new VhdsyncError('USAGE', `${what}: '${part}' is empty; for a whole day use 00:00-24:00`);
    const rate = parseRate(m[5], `${what} '${part}'`);
    for (let t = start; t !== end; t = (t + 1) % (24 * 60)) {
      if (taken[t] >= 0) throw new VhdsyncError('USAGE', `${what}: '${part}' overlaps '${parts[taken[t]]}'`);
      taken[t] = k;
      if (end === 24 * 60 && t === 24 * 60 - 1) break;
    }
    windows.push({ start, end: end % (24 * 60), rate });
  }
  return { windows, text };
}

function minutes(h: string, m: string): number | undefined {
  const hh = Number(h);
  const mm = Number(m);
  if (mm > 59 || hh > 24 || (hh === 24 && mm !== 0)) return undefined;
  return hh * 60 + mm;
}

/** The rate at a local time: the window that holds it, else the fallback. */
export function scheduledRate(s: BandwidthSchedule, at: Date, fallback: number): number {
  const t = at.getHours() * 60 + at.getMinutes();
  for (const w of s.windows) {
    const inside = w.start < w.end || w.end === 0 ? t >= w.start && (w.end === 0 || t < w.end) : t >= w.start || t < w.end;
    if (inside) return w.rate;
  }
  return fallback;
}

export interface BandwidthOptions {
  /** Bytes per second (Infinity or undefined: no limit). */
  rate?: number;
  schedule?: BandwidthSchedule;
}

/** The limiter for `--bandwidth` and `--bandwidth-schedule`, or undefined when neither limits anything. */
export function bandwidthLimiter(opts: BandwidthOptions): TokenBucket | undefined {
  const fallback = opts.rate ?? Infinity;
  const schedule = opts.schedule;
  if (!schedule && !Number.isFinite(fallback)) return undefined;
  const rateNow = schedule ? () => scheduledRate(schedule, new Date(), fallback) : () => fallback;
  // About 50 ms at the current rate, at least one 16 KiB slice: smooth, yet cheap in timer wake-ups.
  return new TokenBucket(rateNow, Math.max(16 * 1024, Math.min(1 << 20, Number.isFinite(rateNow()) ? rateNow() * 0.05 : 1 << 20)));
}
