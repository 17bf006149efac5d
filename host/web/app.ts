/**
 * The page: two file inputs (or files dropped on it), what each image is, a progress bar with
 * throughput, the block map drawn as the compare goes, the resync estimate and the differing ranges
 * with their JSON. Every byte of work happens in worker.ts; this thread only draws, so the page stays
 * responsive during a multi-GiB compare. `?core=scalar` forces the scalar build of the core.
 *
 * The map reports what it has drawn: `data-drawn` / `data-cells` on the canvas and a `vhdsync:map`
 * event on the document with the same numbers after every batch of cells.
 */
import { jsonText } from '../json-text.js';
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
  mapAxes,
  formatDuration,
  formatRate,
  resyncBytes,
  transferSeconds,
} from './report.js';

const COLUMNS = 128;
/** Rows the differing-ranges table shows; the JSON download always has them all. */
const MAX_RANGE_ROWS = 1000;
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
  mapSection: $('#map-section'),
  mapRows: $('#map-section .map-rows'),
  mapColumns: $('#map-section .map-columns'),
  rangesSection: $('#ranges-section'),
  rangesCount: $('#ranges-count'),
  ranges: $('#ranges tbody'),
  rangesMore: $('#ranges-more'),
  download: $<HTMLButtonElement>('#download-json'),
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
/** The block map being drawn: cells [0, drawn) are final; `ranges` once the compare is done. */
let map:
  | { cells: Uint8Array; cellBytes: number; size: number; drawn: number; counts: number[]; ranges?: CompareJson['ranges'] }
  | undefined;
/** The finished compare, for the JSON download. */
let finished: { result: CompareJson; primary: string; replica: string } | undefined;

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
  finished = undefined;
  for (const side of SIDES) {
    ui.info(side).replaceChildren();
    ui.imageError(side).hidden = true;
  }
  ui.message.hidden = true;
  ui.run.hidden = true;
  ui.result.hidden = true;
  ui.mapSection.hidden = true;
  ui.rangesSection.hidden = true;
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
    case 'map':
      if (!map) startMap(m.cellCount, m.cellBytes, m.size);
      drawCells(m.from, m.cells);
      break;
    case 'result':
      showProgress(Math.max(m.result.sizeA, m.result.sizeB), Math.max(m.result.sizeA, m.result.sizeB), m.bytesRead, m.elapsedMs);
      showResult(m.result, m.cells, m.cellBytes);
      finished = { result: m.result, primary: infos.primary?.name ?? 'primary', replica: infos.replica?.name ?? 'replica' };
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

/** A resync refuses disks of different sizes (ARCHITECTURE.md, preflight); say so, then compare as the CLI does. */
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

  if (!map || map.cells.length !== cells.length) startMap(cells.length, cellBytes, size);
  drawCells(0, cells); // every cell again, from the final map: the drawing is exactly the result
  map!.ranges = r.ranges;
  showRanges(r);
}

// --- differing ranges and their JSON --------------------------------------------------------------

function offsetText(n: number): string {
  return `${n.toLocaleString('en-US')} (0x${n.toString(16)})`;
}

