/**
 * Loading a VHDX image's structures from a file, in the order [MS-VHDX] 2.3.3 requires: file identifier,
 * current header, log replay (into the file when writable, into an in-memory view when read-only), region
 * table, metadata, BAT. Also the header writer: every header update goes to the non-current slot with
 * sequence + 1 and this open's FileWriteGuid, and is made durable before anything depends on it.
 */
import { VhdsyncError } from '../../errors.js';
import { formatSize } from '../../units.js';
import type { ImageFile } from '../file-io.js';
import { batLayout, ENTRY_SIZE, validateBat, type BatLayout } from './bat.js';
import {
  FILE_ID_SIZE, HEADER_OFFSETS, HEADER_SECTION_SIZE, HEADER_SIZE, buildHeader, parseFileIdentifier, pickHeader, type PickedHeader, type VhdxHeader,
} from './header.js';
import { guidText, isZeroGuid, randomGuid, roundUp } from './le.js';
import {
  MAX_LOG_LENGTH, ReplayedView, applyPlan, checkReplayBound, findActiveSequence, replayPlan, type LogTarget, type ReplayPlan,
} from './log.js';
import { METADATA_TABLE_SIZE, interpretMetadata, parseMetadataTable, type ItemKind, type VhdxParams } from './metadata.js';
import {
  REGION_TABLE1_OFFSET, REGION_TABLE2_OFFSET, REGION_TABLE_SIZE, pickRegionTable, validateRegions, type Extent, type Regions,
} from './region.js';

/** What happened to the log when the image was opened. */
export type LogState = 'empty' | 'replayed' | 'replayed-in-memory';

export interface VhdxImage {
  creator: string;
  header: PickedHeader;
  regions: Regions;
  log: Extent;
  params: VhdxParams;
  layout: BatLayout;
  /** The BAT's bytes, padded to whole 4 KiB pages (the unit of a log write). */
  bat: Uint8Array;
  /** Length of the file as the image sees it (after a replay, possibly longer than on disk). */
  fileSize: number;
  logState: LogState;
  /** Entries replayed at open (0 when the log was empty). */
  replayedEntries: number;
  /** For a read-only open of an image whose log was not empty: the replayed bytes over the file. */
  view?: ReplayedView;
  /** The header writer a writable replay already used (its session GUID must carry on). */
  headers?: HeaderWriter;
  warnings: string[];
}

/** Reads that go through the replayed view when there is one. */
export class ImageReader {
  constructor(
    readonly file: ImageFile,
    private readonly view?: ReplayedView,
  ) {}

  async readAt(into: Uint8Array, position: number, what: string): Promise<void> {
    if (!this.view) {
      await this.file.readAt(into, position, what);
      return;
    }
    if (position + into.length > this.view.size) {
      throw new VhdsyncError('TRUNCATED', `${this.file.path}: ${what} at byte ${position} lies past the end of the file; the image is truncated`);
    }
    const n = await this.file.readUpTo(into, position);
    if (n < into.length) into.fill(0, n); // the replay extends the file with zeros
    this.view.patch(into, position);
  }
}

const MIN_FILE = REGION_TABLE2_OFFSET + REGION_TABLE_SIZE;

/**
 * Read every structure of the VHDX in `file`. When `readOnly` is false and the log holds an active
 * sequence, the log is replayed into the file and cleared (as Hyper-V and qemu do on open).
 */
