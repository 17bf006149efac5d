import { open } from 'node:fs/promises';

/**
 * The file operations a tracker uses to append to its log, behind an interface so that tests can put a
 * failing file system under a running VM (a full or broken volume: Hyper-V's "write failure to the
 * tracking log" trigger) without touching the disk image itself.
 */
export interface LogFile {
  /** Bytes read at `position` into `into`. */
  read(into: Uint8Array, position: number): Promise<number>;
  write(data: Uint8Array, position: number): Promise<void>;
  size(): Promise<number>;
  /** Make the data durable (fdatasync). */
  sync(): Promise<void>;
  close(): Promise<void>;
}

export interface LogFs {
  /** Open an existing log for reading and writing; rejects with ENOENT when there is none. */
  open(path: string): Promise<LogFile>;
}

export const nodeLogFs: LogFs = {
  async open(path) {
    const fh = await open(path, 'r+');
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
      async size() {
        return (await fh.stat()).size;
      },
      sync: () => fh.datasync(),
      close: () => fh.close(),
    };
  },
};
