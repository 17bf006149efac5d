/**
 * The page: two file inputs, what each image is, a progress bar with throughput, the resync estimate
 * and the block map. Every byte of work happens in worker.ts; this thread only draws, so the page
 * stays responsive during a multi-GiB compare. `?core=scalar` forces the scalar build of the core.
 */
import { formatSize } from '../units.js';
import type { CompareJson, Side, WorkerMessage } from './messages.js';
import type { ImageInfo } from './open-image.js';
import {
  CELL_ABSENT,
  CELL_DIFFERENT,
  CELL_IDENTICAL,
  GRANULARITIES,
  LINKS,
  cellRange,
  differingIn,
  formatDuration,
  formatRate,
  resyncBytes,
  transferSeconds,
} from './report.js';

const COLUMNS = 128;
const CELL_PX = 6; // 5 px of colour and a 1 px gap
const SIDES: Side[] = ['primary', 'replica'];

const wantSimd = new URLSearchParams(location.search).get('core') !== 'scalar';

function $<T extends HTMLElement = HTMLElement>(selector: string): T {
  const el = document.querySelector<T>(selector);
  if (!el) throw new Error(`page is missing ${selector}`);
  return el;
}

const ui = {
  input: (side: Side) => $<HTMLInputElement>(`#${side}-file`),
  info: (side: Side) => $(`#${side} .info`),
  imageError: (side: Side) => $(`#${side} .image-error`),
  coreBuild: $('#core-build'),
  message: $('#message'),
  run: $('#run'),
  progress: $<HTMLProgressElement>('#progress'),
  progressText: $('#progress-text'),
  result: $('#result'),
  summary: $('#summary'),
  estimate: $('#estimate tbody'),
  mapScale: $('#map-scale'),
  map: $<HTMLCanvasElement>('#map'),
  tooltip: $('#tooltip'),
  cellInfo: $('#cell-info'),
  json: $('#result-json'),
};

function setState(state: 'idle' | 'running' | 'done' | 'error'): void {
  document.body.dataset.state = state;
}

function showMessage(kind: 'error' | 'warning', text: string): void {
  ui.message.textContent = text;
  ui.message.className = kind;
  ui.message.hidden = false;
}

function bytesText(n: number): string {
  return n < 1024 ? `${n} B` : `${formatSize(n)} (${n.toLocaleString('en-US')} bytes)`;
}

// --- one compare ----------------------------------------------------------------------------------

let worker: Worker | undefined;
let infos: Partial<Record<Side, ImageInfo>> = {};
let broken: string[] = [];
let map: { cells: Uint8Array; cellBytes: number; size: number; ranges: CompareJson['ranges'] } | undefined;

function start(): void {
  const primary = ui.input('primary').files?.[0];
  const replica = ui.input('replica').files?.[0];
  worker?.terminate(); // a new pick cancels the compare in flight
  worker = undefined;
  reset();
  if (!primary || !replica) {
    if (primary) showPicked('primary', primary);
    if (replica) showPicked('replica', replica);
    return;
  }

  setState('running');
  ui.run.hidden = false;
  ui.progressText.textContent = 'opening…';
  const w = new Worker(new URL('./compare-worker.js', import.meta.url), { type: 'module' }) // worker.ts, bundled;
  worker = w;
  w.onmessage = (event: MessageEvent<WorkerMessage>) => {
    if (worker === w) handle(event.data);
  };
  w.onerror = (event) => {
    if (worker !== w) return;
    event.preventDefault();
    fail(`The compare stopped unexpectedly: ${event.message || 'the worker failed to start'}`);
  };
  w.postMessage({ type: 'compare', primary, replica, simd: wantSimd });
}

/** With a broken image the worker has nothing left to do once both sides have reported. */
function stopWhenBothReported(): void {
  if (broken.length > 0 && Object.keys(infos).length + broken.length === 2) {
    worker?.terminate();
    worker = undefined;
  }
}

/** Before both files are picked: name and size of the one that is, straight from the File. */
function showPicked(side: Side, file: File): void {
  const dl = ui.info(side);
  for (const [k, v] of [
    ['file', file.name],
    ['file size', bytesText(file.size)],
  ]) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dl.append(dt, dd);
  }
}

