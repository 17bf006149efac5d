import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // HOME is a temporary folder for the whole run; a test file after which vhdsync state is found
    // there fails, and so does the run.
    globalSetup: ['test/support/home-guard.ts'],
    setupFiles: ['test/support/home-check.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Vitest's default is one worker per core less one: a single worker on a 2-core machine, where the
    // files then run one after another although most of their time is spent waiting on child processes
    // (the CLI, qemu-img, servers). Two at least.
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
});
