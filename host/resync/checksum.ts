import type { Core } from '../core/types.js';
import type { Disk } from '../disk/disk.js';
import { RegionScanner, makeShape, regionCount, rootOf, DIGEST_BYTES, DEFAULT_FANOUT } from './tree.js';
import { toHex } from '../bytes.js';

/**
 * A format-independent digest of a disk's virtual contents: the root of the same hash tree the
 * resync builds (4 KiB leaves, fan-out 16, 16 MiB regions), with the region roots hashed upward by
 * the same fan-out. A raw image and a VHD holding the same bytes have the same checksum.
 */
export async function diskChecksum(core: Core, disk: Disk, onProgress?: (done: number, total: number) => void): Promise<string> {
  const shape = makeShape(disk.virtualSize);
  const scanner = new RegionScanner(core, disk, shape);
  const count = regionCount(shape);
  let level = new Uint8Array(Math.max(1, count) * DIGEST_BYTES);
  try {
    for (let r = 0; r < count; r++) {
      level.set(rootOf(await scanner.scan(r)), r * DIGEST_BYTES);
      onProgress?.(Math.min((r + 1) * shape.regionSize, disk.virtualSize), disk.virtualSize);
    }
  } finally {
    scanner.free();
  }
  if (count === 0) level = core.hash128(new Uint8Array(0)) as Uint8Array<ArrayBuffer>;
  while (level.byteLength > DIGEST_BYTES) level = core.hashTree(level, DEFAULT_FANOUT) as Uint8Array<ArrayBuffer>;
  return toHex(level);
}
