import { getCore } from '../core/index.js';
import { openDisk } from '../disk/index.js';
import { fileIdentity, sameIdentity, type FileIdentity } from '../file-identity.js';
import { toHex } from '../bytes.js';

/**
 * What a disk looked like when its VM last stopped cleanly: the file's identity (size, inode,
 * modification and change times, in nanoseconds) and "probes" — digests of small ranges of the virtual
 * disk, taken where the last tracked writes landed. Evidence for two resync triggers:
 * - the file changed but every probe still reads what the VM wrote: someone modified the disk while the
 *   VM was off (Hyper-V: "VHD modified while the VM is off");
 * - the last tracked writes are no longer on the disk: an older copy was put back ("reverted").
 * The change time cannot be set back by anyone, so any write to the file shows.
 */
export interface Probe {
  offset: number;
  length: number;
  /** XXH3-128, hex. */
  digest: string;
  /** `written`: a range the VM wrote (its absence proves a revert); `sample`: a fixed sample of the disk. */
  kind: 'written' | 'sample';
}

export interface DiskFingerprint extends FileIdentity {
  probes: Probe[];
  /** The writing session the disk was closed by (also stamped in its tracking logs). */
  dataWriteId: string;
  recordedAt: string;
}

export const PROBE_BYTES = 4096;
export const MAX_PROBES = 24;

/** Eight ranges spread over the disk, for a disk nobody has written through the tracker yet. */
export function sampleRanges(virtualSize: number): { offset: number; length: number }[] {
  const out: { offset: number; length: number }[] = [];
  const n = 8;
  for (let i = 0; i < n; i++) {
    const offset = Math.floor((virtualSize * i) / n / PROBE_BYTES) * PROBE_BYTES;
    const length = Math.min(PROBE_BYTES, virtualSize - offset);
    if (length > 0 && !out.some((r) => r.offset === offset)) out.push({ offset, length });
  }
  return out;
}

/** Digest the given ranges of a disk (opened read-only, any format). */
export async function readProbes(path: string, ranges: readonly { offset: number; length: number; kind: Probe['kind'] }[]): Promise<Probe[]> {
  if (ranges.length === 0) return [];
  const disk = await openDisk(path, { readOnly: true });
  try {
    const core = getCore();
    const out: Probe[] = [];
    for (const r of ranges) {
      const length = Math.max(0, Math.min(r.length, disk.virtualSize - r.offset));
      if (length === 0) continue;
      const buf = new Uint8Array(length);
      await disk.read(r.offset, buf);
      out.push({ offset: r.offset, length, digest: toHex(core.hash128(buf)), kind: r.kind });
    }
    return out;
  } finally {
    await disk.close();
  }
}

/** Take the fingerprint of a closed disk. */
export async function takeFingerprint(
  path: string,
  ranges: readonly { offset: number; length: number; kind: Probe['kind'] }[],
  dataWriteId: string,
  now: Date,
): Promise<DiskFingerprint> {
  const probes = await readProbes(path, ranges);
  return { ...(await fileIdentity(path)), probes, dataWriteId, recordedAt: now.toISOString() };
}

export type FingerprintVerdict =
  | { kind: 'unchanged' }
  | { kind: 'modified'; evidence: string }
  | { kind: 'reverted'; evidence: string };

/** Compare a disk with its fingerprint. Only reads the probes when the file itself changed. */
export async function checkFingerprint(path: string, fp: DiskFingerprint): Promise<FingerprintVerdict> {
  const now = await fileIdentity(path);
  if (sameIdentity(now, fp)) return { kind: 'unchanged' };
  const current = await readProbes(path, fp.probes);
  const lost = fp.probes.filter((p) => p.kind === 'written' && current.find((c) => c.offset === p.offset)?.digest !== p.digest);
  const when = `since the VM stopped cleanly at ${fp.recordedAt}`;
  const change = describeChange(fp, now);
  if (lost.length > 0) {
    const where = lost.slice(0, 3).map((p) => `offset ${p.offset}`).join(', ');
    return {
      kind: 'reverted',
      evidence: `${path}: ${change} ${when}, and the data of the last tracked writes (${where}${lost.length > 3 ? `, ${lost.length - 3} more` : ''}) is no longer on the disk: an older copy of the disk was put back`,
    };
  }
  return { kind: 'modified', evidence: `${path}: ${change} ${when}, with no tracked write to explain it: the disk was modified while the VM was off` };
}

function describeChange(was: FileIdentity, now: FileIdentity): string {
  const parts: string[] = [];
  if (was.ino !== now.ino || was.dev !== now.dev) parts.push('the file was replaced');
  if (was.size !== now.size) parts.push(`its size went from ${was.size} to ${now.size} bytes`);
  if (was.mtimeNs !== now.mtimeNs) parts.push(`its modification time went from ${nsText(was.mtimeNs)} to ${nsText(now.mtimeNs)}`);
  else if (was.ctimeNs !== now.ctimeNs) parts.push(`its change time went from ${nsText(was.ctimeNs)} to ${nsText(now.ctimeNs)}`);
  return parts.join(', ');
}

function nsText(ns: string): string {
  return new Date(Number(BigInt(ns) / 1_000_000n)).toISOString();
}
