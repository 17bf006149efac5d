/**
 * Setup file of every test file: after the file, vhdsync state in HOME (a temporary folder, see
 * home-guard.ts) fails it. The state is moved aside, so the next file starts clean; the run's teardown
 * still sees it. With files running in parallel, the one beside it may be the culprit: the message says so.
 */
import { existsSync, renameSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, expect } from 'vitest';

afterAll(() => {
  const state = join(homedir(), '.vhdsync');
  if (!existsSync(state)) return;
  const file = basename(expect.getState().testPath ?? 'this file');
  renameSync(state, `${state}-after-${file}-${process.pid}`);
  throw new Error(`vhdsync state appeared in HOME (${state}) during ${file} or a file running beside it: a CLI run without its own home; use test/support/cli.ts`);
});
