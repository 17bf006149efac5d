/**
 * The web app's disk layer in Node (which has File and Blob): a picked File opens as the same disk as
 * `openDisk` on its path, compares the same, and fails with the same typed error; and the whole worker
 * bundles for browsers without a Node built-in.
 */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as esbuild from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCoreSync } from '../host/core/index.js';
import { openDisk } from '../host/disk/index.js';
import { VhdsyncError } from '../host/errors.js';
import { diffDisks } from '../host/resync/diff.js';
import { openImage } from '../host/web/open-image.js';
import { randomBytes } from './support/bytes.js';
import { unpackFixtures } from './support/fixtures.js';
import { removeDir } from './support/temp-dir.js';

let dir: string;
const core = loadCoreSync();

function picked(name: string, bytes: Uint8Array<ArrayBuffer> = new Uint8Array(readFileSync(join(dir, name)))): File {
  return new File([bytes], name);
}

async function errorOf(p: Promise<unknown>): Promise<VhdsyncError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(VhdsyncError);
    return e as VhdsyncError;
  }
  throw new Error('expected the open to fail');
}

beforeAll(() => {
  dir = unpackFixtures();
});
afterAll(() => removeDir(dir));

describe('openImage (a browser File behind the disk backends)', () => {
  it.each([
    'qemu-dynamic-8M.vhd',
    'qemu-fixed-4M.vhd',
    'qemu-dynamic-empty.vhd',
    'diff-parent.vhd',
    'corrupt-trailing-footer.vhd',
    'qemu-8M.vhdx',
    'qemu-vhdx-fixed-32M.vhdx',
    'qemu-vhdx-dyn-1M.vhdx',
    'qemu-vhdx-dirty-log.vhdx',
  ])(
    '%s opens as the same disk as openDisk, and reads identically',
    async (name) => {
      const { disk, info } = await openImage(picked(name));
      const byPath = await openDisk(join(dir, name), { readOnly: true });
      try {
        expect({ format: info.format, type: info.type, virtualSize: info.virtualSize, blockSize: info.blockSize }).toEqual({
          format: byPath.format,
          type: byPath.type,
          virtualSize: byPath.virtualSize,
          blockSize: byPath.blockSize,
        });
        expect(info.fileSize).toBe(readFileSync(join(dir, name)).length);
        const statuses = (d: typeof disk) => Array.from({ length: d.blockCount }, (_, i) => d.blockStatus(i));
        expect(statuses(disk)).toEqual(statuses(byPath));
        const r = await diffDisks(core, disk, byPath);
        expect(r.identical).toBe(true);
      } finally {
        await disk.close();
        await byPath.close();
      }
    },
  );

  it('the damaged-footer fixture carries its warning to the page', async () => {
    const { info } = await openImage(picked('corrupt-trailing-footer.vhd'));
    expect(info.warnings.length).toBeGreaterThan(0);
  });

  it('compares a VHD with a raw image exactly as the command line does (same ranges)', async () => {
    // The fixture's virtual contents with a few changes, as a raw image.
    const vhd = await openDisk(join(dir, 'qemu-dynamic-8M.vhd'), { readOnly: true });
    const raw = new Uint8Array(vhd.virtualSize);
    await vhd.read(0, raw);
    raw.set(randomBytes(700, 3), 4096 + 100);
    raw.set(randomBytes(512, 4), 5 * 1024 * 1024);
    raw.fill(0, 0, 512);
    writeFileSync(join(dir, 'changed.img'), raw);
    const byPath = await openDisk(join(dir, 'changed.img'), { readOnly: true });
    const a = await openImage(picked('qemu-dynamic-8M.vhd'));
    const b = await openImage(picked('changed.img'));
    try {
      const expected = await diffDisks(core, vhd, byPath);
      const got = await diffDisks(core, a.disk, b.disk);
      expect(expected.ranges.length).toBeGreaterThanOrEqual(2);
      expect(got.ranges).toEqual(expected.ranges);
      expect(got.differingBytes).toBe(expected.differingBytes);
      // Blocks absent on the VHD side are not read from the picked file.
      expect(a.file.bytesRead).toBeLessThan(vhd.virtualSize);
    } finally {
      for (const d of [vhd, byPath, a.disk, b.disk]) await d.close();
    }
  });

  const corrupt = () => readdirSync(dir).filter((f) => /^corrupt-.*\.vhd$/.test(f) && !/parent|loop|trailing-footer/.test(f));

  it('every malformed single-file fixture fails with the same code and line as openDisk', async () => {
    const names = corrupt();
    expect(names.length).toBeGreaterThanOrEqual(12);
    for (const name of names) {
      const cli = await errorOf(openDisk(join(dir, name), { readOnly: true }));
      const web = await errorOf(openImage(picked(name)));
      expect({ name, code: web.code }).toEqual({ name, code: cli.code });
      // Same line, with the picked file's name where the command line shows the path.
      expect(web.message).toBe(cli.message.replaceAll(join(dir, name), name));
    }
  });

  it('refuses a differencing VHD with a line that says why and what to do instead', async () => {
    const e = await errorOf(openImage(picked('diff-child-aligned.vhd')));
    expect(e.code).toBe('UNSUPPORTED');
    expect(e.message).toMatch(/^diff-child-aligned\.vhd: a differencing VHD; its unchanged data lives in .*diff-parent\.vhd/);
    expect(e.message).toMatch(/Merge the chain first, or run 'vhdsync compare'/);
  });

  it('refuses an empty file and a .vhd without a footer; the same bytes named .img are raw', async () => {
    expect((await errorOf(openImage(picked('empty.img', new Uint8Array(0))))).message).toBe('empty.img: the file is empty; it is not a disk image');
    const junk = randomBytes(64 * 1024, 9) as Uint8Array<ArrayBuffer>;
    expect((await errorOf(openImage(picked('junk.vhd', junk)))).code).toBe('BAD_COOKIE');
    const { info } = await openImage(picked('junk.img', junk));
    expect(info).toMatchObject({ format: 'raw', virtualSize: junk.length });
  });

  it('a picked file is read-only', async () => {
    const { disk } = await openImage(picked('qemu-dynamic-8M.vhd'));
    await expect(disk.write(0, new Uint8Array(512))).rejects.toMatchObject({ code: 'READ_ONLY' });
    await disk.close();
  });
});

describe('the web app in a browser bundle', () => {
  it('app and worker bundle for platform browser with no Node built-in anywhere in their imports', async () => {
    const seen: string[] = [];
    const result = await esbuild.build({
      entryPoints: ['host/web/app.ts', 'host/web/worker.ts'],
      outdir: 'unused',
      bundle: true,
      format: 'esm',
      platform: 'browser',
      write: false,
      logLevel: 'silent',
      metafile: true,
      plugins: [
        {
          name: 'no-node-builtins',
          setup(build) {
            build.onResolve({ filter: /^(node:.*|fs|path|os|crypto|buffer|url|child_process|worker_threads|stream|util)(\/.*)?$/ }, (args) => {
              seen.push(`${args.importer} -> ${args.path}`);
              return { errors: [{ text: `Node built-in '${args.path}'` }] };
            });
          },
        },
      ],
    });
    expect(seen).toEqual([]);
    expect(result.errors).toEqual([]);
    const inputs = Object.keys(result.metafile.inputs);
    // The worker really carries the shared disk backends and diffDisks, not copies of them.
    for (const f of ['host/disk/vhd/dynamic.ts', 'host/disk/raw.ts', 'host/resync/diff.ts', 'host/core/core.ts']) expect(inputs).toContain(f);
    expect(inputs).not.toContain('host/disk/file-io.ts');
  });
});
