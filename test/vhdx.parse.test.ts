/**
 * The pure VHDX structure functions on bytes: mixed-endian GUIDs, header choice by sequence number,
 * region and metadata tables, BAT arithmetic (chunk ratio, interleaved bitmap entries), LSB-first sector
 * bitmaps, and log entries (build, parse, active-sequence search across the circular buffer).
 */
import { describe, expect, it } from 'vitest';
import { batLayout, bitmapIndex, entryOffset, entryState, payloadIndex, putEntry } from '../host/disk/vhdx/bat.js';
import { bitAt, countBits, forEachRun, setBits } from '../host/disk/vhdx/bitmap.js';
import { buildHeader, pickHeader, type VhdxHeader } from '../host/disk/vhdx/header.js';
import { guidBytes, guidText, randomGuid } from '../host/disk/vhdx/le.js';
import { LOG_SECTOR, buildEntry, findActiveSequence, pagesPerEntry, parseEntry, type LogWrite } from '../host/disk/vhdx/log.js';
import { buildMetadataRegion, buildParentLocator, interpretMetadata, parseMetadataTable, parseParentLocator, type ItemKind } from '../host/disk/vhdx/metadata.js';
import { BAT_REGION_GUID, METADATA_REGION_GUID, buildRegionTable, pickRegionTable, validateRegions } from '../host/disk/vhdx/region.js';
import { syncError } from './support/typed-errors.js';
import { MiB } from '../host/units.js';

describe('GUIDs', () => {
  it('are stored mixed-endian (vhd-formats.md §2)', () => {
    expect(Buffer.from(BAT_REGION_GUID).toString('hex')).toBe('6677c22d23f600429d64115e9bfd4a08');
    expect(guidText(BAT_REGION_GUID)).toBe('2dc27766-f623-4200-9d64-115e9bfd4a08');
    expect(guidText(guidBytes('{8B7CA206-4790-4B9A-B8FE-575F050F886E}'))).toBe(guidText(METADATA_REGION_GUID));
  });
});

function header(seq: bigint, extra: Partial<VhdxHeader> = {}): VhdxHeader {
  return {
    sequenceNumber: seq, fileWriteGuid: randomGuid(), dataWriteGuid: randomGuid(), logGuid: new Uint8Array(16),
    logVersion: 0, version: 1, logLength: MiB, logOffset: MiB, ...extra,
  };
}

describe('headers', () => {
  it('the valid header with the higher sequence number is current', () => {
    const a = buildHeader(header(7n));
    const b = buildHeader(header(8n));
    expect(pickHeader(a, b, 'x').index).toBe(1);
    expect(pickHeader(b, a, 'x').index).toBe(0);
  });

  it('an invalid header (bad CRC) loses whatever its sequence number', () => {
    const a = buildHeader(header(7n));
    const b = buildHeader(header(9n));
    b[100] ^= 1;
    const p = pickHeader(a, b, 'x');
    expect(p.index).toBe(0);
    expect(p.warnings[0]).toMatch(/CRC/);
  });

  it('equal sequence numbers are corrupt unless the headers are identical (Disk2vhd)', () => {
    const h = header(5n);
    expect(pickHeader(buildHeader(h), buildHeader(h), 'x').index).toBe(0);
    const err = syncError(() => pickHeader(buildHeader(h), buildHeader({ ...h, dataWriteGuid: randomGuid() }), 'x'));
    expect(err.code).toBe('BAD_CHECKSUM');
  });

  it('both invalid is a typed one-line error', () => {
    const err = syncError(() => pickHeader(new Uint8Array(4096), new Uint8Array(4096), 'img.vhdx'));
    expect(err.code).toBe('BAD_CHECKSUM');
    expect(err.message).toMatch(/^img\.vhdx: both VHDX headers are invalid/);
  });
});

