/**
 * `vhdsync resize` (issue 13 item 11), run as the user runs it (the built CLI): every format grows in place
 * and qemu-img, vhdiinfo and our own reader agree on the result — the new virtual size, the old content
 * followed by zeros, a clean `qemu-img check` for VHDX. Refusals are one line and leave the file untouched.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { open, rm } from 'node:fs/promises';
import { chsGeometry, openDisk } from '../host/disk/index.js';
import { MiB } from '../host/units.js';
import { sha256File } from './support/digest.js';
import { unpackFixtures } from './support/fixtures.js';
import { qemuInfo, qemuFormat } from './support/oracles.js';
import { removeDir, tempDir } from './support/temp-dir.js';
import { cli, background } from './support/cli.js';

const CLI = fileURLToPath(new URL('../dist/cli/bin.js', import.meta.url));

let dir: string;
let fx: string;
let n = 0;
beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run 'npm run build' first (npm test does)`);
  dir = tempDir('vhdsync-resize-').dir;
  fx = unpackFixtures();
});
afterAll(() => {
  removeDir(dir);
  removeDir(fx);
});

/** The CLI, in this file's home. */
const vhdsync = (...args: string[]) => cli(args, { home: join(dir, 'home') });

function run(cmd: string, ...args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** The image's content as qemu reads it, in a raw file. */
function qemuContent(p: string): string {
  const out = join(dir, `content-${++n}.raw`);
  run('qemu-img', 'convert', '-f', qemuFormat(p), '-O', 'raw', p, out);
  return out;
}

function name(base: string): string {
  return join(dir, `${++n}-${base}`);
}

/** Pattern writes through qemu-io: at the start, in the middle and in the last MiB. */
function fill(p: string, size: number): void {
  run('qemu-io', '-f', qemuFormat(p), '-c', 'write -P 0xab 0 1M', '-c', `write -P 0x5c ${Math.floor(size / 2 / MiB) * MiB} 64k`, '-c', `write -P 0xcd ${size - MiB} 1M`, p);
}

const CHUNK = 8 * MiB;

/** qemu's view (a raw file) is the old content then zeros, and our reader returns the same bytes, chunk by chunk. */
async function expectGrown(p: string, before: string, size: number): Promise<void> {
  expect(qemuInfo(p, qemuFormat(p))['virtual-size']).toBe(size);
  const after = qemuContent(p);
  expect(statSync(after).size).toBe(size);
  const oldLength = statSync(before).size;
  const [a, b] = await Promise.all([open(after, 'r'), open(before, 'r')]);
  const d = await openDisk(p, { readOnly: true });
  try {
    expect(d.virtualSize).toBe(size);
    const q = new Uint8Array(CHUNK);
    const o = new Uint8Array(CHUNK);
    const ours = new Uint8Array(CHUNK);
    for (let at = 0; at < size; at += CHUNK) {
      const len = Math.min(CHUNK, size - at);
      await a.read(q, 0, len, at);
      await d.read(at, ours.subarray(0, len));
      expect(Buffer.from(ours.subarray(0, len)).equals(q.subarray(0, len)), `our reader at ${at}`).toBe(true);
      o.fill(0);
      if (at < oldLength) await b.read(o, 0, Math.min(len, oldLength - at), at);
      expect(Buffer.from(q.subarray(0, len)).equals(o.subarray(0, len)), `old content then zeros at ${at}`).toBe(true);
    }
  } finally {
    await Promise.all([a.close(), b.close(), d.close()]);
  }
  await rm(after);
  if (p.endsWith('.vhdx')) expect(run('qemu-img', 'check', '-f', 'vhdx', p)).toMatch(/No errors were found/);
  if (p.endsWith('.vhd') || p.endsWith('.vhdx')) expect(run('vhdiinfo', p)).toMatch(/Disk type|Media size/);
}

describe('vhdsync resize grows every format, and every reader agrees', () => {
  const cases: Array<{ what: string; make: (p: string) => void; ext: string; from: number; to: string; size: number }> = [
    { what: 'a qemu dynamic VHD (64M to 300M: the BAT grows, the block in its way moves)', ext: 'vhd', from: 67_125_248, to: '300M', size: 300 * MiB,
      make: (p) => run('qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', p, '64M') },
    { what: 'a qemu dynamic VHD with a partial last block (100M, +28M)', ext: 'vhd', from: 104_865_792, to: '+28M', size: 104_865_792 + 28 * MiB,
      make: (p) => run('qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', p, '100M') },
    { what: 'a qemu fixed VHD', ext: 'vhd', from: 67_125_248, to: '200M', size: 200 * MiB,
      make: (p) => run('qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', p, '64M') },
    { what: 'a qemu dynamic VHDX', ext: 'vhdx', from: 64 * MiB, to: '200M', size: 200 * MiB,
      make: (p) => run('qemu-img', 'create', '-q', '-f', 'vhdx', p, '64M') },
    { what: 'a qemu fixed VHDX', ext: 'vhdx', from: 64 * MiB, to: '+100M', size: 164 * MiB,
      make: (p) => run('qemu-img', 'create', '-q', '-f', 'vhdx', '-o', 'subformat=fixed,block_state_zero=off', p, '64M') },
    { what: 'a vhdsync dynamic VHD (the BAT grows)', ext: 'vhd', from: 64 * MiB, to: '300M', size: 300 * MiB,
      make: (p) => vhdsync('create', p, '--size', '64M') },
    { what: 'a vhdsync fixed VHD', ext: 'vhd', from: 10 * MiB, to: '12M', size: 12 * MiB,
      make: (p) => vhdsync('create', p, '--size', '10M', '--type', 'fixed') },
    { what: 'a vhdsync dynamic VHDX (1 MiB blocks, partial last block)', ext: 'vhdx', from: 10 * MiB + 512 * 1024, to: '40M', size: 40 * MiB,
      make: (p) => vhdsync('create', p, '--size', String(10 * MiB + 512 * 1024), '--block-size', '1M') },
    { what: 'a vhdsync fixed VHDX', ext: 'vhdx', from: 40 * MiB, to: '100M', size: 100 * MiB,
      make: (p) => vhdsync('create', p, '--size', '40M', '--type', 'fixed', '--block-size', '8M') },
    { what: 'a raw image', ext: 'img', from: 8 * MiB, to: '+8M', size: 16 * MiB,
      make: (p) => run('qemu-img', 'create', '-q', '-f', 'raw', p, '8M') },
  ];
  for (const c of cases) {
    it(`${c.what}: qemu-img info, qemu-img convert, vhdiinfo and our reader see old content + zeros`, async () => {
      const p = name(`disk.${c.ext}`);
      c.make(p);
      expect(qemuInfo(p, qemuFormat(p))['virtual-size']).toBe(c.from);
      fill(p, c.from);
      const before = qemuContent(p);
      const r = vhdsync('resize', p, c.to, '--json');
      expect(r.status, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout);
      expect(j).toMatchObject({ oldSize: c.from, newSize: c.size, changed: true });
      if (c.what.includes('BAT grows')) expect(j.notes.join('\n')).toMatch(/moved 1 block to the end of the file to make room for the larger BAT/);
      await expectGrown(p, before, c.size);
      // Still a working image: a write past the old end lands and reads back (qemu-io writes through qemu's driver).
      run('qemu-io', '-f', qemuFormat(p), '-c', `write -P 0x77 ${c.size - 4096} 4k`, p);
      run('qemu-io', '-f', qemuFormat(p), '-r', '-c', `read -P 0x77 ${c.size - 4096} 4k`, '-c', `read -P 0xab 0 1M`, p);
    });
  }

  it('an empty VHD whose BAT grows over its trailing footer, grown again to the 2040 GiB limit, still reads right', async () => {
    const p = name('empty.vhd');
    vhdsync('create', p, '--size', '1M');
    const before = qemuContent(p);
    expect(vhdsync('resize', p, '300M').status).toBe(0);
    await expectGrown(p, before, 300 * MiB);
    run('qemu-io', '-f', 'vpc', '-c', 'write -P 0x11 290M 1M', p);
    expect(vhdsync('resize', p, '2040G').status).toBe(0);
    expect(qemuInfo(p, 'vpc')['virtual-size']).toBe(2040 * 1024 * MiB);
    run('qemu-io', '-f', 'vpc', '-r', '-c', 'read -P 0x11 290M 1M', '-c', 'read -P 0 2039G 1G', p);
    const ours = await openDisk(p, { readOnly: true });
    const got = new Uint8Array(MiB);
    await ours.read(290 * MiB, got);
    expect(got.every((b) => b === 0x11)).toBe(true);
    await ours.read(2040 * 1024 * MiB - MiB, got);
    expect(got.every((b) => b === 0)).toBe(true);
    await ours.close();
  });

  it('a qemu-made VHD keeps qemu reading the new size: the creator becomes "win " when the size is not a CHS size (said on stderr)', () => {
    const p = name('chs.vhd');
    run('qemu-img', 'create', '-q', '-f', 'vpc', p, '64M');
    const r = vhdsync('resize', p, '100M');
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/creator application 'qemu' changed to 'win'/);
    expect(qemuInfo(p, 'vpc')['virtual-size']).toBe(100 * MiB);
    const j = JSON.parse(vhdsync('info', p, '--json').stdout);
    expect(j.geometry).toMatchObject(chsGeometry(100 * MiB));
    expect(j.creator.application).toBe('win ');
  });

  it('the same size again changes nothing', () => {
    const p = name('same.vhd');
    vhdsync('create', p, '--size', '8M');
    const h = sha256File(p);
    const r = vhdsync('resize', p, '8M');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/already 8 MiB .* nothing changed/);
    expect(sha256File(p)).toBe(h);
  });
});

