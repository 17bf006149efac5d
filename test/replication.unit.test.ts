import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { CounterStore } from '../host/events/counters.js';
import { join } from 'node:path';
import { loadCore } from '../host/core/index.js';
import {
  appendRecords, buildHeader, createTrackingLog, newHeader, parseHeader, readTrackingLog, scanTrackingLog, sealTrackingLog, HEADER_BYTES,
} from '../host/tracking/log.js';
import { lockHolder, tryLock } from '../host/pid-lock.js';
import { parseFrequency, parseStartTime, parseTimeSpan, applySettings, defaultSettings } from '../host/replication/settings.js';
import { inWindow, nextWindowOpen, resyncDecision, retryDelayMs } from '../host/replication/schedule.js';
import { replicationHealth } from '../host/replication/health.js';
import { newRecord, type VmRecord } from '../host/replication/store.js';
import { DEFAULTS } from '../host/replication/names.js';
import { REPLICATION_STATES } from '../host/replica/states.js';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-repl-unit-'));
});
afterAll(() => cleanup());

/** Local time, so the window tests mean the same in every time zone. */
const at = (h: number, m = 0, day = 1) => new Date(2024, 0, day, h, m, 0);

function vmWith(over: Partial<VmRecord> = {}, settings: Partial<VmRecord['settings']> = {}): VmRecord {
  const vm = newRecord({ name: 'vm', vmId: '00000000-0000-0000-0000-000000000001', replica: '/r', disks: [], settings: { ...defaultSettings(), ...settings } }, at(12));
  return { ...vm, ...over };
}

describe('settings (Hyper-V names, values and limits)', () => {
  it('defaults are Hyper-V\'s: 300 s, automatic resync off, window 18:30:00–06:00:00', () => {
    expect(defaultSettings()).toEqual({
      ReplicationFrequencySec: 300,
      AutoResynchronizeEnabled: false,
      AutoResynchronizeIntervalStart: '18:30:00',
      AutoResynchronizeIntervalEnd: '06:00:00',
      PauseResynchronizeOutsideWindow: false,
    });
    expect(REPLICATION_STATES).toHaveLength(22);
    expect(REPLICATION_STATES[4]).toBe('Replicating');
  });

  it('accepts only 30, 300 and 900 seconds as a frequency', () => {
    expect([30, 300, 900].map((f) => parseFrequency(String(f)))).toEqual([30, 300, 900]);
    for (const bad of ['60', '0', 'fast', '300.5']) expect(() => parseFrequency(bad)).toThrow(/30, 300 or 900/);
  });

  it('reads TimeSpans and refuses impossible times', () => {
    expect(parseTimeSpan('18:30', 'x')).toBe('18:30:00');
    expect(parseTimeSpan('6:00:05', 'x')).toBe('06:00:05');
    for (const bad of ['24:00:00', '12:60', 'noon', '']) expect(() => parseTimeSpan(bad, '--start')).toThrow(/--start: .* not a time of day/);
  });

  it('a resync start time must be in the future and at most 7 days ahead', () => {
    const now = at(12);
    expect(parseStartTime('2024-01-03 05:00', now).getTime()).toBe(new Date(2024, 0, 3, 5, 0).getTime());
    expect(() => parseStartTime('2024-01-08 12:01', now)).toThrow(/more than 7 days ahead/);
    expect(() => parseStartTime('2023-12-31 05:00', now)).toThrow(/in the past/);
    expect(() => parseStartTime('someday', now)).toThrow(/not a date/);
  });

  it('a change with one bad value changes nothing', () => {
    const s = defaultSettings();
    expect(() => applySettings(s, { frequency: 30, autoResynchronizeIntervalStart: '25:00' })).toThrow();
    expect(s).toEqual(defaultSettings());
    expect(applySettings(s, { frequency: 30, autoResynchronizeEnabled: '1' })).toMatchObject({ ReplicationFrequencySec: 30, AutoResynchronizeEnabled: true });
  });
});

