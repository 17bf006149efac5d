/**
 * The crash harness shared by the VHD and VHDX crash tests: a child process (node on the built
 * dist/disk/index.js) writes into an image or merges an overlay, and is SIGKILLed at a random moment;
 * the test then checks what a reader finds.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { mergeJournalPath, mergeOverlay, openDisk } from '../../host/disk/index.js';
import { expectSameBytes, readAll, same } from './bytes.js';
import { tempDir } from './temp-dir.js';

export const DIST = fileURLToPath(new URL('../../dist/disk/index.js', import.meta.url));

export function requireBuild(): void {
  if (!existsSync(DIST)) throw new Error(`${DIST} is missing: run 'npm run build' first (npm test does)`);
}

/** Deterministic bytes for write `i` (never all zero, so "old" and "new" are always distinguishable). */
export function payload(i: number, len: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let k = 0; k < len; k++) b[k] = ((i * 31 + k * 7) % 251) + 1;
  return b;
}

/** Where write `i` lands; self-contained, as it is also sent to the child as source. */
export type Region = (i: number) => { offset: number; length: number };

/** A child that makes `writes` writes at `region(i)`, flushing every other one and saying so. */
export function writeScript(writes: number, region: Region): string {
  return `
import { openDisk } from ${JSON.stringify(DIST)};
const [path] = process.argv.slice(2);
${payload.toString()}
const region = ${region.toString()};
const disk = await openDisk(path);
process.stdout.write('ready\\n');
for (let i = 0; i < ${writes}; i++) {
  const r = region(i);
  await disk.write(r.offset, payload(i, r.length));
  // Flush every other write, so kills land both inside an allocation and inside a flush.
  if (i % 2 === 1) {
    await disk.flush();
    process.stdout.write('durable ' + (i + 1) + '\\n');
  }
}
await disk.close();
process.stdout.write('done\\n');
`;
}

export const MERGE_SCRIPT = `
import { mergeOverlay } from ${JSON.stringify(DIST)};
const [path] = process.argv.slice(2);
process.stdout.write('ready\\n');
await mergeOverlay(path, { checkpointBytes: 1 });
process.stdout.write('done\\n');
`;

export interface RunResult {
  lines: string[];
  killed: boolean;
  ms: number;
}

const scripts = new Map<string, string>();

/** Run a script (written once into `dir`); SIGKILL it `killAfterMs` after it says "ready" (never, when undefined). */
export function runChild(dir: string, script: string, args: string[], killAfterMs?: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    if (!scripts.has(script)) {
      const file = join(dir, `script-${scripts.size}.mjs`);
      writeFileSync(file, script);
      scripts.set(script, file);
    }
    const child = spawn(process.execPath, [scripts.get(script)!, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let start = 0;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!start && out.includes('ready\n')) {
        start = Date.now();
        if (killAfterMs !== undefined) setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL' && code !== 0) reject(new Error(`child failed (${code}): ${err}`));
      else resolve({ lines: out.split('\n').filter(Boolean), killed: signal === 'SIGKILL', ms: Date.now() - start });
    });
  });
}

/** How many writes the child said were flushed before it died. */
export function acknowledged(run: RunResult): number {
  return Math.max(0, ...run.lines.filter((l) => l.startsWith('durable ')).map((l) => Number(l.slice(8))));
}

/** Every acknowledged write is there, the two in flight are old or new per sector, later ones absent. */
export function checkWrites(view: Uint8Array, original: Uint8Array, writes: number, region: Region, acked: number, what: string): void {
  for (let i = 0; i < writes; i++) {
    const r = region(i);
    const got = view.subarray(r.offset, r.offset + r.length);
    const fresh = payload(i, r.length);
    const old = original.subarray(r.offset, r.offset + r.length);
    if (i < acked) {
      expect(same(got, fresh), `${what}: acknowledged write ${i} lost`).toBe(true);
    } else if (i < acked + 2) {
      for (let s = 0; s < r.length; s += 512) {
        const o = Math.min(512 - ((r.offset + s) % 512), r.length - s);
        const g = got.subarray(s, s + o);
        expect(same(g, fresh.subarray(s, s + o)) || same(g, old.subarray(s, s + o)), `${what}: torn write ${i}`).toBe(true);
      }
    } else {
      expect(same(got, old), `${what}: write ${i} appeared before it was issued`).toBe(true);
    }
  }
}

export async function readImage(path: string, readOnly = true): Promise<Uint8Array> {
  const d = await openDisk(path, { readOnly });
  try {
    return await readAll(d);
  } finally {
    await d.close();
  }
}

/**
 * Merge `overlay` into `base` in a child, killed at a random moment, `iterations` times (each on fresh
 * copies). Right after each crash every sector of the base is old or merged; a resumed merge then
 * finishes with the chain's bytes. `check` adds a format's own checks of the merged base. Returns how
 * many kills landed inside the merge (a journal left behind).
 */
export async function killMerges(dir: string, base: string, overlay: string, iterations: number, check?: (mergedBase: string, what: string) => void): Promise<number> {
  const expected = await readImage(overlay);
  const originalBase = await readImage(base);
  const names = [base.split('/').pop()!, `ov.${overlay.split('.').pop()}`];
  const copies = (work: string) => {
    const [b, o] = names.map((n) => join(work, n));
    copyFileSync(base, b);
    copyFileSync(overlay, o);
    return [b, o];
  };
  // Calibrated on the fastest of three uninterrupted merges (the machine is shared: one slow run would
  // put the kills after the merge ended); a few more kills while none has landed mid-merge yet.
  let calibMs = Infinity;
  for (let k = 0; k < 3; k++) {
    const calibDir = tempDir('vhdsync-crash-merge-');
    calibMs = Math.min(calibMs, (await runChild(dir, MERGE_SCRIPT, [copies(calibDir.dir)[1]])).ms);
    calibDir.cleanup();
  }

  let resumedMidway = 0;
  for (let iter = 0; iter < iterations || (resumedMidway === 0 && iter < iterations * 3); iter++) {
    const { dir: work, cleanup } = tempDir('vhdsync-crash-merge-');
    try {
      const [b, o] = copies(work);
      await runChild(dir, MERGE_SCRIPT, [o], Math.floor(Math.random() * calibMs * 1.1));
      const mid = await readImage(b);
      for (let s = 0; s < expected.length; s += 512) {
        const g = mid.subarray(s, s + 512);
        expect(same(g, expected.subarray(s, s + 512)) || same(g, originalBase.subarray(s, s + 512)), `iteration ${iter}: sector ${s / 512}`).toBe(true);
      }
      if (existsSync(mergeJournalPath(o))) resumedMidway++;
      if (existsSync(o) || existsSync(mergeJournalPath(o))) await mergeOverlay(o);
      expect(existsSync(o)).toBe(false);
      expect(existsSync(mergeJournalPath(o))).toBe(false);
      expectSameBytes(await readImage(b), expected, `iteration ${iter}: merged base`);
      check?.(b, `iteration ${iter}`);
    } finally {
      cleanup();
    }
  }
  return resumedMidway;
}
