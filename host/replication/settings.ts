import { VhdsyncError } from '../errors.js';
import { DEFAULTS, FREQUENCIES, MAX_SCHEDULE_AHEAD_MS } from './names.js';

/** A VM's replication settings, named as Set-VMReplication names them. */
export interface ReplicationSettings {
  ReplicationFrequencySec: number;
  AutoResynchronizeEnabled: boolean;
  /** TimeSpan "HH:MM:SS", local time. The window may wrap midnight (the default 18:30–06:00 does). */
  AutoResynchronizeIntervalStart: string;
  AutoResynchronizeIntervalEnd: string;
  PauseResynchronizeOutsideWindow: boolean;
  /** Hourly recovery points besides the latest, 0–24 (records written before it existed lack it: 0). */
  RecoveryHistory?: number;
}

export function defaultSettings(): ReplicationSettings {
  return { ...DEFAULTS };
}

export function parseFrequency(text: string | number): number {
  const n = typeof text === 'number' ? text : Number(String(text).trim());
  if (!(FREQUENCIES as readonly number[]).includes(n)) {
    throw new VhdsyncError('USAGE', `--frequency: '${text}' is not a replication frequency; use 30, 300 or 900 seconds`);
  }
  return n;
}

export function parseBool(text: string | boolean, what: string): boolean {
  if (typeof text === 'boolean') return text;
  const t = text.trim().toLowerCase();
  if (t === '1' || t === 'true' || t === '$true' || t === 'yes' || t === 'on') return true;
  if (t === '0' || t === 'false' || t === '$false' || t === 'no' || t === 'off') return false;
  throw new VhdsyncError('USAGE', `${what}: '${text}' is not a boolean; use 0 or 1`);
}

/** A time of day as a TimeSpan ("18:30:00"; "18:30" is accepted). Returns the canonical HH:MM:SS form. */
export function parseTimeSpan(text: string, what: string): string {
  const m = /^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$/.exec(text);
  if (!m || Number(m[1]) > 23 || Number(m[2]) > 59 || Number(m[3] ?? 0) > 59) {
    throw new VhdsyncError('USAGE', `${what}: '${text}' is not a time of day; use HH:MM:SS between 00:00:00 and 23:59:59`);
  }
  return `${m[1].padStart(2, '0')}:${m[2]}:${(m[3] ?? '00').padStart(2, '0')}`;
}

/** Seconds since midnight of a canonical TimeSpan. */
export function timeSpanSeconds(span: string): number {
  const [h, m, s] = span.split(':').map(Number);
  return h * 3600 + m * 60 + s;
}

/**
 * `-ResynchronizeStartTime` / `-InitialReplicationStartTime`: a date and time, local time unless a zone
 * is given — ISO 8601 ("2024-08-01 05:00"), or PowerShell's en-US form as the Hyper-V docs write it
 * ("04/15/2013 12:00:00", "8/1/2012 05:00 AM") — in the future and at most 7 days ahead (Hyper-V's limit).
 */
export function parseStartTime(text: string, now: Date, what = '--resynchronize-start-time'): Date {
  const t = text.trim();
  const iso = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?$/.exec(t);
  const us = /^(\d{1,2})\/(\d{1,2})\/(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s*([AaPp])[Mm])?)?$/.exec(t);
  let date: Date;
  if (iso) date = new Date(+iso[1], +iso[2] - 1, +iso[3], +iso[4], +iso[5], +(iso[6] ?? 0));
  else if (us) {
    let hour = +(us[4] ?? 0);
    const ampm = us[7]?.toLowerCase();
    if (ampm && (hour < 1 || hour > 12)) hour = NaN;
    else if (ampm === 'p' && hour < 12) hour += 12;
    else if (ampm === 'a' && hour === 12) hour = 0;
    const [month, day] = [+us[1], +us[2]];
    date = month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour <= 23 ? new Date(+us[3], month - 1, day, hour, +(us[5] ?? 0), +(us[6] ?? 0)) : new Date(NaN);
    if (date.getDate() !== day) date = new Date(NaN); // 02/30 does not roll over into March
  } else date = new Date(t);
  if (Number.isNaN(date.getTime())) {
    throw new VhdsyncError('USAGE', `${what}: '${text}' is not a date and time (examples: 2024-08-01 05:00, "08/01/2024 05:00:00")`);
  }
  if (date.getTime() < now.getTime() - 60_000) {
    throw new VhdsyncError('USAGE', `${what}: ${date.toISOString()} is in the past; give a time within the next 7 days, or leave it out to start now`);
  }
  if (date.getTime() > now.getTime() + MAX_SCHEDULE_AHEAD_MS) {
    throw new VhdsyncError('USAGE', `${what}: ${date.toISOString()} is more than 7 days ahead; Hyper-V allows at most 7 days`);
  }
  return date;
}

export interface SettingsChange {
  frequency?: string | number;
  autoResynchronizeEnabled?: string | boolean;
  autoResynchronizeIntervalStart?: string;
  autoResynchronizeIntervalEnd?: string;
  pauseResynchronizeOutsideWindow?: string | boolean;
  recoveryHistory?: string | number;
}

export function parseRecoveryHistory(text: string | number): number {
  const n = typeof text === 'number' ? text : Number(String(text).trim());
  if (!Number.isInteger(n) || n < 0 || n > 24) {
    throw new VhdsyncError('USAGE', `--recovery-history: '${text}' is not a number of recovery points; use 0 to 24 (0 keeps only the latest)`);
  }
  return n;
}

/** Validate every given value before anything changes; returns the new settings. */
export function applySettings(current: ReplicationSettings, change: SettingsChange): ReplicationSettings {
  const next = { ...current };
  if (change.frequency !== undefined) next.ReplicationFrequencySec = parseFrequency(change.frequency);
  if (change.autoResynchronizeEnabled !== undefined) next.AutoResynchronizeEnabled = parseBool(change.autoResynchronizeEnabled, '--auto-resynchronize-enabled');
  if (change.autoResynchronizeIntervalStart !== undefined) {
    next.AutoResynchronizeIntervalStart = parseTimeSpan(change.autoResynchronizeIntervalStart, '--auto-resynchronize-interval-start');
  }
  if (change.autoResynchronizeIntervalEnd !== undefined) {
    next.AutoResynchronizeIntervalEnd = parseTimeSpan(change.autoResynchronizeIntervalEnd, '--auto-resynchronize-interval-end');
  }
  if (change.pauseResynchronizeOutsideWindow !== undefined) {
    next.PauseResynchronizeOutsideWindow = parseBool(change.pauseResynchronizeOutsideWindow, '--pause-resynchronize-outside-window');
  }
  if (change.recoveryHistory !== undefined) next.RecoveryHistory = parseRecoveryHistory(change.recoveryHistory);
  return next;
}
