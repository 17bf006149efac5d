import { closeSync, fdatasyncSync, fstatSync, openSync, readSync, writeSync, writev } from 'node:fs';
import { open } from 'node:fs/promises';
import { writeParts } from '../disk/file-io.js';

/**
 * The file operations a tracker uses to append to its log, behind an interface so that tests can put a
 * failing file system under a running VM (a full or broken volume: Hyper-V's "write failure to the
 * tracking log" trigger) without touching the disk image itself.
 */
export interface LogFile {
  /** Bytes read at `position` into `into`. */
  read(into: Uint8Array, position: number): Promise<number>;
  write(data: Uint8Array, position: number): Promise<void>;
  /** Write the pieces one after another from `position` (optional: else they are joined and written). */
  writev?(parts: readonly Uint8Array[], position: number): Promise<void>;
  size(): Promise<number>;
  /** Make the data durable (fdatasync). */
  sync(): Promise<void>;
  close(): Promise<void>;
}

export interface LogFs {
  /** Open an existing log for reading and writing; rejects with ENOENT when there is none. */
  open(path: string): Promise<LogFile>;
}

/** What a log file needs of an open file: a promises FileHandle (node's; memfs's in fault-injection tests). */
export interface LogHandle {
  read(into: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  write(data: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  writev?(parts: Uint8Array[], position: number): Promise<{ bytesWritten: number }>;
  stat(): Promise<{ size: number }>;
  datasync(): Promise<void>;
  close(): Promise<void>;
}

export const nodeLogFs: LogFs = logFsOver((path, flags) => open(path, flags));

/** A LogFs over any `open` that yields a FileHandle: short writes continue, a write of nothing is EIO. */
export function logFsOver(openFile: (path: string, flags: string) => Promise<LogHandle>): LogFs {
  return { open: async (path) => logFile(path, await openFile(path, 'r+')) };
}

function logFile(path: string, fh: LogHandle): LogFile {
  return {
    async read(into, position) {
      return (await fh.read(into, 0, into.byteLength, position)).bytesRead;
    },
    async write(data, position) {
      let done = 0;
      while (done < data.byteLength) {
        const { bytesWritten } = await fh.write(data, done, data.byteLength - done, position + done);
        if (bytesWritten === 0) throw Object.assign(new Error(`short write to ${path}`), { code: 'EIO' });
        done += bytesWritten;
      }
    },
    writev: fh.writev ? (parts, position) => writeParts(path, parts, position, async (p, at) => (await fh.writev!(p, at)).bytesWritten) : undefined,
    async size() {
      return (await fh.stat()).size;
    },
    sync: () => fh.datasync(),
    close: () => fh.close(),
  };
}

/**
 * The same operations as synchronous calls: no thread-pool round trip per call, for a process whose one
 * job is a guest's I/O (`vhdsync run`, which also reads and writes its disks synchronously: useSyncIo).
 * An append is then a handful of page-cache syscalls instead of as many event-loop turns.
 */
export const syncLogFs: LogFs = {
  async open(path) {
    const fd = openSync(path, 'r+');
    return {
      async read(into, position) {
        return readSync(fd, into, 0, into.byteLength, position);
      },
      async write(data, position) {
        let done = 0;
        while (done < data.byteLength) {
          const n = writeSync(fd, data, done, data.byteLength - done, position + done);
          if (n === 0) throw Object.assign(new Error(`short write to ${path}`), { code: 'EIO' });
          done += n;
        }
      },
      // The bulk of an append goes to the thread pool, so that the disk's write can run beside it.
      writev: (parts, position) =>
        writeParts(path, parts, position, (p, at) => new Promise((resolve, reject) => writev(fd, p, at, (e, n) => (e ? reject(e) : resolve(n))))),
      async size() {
        return fstatSync(fd).size;
      },
      async sync() {
        fdatasyncSync(fd);
      },
      async close() {
        closeSync(fd);
      },
    };
  },
};
