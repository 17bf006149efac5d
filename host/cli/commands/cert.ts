import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
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
 * @peculiar/x509 on Node's WebCrypto (no openssl command needed: Windows has none) — the certificates
 * README "Network (TLS)" makes with openssl. An existing CA in --out (ours or openssl's, EC P-256,
 * PKCS#8 key) is reused, so more clients can be added later. Keys are EC P-256, written 0600.
 */
export function register(program: Command): void {
  program
    .command('cert')
    .description('Make a CA, a replica server certificate and client certificates for mutual TLS (no openssl needed)')
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
      // Loaded here, not at registration: only `cert` pays for the X.509 library.
      const { makeCa, loadCa, issue, writeKey, serverExtensions, clientExtensions } = await import('../make-certs.js');
      const made: string[] = [];
      let ca;
      if (!existsSync(at('ca.crt')) || !existsSync(at('ca.key'))) {
        ca = await makeCa();
        await writeFile(at('ca.crt'), ca.cert.toString('pem') + '\n');
        await writeKey(at('ca.key'), ca.key);
        made.push(at('ca.crt'), at('ca.key'));
      } else {
        ca = await loadCa(at('ca.crt'), at('ca.key'));
      }
      await issue(at, ca, 'server', names[0], serverExtensions(names.map((n) => ({ type: isIP(n) ? ('ip' as const) : ('dns' as const), value: n }))), days);
      made.push(at('server.crt'), at('server.key'));
      for (const c of clients) {
        await issue(at, ca, c, c, clientExtensions(), days);
        made.push(at(`${c}.crt`), at(`${c}.key`));
      }
      if (flags.json) printJson({ files: made });
      else process.stdout.write(`Made ${made.join(', ')}\nReplica server: --cert ${at('server.crt')} --key ${at('server.key')} --ca ${at('ca.crt')}\nPrimary: --cert ${at(`${clients[0]}.crt`)} --key ${at(`${clients[0]}.key`)} --ca ${at('ca.crt')}\n`);
    });
}

function list(text: string, flag: string): string[] {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new VhdsyncError('USAGE', `${flag}: give at least one name`);
  return items;
}
