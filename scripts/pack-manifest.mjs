#!/usr/bin/env node
/**
 * The package.json that goes into the tarball has no `prepare` script. In the repository, `prepare`
 * builds after `npm ci` and for installs from git; in the tarball it would only be a build that cannot
 * run (no sources are shipped, `files` ships the built dist/ and build/*.wasm), which npm ≥ 11 lists to
 * every consumer installing a tarball as "install scripts not yet covered by allowScripts".
 *
 *   node scripts/pack-manifest.mjs strip     prepack: keep package.json aside, write it without `prepare`
 *   node scripts/pack-manifest.mjs restore   postpack: put the kept package.json back
 *
 * npm reads the manifest again after prepack, so neither `npm pack` nor `npm publish` runs `prepare`
 * then: `npm pack` packs the dist/ that `npm ci` (or `npm run build`) made, and `npm publish` builds
 * first (prepublishOnly). A pack that died between the two leaves the kept copy; the next strip reuses it.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const root = process.cwd(); // npm runs lifecycle scripts in the package's folder
const manifest = join(root, 'package.json');
const kept = join(root, '.package.json.prepack');

function fail(line) {
  console.error(`pack-manifest: ${line}`);
  process.exit(1);
}

const command = process.argv[2];
if (command === 'strip') {
  const pkg = JSON.parse(readFileSync(manifest, 'utf8'));
  const missing = Object.values(pkg.bin ?? {}).filter((f) => !existsSync(join(root, f)));
  if (missing.length > 0) fail(`${missing.join(', ')} missing: run \`npm run build\` before packing`);
  if (!existsSync(kept)) writeFileSync(kept, readFileSync(manifest));
  if (pkg.scripts?.prepare !== undefined) {
    delete pkg.scripts.prepare;
    writeFileSync(manifest, JSON.stringify(pkg, null, 2) + '\n');
  }
} else if (command === 'restore') {
  if (existsSync(kept)) renameSync(kept, manifest);
} else {
  fail('usage: pack-manifest.mjs strip|restore');
}
