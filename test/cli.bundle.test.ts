import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { isAscii } from 'node:buffer';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from './support/bytes.js';
import { cli, cliEnv } from './support/cli.js';
import { rawImage } from './support/images.js';
import { qemuIdentical, qemuImg } from './support/oracles.js';
import { CLI, ROOT } from './support/paths.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

const UNBUNDLED = join(ROOT, 'dist', 'cli', 'main.js');
let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir()));
afterAll(() => cleanup());

const unbundled = (args: string[]) => spawnSync(process.execPath, [UNBUNDLED, ...args], { encoding: 'utf8', env: cliEnv({ home: join(dir, 'home') }) });

describe('the bundled CLI (dist/cli/bin.js, the package bin)', () => {
  it('is the bin of package.json and prints its version', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    expect(join(ROOT, pkg.bin.vhdsync)).toBe(CLI);
    for (const flag of ['--version', '-V']) {
      expect(cli([flag], { home: join(dir, 'home') }).stdout).toBe(`${pkg.version}\n`);
      expect(unbundled([flag]).stdout).toBe(`${pkg.version}\n`);
    }
  });

  it('prints the same help as the unbundled program, whole and per command', () => {
    for (const args of [['--help'], ['-h'], ['resync', '--help'], ['info', '--help']]) {
      const b = cli(args, { home: join(dir, 'home') });
      expect(b.status).toBe(0);
      expect(b.stdout).toBe(unbundled(args).stdout);
    }
    expect(cli(['--help'], { home: join(dir, 'home') }).stdout).toMatch(/^Usage: vhdsync/);
  });

  it('is pure ASCII, so code-cache.ts reads it as a one-byte string (issue 17)', () => {
    // Its non-ASCII text (the help's dash) is kept as escapes: the help test above compares it.
    expect(isAscii(readFileSync(join(ROOT, 'dist', 'cli', 'bundle', 'vhdsync.cjs')))).toBe(true);
    expect(readFileSync(join(ROOT, 'dist', 'cli', 'bundle', 'help.txt'), 'utf8')).toContain('Hyper-V Replica does \u2014');
  });

  it('fails on a bad command line with one line and exit 2, as the unbundled program does', () => {
    const b = cli(['resync'], { home: join(dir, 'home') });
    expect(b.status).toBe(2);
    expect(b.stderr).toBe(unbundled(['resync']).stderr);
  });
});

describe('where the replica endpoint runs', () => {
  it('a small VHD pair resyncs to identical with the replica in this thread and in its own', async () => {
    const raw = await rawImage(join(dir, 'p.raw'), 16 * MiB, [[0, randomBytes(4 * MiB, 3)], [9 * MiB, randomBytes(MiB, 4)]]);
    const base = join(dir, 'base.vhd');
    const p = join(dir, 'p.vhd');
    qemuImg('convert', '-f', 'raw', '-O', 'vpc', raw, base);
    qemuImg('convert', '-f', 'raw', '-O', 'vpc', await rawImage(join(dir, 'p2.raw'), 16 * MiB, [[0, randomBytes(4 * MiB, 3)], [9 * MiB, randomBytes(MiB, 5)]]), p);
    for (const where of ['never', 'always', '']) {
      const r = join(dir, `r-${where || 'default'}.vhd`);
      await copyFile(base, r);
      expect(qemuIdentical(p, r)).toBe(false);
      const out = cli(['resync', p, r, '--json'], { home: join(dir, 'home'), env: { VHDSYNC_REPLICA_THREAD: where } });
      expect(out.stderr).toBe('');
      expect(out.status).toBe(0);
      expect(JSON.parse(out.stdout)).toMatchObject({ result: 'completed', bytesSent: MiB });
      expect(qemuIdentical(p, r)).toBe(true);
    }
  });
});
