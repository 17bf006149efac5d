/** Pure parsers over bytes: footer, dynamic header, BAT, bitmaps, geometry — happy paths and every error. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { getU32, putU32, putU64, uuidText } from '../host/disk/vhd/be.js';
import { BAT_UNUSED, batBytesFor, bitmapBytesFor, parseBat, validateBat, type BatLayout } from '../host/disk/vhd/bat.js';
import { bitAt, forEachRun, VHD_BITS } from '../host/disk/vhd/bitmap.js';
import { runEnd } from '../host/disk/sector-runs.js';
import {
  DISK_TYPE_DYNAMIC, DISK_TYPE_FIXED, VHD_MAX_SIZE, buildFooter, chsGeometry, footerChecksum, geometrySize, parseFooter, timestampDate,
  vhdTimestamp,
} from '../host/disk/vhd/footer.js';
import {
  LOCATOR_MACX, LOCATOR_W2KU, LOCATOR_W2RU, LOCATOR_WI2R, buildDynamicHeader, decodeLocatorData, decodeParentName, encodeUtf16,
  headerChecksum, parseDynamicHeader,
} from '../host/disk/vhd/header.js';
import { toLocalPath } from '../host/disk/parent-path.js';
import { bytesEqual, idFromHex } from '../host/bytes.js';
import { MiB, GiB } from '../host/units.js';
import { FIXTURES } from './support/fixtures.js';
import { syncError } from './support/typed-errors.js';

/** A qemu-made dynamic VHD (footer copy @0, header @512, BAT @1536). */
const qemuEmpty = new Uint8Array(readFileSync(join(FIXTURES, 'qemu-dynamic-empty.vhd')));
const qemuFixed = new Uint8Array(gunzipSync(readFileSync(join(FIXTURES, 'qemu-fixed-4M.vhd.gz'))));

function refixFooter(f: Uint8Array): Uint8Array {
  putU32(f, 64, footerChecksum(f));
  return f;
}
function refixHeader(h: Uint8Array): Uint8Array {
  putU32(h, 36, headerChecksum(h));
  return h;
}

