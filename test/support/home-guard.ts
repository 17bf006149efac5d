/**
 * The guard of the real home, for the whole run (vitest globalSetup): HOME is an empty temporary folder
 * and VHDSYNC_HOME is unset, so a test that runs the CLI (or the library) without naming its own home
 * writes there, never to the real ~/.vhdsync. home-check.ts (a setup file) fails the test file after
 * which vhdsync state appeared; this teardown fails the run if any was found. npm keeps the real user
 * config and cache (package.test installs from that cache, offline).
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const realHome = homedir();
  const home = mkdtempSync(join(tmpdir(), 'vhdsync-test-home-'));
  process.env.npm_config_cache ??= join(realHome, '.npm');
  process.env.npm_config_userconfig ??= join(realHome, '.npmrc');
  process.env.HOME = home;
  delete process.env.VHDSYNC_HOME;
  return () => {
    const found = readdirSync(home).filter((e) => e.startsWith('.vhdsync'));
    rmSync(home, { recursive: true, force: true });
    if (found.length > 0) {
      process.exitCode = 1;
      throw new Error(`tests wrote vhdsync state into HOME without naming their own home (${found.join(', ')}); run the CLI through test/support/cli.ts, which requires one`);
    }
  };
}
