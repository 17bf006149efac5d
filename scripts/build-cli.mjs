// Bundles the CLI into dist/cli/bundle/: vhdsync.cjs (host/cli/program.ts and everything it imports,
// commander included) and replica-worker.js (the replica endpoint's thread). One file loads in a few
// milliseconds where ~150 small modules cost a resolve, a stat and a compile each: the fixed cost of
// every `vhdsync` run (issue 17). dist/cli/bin.js (host/cli/bin.ts, the package's `bin`) turns on
// Node's compile cache where there is one and imports the bundle. Commands stay lazy inside the bundle:
// esbuild keeps each `import('./x.js')` as a function that evaluates the module on first call.
//
// The bundle sits two folders below dist/ as the per-file output does (dist/cli/commands/), so the
// paths the code computes from import.meta.url still hold: ../../web/ for the page, ./replica-worker.js
// for the thread. Runs after `tsc -p host` (npm run build), which emits dist/cli/bin.js.
//
// Usage: node scripts/build-cli.mjs        (npm run build:cli)

import * as esbuild from 'esbuild';
import { spawnSync } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
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
  const help = spawnSync(process.execPath, [join(root, 'dist/cli/bin.js'), '--help'], { encoding: 'utf8', env: { ...process.env, VHDSYNC_NO_HELP_CACHE: '1' } });
  if (help.status !== 0 || !help.stdout.startsWith('Usage: vhdsync')) throw new Error(`vhdsync --help failed: ${help.stderr}`);
  await writeFile(join(root, 'dist/cli/bundle/help.txt'), help.stdout);
  // The package's bin is executable in a clone too (npm sets the bit only when it installs a package):
  // `./dist/cli/bin.js`, or a link to it on the PATH (test/readme.examples.test.ts), runs as is.
  await chmod(join(root, 'dist/cli/bin.js'), 0o755);
  console.log(`build-cli: wrote dist/cli/bundle/ (${Math.round(performance.now() - started)} ms)`);
}

main().catch((e) => {
  console.error(`build-cli: ${e.message}`);
  process.exit(1);
});
