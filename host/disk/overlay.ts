/**
 * The resync overlay: a differencing disk over the replica's base, so every resync write lands in the
 * overlay and a cancel leaves the base untouched (Hyper-V: "cancel = drop the differencing disk"). Over a
 * VHDX base the overlay is a differencing VHDX (2 MiB blocks unless told otherwise, Hyper-V's default for
 * differencing disks); over anything else it is a differencing VHD.
 *
 * The base may be a VHDX or VHD (fixed, dynamic or differencing) or a raw image. Over a raw image the overlay is
 * a vhdsync extension of the VHD format: creator application `vhds`, parent unique id all zeros, W2ru
 * and W2ku locators naming the raw file. `openDisk` accepts a raw parent only for such an overlay, and
 * only when the raw file's size equals the overlay's virtual size. Other tools see a differencing VHD
 * whose parent they cannot open.
 */
import { MiB } from '../units.js';
import { createDifferencing, type CreateDifferencingOptions } from './vhd/create.js';
import { isVhdxFile } from './open.js';
import { createVhdxDifferencing } from './vhdx/create.js';

const VHDX_OVERLAY_BLOCK_SIZE = 2 * MiB;

export async function createOverlay(basePath: string, overlayPath: string, options: CreateDifferencingOptions = {}): Promise<void> {
  if (await isVhdxFile(basePath)) {
    await createVhdxDifferencing(overlayPath, basePath, { ...options, blockSize: options.blockSize ?? VHDX_OVERLAY_BLOCK_SIZE });
  } else {
    await createDifferencing(overlayPath, basePath, options);
  }
}