describe('scheduling, driven by a fake clock', () => {
  it('the default window 18:30–06:00 wraps midnight', () => {
    const w = (d: Date) => inWindow(d, DEFAULTS.AutoResynchronizeIntervalStart, DEFAULTS.AutoResynchronizeIntervalEnd);
    expect([w(at(18, 29)), w(at(18, 30)), w(at(23, 59)), w(at(0, 0)), w(at(5, 59)), w(at(6, 0)), w(at(12))]).toEqual([false, true, true, true, true, false, false]);
    expect(inWindow(at(3), '00:00:00', '23:59:59')).toBe(true); // the Hyper-V team's "any time"
    expect(nextWindowOpen(at(12), '18:30:00', '06:00:00')).toEqual(at(18, 30));
    expect(nextWindowOpen(at(19), '01:00:00', '02:00:00')).toEqual(at(1, 0, 2));
  });

  it('manual policy never starts a resync by itself', () => {
    const vm = vmWith({ state: 'WaitingForStartResynchronize' });
    expect(resyncDecision(vm, at(20), false)).toMatchObject({ action: 'wait' });
  });

  it('automatic policy starts only inside the start window, and says when it opens', () => {
    const vm = vmWith({ state: 'WaitingForStartResynchronize' }, { AutoResynchronizeEnabled: true });
    expect(resyncDecision(vm, at(14), false)).toEqual({ action: 'wait', until: at(18, 30), why: 'outside the start window 18:30:00–06:00:00' });
    expect(resyncDecision(vm, at(18, 30), false)).toEqual({ action: 'start', origin: 'automatic' });
    expect(resyncDecision(vm, at(2), false)).toEqual({ action: 'start', origin: 'automatic' });
  });

  it('a scheduled start time wins over the policy, and only once it has come', () => {
    const vm = vmWith({ state: 'WaitingForStartResynchronize', resynchronizeStartTime: at(9, 0, 2).toISOString() }, { AutoResynchronizeEnabled: true });
    expect(resyncDecision(vm, at(20), false)).toMatchObject({ action: 'wait', until: at(9, 0, 2) });
    expect(resyncDecision(vm, at(9, 0, 2), false)).toEqual({ action: 'start', origin: 'scheduled' });
  });

  it('beyond Hyper-V: an automatic resync pauses when its window closes and continues when it opens', () => {
    const resync = { reason: 'TrackingLogNotClosed' as const, evidence: '', requiredAt: '', disksDone: [], origin: 'automatic' as const };
    const running = vmWith({ state: 'Resynchronizing', resync }, { AutoResynchronizeEnabled: true, PauseResynchronizeOutsideWindow: true });
    expect(resyncDecision(running, at(23), true)).toMatchObject({ action: 'wait' });
    expect(resyncDecision(running, at(6, 0), true)).toEqual({ action: 'pause' });
    const paused = vmWith({ state: 'ResynchronizeSuspended', resync: { ...resync, pausedByWindow: true } }, { AutoResynchronizeEnabled: true, PauseResynchronizeOutsideWindow: true });
    expect(resyncDecision(paused, at(12), false)).toMatchObject({ action: 'wait', until: at(18, 30) });
    expect(resyncDecision(paused, at(18, 30), false)).toEqual({ action: 'continue' });
    // Without the option (Hyper-V), the window only gates the start.
    const plain = vmWith({ state: 'Resynchronizing', resync }, { AutoResynchronizeEnabled: true });
    expect(resyncDecision(plain, at(7), true)).toMatchObject({ action: 'wait' });
    // A resync whose process died is continued.
    expect(resyncDecision(plain, at(7), false)).toEqual({ action: 'continue' });
  });

  it('failed cycles are retried after 1, 2, 4, 8, 10 minutes, then every 30 minutes', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 20].map((a) => retryDelayMs(a) / 60_000)).toEqual([1, 2, 4, 8, 10, 30, 30, 30]);
  });
});

describe('health', () => {
  it('follows the state: Critical when resync is required, Warning while paused or not yet replicated, Normal when replicating', () => {
    const h = (over: Partial<VmRecord>) => replicationHealth(vmWith(over), at(12)).health;
    expect(h({ state: 'WaitingForStartResynchronize' })).toBe('Critical');
    expect(h({ state: 'Error' })).toBe('Critical');
    expect(h({ state: 'ReadyForInitialReplication' })).toBe('Warning');
    expect(h({ state: 'Suspended' })).toBe('Warning');
    expect(h({ state: 'Resynchronizing' })).toBe('Warning');
    expect(h({ state: 'Replicating', lastReplicationTime: at(11, 59).toISOString() })).toBe('Normal');
    expect(h({ state: 'Replicating', lastReplicationTime: at(10).toISOString() })).toBe('Warning');
    expect(h({ state: 'Replicating', retry: { attempt: 1, nextAt: at(12, 1).toISOString(), error: 'x' } })).toBe('Critical');
    expect(h({ state: 'Disabled' })).toBe('NotApplicable');
    const r = replicationHealth(vmWith({ state: 'WaitingForStartResynchronize' }), at(12));
    expect(r.details[0]).toBe('Resynchronization is required for the virtual machine vm. Resume replication to start resynchronization.');
  });

  it('more than 20 % missed cycles is Warning', () => {
    const vm = vmWith({ state: 'Replicating', lastReplicationTime: at(12).toISOString() });
    vm.statistics.successfulReplicationCount = 7;
    vm.statistics.missedReplicationCount = 3;
    expect(replicationHealth(vm, at(12)).health).toBe('Warning');
    vm.statistics.missedReplicationCount = 1;
    expect(replicationHealth(vm, at(12)).health).toBe('Normal');
  });
});

