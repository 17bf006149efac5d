#!/usr/bin/env node
// npm run bench:scenarios [-- --scale 1/100 --json out.json --markdown out.md --svg out.svg]
//
// The seed's table (Hyper-V Replica, 2013: 1 Gbps and 1.5 Mbps; offline scheduling, immediate, Online
// IR), reproduced at a scale of its ~80 GB, next to Hyper-V's published numbers and rsync / a plain copy
// run in the same process on the same image pairs. bench/README.md explains the method.
//
// Options:
//   --scale S             fraction of 80 GB to build (1/100 by default; 1 is the full size: ~80 GB of
//                         data, ~3× that of free space for the copies, and hours)
//   --json FILE           write every measurement, the formulas and the ratios as JSON
//   --markdown FILE       write the table as Markdown (it is printed either way)
//   --svg FILE            write the log-scale time chart
//   --max-link-seconds N  run over the simulated link only when the run is predicted to take ≤ N s per
//                         VM; otherwise compute its time from the local run (default 90)
//   --compute LINKS       never run these links (e.g. 1.5mbps): always compute their rows' times
//   --rows a,b            only these rows (ids as in seed.mjs, e.g. immediate@1gbps)
//   --no-rsync-z          skip the extra rsync -z peer
//   --no-real-link        skip the real shaped link (network namespace + veth + tbf; needs root)
//   --no-verify           skip checking each replica against its primary after each of our runs
//   --dir DIR             where to put the images (default: a new directory under os.tmpdir())
//   --rerender FILE       no run: rebuild the report (ratios, Markdown, SVG) from an earlier --json
//   --no-dirty-extents    skip the host crash / network outage rows (dirty-extents.mjs)
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, readFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
if (!existsSync(join(ROOT, 'dist', 'index.js'))) {
  console.error('bench/scenarios: dist/ is missing; run `npm run build` first');
  process.exit(1);
}
const { VMS, generateDisk } = await import('./disks.mjs');
const { RssSampler } = await import('./memory.mjs');
const { rsyncVersion, uncachedReadRate } = await import('./peers.mjs');
const { runRow, fixedCosts } = await import('./scenarios.mjs');
const { RealLink } = await import('./real-link.mjs');
const { summarize, markdown, svgChart, rerender } = await import('./report.mjs');
const { FULL_SIZE_BYTES, LINKS, ROWS, WRITE_RATE } = await import('./seed.mjs');
const { dirtyExtentRows, dirtyMarkdown } = await import('./dirty-extents.mjs');

function parseArgs(argv) {
  const o = { scale: 1 / 100, maxLinkSeconds: 90, rsyncZ: true, verify: true, compute: [], realLink: true, dirtyExtents: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--scale') {
      const v = val();
      const m = /^(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/.exec(v);
      o.scale = m ? Number(m[1]) / Number(m[2]) : Number(v);
      if (!(o.scale > 0 && o.scale <= 1)) throw new Error(`--scale ${v}: give a fraction in (0, 1], e.g. 1/100 or 0.01`);
    } else if (a === '--json') o.json = val();
    else if (a === '--markdown') o.markdown = val();
    else if (a === '--svg') o.svg = val();
    else if (a === '--max-link-seconds') o.maxLinkSeconds = Number(val());
    else if (a === '--rows') o.rows = val().split(',');
    else if (a === '--compute') o.compute = val().split(',');
    else if (a === '--dir') o.dir = val();
    else if (a === '--rerender') o.rerender = val();
    else if (a === '--no-rsync-z') o.rsyncZ = false;
    else if (a === '--no-real-link') o.realLink = false;
    else if (a === '--no-verify') o.verify = false;
    else if (a === '--no-dirty-extents') o.dirtyExtents = false;
    else if (a === '--help' || a === '-h') {
      console.log('usage: node bench/scenarios/run.mjs [--scale 1/100] [--json FILE] [--markdown FILE] [--svg FILE] [--max-link-seconds 90] [--compute link,...] [--rows id,...] [--no-rsync-z] [--no-verify] [--dir DIR] [--rerender FILE]');
      process.exit(0);
    } else throw new Error(`unknown option ${a} (see --help)`);
  }
  return o;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  console.error(`bench/scenarios: ${e.message}`);
  process.exit(2);
}
function emit(report) {
  const md = markdown(report) + (report.dirtyExtents ? '\n' + dirtyMarkdown(report.dirtyExtents) : '');
  console.log(md);
  if (opts.json) writeFileSync(opts.json, JSON.stringify(report, null, 2) + '\n');
  if (opts.markdown) writeFileSync(opts.markdown, md + '\n');
  if (opts.svg) writeFileSync(opts.svg, svgChart(report));
}