function reset(): void {
  infos = {};
  broken = [];
  map = undefined;
  for (const side of SIDES) {
    ui.info(side).replaceChildren();
    ui.imageError(side).hidden = true;
  }
  ui.message.hidden = true;
  ui.run.hidden = true;
  ui.result.hidden = true;
  ui.progress.value = 0;
  ui.tooltip.hidden = true;
  setState('idle');
}

function fail(text: string): void {
  worker?.terminate();
  worker = undefined;
  ui.run.hidden = true;
  showMessage('error', text);
  setState('error');
}

function handle(m: WorkerMessage): void {
  switch (m.type) {
    case 'core':
      ui.coreBuild.textContent = `WASM core: ${m.simd ? 'SIMD' : 'scalar'} build.`;
      ui.coreBuild.dataset.simd = String(m.simd);
      break;
    case 'opened':
      infos[m.side] = m.info;
      showInfo(m.side, m.info);
      if (infos.primary && infos.replica) checkSizes(infos.primary, infos.replica);
      stopWhenBothReported();
      break;
    case 'image-error': {
      // Both sides report before the worker stops, so a pair of broken images shows both messages.
      ui.imageError(m.side).textContent = m.message;
      ui.imageError(m.side).hidden = false;
      broken.push(`The ${m.side} image cannot be opened: ${m.message}`);
      ui.run.hidden = true;
      showMessage('error', broken.join('\n'));
      setState('error');
      stopWhenBothReported();
      break;
    }
    case 'progress':
      showProgress(m.done, m.total, m.bytesRead, m.elapsedMs);
      break;
    case 'result':
      showProgress(Math.max(m.result.sizeA, m.result.sizeB), Math.max(m.result.sizeA, m.result.sizeB), m.bytesRead, m.elapsedMs);
      showResult(m.result, m.cells, m.cellBytes);
      worker?.terminate();
      worker = undefined;
      setState('done');
      break;
    case 'error':
      fail(`The compare failed: ${m.message}`);
      break;
  }
}

function showInfo(side: Side, info: ImageInfo): void {
  const rows: [string, string][] = [
    ['file', info.name],
    ['format', info.format === 'raw' ? 'raw' : `${info.format.toUpperCase()} ${info.type}`],
    ['virtual size', bytesText(info.virtualSize)],
    ['file size', bytesText(info.fileSize)],
  ];
  if (info.format !== 'raw') rows.push(['block size', formatSize(info.blockSize)]);
  for (const w of info.warnings) rows.push(['warning', w]);
  const dl = ui.info(side);
  dl.replaceChildren();
  for (const [k, v] of rows) {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dd.dataset.field = k.replace(' ', '-');
    dl.append(dt, dd);
  }
}

/** A resync refuses disks of different sizes (DESIGN.md, preflight); say so, then compare as the CLI does. */
function checkSizes(p: ImageInfo, r: ImageInfo): void {
  if (p.virtualSize === r.virtualSize) return;
  const which = r.virtualSize < p.virtualSize ? 'smaller' : 'larger';
  showMessage(
    'warning',
    `Size mismatch: the replica (${formatSize(r.virtualSize)}, ${r.virtualSize} bytes) is ${which} than the primary ` +
      `(${formatSize(p.virtualSize)}, ${p.virtualSize} bytes). A resync refuses this pair; resize the replica to ` +
      `${p.virtualSize} bytes first. The compare below counts the shorter image's missing tail as zeros, as 'vhdsync compare' does.`,
  );
}

function showProgress(done: number, total: number, bytesRead: number, elapsedMs: number): void {
  ui.progress.value = total > 0 ? done / total : 1;
  const seconds = elapsedMs / 1000;
  const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
  ui.progressText.textContent =
    `${pct}% · ${formatSize(done)} of ${formatSize(total)} compared · ` +
    `read ${formatSize(bytesRead)} at ${formatRate(bytesRead, seconds)} · ${formatDuration(seconds)}`;
  ui.progressText.dataset.bytesRead = String(bytesRead);
  ui.progressText.dataset.elapsedMs = String(Math.round(elapsedMs));
}

