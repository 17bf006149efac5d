/**
 * What `npm pack` would publish (the file list npm itself computes) and what the package says about
 * itself: no source map without its sources, no tsbuildinfo, the LICENSE it names, a deliberate main
 * entry (low-level format names only under `vhdsync/formats`). And what a consumer sees installing the
 * packed tarball with this machine's npm: no install-script warning, a working `npx vhdsync`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/temp-dir.js';

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
    expect(files.filter((f) => /\.(tsbuildinfo|v8cache)$/.test(f))).toEqual([]); // v8cache: this machine's V8 code cache
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

describe('a consumer installing the packed tarball', () => {
  /** npm as a consumer runs it: no update notice, audit or funding lines, so what is left is about the install. */
  const npm = (args: string[], cwd: string) => {
    const r = spawnSync('npm', args, {
      cwd,
      encoding: 'utf8',
      env: { ...process.env, npm_config_update_notifier: 'false', npm_config_audit: 'false', npm_config_fund: 'false' },
    });
    return { status: r.status, output: `${r.stdout}${r.stderr}` };
  };

  it('npm pack then npm i ./vhdsync-*.tgz prints no install-script warning, and npx vhdsync --version runs the installed bin', async () => {
    const { dir, cleanup } = tempDir('vhdsync-consumer-');
    try {
      // Pack a copy of what `files` ships plus the pack script, so the worktree's package.json is never
      // rewritten under tests running beside this one. Same manifest, same lifecycle (prepack, postpack).
      const src = join(dir, 'src');
      mkdirSync(join(src, 'scripts'), { recursive: true });
      for (const f of ['package.json', 'README.md', 'LICENSE', 'dist', 'build/core.wasm', 'build/core.simd.wasm', 'scripts/pack-manifest.mjs']) {
        cpSync(join(ROOT, f), join(src, f), { recursive: true });
      }
      const packed = npm(['pack', '--pack-destination', dir], src);
      expect(packed.status, packed.output).toBe(0);
      const tarball = readdirSync(dir).find((f) => /^vhdsync-.*\.tgz$/.test(f))!;
      expect(tarball).toBe(`vhdsync-${pkg.version}.tgz`);
      expect(readFileSync(join(src, 'package.json'), 'utf8')).toBe(readFileSync(join(ROOT, 'package.json'), 'utf8')); // postpack put it back
      expect(readdirSync(src)).not.toContain('.package.json.prepack');
      // The repository keeps `prepare` (a build after npm ci, and for installs from git); the tarball does not.
      expect(pkg.scripts.prepare).toBe('npm run build');
      const shipped = JSON.parse(execFileSync('tar', ['-xOzf', join(dir, tarball), 'package/package.json'], { encoding: 'utf8' }));
      expect(shipped.scripts.prepare).toBeUndefined();
      for (const hook of ['preinstall', 'install', 'postinstall']) expect(shipped.scripts[hook]).toBeUndefined();

      // The consumer: an empty project, dependencies from the local npm cache where it has them.
      const app = join(dir, 'app');
      mkdirSync(app);
      writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
      const install = npm(['install', '--prefer-offline', `../${tarball}`], app);
      expect(install.status, install.output).toBe(0);
      expect(install.output).toMatch(/added \d+ packages?/);
      expect(install.output).not.toMatch(/install-scripts|allowScripts/);
      expect(install.output.split('\n').filter((l) => /npm warn/i.test(l) && /vhdsync|prepare|postinstall|build/i.test(l))).toEqual([]);
      const review = npm(['install-scripts', 'ls'], app);
      expect(review.output).not.toMatch(/vhdsync/);

      const npx = spawnSync('npx', ['vhdsync', '--version'], { cwd: app, encoding: 'utf8', env: { ...process.env, npm_config_update_notifier: 'false' } });
      expect(npx.status, npx.stderr).toBe(0);
      expect(npx.stdout.trim()).toBe(pkg.version);
      const info = spawnSync(join(app, 'node_modules', '.bin', 'vhdsync'), ['info', join(ROOT, 'fixtures', 'README.md'), '-f', 'raw', '--json'], { encoding: 'utf8' });
      expect(info.status, info.stderr).toBe(0);
      expect(JSON.parse(info.stdout).format).toBe('raw');
    } finally {
      await cleanup();
    }
  }, 120_000);
});
