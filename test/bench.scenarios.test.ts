import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/temp-dir.js';
import { cliEnv } from './support/cli.js';

// A smoke run of the seed-scenario benchmark (bench/scenarios) at a tiny scale: three rows that take
// every path — a measured resync with guests writing through the tracker, a slow-link row whose time is
// computed, and an Online IR onto an empty replica. Speed is not asserted here (bench/README.md).

interface Run {
  wireBytes: number;
  trackedWritesApplied: number;
  identical?: boolean;
  guestWrites?: { writes: number; bytes: number };
}
interface Row {
  id: string;
  scenario: string;
  ours: { mode: string; wireBytes: number; libraryWireBytes: number; modeledTrackedBytes: number; seconds: number; at80: { wireBytes: number; seconds: number }; identical: boolean };
  hyperv: { bytes: number; seconds: number };
  rsync: { wireBytes: number; seconds: number; at80: { wireBytes: number } };
  copy: { wireBytes: number };
  targets: { what: string; value: number; met: boolean }[];
  perVm: { vm: string; local: Run; measured?: Run; computed?: { seconds: number }; peers: { rsync: { sent: number; received: number } } }[];
}

const ROWS = ['immediate@1gbps', 'offline@1.5mbps', 'ir@1gbps'];
let dir: string;
let cleanup: () => void;
let report: { scale: number; rows: Row[]; memory: { peakRssBytes: number; peakRssDuringResyncBytes: number }; formulas: Record<string, string> };
let status: number | null;
let stderr: string;

beforeAll(async () => {
  ({ dir, cleanup } = tempDir());
  const r = spawnSync(
    process.execPath,
    [join(ROOT, 'bench', 'scenarios', 'run.mjs'), '--scale', '1/4000', '--compute', '1.5mbps', '--no-rsync-z', '--no-real-link', '--rows', ROWS.join(','),
      '--json', join(dir, 'out.json'), '--markdown', join(dir, 'out.md'), '--svg', join(dir, 'out.svg'), '--dir', dir],
    { encoding: 'utf8', env: cliEnv({ home: join(dir, 'home') }) },
  );
  status = r.status;
  stderr = r.stderr;
  if (r.status === 0) report = JSON.parse(readFileSync(join(dir, 'out.json'), 'utf8'));
});
afterAll(() => cleanup());

describe('bench/scenarios (smoke, scale 1/4000)', () => {
  it('runs to the end and writes JSON, Markdown and an SVG chart', () => {
    expect(status, stderr).toBe(0);
    expect(report.scale).toBe(1 / 4000);
    expect(report.rows.map((r) => r.id)).toEqual(ROWS);
    expect(readFileSync(join(dir, 'out.md'), 'utf8')).toMatch(/\| Scenario \| Link \|/);
    const svg = readFileSync(join(dir, 'out.svg'), 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg.match(/<rect /g)!.length).toBeGreaterThanOrEqual(ROWS.length * 3);
    for (const k of ['oursComputed', 'oursAt80', 'peerAtLink', 'peerAt80']) expect(report.formulas[k]).toMatch(/T/);
  });

  it('reports for every row the bytes the library reported, all > 0', () => {
    for (const r of report.rows) {
      const runs = r.perVm.map((v) => v.measured ?? v.local);
      expect(r.ours.libraryWireBytes, r.id).toBe(runs.reduce((n, x) => n + x.wireBytes, 0));
      // The resync alone is the library's bytes less the replayed guest data (measured rows only).
      const replayed = r.perVm.reduce((n, v) => n + (v.measured?.guestWrites?.bytes ?? 0), 0);
      expect(r.ours.wireBytes, r.id).toBe(r.ours.libraryWireBytes - replayed);
      for (const x of runs) expect(x.wireBytes, r.id).toBeGreaterThan(0);
      expect(r.ours.wireBytes, r.id).toBeGreaterThan(0);
      expect(r.ours.seconds, r.id).toBeGreaterThan(0);
      expect(r.ours.at80.wireBytes, r.id).toBeCloseTo(r.ours.wireBytes * 4000, -2);
      expect(r.rsync.wireBytes, r.id).toBe(r.perVm.reduce((n, v) => n + v.peers.rsync.sent + v.peers.rsync.received, 0));
      expect(r.rsync.wireBytes, r.id).toBeGreaterThan(0);
      expect(r.copy.wireBytes, r.id).toBeGreaterThan(0);
      expect(r.hyperv.bytes, r.id).toBeGreaterThan(0);
      expect(r.targets.length, r.id).toBeGreaterThanOrEqual(2);
    }
  });

  it('leaves every replica equal to its primary, and replays every guest write it tracked', () => {
    for (const r of report.rows) {
      expect(r.ours.identical, r.id).toBe(true);
      for (const v of r.perVm) {
        expect(v.local.identical, `${r.id} ${v.vm}`).toBe(true);
        if (v.measured) {
          expect(v.measured.identical, `${r.id} ${v.vm}`).toBe(true);
          if (v.measured.guestWrites) expect(v.measured.trackedWritesApplied, `${r.id} ${v.vm}`).toBe(v.measured.guestWrites.writes);
        }
      }
    }
    const immediate = report.rows.find((r) => r.id === 'immediate@1gbps')!;
    expect(immediate.ours.mode).toBe('measured');
    expect(immediate.perVm.some((v) => (v.measured?.guestWrites?.writes ?? 0) > 0)).toBe(true);
  });

  it('computes the slow-link row it cannot afford to run, and says so', () => {
    const slow = report.rows.find((r) => r.id === 'offline@1.5mbps')!;
    expect(slow.ours.mode).toBe('computed');
    expect(slow.ours.modeledTrackedBytes).toBeGreaterThan(0);
    expect(slow.ours.libraryWireBytes + slow.ours.modeledTrackedBytes).toBeGreaterThan(slow.ours.wireBytes);
  });

  it('prints a peak memory figure', () => {
    expect(report.memory.peakRssDuringResyncBytes).toBeGreaterThan(0);
    expect(report.memory.peakRssBytes).toBeGreaterThanOrEqual(report.memory.peakRssDuringResyncBytes);
  });
});