describe('region table', () => {
  const table = buildRegionTable({ bat: { offset: 2 * MiB, length: MiB }, metadata: { offset: 3 * MiB, length: MiB } });
  it('round-trips and the copy is used when the first table is damaged', () => {
    const broken = table.slice();
    broken[40] ^= 0xff;
    const picked = pickRegionTable(broken, table, 'x');
    expect(picked.warnings[0]).toMatch(/256 KiB/);
    const r = validateRegions(picked.entries, { offset: MiB, length: MiB }, 'x');
    expect(r).toEqual({ bat: { offset: 2 * MiB, length: MiB }, metadata: { offset: 3 * MiB, length: MiB } });
  });

  it('refuses regions that overlap the log or each other', () => {
    const entries = pickRegionTable(table, table, 'x').entries;
    expect(syncError(() => validateRegions(entries, { offset: 2 * MiB, length: MiB }, 'x')).code).toBe('BAD_SIZE');
    const dup = [...entries, { ...entries[0], guid: randomGuid(), required: false }];
    expect(syncError(() => validateRegions(dup, { offset: MiB, length: MiB }, 'x')).message).toMatch(/overlaps/);
  });

  it('refuses an unknown required region, ignores an unknown optional one', () => {
    const entries = pickRegionTable(table, table, 'x').entries;
    const extra = { guid: randomGuid(), fileOffset: 10 * MiB, length: MiB, required: true };
    expect(syncError(() => validateRegions([...entries, extra], { offset: MiB, length: MiB }, 'x')).code).toBe('UNSUPPORTED');
    expect(() => validateRegions([...entries, { ...extra, required: false }], { offset: MiB, length: MiB }, 'x')).not.toThrow();
  });
});

describe('metadata', () => {
  const params = {
    blockSize: 32 * MiB, leaveBlocksAllocated: false, hasParent: true, virtualSize: 10 * 1024 * MiB, page83: randomGuid(),
    logicalSectorSize: 4096, physicalSectorSize: 4096,
  };
  const locator = buildParentLocator([['parent_linkage', '{0BBDB30E-1E7B-4C2F-9B21-6C2B1F3F2A11}'], ['relative_path', '.\\base.vhdx']]);
  const region = buildMetadataRegion(params, locator);

  function items(b: Uint8Array): Partial<Record<ItemKind, Uint8Array>> {
    const where = parseMetadataTable(b, MiB, 'x');
    const out: Partial<Record<ItemKind, Uint8Array>> = {};
    for (const [k, loc] of Object.entries(where)) out[k as ItemKind] = b.subarray(loc!.offset, loc!.offset + loc!.length);
    return out;
  }

  it('round-trips every item and the parent locator (parent locator at 0x10028, as Hyper-V places it)', () => {
    expect(parseMetadataTable(region, MiB, 'x').parentLocator?.offset).toBe(0x10028);
    const p = interpretMetadata(items(region), 'x');
    expect(p).toMatchObject({ blockSize: 32 * MiB, hasParent: true, virtualSize: 10 * 1024 * MiB, logicalSectorSize: 4096 });
    expect(p.parentLocator!.linkage).toEqual(['0bbdb30e-1e7b-4c2f-9b21-6c2b1f3f2a11']);
    expect(p.parentLocator!.entries.get('relative_path')).toBe('.\\base.vhdx');
  });

  it('refuses an unknown required item, a bad block size and a locator without parent_linkage', () => {
    const unknown = region.slice();
    unknown.set(randomGuid(), 32 + 5 * 32); // rename the parent locator to an unknown GUID (still required)
    expect(syncError(() => parseMetadataTable(unknown, MiB, 'x')).code).toBe('UNSUPPORTED');
    const bs = region.slice();
    bs.set([0, 0, 0x30, 0], 64 * 1024); // 3 MiB
    expect(syncError(() => interpretMetadata(items(bs), 'x')).code).toBe('BAD_BLOCK_SIZE');
    expect(syncError(() => parseParentLocator(buildParentLocator([['relative_path', 'a.vhdx']]), 'x')).code).toBe('PARENT_MISSING');
  });
});

describe('BAT arithmetic', () => {
  it('chunk ratio and entry counts follow the spec (and qemu)', () => {
    const l = (bs: number, ss: number, size: number, diff = false) => batLayout({ blockSize: bs, logicalSectorSize: ss, virtualSize: size, differencing: diff });
    expect(l(1 * MiB, 512, 8 * MiB).chunkRatio).toBe(4096);
    expect(l(8 * MiB, 512, 8 * MiB).chunkRatio).toBe(512);
    expect(l(32 * MiB, 512, 8 * MiB).chunkRatio).toBe(128);
    expect(l(32 * MiB, 4096, 8 * MiB).chunkRatio).toBe(1024);
    // 100 GiB in 32 MiB blocks: 3200 blocks, 25 bitmap entries between them (qemu: n + (n-1)/128).
    expect(l(32 * MiB, 512, 100 * 1024 * MiB).entryCount).toBe(3200 + 24);
    expect(l(32 * MiB, 512, 100 * 1024 * MiB, true).entryCount).toBe(25 * 129);
    const x = l(32 * MiB, 512, 100 * 1024 * MiB);
    expect(payloadIndex(x, 127)).toBe(127);
    expect(payloadIndex(x, 128)).toBe(129);
    expect(bitmapIndex(x, 0)).toBe(128);
    expect(x.bitmapBytesPerBlock).toBe(8192);
  });

  it('entries keep state and a 1 MiB-unit offset', () => {
    const raw = new Uint8Array(16);
    putEntry(raw, 1, 6, 5 * 1024 * 1024 * MiB);
    expect(entryState(raw, 1)).toBe(6);
    expect(entryOffset(raw, 1)).toBe(5 * 1024 * 1024 * MiB);
    putEntry(raw, 0, 2, 123 * MiB); // ZERO: the offset is reserved and stored as 0
    expect(entryOffset(raw, 0)).toBe(0);
  });
});

