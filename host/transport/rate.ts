import { VhdsyncError } from '../errors.js';

/** Below this (8 kbps), a rate without a unit is taken for a forgotten unit: `--link 1.5` meant 1.5mbps. */
const MIN_UNITLESS_BYTES_PER_SECOND = 1000;

/**
 * Parse a link rate into bytes per second. Accepts bit rates (`1gbps`, `1.5mbps`, `10mbit`, `512kbps`),
 * byte rates (`10MB/s`, `4MiB/s`), a plain number of bytes per second, or `unlimited` (returns Infinity).
 * A plain number below 1000 bytes per second (8 kbps) is refused as a likely missing unit; with a unit
 * (`4kbps`, `500b/s`) any rate goes.
 */
export function parseRate(text: string, what = '--link'): number {
  const t = text.trim().toLowerCase();
  if (t === 'unlimited' || t === 'none' || t === 'inf') return Infinity;
  const m = /^(\d+(?:\.\d+)?)\s*([a-z/]*)$/.exec(t);
  if (m) {
    const v = Number(m[1]);
    const unit = m[2];
    const bits: Record<string, number> = { bps: 1, bit: 1, kbps: 1e3, kbit: 1e3, mbps: 1e6, mbit: 1e6, gbps: 1e9, gbit: 1e9 };
    const bytes: Record<string, number> = {
      '': 1, 'b/s': 1, 'kb/s': 1e3, 'mb/s': 1e6, 'gb/s': 1e9, 'kib/s': 1024, 'mib/s': 1024 ** 2, 'gib/s': 1024 ** 3,
    };
    if (unit === '' && v > 0 && v < MIN_UNITLESS_BYTES_PER_SECOND) {
      throw new VhdsyncError('USAGE', `${what}: '${text}' has no unit, so it would be ${v} bytes per second (${formatRate(v)}); did you mean ${m[1]}mbps? Give the unit: ${m[1]}mbps, ${m[1]}MB/s, or ${v}b/s if you mean it`);
    }
    if (unit in bits && v > 0) return (v * bits[unit]) / 8;
    if (unit in bytes && v > 0) return v * bytes[unit];
  }
  throw new VhdsyncError('USAGE', `${what}: '${text}' is not a rate (examples: 1gbps, 1.5mbps, 10mbit, 10MB/s, 125000, unlimited)`);
}

export function formatRate(bytesPerSecond: number): string {
  if (!Number.isFinite(bytesPerSecond)) return 'unlimited';
  const bits = bytesPerSecond * 8;
  if (bits >= 1e9) return `${+(bits / 1e9).toFixed(2)} Gbps`;
  if (bits >= 1e6) return `${+(bits / 1e6).toFixed(2)} Mbps`;
  if (bits >= 1e3) return `${+(bits / 1e3).toFixed(2)} kbps`;
  return `${bits} bps`;
}
