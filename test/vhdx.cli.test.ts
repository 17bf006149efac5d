/** `vhdsync create` and `vhdsync info` with VHDX images, run as the user runs them (the built CLI). */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
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
  dir = tempDir('vhdsync-vhdx-cli-').dir;
});
afterAll(() => {
  removeDir(fx);
  removeDir(dir);
});

/** The CLI, in this file's home. */
const vhdsync = (...args: string[]) => cli(args, { home: join(dir, 'home') });

function json(...args: string[]): Record<string, any> {
  const r = vhdsync(...args, '--json');
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Record<string, any>;
}

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('vhdsync create x.vhdx', () => {
  it('creates a dynamic VHDX with 32 MiB blocks and 4 KiB logical sectors that info describes', () => {
    const p = join(dir, 'big-sectors.vhdx');
    const c = json('create', p, '--size', '1G', '--block-size', '32M', '--logical-sector', '4096');
    expect(c).toMatchObject({ format: 'vhdx', type: 'dynamic', virtualSize: 1024 * MiB, blockSize: 32 * MiB, sectorSize: 4096, parent: null });
    const i = json('info', p);
    expect(i).toMatchObject({ format: 'vhdx', type: 'dynamic', virtualSize: 1024 * MiB, blockSize: 32 * MiB, blockCount: 32, allocatedBlocks: 0, parent: null });
    expect(i.vhdx).toMatchObject({ logicalSectorSize: 4096, physicalSectorSize: 4096, log: 'empty', creator: 'vhdsync' });
    expect(i.vhdx.dataWriteGuid).toMatch(GUID);
    expect(i.vhdx.virtualDiskId).toMatch(GUID);
  });

  it('creates fixed and dynamic VHDX that qemu accepts, and a differencing VHDX linked to its parent', () => {
    const f = join(dir, 'fixed.vhdx');
    expect(vhdsync('create', f, '--size', '16M', '--type', 'fixed', '--block-size', '1M').status).toBe(0);
    expect(qemuInfo(f, 'vhdx')).toMatchObject({ format: 'vhdx', 'virtual-size': 16 * MiB, 'cluster-size': MiB });
    const d = join(dir, 'dyn.vhdx');
    const plain = vhdsync('create', d, '--size', '64M');
    expect(plain.stdout).toMatch(/created .*dyn\.vhdx: dynamic VHDX, 64 MiB \(67108864 bytes\), block 32 MiB/);
    expect(spawnSync('qemu-img', ['check', '-f', 'vhdx', d]).status).toBe(0);
    const c = join(dir, 'child.vhdx');
    expect(json('create', c, '--parent', d)).toMatchObject({ format: 'vhdx', type: 'differencing', parent: d, blockSize: 32 * MiB });
    const i = json('info', c);
    expect(i.parent).toBe(d);
    expect(i.vhdx.parentLocator.parent_linkage).toBe(`{${json('info', d).vhdx.dataWriteGuid}}`);
    expect(i.vhdx.parentLocator.relative_path).toBe('.\\dyn.vhdx');
    expect(i.vhdx.virtualDiskId).toBe(json('info', d).vhdx.virtualDiskId);
    const text = vhdsync('info', c).stdout;
    expect(text).toMatch(/format: +vhdx \(differencing\)/);
    expect(text).toMatch(/parent linkage: +\{/);
  });

  it.each([
    [['--size', '1M', '--block-size', '3M'], /VHDX block size 3145728 is not a power of two from 1 MiB to 256 MiB/],
    [['--size', '1M', '--block-size', '512K'], /not a power of two from 1 MiB/],
    [['--size', '1000'], /not a multiple of the 512-byte logical sector/],
    [['--size', '6K', '--logical-sector', '4096'], /not a multiple of the 4096-byte logical sector/],
    [['--size', '1M', '--logical-sector', '1024'], /--logical-sector must be 512 or 4096/],
    [['--size', '65T'], /exceeds the VHDX limit of 64 TiB/],
  ])('refuses %j with one clear line and exit 2', (args, message) => {
    const r = vhdsync('create', join(dir, 'refused.vhdx'), ...args);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(message);
    expect(existsSync(join(dir, 'refused.vhdx'))).toBe(false);
  });

  it('refuses VHDX sector options for a VHD', () => {
    const r = vhdsync('create', join(dir, 'x.vhd'), '--size', '1M', '--logical-sector', '4096');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/apply to VHDX images/);
  });
});

describe('vhdsync info on VHDX', () => {
  it('describes a qemu image and a dirty log without touching the file', () => {
    expect(json('info', join(fx, 'qemu-vhdx-fixed-32M.vhdx'))).toMatchObject({ format: 'vhdx', type: 'fixed', blockSize: 32 * MiB, blockCount: 2, allocatedBlocks: 2 });
    const dirty = join(fx, 'qemu-vhdx-dirty-log.vhdx');
    const before = readFileSync(dirty);
    const i = json('info', dirty);
    expect(i.vhdx).toMatchObject({ log: 'replayed-in-memory', logEntries: 1 });
    expect(i.allocatedBlocks).toBe(1);
    expect(i.warnings.join(' ')).toMatch(/unapplied entry/);
    expect(vhdsync('info', dirty).stdout).toMatch(/log: +1 entry to replay/);
    expect(readFileSync(dirty).equals(before)).toBe(true);
  });

  it('describes a differencing VHDX whose parent is gone, with the reason', () => {
    const p = join(dir, 'gone-parent.vhdx');
    const c = join(dir, 'orphan.vhdx');
    expect(vhdsync('create', p, '--size', '8M', '--block-size', '1M').status).toBe(0);
    expect(vhdsync('create', c, '--parent', p).status).toBe(0);
    spawnSync('rm', [p]);
    const i = json('info', c);
    expect(i).toMatchObject({ format: 'vhdx', type: 'differencing', parent: null, parentError: { code: 'PARENT_MISSING' } });
  });
});
