/**
 * What `npm pack` would publish (the file list npm itself computes) and what the package says about
 * itself: no source map without its sources, no tsbuildinfo, the LICENSE it names, a deliberate main
 * entry (low-level format names only under `vhdsync/formats`).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './support/files.js';

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
let files: string[];

beforeAll(() => {
  // --ignore-scripts: the suite has built already; pack must not rebuild.
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
  files = (JSON.parse(out)[0].files as { path: string }[]).map((f) => f.path);
});

describe('npm pack', () => {
  it('ships the bin, both WASM builds, README and LICENSE, and no sources, tests or build state', () => {
    expect(files).toEqual(expect.arrayContaining(['package.json', 'README.md', 'LICENSE', 'dist/cli/bin.js', 'dist/index.js', 'build/core.wasm', 'build/core.simd.wasm']));
    expect(files.filter((f) => /\.tsbuildinfo$/.test(f))).toEqual([]);
    expect(files.filter((f) => /^(host|test|assembly|bench|scripts|fixtures)\//.test(f))).toEqual([]);
  });

  it('every source map in the package carries the sources it points at', () => {
    const maps = files.filter((f) => f.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(0);
    const bad: string[] = [];
    for (const m of maps) {
      const map = JSON.parse(readFileSync(join(ROOT, m), 'utf8')) as { sources: string[]; sourcesContent?: (string | null)[] };
      map.sources.forEach((s, i) => {
        const shipped = files.includes(join(m, '..', s).replace(/\\/g, '/'));
        if (!shipped && typeof map.sourcesContent?.[i] !== 'string') bad.push(`${m}: ${s}`);
      });
    }
    expect(bad).toEqual([]);
  });

  it('package.json: MIT as LICENSE says, sideEffects false, repository and bugs, engines', () => {
    expect(pkg.license).toBe('MIT');
    expect(readFileSync(join(ROOT, 'LICENSE'), 'utf8')).toMatch(/^MIT License\n/);
    expect(pkg.sideEffects).toBe(false);
    expect(pkg.repository.url).toMatch(/^git\+https:\/\//);
    expect(pkg.bugs.url).toMatch(/^https:\/\//);
    expect(pkg.engines.node).toBe('>=20.19');
  });

  it('the main entry exports what README documents, not the on-disk parsers; those are vhdsync/formats', async () => {
    const main = await import(pathToFileURL(join(ROOT, 'dist', 'index.js')).href);
    for (const name of ['openDisk', 'createVhd', 'createVhdx', 'resync', 'startResync', 'cancelResync', 'diffDisks', 'diskChecksum', 'loadCore', 'Replication', 'VhdsyncError']) {
      expect(main).toHaveProperty(name);
    }
    for (const name of ['parseFooter', 'buildFooter', 'parseBat', 'parseDynamicHeader', 'VhdFixedDisk', 'RawDisk', 'useSyncIo', 'openVhdAlone']) {
      expect(main).not.toHaveProperty(name);
    }
    const formats = await import(pathToFileURL(join(ROOT, pkg.exports['./formats'].default)).href);
    expect(formats).toHaveProperty('parseFooter');
    expect(formats).toHaveProperty('parseBat');
  });
});
