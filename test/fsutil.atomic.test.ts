import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { copyFileAtomic, writeFileAtomic } from '../host/fsutil.js';
import { tempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-atomic-')));
afterAll(() => cleanup());

describe('atomic writes (one helper for all state)', () => {
  it('fifty overlapping writes of one file from one process all succeed; the file is one of them, whole; no temp file is left', async () => {
    const path = join(dir, 'state.json');
    const contents = Array.from({ length: 50 }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat(1000 + i) }));
    await Promise.all(contents.map((c) => writeFileAtomic(path, c)));
    expect(contents).toContain(await readFile(path, 'utf8'));
    expect(await readdir(dir)).toEqual(['state.json']);
  });

  it('a write that fails removes its temp file and leaves the old content', async () => {
    const sub = join(dir, 'fail');
    await mkdir(join(sub, 'target'), { recursive: true });
    await writeFile(join(sub, 'target', 'keep'), 'x'); // a non-empty folder: rename onto it fails
    await expect(writeFileAtomic(join(sub, 'target'), 'new')).rejects.toThrow();
    expect((await readdir(sub)).sort()).toEqual(['target']);
  });

  it('copyFileAtomic: the copy appears whole; a copy that fails leaves neither the target nor a temp file', async () => {
    const sub = join(dir, 'copy');
    await mkdir(sub);
    const src = join(sub, 'src.img');
    await writeFile(src, new Uint8Array(3 * 1024 * 1024).map((_, i) => i * 7));
    await copyFileAtomic(src, join(sub, 'dst.img'));
    expect(Buffer.compare(await readFile(join(sub, 'dst.img')), await readFile(src))).toBe(0);
    await mkdir(join(sub, 'busy'));
    await writeFile(join(sub, 'busy', 'keep'), 'x'); // a non-empty folder as target: the rename fails
    await expect(copyFileAtomic(src, join(sub, 'busy'))).rejects.toThrow();
    await expect(copyFileAtomic(join(sub, 'missing.img'), join(sub, 'other.img'))).rejects.toThrow();
    expect((await readdir(sub)).sort()).toEqual(['busy', 'dst.img', 'src.img']);
  });
});
