/**
 * The compare worker: opens both picked files, compares them with the same `diffDisks` as
 * `vhdsync compare` (File.slice reads landing in WASM memory), and builds the block map. One worker
 * per compare; the page terminates it to cancel. All the work is here so the page's thread only draws.
 */
import { loadCore } from '../core/index.js';
import type { Core } from '../core/types.js';
import type { Disk } from '../disk/disk.js';
import { isVhdsyncError } from '../errors.js';
import { compareReport, diffDisks } from '../resync/diff.js';
import type { CompareRequest, Side, WorkerMessage } from './messages.js';
import { openImage, type OpenedImage } from './open-image.js';
import { CellMapBuilder, cellBytesFor } from './report.js';

/** The parts of DedicatedWorkerGlobalScope used here (the host tsconfig has DOM types, not WebWorker). */
interface WorkerScope {
  onmessage: ((event: MessageEvent<CompareRequest>) => void) | null;
  postMessage(message: WorkerMessage, transfer?: Transferable[]): void;
}

const scope = self as unknown as WorkerScope;
const PROGRESS_EVERY_MS = 100;

function post(message: WorkerMessage, transfer?: Transferable[]): void {
  scope.postMessage(message, transfer);
}

function describe(e: unknown): { code: string; message: string } {
  if (isVhdsyncError(e)) return { code: e.code, message: e.message };
  console.error(e); // a bug, not a user mistake: keep the stack for whoever debugs it
  return { code: 'INTERNAL', message: `internal error: ${(e as Error)?.message ?? String(e)}` };
}

scope.onmessage = (event) => {
  if (event.data?.type === 'compare') void compare(event.data);
};

async function compare(request: CompareRequest): Promise<void> {
  if (!request.simd) {
    // The format parsers take the thread's shared core (getCore), whose only switch outside Node is
    // this variable; set it so that ?core=scalar runs every kernel on the scalar build.
    const g = globalThis as { process?: { env: Record<string, string> } };
    g.process ??= { env: {} };
    g.process.env.VHDSYNC_CORE = 'scalar';
  }
  let core: Core;
  try {
    core = await loadCore({ simd: request.simd });
  } catch (e) {
    post({ type: 'error', ...describe(e) });
    return;
  }
  post({ type: 'core', simd: core.simd });

  const sides: [Side, File][] = [
    ['primary', request.primary],
    ['replica', request.replica],
  ];
  const opened = await Promise.allSettled(sides.map(([, file]) => openImage(file)));
  const images: OpenedImage[] = [];
  opened.forEach((r, i) => {
    if (r.status === 'fulfilled') {
      images.push(r.value);
      post({ type: 'opened', side: sides[i][0], info: r.value.info });
    } else {
      post({ type: 'image-error', side: sides[i][0], ...describe(r.reason) });
    }
  });
  if (images.length < 2) return;

  const [a, b] = images;
  const started = performance.now();
  const bytesRead = () => a.file.bytesRead + b.file.bytesRead;
  // The block map is settled as the compare goes and sent with each progress report, so the page
  // draws it while the compare runs. The first report goes out at once, the others every 100 ms.
  const size = Math.max(a.disk.virtualSize, b.disk.virtualSize);
  const cellBytes = cellBytesFor(size);
  const map = new CellMapBuilder(size, cellBytes, (s, e) => storesNothing(a.disk, s, e) && storesNothing(b.disk, s, e));
  let sent = 0; // cells [0, sent) are on the page
  let lastPost = -Infinity;
  const sendMap = () => {
    if (map.settled === sent) return;
    post({ type: 'map', size, cellBytes, cellCount: map.cells.length, from: sent, cells: map.cells.slice(sent, map.settled) });
    sent = map.settled;
  };
  try {
    const r = await diffDisks(core, a.disk, b.disk, (done, total, ranges) => {
      map.advance(done, ranges);
      const now = performance.now();
      if (now - lastPost < PROGRESS_EVERY_MS && done < total) return;
      lastPost = now;
      sendMap();
      post({ type: 'progress', done, total, bytesRead: bytesRead(), elapsedMs: now - started });
    });
    const elapsedMs = performance.now() - started;
    map.advance(size, r.ranges); // a disk of size 0 reports no progress
    sendMap();
    const cells = map.cells;
    post(
      {
        type: 'result',
        result: compareReport(r),
        bytesRead: bytesRead(),
        elapsedMs,
        cells,
        cellBytes,
      },
      [cells.buffer],
    );
  } catch (e) {
    post({ type: 'error', ...describe(e) });
  } finally {
    await Promise.all(images.map((i) => i.disk.close().catch(() => undefined)));
  }
}

/** True when `d` stores no data in [start, end): every block there is absent or zero, or past its end. */
function storesNothing(d: Disk, start: number, end: number): boolean {
  if (start >= d.virtualSize) return true;
  const last = Math.min(end, d.virtualSize) - 1;
  for (let blk = Math.floor(start / d.blockSize); blk <= Math.floor(last / d.blockSize); blk++) {
    if (d.blockStatus(blk) === 'present') return false;
  }
  return true;
}
