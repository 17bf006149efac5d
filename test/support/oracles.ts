/** The external tools that judge our images: qemu-img and libvhdi (python3-libvhdi) read them on their own. */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './temp-dir.js';

/** qemu's format name for one of our images, judged by the extension used in tests. */
export function qemuFormat(path: string): string {
  return path.endsWith('.vhd') ? 'vpc' : path.endsWith('.vhdx') ? 'vhdx' : 'raw';
}

/** `qemu-img compare`: true when identical, false when different; throws on error. */
export function qemuIdentical(a: string, b: string): boolean {
  const r = spawnSync('qemu-img', ['compare', '-f', qemuFormat(a), '-F', qemuFormat(b), a, b], { encoding: 'utf8' });
  if (r.status === 0) return true;
  if (r.status === 1) return false;
  throw new Error(`qemu-img compare failed (${r.status}): ${r.stderr}`);
}

export function qemuImg(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

/** The virtual contents of an image as qemu sees them (`qemu-img convert -O raw`). */
export function qemuRaw(path: string, format = 'vpc'): Uint8Array {
  const { dir, cleanup } = tempDir('vhdsync-qemu-');
  try {
    const out = join(dir, 'out.raw');
    execFileSync('qemu-img', ['convert', '-f', format, '-O', 'raw', path, out]);
    return new Uint8Array(readFileSync(out));
  } finally {
    cleanup();
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
  const { dir, cleanup } = tempDir('vhdsync-vhdi-');
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
    cleanup();
  }
}