function showResult(r: CompareJson, cells: Uint8Array, cellBytes: number): void {
  const size = Math.max(r.sizeA, r.sizeB);
  ui.result.hidden = false;
  ui.json.textContent = JSON.stringify(r);
  ui.summary.textContent = r.identical
    ? 'The images are identical.'
    : `The images differ: ${bytesText(r.differingBytes)} in ${r.ranges.length} range${r.ranges.length === 1 ? '' : 's'}.`;

  ui.estimate.replaceChildren();
  for (const g of GRANULARITIES) {
    const bytes = resyncBytes(r.ranges, size, g);
    const tr = document.createElement('tr');
    tr.dataset.granularity = String(g);
    const cellsText = [formatSize(g), bytesText(bytes), ...LINKS.map((l) => formatDuration(transferSeconds(bytes, l.bitsPerSecond)))];
    for (const text of cellsText) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    tr.children[1].setAttribute('data-bytes', String(bytes));
    ui.estimate.append(tr);
  }

  map = { cells, cellBytes, size, ranges: r.ranges };
  ui.mapScale.textContent = `(${cells.length.toLocaleString('en-US')} cells of ${formatSize(cellBytes)})`;
  drawMap(cells);
}

// --- block map ------------------------------------------------------------------------------------

function cssColor(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function drawMap(cells: Uint8Array): void {
  const rows = Math.max(1, Math.ceil(cells.length / COLUMNS));
  const canvas = ui.map;
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${COLUMNS * CELL_PX}px`;
  canvas.style.height = `${rows * CELL_PX}px`;
  canvas.width = COLUMNS * CELL_PX * dpr;
  canvas.height = rows * CELL_PX * dpr;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  ctx.scale(dpr, dpr);
  const colors = [cssColor('--identical'), cssColor('--different'), cssColor('--absent')];
  const counts = [0, 0, 0];
  for (let i = 0; i < cells.length; i++) {
    counts[cells[i]]++;
    ctx.fillStyle = colors[cells[i]];
    ctx.fillRect((i % COLUMNS) * CELL_PX, Math.floor(i / COLUMNS) * CELL_PX, CELL_PX - 1, CELL_PX - 1);
  }
  // What the canvas shows, in a form a script (or the browser test) can read.
  canvas.dataset.identical = String(counts[CELL_IDENTICAL]);
  canvas.dataset.different = String(counts[CELL_DIFFERENT]);
  canvas.dataset.absent = String(counts[CELL_ABSENT]);
}

function cellText(index: number): string {
  if (!map) return '';
  const { start, end } = cellRange(index, map.cellBytes, map.size);
  const hex = (n: number) => `0x${n.toString(16)}`;
  const status = map.cells[index];
  const what =
    status === CELL_DIFFERENT
      ? `different: ${bytesText(differingIn(map.ranges, start, end))} differ`
      : status === CELL_ABSENT
        ? 'absent on both'
        : 'identical';
  return `cell ${index}: bytes ${start}–${end} (${hex(start)}–${hex(end)}), ${formatSize(end - start)} · ${what}`;
}

ui.map.addEventListener('mousemove', (event) => {
  if (!map) return;
  const rect = ui.map.getBoundingClientRect();
  const x = event.clientX - rect.left;
  const y = event.clientY - rect.top;
  // On a narrow screen the map is scaled down to fit (style.css): cells are `px` wide, not CELL_PX.
  const px = (rect.width / (COLUMNS * CELL_PX)) * CELL_PX || CELL_PX;
  const index = Math.floor(y / px) * COLUMNS + Math.floor(x / px);
  if (x < 0 || y < 0 || x >= COLUMNS * px || index >= map.cells.length) {
    ui.tooltip.hidden = true;
    return;
  }
  const text = cellText(index);
  ui.cellInfo.textContent = text;
  ui.tooltip.textContent = text;
  ui.tooltip.hidden = false;
  const left = Math.min(x + 14, Math.max(0, rect.width - ui.tooltip.offsetWidth));
  ui.tooltip.style.left = `${left}px`;
  ui.tooltip.style.top = `${y + 16}px`;
});
ui.map.addEventListener('mouseleave', () => {
  ui.tooltip.hidden = true;
});

for (const side of SIDES) ui.input(side).addEventListener('change', start);
reset();
