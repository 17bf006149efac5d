/** `vhdsync info` and `vhdsync create`, run as the user runs them (the built CLI in a child process). */
import { copyFileSync, existsSync, lstatSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MiB } from '../host/units.js';
import { unpackFixtures } from './support/fixtures.js';
import { qemuInfo } from './support/oracles.js';
import { removeDir, tempDir } from './support/temp-dir.js';
import { cli } from './support/cli.js';

const CLI = fileURLToPath(new URL('../dist/cli/bin.js', import.meta.url));

let fx: string;
let dir: string;
beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' first (npm test does)`);
  fx = unpackFixtures();
  dir = tempDir().dir;
});
afterAll(() => {
  removeDir(fx);
  removeDir(dir);
});

/** The CLI, in this file's home. */
const vhdsync = (...args: string[]) => cli(args, { home: join(dir, 'home') });

function infoJson(path: string): Record<string, unknown> {
  const r = vhdsync('info', path, '--json');
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

describe('vhdsync info', () => {
  it('describes a qemu dynamic VHD with the documented JSON keys', () => {
    const j = infoJson(join(fx, 'qemu-dynamic-8M.vhd'));
    expect(j).toMatchObject({
      format: 'vhd',
      type: 'dynamic',
      virtualSize: 8_390_656,
      blockSize: 2 * MiB,
      allocatedBlocks: 4,
      parent: null,
      geometry: { cylinders: 241, heads: 4, sectorsPerTrack: 17, size: 8_390_656 },
      checksums: { footer: 'valid', footerCopy: 'valid', header: 'valid' },
    });
    expect(j.uniqueId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-/);
  });

  it('describes a differencing disk with its parent, and a raw image as raw', () => {
    const d = infoJson(join(fx, 'diff-child-sectors.vhd'));
    expect(d).toMatchObject({ format: 'vhd', type: 'differencing', parent: join(fx, 'diff-parent.vhd') });
    const raw = join(dir, 'disk.img');
    writeFileSync(raw, new Uint8Array(MiB));
    expect(infoJson(raw)).toMatchObject({ format: 'raw', type: 'fixed', virtualSize: MiB, parent: null });
  });

  it('reports a damaged trailing footer instead of failing', () => {
    const j = infoJson(join(fx, 'corrupt-trailing-footer.vhd'));
    expect(j.checksums).toEqual({ footer: 'damaged', footerCopy: 'valid', header: 'valid' });
    expect(String(j.warnings)).toMatch(/trailing footer is damaged/);
  });

  it('still describes a child whose parent is missing, naming the missing parent', () => {
    const j = infoJson(join(fx, 'corrupt-parent-missing.vhd'));
    expect(j.parent).toBeNull();
    expect(j.parentError).toMatchObject({ code: 'PARENT_MISSING' });
    expect(String((j.parentError as { message: string }).message)).toMatch(/gone-parent\.vhd/);
  });

  it('prints one line and exits 2 on a corrupt image; --json carries the code', () => {
    const r = vhdsync('info', join(fx, 'corrupt-bat-overlap.vhd'));
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/corrupt-bat-overlap\.vhd: BAT entries for blocks 0 and 1 overlap/);
    const j = vhdsync('info', join(fx, 'corrupt-bat-overlap.vhd'), '--json');
    expect(JSON.parse(j.stdout)).toMatchObject({ error: { code: 'BAD_BAT' } });
  });

  it('prints a readable table', () => {
    const r = vhdsync('info', join(fx, 'qemu-fixed-4M.vhd'));
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/format:\s+vhd \(fixed\)/);
    expect(r.stdout).toMatch(/virtual size:\s+4\.02 MiB \(4212736 bytes\)/);
  });
});

