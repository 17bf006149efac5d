import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDisk } from '../host/disk/index.js';
import { appendUndoRecord, parseUndoLog, undoInto, undoRecord, UNDO_RECORD_HEADER, writeUndoLog } from '../host/disk/undo-log.js';
import { randomBytes } from './support/bytes.js';
import { sha256File } from './support/digest.js';
import { rawImage } from './support/images.js';
import { tempDir } from './support/temp-dir.js';

/** The one undo-log format, shared by recovery points and the pre-resync point. */
describe('undo log (host/disk/undo-log.ts)', () => {
  let dir: string;
  let cleanup: () => void;
  beforeEach(async () => ({ dir, cleanup } = tempDir('vhdsync-undo-')));
  afterEach(async () => cleanup());

  it('a record is [offset u64 LE][length u32 LE][before-image]', async () => {
    const before = randomBytes(4096, 1);
    const img = await rawImage(join(dir, 'a.img'), 1 << 20, [[0x10000, before]]);
    const disk = await openDisk(img, { readOnly: true });
    const rec = await undoRecord(disk, 0x10000 + 100, 300);
    await disk.close();
    expect(rec.byteLength).toBe(UNDO_RECORD_HEADER + 300);
    const v = new DataView(rec.buffer);
    expect(v.getBigUint64(0, true)).toBe(0x10064n);
    expect(v.getUint32(8, true)).toBe(300);
    expect(rec.subarray(12)).toEqual(before.subarray(100, 400));
    expect(parseUndoLog(rec)).toEqual([{ offset: 0x10064, data: before.subarray(100, 400) }]);
  });

  it('written whole or appended, then undone last record first: the disk is as it was, the oldest before-image of a byte wins', async () => {
    const img = await rawImage(join(dir, 'a.img'), 1 << 20, [[0, randomBytes(65536, 2)]]);
    const was = sha256File(img);
    const log = join(dir, 'a.undo');
    const disk = await openDisk(img);
    // Two overlapping writes: the first record holds the original bytes, the second the first write's.
    await writeUndoLog(log, async (add) => {
      await add(await undoRecord(disk, 1000, 5000));
      await disk.write(1000, randomBytes(5000, 3));
    });
    await appendUndoRecord(log, await undoRecord(disk, 3000, 8000));
    await disk.write(3000, randomBytes(8000, 4));
    await disk.flush();
    expect(sha256File(img)).not.toBe(was);
    await undoInto(log, disk);
    await disk.close();
    expect(sha256File(img)).toBe(was);
    expect(parseUndoLog(new Uint8Array(await readFile(log))).map((r) => [r.offset, r.data.byteLength])).toEqual([[1000, 5000], [3000, 8000]]);
  });

  it('a record cut short at the end is kept as far as it goes (as recovery points always read it)', async () => {
    const log = join(dir, 'cut.undo');
    const rec = new Uint8Array(UNDO_RECORD_HEADER + 10);
    new DataView(rec.buffer).setUint32(8, 10, true);
    await writeFile(log, rec.subarray(0, UNDO_RECORD_HEADER + 4));
    const records = parseUndoLog(new Uint8Array(await readFile(log)));
    expect(records).toHaveLength(1);
    expect(records[0].data.byteLength).toBe(4);
    expect(parseUndoLog(rec.subarray(0, 5))).toEqual([]);
  });
});
