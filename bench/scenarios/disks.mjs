// The two replicated VMs of the seed, one dynamic VHD each, filled with seeded, realistic content, and
// the untracked churn that breaks replication. Everything is written through the library's own disk
// layer (createVhd + openDisk), so the images are real dynamic VHDs that qemu-img also reads.
//
// Full-size layout (areas are multiplied by the scale, single files are not; ~40 GB of data each, ~80 GB in all):
//   fs1  (file server), 56 GB virtual:
//        [0, 12 %)    system: executables, DLLs, manifests (binary, ~2:1 compressible), 15 % of it unallocated
//        [15 %, 95 %) shares: files — documents/logs (text, compressible) and media/archives
//                     (incompressible), with small gaps; 20 % of it unallocated
//        the rest     never written (absent blocks: the disk is partly sparse)
//   sql1 (SQL server), 50 GB virtual:
//        [0, 16 %)    system, as above
//        [20 %, 80 %) data file (.mdf): 8 KiB pages of rows; 15 % of its extents are free (zeros, allocated)
//        [82 %, 88 %) log file (.ldf): log records
//        the rest     absent
import { createCipheriv, createHash } from 'node:crypto';
import { createVhd, openDisk } from '../../dist/index.js';
import { fillSqlPage, fillText, planWrites, rng } from '../../dist/tracking/workload.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const VHD_BLOCK = 2 * MiB;
const CHUNK = 4 * MiB;

export const VMS = [
  {
    name: 'fs1',
    role: 'file server',
    virtual: 56e9,
    seed: 101,
    system: [0, 0.12],
    files: [0.15, 0.95],
    churn: { pattern: 'fileserver', range: [0.15, 0.95] },
  },
  {
    name: 'sql1',
    role: 'SQL server',
    virtual: 50e9,
    seed: 202,
    system: [0, 0.16],
    sqlData: [0.2, 0.8],
    sqlLog: [0.82, 0.88],
    churn: { pattern: 'sql', range: [0.2, 0.88] },
  },
];

const align4k = (n) => Math.floor(n / 4096) * 4096;

/** The virtual size of a VM's disk at a scale: a whole number of VHD blocks, at least 32 MiB. */
export function virtualSizeAt(vm, scale) {
  return Math.max(32 * MiB, Math.ceil((vm.virtual * scale) / VHD_BLOCK) * VHD_BLOCK);
}

/** Seeded incompressible bytes at ~GB/s (AES-128-CTR keystream). */
function fillMedia(buf, seed, offset) {
  const key = createHash('sha256').update(`media:${seed}`).digest().subarray(0, 16);
  const iv = Buffer.alloc(16);
  iv.writeDoubleBE(offset, 8);
  const c = createCipheriv('aes-128-ctr', key, iv);
  const out = c.update(Buffer.alloc(buf.length));
  buf.set(out.subarray(0, buf.length));
}

/** Executable-like content, 4 KiB at a time: code/resources (random), strings (text), tables (mostly zeros). */
function fillBinary(buf, rand, seed, offset) {
  for (let i = 0; i < buf.length; i += 4096) {
    const b = buf.subarray(i, Math.min(i + 4096, buf.length));
    const k = rand();
    if (k < 0.4) fillMedia(b, seed, offset + i);
    else if (k < 0.65) fillText(b, rand);
    else {
      b.fill(0);
      const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
      for (let j = 0; j + 4 <= b.length; j += 16) v.setUint32(j, Math.floor(rand() * 65536), true);
    }
  }
}

/** SQL log records: a small binary header (LSN, transaction id) and a text-like body. */
function fillLog(buf, rand) {
  fillText(buf, rand);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let j = 0; j + 16 <= buf.length; j += 512) {
    v.setUint32(j, (rand() * 4294967296) >>> 0, true);
    v.setUint32(j + 4, (rand() * 4294967296) >>> 0, true);
    v.setUint32(j + 8, Math.floor(rand() * 1e6), true);
  }
}

const logUniform = (rand, lo, hi) => Math.exp(Math.log(lo) + rand() * (Math.log(hi) - Math.log(lo)));

/**
 * The extents of a VM's disk at a scale: [{ offset, length, kind }], sorted, 4 KiB aligned. Sizes of
 * single files do not scale (a file is a file), but are capped so a small disk still holds many.
 */
