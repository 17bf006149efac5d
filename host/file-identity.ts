import { stat } from 'node:fs/promises';
import { ioError } from './errors.js';

/**
 * A file's identity: size, inode, device, modification and change times (nanoseconds). The change time
 * cannot be set back by anyone, so any write to the file shows. The primary compares it to tell a disk
 * modified while its VM was off (replication/fingerprint.ts); the replica, to tell a replica disk that is
 * not the one the last log was applied to (replica/local-site.ts).
 */
export interface FileIdentity {
  size: number;
  ino: string;
  dev: string;
  mtimeNs: string;
  ctimeNs: string;
}

export async function fileIdentity(path: string): Promise<FileIdentity> {
  const s = await stat(path, { bigint: true }).catch((e) => {
    throw ioError(path, e);
  });
  return { size: Number(s.size), ino: String(s.ino), dev: String(s.dev), mtimeNs: String(s.mtimeNs), ctimeNs: String(s.ctimeNs) };
}

export function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return a.size === b.size && a.ino === b.ino && a.dev === b.dev && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}
