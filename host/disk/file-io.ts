/**
 * Positioned, complete reads and writes on one open file. Reads land directly in the caller's buffer
 * (which may be a view over WASM memory); short reads past the end become a TRUNCATED error.
 */
import { constants, readSync, writeSync, writevSync, type Stats } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { VhdsyncError, ioError } from '../errors.js';

/** fs.read/write take at most 2^31-1 bytes per call; stay well under. */
const MAX_IO = 1 << 30;

/**
 * What the disk backends need from an open image file. DiskFile is the Node implementation; the web
 * app reads a browser File through the same surface (host/web/blob-file.ts), so the backends carry no
 * node: import of their own.
 */
export interface ImageFile {
  readonly path: string;
  readonly readOnly: boolean;
  size(): Promise<number>;
  /** Read up to `into.length` bytes at `position`; returns how many were read (fewer only at end of file). */
  readUpTo(into: Uint8Array, position: number): Promise<number>;
  /** Fill `into` from `position`; running into the end of the file is a TRUNCATED error. */
  readAt(into: Uint8Array, position: number, what?: string): Promise<void>;
  writeAt(data: Uint8Array, position: number): Promise<void>;
  /** Write the parts one after another from `position`, in as few system calls as the file allows (optional). */
  writevAt?(parts: readonly Uint8Array[], position: number): Promise<void>;
  truncate(length: number): Promise<void>;
  datasync(): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Synchronous positioned I/O for this thread. A thread whose only job is disk work (the replica
 * endpoint's worker, the CLI scanning disks for a resync, compare or checksum) is faster with
 * readSync/writeSync: no thread-pool round trip per call, which dominates when a resync writes
 * thousands of scattered 4 KiB leaves, and a page-cache read plus an in-place hash beats overlapping
 * the two on two cores. Library users that share the thread with other work keep the default,
 * asynchronous I/O.
 */
let syncIo = false;
export function useSyncIo(on: boolean): void {
  syncIo = on;
}

/** Whether this thread reads synchronously: a read is then done when its call returns, so reading ahead gains nothing. */
export function syncIoInUse(): boolean {
  return syncIo;
}

export class DiskFile implements ImageFile {
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly readOnly: boolean,
  ) {}

  /** An already open handle: tests pass memfs's (with injected faults) through the same read/write code. */
  static fromHandle(path: string, fh: FileHandle, readOnly: boolean): DiskFile {
    return new DiskFile(path, fh, readOnly);
  }

  /**
   * Open an image file. Only a regular file is an image: a FIFO or a socket would block the read
   * forever, a character device has no size, and a block device reports size 0 through stat (its size
   * needs an ioctl this code does not make), so all of them are refused in one line before any read.
   * O_NONBLOCK makes the open itself return at once on a FIFO (it is ignored for regular files), and
   * the check is on the opened descriptor, so the file cannot be swapped between check and use.
   */
  static async open(path: string, readOnly: boolean): Promise<DiskFile> {
    let fh: FileHandle | undefined;
    const refuse = (st: Stats) => new VhdsyncError('UNSUPPORTED', `${path}: ${fileKind(st)}, not a disk image file; name a regular image file (raw, VHD or VHDX)`);
    try {
      // A socket cannot even be opened (ENXIO): look first, so every kind gets the same line.
      const before = await stat(path);
      if (!before.isFile()) throw refuse(before);
      fh = await open(path, (readOnly ? constants.O_RDONLY : constants.O_RDWR) | constants.O_NONBLOCK);
      const st = await fh.stat();
      if (!st.isFile()) throw refuse(st);
      return new DiskFile(path, fh, readOnly);
    } catch (e) {
      await fh?.close().catch(() => undefined);
      throw ioError(path, e);
    }
  }

  async size(): Promise<number> {
    try {
      return (await this.fh.stat()).size;
    } catch (e) {
      throw ioError(this.path, e);
    }
  }

  /** Read up to `into.length` bytes at `position`; returns how many were read (fewer only at end of file). */
  async readUpTo(into: Uint8Array, position: number): Promise<number> {
    let done = 0;
    try {
      while (done < into.length) {
        const len = Math.min(into.length - done, MAX_IO);
        const bytesRead = syncIo ? readSync(this.fh.fd, into, done, len, position + done) : (await this.fh.read(into, done, len, position + done)).bytesRead;
        if (bytesRead === 0) break;
        done += bytesRead;
      }
    } catch (e) {
      throw ioError(this.path, e);
    }
    return done;
  }

  /** Fill `into` from `position`; running into the end of the file is a TRUNCATED error. */
  async readAt(into: Uint8Array, position: number, what = 'data'): Promise<void> {
    const n = await this.readUpTo(into, position);
    if (n < into.length) {
      throw new VhdsyncError('TRUNCATED', `${this.path}: ${what} at byte ${position + n} lies past the end of the file; the image is truncated`);
    }
  }

  async writeAt(data: Uint8Array, position: number): Promise<void> {
    if (this.readOnly) throw new VhdsyncError('READ_ONLY', `${this.path}: opened read-only`);
    let done = 0;
    try {
      while (done < data.length) {
        const len = Math.min(data.length - done, MAX_IO);
        const bytesWritten = syncIo ? writeSync(this.fh.fd, data, done, len, position + done) : (await this.fh.write(data, done, len, position + done)).bytesWritten;
        // A short write continues where it stopped; a write of nothing would loop forever.
        if (bytesWritten === 0) throw Object.assign(new Error(`short write: no bytes written at byte ${position + done}`), { code: 'EIO' });
        done += bytesWritten;
      }
    } catch (e) {
      throw ioError(this.path, e);
    }
  }

  async writevAt(parts: readonly Uint8Array[], position: number): Promise<void> {
    if (this.readOnly) throw new VhdsyncError('READ_ONLY', `${this.path}: opened read-only`);
    if (!syncIo && typeof this.fh.writev !== 'function') {
      // A handle without writev (a test's in-memory one): one write per part.
      for (let at = position, i = 0; i < parts.length; at += parts[i++].byteLength) await this.writeAt(parts[i], at);
      return;
    }
    try {
      await writeParts(this.path, parts, position, async (p, at) => (syncIo ? writevSync(this.fh.fd, p, at) : (await this.fh.writev(p, at)).bytesWritten));
    } catch (e) {
      throw ioError(this.path, e);
    }
  }

  async truncate(length: number): Promise<void> {
    try {
      await this.fh.truncate(length);
    } catch (e) {
      throw ioError(this.path, e);
    }
  }

  /** Data (and the size) durable; cheaper than sync when other metadata did not change. */
  async datasync(): Promise<void> {
    try {
      await this.fh.datasync();
    } catch (e) {
      throw ioError(this.path, e);
    }
  }

  async sync(): Promise<void> {
    try {
      await this.fh.sync();
    } catch (e) {
      throw ioError(this.path, e);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.fh.close();
    } catch (e) {
      throw ioError(this.path, e);
    }
  }
}

/** The most pieces one writev takes (IOV_MAX on Linux). */
const IOV_MAX = 1024;

/**
 * writev until every piece is written: a short write continues where it stopped; a write of nothing is
 * EIO (it would loop forever). `writevAt` writes some prefix of the pieces at a position, returning bytes.
 */
export async function writeParts(path: string, parts: readonly Uint8Array[], position: number, writevAt: (parts: Uint8Array[], position: number) => Promise<number>): Promise<void> {
  let rest = parts.slice();
  let at = position;
  while (rest.length > 0) {
    const n = await writevAt(rest.slice(0, IOV_MAX), at);
    if (n === 0) throw Object.assign(new Error(`short write to ${path}`), { code: 'EIO' });
    at += n;
    let skip = n;
    let i = 0;
    while (i < rest.length && skip >= rest[i].byteLength) skip -= rest[i++].byteLength;
    rest = rest.slice(i);
    if (skip > 0) rest[0] = rest[0].subarray(skip);
  }
}

function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'is a directory';
  if (st.isFIFO()) return 'is a FIFO (named pipe)';
  if (st.isSocket()) return 'is a socket';
  if (st.isCharacterDevice()) return 'is a character device';
  if (st.isBlockDevice()) return 'is a block device (not supported: copy it into an image file first, e.g. qemu-img convert)';
  return 'is not a regular file';
}