export async function readVhdxImage(file: ImageFile, fileSize: number, readOnly: boolean): Promise<VhdxImage> {
  const path = file.path;
  if (fileSize < MIN_FILE) {
    throw new VhdsyncError('TRUNCATED', `${path}: ${fileSize} bytes is too short for a VHDX (its header section alone is 1 MiB); the image is truncated`);
  }
  const id = new Uint8Array(FILE_ID_SIZE);
  await file.readAt(id, 0, 'the file identifier');
  const { creator } = parseFileIdentifier(id, path);
  const h1 = new Uint8Array(HEADER_SIZE);
  const h2 = new Uint8Array(HEADER_SIZE);
  await file.readAt(h1, HEADER_OFFSETS[0], 'header 1');
  await file.readAt(h2, HEADER_OFFSETS[1], 'header 2');
  const picked = pickHeader(h1, h2, path);
  const warnings = [...picked.warnings];
  const log: Extent = { offset: picked.header.logOffset, length: picked.header.logLength };

  // The log first: a replay may change the region table's targets (the BAT, the metadata).
  let logState: LogState = 'empty';
  let view: ReplayedView | undefined;
  let size = fileSize;
  let replayedEntries = 0;
  let headers: HeaderWriter | undefined;
  if (!isZeroGuid(picked.header.logGuid) && log.length > 0) {
    const plan = await readLog(file, fileSize, picked.header, log);
    if (plan) {
      // Bound the replay by the image it yields: its structures, read through the replayed bytes, say
      // how large the file can be; a log that writes or extends past that is refused before any write.
      const preview = new ReplayedView(plan, fileSize);
      const shape = await readLayout(new ImageReader(file, preview), preview.size, log, path, []);
      checkReplayBound(plan, Math.max(fileSize, largestFile(shape.regions, log, shape.layout)), path);
      replayedEntries = plan.entries;
      if (readOnly) {
        view = new ReplayedView(plan, fileSize);
        size = view.size;
        logState = 'replayed-in-memory';
        warnings.push(`the log holds ${plan.entries} unapplied entr${plan.entries === 1 ? 'y' : 'ies'}; read through them (open writable to replay them into the file)`);
      } else {
        headers = new HeaderWriter(file, picked);
        await headers.update({}); // a new FileWriteGuid before the first write of this open
        size = await applyPlan(file, plan, fileSize);
        await headers.update({ logGuid: new Uint8Array(16) });
        logState = 'replayed';
      }
    }
  }
  const reader = new ImageReader(file, view);

  const { regions, params, layout } = await readLayout(reader, size, log, path, warnings);
  const batBytes = layout.entryCount * ENTRY_SIZE;
  if (batBytes > regions.bat.length) {
    throw new VhdsyncError(
      'BAD_BAT',
      `${path}: a ${formatSize(params.virtualSize)} VHDX with ${formatSize(params.blockSize)} blocks needs ${layout.entryCount} BAT entries but the BAT region holds ${regions.bat.length / ENTRY_SIZE}; the image is corrupt`,
    );
  }
  if (regions.bat.offset + batBytes > size) {
    throw new VhdsyncError('TRUNCATED', `${path}: the VHDX BAT (${formatSize(batBytes)} at ${formatSize(regions.bat.offset)}) lies past the end of the file; the image is truncated`);
  }
  // Whole pages: a BAT page is what goes through the log. Bytes past the file's end read as zeros.
  const bat = new Uint8Array(Math.min(roundUp(batBytes, 4096), regions.bat.length));
  const pageBytes = Math.min(bat.length, size - regions.bat.offset);
  await reader.readAt(bat.subarray(0, pageBytes), regions.bat.offset, 'the BAT');
  validateBat(bat, layout, size, [log, regions.bat, regions.metadata], path);

  return { creator, header: picked, regions, log, params, layout, bat, fileSize: size, logState, replayedEntries, view, headers, warnings };
}

async function readLog(file: ImageFile, fileSize: number, header: VhdxHeader, log: Extent): Promise<ReplayPlan | null> {
  if (log.length > MAX_LOG_LENGTH) {
    throw new VhdsyncError(
      'UNSUPPORTED',
      `${file.path}: the VHDX log (${formatSize(log.length)}) needs replaying and is larger than vhdsync replays (${formatSize(MAX_LOG_LENGTH)}); run 'qemu-img check -r all' on it first`,
    );
  }
  if (log.offset + log.length > fileSize) {
    throw new VhdsyncError('TRUNCATED', `${file.path}: the VHDX log (${formatSize(log.length)} at ${formatSize(log.offset)}) lies past the end of the file; the image is truncated`);
  }
  const bytes = new Uint8Array(log.length);
  await file.readAt(bytes, log.offset, 'the log');
  const entries = findActiveSequence(bytes, header.logGuid);
  if (entries.length === 0) return null;
  return replayPlan(entries, fileSize, log, file.path);
}

export function headerWriterFor(file: ImageFile, image: VhdxImage): HeaderWriter {
  return image.headers ?? new HeaderWriter(file, image.header);
}

/**
 * Header updates for one open. The first update of an open carries a fresh FileWriteGuid ([MS-VHDX]
 * 2.2.2: before the first write to the file); every update writes the non-current slot with sequence
 * + 1, so a torn write leaves the previous header current.
 */
