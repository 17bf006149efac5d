import { mkdtemp, rm, readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'cli', 'bin.js');

/** A fresh temporary directory, removed by the returned cleanup. */
export async function tempDir(prefix = 'vhdsync-test-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

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

/** Run the built CLI; never throws, returns status and output. */
export function cli(args: string[], env: Record<string, string> = {}, cwd?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, ...env }, cwd });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * The CLI bound to a replication home: `run` (any exit), `ok` (must exit 0, else throws with its
 * stderr), `json` (ok, with --json, parsed).
 */
export function homeCli(home: string) {
  const run = (...args: string[]) => cli([...args, '--home', home]);
  const ok = (...args: string[]) => {
    const r = run(...args);
    if (r.status !== 0) throw new Error(`vhdsync ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
    return r;
  };
  const json = (...args: string[]) => JSON.parse(ok(...args, '--json').stdout);
  return { run, ok, json };
}

/** Deterministic pseudo-random bytes. */
export function randomBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let a = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    a ^= a << 13;
    a ^= a >>> 17;
    a ^= a << 5;
    out[i] = a & 0xff;
  }
  return out;
}

/** A sparse raw image of `size` bytes with the given writes. */
export async function rawImage(p: string, size: number, writes: [number, Uint8Array][] = []): Promise<string> {
  const { writeFile, truncate, open } = await import('node:fs/promises');
  await writeFile(p, new Uint8Array(0));
  await truncate(p, size);
  const fh = await open(p, 'r+');
  for (const [off, data] of writes) await fh.write(data, 0, data.byteLength, off);
  await fh.close();
  return p;
}
