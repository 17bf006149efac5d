/**
 * Reading one image file's format and structures, before any backend is built: the first and last
 * sectors, the one detection (detect.ts), then the VHD's footer, header and BAT (vhd/image.ts) or the
 * VHDX's headers, log, regions, metadata and BAT (vhdx/image.ts). The routine behind both `openDisk`
 * (a path) and the page's `openImage` (a picked file), so the two cannot drift. No node: imports: the
 * page bundles it.
 */
import { detectFormat, type ImageFormat } from './detect.js';
import type { ImageFile } from './file-io.js';
import { readFooterCandidates, readVhdMetadata, type VhdMetadata } from './vhd/image.js';
import { readVhdxImage, type VhdxImage } from './vhdx/image.js';

export type ImageStructures = { format: 'raw' } | { format: 'vhd'; meta: VhdMetadata } | { format: 'vhdx'; image: VhdxImage };

/**
 * The format of `file` (`size` bytes) and its structures, checked. `forced` and `parentOf` as in
 * `detectFormat`: a forced `raw` reads nothing. A read-only VHDX's unreplayed log is replayed in memory.
 */
export async function readImage(file: ImageFile, size: number, readOnly: boolean, forced?: ImageFormat, parentOf?: string): Promise<ImageStructures> {
  if (forced === 'raw') return { format: 'raw' };
  const { head, tail } = await readFooterCandidates(file, size);
  const format = detectFormat(file.path, head, tail, forced, parentOf);
  if (format === 'vhdx') return { format, image: await readVhdxImage(file, size, readOnly) };
  if (format === 'raw') return { format };
  return { format, meta: await readVhdMetadata(file, size, head, tail) };
}
