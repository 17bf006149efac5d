/** Test images made from nothing: sparse raw files with chosen or seeded contents, empty dynamic VHDs. */
import { execFileSync } from 'node:child_process';
import { open, readFile, truncate, writeFile } from 'node:fs/promises';
import { openDisk } from '../../host/disk/index.js';
import { MiB } from '../../host/units.js';
import { randomBytes } from './bytes.js';

/** A sparse raw image of `size` bytes with the given writes. */
export async function rawImage(p: string, size: number, writes: [number, Uint8Array][] = []): Promise<string> {
  await writeFile(p, new Uint8Array(0));
  await truncate(p, size);
  const fh = await open(p, 'r+');
  for (const [off, data] of writes) await fh.write(data, 0, data.byteLength, off);
  await fh.close();
  return p;
}

/** A sparse raw disk with 64 KiB of seeded bytes every 4 MiB (none when `seed` is 0). */
export async function rawDisk(path: string, size: number, seed = 0): Promise<string> {
  await writeFile(path, new Uint8Array(0));
  await truncate(path, size);
  if (seed) {
    const fh = await open(path, 'r+');
    for (let off = 0; off < size; off += 4 * MiB) await fh.write(randomBytes(64 * 1024, seed + off / MiB), 0, 64 * 1024, off);
    await fh.close();
  }
  return path;
}

/** An empty dynamic VHD made by qemu-img. */
export function vhdDisk(path: string, size: number): string {
  execFileSync('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', path, String(size)]);
  return path;
}

/** Each image, read through our disk layer (a test failover's views are differencing VHDs), equals its file. */
export async function sameContents(images: string[], files: string[]): Promise<boolean> {
  for (const [i, p] of images.entries()) {
    const want = new Uint8Array(await readFile(files[i]));
    const disk = await openDisk(p, { readOnly: true });
    const got = new Uint8Array(disk.virtualSize);
    await disk.read(0, got);
    await disk.close();
    if (Buffer.compare(got, want) !== 0) return false;
  }
  return true;
}
