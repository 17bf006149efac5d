/** BlobFile's reads (direct and through read-ahead windows) against the bytes themselves. */
import { describe, expect, it } from 'vitest';
import { BlobFile } from '../host/web/blob-file.js';
import { randomBytes } from './support/bytes.js';
import { KiB } from '../host/units.js';

/** A Blob that counts what is fetched from it, and can be told to fail. */
function countingBlob(bytes: Uint8Array) {
  const real = new Blob([bytes as Uint8Array<ArrayBuffer>]);
  const stats = { slices: 0, fetched: 0, fail: false };
  const blob = {
    size: real.size,
    slice(start: number, end: number) {
      stats.slices++;
      stats.fetched += end - start;
      const part = real.slice(start, end);
      return { arrayBuffer: () => (stats.fail ? Promise.reject(new Error('NotReadableError')) : part.arrayBuffer()) };
    },
  } as unknown as Blob;
  return { blob, stats };
}

/** Byte equality without vitest's element-by-element diff, which takes seconds on 100 KiB arrays. */
function expectSameBytes(got: Uint8Array, expected: Uint8Array): void {
  expect(got.length).toBe(expected.length);
  expect(Buffer.from(got.buffer, got.byteOffset, got.length).equals(Buffer.from(expected.buffer, expected.byteOffset, expected.length))).toBe(true);
}

describe('BlobFile', () => {
  it('a forward reader in large pieces fetches every byte once, ahead of need, never past the end', async () => {
    const data = randomBytes(1000 * KiB + 300, 1); // not a multiple of the window
    const { blob, stats } = countingBlob(data);
    const f = new BlobFile(blob, 'disk.img', { window: 128 * KiB, ahead: 2, large: 16 * KiB });
    const into = new Uint8Array(64 * KiB);
    for (let at = 0; at < data.length; at += into.length) {
      const n = await f.readUpTo(into, at);
      expect(n).toBe(Math.min(into.length, data.length - at));
      expectSameBytes(into.subarray(0, n), data.subarray(at, at + n));
      expect(f.cachedWindows).toBeLessThanOrEqual(4);
    }
    expect(stats.fetched).toBe(data.length);
    expect(stats.slices).toBe(Math.ceil(data.length / (128 * KiB)));
    expect(f.bytesRead).toBe(data.length);
  });

  it('any mix of small and large reads returns exactly the file bytes', async () => {
    const data = randomBytes(700 * KiB + 17, 2);
    const { blob } = countingBlob(data);
    const f = new BlobFile(blob, 'disk.img', { window: 64 * KiB, ahead: 2, large: 8 * KiB });
    let seed = 5;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 400; i++) {
      const len = rand(4) === 0 ? rand(200 * KiB) + 1 : rand(2 * KiB) + 1;
      const at = rand(data.length + 1000);
      const into = new Uint8Array(len);
      const n = await f.readUpTo(into, at);
      const expected = data.subarray(Math.min(at, data.length), Math.min(at + len, data.length));
      expect(n).toBe(expected.length);
      expectSameBytes(into.subarray(0, n), expected);
      expect(f.cachedWindows).toBeLessThanOrEqual(4);
    }
  });

  it('a small read of the footer does not pull in a window', async () => {
    const data = randomBytes(1024 * KiB, 3);
    const { blob, stats } = countingBlob(data);
    const f = new BlobFile(blob, 'disk.vhd', { window: 256 * KiB });
    const tail = new Uint8Array(512);
    await f.readAt(tail, data.length - 512, 'the last sector');
    expectSameBytes(tail, data.subarray(data.length - 512));
    expect(stats.fetched).toBe(512);
    await expect(f.readAt(new Uint8Array(1024), data.length - 512, 'the footer')).rejects.toMatchObject({
      code: 'TRUNCATED',
      message: `disk.vhd: the footer at byte ${data.length} lies past the end of the file; the image is truncated`,
    });
  });

  it('a file that can no longer be read is a clear IO error, and a later read retries', async () => {
    const data = randomBytes(512 * KiB, 4);
    const { blob, stats } = countingBlob(data);
    const f = new BlobFile(blob, 'disk.img', { window: 128 * KiB, large: 16 * KiB });
    stats.fail = true;
    await expect(f.readUpTo(new Uint8Array(64 * KiB), 0)).rejects.toMatchObject({
      code: 'IO',
      message: 'disk.img: the browser could not read the file (NotReadableError); pick it again',
    });
    stats.fail = false;
    const into = new Uint8Array(64 * KiB);
    await f.readUpTo(into, 0);
    expectSameBytes(into, data.subarray(0, 64 * KiB));
  });
});
