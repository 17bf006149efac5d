import { VhdsyncError } from '../errors.js';
import { activityLogPathFor, diskFileId, readActivityLog, sameFile } from './activity-log.js';
import { dirtyExtents, dirtyMapPathFor, emptyDirtyMap, readDirtyMap, setBit, writeDirtyMap, type DirtyMap } from './dirty-map.js';
import { DEFAULT_EXTENT_SIZE, extentRanges, extentsOf, rangeBytes } from './extents.js';
import { currentLog, listSealedLogs, listTakenLogs, trackingLogPathFor } from './log-files.js';
import { HEADER_BYTES, scanTrackingLog } from './log.js';

/**
 * A resync's scope on one disk: where primary and replica may differ. Everything else is known equal
 * and is not compared. `undefined` ranges mean the whole disk (a full compare).
 */
export interface DiskScope {
  extentSize: number;
  /** Sorted, disjoint byte ranges [start, end). */
  ranges: [number, number][];
  bytes: number;
}

/**
 * Replication stops logging data (a crash, or logs past the size limit): every extent that may differ
 * from the replica goes into the disk's dirty map — the activity log's extents, the extents of every
 * unshipped log (open, sealed, taken by a resync), and what the map already held — before the logs go.
 * From then on the tracker marks writes there (bitmap mode). Call under the disk's log lock.
 * Returns the map; throws when a log cannot be read, or the map already there is damaged, kept for
 * another replica or size, or — `mapKept`: the requirement's extents were collected before — gone
 * (the caller falls back to a full compare).
 */
export async function absorbIntoDirtyMap(
  primaryPath: string,
  disk: { virtualSize: number; replica: string },
  extentSize = DEFAULT_EXTENT_SIZE,
  opts: { mapKept?: boolean } = {},
): Promise<DirtyMap> {
  // A damaged, lost or foreign map throws: the caller falls back to a full compare rather than lose extents.
  const old = opts.mapKept ? await checkDirtyMap(primaryPath, disk) : await readDirtyMap(primaryPath);
  if (old) checkMapFits(old, primaryPath, disk);
  const map = emptyDirtyMap(disk.virtualSize, extentSize, disk.replica);
  const total = Math.ceil(disk.virtualSize / extentSize);
  const mark = (offset: number, length: number) => {
    for (const e of extentsOf(offset, length, extentSize)) if (e < total) setBit(map.bits, e);
  };
  // What the map held stays.
  for (const e of old ? dirtyExtents(old) : []) mark(e * old!.extentSize, old!.extentSize);
  const al = await readActivityLog(primaryPath);
  if (al?.disk) {
    const now = await diskFileId(primaryPath);
    if (!sameFile(al.disk, now)) {
      throw new VhdsyncError('STATE', `${activityLogPathFor(primaryPath)}: the activity log was kept for another file (inode ${al.disk.ino}) than ${primaryPath} (inode ${now.ino}); where this disk was written is unknown`);
    }
  }
  for (const e of al?.extents ?? []) mark(e * al!.extentSize, al!.extentSize);
  const logs: string[] = [];
  // A log killed while it was being created (shorter than its header) never took a record: appends
  // read the header first. Any other damage throws (the caller falls back to a full compare).
  const open = await currentLog(primaryPath).catch((e: VhdsyncError) => {
    if (e.code === 'TRUNCATED') return undefined;
    throw e;
  });
  // A tracker makes its activity log durable before its first append (and a running VM's disk writes go
  // beside its appends, covered by that log alone): a log appended to by a writer that did not close it
  // and no readable activity log means the extents those writes reached are unknown.
  if (!al && open && open.size > HEADER_BYTES && open.header.writerPid !== 0) {
    throw new VhdsyncError('NOT_FOUND', `${activityLogPathFor(primaryPath)}: the activity log is gone or unreadable, while ${trackingLogPathFor(primaryPath)} was written by process ${open.header.writerPid} and not closed; where its writes reached is unknown`);
  }
  if (open) logs.push(trackingLogPathFor(primaryPath));
  for (const s of await listSealedLogs(primaryPath)) logs.push(s.path);
  logs.push(...(await listTakenLogs(primaryPath)));
  for (const log of logs) {
    // A torn tail ends the log: its records never reached the disk (appends are synced first).
    await scanTrackingLog(log, (r) => mark(r.offset, r.data.byteLength));
  }
  await writeDirtyMap(primaryPath, map);
  return map;
}

/**
 * The dirty map a disk must have while its replication keeps one (a DirtyExtents requirement whose
 * extents were collected): present, readable, and about this replica and this size. Anything else
 * means extents may have been lost, and throws (the caller widens the scope to Full).
 */
export async function checkDirtyMap(primaryPath: string, disk: { virtualSize: number; replica: string }): Promise<DirtyMap> {
  const map = await readDirtyMap(primaryPath);
  if (!map) throw new VhdsyncError('NOT_FOUND', `${dirtyMapPathFor(primaryPath)}: the dirty map is gone; the extents it held are lost`);
  checkMapFits(map, primaryPath, disk);
  return map;
}

/** A map kept for another replica, or for another size of the disk, says nothing of where this replica differs. */
function checkMapFits(map: DirtyMap, primaryPath: string, disk: { virtualSize: number; replica: string }): void {
  const path = dirtyMapPathFor(primaryPath);
  if (map.replica !== disk.replica) throw new VhdsyncError('STATE', `${path}: the dirty map is kept for the replica ${map.replica}, not ${disk.replica}`);
  if (map.virtualSize !== disk.virtualSize) throw new VhdsyncError('SIZE_MISMATCH', `${path}: the dirty map is for a disk of ${map.virtualSize} bytes; the disk has ${disk.virtualSize}`);
}

/** The scope a disk's dirty map gives (undefined: no map, so no known scope). */
export async function dirtyScope(primaryPath: string, virtualSize: number): Promise<DiskScope | undefined> {
  const map = await readDirtyMap(primaryPath);
  if (!map) return undefined;
  return scopeOfMap(map, virtualSize);
}

export function scopeOfMap(map: DirtyMap, virtualSize: number): DiskScope {
  const ranges = extentRanges(dirtyExtents(map), map.extentSize, virtualSize);
  return { extentSize: map.extentSize, ranges, bytes: rangeBytes(ranges) };
}
