import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadCore } from '../host/core/index.js';
import { ActivityLog, activityLogPathFor, decodeSlot, diskFileId, encodeSlot, parseActivityLog, readActivityLog, slotBytesFor } from '../host/tracking/activity-log.js';
import { dirtyExtents, emptyDirtyMap, encodeDirtyMap, markDirty, parseDirtyMap, readDirtyMap, setBit, writeDirtyMap } from '../host/tracking/dirty-map.js';
import { extentRanges, extentsOf, touchesRanges } from '../host/tracking/extents.js';
import { MiB } from '../host/units.js';
import { removeDir, tempDir } from './support/temp-dir.js';
import { syncError } from './support/typed-errors.js';

let dir: string;
beforeAll(async () => {
  await loadCore();
  dir = tempDir('vhdsync-extents-unit-').dir;
});
afterAll(() => removeDir(dir));

describe('extents', () => {
  it('a write touches every extent it overlaps, and ranges merge adjacent extents and clip to the disk', () => {
    expect(extentsOf(MiB - 512, 1024, MiB)).toEqual([0, 1]);
    expect(extentsOf(5 * MiB, 0, MiB)).toEqual([]);
    expect(extentRanges([3, 1, 2, 7], MiB, 7.5 * MiB)).toEqual([[MiB, 4 * MiB], [7 * MiB, 7.5 * MiB]]);
    expect(touchesRanges([[MiB, 2 * MiB]], 2 * MiB, 512)).toBe(false);
    expect(touchesRanges([[MiB, 2 * MiB]], MiB - 1, 2)).toBe(true);
  });
});

describe('activity log', () => {
  it('a slot round-trips and a flipped byte makes it unreadable', () => {
    const t = { transaction: 2 ** 33 + 5, extentSize: MiB, capacity: 1024, extents: [9, 3, 70000] };
    const slot = encodeSlot(t);
    expect(slot.byteLength).toBe(slotBytesFor(1024));
    expect(decodeSlot(slot)).toEqual(t);
    slot[70] ^= 1;
    expect(decodeSlot(slot)).toBeUndefined();
  });

  it('a torn newest slot leaves the older transaction, which lacks only the extent not yet written into', async () => {
    const disk = join(dir, 'torn.raw');
    const al = await ActivityLog.open(disk, { extentSize: MiB, capacity: 4 });
    await al.admit([1]);
    await al.admit([2]);
    await al.close();
    const file = new Uint8Array(await readFile(activityLogPathFor(disk)));
    const newest = parseActivityLog(file)!;
    expect(newest.extents).toEqual([1, 2]);
    const half = file.byteLength / 2;
    file[(newest.transaction % 2) * half + 100] ^= 0xff; // tear the newest slot
    await writeFile(activityLogPathFor(disk), file);
    expect((await readActivityLog(disk))!.extents).toEqual([1]);
  });

  it('holds at most its capacity, evicting the least recently used, and reopens with the same set', async () => {
    const disk = join(dir, 'lru.raw');
    const al = await ActivityLog.open(disk, { extentSize: MiB, capacity: 3 });
    await al.admit([1, 2, 3]);
    await al.admit([1]); // touched: 2 is now the oldest
    const before = al.transactions;
    await al.admit([1, 3]);
    expect(al.transactions).toBe(before); // hot extents cost no transaction
    await al.admit([4]);
    expect(new Set(al.extents)).toEqual(new Set([1, 3, 4]));
    await al.close();
    const again = await ActivityLog.open(disk, { extentSize: MiB, capacity: 3 });
    expect(new Set(again.extents)).toEqual(new Set([1, 3, 4]));
    await again.close();
  });
});

describe('activity log of one file', () => {
  it('records the disk file it is kept for; beside another file it is rewritten for that one, its extents kept', async () => {
    const a = join(dir, 'a.raw');
    const b = join(dir, 'b.raw');
    await writeFile(a, new Uint8Array(4096));
    await writeFile(b, new Uint8Array(4096));
    const al = await ActivityLog.open(a, { extentSize: MiB, capacity: 8 });
    await al.admit([5]);
    await al.close();
    const ofA = (await readActivityLog(a))!;
    expect(ofA.disk).toEqual(await diskFileId(a));
    await copyFile(activityLogPathFor(a), activityLogPathFor(b));
    const onB = await ActivityLog.open(b, { extentSize: MiB, capacity: 8 });
    await onB.close();
    const ofB = (await readActivityLog(b))!;
    expect([ofB.disk, ofB.extents]).toEqual([await diskFileId(b), [5]]);
  });
});

describe('dirty map', () => {
  it('round-trips, and marking in place sets exactly the extents written', async () => {
    const disk = join(dir, 'dirty.raw');
    expect(await markDirty(disk, [{ offset: 0, length: 1 }])).toBe(false); // no map: not in bitmap mode
    const m = emptyDirtyMap(10 * MiB + 5, MiB, '/replica/dirty.raw');
    setBit(m.bits, 10);
    await writeDirtyMap(disk, m);
    expect(await markDirty(disk, [{ offset: 2 * MiB - 512, length: 1024 }, { offset: 9 * MiB, length: 512 }])).toBe(true);
    const back = (await readDirtyMap(disk))!;
    expect(back.replica).toBe('/replica/dirty.raw');
    expect(back.virtualSize).toBe(10 * MiB + 5);
    expect(dirtyExtents(back)).toEqual([1, 2, 9, 10]);
  });

  it('refuses a damaged header with one line', () => {
    const bytes = encodeDirtyMap(emptyDirtyMap(MiB, 65536, 'r'));
    bytes[20] ^= 1;
    const e = syncError(() => parseDirtyMap(bytes, 'x.vhdsync-dirty'));
    expect(e.code).toBe('BAD_CHECKSUM');
    expect(e.message).toBe('x.vhdsync-dirty: dirty map header checksum is wrong');
    expect(syncError(() => parseDirtyMap(new Uint8Array(600), 'y')).code).toBe('BAD_COOKIE');
  });
});
