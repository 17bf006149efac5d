/** The committed test images (fixtures/, made by make-fixtures.py) and the writes each one received. */
import { copyFileSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { tempDir } from './temp-dir.js';

export const FIXTURES = fileURLToPath(new URL('../../fixtures/', import.meta.url));

export interface FixtureWrite {
  offset: number;
  length: number;
  /** Byte value written, or null for a zero write (`qemu-io write -z`). */
  pattern: number | null;
}

/** The writes each fixture received (fixtures/writes.json, produced by make-fixtures.py). */
export function fixtureWrites(name: string): FixtureWrite[] {
  const all = JSON.parse(readFileSync(join(FIXTURES, 'writes.json'), 'utf8')) as Record<string, FixtureWrite[]>;
  const w = all[name];
  if (!w) throw new Error(`no writes recorded for ${name}`);
  return w;
}

/** Unpack every fixture (gunzipping *.gz) into a fresh temporary directory. */
export function unpackFixtures(): string {
  const { dir } = tempDir('vhdsync-disk-');
  for (const f of readdirSync(FIXTURES)) {
    if (f.endsWith('.gz')) writeFileSync(join(dir, f.slice(0, -3)), gunzipSync(readFileSync(join(FIXTURES, f))));
    else if (/\.(vhd|vhdx|img)$/.test(f)) copyFileSync(join(FIXTURES, f), join(dir, f));
  }
  return dir;
}

/** Apply recorded writes to a copy of `base` (the expected view of a chain, computed without our reader). */
export function applyWrites(base: Uint8Array, writes: FixtureWrite[]): Uint8Array {
  const out = base.slice();
  for (const w of writes) out.fill(w.pattern ?? 0, w.offset, w.offset + w.length);
  return out;
}
