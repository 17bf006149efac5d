/** The messages between the page (app.ts) and the compare worker (worker.ts). Types only. */
import type { ImageInfo } from './open-image.js';
import type { CompareReport } from '../resync/diff.js';

export type Side = 'primary' | 'replica';

export interface CompareRequest {
  type: 'compare';
  primary: File;
  replica: File;
  /** false forces the scalar build of the core (`?core=scalar`). */
  simd: boolean;
}

/** The fields of `vhdsync compare --json`, in the same shape. */
export type CompareJson = CompareReport;

export type WorkerMessage =
  | { type: 'core'; simd: boolean }
  | { type: 'opened'; side: Side; info: ImageInfo }
  | { type: 'image-error'; side: Side; code: string; message: string }
  | { type: 'progress'; done: number; total: number; bytesRead: number; elapsedMs: number }
  /** Block map cells settled since the last one: cells [from, from + cells.length) of cellCount. */
  | { type: 'map'; size: number; cellBytes: number; cellCount: number; from: number; cells: Uint8Array }
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