export function layout(vm, scale) {
  const size = virtualSizeAt(vm, scale);
  const rand = rng(vm.seed);
  const extents = [];
  const at = (f) => align4k(size * f);
  // A range is cut into 40 stretches ("folders"); a share of them is left unwritten (absent blocks), so
  // how sparse a disk is does not depend on the scale. Inside a stretch, extents follow each other
  // with small gaps.
  const place = (range, holes, pick) => {
    const start = at(range[0]);
    const end = at(range[1]);
    const stretch = align4k((end - start) / 40);
    for (let s = start; s < end; s += stretch) {
      const stop = Math.min(end, s + stretch);
      if (rand() < holes) continue;
      let cursor = s;
      while (cursor < stop) {
        const { kind, length, gap } = pick(stretch);
        const len = Math.max(4096, Math.min(align4k(length), stop - cursor));
        extents.push({ offset: cursor, length: len, kind });
        cursor += len + align4k(gap);
      }
    }
  };
  // System areas: files of 64 KiB – 8 MiB; 15 % of the stretches unallocated.
  place(vm.system, 0.15, (stretch) => ({
    kind: 'binary',
    length: logUniform(rand, 64 * KiB, Math.max(128 * KiB, Math.min(8 * MiB, stretch / 2))),
    gap: rand() * 128 * KiB,
  }));
  if (vm.files) {
    // Shares: documents 16 KiB – 4 MiB, media/archives 256 KiB – 64 MiB; ~70 % allocated.
    // Many small documents, fewer large media files; the odds are set so that ~30 % of the bytes are
    // text at any scale (a small disk caps the largest files lower).
    const stretch = (at(vm.files[1]) - at(vm.files[0])) / 40;
    const mediaCap = Math.max(512 * KiB, Math.min(64 * MiB, stretch / 2));
    const textCap = Math.min(4 * MiB, mediaCap);
    const mean = (lo, hi) => (hi - lo) / Math.log(hi / lo);
    const pText = (0.3 * mean(256 * KiB, mediaCap)) / (0.3 * mean(256 * KiB, mediaCap) + 0.7 * mean(16 * KiB, textCap));
    place(vm.files, 0.2, () => {
      const text = rand() < pText;
      return {
        kind: text ? 'text' : 'media',
        length: text ? logUniform(rand, 16 * KiB, textCap) : logUniform(rand, 256 * KiB, mediaCap),
        gap: rand() * 64 * KiB,
      };
    });
  }
  if (vm.sqlData) {
    // A preallocated data file, in extents of 1 MiB (128 pages); 15 % of extents are free space.
    place(vm.sqlData, 0, () => ({ kind: rand() < 0.15 ? 'zero' : 'sql', length: MiB, gap: 0 }));
    place(vm.sqlLog, 0, () => ({ kind: 'log', length: 8 * MiB, gap: 0 }));
  }
  return { size, extents };
}

/** Fill `buf` with the content of an extent piece that starts `offset` bytes into the disk. */
function fillExtent(buf, kind, rand, seed, offset) {
  switch (kind) {
    case 'media':
      return fillMedia(buf, seed, offset);
    case 'text':
      return fillText(buf, rand);
    case 'binary':
      return fillBinary(buf, rand, seed, offset);
    case 'sql':
      for (let i = 0; i < buf.length; i += 8192) fillSqlPage(buf.subarray(i, i + 8192), rand, (offset + i) / 8192);
      return;
    case 'log':
      return fillLog(buf, rand);
    case 'zero':
      return buf.fill(0);
  }
}

/**
 * Create a VM's primary disk at `path` (a dynamic VHD, 2 MiB blocks). Returns what was made:
 * virtual size, bytes written per kind, and allocated bytes (VHD blocks × 2 MiB).
 */
export async function generateDisk(vm, scale, path) {
  const { size, extents } = layout(vm, scale);
  await createVhd(path, { size, type: 'dynamic', overwrite: true });
  const disk = await openDisk(path);
  const rand = rng(vm.seed ^ 0x5eed);
  const buf = new Uint8Array(CHUNK);
  const byKind = {};
  try {
    for (const e of extents) {
      for (let off = 0; off < e.length; off += CHUNK) {
        const len = Math.min(CHUNK, e.length - off);
        const piece = buf.subarray(0, len);
        fillExtent(piece, e.kind, rand, vm.seed, e.offset + off);
        await disk.write(e.offset + off, piece);
      }
      byKind[e.kind] = (byKind[e.kind] ?? 0) + e.length;
    }
    let allocated = 0;
    for (let b = 0; b < disk.blockCount; b++) if (disk.blockStatus(b) === 'present') allocated += disk.blockSize;
    return { vm: vm.name, role: vm.role, virtualSize: size, dataBytes: extents.reduce((n, e) => n + e.length, 0), byKind, allocatedBytes: allocated };
  } finally {
    await disk.close();
  }
}

/** One byte per 4 KiB of the disk: which 4 KiB blocks a sequence of writes has touched. */
export class DirtyMap {
  constructor(size) {
    this.map = new Uint8Array(Math.ceil(size / 4096));
    this.distinct = 0;
  }
  add(offset, length) {
    for (let i = Math.floor(offset / 4096); i < Math.ceil((offset + length) / 4096); i++) {
      if (this.map[i] === 0) {
        this.map[i] = 1;
        this.distinct += 4096;
      }
    }
  }
}

/** The guest workload of a VM: an endless, seeded stream of writes (host/tracking/workload.ts). */
export function workload(vm, size, seed) {
  const [a, b] = vm.churn.range;
  return planWrites(vm.churn.pattern, { diskSize: size, bytes: Infinity, seed, start: align4k(size * a), end: align4k(size * b) });
}

/**
 * Untracked churn: the VM keeps writing while replication is broken, until the writes have touched
 * `distinctBytes` of the disk (distinct 4 KiB blocks, so overwrites of a hot page count once).
 * Returns bytes written and distinct bytes touched.
 */
export async function churn(vm, path, distinctBytes, seed) {
  const disk = await openDisk(path);
  const dirty = new DirtyMap(disk.virtualSize);
  let written = 0;
  let writes = 0;
  try {
    for (const w of workload(vm, disk.virtualSize, seed)) {
      if (dirty.distinct >= distinctBytes) break;
      // The last write is cut to what is left, so small targets are not overshot by one large file.
      const data = w.data.subarray(0, Math.min(w.data.byteLength, Math.max(4096, align4k(distinctBytes - dirty.distinct + 4095))));
      await disk.write(w.offset, data);
      dirty.add(w.offset, data.byteLength);
      written += data.byteLength;
      writes++;
    }
  } finally {
    await disk.close();
  }
  return { writtenBytes: written, distinctBytes: dirty.distinct, writes };
}
