import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** Every file under a directory with its size and mtime: equal snapshots mean nothing was written. */
export async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of (await readdir(d)).sort()) {
      const p = join(d, e);
      const st = await lstat(p);
      out.push(`${p} ${st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out;
}
