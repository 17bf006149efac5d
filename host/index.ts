/**
 * vhdsync's Node API, chosen name by name: open, create, compare and resync disks; track writes; run
 * replication. The on-disk structures' parsers and builders (parseFooter, parseBat, the VHD/VHDX
 * backends, ...) are `vhdsync/formats`; the browser-safe WASM core alone is `vhdsync/core`.
 */
export { VhdsyncError, ERROR_CODES, type ErrorCode } from './errors.js';
export { parseSize, formatSize } from './units.js';

// Disks: any image by path, new images, and the resync overlay's lifecycle.
export type { Disk, BlockStatus, DiskFormat, DiskType } from './disk/disk.js';
export { openDisk, type OpenOptions } from './disk/open.js';
export { detectFormat, IMAGE_FORMATS, type ImageFormat } from './disk/detect.js';
export { createVhd, createDifferencing, type CreateVhdOptions, type CreateDifferencingOptions } from './disk/vhd/create.js';
export { createVhdx, createVhdxDifferencing, type CreateVhdxOptions, type CreateVhdxDifferencingOptions } from './disk/vhdx/create.js';
export { createOverlay } from './disk/overlay.js';
export { mergeOverlay, discardOverlay, type MergeOptions, type MergeResult } from './disk/merge.js';

// The core, compare, checksum, resync.
export { loadCore, loadCoreSync, getCore } from './core/index.js';
export type { Core, WasmRegion } from './core/types.js';
export { resync, startResync, cancelResync, type ResyncOptions, type ResyncResult, type ResyncProgress, type ResyncHandle } from './resync/resync.js';
export { diskChecksum } from './resync/checksum.js';
export { diffDisks, type DiffResult } from './resync/diff.js';
export { overlayPathFor, checkpointPathFor } from './resync/paths.js';

// Events and counters, tracked writes.
export { EventLog, readEventLog, type EventRecord } from './events/event-log.js';
export { CounterStore } from './events/counters.js';
export { openTrackedDisk, trackingLogPathFor } from './tracking/tracked-disk.js';
export { readTrackingLog } from './tracking/log.js';
export { parseRate } from './transport/rate.js';

// Replication (Hyper-V Replica's model): the API behind the *-replication verbs.
export { Replication } from './replication/replication.js';
export { enableReplication, removeReplication, setReplication, type EnableInput } from './replication/enable.js';
export { suspendReplication, resumeReplication, stopReplication, resetStatistics, type ResumeInput } from './replication/control.js';
export { startInitialReplication, scheduleInitialReplication, runResync, type ResyncRunOptions, type ResyncRunOutcome } from './replication/resync-run.js';
export { evaluateTriggers, requireResync } from './replication/resync-required.js';
export { replicationView, healthNow, measureReplication, type Measurement } from './replication/views.js';
export { RunningVm, type RunOptions } from './replication/running-vm.js';
export { driveWorkload, type WorkloadOptions, type WorkloadResult } from './replication/workload-driver.js';
export { REPLICATION_STATES, REPLICATION_HEALTH, RESYNC_REASONS, type ReplicationState, type ReplicationHealth, type ResyncReason } from './replica/states.js';
export type { ReplicationSettings } from './replication/settings.js';