describe('parseFooter', () => {
  it('reads a qemu dynamic footer: type, size, geometry, offsets, creator', () => {
    const f = parseFooter(qemuEmpty.slice(-512));
    expect(f.diskType).toBe(DISK_TYPE_DYNAMIC);
    expect(f.currentSize).toBe(67_125_248); // qemu rounds 64 MiB up to its CHS product
    expect(f.geometry).toEqual({ cylinders: 964, heads: 8, sectorsPerTrack: 17 });
    expect(geometrySize(f.geometry)).toBe(f.currentSize);
    expect(f.dataOffset).toBe(512);
    expect(f.creatorApp).toBe('qemu');
    expect(f.formatVersion).toBe(0x00010000);
    expect(bytesEqual(qemuEmpty.subarray(0, 512), qemuEmpty.subarray(-512))).toBe(true);
  });

  it('reads a qemu fixed footer with an all-ones data offset', () => {
    const f = parseFooter(qemuFixed.slice(-512));
    expect(f.diskType).toBe(DISK_TYPE_FIXED);
    expect(f.dataOffset).toBeNull();
    expect(qemuFixed.length).toBe(f.currentSize + 512);
  });

  it('round-trips buildFooter with a valid checksum and the exact current size', () => {
    const id = idFromHex('0123abcd-4567-89ef-0123-456789abcdef');
    const b = buildFooter({ diskType: DISK_TYPE_DYNAMIC, currentSize: 100 * MiB, dataOffset: 512, uniqueId: id, timestamp: 12345 });
    const f = parseFooter(b);
    expect(f.currentSize).toBe(100 * MiB);
    expect(f.originalSize).toBe(100 * MiB);
    expect(uuidText(f.uniqueId)).toBe('0123abcd-4567-89ef-0123-456789abcdef');
    expect(f.timestamp).toBe(12345);
    expect(f.creatorApp).toBe('win ');
    expect(f.features).toBe(2);
    expect(getU32(b, 64)).toBe(footerChecksum(b));
  });

  it.each([
    ['bad cookie', (b: Uint8Array) => b.set(new TextEncoder().encode('conectiy'), 0), 'BAD_COOKIE', /cookie/],
    ['bad checksum', (b: Uint8Array) => putU32(b, 64, getU32(b, 64) ^ 1), 'BAD_CHECKSUM', /checksum/],
    ['disk type 5', (b: Uint8Array) => refixFooter((putU32(b, 60, 5), b)), 'UNSUPPORTED', /disk type 5/],
    ['size above 2040 GiB', (b: Uint8Array) => refixFooter((putU64(b, 48, VHD_MAX_SIZE + 512), b)), 'BAD_SIZE', /2040 GiB/],
    ['size of 2^64-1', (b: Uint8Array) => refixFooter((b.fill(0xff, 48, 56), b)), 'BAD_SIZE', /2040 GiB/],
    ['size not a sector multiple', (b: Uint8Array) => refixFooter((putU64(b, 48, 1000), b)), 'BAD_SIZE', /multiple of 512/],
    ['dynamic without a header offset', (b: Uint8Array) => refixFooter((b.fill(0xff, 16, 24), b)), 'BAD_SIZE', /header offset/],
  ] as const)('refuses a footer with %s', (_what, patch, code, message) => {
    const b = qemuEmpty.slice(-512);
    patch(b);
    const err = syncError(() => parseFooter(b, 'disk.vhd'));
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
    expect(err.message.startsWith('disk.vhd: ')).toBe(true);
  });

  it('refuses a short buffer as truncated', () => {
    expect(syncError(() => parseFooter(qemuEmpty.slice(0, 100))).code).toBe('TRUNCATED');
  });

  it('accepts exactly 2040 GiB', () => {
    const b = buildFooter({ diskType: DISK_TYPE_DYNAMIC, currentSize: VHD_MAX_SIZE, dataOffset: 512, uniqueId: new Uint8Array(16) });
    expect(parseFooter(b).currentSize).toBe(2040 * GiB);
  });

  it('timestamps count seconds from 2000-01-01 UTC', () => {
    expect(vhdTimestamp(new Date('2000-01-01T00:00:10Z'))).toBe(10);
    expect(timestampDate(86400).toISOString()).toBe('2000-01-02T00:00:00.000Z');
  });
});

describe('chsGeometry follows the spec appendix (rounds down)', () => {
  // Spec (floor) values from vhd-formats.md §1.4; qemu rounds up instead.
  it.each([
    [1 * MiB, [30, 4, 17]],
    [64 * MiB, [963, 8, 17]],
    [100 * MiB, [1003, 12, 17]],
    [4096 * MiB, [8322, 16, 63]],
    [200 * GiB, [65535, 16, 255]],
    [2040 * GiB, [65535, 16, 255]],
  ] as const)('%d bytes -> %j', (size, [c, h, s]) => {
    const g = chsGeometry(size);
    expect([g.cylinders, g.heads, g.sectorsPerTrack]).toEqual([c, h, s]);
    expect(geometrySize(g)).toBeLessThanOrEqual(size);
  });

  it("agrees with qemu's CHS for sizes qemu stores exactly", () => {
    // qemu picks the smallest CHS product >= the request, so at its own product the two algorithms meet.
    expect(chsGeometry(67_125_248)).toEqual({ cylinders: 964, heads: 8, sectorsPerTrack: 17 });
    expect(chsGeometry(104_865_792)).toEqual({ cylinders: 1004, heads: 12, sectorsPerTrack: 17 });
  });
});

