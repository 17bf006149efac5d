import { timeSpanSeconds } from './settings.js';
import type { VmRecord } from './store.js';

/**
 * When a resync may start, as pure functions of a VM's settings and the time (tests drive them with a
 * fake clock). Hyper-V semantics (reference §2.5): `ResynchronizeStartTime` starts it at that time;
 * otherwise `AutoResynchronizeEnabled` starts it inside the start window
 * [AutoResynchronizeIntervalStart, AutoResynchronizeIntervalEnd) in local time, which may wrap
 * midnight; otherwise only a person starts it. Beyond Hyper-V, `PauseResynchronizeOutsideWindow` also
 * pauses an automatic resync when the window closes and continues it when the window opens again.
 */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

function secondsOfDay(d: Date): number {
  return d.getHours() * 3600 + d.getMinutes() * 60 + d.getSeconds();
}

/** Is `now` (local time) inside the window? A window with start = end is open all day. */
export function inWindow(now: Date, start: string, end: string): boolean {
  const t = secondsOfDay(now);
  const s = timeSpanSeconds(start);
  const e = timeSpanSeconds(end);
  if (s === e) return true;
  return s < e ? t >= s && t < e : t >= s || t < e;
}

/** The next moment the window opens at or after `now` (now itself when it is open). */
export function nextWindowOpen(now: Date, start: string, end: string): Date {
  if (inWindow(now, start, end)) return now;
  const s = timeSpanSeconds(start);
  const open = new Date(now.getFullYear(), now.getMonth(), now.getDate(), Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60);
  if (open.getTime() <= now.getTime()) open.setDate(open.getDate() + 1);
  return open;
}

export type ResyncDecision =
  | { action: 'start'; origin: 'scheduled' | 'automatic' }
  | { action: 'continue' }
  | { action: 'pause' }
  | { action: 'wait'; until?: Date; why: string };

/** What the service does about a VM's resync at `now`. `running`: a live process runs its resync. */
export function resyncDecision(vm: Pick<VmRecord, 'state' | 'settings' | 'resynchronizeStartTime' | 'resync'>, now: Date, running: boolean): ResyncDecision {
  const s = vm.settings;
  const open = inWindow(now, s.AutoResynchronizeIntervalStart, s.AutoResynchronizeIntervalEnd);
  if (vm.state === 'WaitingForStartResynchronize') {
    if (vm.resynchronizeStartTime) {
      const at = new Date(vm.resynchronizeStartTime);
      return now.getTime() >= at.getTime() ? { action: 'start', origin: 'scheduled' } : { action: 'wait', until: at, why: `scheduled for ${at.toISOString()}` };
    }
    if (!s.AutoResynchronizeEnabled) return { action: 'wait', why: 'automatic resynchronization is off; resume replication with --resynchronize' };
    if (open) return { action: 'start', origin: 'automatic' };
    return {
      action: 'wait',
      until: nextWindowOpen(now, s.AutoResynchronizeIntervalStart, s.AutoResynchronizeIntervalEnd),
      why: `outside the start window ${s.AutoResynchronizeIntervalStart}–${s.AutoResynchronizeIntervalEnd}`,
    };
  }
  const automatic = vm.resync?.origin === 'automatic';
  if (vm.state === 'Resynchronizing') {
    if (automatic && s.PauseResynchronizeOutsideWindow && !open) return { action: 'pause' };
    if (!running) return { action: 'continue' }; // its process died: carry on from the checkpoint
    return { action: 'wait', why: 'resynchronizing' };
  }
  if (vm.state === 'ResynchronizeSuspended' && vm.resync?.pausedByWindow) {
    if (open) return { action: 'continue' };
    return { action: 'wait', until: nextWindowOpen(now, s.AutoResynchronizeIntervalStart, s.AutoResynchronizeIntervalEnd), why: 'paused until the start window opens' };
  }
  return { action: 'wait', why: vm.state };
}

/** Retry delays after failed replication cycles: 1, 2, 4, 8, 10 minutes, then every 30 minutes. */
export function retryDelayMs(attempt: number): number {
  const minutes = [1, 2, 4, 8, 10];
  return (attempt >= 1 && attempt <= minutes.length ? minutes[attempt - 1] : 30) * 60_000;
}
