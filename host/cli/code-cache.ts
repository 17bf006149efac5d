/**
 * Loads the bundled CLI (one CommonJS file) as require() would, but through vm.Script with a V8 code
 * cache, as v8-compile-cache does: Node 20 has no module.enableCompileCache, and compiling the 1.6 MB
 * bundle was ~60–120 ms of every run on a 2-core machine (bench/fixed-cost.mjs, issue 17).
 *
 * One cache file per V8 version and architecture, beside the bundle (the build writes it by running a
 * small resync) or, where that folder cannot be written, in the user's cache folder
 * ($XDG_CACHE_HOME/vhdsync, else ~/.cache/vhdsync). A file is offered to V8 only if its header names
 * this very bundle (sha256 of its text) and its payload's sha256 matches: V8's own check looks at the
 * source's length, its version and its flags, not at the text. Anything else (no file, another
 * bundle, a torn or corrupt file, V8 refusing it) compiles the bundle as usual and, at exit, writes a
 * fresh cache (temp file + rename: a reader never sees half of one) holding every function the run
 * compiled. A cache that cannot be read or written is skipped without a word: it never stops the CLI.
 * NODE_DISABLE_COMPILE_CACHE=1 turns it off, as it does Node's own cache.
 */
import { isAscii } from 'node:buffer';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { Script } from 'node:vm';

const MAGIC = Buffer.from('vhdsync V8 code cache 1\n');
const HASH = 32;

/** Where a cache for `bundle` may live, in the order tried: beside it, then the user's cache folder. */
export function cachePaths(bundle: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const name = `${basename(bundle)}.${process.versions.v8}-${process.arch}.v8cache`;
  const home = env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return [join(dirname(bundle), name), join(home, 'vhdsync', name)];
}

/** The cache file's bytes: magic, sha256 of the bundle's text, sha256 of the payload, the payload. */
export function encodeCache(sourceHash: Buffer, data: Buffer): Buffer {
  return Buffer.concat([MAGIC, sourceHash, sha256(data), data]);
}

/** The V8 payload of a cache file, if the file is whole and made for the bundle with this hash. */
export function decodeCache(file: Buffer, sourceHash: Buffer): Buffer | undefined {
  const at = MAGIC.length;
  if (file.length <= at + 2 * HASH || !file.subarray(0, at).equals(MAGIC)) return undefined;
  if (!file.subarray(at, at + HASH).equals(sourceHash)) return undefined;
  const data = file.subarray(at + 2 * HASH);
  return sha256(data).equals(file.subarray(at + HASH, at + 2 * HASH)) ? data : undefined;
}

/** Evaluates the CommonJS file `bundle` and returns its exports, compiled from the cache where one fits. */
export function requireWithCodeCache(bundle: string): unknown {
  const bytes = readFileSync(bundle);
  // The build makes the bundle pure ASCII (scripts/build-cli.mjs), which reads as a one-byte string in
  // ~1 ms; decoding 1.7 MB as UTF-8 took ~10 ms, and hashing the string again as much. The digest of
  // the bytes is the text's (sha256 of its UTF-8), so caches made either way stay valid.
  const source = isAscii(bytes) ? bytes.toString('latin1') : bytes.toString('utf8');
  const off = process.env.NODE_DISABLE_COMPILE_CACHE === '1';
  const sourceHash = off ? Buffer.alloc(0) : sha256(bytes);
  const paths = off ? [] : cachePaths(bundle);
  let cachedData: Buffer | undefined;
  for (const p of paths) {
    cachedData = readCache(p, sourceHash);
    if (cachedData) break;
  }
  // The wrapper Node puts around every CommonJS module.
  const script = new Script(`(function (exports, require, module, __filename, __dirname) { ${source}\n})`, { filename: bundle, cachedData });
  if (!off && (cachedData === undefined || script.cachedDataRejected)) {
    process.once('exit', () => writeCache(paths, sourceHash, script));
  }
  const module = { exports: {} as unknown, filename: bundle };
  const wrapper = script.runInThisContext({ displayErrors: true }) as (...args: unknown[]) => void;
  wrapper.call(module.exports, module.exports, createRequire(bundle), module, bundle, dirname(bundle));
  return module.exports;
}

function readCache(path: string, sourceHash: Buffer): Buffer | undefined {
  try {
    return decodeCache(readFileSync(path), sourceHash);
  } catch {
    return undefined;
  }
}

/** At exit: the functions this run compiled, into the first place that takes the file. */
function writeCache(paths: string[], sourceHash: Buffer, script: Script): void {
  let bytes: Buffer;
  try {
    bytes = encodeCache(sourceHash, script.createCachedData());
  } catch {
    return;
  }
  for (const p of paths) {
    const tmp = `${p}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      mkdirSync(dirname(p), { recursive: true, mode: 0o700 });
      writeFileSync(tmp, bytes, { mode: 0o644 });
      renameSync(tmp, p);
      return;
    } catch {
      try {
        rmSync(tmp, { force: true });
      } catch {
        // nothing more to do: the next run tries again
      }
    }
  }
}

function sha256(data: string | Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}
