/**
 * `vhdsync resize` SIGKILLed at random moments (test/support/crash-harness.ts): every crash leaves an image that
 * opens at the old size or the new one — in our reader and in qemu — with the old content intact and
 * any grown part reading as zeros; `qemu-img check` (VHDX, after the replay every VHDX reader does) is
 * clean; and the same resize run again finishes the job.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resizeImage } from '../host/disk/index.js';
import { MiB } from '../host/units.js';
import { same } from './support/bytes.js';
import { cliOk } from './support/cli.js';
import { DIST, readImage, requireBuild, runChild } from './support/crash-harness.js';
import { qemuFormat, qemuRaw } from './support/oracles.js';
import { removeDir, tempDir } from './support/temp-dir.js';

const KILLS_PER_FORMAT = Number(process.env.VHDSYNC_RESIZE_KILLS ?? 4);

/** The child resizes, pausing a little between durable steps so that kills land between them too. */
const RESIZE_SCRIPT = `
import { resizeImage } from ${JSON.stringify(DIST)};
const [path, size] = process.argv.slice(2);
process.stdout.write('ready\\n');
await resizeImage(path, { to: Number(size) }, { onStep: (s) => new Promise((r) => { process.stdout.write('step ' + s + '\\n'); setTimeout(r, 2); }) });
process.stdout.write('done\\n');
`;

let dir: string;
beforeAll(() => {
  requireBuild();
  dir = tempDir('vhdsync-resize-crash-').dir;
});
afterAll(() => removeDir(dir));

/** Run the resize child and SIGKILL it when it reports its `n`-th step (it then sleeps between two durable steps). */
function killAtStep(work: string, p: string, size: number, n: number): Promise<{ lines: string[]; killed: boolean }> {
  return new Promise((resolve, reject) => {
    const script = join(work, 'resize.mjs');
    writeFileSync(script, RESIZE_SCRIPT);
    const child = spawn(process.execPath, [script, p, String(size)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.split('\n').filter((l) => l.startsWith('step ')).length >= n) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL' && code !== 0) reject(new Error(`child failed (${code}): ${err}`));
      else resolve({ lines: out.split('\n').filter(Boolean), killed: signal === 'SIGKILL' });
    });
  });
}

function run(cmd: string, ...args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** Old content, then zeros up to `size` (old or new). */
function expectOldThenZeros(view: Uint8Array, original: Uint8Array, sizes: number[], what: string): void {
  expect(sizes, `${what}: size ${view.length}`).toContain(view.length);
  expect(same(view.subarray(0, original.length), original), `${what}: old content`).toBe(true);
  expect(view.subarray(original.length).every((b) => b === 0), `${what}: grown part is zeros`).toBe(true);
}

const FORMATS: Array<{ what: string; file: string; make: (p: string) => void; to: number }> = [
  {
    // 512 KiB blocks: the one-sector BAT (128 entries) covers 64 MiB, so growing to 80 MiB moves block 0.
    what: 'dynamic VHD (the BAT grows, a block moves)', file: 'd.vhd', to: 80 * MiB,
    make: (p) => cliOk(['create', p, '--size', '16M', '--block-size', '512K'], { home: join(dir, 'home') }),
  },
  {
    what: 'dynamic VHD with a partial last block', file: 'p.vhd', to: 40 * MiB,
    make: (p) => run('qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic', p, '9M'),
  },
  { what: 'qemu fixed VHD', file: 'f.vhd', to: 24 * MiB, make: (p) => run('qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', p, '9M') },
  { what: 'qemu dynamic VHDX', file: 'd.vhdx', to: 48 * MiB, make: (p) => run('qemu-img', 'create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', p, '9M') },
  {
    what: 'fixed VHDX', file: 'f.vhdx', to: 64 * MiB,
    make: (p) => run('qemu-img', 'create', '-q', '-f', 'vhdx', '-o', 'subformat=fixed,block_state_zero=off,block_size=1M', p, '9M'),
  },
];

describe('vhdsync resize killed at random moments', () => {
  for (const f of FORMATS) {
    it(`${f.what}: ${KILLS_PER_FORMAT} kills, each image opens at the old or new size with its data, and a rerun finishes`, async () => {
      const seed = join(dir, f.file);
      f.make(seed);
      const q = qemuFormat(seed);
      run('qemu-io', '-f', q, '-c', 'write -P 0xab 0 1M', '-c', 'write -P 0xcd 5M 1M', '-c', 'write -P 0x3e 8M 512k', seed);
      const original = await readImage(seed);
      const sizes = [original.length, f.to];
      // How long an uninterrupted resize takes here (kills are spread over it).
      const calib = join(dir, `calib-${f.file}`);
      copyFileSync(seed, calib);
      const full = await runChild(dir, RESIZE_SCRIPT, [calib, String(f.to)]);
      expect(full.lines).toContain('done');
      const steps = full.lines.filter((l) => l.startsWith('step ')).length;
      expect(steps).toBeGreaterThanOrEqual(2);

      let midway = 0;
      for (let k = 0; k < KILLS_PER_FORMAT; k++) {
        const work = tempDir('vhdsync-resize-kill-').dir;
        try {
          const p = join(work, f.file);
          copyFileSync(seed, p);
          // Half the kills land right after a step chosen at random (between two durable writes), half at a random time.
          const r = k % 2 === 0
            ? await killAtStep(work, p, f.to, 1 + Math.floor(Math.random() * steps))
            : await runChild(dir, RESIZE_SCRIPT, [p, String(f.to)], Math.floor(Math.random() * full.ms * 1.1));
          const what = `${f.what}, kill ${k} after ${r.lines.filter((l) => l.startsWith('step ')).length} steps`;
          if (r.killed && r.lines.some((l) => l.startsWith('step ')) && !r.lines.includes('done')) midway++;
          const ours = await readImage(p);
          expectOldThenZeros(ours, original, sizes, `${what} (our reader)`);
          if (q === 'vhdx') {
            // A crash may leave a log to replay: qemu replays it with -r all (Hyper-V does on open), then checks clean.
            const c = spawnSync('qemu-img', ['check', '-f', 'vhdx', p], { encoding: 'utf8' });
            if (c.status !== 0) run('qemu-img', 'check', '-r', 'all', '-f', 'vhdx', p);
            expect(run('qemu-img', 'check', '-f', 'vhdx', p), what).toMatch(/No errors were found/);
          }
          const seen = qemuRaw(p, qemuFormat(p));
          expect(same(seen, ours) || seen.length === ours.length, `${what}: qemu's size`).toBe(true);
          expectOldThenZeros(seen, original, sizes, `${what} (qemu)`);
          // The same resize again finishes it.
          const again = await resizeImage(p, { to: f.to });
          expect(again.newSize).toBe(f.to);
          expectOldThenZeros(await readImage(p), original, [f.to], `${what}, rerun`);
          if (q === 'vhdx') expect(run('qemu-img', 'check', '-f', 'vhdx', p)).toMatch(/No errors were found/);
          expectOldThenZeros(qemuRaw(p, qemuFormat(p)), original, [f.to], `${what}, rerun (qemu)`);
        } finally {
          removeDir(work);
        }
      }
      // How many kills landed between two steps of the resize (the rest before its first step or after it was done).
      process.stdout.write(`resize crash ${f.what}: ${KILLS_PER_FORMAT} kills, ${midway} between two steps of ${steps}\n`);
      expect(midway).toBeGreaterThanOrEqual(Math.floor(KILLS_PER_FORMAT / 2));
    });
  }
});
