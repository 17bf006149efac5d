/** Shared helpers of the disk tests: unpacking fixtures, the external oracles (qemu, libvhdi), hashing. */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { expect } from 'vitest';
import type { Disk } from '../host/disk/index.js';
import { VhdsyncError } from '../host/errors.js';

export const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));
export const MiB = 1024 * 1024;

export interface FixtureWrite {
  offset: number;
  length: number;
  /** Byte value written, or null for a zero write (`qemu-io write -z`). */
  pattern: number | null;
}

/** The writes each fixture received (fixtures/writes.json, produced by make-fixtures.py). */
export function fixtureWrites(name: string): FixtureWrite[] {
  const all = JSON.parse(readFileSync(join(FIXTURES, 'writes.json'), 'utf8')) as Record<string, FixtureWrite[]>;
  const w = all[name];
  if (!w) throw new Error(`no writes recorded for ${name}`);
  return w;
}

/** Unpack every fixture (gunzipping *.gz) into a fresh temporary directory. */
export function unpackFixtures(): string {
  const dir = mkdtempSync(join(tmpdir(), 'vhdsync-disk-'));
  for (const f of readdirSync(FIXTURES)) {
    if (f.endsWith('.gz')) writeFileSync(join(dir, f.slice(0, -3)), gunzipSync(readFileSync(join(FIXTURES, f))));
    else if (/\.(vhd|vhdx|img)$/.test(f)) copyFileSync(join(FIXTURES, f), join(dir, f));
  }
  return dir;
}

export function tempDir(prefix = 'vhdsync-disk-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string | undefined): void {
  if (dir) rmSync(dir, { recursive: true, force: true });
}

/** The virtual contents of an image as qemu sees them (`qemu-img convert -O raw`). */
export function qemuRaw(path: string, format = 'vpc'): Uint8Array {
  const dir = tempDir('vhdsync-qemu-');
  try {
    const out = join(dir, 'out.raw');
    execFileSync('qemu-img', ['convert', '-f', format, '-O', 'raw', path, out]);
    return new Uint8Array(readFileSync(out));
  } finally {
    removeDir(dir);
  }
}

export function qemuInfo(path: string, format = 'vpc'): { format: string; 'virtual-size': number; 'cluster-size'?: number } {
  return JSON.parse(execFileSync('qemu-img', ['info', '-f', format, '--output=json', path]).toString());
}

/**
 * The virtual contents of a VHD chain as libvhdi reads them (python3-libvhdi). `chain` lists the
 * child first, then its ancestors. Returns the bytes of [0, length).
 */
export function libvhdiRead(chain: string[], length: number): Uint8Array {
  const dir = tempDir('vhdsync-vhdi-');
  try {
    const out = join(dir, 'out.raw');
    const script = [
      'import sys, pyvhdi',
      'paths = sys.argv[2:]',
      'files = []',
      'for p in paths:',
      '    f = pyvhdi.file(); f.open(p); files.append(f)',
      'for child, parent in zip(files, files[1:]):',
      '    child.set_parent(parent)',
      'n = int(sys.argv[1]); out = open(OUT, "wb")',
      'pos = 0',
      'while pos < n:',
      '    k = min(1 << 20, n - pos)',
      '    out.write(files[0].read_buffer_at_offset(k, pos)); pos += k',
      'out.close()',
    ]
      .join('\n')
      .replace('OUT', JSON.stringify(out));
    execFileSync('/usr/bin/python3', ['-c', script, String(length), ...chain], { stdio: ['ignore', 'ignore', 'pipe'] });
    return new Uint8Array(readFileSync(out));
  } finally {
    removeDir(dir);
  }
}

export async function readAll(disk: Disk): Promise<Uint8Array> {
  const out = new Uint8Array(disk.virtualSize);
  await disk.read(0, out);
  return out;
}

export function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Apply recorded writes to a copy of `base` (the expected view of a chain, computed without our reader). */
export function applyWrites(base: Uint8Array, writes: FixtureWrite[]): Uint8Array {
  const out = base.slice();
  for (const w of writes) out.fill(w.pattern ?? 0, w.offset, w.offset + w.length);
  return out;
}

/** Index of the first differing byte, or -1 (clearer failures than comparing megabytes with toEqual). */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

export function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what = 'bytes'): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  expect(firstDifference(actual, expected), `${what}: first differing byte`).toBe(-1);
}

/** Await `p` and return the VhdsyncError it rejected with (failing on success or on any other error). */
export async function vhdsyncError(p: Promise<unknown>): Promise<VhdsyncError> {
  try {
    await p;
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(VhdsyncError);
    const err = e as VhdsyncError;
    expect(err.message).not.toContain('\n');
    return err;
  }
  throw new Error('expected a VhdsyncError, the call succeeded');
}

export function syncError(fn: () => unknown): VhdsyncError {
  try {
    fn();
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(VhdsyncError);
    return e as VhdsyncError;
  }
  throw new Error('expected a VhdsyncError, the call succeeded');
}
