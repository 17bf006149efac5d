/** The messages between the page (app.ts) and the compare worker (worker.ts). Types only. */
import type { ImageInfo } from './open-image.js';
import type { ByteRange } from './report.js';

export type Side = 'primary' | 'replica';

export interface CompareRequest {
  type: 'compare';
  primary: File;
  replica: File;
  /** false forces the scalar build of the core (`?core=scalar`). */
  simd: boolean;
}

/** The fields of `vhdsync compare --json`, in the same shape. */
export interface CompareJson {
  identical: boolean;
  differingBytes: number;
  ranges: ByteRange[];
  sizeA: number;
  sizeB: number;
}

export type WorkerMessage =
  | { type: 'core'; simd: boolean }
  | { type: 'opened'; side: Side; info: ImageInfo }
  | { type: 'image-error'; side: Side; code: string; message: string }
  | { type: 'progress'; done: number; total: number; bytesRead: number; elapsedMs: number }
  | {
      type: 'result';
      result: CompareJson;
      bytesRead: number;
      elapsedMs: number;
      /** Block map: one status byte per cell (report.ts CELL_*), `cellBytes` bytes of disk each. */
      cells: Uint8Array;
      cellBytes: number;
    }
  | { type: 'error'; code: string; message: string };
