/**
 * Crash safety of VHDX writes: a child process (node on the built dist/disk/index.js) writes into a
 * VHDX — allocating payload and sector-bitmap blocks, committing BAT and bitmap pages through the log —
 * or merges a VHDX overlay, and is SIGKILLed at a random moment, many times. Every time the image must
 * open with us (read-only, reading through any log left behind), hold every acknowledged write and no
 * torn sector, be accepted by qemu (after `qemu-img check -r all` when the kill left a log to replay)
 * with the same bytes, and pass a plain `qemu-img check` once we have opened it writable.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VhdxDisk, createOverlay, createVhdx, createVhdxDifferencing, openDisk, type Disk } from '../host/disk/index.js';
import { MiB } from '../host/units.js';
import { expectSameBytes, readAll, same } from './support/bytes.js';
import { acknowledged, checkWrites, killMerges, payload, readImage, requireBuild, runChild, type RunResult, writeScript } from './support/crash-harness.js';
import { libvhdiRead, qemuRaw } from './support/oracles.js';
import { removeDir, tempDir } from './support/temp-dir.js';

let dir: string;
beforeAll(() => {
  requireBuild();
  dir = tempDir('vhdsync-vhdx-crash-').dir;
});
afterAll(() => removeDir(dir));

/** Where write `i` lands: its own region, some sub-sector, some spanning 1 MiB blocks. */
function region(i: number): { offset: number; length: number } {
  const base = i * 37 * 4096 + 512 * (i % 5);
  const length = i % 3 === 0 ? 700 : i % 3 === 1 ? 4096 : 2 * 4096 + 100;
  return { offset: base + (i % 7), length };
}

const WRITES = 100;
const WRITE_SCRIPT = writeScript(WRITES, region);

function qemuCheckStatus(path: string): { status: number | null; dirty: boolean } {
  const r = spawnSync('qemu-img', ['check', '-f', 'vhdx', path], { encoding: 'utf8' });
  return { status: r.status, dirty: r.stderr.includes('log that needs to be replayed') };
}

describe('killed while writing a VHDX', () => {
  it.each([
    ['a dynamic VHDX (qemu is the oracle)', 'dynamic', 10],
    ['a differencing VHDX over a VHDX base (libvhdi is the oracle)', 'differencing', 6],
  ])('%s always reopens with every acknowledged write and nothing torn', async (_what, kind, iterations) => {
    const size = 16 * MiB;
    const template = join(dir, `${kind}-template.vhdx`);
    let original: Uint8Array = new Uint8Array(size);
    const basePath = join(dir, `${kind}-base.vhdx`);
    if (kind === 'dynamic') {
      await createVhdx(template, { size, type: 'dynamic', blockSize: 1 * MiB });
    } else {
      await createVhdx(basePath, { size, type: 'dynamic', blockSize: 1 * MiB });
      const b = await openDisk(basePath);
      for (let k = 0; k < size; k += 2 * MiB) await b.write(k, new Uint8Array(MiB).fill(0xee));
      await b.close();
      original = await readImage(basePath);
      // libvhdi 20210425 reads a block of a chunk that has no sector bitmap block yet as the parent's
      // first sector followed by zeros; one write (past every test write) gives the chunk its bitmap.
      original.fill(0x5c, size - 4096);
    }
    const fresh = async (path: string) => {
      if (kind === 'dynamic') {
        copyFileSync(template, path);
        return;
      }
      await createVhdxDifferencing(path, basePath, { blockSize: 1 * MiB });
      const d = await openDisk(path);
      await d.write(size - 4096, new Uint8Array(4096).fill(0x5c));
      await d.close();
    };
    // Calibrate on the faster of two uninterrupted runs (the machine is shared; a slow calibration
    // would let most later runs finish before their kill).
    let calib: RunResult | undefined;
    for (let k = 0; k < 2; k++) {
      const calibPath = join(dir, `${kind}-calib-${k}.vhdx`);
      await fresh(calibPath);
      const run = await runChild(dir, WRITE_SCRIPT, [calibPath]);
      expect(run.lines.at(-1)).toBe('done');
      if (!calib || run.ms < calib.ms) calib = run;
    }

    let sawPartial = 0;
    let leftLogs = 0;
    for (let iter = 0; iter < iterations; iter++) {
      const path = join(dir, `${kind}-${iter}.vhdx`);
      await fresh(path);
      const run = await runChild(dir, WRITE_SCRIPT, [path], Math.floor(Math.random() * calib!.ms));
      const acked = acknowledged(run);
      if (run.killed && acked < WRITES) sawPartial++;
      const what = `iteration ${iter} (${acked} acknowledged)`;

      // What a reader meets right after the crash: read-only, through any log left behind.
      const ro = (await openDisk(path, { readOnly: true })) as VhdxDisk;
      if (ro.logState !== 'empty') leftLogs++;
      await ro.close();
      const view = await readImage(path);
      checkWrites(view, original, WRITES, region, acked, `${what}, read-only`);
      if (kind === 'dynamic') {
        const copy = `${path}.qemu.vhdx`;
        copyFileSync(path, copy);
        if (qemuCheckStatus(copy).dirty) execFileSync('qemu-img', ['check', '-q', '-r', 'all', '-f', 'vhdx', copy]);
        expect(qemuCheckStatus(copy).status, `${what}: qemu-img check`).toBe(0);
        expectSameBytes(qemuRaw(copy, 'vhdx'), view, `${what}: qemu's view`);
      }
      // Opened writable (a replay, if any, goes into the file), then every tool agrees.
      const after = await readImage(path, false);
      expectSameBytes(after, view, `${what}: after a writable open`);
      if (kind === 'dynamic') expect(qemuCheckStatus(path).status, `${what}: qemu-img check after our open`).toBe(0);
      else expectSameBytes(libvhdiRead([path, basePath], size), view, `${what}: libvhdi's view`);
    }
    expect(sawPartial).toBeGreaterThan(iterations / 4); // the kills really landed mid-run
    console.log(`${kind}: ${sawPartial} of ${iterations} kills landed mid-run, ${leftLogs} left a log to replay`);
  });
});