if (opts.rerender) {
  const old = JSON.parse(readFileSync(opts.rerender, "utf8"));
  emit(Object.assign(rerender(old), old.dirtyExtents ? { dirtyExtents: old.dirtyExtents } : {}));
  process.exit(0);
}

const rsyncV = rsyncVersion();
if (!rsyncV) {
  console.error('bench/scenarios: rsync is not installed (apt-get install rsync); it is the named peer of every row');
  process.exit(1);
}
const rows = opts.rows ? ROWS.filter((r) => opts.rows.includes(r.id)) : ROWS;
const unknownLink = opts.compute.find((l) => !(l in LINKS));
if (unknownLink) {
  console.error(`bench/scenarios: --compute ${unknownLink}: links are ${Object.keys(LINKS).join(', ')}`);
  process.exit(2);
}
if (rows.length === 0) {
  console.error(`bench/scenarios: --rows matched none of ${ROWS.map((r) => r.id).join(', ')}`);
  process.exit(2);
}

const log = (s) => console.error(s);
const memory = new RssSampler();
const dir = opts.dir ? (mkdirSync(opts.dir, { recursive: true }), mkdtempSync(join(opts.dir, 'scenarios-'))) : mkdtempSync(join(tmpdir(), 'vhdsync-scenarios-'));
const onSignal = async () => {
  await realLink?.close();
  rmSync(dir, { recursive: true, force: true });
  process.exit(130);
};
process.once('SIGINT', onSignal);
process.once('SIGTERM', onSignal);

const t0 = performance.now();
let realLink;
let realLinkSkipped = opts.realLink ? undefined : 'not asked (--no-real-link)';
try {
  log(`bench/scenarios: scale ${opts.scale} of ${FULL_SIZE_BYTES / 1e9} GB, images in ${dir}`);
  const bases = new Map();
  const disks = [];
  for (const vm of VMS) {
    const path = join(dir, `${vm.name}-base.vhd`);
    const g0 = performance.now();
    const made = await memory.during('generate', () => generateDisk(vm, opts.scale, path));
    made.seconds = (performance.now() - g0) / 1000;
    bases.set(vm.name, path);
    disks.push(made);
    log(`  ${vm.name} (${vm.role}): ${(made.virtualSize / 1e6).toFixed(0)} MB virtual, ${(made.dataBytes / 1e6).toFixed(0)} MB of data, ${(made.allocatedBytes / 1e6).toFixed(0)} MB allocated, made in ${made.seconds.toFixed(1)} s`);
  }
  const readRate = uncachedReadRate(bases.get(VMS[0].name));
  if (readRate) log(`  uncached read rate of this disk: ${(readRate.bytesPerSecond / 1e6).toFixed(0)} MB/s (${readRate.method})`);
  else log('  uncached read rate: O_DIRECT unsupported here; the 80 GB scan is scaled from the warm run only');

  if (opts.realLink) {
    const opened = await RealLink.open({ dir, log });
    realLink = opened.link;
    realLinkSkipped = opened.skipped;
    log(realLink ? '  real shaped link: network namespace + veth, tbf rate on both ends, one-way delay by a relay (no netem here)' : `  real shaped link skipped: ${realLinkSkipped}`);
  }
  const ctx = {
    dir, scale: opts.scale, bases, vms: VMS, writeRate: WRITE_RATE, maxLinkSeconds: opts.maxLinkSeconds, computeLinks: new Set(opts.compute),
    verify: opts.verify, rsyncZ: opts.rsyncZ, memory, log, peerCache: new Map(), realLink,
  };
  const fixed = await fixedCosts(ctx, [...new Set(rows.map((r) => LINKS[r.link].latencyMs))]);
  log(`  fixed cost per run: ours ${Object.entries(fixed.ours).map(([l, t]) => `${t.toFixed(3)} s at ${l} ms`).join(', ')}; rsync ${fixed.rsync.toFixed(3)} s; rsync -z ${fixed.rsyncZ.toFixed(3)} s`);
  const raw = [];
  for (const row of rows) raw.push(await runRow(ctx, row));
  const dirty = opts.dirtyExtents ? await dirtyExtentRows(ctx, { fixed, readRate }) : undefined;
  memory.stop();

  const report = summarize({
    raw, scale: opts.scale, disks, readRate, fixed, memory, rsync: rsyncV, writeRate: WRITE_RATE, maxLinkSeconds: opts.maxLinkSeconds,
    verify: opts.verify, realLink: realLink ? { kind: 'netns + veth + tbf, delay by a userspace relay' } : { skipped: realLinkSkipped }, machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, totalMemory: totalmem(), node: process.version },
    wallSeconds: (performance.now() - t0) / 1000,
  });
  if (dirty) report.dirtyExtents = dirty;
  emit(report);
} finally {
  await realLink?.close();
  rmSync(dir, { recursive: true, force: true });
}
