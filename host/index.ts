/** vhdsync's Node API. The browser-safe WASM core alone is `vhdsync/core`. */
export { VhdsyncError, type ErrorCode } from './errors.js';
export { parseSize, formatSize } from './units.js';
export type { Disk, BlockStatus, DiskFormat, DiskType } from './disk/disk.js';
export * from './disk/index.js';
export { loadCore, loadCoreSync, getCore } from './core/index.js';
export type { Core, WasmRegion } from './core/types.js';
export { resync, startResync, cancelResync, type ResyncOptions, type ResyncResult, type ResyncProgress, type ResyncHandle } from './resync/resync.js';
export { diskChecksum } from './resync/checksum.js';
export { diffDisks, type DiffResult } from './resync/diff.js';
export { overlayPathFor, checkpointPathFor } from './resync/paths.js';
export { EventLog, type EventRecord } from './events/event-log.js';
export { CounterStore } from './events/counters.js';
export { openTrackedDisk, trackingLogPathFor } from './tracking/tracked-disk.js';
export { readTrackingLog } from './tracking/log.js';
export { parseRate } from './transport/rate.js';
export * from './replication/index.js';