describe('killed while merging a VHDX overlay', () => {
  it('resumes and finishes with the chain\'s bytes every time (6 kills)', async () => {
    const size = 8 * MiB;
    const base = join(dir, 'merge-base.vhdx');
    await createVhdx(base, { size, type: 'dynamic', blockSize: 1 * MiB });
    let d: Disk = await openDisk(base);
    await d.write(0, payload(1000, size / 2));
    await d.close();
    const overlay = join(dir, 'merge-overlay.vhdx');
    await createOverlay(base, overlay, { blockSize: 1 * MiB });
    d = await openDisk(overlay);
    for (let i = 0; i < 40; i++) {
      const r = region(i);
      if (r.offset + r.length <= size) await d.write(r.offset, payload(i, r.length));
    }
    await d.close();
    const resumedMidway = await killMerges(dir, base, overlay, 6, (b, what) => expect(qemuCheckStatus(b).status, `${what}: qemu-img check of the merged base`).toBe(0));
    expect(resumedMidway).toBeGreaterThan(0);
  });
});

describe('a crash at every single file write of a write session', () => {
  /**
   * In-process and deterministic: DiskFile's writes and truncations stop (throw) after the k-th one, for
   * every k, which is what a SIGKILL leaves in the page cache. Covers every step of a log cycle: the
   * header with the new LogGuid, the log entry, the pages in place, the header clearing the log.
   */
  it.each([['dynamic'], ['differencing']])('%s: every prefix of the writes opens, reads old-or-new per sector, and qemu/libvhdi agree', async (kind) => {
    const size = 8 * MiB;
    const base = join(dir, `prefix-${kind}-base.vhdx`);
    const template = join(dir, `prefix-${kind}-template.vhdx`);
    await createVhdx(kind === 'dynamic' ? template : base, { size, type: 'dynamic', blockSize: 1 * MiB });
    const seed = await openDisk(kind === 'dynamic' ? template : base);
    await seed.write(0, payload(500, 2 * MiB));
    await seed.close();
    if (kind === 'differencing') {
      await createVhdxDifferencing(template, base, { blockSize: 1 * MiB });
      const d = await openDisk(template);
      await d.write(size - 4096, payload(501, 4096)); // the chunk's sector bitmap exists (see the libvhdi note above)
      await d.close();
    }
    const original = await readImage(template);
    const writes: Array<[number, Uint8Array]> = [
      [4096 + 100, payload(1, 700)], // into an allocated block (dynamic) / a new child block over parent data
      [3 * MiB + 512, payload(2, 8192)], // a new block
      [5 * MiB - 1000, payload(3, 2000)], // straddling two new blocks
    ];
    const session = async (path: string) => {
      const d = await openDisk(path);
      try {
        for (const [off, data] of writes) await d.write(off, data);
        await d.flush();
      } finally {
        await d.close().catch(() => undefined);
      }
    };
    const { DiskFile } = await import('../host/disk/file-io.js');
    const proto = DiskFile.prototype as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
    const realWrite = proto.writeAt;
    const realTruncate = proto.truncate;
    let budget = Infinity;
    let used = 0;
    const crash = new Error('simulated crash');
    proto.writeAt = function (this: unknown, ...a: unknown[]) {
      if (used++ >= budget) return Promise.reject(crash);
      return realWrite.apply(this, a);
    };
    proto.truncate = function (this: unknown, ...a: unknown[]) {
      if (used++ >= budget) return Promise.reject(crash);
      return realTruncate.apply(this, a);
    };
    let steps = 0;
    let logsLeft = 0;
    try {
      const full = join(dir, `prefix-${kind}-full.vhdx`);
      copyFileSync(template, full);
      used = 0;
      await session(full);
      steps = used;
      expect(steps).toBeGreaterThan(8);
      for (let k = 0; k <= steps; k++) {
        const path = join(dir, `prefix-${kind}-${k}.vhdx`);
        copyFileSync(template, path);
        used = 0;
        budget = k;
        await session(path).catch((e) => {
          if (e !== crash) throw e;
        });
        budget = Infinity;
        const ro = (await openDisk(path, { readOnly: true })) as VhdxDisk;
        if (ro.logState !== 'empty') logsLeft++;
        const view = await readAll(ro);
        await ro.close();
        for (const [off, data] of writes) {
          for (let s = off - (off % 512); s < off + data.length; s += 512) {
            const g = view.subarray(s, s + 512);
            const fresh = original.slice(s, s + 512);
            const from = Math.max(s, off);
            const to = Math.min(s + 512, off + data.length);
            fresh.set(data.subarray(from - off, to - off), from - s);
            expect(same(g, fresh) || same(g, original.subarray(s, s + 512)), `crash after ${k} of ${steps} writes: sector ${s / 512}`).toBe(true);
          }
        }
        if (k === steps) {
          const model = original.slice();
          for (const [off, data] of writes) model.set(data, off);
          expectSameBytes(view, model, 'the uninterrupted session');
        }
        if (kind === 'dynamic') {
          const copy = `${path}.qemu.vhdx`;
          copyFileSync(path, copy);
          if (qemuCheckStatus(copy).dirty) execFileSync('qemu-img', ['check', '-q', '-r', 'all', '-f', 'vhdx', copy]);
          expect(qemuCheckStatus(copy).status, `crash after ${k}: qemu-img check`).toBe(0);
          expectSameBytes(qemuRaw(copy, 'vhdx'), view, `crash after ${k}: qemu's view`);
        }
        expectSameBytes(await readImage(path, false), view, `crash after ${k}: after a writable open`);
        if (kind === 'dynamic') expect(qemuCheckStatus(path).status).toBe(0);
        else expectSameBytes(libvhdiRead([path, base], size), view, `crash after ${k}: libvhdi's view`);
      }
    } finally {
      proto.writeAt = realWrite;
      proto.truncate = realTruncate;
    }
    expect(logsLeft).toBeGreaterThan(0); // some prefixes end inside a log cycle, with a log to replay
    console.log(`${kind}: ${steps + 1} crash points, ${logsLeft} left a log to replay`);
  });
});
