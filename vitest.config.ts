import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Vitest's default is one worker per core less one: a single worker on a 2-core machine, where the
    // files then run one after another although most of their time is spent waiting on child processes
    // (the CLI, qemu-img, servers). Two at least.
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
});
