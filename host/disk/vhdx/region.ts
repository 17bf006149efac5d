/**
 * The VHDX region table ([MS-VHDX] 2.2.3): 64 KiB at 192 KiB (an identical copy at 256 KiB) listing where
 * the BAT and the metadata region live. Entries must be whole MiB, outside the header section, and must
 * not overlap each other or the log; an unknown region marked required must be refused. qemu writes
 * Required = 0 for the two known regions, so the bit is not demanded of them.
 */
import { VhdsyncError } from '../../errors.js';
import { HEADER_SECTION_SIZE } from './header.js';
import { crcValid, guidBytes, guidEqual, guidText, le32, le64, putLe32, putLe64, putSignature, sealCrc, shownSignature, signature } from './le.js';
import { KiB, MiB } from '../../units.js';

export const REGION_TABLE1_OFFSET = 192 * KiB;
export const REGION_TABLE2_OFFSET = 256 * KiB;
export const REGION_TABLE_SIZE = 64 * KiB;
export const MAX_REGION_ENTRIES = 2047;

export const BAT_REGION_GUID = guidBytes('2DC27766-F623-4200-9D64-115E9BFD4A08');
export const METADATA_REGION_GUID = guidBytes('8B7CA206-4790-4B9A-B8FE-575F050F886E');

export interface RegionEntry {
  guid: Uint8Array;
  fileOffset: number;
  length: number;
  required: boolean;
}

export interface Extent {
  offset: number;
  length: number;
}

export interface Regions {
  bat: Extent;
  metadata: Extent;
}

/** Parse one copy of the region table, or say why it is invalid (then the other copy is tried). */
export function parseRegionTable(b: Uint8Array): RegionEntry[] | { invalid: string } {
  if (b.length < REGION_TABLE_SIZE) return { invalid: 'truncated' };
  if (signature(b, 0, 4) !== 'regi') return { invalid: `signature '${shownSignature(b, 0, 4)}' instead of 'regi'` };
  if (!crcValid(b.subarray(0, REGION_TABLE_SIZE))) return { invalid: 'CRC-32C mismatch' };
  const count = le32(b, 8);
  if (count > MAX_REGION_ENTRIES) return { invalid: `${count} entries (at most ${MAX_REGION_ENTRIES})` };
  const out: RegionEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    out.push({ guid: b.slice(at, at + 16), fileOffset: le64(b, at + 16), length: le32(b, at + 24), required: (le32(b, at + 28) & 1) === 1 });
  }
  return out;
}

/** Pick the first valid copy of the region table. */
export function pickRegionTable(t1: Uint8Array, t2: Uint8Array, path: string): { entries: RegionEntry[]; warnings: string[] } {
  const a = parseRegionTable(t1);
  if (Array.isArray(a)) return { entries: a, warnings: [] };
  const b = parseRegionTable(t2);
  if (Array.isArray(b)) return { entries: b, warnings: [`region table at 192 KiB is invalid (${a.invalid}); using the copy at 256 KiB`] };
  throw new VhdsyncError(
    'BAD_CHECKSUM',
    `${path}: both VHDX region tables are invalid (at 192 KiB: ${a.invalid}; at 256 KiB: ${b.invalid}); the image is corrupt`,
  );
}

/**
 * Check the entries (alignment, overlaps with each other and with the log, unknown required regions)
 * and return the BAT and metadata regions.
 */
export function validateRegions(entries: RegionEntry[], log: Extent, path: string): Regions {
  const taken: Array<Extent & { what: string }> = [{ offset: 0, length: HEADER_SECTION_SIZE, what: 'the header section' }];
  if (log.length > 0) taken.push({ ...log, what: 'the log' });
  let bat: Extent | undefined;
  let metadata: Extent | undefined;
  for (const e of entries) {
    const isBat = guidEqual(e.guid, 0, BAT_REGION_GUID);
    const isMeta = guidEqual(e.guid, 0, METADATA_REGION_GUID);
    const name = isBat ? 'BAT region' : isMeta ? 'metadata region' : `region ${guidText(e.guid)}`;
    if (!isBat && !isMeta && e.required) {
      throw new VhdsyncError('UNSUPPORTED', `${path}: the VHDX requires region ${guidText(e.guid)}, which vhdsync does not know; refusing to open it`);
    }
    if (!Number.isSafeInteger(e.fileOffset) || e.fileOffset % MiB !== 0 || e.length % MiB !== 0 || e.length === 0) {
      throw new VhdsyncError('BAD_SIZE', `${path}: ${name} at ${e.fileOffset} (+${e.length}) is not a whole number of MiB; the image is corrupt`);
    }
    for (const t of taken) {
      if (e.fileOffset < t.offset + t.length && t.offset < e.fileOffset + e.length) {
        throw new VhdsyncError('BAD_SIZE', `${path}: ${name} at ${e.fileOffset} (+${e.length}) overlaps ${t.what}; the image is corrupt`);
      }
    }
    taken.push({ offset: e.fileOffset, length: e.length, what: `the ${name}` });
    if (isBat || isMeta) {
      if ((isBat && bat) || (isMeta && metadata)) {
        throw new VhdsyncError('BAD_SIZE', `${path}: the region table lists the ${name} twice; the image is corrupt`);
      }
      if (isBat) bat = { offset: e.fileOffset, length: e.length };
      else metadata = { offset: e.fileOffset, length: e.length };
    }
  }
  if (!bat || !metadata) {
    throw new VhdsyncError('BAD_SIZE', `${path}: the region table has no ${bat ? 'metadata' : 'BAT'} region; the image is corrupt`);
  }
  return { bat, metadata };
}

export function buildRegionTable(regions: Regions): Uint8Array {
  const b = new Uint8Array(REGION_TABLE_SIZE);
  putSignature(b, 0, 'regi');
  putLe32(b, 8, 2);
  const put = (i: number, guid: Uint8Array, e: Extent) => {
    const at = 16 + i * 32;
    b.set(guid, at);
    putLe64(b, at + 16, e.offset);
    putLe32(b, at + 24, e.length);
    putLe32(b, at + 28, 1); // Required, as Hyper-V writes it
  };
  put(0, BAT_REGION_GUID, regions.bat);
  put(1, METADATA_REGION_GUID, regions.metadata);
  sealCrc(b);
  return b;
}
