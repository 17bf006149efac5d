/** `vhdsync replica serve` as a child process, with certificates made by `vhdsync cert` (mutual TLS). */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { background, cli, stopChild, type Background, type CliAt } from './cli.js';

export interface CliCerts {
  dir: string;
  serverFlags(): string[];
  clientFlags(client?: string): string[];
}

/** `vhdsync cert --out dir`: a CA, a server certificate for `serverNames`, a client certificate for each of `clients`. */
export function cliCerts(dir: string, at: CliAt, opts: { clients?: string; serverNames?: string } = {}): CliCerts {
  const made = cli(['cert', '--out', dir, '--server-names', opts.serverNames ?? '127.0.0.1,localhost', '--clients', opts.clients ?? 'primary'], at);
  if (made.status !== 0) throw new Error(`vhdsync cert exited ${made.status}: ${made.stderr}`);
  const flags = (name: string) => ['--cert', join(dir, `${name}.crt`), '--key', join(dir, `${name}.key`), '--ca', join(dir, 'ca.crt')];
  return { dir, serverFlags: () => flags('server'), clientFlags: (client = 'primary') => flags(client) };
}

export interface ServedReplica extends Background {
  port: number;
  /** The JSON lines it has printed so far. */
  events(): Record<string, unknown>[];
  /** Stop it (SIGTERM unless told) and wait until it is gone (nothing when it already is). */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** `vhdsync replica serve --json ...args`; resolves with its port once it listens. */
export async function serveReplica(args: string[], at: CliAt): Promise<ServedReplica> {
  const bg = background(['replica', 'serve', '--json', ...args], at);
  // Whole lines only: the last one may still be arriving.
  const events = () =>
    bg
      .output()
      .stdout.split('\n')
      .slice(0, -1)
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  await bg.ready(() => events().some((e) => e.event === 'listening'));
  const port = events().find((e) => e.event === 'listening')!.port as number;
  const stop = (signal: NodeJS.Signals = 'SIGTERM') => stopChild(bg.child, signal);
  return { ...bg, port, events, stop };
}

/**
 * A replica server on 127.0.0.1 serving `root` (made when missing) with the certificates' server
 * identity, on a free port, or on `port` (a server killed by the test, back on the address its
 * primaries know); `extra` flags go before the certificates'.
 */
export async function replicaServer(certs: CliCerts, root: string, at: CliAt, opts: { port?: number; extra?: string[] } = {}): Promise<ServedReplica> {
  await mkdir(root, { recursive: true });
  return serveReplica(['--listen', `127.0.0.1:${opts.port ?? 0}`, '--root', root, ...(opts.extra ?? []), ...certs.serverFlags()], at);
}
