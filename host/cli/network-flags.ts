import type { Command } from 'commander';
import { VhdsyncError } from '../errors.js';
import { parseRate } from '../transport/rate.js';
import { loadTlsMaterial, type TlsMaterial } from '../transport/tls-config.js';
import { bandwidthLimiter, parseBandwidthSchedule, type TokenBucket } from '../transport/token-bucket.js';

/** The flags every networked command shares (`resync` to a tls:// replica, `replica serve`). */
export interface NetworkFlags {
  cert?: string;
  key?: string;
  ca?: string;
  bandwidth?: string;
  bandwidthSchedule?: string;
}

export function addNetworkFlags(cmd: Command, bandwidthWhat: string): Command {
  return cmd
    .option('--cert <file>', 'this side\'s certificate (PEM), signed by a CA the other side trusts')
    .option('--key <file>', 'the private key of --cert (PEM, unencrypted)')
    .option('--ca <file>', 'the CA certificate (PEM) the other side\'s certificate must be signed by')
    .option('--bandwidth <rate>', `${bandwidthWhat}: 8mbps, 10MB/s, unlimited ...`)
    .option('--bandwidth-schedule <windows>', 'rates by local time, e.g. "08:00-18:00=2mbps,18:00-08:00=unlimited" (outside the windows: --bandwidth)');
}

export function anyNetworkFlag(f: NetworkFlags): string | undefined {
  if (f.cert !== undefined) return '--cert';
  if (f.key !== undefined) return '--key';
  if (f.ca !== undefined) return '--ca';
  if (f.bandwidth !== undefined) return '--bandwidth';
  if (f.bandwidthSchedule !== undefined) return '--bandwidth-schedule';
  return undefined;
}

/** Check the bandwidth flags and load the certificates: every mistake is one line before any connection. */
export async function networkFromFlags(f: NetworkFlags, who: string): Promise<{ tls: TlsMaterial; limiter?: TokenBucket }> {
  const missing = (['cert', 'key', 'ca'] as const).filter((k) => f[k] === undefined).map((k) => `--${k}`);
  if (missing.length > 0) throw new VhdsyncError('USAGE', `${who} needs ${missing.join(', ')} (mutual TLS; see README "Network (TLS)" to make certificates)`);
  const rate = f.bandwidth === undefined ? undefined : parseRate(f.bandwidth, '--bandwidth');
  const schedule = f.bandwidthSchedule === undefined ? undefined : parseBandwidthSchedule(f.bandwidthSchedule);
  const tls = await loadTlsMaterial({ cert: f.cert!, key: f.key!, ca: f.ca! });
  return { tls, limiter: bandwidthLimiter({ rate, schedule }) };
}
