/**
 * Realistic guest write mixes for demos, tests and benchmarks (seeded, so every run is the same):
 * - fileserver: whole files written sequentially (64 KiB – 4 MiB), a mix of text-like documents
 *   (compressible) and media/archives (incompressible), placed with locality;
 * - sql: 8 KiB pages of rows, scattered over a data file with a hot spot, plus sequential log appends;
 * - random: 4 KiB writes anywhere;
 * - hot: writes of 512 B to 1 MiB (sector-aligned) into four hot spots of 1/256 of the disk each (at
 *   most 16 MiB), placed by the seed — what a crash's activity log and dirty map are made for.
 */
export type WorkloadPattern = 'fileserver' | 'sql' | 'random' | 'hot';

export interface PlannedWrite {
  offset: number;
  data: Uint8Array;
}

/** mulberry32: small, fast, good enough for workload shapes. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  'the replica disk block sector primary resync cluster volume share quarterly report invoice customer order ' +
  'server backup project meeting notes budget forecast update status draft final review contract payment'
).split(' ');

export function fillText(buf: Uint8Array, rand: () => number): void {
  let i = 0;
  while (i < buf.length) {
    const w = WORDS[Math.floor(rand() * WORDS.length)];
    for (let k = 0; k < w.length && i < buf.length; k++) buf[i++] = w.charCodeAt(k);
    if (i < buf.length) buf[i++] = rand() < 0.08 ? 10 : 32;
  }
}

export function fillRandom(buf: Uint8Array, rand: () => number): void {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let i = 0;
  for (; i + 4 <= buf.length; i += 4) v.setUint32(i, (rand() * 4294967296) >>> 0, true);
  for (; i < buf.length; i++) buf[i] = (rand() * 256) | 0;
}

/** A database page: header, rows of mixed numbers and short strings, free space as zeros. */
export function fillSqlPage(buf: Uint8Array, rand: () => number, pageNo: number): void {
  buf.fill(0);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  v.setUint32(0, pageNo, true);
  v.setUint32(4, (rand() * 4294967296) >>> 0, true); // LSN
  const used = 96 + Math.floor(rand() * (buf.length - 200));
  let i = 96;
  while (i + 48 < used) {
    v.setUint32(i, Math.floor(rand() * 1e6), true);
    v.setFloat64(i + 4, Math.round(rand() * 1e6) / 100, true);
    const w = WORDS[Math.floor(rand() * WORDS.length)];
    for (let k = 0; k < w.length; k++) buf[i + 12 + k] = w.charCodeAt(k);
    i += 48;
  }
}

export interface PlanOptions {
  diskSize: number;
  /** Total bytes to write. */
  bytes: number;
  seed: number;
  /** Confine writes to [start, end) of the disk (default: the whole disk). */
  start?: number;
  end?: number;
}

/** The writes of a workload, in order. Offsets are 4 KiB aligned and inside the range. */
export function* planWrites(pattern: WorkloadPattern, o: PlanOptions): Generator<PlannedWrite> {
  const rand = rng(o.seed);
  const start = o.start ?? 0;
  const end = Math.min(o.end ?? o.diskSize, o.diskSize);
  const span = end - start;
  const align = (n: number) => Math.floor(n / 4096) * 4096;
  let written = 0;
  if (pattern === 'fileserver') {
    let cursor = start + align(rand() * span * 0.5);
    while (written < o.bytes) {
      const size = Math.min(align(65536 * 2 ** Math.floor(rand() * 7)), o.bytes - written + 4095, span);
      const len = Math.max(4096, align(size));
      if (cursor + len > end) cursor = start + align(rand() * Math.max(1, span - len));
      const data = new Uint8Array(len);
      if (rand() < 0.6) fillText(data, rand);
      else fillRandom(data, rand);
      yield { offset: cursor, data };
      written += len;
      // Files land near each other, with occasional jumps to another folder.
      cursor += len + (rand() < 0.8 ? align(rand() * 262144) : align(rand() * span * 0.25));
    }
  } else if (pattern === 'sql') {
    const pages = Math.max(1, Math.floor((span * 0.9) / 8192));
    const logStart = start + align(span * 0.9);
    let logCursor = logStart;
    let n = 0;
    while (written < o.bytes) {
      if (n++ % 8 === 7 && logCursor + 65536 <= end) {
        const data = new Uint8Array(65536);
        fillText(data, rand);
        yield { offset: logCursor, data };
        logCursor = logCursor + 65536 + 65536 > end ? logStart : logCursor + 65536;
        written += 65536;
        continue;
      }
      // 80 % of page writes hit the hottest 10 % of the data file.
      const page = rand() < 0.8 ? Math.floor(rand() * Math.max(1, pages / 10)) : Math.floor(rand() * pages);
      const data = new Uint8Array(8192);
      fillSqlPage(data, rand, page);
      yield { offset: start + page * 8192, data };
      written += 8192;
    }
  } else if (pattern === 'hot') {
    const spot = Math.max(64 * 1024, Math.min(16 * 1024 * 1024, Math.floor(span / 256 / 512) * 512));
    const spots = [0, 1, 2, 3].map(() => start + Math.floor((rand() * Math.max(0, span - spot)) / 512) * 512);
    while (written < o.bytes) {
      const len = Math.min(512 * 2 ** Math.floor(rand() * 12), spot);
      const at = spots[Math.floor(rand() * spots.length)] + Math.floor((rand() * (spot - len)) / 512) * 512;
      const data = new Uint8Array(len);
      fillRandom(data, rand);
      yield { offset: at, data };
      written += len;
    }
  } else {
    while (written < o.bytes) {
      const data = new Uint8Array(4096);
      fillRandom(data, rand);
      yield { offset: start + align(rand() * (span - 4096)), data };
      written += 4096;
    }
  }
}
