/**
 * The crash harness of the dirty-extent tests: a child process (node on the built dist/) writes random
 * writes (512 B – 1 MiB, hot spots) through the tracker into a raw primary, seals and "ships" its log
 * to a replica every few writes as replication does, and dies by SIGKILL — at a random moment, or by
 * its own hand right after the activity-log record (inside the log append) or right after the append
 * (before the data write; with a disk write beside the append — odd seeds — the data write may be under way
 * or done). The test then collects the scope and checks every differing sector is in it.
 */
import { copyFileSync } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runChild, type RunResult } from './crash-harness.js';

const dist = (p: string) => JSON.stringify(fileURLToPath(new URL(`../../dist/${p}`, import.meta.url)));

export type KillMode = 'timer' | 'in-append' | 'after-append';

/**
 * argv: primary replica seed mode extentSize alCapacity killAt
 * The child never ends by itself: it writes until killed (the timer, or its own SIGKILL at write killAt).
 */
export const TRACKED_WRITER = `
import { openTrackedDisk, openDisk } from ${dist('index.js')};
import { nodeLogFs } from ${dist('tracking/log-fs.js')};
import { withLogLock, sealCurrentLog, createCurrentLog, listSealedLogs } from ${dist('tracking/log-files.js')};
import { scanTrackingLog } from ${dist('tracking/log.js')};
import { unlink } from 'node:fs/promises';
const [primary, replica, seedText, mode, extentText, capText, killText] = process.argv.slice(2);
let a = Number(seedText) >>> 0;
const rand = () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
const killAt = Number(killText);
let appends = 0;
const fs = { async open(path) {
  const f = await nodeLogFs.open(path);
  return { ...f,
    async write(data, position) {
      // Position 0 is the header (adopting the log); records are appended past it.
      if (position > 0 && mode === 'in-append' && appends === killAt) process.kill(process.pid, 'SIGKILL');
      await f.write(data, position);
    },
    async writev(parts, position) {
      if (mode === 'in-append' && appends === killAt) {
        // Half of the records' bytes reach the log first: a torn append.
        await f.write(parts[0].subarray(0, Math.ceil(parts[0].byteLength / 2)), position);
        process.kill(process.pid, 'SIGKILL');
      }
      await f.writev(parts, position);
    },
    async sync() {
      await f.sync();
      if (mode === 'after-append' && appends === killAt) process.kill(process.pid, 'SIGKILL');
    },
  };
} };
// Odd seeds: a tracker with someone to decide on a failed log (as a running VM has), whose disk write
// runs beside the log's append; even seeds: the log's append first.
const beside = (Number(seedText) & 1) === 1;
const disk = await openTrackedDisk(primary, { fs, extentSize: Number(extentText), activityLogExtents: Number(capText), onLogError: beside ? () => undefined : undefined });
const size = disk.virtualSize;
const hot = [0, 1, 2].map(() => Math.floor(rand() * size));
let seq = 1;
process.stdout.write('ready\\n');
for (let i = 0; ; i++) {
  const len = Math.min(512 * 2 ** Math.floor(rand() * 12), size);
  const near = rand() < 0.8 ? hot[Math.floor(rand() * 3)] + (rand() - 0.5) * 4 * 1024 * 1024 : rand() * size;
  const offset = Math.max(0, Math.min(size - len, Math.floor(near / 512) * 512));
  const data = new Uint8Array(len);
  for (let k = 0; k < len; k += 4096) data.fill(1 + Math.floor(rand() * 250), k, Math.min(len, k + 4096));
  appends = i;
  await disk.write(offset, data);
  if (i % 6 === 5) {
    // A replication cycle: seal and open the next log, then ship the sealed ones to the replica.
    await withLogLock(primary, async () => {
      await sealCurrentLog(primary);
      await createCurrentLog(primary, { sequence: ++seq });
    });
    if (rand() < 0.7) {
      const r = await openDisk(replica);
      for (const s of await listSealedLogs(primary)) {
        await scanTrackingLog(s.path, (rec) => r.write(rec.offset, rec.data));
        await r.flush();
        await unlink(s.path);
      }
      await r.close();
    }
  }
}
`;

/** A raw primary with seeded content, its identical replica, and an open tracking log on the primary. */
export async function trackedPair(dir: string, size: number, seed: number): Promise<{ primary: string; replica: string }> {
  const primary = join(dir, 'primary.raw');
  const replica = join(dir, 'replica.raw');
  await writeFile(primary, new Uint8Array(0));
  const fh = await open(primary, 'r+');
  await fh.truncate(size);
  const chunk = new Uint8Array(64 * 1024);
  for (let off = 0; off < size; off += 1024 * 1024) {
    chunk.fill((seed + off / 1024 / 1024) % 251);
    await fh.write(chunk, 0, chunk.byteLength, off);
  }
  await fh.close();
  copyFileSync(primary, replica);
  const { createTrackingLog } = await import('../../host/tracking/log.js');
  const { trackingLogPathFor } = await import('../../host/tracking/log-files.js');
  await createTrackingLog(trackingLogPathFor(primary), { sequence: 1 });
  return { primary, replica };
}

/** `dir` keeps the child's script for the whole run (outlive the per-crash directories). */
export function crashWriter(
  dir: string,
  pair: { primary: string; replica: string },
  o: { seed: number; mode: KillMode; extentSize: number; alExtents: number; killAt: number; killAfterMs?: number },
): Promise<RunResult> {
  const timer = o.mode === 'timer' ? (o.killAfterMs ?? 50) : 30_000;
  return runChild(dir, TRACKED_WRITER, [pair.primary, pair.replica, String(o.seed), o.mode, String(o.extentSize), String(o.alExtents), String(o.killAt)], timer);
}

/** 512-byte sectors where the two files differ and that lie outside the (sorted) ranges. */
export async function sectorsOutside(a: string, b: string, ranges: readonly [number, number][]): Promise<{ differing: number; outside: number[] }> {
  const fa = await open(a, 'r');
  const fb = await open(b, 'r');
  try {
    const size = (await fa.stat()).size;
    const CH = 1 << 20;
    const ba = new Uint8Array(CH);
    const bb = new Uint8Array(CH);
    let differing = 0;
    const outside: number[] = [];
    let r = 0;
    for (let off = 0; off < size; off += CH) {
      const n = Math.min(CH, size - off);
      await fa.read(ba, 0, n, off);
      await fb.read(bb, 0, n, off);
      if (Buffer.compare(ba.subarray(0, n), bb.subarray(0, n)) === 0) continue;
      for (let s = 0; s < n; s += 512) {
        if (Buffer.compare(ba.subarray(s, s + 512), bb.subarray(s, s + 512)) === 0) continue;
        differing++;
        const at = off + s;
        while (r < ranges.length && ranges[r][1] <= at) r++;
        if (!(r < ranges.length && ranges[r][0] <= at && at + 512 <= ranges[r][1])) outside.push(at);
      }
    }
    return { differing, outside };
  } finally {
    await fa.close();
    await fb.close();
  }
}
