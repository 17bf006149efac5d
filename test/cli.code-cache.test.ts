/**
 * The V8 code cache the bundled CLI is compiled from (host/cli/code-cache.ts): a copy of dist/cli is
 * run as a user would run it, and the cache file beside the bundle is watched. A cache that is
 * missing, corrupt, made for another bundle or refused by V8 is never trusted and is rewritten; a
 * folder that cannot be written leaves the CLI working (the user's cache folder takes the file, or
 * nothing does).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, chmodSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cachePaths, decodeCache, encodeCache } from '../host/cli/code-cache.js';
import { randomBytes } from './support/bytes.js';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/temp-dir.js';
import { type CliAt } from './support/cli.js';
import { MiB } from '../host/units.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-code-cache-'));
  chmodSync(dir, 0o755); // the read-only case runs the CLI as another user when the tests run as root
});
afterAll(() => cleanup());

const sha = (b: string | Buffer) => createHash('sha256').update(b).digest();

/** A copy of the built CLI (dist/cli) under `name`, without any cache file. */
function installCopy(name: string): { bin: string; bundle: string; cache: string } {
  const cliDir = join(dir, name, 'dist', 'cli');
  mkdirSync(cliDir, { recursive: true });
  for (const f of ['bin.js', 'version.js', 'code-cache.js']) cpSync(join(ROOT, 'dist', 'cli', f), join(cliDir, f));
  cpSync(join(ROOT, 'package.json'), join(dir, name, 'package.json'));
  cpSync(join(ROOT, 'dist', 'cli', 'bundle'), join(cliDir, 'bundle'), { recursive: true, filter: (src) => !src.endsWith('.v8cache') && !src.endsWith('.map') });
  const bundle = join(cliDir, 'bundle', 'vhdsync.cjs');
  return { bin: join(cliDir, 'bin.js'), bundle, cache: cachePaths(bundle)[0] };
}

/** Two small raw images that differ in one MiB, in a folder anyone may write. */
function pair(name: string): { p: string; r: string; home: string } {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true, mode: 0o777 });
  chmodSync(d, 0o777);
  const p = join(d, 'p.raw');
  const r = join(d, 'r.raw');
  const data = randomBytes(4 * MiB, 7);
  writeFileSync(p, data);
  data.fill(0, MiB, 2 * MiB);
  writeFileSync(r, data);
  chmodSync(r, 0o666);
  return { p, r, home: join(d, 'home') };
}

