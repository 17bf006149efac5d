import { readFileSync } from 'node:fs';

/**
 * The version `vhdsync --version` prints. Defined once, in package.json: read from the package this
 * file is part of, whichever folder it runs from (host/cli/ in tests, dist/cli/ from the bin,
 * dist/cli/bundle/ in the bundle), by walking up to the package.json named "vhdsync".
 */
function packageVersion(): string {
  let dir = new URL('.', import.meta.url);
  for (let depth = 0; depth < 4; depth++) {
    const pkg = readPackage(new URL('package.json', dir));
    if (pkg?.name === 'vhdsync' && typeof pkg.version === 'string') return pkg.version;
    dir = new URL('..', dir);
  }
  return 'unknown';
}

function readPackage(url: URL): { name?: unknown; version?: unknown } | undefined {
  try {
    return JSON.parse(readFileSync(url, 'utf8')) as { name?: unknown; version?: unknown };
  } catch {
    return undefined; // no package.json at this level (or not ours): look one folder up
  }
}

export const VERSION = packageVersion();
