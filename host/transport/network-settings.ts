import { resolve } from 'node:path';
import { VhdsyncError } from '../errors.js';
import type { Fields } from '../state-file.js';
import { parseRate } from './rate.js';
import { loadTlsMaterial, type TlsMaterial } from './tls-config.js';
import { bandwidthLimiter, parseBandwidthSchedule, type TokenBucket } from './token-bucket.js';

/**
 * The network settings of one side, as the user gives them (`--cert --key --ca --bandwidth
 * --bandwidth-schedule`) and as a replicated VM keeps them: file paths and rate texts. They are
 * loaded when a connection is made, so a renewed certificate is used without re-enabling anything.
 */
export interface NetworkSettings {
  cert?: string;
  key?: string;
  ca?: string;
  bandwidth?: string;
  bandwidthSchedule?: string;
}

/** Check the bandwidth texts and load the certificates: every mistake is one line before any connection. */
export async function loadNetwork(f: NetworkSettings, who: string): Promise<{ tls: TlsMaterial; limiter?: TokenBucket }> {
  const missing = (['cert', 'key', 'ca'] as const).filter((k) => f[k] === undefined).map((k) => `--${k}`);
  if (missing.length > 0) throw new VhdsyncError('USAGE', `${who} needs ${missing.join(', ')} (mutual TLS; see README "Network (TLS)" to make certificates)`);
  const rate = f.bandwidth === undefined ? undefined : parseRate(f.bandwidth, '--bandwidth');
  const schedule = f.bandwidthSchedule === undefined ? undefined : parseBandwidthSchedule(f.bandwidthSchedule);
  const tls = await loadTlsMaterial({ cert: f.cert!, key: f.key!, ca: f.ca! });
  return { tls, limiter: bandwidthLimiter({ rate, schedule }) };
}

const KEYS = ['cert', 'key', 'ca', 'bandwidth', 'bandwidthSchedule'] as const;

/**
 * The settings given (from CLI flags or an API call; other fields are ignored), as a VM keeps them:
 * only those set, certificate files as absolute paths.
 */
export function givenNetwork(f: NetworkSettings): NetworkSettings {
  const out: NetworkSettings = {};
  for (const k of KEYS) {
    const v = f[k];
    if (v !== undefined) out[k] = k === 'cert' || k === 'key' || k === 'ca' ? resolve(v) : v;
  }
  return out;
}

/** The first network setting given, for "applies only to a tls:// replica" messages. */
export function anyNetworkSetting(f: NetworkSettings): string | undefined {
  if (f.cert !== undefined) return '--cert';
  if (f.key !== undefined) return '--key';
  if (f.ca !== undefined) return '--ca';
  if (f.bandwidth !== undefined) return '--bandwidth';
  if (f.bandwidthSchedule !== undefined) return '--bandwidth-schedule';
  return undefined;
}

/** A record's `network` field (vm.json, extended.json), checked as it is read: every setting is a string when present. */
export function checkNetworkField(f: Fields, key = 'network'): void {
  f.optional(key, (k) => {
    const n = f.object(k);
    for (const setting of ['cert', 'key', 'ca', 'bandwidth', 'bandwidthSchedule']) n.optional(setting, (kk) => n.string(kk));
  });
}