describe('vhdsync create', () => {
  it('creates dynamic and fixed VHDs that qemu reads with the exact size', () => {
    const d = join(dir, 'new-dyn.vhd');
    expect(vhdsync('create', d, '--size', '64M').status).toBe(0);
    expect(qemuInfo(d)).toMatchObject({ format: 'vpc', 'virtual-size': 64 * MiB, 'cluster-size': 2 * MiB });
    const f = join(dir, 'new-fixed.vhd');
    expect(vhdsync('create', f, '--size', '3145728', '--type', 'fixed').status).toBe(0);
    expect(qemuInfo(f)['virtual-size']).toBe(3 * MiB);
    const b = join(dir, 'new-512k.vhd');
    const r = vhdsync('create', b, '--size', '10M', '--block-size', '512K', '--json');
    expect(JSON.parse(r.stdout)).toMatchObject({ type: 'dynamic', virtualSize: 10 * MiB, blockSize: 512 * 1024 });
  });

  it('creates a differencing disk over a VHD or a raw image with --parent', () => {
    const p = join(dir, 'parent.vhd');
    copyFileSync(join(fx, 'diff-parent.vhd'), p);
    const c = join(dir, 'child.vhd');
    const r = vhdsync('create', c, '--parent', p, '--json');
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ type: 'differencing', virtualSize: 8_390_656, parent: p });
    const raw = join(dir, 'base.img');
    writeFileSync(raw, new Uint8Array(2 * MiB));
    expect(vhdsync('create', join(dir, 'over-raw.vhd'), '--parent', raw).status).toBe(0);
    expect(infoJson(join(dir, 'over-raw.vhd'))).toMatchObject({ type: 'differencing', parent: raw });
  });

  it.each([
    [['--size', '1000'], /not a multiple of 512/],
    [['--size', '3T'], /exceeds the VHD limit of 2040 GiB/],
    [['--size', '1M', '--block-size', '3M'], /block size 3145728 is not a power of two/],
    [['--size', '1M', '--type', 'sparse'], /--type must be fixed or dynamic/],
    [[], /--size is required/],
    [['--size', 'lots'], /'lots' is not a size/],
  ])('refuses %j with one clear line and exit 2', (args, message) => {
    const r = vhdsync('create', join(dir, 'refused.vhd'), ...args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(existsSync(join(dir, 'refused.vhd'))).toBe(false);
  });

  it('refuses to overwrite unless --force', () => {
    const p = join(dir, 'twice.vhd');
    expect(vhdsync('create', p, '--size', '1M').status).toBe(0);
    const again = vhdsync('create', p, '--size', '1M');
    expect(again.status).toBe(2);
    expect(again.stderr).toMatch(/already exists/);
    expect(vhdsync('create', p, '--size', '2M', '--force').status).toBe(0);
    expect(qemuInfo(p)['virtual-size']).toBe(2 * MiB);
  });

  it('--force replaces only a regular file: a device, a FIFO, a folder are refused untouched; a symlink\'s target is replaced, the link stays', () => {
    const fifo = join(dir, 'pipe.vhd');
    execFileSync('mkfifo', [fifo]);
    const dev = join(dir, 'null.vhd');
    execFileSync('mknod', ['-m', '666', dev, 'c', '1', '3']); // a private /dev/null
    for (const [path, what] of [[fifo, 'a FIFO \\(named pipe\\)'], [dev, 'a character device'], [dir, 'a folder']] as const) {
      const r = vhdsync('create', path, '--size', '1M', '--force');
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`: is ${what}, not a disk image file; --force replaces only a regular file$`))]);
    }
    expect(lstatSync(fifo).isFIFO() && lstatSync(dev).isCharacterDevice()).toBe(true);
    const target = join(dir, 'target.vhd');
    expect(vhdsync('create', target, '--size', '1M').status).toBe(0);
    const link = join(dir, 'link.vhd');
    symlinkSync(target, link);
    expect(vhdsync('create', link, '--size', '3M', '--force').status).toBe(0);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(qemuInfo(target)['virtual-size']).toBe(3 * MiB);
    // A folder that is not there is named as the folder.
    const missing = vhdsync('create', join(dir, 'nope', 'sub', 'x.vhd'), '--size', '1M');
    expect(missing.stderr.trim()).toBe(`vhdsync: ${join(dir, 'nope', 'sub')}: no such folder; create it first (mkdir -p)`);
  });
});
