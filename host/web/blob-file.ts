/**
 * A browser File (any Blob) behind the disk backends' ImageFile surface, read-only.
 *
 * Each read lands in the caller's buffer (a view over WASM memory on the compare path) with one copy
 * from the slice's ArrayBuffer. That copy is the least there is: a Blob cannot be read into memory it
 * does not own, and a BYOB stream reader would have to transfer WebAssembly.Memory's buffer, which
 * engines forbid.
 *
 * Large reads go through read-ahead windows. In Chromium every `slice().arrayBuffer()` is a round trip
 * to the browser process, and measured on a 1 GiB file, sequential 4 MiB slices read at ~350 MB/s
 * while 16 MiB slices with four in flight read at ~900 MB/s. The compare reads each disk front to back
 * in 4 MiB pieces, so a forward reader gets the next windows fetched while it works on this one.
 * Small reads (footers, headers, BAT, sector bitmaps) go straight to the file unless already cached.
 */
import { VhdsyncError } from '../errors.js';
import { MiB } from '../units.js';
import type { ImageFile } from '../disk/file-io.js';


export interface ReadAheadOptions {
  /** Bytes per read-ahead window (default 16 MiB). */
  window?: number;
  /** Windows fetched ahead of a large read (default 2). Memory per file: (ahead + 1) × window. */
  ahead?: number;
  /** Reads at least this long use the windows (default 256 KiB). */
  large?: number;
}

export class BlobFile implements ImageFile {
  readonly readOnly = true;
  /** Bytes handed to callers so far (the page's throughput figure). */
  bytesRead = 0;
  private closed = false;
  private readonly window: number;
  private readonly ahead: number;
  private readonly large: number;
  /** Window index -> its bytes, fetched or in flight. */
  private readonly windows = new Map<number, Promise<Uint8Array>>();

  /** Windows held right now (fetched or in flight): bounded by ahead + 2. */
  get cachedWindows(): number {
    return this.windows.size;
  }

  constructor(
    private readonly blob: Blob,
    /** The name shown in messages (a File's name). */
    readonly path: string,
    options: ReadAheadOptions = {},
  ) {
    this.window = options.window ?? 16 * MiB;
    this.ahead = options.ahead ?? 2;
    this.large = options.large ?? 256 * 1024;
  }

  async size(): Promise<number> {
    return this.blob.size;
  }

  async readUpTo(into: Uint8Array, position: number): Promise<number> {
    if (this.closed) throw new VhdsyncError('IO', `${this.path}: read after close`);
    const end = Math.min(position + into.length, this.blob.size);
    if (end <= position) return 0;
    const first = Math.floor(position / this.window);
    const last = Math.floor((end - 1) / this.window);
    if (end - position >= this.large || (first === last && this.windows.has(first))) {
      for (let w = first; w <= last; w++) {
        const bytes = await this.windowBytes(w);
        const from = Math.max(position, w * this.window);
        const to = Math.min(end, (w + 1) * this.window);
        into.set(bytes.subarray(from - w * this.window, to - w * this.window), from - position);
      }
      if (end - position >= this.large) this.readAhead(first, last);
    } else {
      into.set(new Uint8Array(await this.slice(position, end)));
    }
    this.bytesRead += end - position;
    return end - position;
  }

  async readAt(into: Uint8Array, position: number, what = 'data'): Promise<void> {
    const n = await this.readUpTo(into, position);
    if (n < into.length) {
      throw new VhdsyncError('TRUNCATED', `${this.path}: ${what} at byte ${position + n} lies past the end of the file; the image is truncated`);
    }
  }

  async writeAt(): Promise<void> {
    throw this.readOnlyError();
  }

  async truncate(): Promise<void> {
    throw this.readOnlyError();
  }

  async datasync(): Promise<void> {}

  async sync(): Promise<void> {}

  async close(): Promise<void> {
    this.closed = true;
    this.windows.clear();
  }

  /**
   * Start fetching the windows after `last`, and forget those before `first` (the reader moved on).
   * A reader that jumps around keeps at most ahead + 2 windows: the farthest from `first` go first.
   */
  private readAhead(first: number, last: number): void {
    for (const w of this.windows.keys()) if (w < first) this.windows.delete(w);
    for (let w = last + 1; w <= last + this.ahead && w * this.window < this.blob.size; w++) void this.windowBytes(w);
    while (this.windows.size > this.ahead + 2) {
      const far = [...this.windows.keys()].reduce((a, b) => (Math.abs(b - first) > Math.abs(a - first) ? b : a));
      this.windows.delete(far);
    }
  }

  private windowBytes(w: number): Promise<Uint8Array> {
    let p = this.windows.get(w);
    if (!p) {
      p = this.slice(w * this.window, Math.min((w + 1) * this.window, this.blob.size)).then((b) => new Uint8Array(b));
      const fetching = p;
      // A failed fetch is forgotten, so the next read that needs it retries and reports the error.
      fetching.catch(() => {
        if (this.windows.get(w) === fetching) this.windows.delete(w);
      });
      this.windows.set(w, fetching);
    }
    return p;
  }

  private async slice(start: number, end: number): Promise<ArrayBuffer> {
    try {
      return await this.blob.slice(start, end).arrayBuffer();
    } catch (e) {
      // The file changed or vanished on disk after it was picked (NotReadableError).
      throw new VhdsyncError('IO', `${this.path}: the browser could not read the file (${(e as Error).message}); pick it again`, { cause: e });
    }
  }

  private readOnlyError(): VhdsyncError {
    return new VhdsyncError('READ_ONLY', `${this.path}: a file picked in the browser is read-only`);
  }
}
