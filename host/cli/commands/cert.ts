import type { Command } from 'commander';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, writeFile, rm } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { VhdsyncError } from '../../errors.js';
import { printJson } from '../output.js';

interface CertFlags {
  out: string;
  serverNames: string;
  clients: string;
  days: string;
  json?: boolean;
}

/**
 * `vhdsync cert`: a private CA, a server certificate and client certificates for mutual TLS, made with
 * the openssl CLI — the same recipe as README "Network (TLS)". An existing CA in --out is reused, so
 * more clients can be added later. Keys are EC P-256, written 0600.
 */
export function register(program: Command): void {
  program
    .command('cert')
    .description('Make a CA, a replica server certificate and client certificates for mutual TLS (uses openssl)')
    .requiredOption('--out <dir>', 'directory for ca.crt/ca.key, server.crt/server.key and <client>.crt/<client>.key')
    .option('--server-names <names>', 'names and IP addresses the replica server is reached by (comma-separated)', 'localhost,127.0.0.1')
    .option('--clients <names>', 'client certificates to make (comma-separated)', 'primary')
    .option('--days <n>', 'validity of the server and client certificates', '825')
    .option('--json', 'print the files made as JSON')
    .action(async (flags: CertFlags) => {
      const days = Number(flags.days);
      if (!Number.isInteger(days) || days < 1) throw new VhdsyncError('USAGE', `--days: '${flags.days}' is not a whole number of days`);
      const names = list(flags.serverNames, '--server-names');
      const clients = list(flags.clients, '--clients');
      for (const c of clients) if (!/^[A-Za-z0-9._-]+$/.test(c) || c === 'ca' || c === 'server') throw new VhdsyncError('USAGE', `--clients: '${c}' is not a usable name (letters, digits, . _ -; not ca or server)`);
      await mkdir(flags.out, { recursive: true });
      const at = (f: string) => join(flags.out, f);
      const made: string[] = [];
      if (!existsSync(at('ca.crt')) || !existsSync(at('ca.key'))) {
        openssl(['req', '-x509', ...EC_KEY, '-keyout', at('ca.key'), '-out', at('ca.crt'), '-days', '3650', '-subj', '/CN=vhdsync CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
        await chmod(at('ca.key'), 0o600);
        made.push(at('ca.crt'), at('ca.key'));
      }
      const san = names.map((n) => (isIP(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
      await issue(at, 'server', names[0], `subjectAltName=${san}\nextendedKeyUsage=serverAuth\n`, days);
      made.push(at('server.crt'), at('server.key'));
      for (const c of clients) {
        await issue(at, c, c, 'extendedKeyUsage=clientAuth\n', days);
        made.push(at(`${c}.crt`), at(`${c}.key`));
      }
      if (flags.json) printJson({ files: made });
      else process.stdout.write(`Made ${made.join(', ')}\nReplica server: --cert ${at('server.crt')} --key ${at('server.key')} --ca ${at('ca.crt')}\nPrimary: --cert ${at(`${clients[0]}.crt`)} --key ${at(`${clients[0]}.key`)} --ca ${at('ca.crt')}\n`);
    });
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

async function issue(at: (f: string) => string, name: string, cn: string, ext: string, days: number): Promise<void> {
  const extFile = at(`${name}.ext`);
  await writeFile(extFile, ext);
  try {
    openssl(['req', ...EC_KEY, '-keyout', at(`${name}.key`), '-out', at(`${name}.csr`), '-subj', `/CN=${cn}`]);
    await chmod(at(`${name}.key`), 0o600);
    openssl(['x509', '-req', '-in', at(`${name}.csr`), '-CA', at('ca.crt'), '-CAkey', at('ca.key'), '-CAcreateserial', '-days', String(days), '-extfile', extFile, '-out', at(`${name}.crt`)]);
  } finally {
    await rm(extFile, { force: true });
    await rm(at(`${name}.csr`), { force: true });
  }
}

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw new VhdsyncError('NOT_FOUND', 'vhdsync cert needs the openssl command (apt-get install openssl)');
  if (r.status !== 0) throw new VhdsyncError('IO', `openssl ${args[0]} failed: ${r.stderr.trim().split('\n').pop()}`);
}

function list(text: string, flag: string): string[] {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new VhdsyncError('USAGE', `${flag}: give at least one name`);
  return items;
}