describe('parseDynamicHeader', () => {
  const header = () => qemuEmpty.slice(512, 1536);

  it('reads the qemu header: BAT offset, entries, block size', () => {
    const h = parseDynamicHeader(header());
    expect(h.tableOffset).toBe(1536);
    expect(h.maxTableEntries).toBe(33);
    expect(h.blockSize).toBe(2 * MiB);
    expect(h.locators).toEqual([]);
    expect(h.parentUnicodeName).toBe('');
  });

  it('round-trips a differencing header with parent fields and locators', () => {
    const parentId = idFromHex('11111111-2222-3333-4444-555555555555');
    const b = buildDynamicHeader({
      tableOffset: 1536,
      maxTableEntries: 10,
      blockSize: 512 * 1024,
      parentUniqueId: parentId,
      parentTimestamp: 777,
      parentUnicodeName: 'base disk é.vhd',
      locators: [
        { code: LOCATOR_W2RU, dataSpace: 512, dataLength: 30, dataOffset: 2048 },
        { code: LOCATOR_W2KU, dataSpace: 512, dataLength: 40, dataOffset: 2560 },
      ],
    });
    const h = parseDynamicHeader(b);
    expect(h.blockSize).toBe(512 * 1024);
    expect(bytesEqual(h.parentUniqueId, parentId)).toBe(true);
    expect(h.parentTimestamp).toBe(777);
    expect(h.parentUnicodeName).toBe('base disk é.vhd');
    expect(h.locators.map((l) => [l.codeName, l.dataLength, l.dataOffset])).toEqual([
      ['W2ru', 30, 2048],
      ['W2ku', 40, 2560],
    ]);
  });

  it.each([
    ['bad cookie', (b: Uint8Array) => (b[3] ^= 0x20), 'BAD_COOKIE'],
    ['bad checksum', (b: Uint8Array) => (b[37] ^= 1), 'BAD_CHECKSUM'],
    ['block size 3 MiB', (b: Uint8Array) => refixHeader((putU32(b, 32, 3 * MiB), b)), 'BAD_BLOCK_SIZE'],
    ['block size 0', (b: Uint8Array) => refixHeader((putU32(b, 32, 0), b)), 'BAD_BLOCK_SIZE'],
    ['block size 256 bytes', (b: Uint8Array) => refixHeader((putU32(b, 32, 256), b)), 'BAD_BLOCK_SIZE'],
    ['block size 2 GiB', (b: Uint8Array) => refixHeader((putU32(b, 32, 0x80000000), b)), 'BAD_BLOCK_SIZE'],
  ] as const)('refuses a header with %s', (_what, patch, code) => {
    const b = header();
    patch(b);
    expect(syncError(() => parseDynamicHeader(b, 'x.vhd')).code).toBe(code);
  });

  it('reads a UTF-16LE parent name found in the wild (libvhdi#22) as well as the standard BE one', () => {
    const field = new Uint8Array(512);
    field.set(encodeUtf16('parent.vhd', true));
    expect(decodeParentName(field)).toBe('parent.vhd');
    field.fill(0).set(encodeUtf16('parent.vhd', false));
    expect(decodeParentName(field)).toBe('parent.vhd');
  });

  it('decodes locator payloads per platform code', () => {
    expect(decodeLocatorData(LOCATOR_W2RU, encodeUtf16('.\\a\\b.vhd', true))).toBe('.\\a\\b.vhd');
    expect(decodeLocatorData(LOCATOR_WI2R, new TextEncoder().encode('.\\x.vhd\0junk'))).toBe('.\\x.vhd');
    expect(decodeLocatorData(LOCATOR_MACX, new TextEncoder().encode('file:///Users/a/b%20c.vhd'))).toBe('/Users/a/b c.vhd');
    expect(decodeLocatorData(0x4d616320, new Uint8Array(8))).toBeNull(); // 'Mac ' alias blob
  });

  it('maps Windows locator paths to local ones', () => {
    expect(toLocalPath('.\\dir\\p.vhd')).toBe('./dir/p.vhd');
    expect(toLocalPath('..\\p.vhd')).toBe('../p.vhd');
    expect(toLocalPath('C:\\VMs\\base.vhd')).toBe('base.vhd');
    expect(toLocalPath('/abs/base.vhd')).toBe('/abs/base.vhd');
  });
});