describe('vhdsync resize refuses with one line and writes nothing', () => {
  function refused(args: string[], pattern: RegExp, file?: string): void {
    const h = file && existsSync(file) ? sha256File(file) : undefined;
    const r = vhdsync('resize', ...args);
    expect(r.status, r.stdout).not.toBe(0);
    expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    expect(r.stderr).toMatch(pattern);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    if (h) expect(sha256File(file!)).toBe(h);
  }

  it('a file that does not exist', () => {
    refused([join(dir, 'nope.vhd'), '1G'], /nope\.vhd: no such file/);
  });

  it('a garbage file named .vhd, a truncated VHD, a qcow2', () => {
    const g = name('garbage.vhd');
    writeFileSync(g, Buffer.alloc(4 * MiB, 0x5a));
    refused([g, '8M'], /not a VHD: no 'conectix' footer/, g);
    const t = name('trunc.vhd');
    copyFileSync(join(fx, 'corrupt-truncated.vhd'), t);
    refused([t, '1G'], /truncated|past the end/, t);
    const q = name('disk.qcow2');
    run('qemu-img', 'create', '-q', '-f', 'qcow2', q, '8M');
    refused([q, '16M'], /a qcow2 image; vhdsync reads VHDX, VHD and raw/, q);
  });

  it('a size that is not a multiple of the sector (512 for a VHD, the logical sector for a VHDX), or not a size', () => {
    const v = name('d.vhd');
    vhdsync('create', v, '--size', '8M');
    refused([v, '10000000'], /not a multiple of 512 bytes/, v);
    refused([v, 'lots'], /'lots' is not a size/, v);
    const x = name('d4k.vhdx');
    vhdsync('create', x, '--size', '8M', '--logical-sector', '4096');
    refused([x, String(16 * MiB + 512)], /not a multiple of the 4096-byte logical sector/, x);
    refused([v, '4T'], /exceeds the VHD limit of 2040 GiB/, v);
  });

  it('shrinking: refused without --shrink; with it, a raw image and a fixed VHD are cut, a dynamic VHD and a VHDX never', () => {
    const raw = name('s.img');
    run('qemu-img', 'create', '-q', '-f', 'raw', raw, '16M');
    refused([raw, '8M'], /smaller than the 16 MiB the disk has; shrinking loses the data past the new end: run again with --shrink/, raw);
    refused([raw, '--', '-8M'], /smaller than the 16 MiB/, raw);
    expect(vhdsync('resize', raw, '8M', '--shrink').status).toBe(0);
    expect(statSync(raw).size).toBe(8 * MiB);

    const fixed = name('s.vhd');
    vhdsync('create', fixed, '--size', '16M', '--type', 'fixed');
    run('qemu-io', '-f', 'vpc', '-c', 'write -P 0xab 0 4M', fixed);
    refused([fixed, '8M'], /run again with --shrink/, fixed);
    expect(vhdsync('resize', fixed, '8M', '--shrink').status).toBe(0);
    expect(qemuInfo(fixed, 'vpc')['virtual-size']).toBe(8 * MiB);
    expect(statSync(fixed).size).toBe(8 * MiB + 512);
    run('qemu-io', '-f', 'vpc', '-r', '-c', 'read -P 0xab 0 4M', '-c', 'read -P 0 4M 4M', fixed);

    const dyn = name('s-dyn.vhd');
    vhdsync('create', dyn, '--size', '16M');
    refused([dyn, '8M', '--shrink'], /does not shrink a dynamic VHD/, dyn);
    const x = name('s.vhdx');
    vhdsync('create', x, '--size', '16M');
    refused([x, '8M', '--shrink'], /does not shrink a VHDX/, x);
  });

  it('a replica with an unfinished resync (its overlay and checkpoint beside it)', async () => {
    const primary = name('p.vhd');
    const replica = name('r.vhd');
    vhdsync('create', primary, '--size', '8M');
    vhdsync('create', replica, '--size', '8M');
    run('qemu-io', '-f', 'vpc', '-c', 'write -P 0xab 0 1M', primary);
    // A resync interrupted mid-way (SIGKILL) leaves exactly that.
    const { child, exited: gone } = background(['resync', primary, replica, '--link', '1mbps'], { home: join(dir, 'home') });
    for (let i = 0; i < 600 && !existsSync(`${replica}.resync.json`); i++) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGKILL');
    await gone;
    expect(existsSync(`${replica}.resync.json`)).toBe(true);
    refused([replica, '16M'], /a resynchronization of this replica is unfinished .*\(vhdsync resync --cancel /, replica);
    expect(vhdsync('resync', '--cancel', replica).status).toBe(0);
    expect(vhdsync('resize', replica, '16M').status).toBe(0);
  });

  it('differencing disks (VHD and VHDX)', () => {
    refused([join(fx, 'diff-child-sectors.vhd'), '1G'], /a differencing disk has its parent's size and cannot be resized alone/);
    const base = name('base.vhdx');
    vhdsync('create', base, '--size', '8M');
    const child = name('child.vhdx');
    vhdsync('create', child, '--parent', base);
    refused([child, '16M'], /differencing disk/, child);
  });

  it('a second writer: exit 2 and one line naming the holder; the image untouched', async () => {
    const p = name('busy.vhd');
    vhdsync('create', p, '--size', '8M');
    const h = sha256File(p);
    // A resync holds the replica's writer lock while it runs; here a tiny holder of the same lock.
    const dist = fileURLToPath(new URL('../dist/writer-lock.js', import.meta.url));
    const holder = spawn(process.execPath, ['--input-type=module', '-e', `
      import { lockFile } from ${JSON.stringify(dist)};
      const l = await lockFile(${JSON.stringify(p)}, { what: ${JSON.stringify(p)} });
      process.stdout.write('held\\n');
      setInterval(() => {}, 1000);
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((res) => holder.stdout.on('data', (d: Buffer) => d.toString().includes('held') && res()));
      const r = vhdsync('resize', p, '16M');
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(new RegExp(`busy\\.vhd is in use by process ${holder.pid} on .* \\(since `));
      expect(sha256File(p)).toBe(h);
    } finally {
      holder.kill('SIGKILL');
    }
    await new Promise((r) => holder.once('exit', r));
    expect(vhdsync('resize', p, '16M').status).toBe(0);
  });
});
