import { mkdtempSync, rmSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh directory under the system's temporary directory; `cleanup` removes it and all below. */
export function tempDir(prefix = 'vhdsync-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => removeDir(dir) };
}

/** Remove a directory and all below it; nothing when it is undefined (a beforeAll that failed early). */
export function removeDir(dir: string | undefined): void {
  if (dir) rmSync(dir, { recursive: true, force: true });
}

let subDirs = 0;

/** A fresh folder inside `parent` (one a test, so tests of a file never share files). */
export async function subDir(parent: string): Promise<string> {
  const d = join(parent, `t${++subDirs}`);
  await mkdir(d);
  return d;
}