describe('BAT', () => {
  it('decodes big-endian entries through the core', () => {
    const raw = new Uint8Array(16);
    putU32(raw, 0, 4);
    putU32(raw, 4, BAT_UNUSED);
    putU32(raw, 8, 0x1005);
    putU32(raw, 12, 0xdeadbeef);
    expect(Array.from(parseBat(raw, 3))).toEqual([4, BAT_UNUSED, 0x1005]);
    expect(syncError(() => parseBat(raw, 5)).code).toBe('TRUNCATED');
  });

  it('sizes bitmaps and tables in whole sectors', () => {
    expect(bitmapBytesFor(2 * MiB)).toBe(512);
    expect(bitmapBytesFor(4096)).toBe(512);
    expect(bitmapBytesFor(16 * MiB)).toBe(4096);
    expect(batBytesFor(33)).toBe(512);
    expect(batBytesFor(129)).toBe(1024);
  });

  const layout = (over: Partial<BatLayout> = {}): BatLayout => ({
    virtualSize: 8 * MiB,
    blockSize: 2 * MiB,
    bitmapBytes: 512,
    dataEnd: 2048 + 4 * (2 * MiB + 512),
    reserved: [{ start: 0, end: 2048, what: 'metadata' }],
    ...over,
  });
  const stride = (2 * MiB + 512) / 512;

  it('accepts blocks laid end to end after the metadata', () => {
    expect(() => validateBat(Uint32Array.of(4, 4 + stride, BAT_UNUSED, 4 + 2 * stride), layout())).not.toThrow();
  });

  it.each([
    ['past the end of the file', Uint32Array.of(4, 4 + 10 * stride, BAT_UNUSED, BAT_UNUSED), /block 1 points past the end/],
    ['overlapping another block', Uint32Array.of(4, 4 + stride - 1, BAT_UNUSED, BAT_UNUSED), /blocks 0 and 1 overlap/],
    ['pointing at the same block', Uint32Array.of(4 + stride, BAT_UNUSED, 4 + stride, BAT_UNUSED), /blocks 0 and 2 overlap/],
    ['inside the metadata', Uint32Array.of(BAT_UNUSED, 1, BAT_UNUSED, BAT_UNUSED), /block 1 .* overlaps the metadata/],
  ])('refuses an entry %s', (_what, bat, message) => {
    const err = syncError(() => validateBat(bat, layout(), 'x.vhd'));
    expect(err.code).toBe('BAD_BAT');
    expect(err.message).toMatch(message);
  });

  it('lets the partial last block end where the disk ends', () => {
    // 5 MiB disk: block 2 holds 1 MiB; a writer may allocate only that much before the footer.
    const l = layout({ virtualSize: 5 * MiB, dataEnd: 2048 + 2 * (2 * MiB + 512) + 512 + MiB });
    expect(() => validateBat(Uint32Array.of(4, 4 + stride, 4 + 2 * stride), l)).not.toThrow();
    expect(() => validateBat(Uint32Array.of(4 + 2 * stride, 4 + stride, 4), l)).toThrow(/past the end/);
  });
});

describe('sector bitmaps are MSB-first', () => {
  it('sector 0 is the top bit of byte 0', () => {
    const bm = Uint8Array.of(0x80, 0x01);
    expect(bitAt(bm, 0)).toBe(true);
    expect(bitAt(bm, 1)).toBe(false);
    expect(bitAt(bm, 15)).toBe(true);
    expect(bitAt(bm, 8)).toBe(false);
  });

  it('finds runs across bytes, skipping whole 0x00/0xFF bytes', () => {
    const bm = new Uint8Array(64);
    bm[0] = 0x40; // sector 1
    bm[1] = 0x01; // sector 15
    bm[2] = 0xff; // sectors 16-23
    bm.fill(0xff, 10, 20); // sectors 80-159
    const runs: Array<[number, number, boolean]> = [];
    forEachRun(bm, 0, 512, (s, e, set) => runs.push([s, e, set]));
    expect(runs).toEqual([
      [0, 1, false],
      [1, 2, true],
      [2, 15, false],
      [15, 24, true],
      [24, 80, false],
      [80, 160, true],
      [160, 512, false],
    ]);
    expect(runEnd(VHD_BITS, bm, 80, 100)).toBe(100);
  });
});
