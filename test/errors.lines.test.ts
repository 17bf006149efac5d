import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { asVhdsyncError, ioError, VhdsyncError } from '../host/errors.js';
import { rawImage } from './support/images.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';
import { background } from './support/cli.js';

let dir: string;
let cleanup: () => void;
let sock: Server | undefined;
let primary: string;
beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-lines-'));
  primary = await rawImage(join(dir, 'p.img'), 4 * MiB);
});
afterAll(async () => {
  sock?.close();
  await cleanup();
});

/** Run the CLI, killing it if it has not ended in `ms` (a hang), and collect its output. */
async function run(args: string[], ms = 30_000): Promise<{ status: number | null; signal: string | null; stdout: string; stderr: string }> {
  const { child, exited } = background(args, { home: join(dir, 'home') });
  const timer = setTimeout(() => child.kill('SIGKILL'), ms);
  const r = await exited;
  clearTimeout(timer);
  return { status: r.code, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** One line on stderr naming the path, exit 2, and the code in --json. */
async function expectRefused(args: string[], path: string, what: RegExp, code = 'UNSUPPORTED'): Promise<void> {
  const r = await run([...args, '--json']);
  expect(r.signal, `vhdsync ${args.join(' ')} hung and was killed`).toBeNull();
  expect(r.status).toBe(2);
  const lines = r.stderr.trim().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toContain(`vhdsync: ${path}: `);
  expect(lines[0]).toMatch(what);
  expect(JSON.parse(r.stdout).error.code).toBe(code);
}

describe('a path that is not a regular file is refused in one line, before any read', () => {
  it('a FIFO: info and resync (either side) end at once instead of hanging', async () => {
    const fifo = join(dir, 'pipe.vhd');
    execFileSync('mkfifo', [fifo]);
    await expectRefused(['info', fifo], fifo, /is a FIFO \(named pipe\), not a disk image file/);
    await expectRefused(['resync', fifo, primary, '--no-progress'], fifo, /is a FIFO/);
    await expectRefused(['resync', primary, fifo, '--no-progress'], fifo, /is a FIFO/);
    await expectRefused(['checksum', fifo], fifo, /is a FIFO/);
  });

  it('a socket, a character device and a directory', async () => {
    const path = join(dir, 'disk.sock');
    sock = createServer();
    await new Promise<void>((r) => sock!.listen(path, r));
    await expectRefused(['info', path], path, /is a socket, not a disk image file/);
    await expectRefused(['info', '/dev/null'], '/dev/null', /is a character device, not a disk image file/);
    const sub = join(dir, 'folder.vhdx');
    await mkdir(sub);
    await expectRefused(['info', sub], sub, /is a directory, not a disk image file/);
    await expectRefused(['resync', primary, sub, '--no-progress'], sub, /is a directory/);
  });

  it('a block device is refused too (its size needs an ioctl this code does not make), naming what to do', async (ctx) => {
    const backing = await rawImage(join(dir, 'loop.img'), 4 * MiB);
    const attached = spawnSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' });
    if (attached.status !== 0) {
      console.warn(`errors.lines: block device case skipped, losetup not permitted here (${attached.stderr.trim()})`);
      return ctx.skip();
    }
    const dev = attached.stdout.trim();
    try {
      await expectRefused(['info', dev], dev, /is a block device \(not supported: copy it into an image file first/);
      await expectRefused(['resync', primary, dev, '--no-progress'], dev, /is a block device/);
    } finally {
      spawnSync('losetup', ['-d', dev]);
    }
  });
});

describe('errors mapped in one place (asVhdsyncError): a file and a next step, never a raw Node message', () => {
  const sys = (code: string, syscall: string, path?: string) => Object.assign(new Error(`${code}: raw, ${syscall}`), { code, errno: -1, syscall, ...(path ? { path } : {}) });

  it('a system error without a path (a write on an open handle) gets the file its caller names', () => {
    const e = asVhdsyncError(sys('ENOSPC', 'write'), '/srv/replica/disk.vhd.resync.vhd');
    expect(e).toMatchObject({ code: 'IO', message: '/srv/replica/disk.vhd.resync.vhd: no space left on the device holding /srv/replica/disk.vhd.resync.vhd; free space there (or grow it) and run the same command again' });
  });

  it('one with a path names it; EROFS is READ_ONLY with what to do', () => {
    expect(asVhdsyncError(sys('EROFS', 'unlink', '/mnt/ro/r.vhd.resync.json'))).toMatchObject({
      code: 'READ_ONLY',
      message: '/mnt/ro/r.vhd.resync.json: the file system is read-only; remount it read-write and run the same command again',
    });
    expect(ioError('/x/disk.vhd', sys('EIO', 'read')).message).toBe('/x/disk.vhd: input/output error from the device; check the disk (dmesg) before going on');
  });

  it('a file where a folder should be, and any other errno: one line naming the path once, without Node\'s syscall text', () => {
    const notDir = Object.assign(new Error("ENOTDIR: not a directory, open '/etc/passwd/vm1/replica.json'"), { code: 'ENOTDIR', errno: -20, syscall: 'open', path: '/etc/passwd/vm1/replica.json' });
    expect(asVhdsyncError(notDir).message).toBe('/etc/passwd/vm1/replica.json: a part of this path is a file, not a directory; give the directory that holds it');
    const xdev = Object.assign(new Error("EXDEV: cross-device link not permitted, rename '/a/x' -> '/b/x'"), { code: 'EXDEV', errno: -18, syscall: 'rename', path: '/a/x', dest: '/b/x' });
    expect(asVhdsyncError(xdev).message).toBe('/a/x: cross-device link not permitted');
  });

  it('no file known at all: still one line with the syscall and the next step, not the raw message', () => {
    const e = asVhdsyncError(sys('ENOSPC', 'write'));
    expect(e.code).toBe('IO');
    expect(e.message).toBe('write: no space left on the device; free space there (or grow it) and run the same command again');
  });

  it('a bug (TypeError, RangeError, a thrown string) is INTERNAL, never IO', () => {
    expect(asVhdsyncError(new TypeError("Cannot read properties of undefined (reading 'x')"))).toMatchObject({ code: 'INTERNAL', message: expect.stringMatching(/^internal error \(TypeError: Cannot read/) });
    expect(asVhdsyncError(new RangeError('Invalid typed array length: -1')).code).toBe('INTERNAL');
    expect(asVhdsyncError('oops').code).toBe('INTERNAL');
    const typed = new VhdsyncError('BUSY', 'x: busy');
    expect(asVhdsyncError(typed)).toBe(typed);
  });
});
