#!/usr/bin/env node
// Where a resync's time goes over the real shaped link (real-link.mjs), at two latencies: every frame
// the primary sends and receives, timed, the phases, and the round trips the primary waits for (a
// frame received after the primary had nothing left to send). rsync and rsync -z over the same link
// for the same pair beside it. Needs root, like the real link.
//
//   node bench/scenarios/trace-link.mjs [--vm sql1|fs1] [--scale 1/1000] [--row immediate] [--latencies 1,40] [--frames] [--json out.json]
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resync } from '../../dist/index.js';
import { connectReplica } from '../../dist/resync/connect.js';
import { decode } from '../../dist/transport/protocol.js';
import { VMS, churn, generateDisk } from './disks.mjs';
import { HYPERV } from './seed.mjs';
import { RealLink } from './real-link.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const scaleText = opt('scale', '1/1000');
const scale = scaleText.includes('/') ? 1 / Number(scaleText.split('/')[1]) : Number(scaleText);
const vm = VMS.find((v) => v.name === opt('vm', 'sql1'));
const rowKind = opt('row', 'immediate');
const latencies = opt('latencies', '1,40').split(',').map(Number);
const rate = Number(opt('rate', String(1e9 / 8)));
const showFrames = args.includes('--frames');
const jsonOut = opt('json');
const runs = Number(opt('runs', '3'));

const dir = mkdtempSync(join(tmpdir(), 'vhdsync-trace-'));
const log = (s) => console.error(s);
let link;
try {
  const base = join(dir, 'base.vhd');
  const primary = join(dir, 'primary.vhd');
  await generateDisk(vm, scale, base);
  copyFileSync(base, primary);
  const churned = await churn(vm, primary, (HYPERV[`${rowKind}@1gbps`].bytes * scale) / 2, 7);
  log(`trace-link: ${vm.name} at scale ${scaleText}, ${rowKind} churn ${(churned.distinctBytes / 1e3).toFixed(0)} kB distinct; link ${(rate * 8 / 1e6).toFixed(1)} Mbit/s`);
  const opened = await RealLink.open({ dir, log });
  if (!opened.link) throw new Error(`no real link: ${opened.skipped}`);
  link = opened.link;
  const out = [];
  for (const latencyMs of latencies) {
    await link.configure({ rate, latencyMs });
    const samples = [];
    for (let k = 0; k < runs; k++) {
      const staged = link.stage(base, 'trace.vhd');
      const trace = [];
      const t0 = performance.now();
      const at = () => performance.now() - t0;
      let connectMs;
      const connect = async (replica, o) => {
        const c0 = at();
        const conn = await connectReplica(replica, o);
        connectMs = at() - c0;
        trace.push({ t: at(), dir: 'mark', what: `connected (TCP + TLS + open) in ${connectMs.toFixed(1)} ms` });
        const l = conn.link;
        const send = l.send.bind(l);
        l.send = (frame) => {
          trace.push({ t: at(), dir: '→', what: describe(frame), bytes: frame.byteLength });
          return send(frame);
        };
        const onFrame = l.onFrame.bind(l);
        l.onFrame = (h) => onFrame((frame) => {
          trace.push({ t: at(), dir: '←', what: describe(frame), bytes: frame.byteLength });
          return h(frame);
        });
        return conn;
      };
      const res = await resync({ primary, replica: `tls://10.213.77.2:4001/vm/trace.vhd`, network: { tls: link.tls }, compress: true, compressForRate: rate, connect });
      const total = at();
      if (res.result !== 'completed') throw new Error(`resync ended ${res.result}`);
      rmSync(staged.vhdsync, { force: true });
      rmSync(staged.rsync, { force: true });
      samples.push({ total, connectMs, phases: res.phases, waits: roundTrips(trace, latencyMs), trace, wireBytes: res.wireBytes });
    }
    samples.sort((a, b) => a.total - b.total);
    const s = samples[Math.floor(samples.length / 2)];
    log(`\nlatency ${latencyMs} ms: ${s.total.toFixed(0)} ms (median of ${runs}: ${samples.map((x) => x.total.toFixed(0)).join(', ')}); connect ${s.connectMs.toFixed(0)} ms; phases ${JSON.stringify(Object.fromEntries(Object.entries(s.phases).map(([k, v]) => [k, Math.round(v * 1000)])))} ms; round trips waited for: ${s.waits.length}`);
    for (const w of s.waits) log(`   wait ${w.ms.toFixed(1).padStart(7)} ms  after ${w.after}  →  ${w.until}`);
    if (showFrames) for (const e of s.trace) log(`   ${e.t.toFixed(1).padStart(8)} ${e.dir} ${e.what}${e.bytes !== undefined ? ` (${e.bytes} B)` : ''}`);
    const peers = {};
    for (const [key, compress] of [['rsync', false], ['rsyncZ', true]]) {
      const xs = [];
      for (let k = 0; k < runs; k++) {
        const staged = link.stage(base, 'trace.vhd');
        xs.push(link.rsync(primary, 'trace.vhd', { compress }).seconds * 1000);
        rmSync(staged.vhdsync, { force: true });
        rmSync(staged.rsync, { force: true });
      }
      peers[key] = xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    }
    log(`   rsync ${peers.rsync.toFixed(0)} ms, rsync -z ${peers.rsyncZ.toFixed(0)} ms (median of ${runs})`);
    out.push({ latencyMs, ours: { ms: s.total, connectMs: s.connectMs, phases: s.phases, roundTrips: s.waits.length, wireBytes: s.wireBytes }, peers });
  }
  if (out.length >= 2) {
    const [a, b] = [out[0], out[out.length - 1]];
    const perRtt = (b.ours.ms - a.ours.ms) / (2 * (b.latencyMs - a.latencyMs));
    log(`\nlatency-bound round trips (Δtime / ΔRTT): ours ${perRtt.toFixed(1)}, rsync ${((b.peers.rsync - a.peers.rsync) / (2 * (b.latencyMs - a.latencyMs))).toFixed(1)}, rsync -z ${((b.peers.rsyncZ - a.peers.rsyncZ) / (2 * (b.latencyMs - a.latencyMs))).toFixed(1)}`);
  }
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(out, null, 2));
} finally {
  await link?.close();
  rmSync(dir, { recursive: true, force: true });
}

function describe(frame) {
  try {
    const m = decode(frame);
    return m.t === 'control' ? `control ${m.op}` : m.t === 'data' ? `data r${m.region} ${m.codec}` : m.t === 'want' ? `want r${m.region} l${m.level}` : m.t === 'roots' ? `roots ${m.first}+${m.digests.byteLength / 16}` : m.t;
  } catch {
    return `? ${frame[0]}`;
  }
}

/**
 * The waits on the primary's side: a frame received after at least half the round trip in which the
 * primary sent nothing and received nothing (it was waiting for the peer), from its last send.
 */
function roundTrips(trace, latencyMs) {
  const waits = [];
  let last;
  let lastSend;
  for (const e of trace) {
    if (e.dir === '→') lastSend = e;
    if (e.dir === '←' && last && e.t - last.t >= latencyMs && lastSend) waits.push({ ms: e.t - last.t, after: `${last.dir} ${last.what}`, until: e.what });
    if (e.dir !== 'mark') last = e;
  }
  return waits;
}
