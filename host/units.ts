import { VhdsyncError } from './errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: KiB, kb: KiB, kib: KiB, m: MiB, mb: MiB, mib: MiB, g: GiB, gb: GiB, gib: GiB, t: GiB * 1024, tb: GiB * 1024, tib: GiB * 1024,
};

/** Parse a byte size such as `4096`, `64K`, `2M`, `1.5G` (binary units). */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new VhdsyncError('USAGE', `${what}: '${text}' is not a size (examples: 4096, 64K, 2M, 10G)`);
  const value = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(value) || value < 0) throw new VhdsyncError('USAGE', `${what}: '${text}' is out of range`);
  return value;
}

/** Human-readable binary size: 1536 -> "1.5 KiB". */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${bytes} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0).replace(/\.0+$/, '')} ${units[u]}`;
}