/** A copy of the CLI at `bin`, in its home (node's own compile cache off unless `at.env` asks for it). */
function run(bin: string, args: string[], at: CliAt, asUser?: number) {
  const base = { ...process.env };
  delete base.NODE_DISABLE_COMPILE_CACHE;
  const r = spawnSync(process.execPath, [bin, ...args], {
    encoding: 'utf8',
    env: { ...base, ...at.env, VHDSYNC_HOME: at.home },
    ...(asUser === undefined ? {} : { uid: asUser, gid: asUser }),
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function resyncs(bin: string, name: string, env: Record<string, string> = {}, asUser?: number): void {
  const { p, r, home } = pair(name);
  const out = run(bin, ['resync', p, r, '--json'], { home, env }, asUser);
  expect(out.stderr).toBe('');
  expect(out.status).toBe(0);
  expect(JSON.parse(out.stdout)).toMatchObject({ result: 'completed', bytesSent: MiB });
  expect(readFileSync(r).equals(readFileSync(p))).toBe(true);
}

/** The file at `cache` is no longer `previous`, and is a whole cache made for this bundle. */
function expectRewritten(cache: string, bundle: string, previous: Buffer): void {
  expect(readFileSync(cache).equals(previous)).toBe(false);
  expect(validCache(cache, bundle)).toBeDefined();
}

/** The cache file's V8 payload, if it is whole and made for this bundle. */
function validCache(cache: string, bundle: string): Buffer | undefined {
  return existsSync(cache) ? decodeCache(readFileSync(cache), sha(readFileSync(bundle, 'utf8'))) : undefined;
}

describe('cache file format', () => {
  const source = sha('the bundle');
  const data = Buffer.from(randomBytes(1000, 3));

  it('reads back what it wrote, for the same bundle only', () => {
    const file = encodeCache(source, data);
    expect(decodeCache(file, source)?.equals(data)).toBe(true);
    expect(decodeCache(file, sha('another bundle'))).toBeUndefined();
  });

  it('refuses a torn, a flipped or a foreign file', () => {
    const file = encodeCache(source, data);
    expect(decodeCache(file.subarray(0, file.length - 1), source)).toBeUndefined();
    const flipped = Buffer.from(file);
    flipped[flipped.length - 10] ^= 1;
    expect(decodeCache(flipped, source)).toBeUndefined();
    expect(decodeCache(Buffer.from('not a cache at all'), source)).toBeUndefined();
    expect(decodeCache(Buffer.alloc(0), source)).toBeUndefined();
  });

  it('one file per V8 version beside the bundle, then the user cache folder', () => {
    const [beside, user] = cachePaths('/x/bundle/vhdsync.cjs', { XDG_CACHE_HOME: '/c' });
    expect(beside).toBe(`/x/bundle/vhdsync.cjs.${process.versions.v8}-${process.arch}.v8cache`);
    expect(user).toBe(`/c/vhdsync/vhdsync.cjs.${process.versions.v8}-${process.arch}.v8cache`);
  });
});

describe('the bundled CLI and its code cache', () => {
  it('a first run writes the cache beside the bundle; the next run uses it and leaves it alone', () => {
    const { bin, bundle, cache } = installCopy('first');
    resyncs(bin, 'first-a');
    expect(validCache(cache, bundle)).toBeDefined();
    const before = statSync(cache);
    resyncs(bin, 'first-b');
    const after = statSync(cache);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
  });

  it('a corrupt cache file is ignored and rewritten', () => {
    const { bin, bundle, cache } = installCopy('corrupt');
    resyncs(bin, 'corrupt-a');
    const good = readFileSync(cache);
    const bad = Buffer.from(good);
    for (let i = good.length - 4096; i < good.length; i += 7) bad[i] ^= 0x5a;
    writeFileSync(cache, bad);
    resyncs(bin, 'corrupt-b');
    expectRewritten(cache, bundle, bad);
  });

  it('a cache V8 refuses (right header, wrong payload) is ignored and rewritten', () => {
    const { bin, bundle, cache } = installCopy('refused');
    const junk = encodeCache(sha(readFileSync(bundle, 'utf8')), Buffer.from(randomBytes(64 * 1024, 9)));
    writeFileSync(cache, junk);
    resyncs(bin, 'refused-a');
    expectRewritten(cache, bundle, junk);
  });

  it('a cache made for another build of the bundle is stale: ignored and rewritten', () => {
    const { bin, bundle, cache } = installCopy('stale');
    resyncs(bin, 'stale-a');
    const old = readFileSync(cache);
    appendFileSync(bundle, '\n// another build\n');
    expect(validCache(cache, bundle)).toBeUndefined();
    resyncs(bin, 'stale-b');
    expectRewritten(cache, bundle, old);
  });

  it('NODE_DISABLE_COMPILE_CACHE=1 neither reads nor writes a cache', () => {
    const { bin, cache } = installCopy('off');
    resyncs(bin, 'off-a', { NODE_DISABLE_COMPILE_CACHE: '1' });
    expect(existsSync(cache)).toBe(false);
  });

  it('a read-only dist folder works: the cache goes to the user cache folder, or nowhere', () => {
    const { bin, bundle, cache } = installCopy('readonly');
    const userCache = join(dir, 'readonly-user-cache');
    mkdirSync(userCache, { mode: 0o777 });
    chmodSync(userCache, 0o777);
    const readOnly = [join(bundle, '..'), join(bin, '..')];
    for (const d of readOnly) chmodSync(d, 0o555);
    try {
      // root writes through any mode: run as nobody then, as a user of a system-wide install would.
      const asUser = process.getuid?.() === 0 ? 65534 : undefined;
      resyncs(bin, 'readonly-a', { XDG_CACHE_HOME: userCache }, asUser);
      expect(existsSync(cache)).toBe(false);
      const [, user] = cachePaths(bundle, { XDG_CACHE_HOME: userCache });
      expect(validCache(user, bundle)).toBeDefined();
      // Nowhere to write at all: the user cache folder is a file.
      const blocked = join(dir, 'readonly-blocked');
      writeFileSync(blocked, 'not a folder');
      resyncs(bin, 'readonly-b', { XDG_CACHE_HOME: blocked }, asUser);
      expect(readdirSync(join(bundle, '..')).filter((f) => f.includes('.v8cache'))).toEqual([]);
    } finally {
      for (const d of readOnly) chmodSync(d, 0o755); // so that the cleanup can remove them
    }
  });

  it('resync --compress loads the WASM zstd from inside the bundle', () => {
    const { bin } = installCopy('zstd');
    const d = join(dir, 'zstd-data');
    mkdirSync(d);
    const p = join(d, 'p.raw');
    const r = join(d, 'r.raw');
    const text = Buffer.alloc(2 * MiB, 'a compressible line of a disk image\n');
    writeFileSync(p, text);
    writeFileSync(r, Buffer.alloc(2 * MiB));
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'zstd', 'node_modules')); // the package's dependencies
    const out = run(bin, ['resync', p, r, '--compress', '--link', '100mbps', '--json'], { home: join(d, 'home') });
    expect(out.stderr).toBe('');
    expect(out.status).toBe(0);
    expect(JSON.parse(out.stdout).compression).toMatchObject({ codec: 'zstd' });
    expect(readFileSync(r).equals(text)).toBe(true);
  });
});
