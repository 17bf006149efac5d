// Bundles the CLI into dist/cli/bundle/: vhdsync.cjs (host/cli/program.ts and everything it imports,
// commander included) and replica-worker.js (the replica endpoint's thread). One file loads in a few
// milliseconds where ~150 small modules cost a resolve, a stat and a compile each: the fixed cost of
// every `vhdsync` run (issue 17). dist/cli/bin.js (host/cli/bin.ts, the package's `bin`) compiles the
// bundle from a V8 code cache (host/cli/code-cache.ts), which this build makes by running a small
// resync, and evaluates it. Commands stay lazy inside the bundle:
// esbuild keeps each `import('./x.js')` as a function that evaluates the module on first call.
//
// The bundle sits two folders below dist/ as the per-file output does (dist/cli/commands/), so the
// paths the code computes from import.meta.url still hold: ../../web/ for the page, ./replica-worker.js
// for the thread. Runs after `tsc -p host` (npm run build), which emits dist/cli/bin.js.
//
// Usage: node scripts/build-cli.mjs        (npm run build:cli)

import * as esbuild from 'esbuild';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

async function main() {
  const started = performance.now();
  // The WASM zstd stays a package in node_modules: it reads its .wasm file beside its own module.
  const common = { bundle: true, platform: 'node', target: 'node20', sourcemap: 'linked', legalComments: 'none', logLevel: 'warning', external: ['@bokuweb/zstd-wasm'] };
  // CommonJS, so that each Node built-in is require()d where the module using it is first evaluated:
  // ES module output hoists every `import ... from 'node:tls'` (zlib, worker_threads ...) to the top
  // and loads them all for `--help` (~20 ms). import.meta.url becomes the bundle's own file URL.
  await esbuild.build({
    ...common,
    entryPoints: { vhdsync: join(root, 'host/cli/program.ts') },
    outdir: join(root, 'dist/cli/bundle'),
    outExtension: { '.js': '.cjs' },
    format: 'cjs',
    define: { 'import.meta.url': '__vhdsyncBundleUrl' },
    banner: { js: "var __vhdsyncBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  });
  await asciiOnly(join(root, 'dist/cli/bundle/vhdsync.cjs'));
  // The replica's thread and the zstd compressor's thread (modules with top-level await): each loaded
  // only by a resync that starts it.
  await esbuild.build({
    ...common,
    entryPoints: { 'replica-worker': join(root, 'host/resync/replica-worker.ts'), 'zstd-worker': join(root, 'host/transport/zstd-worker.ts') },
    outdir: join(root, 'dist/cli/bundle'),
    format: 'esm',
    // commander is not in the worker, but any CommonJS dependency would require() Node built-ins.
    banner: { js: "import { createRequire as __vhdsyncRequire } from 'node:module'; const require = __vhdsyncRequire(import.meta.url);" },
  });
  // `vhdsync --help` as the bundle prints it into a pipe (80 columns), so that bin.js can answer it
  // without evaluating every command's module and the Node built-ins they load. Made from this very
  // bundle at every build, so it cannot go stale; test/cli.bundle.test.ts compares the two.
  const noCache = { ...process.env, NODE_DISABLE_COMPILE_CACHE: '1' };
  const help = spawnSync(process.execPath, [join(root, 'dist/cli/bin.js'), '--help'], { encoding: 'utf8', env: { ...noCache, VHDSYNC_NO_HELP_CACHE: '1' } });
  if (help.status !== 0 || !help.stdout.startsWith('Usage: vhdsync')) throw new Error(`vhdsync --help failed: ${help.stderr}`);
  await writeFile(join(root, 'dist/cli/bundle/help.txt'), help.stdout);
  // import() is refused inside the vm.Script that bin.js compiles the bundle in (host/cli/code-cache.ts).
  const bundle = await readFile(join(root, 'dist/cli/bundle/vhdsync.cjs'), 'utf8');
  const dynamic = bundle.match(/(?<![.\w$])import\(\s*[`'"][^`'"]*/);
  if (dynamic) throw new Error(`dist/cli/bundle/vhdsync.cjs calls ${dynamic[0]}...: load it with require() (host/cli/code-cache.ts)`);
  // Only a speed-up: a build where the small resync cannot run still ships a working CLI (the first
  // run then writes the cache).
  await warmCodeCache().catch((e) => console.warn(`build-cli: no code cache made beside the bundle: ${e.message}`));
  // The package's bin is executable in a clone too (npm sets the bit only when it installs a package):
  // `./dist/cli/bin.js`, or a link to it on the PATH (test/readme.examples.test.ts), runs as is.
  await chmod(join(root, 'dist/cli/bin.js'), 0o755);
  console.log(`build-cli: wrote dist/cli/bundle/ (${Math.round(performance.now() - started)} ms)`);
}

/**
 * esbuild escapes non-ASCII characters in code but keeps them in the comments it carries over (a few
 * dashes and arrows). An ASCII file is read as a one-byte string by host/cli/code-cache.ts, ~10 ms
 * less per run than decoding UTF-8: every non-ASCII UTF-16 unit becomes a \uXXXX escape, which means
 * the same character in a string, a template, a regular expression or an identifier, and is inert
 * in a comment.
 */
async function asciiOnly(file) {
  const text = await readFile(file, 'utf8');
  // After a backslash the escape would read differently (`\\` then `u2014`): none is expected.
  const escaped = /\\[^\x00-\x7f]/.exec(text);
  if (escaped) throw new Error(`${file}: a backslash before a non-ASCII character at ${escaped.index}; cannot make the bundle ASCII`);
  const ascii = text.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (ascii !== text) await writeFile(file, ascii);
}

/**
 * The V8 code cache beside the bundle (host/cli/code-cache.ts), made by a small resync (raw onto an
 * empty dynamic VHD: compare, send, merge) so that it holds the functions a resync runs, not only
 * those of the first command someone happens to type. Any run writes it anew if it goes stale.
 */
async function warmCodeCache() {
  const dir = await mkdtemp(join(tmpdir(), 'vhdsync-build-'));
  try {
    const bin = join(root, 'dist/cli/bin.js');
    const run = (args, env) => {
      const r = spawnSync(process.execPath, [bin, ...args], { cwd: dir, encoding: 'utf8', env: { ...env, VHDSYNC_HOME: join(dir, 'home') } });
      if (r.status !== 0) throw new Error(`vhdsync ${args.join(' ')} failed: ${r.stderr}`);
    };
    await writeFile(join(dir, 'p.raw'), randomBytes(8 << 20));
    run(['create', 'r.vhd', '--size', '8M'], { ...process.env, NODE_DISABLE_COMPILE_CACHE: '1' });
    await rm(join(root, 'dist/cli/bundle', `vhdsync.cjs.${process.versions.v8}-${process.arch}.v8cache`), { force: true });
    run(['resync', 'p.raw', 'r.vhd', '--json'], process.env);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`build-cli: ${e.message}`);
  process.exit(1);
});
