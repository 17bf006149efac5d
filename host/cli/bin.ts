#!/usr/bin/env node
/**
 * The `vhdsync` command (package.json `bin`): the CLI bundled into one CommonJS file
 * (dist/cli/bundle/vhdsync.cjs, built by scripts/build-cli.mjs from ./program.ts), compiled from a V8
 * code cache of its own (./code-cache.ts; Node 20 has no module.enableCompileCache) so that a run
 * after the first skips compiling it. Node's compile cache (Node ≥ 22.1) is on for the modules loaded
 * later (the replica's thread). NODE_DISABLE_COMPILE_CACHE=1 switches both off. `--version` and
 * `--help` alone are answered here, without the bundle (the help text is the bundle's own, saved at
 * build time). bench/fixed-cost.mjs measures all of this.
 */
import { readFileSync } from 'node:fs';
import module from 'node:module';
import { fileURLToPath } from 'node:url';
import { VERSION } from './version.js';

const args = process.argv.slice(2);
const only = args.length === 1 ? args[0] : undefined;
if (only === '--version' || only === '-V') {
  process.stdout.write(`${VERSION}\n`);
} else if ((only === '--help' || only === '-h') && !process.env.VHDSYNC_NO_HELP_CACHE && (process.stdout.columns ?? 80) >= 80 && printSavedHelp()) {
  // printed
} else {
  (module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
  const { requireWithCodeCache } = await import('./code-cache.js');
  const cli = requireWithCodeCache(fileURLToPath(new URL('./bundle/vhdsync.cjs', import.meta.url))) as typeof import('./program.js');
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