function showRanges(r: CompareJson): void {
  ui.rangesSection.hidden = false;
  ui.rangesCount.textContent = `(${r.ranges.length.toLocaleString('en-US')}, ${bytesText(r.differingBytes)})`;
  const rows = r.ranges.slice(0, MAX_RANGE_ROWS).map((range, i) => {
    const tr = document.createElement('tr');
    tr.dataset.start = String(range.start);
    tr.dataset.end = String(range.end);
    for (const text of [String(i + 1), offsetText(range.start), offsetText(range.end), bytesText(range.end - range.start)]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  });
  ui.ranges.replaceChildren(...rows);
  const more = r.ranges.length - rows.length;
  ui.rangesMore.hidden = more <= 0;
  ui.rangesMore.textContent = more > 0 ? `… and ${more.toLocaleString('en-US')} more: the JSON download lists them all.` : '';
}

function stem(name: string): string {
  return name.replace(/\.[^.]*$/, '') || name;
}

ui.download.addEventListener('click', () => {
  if (!finished) return;
  const blob = new Blob([jsonText(finished.result)], { type: 'application/json' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `${stem(finished.primary)}-vs-${stem(finished.replica)}.compare.json`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
});

// --- block map ------------------------------------------------------------------------------------

function cssColor(name: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** Size the canvas for `cellCount` cells, clear it, and label its axes with byte offsets. */
function startMap(cellCount: number, cellBytes: number, size: number): void {
  map = { cells: new Uint8Array(cellCount), cellBytes, size, drawn: 0, counts: [0, 0, 0] };
  ui.mapSection.hidden = false;
  ui.mapScale.textContent = `(${cellCount.toLocaleString('en-US')} cells of ${formatSize(cellBytes)}, ${formatSize(COLUMNS * cellBytes)} a row)`;
  const rows = Math.max(1, Math.ceil(cellCount / COLUMNS));
  const canvas = ui.map;
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${COLUMNS * CELL_PX}px`;
  canvas.style.height = `${rows * CELL_PX}px`;
  canvas.width = COLUMNS * CELL_PX * dpr;
  canvas.height = rows * CELL_PX * dpr; // also clears it
  const axes = mapAxes(cellCount, cellBytes, COLUMNS);
  const label = (l: { offset: number; text: string }, side: 'top' | 'left', fraction: number) => {
    const span = document.createElement('span');
    span.textContent = l.text;
    span.title = `byte ${offsetText(l.offset)}`;
    span.dataset.offset = String(l.offset);
    span.style[side] = `${fraction * 100}%`;
    return span;
  };
  ui.mapRows.replaceChildren(...axes.rows.map((l) => label(l, 'top', l.at / rows)));
  ui.mapColumns.replaceChildren(...axes.columns.map((l) => label(l, 'left', l.at / COLUMNS)));
  reportDrawn();
}

/** Draw cells [from, from + cells.length); a cell drawn before is drawn over. */
function drawCells(from: number, cells: Uint8Array): void {
  if (!map) return;
  const ctx = ui.map.getContext('2d');
  if (!ctx) return;
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  const colors = [cssColor('--identical'), cssColor('--different'), cssColor('--absent')];
  for (let k = 0; k < cells.length; k++) {
    const i = from + k;
    if (i < map.drawn) map.counts[map.cells[i]]--;
    map.cells[i] = cells[k];
    map.counts[cells[k]]++;
    ctx.fillStyle = colors[cells[k]];
    ctx.fillRect((i % COLUMNS) * CELL_PX, Math.floor(i / COLUMNS) * CELL_PX, CELL_PX - 1, CELL_PX - 1);
  }
  map.drawn = Math.max(map.drawn, from + cells.length);
  reportDrawn();
}

/** What the canvas shows, in a form a script (or the browser test) can read. */
function reportDrawn(): void {
  if (!map) return;
  const canvas = ui.map;
  canvas.dataset.identical = String(map.counts[CELL_IDENTICAL]);
  canvas.dataset.different = String(map.counts[CELL_DIFFERENT]);
  canvas.dataset.absent = String(map.counts[CELL_ABSENT]);
  canvas.dataset.drawn = String(map.drawn);
  canvas.dataset.cells = String(map.cells.length);
  document.dispatchEvent(new CustomEvent('vhdsync:map', { detail: { drawn: map.drawn, cells: map.cells.length } }));
}

function cellText(index: number): string {
  if (!map) return '';
  const { start, end } = cellRange(index, map.cellBytes, map.size);
  const hex = (n: number) => `0x${n.toString(16)}`;
  if (index >= map.drawn) return `cell ${index}: bytes ${start}–${end} (${hex(start)}–${hex(end)}), ${formatSize(end - start)} · not compared yet`;
  const status = map.cells[index];
  const what =
    status === CELL_DIFFERENT
      ? map.ranges
        ? `different: ${bytesText(differingIn(map.ranges, start, end))} differ`
        : 'different'
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

// --- picking: the inputs, or files dropped on the page ---------------------------------------------

/** Put `file` in `side`'s input, as if picked there (a FileList can only come from a DataTransfer). */
function setFile(side: Side, file: File): void {
  const dt = new DataTransfer();
  dt.items.add(file);
  ui.input(side).files = dt.files;
}

function dropTarget(event: DragEvent): Side | undefined {
  const box = (event.target as Element | null)?.closest?.('.image');
  const id = box?.id;
  return id === 'primary' || id === 'replica' ? id : undefined;
}

function clearDragOver(): void {
  for (const side of SIDES) document.getElementById(side)?.classList.remove('drag-over');
}

/**
 * Two files dropped anywhere: the first is the primary, the second the replica. One file dropped on a
 * box goes there; elsewhere, to the first box without a file (the primary when both have one).
 */
function onDrop(event: DragEvent): void {
  event.preventDefault(); // never let the browser navigate away to the dropped file
  clearDragOver();
  const files = Array.from(event.dataTransfer?.files ?? []);
  if (files.length === 0) return;
  if (files.length > 2) {
    showMessage('error', `Drop one or two image files (${files.length} were dropped).`);
    return;
  }
  if (files.length === 2) {
    setFile('primary', files[0]);
    setFile('replica', files[1]);
  } else {
    const side = dropTarget(event) ?? SIDES.find((s) => !ui.input(s).files?.length) ?? 'primary';
    setFile(side, files[0]);
  }
  start();
}

document.addEventListener('dragover', (event) => {
  event.preventDefault();
  if (event.dataTransfer) event.dataTransfer.dropEffect = 'copy';
  const side = dropTarget(event);
  for (const s of SIDES) document.getElementById(s)?.classList.toggle('drag-over', s === side);
});
document.addEventListener('dragleave', (event) => {
  if (!event.relatedTarget) clearDragOver();
});
document.addEventListener('drop', onDrop);

for (const side of SIDES) ui.input(side).addEventListener('change', start);
reset();
