import { join, resolve } from 'node:path';

/** The repository, and the built CLI every CLI test runs (`npm run build` makes it). */
export const ROOT = resolve(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'cli', 'bin.js');
