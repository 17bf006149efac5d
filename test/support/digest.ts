import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { loadCore } from '../../host/core/index.js';
import { openDisk } from '../../host/disk/index.js';
import { diskChecksum } from '../../host/resync/checksum.js';

/** SHA-256 of a file's bytes, hex: equal before and after means the file was not touched. */
export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** A digest of an image's virtual contents, read through our disk layer: equal across formats and layouts. */
export async function imageDigest(path: string): Promise<string> {
  const core = await loadCore();
  const disk = await openDisk(path, { readOnly: true });
  try {
    return await diskChecksum(core, disk);
  } finally {
    await disk.close();
  }
}