export class HeaderWriter {
  private index: 0 | 1;
  private current: VhdxHeader;
  private readonly session = randomGuid();

  constructor(
    private readonly file: ImageFile,
    picked: PickedHeader,
  ) {
    this.index = picked.index;
    this.current = picked.header;
  }

  get header(): VhdxHeader {
    return this.current;
  }

  get dataWriteGuid(): string {
    return guidText(this.current.dataWriteGuid);
  }

  async update(change: { dataWriteGuid?: Uint8Array; logGuid?: Uint8Array }): Promise<void> {
    const next: VhdxHeader = {
      ...this.current,
      sequenceNumber: this.current.sequenceNumber + 1n,
      fileWriteGuid: this.session,
      ...(change.dataWriteGuid ? { dataWriteGuid: change.dataWriteGuid } : {}),
      ...(change.logGuid ? { logGuid: change.logGuid } : {}),
    };
    const slot = this.index === 0 ? 1 : 0;
    await this.file.writeAt(buildHeader(next), HEADER_OFFSETS[slot]);
    await this.file.sync();
    this.index = slot;
    this.current = next;
  }

  /** Both slots updated (qemu `vhdx_update_headers`): used when a write session begins. */
  async updateBoth(change: { dataWriteGuid?: Uint8Array }): Promise<void> {
    await this.update(change);
    await this.update({});
  }
}

/** The log writer's view of an open image. */
export function logTarget(file: ImageFile, log: Extent, headers: HeaderWriter, fileSize: () => number): LogTarget {
  let seq = 0n;
  return {
    file,
    log,
    setLogGuid: (guid) => headers.update({ logGuid: guid }),
    fileSize,
    nextSequence: () => ++seq,
  };
}

/** Region table, metadata and BAT layout, read through `reader` (the file, or the file with a replay over it). */
async function readLayout(reader: ImageReader, size: number, log: Extent, path: string, warnings: string[]): Promise<{ regions: Regions; params: VhdxParams; layout: BatLayout }> {
  const t1 = new Uint8Array(REGION_TABLE_SIZE);
  const t2 = new Uint8Array(REGION_TABLE_SIZE);
  await reader.readAt(t1, REGION_TABLE1_OFFSET, 'region table 1');
  await reader.readAt(t2, REGION_TABLE2_OFFSET, 'region table 2');
  const table = pickRegionTable(t1, t2, path);
  warnings.push(...table.warnings);
  const regions = validateRegions(table.entries, log, path);

  const meta = regions.metadata;
  if (meta.offset + METADATA_TABLE_SIZE > size) {
    throw new VhdsyncError('TRUNCATED', `${path}: the VHDX metadata region at ${formatSize(meta.offset)} lies past the end of the ${formatSize(size)} file; the image is truncated`);
  }
  const mt = new Uint8Array(METADATA_TABLE_SIZE);
  await reader.readAt(mt, meta.offset, 'the metadata table');
  const where = parseMetadataTable(mt, meta.length, path);
  const items: Partial<Record<ItemKind, Uint8Array>> = {};
  for (const [kind, loc] of Object.entries(where) as Array<[ItemKind, { offset: number; length: number }]>) {
    if (meta.offset + loc.offset + loc.length > size) {
      throw new VhdsyncError('TRUNCATED', `${path}: VHDX metadata ${kind} lies past the end of the file; the image is truncated`);
    }
    const b = new Uint8Array(loc.length);
    await reader.readAt(b, meta.offset + loc.offset, `metadata ${kind}`);
    items[kind] = b;
  }
  const params = interpretMetadata(items, path);
  const layout = batLayout({
    blockSize: params.blockSize,
    logicalSectorSize: params.logicalSectorSize,
    virtualSize: params.virtualSize,
    differencing: params.hasParent,
  });
  return { regions, params, layout };
}

/** The largest file these structures can describe: every region, every block and sector bitmap allocated. */
function largestFile(regions: Regions, log: Extent, layout: BatLayout): number {
  const structures = Math.max(...[regions.bat, regions.metadata, log].map((r) => r.offset + r.length), HEADER_SECTION_SIZE);
  const bitmapBlocks = layout.differencing ? Math.ceil(layout.blockCount / layout.chunkRatio) : 0;
  return structures + layout.blockCount * layout.blockSize + bitmapBlocks * 1024 * 1024;
}
