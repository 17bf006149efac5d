/**
 * The resync overlay: a differencing VHD over the replica's base, so every resync write lands in the
 * overlay and a cancel leaves the base untouched (Hyper-V: "cancel = drop the differencing disk").
 *
 * The base may be a VHD (fixed, dynamic or differencing) or a raw image. Over a raw image the overlay is
 * a vhdsync extension of the VHD format: creator application `vhds`, parent unique id all zeros, W2ru
 * and W2ku locators naming the raw file. `openDisk` accepts a raw parent only for such an overlay, and
 * only when the raw file's size equals the overlay's virtual size. Other tools see a differencing VHD
 * whose parent they cannot open.
 */
import { createDifferencing, type CreateDifferencingOptions } from './create.js';

export async function createOverlay(basePath: string, overlayPath: string, options: CreateDifferencingOptions = {}): Promise<void> {
  await createDifferencing(overlayPath, basePath, options);
}
