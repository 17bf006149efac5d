// Builds the static web app (host/web/) into dist/web/: page.js (app.ts) and compare-worker.js (worker.ts) bundled by esbuild for
// browsers, plus index.html and style.css. Any Node built-in reaching the bundle fails the build, so the
// page can never depend on node: modules by accident. Runs after `tsc -p host` (npm run build), whose
// per-file output for host/web/ it removes: dist/web/ holds only what the server should serve. Files are
// replaced one by one (write, rename), so a running `vhdsync web` keeps serving while it rebuilds.
//
// Usage: node scripts/build-web.mjs        (npm run build:web)

import * as esbuild from 'esbuild';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'host/web');
const out = join(root, 'dist/web');

/** Fails the bundle on any Node built-in, with or without the `node:` prefix. */
const noNodeBuiltins = {
  name: 'no-node-builtins',
  setup(build) {
    const builtins = /^(node:.*|fs|path|os|crypto|buffer|url|child_process|worker_threads|stream|util|http|net|tls)(\/.*)?$/;
    build.onResolve({ filter: builtins }, (args) => ({
      errors: [{ text: `${args.importer} imports the Node built-in '${args.path}'; the web app must run in browsers` }],
    }));
  },
};

/** Replace one file atomically, so a page being served while the build runs never sees half a file. */
async function put(name, contents) {
  const tmp = join(out, `.${name}.${process.pid}.tmp`);
  await writeFile(tmp, contents);
  await rename(tmp, join(out, name));
}

async function main() {
  const started = performance.now();
  await mkdir(out, { recursive: true });
  const result = await esbuild.build({
    // Names tsc never emits (it writes app.js, worker.js ... here from host/web/*.ts), so a `tsc -p host`
    // running beside a served page cannot clobber the bundles.
    entryPoints: { page: join(src, 'app.ts'), 'compare-worker': join(src, 'worker.ts') },
    outdir: out,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['chrome111', 'firefox111', 'safari16.4'],
    minify: true,
    sourcemap: 'linked',
    legalComments: 'none',
    logLevel: 'warning',
    write: false,
    plugins: [noNodeBuiltins],
  });
  if (result.errors.length > 0) throw new Error(`${result.errors.length} esbuild error(s)`);
  const files = new Map(result.outputFiles.map((f) => [basename(f.path), f.contents]));
  for (const name of ['index.html', 'style.css']) files.set(name, await readFile(join(src, name)));
  for (const [name, contents] of files) await put(name, contents);
  // Whatever else is there (tsc's per-file output for host/web/, old builds) is not part of the app.
  for (const name of await readdir(out)) {
    if (!files.has(name) && !name.endsWith('.tmp')) await rm(join(out, name), { recursive: true, force: true });
  }
  console.log(`build-web: wrote dist/web/ (${Math.round(performance.now() - started)} ms)`);
}

main().catch((e) => {
  console.error(`build-web: ${e.message}`);
  process.exit(1);
});
