/** The disk layer's public API: open any image, create VHDs and VHDXs, and the resync overlay's lifecycle. */
export type { BlockStatus, ByteRange, Disk, DiskFormat, DiskLayer, DiskType } from './disk.js';
export { openDisk, openVhdAlone, openDiskAlone, openDiskLayer, isVhdxFile, MAX_CHAIN_DEPTH, type OpenOptions, type VhdDisk } from './open.js';
export { detectFormat, foreignFormat, parseImageFormat, IMAGE_FORMATS, type ImageFormat, type ForeignFormat } from './detect.js';
export { createVhd, createDifferencing, type CreateVhdOptions, type CreateDifferencingOptions } from './vhd/create.js';
export { createOverlay } from './overlay.js';
export { mergeOverlay, discardOverlay, mergeJournalPath, type MergeOptions, type MergeResult } from './merge.js';
export { RawDisk, FLAT_BLOCK_SIZE } from './raw.js';
export { useSyncIo, syncIoInUse } from './file-io.js';
export { VhdFixedDisk } from './vhd/fixed.js';
export { VhdDynamicDisk } from './vhd/dynamic.js';
export {
  parseFooter, buildFooter, chsGeometry, geometrySize, diskTypeName, timestampDate, VHD_MAX_SIZE, type VhdFooter, type Geometry,
} from './vhd/footer.js';
export { parseDynamicHeader, buildDynamicHeader, type DynamicHeader, type ParentLocator } from './vhd/header.js';
export { parseBat, validateBat, bitmapBytesFor } from './vhd/bat.js';
export { uuidText } from './vhd/be.js';
export { VhdxDisk } from './vhdx/disk.js';
export { createVhdx, createVhdxDifferencing, DEFAULT_VHDX_BLOCK_SIZE, type CreateVhdxOptions, type CreateVhdxDifferencingOptions } from './vhdx/create.js';
export type { LogState } from './vhdx/image.js';
export { resizeImage, parseResizeTarget, type ResizeTarget, type ResizeOptions, type ResizeResult } from './resize.js';
