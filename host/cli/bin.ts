#!/usr/bin/env node
/**
 * The `vhdsync` command (package.json `bin`): Node's compile cache on, then the CLI bundled into one
 * CommonJS file (dist/cli/bundle/vhdsync.cjs, built by scripts/build-cli.mjs from ./program.ts).
 * With the cache (Node ≥ 22.1) a run after the first skips compiling the bundle; Node 20 has no such
 * cache and just loads it. The cache lives where Node puts it (NODE_COMPILE_CACHE, else the temp
 * folder) and is switched off by NODE_DISABLE_COMPILE_CACHE=1. `--version` and `--help` alone are
 * answered here, without the bundle (the help text is the bundle's own, saved at build time).
 * bench/fixed-cost.mjs measures all of this.
 */
import { readFileSync } from 'node:fs';
import module from 'node:module';
import { VERSION } from './version.js';

const args = process.argv.slice(2);
const only = args.length === 1 ? args[0] : undefined;
if (only === '--version' || only === '-V') {
  process.stdout.write(`${VERSION}\n`);
} else if ((only === '--help' || only === '-h') && !process.env.VHDSYNC_NO_HELP_CACHE && (process.stdout.columns ?? 80) >= 80 && printSavedHelp()) {
  // printed
} else {
  (module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
  const cli = module.createRequire(import.meta.url)('./bundle/vhdsync.cjs') as typeof import('./program.js');
  await cli.runCli(process.argv);
}

/** The help text saved by the build (80 columns), if it is there. */
function printSavedHelp(): boolean {
  try {
    process.stdout.write(readFileSync(new URL('./bundle/help.txt', import.meta.url), 'utf8'));
    return true;
  } catch {
    return false;
  }
}
