/** Opening images: format detection, every malformed fixture, footer recovery, parent resolution. */
import { copyFileSync, mkdirSync, readFileSync, renameSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { putU32, putU64 } from '../host/disk/vhd/be.js';
import {
  VhdDynamicDisk, createDifferencing, createVhd, openDisk, openVhdAlone, type Disk,
} from '../host/disk/index.js';
import { footerChecksum } from '../host/disk/vhd/footer.js';
import { headerChecksum } from '../host/disk/vhd/header.js';
import { open as openFile } from 'node:fs/promises';
import { MiB } from '../host/units.js';
import { expectSameBytes, readAll } from './support/bytes.js';
import { sha256File } from './support/digest.js';
import { applyWrites, fixtureWrites, unpackFixtures } from './support/fixtures.js';
import { qemuRaw } from './support/oracles.js';
import { removeDir, tempDir } from './support/temp-dir.js';
import { vhdsyncError } from './support/typed-errors.js';

let fx: string;
let work: string;
beforeAll(() => {
  fx = unpackFixtures();
  work = tempDir().dir;
});
afterAll(() => {
  removeDir(fx);
  removeDir(work);
});

async function withDisk<T>(path: string, fn: (d: Disk) => Promise<T>, readOnly = true): Promise<T> {
  const d = await openDisk(path, { readOnly });
  try {
    return await fn(d);
  } finally {
    await d.close();
  }
}

describe('every malformed fixture is one typed error naming the file', () => {
  it.each([
    ['corrupt-bad-cookie.vhd', 'BAD_COOKIE', /no 'conectix' footer/],
    ['corrupt-footer-checksum.vhd', 'BAD_CHECKSUM', /footer checksum/],
    ['corrupt-footer-mismatch.vhd', 'FOOTER_MISMATCH', /footer copy at offset 0 differs/],
    ['corrupt-header-cookie.vhd', 'BAD_COOKIE', /dynamic header cookie/],
    ['corrupt-header-checksum.vhd', 'BAD_CHECKSUM', /dynamic header checksum/],
    ['corrupt-block-size.vhd', 'BAD_BLOCK_SIZE', /block size 3145728/],
    ['corrupt-bat-past-eof.vhd', 'BAD_BAT', /block 1 points past the end of the file/],
    ['corrupt-bat-overlap.vhd', 'BAD_BAT', /blocks 0 and 1 overlap/],
    ['corrupt-bat-into-header.vhd', 'BAD_BAT', /overlaps the dynamic header/],
    ['corrupt-huge-size.vhd', 'BAD_SIZE', /2040 GiB/],
    ['corrupt-huge-bat.vhd', 'TRUNCATED', /2147483647 entries .* past the end/],
    ['corrupt-disk-type.vhd', 'UNSUPPORTED', /disk type 5/],
    ['corrupt-truncated.vhd', 'TRUNCATED', /past the end of the file/],
    ['corrupt-parent-id.vhd', 'PARENT_MISMATCH', /unique id .* expects 99999999-9999/],
    ['corrupt-parent-missing.vhd', 'PARENT_MISSING', /gone-parent\.vhd not found/],
    ['corrupt-loop-a.vhd', 'PARENT_LOOP', /loops/],
  ])('%s -> %s', async (name, code, message) => {
    const path = join(fx, name);
    const err = await vhdsyncError(openDisk(path, { readOnly: true }));
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
    expect(err.message).toContain(name);
  });

  it('a missing file is NOT_FOUND', async () => {
    expect((await vhdsyncError(openDisk(join(fx, 'nope.vhd')))).code).toBe('NOT_FOUND');
  });

  it('a fixed VHD whose footer claims more data than the file holds is TRUNCATED', async () => {
    const path = join(work, 'short-fixed.vhd');
    const b = new Uint8Array(readFileSync(join(fx, 'qemu-fixed-4M.vhd')));
    const footer = b.subarray(b.length - 512);
    putU64(footer, 48, 64 * MiB);
    putU32(footer, 64, footerChecksum(footer));
    writeFileSync(path, b);
    const err = await vhdsyncError(openDisk(path));
    expect(err.code).toBe('TRUNCATED');
  });
});

describe('lying headers cannot make us allocate', () => {
  it('a sparse 20 GB file whose header claims 2^32-1 BAT entries and a 2040 GiB disk of 512-byte blocks is refused', async () => {
    const path = join(work, 'sparse-liar.vhd');
    const b = new Uint8Array(readFileSync(join(fx, 'qemu-dynamic-empty.vhd')));
    const footer = b.slice(0, 512);
    putU64(footer, 48, 2040 * 1024 * MiB);
    putU32(footer, 64, footerChecksum(footer));
    const header = b.subarray(512, 1536);
    putU32(header, 28, 0xffffffff);
    putU32(header, 32, 512);
    putU32(header, 36, headerChecksum(header));
    b.set(footer, 0);
    writeFileSync(path, b.subarray(0, 1536));
    const size = 20 * 1024 * MiB;
    truncateSync(path, size);
    const fh = await openFile(path, 'r+');
    await fh.write(footer, 0, 512, size - 512);
    await fh.close();
    const before = process.memoryUsage().arrayBuffers;
    const err = await vhdsyncError(openDisk(path, { readOnly: true }));
    expect(err.code).toBe('BAD_BAT');
    expect(err.message).toMatch(/more than vhdsync handles/);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(64 * MiB);
  });
});

describe('format detection', () => {
  it('finds a fixed VHD by its trailing footer (which qemu without -f probes as raw)', async () => {
    await withDisk(join(fx, 'qemu-fixed-4M.vhd'), async (d) => {
      expect([d.format, d.type]).toEqual(['vhd', 'fixed']);
      expect(d.virtualSize).toBe(statSync(join(fx, 'qemu-fixed-4M.vhd')).size - 512);
    });
  });

  it('treats a file without a footer as raw, unless it is named .vhd', async () => {
    const raw = join(work, 'plain.img');
    writeFileSync(raw, new Uint8Array(3 * 512).fill(7));
    await withDisk(raw, async (d) => {
      expect([d.format, d.virtualSize, d.blockStatus(0)]).toEqual(['raw', 1536, 'present']);
    });
    const named = join(work, 'plain.vhd');
    copyFileSync(raw, named);
    expect((await vhdsyncError(openDisk(named))).code).toBe('BAD_COOKIE');
    const forced = await openDisk(named, { format: 'raw', readOnly: true });
    expect(forced.format).toBe('raw');
    await forced.close();
  });

  it('reports dynamic block status from the BAT', async () => {
    await withDisk(join(fx, 'qemu-dynamic-8M.vhd'), async (d) => {
      // writes at 0, 3M, 5M+512 and 8M: blocks 0, 1, 2 and 4 (the partial last one)
      expect(Array.from({ length: d.blockCount }, (_, i) => d.blockStatus(i))).toEqual(['present', 'present', 'present', 'absent', 'present']);
      expect((d as VhdDynamicDisk).allocatedBlocks()).toBe(4);
      expect(() => d.blockStatus(5)).toThrow(/block 5 does not exist/);
    });
  });
});

describe('footer recovery', () => {
  it('uses the copy at offset 0 when the trailing footer is damaged, and repairs it when opened writable', async () => {
    const path = join(work, 'trailing.vhd');
    copyFileSync(join(fx, 'corrupt-trailing-footer.vhd'), path);
    const expected = qemuRaw(path); // qemu reads the copy at offset 0 too
    const ro = (await openDisk(path, { readOnly: true })) as VhdDynamicDisk;
    expect(ro.footerSource).toBe('copy');
    expect(ro.warnings.join()).toMatch(/trailing footer is damaged/);
    expectSameBytes(await readAll(ro), expected);
    await ro.close();

    const rw = (await openDisk(path)) as VhdDynamicDisk;
    await rw.close();
    const again = (await openDisk(path, { readOnly: true })) as VhdDynamicDisk;
    expect(again.footerSource).toBe('trailing');
    expect(again.footerCopyValid).toBe(true);
    expect(again.warnings).toEqual([]);
    expectSameBytes(await readAll(again), expected);
    await again.close();
  });

  it('keeps reading when only the copy at offset 0 is damaged', async () => {
    const path = join(work, 'copy-bad.vhd');
    const b = new Uint8Array(readFileSync(join(fx, 'qemu-dynamic-8M.vhd')));
    b[70] ^= 0xff; // unique id byte of the copy: checksum now wrong
    writeFileSync(path, b);
    const d = (await openDisk(path, { readOnly: true })) as VhdDynamicDisk;
    expect(d.footerCopyValid).toBe(false);
    expect(d.warnings.join()).toMatch(/footer copy at offset 0 is damaged/);
    await d.close();
  });
});

describe('differencing chains find and check their parent', () => {
  it('reads a hand-made child with partial bitmaps sector by sector (bit clear: parent, set: child, zeros included)', async () => {
    for (const name of ['diff-child-aligned.vhd', 'diff-child-sectors.vhd']) {
      const expected = applyWrites(qemuRaw(join(fx, 'diff-parent.vhd')), fixtureWrites(name));
      await withDisk(join(fx, name), async (d) => {
        expect(d.type).toBe('differencing');
        expect(d.parent?.path).toBe(join(fx, 'diff-parent.vhd'));
        expectSameBytes(await readAll(d), expected, name);
        // Unaligned reads inside and across sectors agree too.
        for (const [off, len] of [[511, 3], [7 * 512 - 1, 1026], [2 * MiB + 3 * 512 - 5, 600], [6 * MiB + 512 * 9 + 100, 2000]]) {
          const part = new Uint8Array(len);
          await d.read(off, part);
          expectSameBytes(part, expected.subarray(off, off + len), `${name} @${off}`);
        }
      });
    }
  });

  it('prefers the relative locator, then the absolute one, then the name next to the child', async () => {
    const a = join(work, 'loc-a');
    const b = join(work, 'loc-b');
    mkdirSync(a);
    mkdirSync(b);
    await createVhd(join(a, 'base.vhd'), { size: 4 * MiB, type: 'dynamic' });
    await createDifferencing(join(a, 'child.vhd'), join(a, 'base.vhd'));
    // Both moved together: the absolute locator is stale, the relative one works.
    renameSync(join(a, 'base.vhd'), join(b, 'base.vhd'));
    renameSync(join(a, 'child.vhd'), join(b, 'child.vhd'));
    await withDisk(join(b, 'child.vhd'), async (d) => expect(d.parent?.path).toBe(join(b, 'base.vhd')));
    // Parent back where the absolute locator says, child left in b/: the relative locator is stale.
    renameSync(join(b, 'base.vhd'), join(a, 'base.vhd'));
    await withDisk(join(b, 'child.vhd'), async (d) => expect(d.parent?.path).toBe(join(a, 'base.vhd')));
  });

  it('falls back to the header name next to the child when no locator resolves', async () => {
    const dir = join(work, 'byname');
    mkdirSync(dir);
    copyFileSync(join(fx, 'diff-parent.vhd'), join(dir, 'diff-parent.vhd'));
    const child = new Uint8Array(readFileSync(join(fx, 'diff-child-aligned.vhd')));
    // Break the W2ru locator's data (keep the header intact so its checksum holds).
    const text = new TextEncoder().encode('x');
    const view = new DataView(child.buffer);
    const locOffset = Number(view.getBigUint64(512 + 576 + 16, false));
    child.set(new Uint8Array(view.getUint32(512 + 576 + 8, false)).fill(text[0]), locOffset);
    writeFileSync(join(dir, 'child.vhd'), child);
    await withDisk(join(dir, 'child.vhd'), async (d) => expect(d.parent?.path).toBe(join(dir, 'diff-parent.vhd')));
  });

  it('warns but opens when only the parent timestamp differs (a restored parent)', async () => {
    const dir = join(work, 'ts');
    mkdirSync(dir);
    await createVhd(join(dir, 'p.vhd'), { size: 2 * MiB, type: 'dynamic' });
    await createDifferencing(join(dir, 'c.vhd'), join(dir, 'p.vhd'));
    const p = new Uint8Array(readFileSync(join(dir, 'p.vhd')));
    for (const at of [0, p.length - 512]) {
      const f = p.subarray(at, at + 512);
      putU32(f, 24, 42);
      putU32(f, 64, footerChecksum(f));
    }
    writeFileSync(join(dir, 'p.vhd'), p);
    const d = (await openDisk(join(dir, 'c.vhd'), { readOnly: true })) as VhdDynamicDisk;
    expect(d.warnings.join()).toMatch(/timestamp differs/);
    await d.close();
  });

  it('refuses a parent whose size differs from the child', async () => {
    const dir = join(work, 'size');
    mkdirSync(dir);
    writeFileSync(join(dir, 'base.img'), new Uint8Array(4 * MiB));
    await createDifferencing(join(dir, 'ov.vhd'), join(dir, 'base.img'));
    truncateSync(join(dir, 'base.img'), 2 * MiB);
    const err = await vhdsyncError(openDisk(join(dir, 'ov.vhd')));
    expect(err.code).toBe('PARENT_MISMATCH');
    expect(err.message).toMatch(/smaller than the child/);
  });

  it('a child that expects a VHD parent refuses a raw file put in its place', async () => {
    const dir = join(work, 'rawparent');
    mkdirSync(dir);
    await createVhd(join(dir, 'base.vhd'), { size: 2 * MiB, type: 'fixed' });
    await createDifferencing(join(dir, 'c.vhd'), join(dir, 'base.vhd'));
    // Replace the VHD parent by a raw file of the same name.
    writeFileSync(join(dir, 'base.vhd'), new Uint8Array(2 * MiB));
    const err = await vhdsyncError(openDisk(join(dir, 'c.vhd')));
    expect(err.code).toBe('PARENT_MISMATCH');
    expect(err.message).toMatch(/base\.vhd is not a VHD/);
  });

  it('opens parents read-only and without changing them', async () => {
    const dir = join(work, 'ro-parent');
    mkdirSync(dir);
    copyFileSync(join(fx, 'diff-parent.vhd'), join(dir, 'diff-parent.vhd'));
    copyFileSync(join(fx, 'diff-child-sectors.vhd'), join(dir, 'child.vhd'));
    const before = sha256File(join(dir, 'diff-parent.vhd'));
    const d = await openDisk(join(dir, 'child.vhd'));
    expect(d.readOnly).toBe(false);
    expect(d.parent?.readOnly).toBe(true);
    await d.write(0, new Uint8Array(8192).fill(3));
    await d.close();
    expect(sha256File(join(dir, 'diff-parent.vhd'))).toBe(before);
  });

  it('openVhdAlone opens a child without its parent (for info, merge and discard)', async () => {
    const d = await openVhdAlone(join(fx, 'corrupt-parent-missing.vhd'));
    expect(d.type).toBe('differencing');
    expect(d.parent).toBeUndefined();
    await d.close();
  });
});

describe('argument checks', () => {
  it('reads past the end are OUT_OF_RANGE and writes to a read-only disk are READ_ONLY', async () => {
    await withDisk(join(fx, 'qemu-dynamic-8M.vhd'), async (d) => {
      expect((await vhdsyncError(d.read(d.virtualSize - 10, new Uint8Array(11)))).code).toBe('OUT_OF_RANGE');
      expect((await vhdsyncError(d.read(-1, new Uint8Array(1)))).code).toBe('OUT_OF_RANGE');
      expect((await vhdsyncError(d.write(0, new Uint8Array(1)))).code).toBe('READ_ONLY');
    });
  });

  it('close is idempotent and a closed disk refuses reads', async () => {
    const d = await openDisk(join(fx, 'qemu-fixed-4M.vhd'), { readOnly: true });
    await d.close();
    await d.close();
    expect((await vhdsyncError(d.read(0, new Uint8Array(1)))).code).toBe('STATE');
  });
});