describe('sector bitmaps are LSB-first', () => {
  it('bit 0 of byte 0 is the first sector', () => {
    const b = new Uint8Array(4);
    setBits(b, 0, 1);
    expect(b[0]).toBe(0x01);
    setBits(b, 7, 3);
    expect([...b.subarray(0, 2)]).toEqual([0x81, 0x03]);
    expect(countBits(b, 0, 32)).toBe(4);
    expect(bitAt(b, 9)).toBe(true);
    const runs: Array<[number, number, boolean]> = [];
    forEachRun(b, 0, 16, (s, e, set) => runs.push([s, e, set]));
    expect(runs).toEqual([[0, 1, true], [1, 7, false], [7, 10, true], [10, 16, false]]);
  });
});

describe('log entries', () => {
  const guid = randomGuid();
  const page = (v: number) => new Uint8Array(LOG_SECTOR).map((_, i) => (i * 7 + v) & 0xff);
  const entry = (seq: bigint, writes: LogWrite[], tail = 0) =>
    buildEntry({ sequenceNumber: seq, logGuid: guid, tail, flushedFileOffset: 8 * MiB, lastFileOffset: 9 * MiB, writes });

  it('round-trip data and zero descriptors (leading and trailing bytes live in the descriptor)', () => {
    const b = entry(5n, [{ kind: 'data', offset: 2 * MiB, data: page(1) }, { kind: 'zero', offset: 3 * MiB, length: 8192 }]);
    expect(b.length).toBe(2 * LOG_SECTOR);
    const e = parseEntry(b, guid, 0)!;
    expect(e.sequenceNumber).toBe(5n);
    expect(e.writes[0]).toEqual({ kind: 'data', offset: 2 * MiB, data: page(1) });
    expect(e.writes[1]).toEqual({ kind: 'zero', offset: 3 * MiB, length: 8192 });
    expect(parseEntry(b, randomGuid(), 0)).toBeNull(); // another log's entry
    const torn = b.slice();
    torn[LOG_SECTOR + 100] ^= 1;
    expect(parseEntry(torn, guid, 0)).toBeNull(); // CRC covers the data sectors
  });

  it('finds the active sequence across the end of the circular log and honours the tail', () => {
    const log = new Uint8Array(16 * LOG_SECTOR);
    const e1 = entry(10n, [{ kind: 'data', offset: 2 * MiB, data: page(1) }], 12 * LOG_SECTOR);
    const e2 = entry(11n, [{ kind: 'data', offset: 2 * MiB, data: page(2) }], 12 * LOG_SECTOR);
    const e3 = entry(12n, [{ kind: 'data', offset: 2 * MiB, data: page(3) }], 12 * LOG_SECTOR);
    const old = entry(3n, [{ kind: 'data', offset: 2 * MiB, data: page(9) }]);
    log.set(old, 4 * LOG_SECTOR);
    log.set(e1, 12 * LOG_SECTOR);
    log.set(e2, 14 * LOG_SECTOR);
    log.set(e3.subarray(0, 2 * LOG_SECTOR), 0); // e3 wraps: it starts at sector 0 after e2 ends at 16
    const seq = findActiveSequence(log, guid);
    expect(seq.map((e) => e.sequenceNumber)).toEqual([10n, 11n, 12n]);
    // With the tail moved to e2, e1 is no longer part of the active sequence.
    const log2 = log.slice();
    log2.set(entry(12n, [{ kind: 'data', offset: 2 * MiB, data: page(3) }], 14 * LOG_SECTOR), 0);
    expect(findActiveSequence(log2, guid).map((e) => e.sequenceNumber)).toEqual([11n, 12n]);
    expect(findActiveSequence(new Uint8Array(16 * LOG_SECTOR), guid)).toEqual([]);
  });

  it('a 1 MiB log holds 253 pages per entry: 2 descriptor sectors + 253 data sectors, one sector kept open', () => {
    expect(pagesPerEntry(MiB)).toBe(253);
  });
});