describe('tracking log format', () => {
  it('header round-trips VM id, disk id, sequence and writer; a flipped byte fails its CRC', () => {
    const h = { ...newHeader({ sequence: 42, diskIndex: 3 }), writerPid: 1234, vmId: new Uint8Array(16).fill(7), diskId: new Uint8Array(16).fill(9) };
    const b = buildHeader(h);
    expect(b.byteLength).toBe(HEADER_BYTES);
    expect(parseHeader(b, 'x')).toEqual(h);
    b[60] ^= 1;
    expect(() => parseHeader(b, 'x.log')).toThrow(/x\.log: tracking log header checksum is wrong/);
  });

  it('end-of-log stays 0 while open; sealing writes it; a torn tail is cut, never replayed', async () => {
    const p = join(dir, 'a.log');
    await createTrackingLog(p, { sequence: 5 });
    await appendRecords(p, [{ offset: 4096, data: new Uint8Array(100).fill(1) }, { offset: 0, data: new Uint8Array(10).fill(2) }]);
    expect((await readTrackingLog(p)).header.endOfLog).toBe(0);
    // A crash mid-append: half a record at the end.
    const fh = await open(p, 'a');
    await fh.write(new Uint8Array(15).fill(0x54));
    await fh.close();
    const open1 = await scanTrackingLog(p);
    expect(open1).toMatchObject({ records: 2, torn: true, dataBytes: 110 });
    const sealed = await sealTrackingLog(p);
    expect(sealed.endOfLog).toBe((await stat(p)).size);
    const r = await readTrackingLog(p);
    expect(r.records.map((x) => x.offset)).toEqual([4096, 0]);
    expect(r.torn).toBe(true);
  });

  it('a damaged record ends the log at that record', async () => {
    const p = join(dir, 'b.log');
    await createTrackingLog(p, { sequence: 1 });
    await appendRecords(p, [1, 2, 3].map((i) => ({ offset: i * 4096, data: new Uint8Array(64).fill(i) })));
    const bytes = new Uint8Array(await readFile(p));
    bytes[HEADER_BYTES + 84 + 30] ^= 0xff; // inside the second record's data
    await writeFile(p, bytes);
    const r = await readTrackingLog(p);
    expect(r.records.map((x) => x.offset)).toEqual([4096]);
    expect(r.torn).toBe(true);
  });
});

describe('named locks (pid-lock.ts over writer-lock.ts)', () => {
  it('a live holder is reported by pid; released, the name is free (no pid file to go stale)', async () => {
    const p = join(dir, 'x.lock');
    expect(await lockHolder(p)).toBeUndefined();
    const taken = await tryLock(p);
    expect('release' in taken).toBe(true);
    expect(await lockHolder(p)).toBe(process.pid);
    expect(await tryLock(p)).toEqual({ holder: process.pid });
    if ('release' in taken) await taken.release();
    expect(await lockHolder(p)).toBeUndefined();
  });
});

describe('counters', () => {
  it('four processes adding at once lose no count (the counters file is locked)', async () => {
    const file = join(dir, 'counters.json');
    const lib = pathToFileURL(join(ROOT, 'dist', 'events', 'counters.js')).href;
    const script = `const { CounterStore } = await import(${JSON.stringify(lib)}); const s = new CounterStore(${JSON.stringify(file)}); for (let i = 0; i < 25; i++) await s.add('vm', { 'Resynchronized Bytes': 1, 'Network Bytes Sent': 10 });`;
    const runs = Array.from({ length: 4 }, () => new Promise<number | null>((res) => spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'inherit' }).on('exit', res)));
    expect(await Promise.all(runs)).toEqual([0, 0, 0, 0]);
    expect(await new CounterStore(file).read()).toEqual({ vm: { 'Resynchronized Bytes': 100, 'Network Bytes Sent': 1000, 'Network Bytes Received': 0 } });
  });

  it('a damaged file is refused in one line, not read as zeros; the next add keeps it aside and counts from zero', async () => {
    const file = join(dir, 'damaged-counters.json');
    const store = new CounterStore(file);
    for (const [text, what] of [
      ['{"vm": {"Resynchronized Bytes": 5', 'not valid JSON'],
      ['[1, 2]', 'not an object of VMs'],
      ['{"vm": {"Resynchronized Bytes": "5"}}', "the counters of 'vm' are not counts"],
    ]) {
      await writeFile(file, text);
      await expect(store.read()).rejects.toMatchObject({ code: 'STATE', message: `${file}: the counters file is damaged (${what}); the next resync or replication cycle keeps it as ${file}.damaged and counts from zero again` });
    }
    expect(await store.add('vm', { 'Resynchronized Bytes': 7 })).toMatchObject({ 'Resynchronized Bytes': 7 });
    expect(await readFile(`${file}.damaged`, 'utf8')).toBe('{"vm": {"Resynchronized Bytes": "5"}}');
    expect(await store.read()).toEqual({ vm: { 'Resynchronized Bytes': 7, 'Network Bytes Sent': 0, 'Network Bytes Received': 0 } });
  });
});
