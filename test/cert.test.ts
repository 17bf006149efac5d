/**
 * `vhdsync cert` with no openssl command on the PATH (as on Windows): @peculiar/x509 on WebCrypto
 * makes the same files, and they carry a real mutual-TLS handshake; openssl, where there is one,
 * verifies them; an existing CA made by openssl is reused.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { connect, createServer, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from './support/cli.js';
import { tempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-cert-')));
afterAll(() => cleanup());

/** PATH with node's own directory only: no openssl. */
const NO_OPENSSL = { PATH: dirname(process.execPath) };

/** A mutual-TLS handshake: the server requires a client certificate from the CA; both sides authorized. */
async function handshake(out: string, client: string): Promise<{ server: boolean; client: boolean; error?: string }> {
  const f = (n: string) => readFileSync(join(out, n));
  const srv = createServer({ cert: f('server.crt'), key: f('server.key'), ca: f('ca.crt'), requestCert: true, rejectUnauthorized: true });
  const serverSide = new Promise<boolean>((res) => srv.on('secureConnection', (s: TLSSocket) => (res(s.authorized), s.end('ok'))));
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
  const port = (srv.address() as { port: number }).port;
  try {
    return await new Promise((resolve) => {
      const s = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: f('ca.crt'), cert: f(`${client}.crt`), key: f(`${client}.key`) });
      s.on('error', (e) => resolve({ server: false, client: false, error: (e as NodeJS.ErrnoException).code }));
      s.on('data', async () => resolve({ server: await serverSide, client: s.authorized }));
    });
  } finally {
    srv.close();
  }
}

describe('vhdsync cert without openssl', () => {
  it('makes the CA, the server and client certificates and keys (0600), with openssl not on the PATH', () => {
    const out = join(dir, 'a');
    const r = cli(['cert', '--out', out, '--clients', 'primary,backup', '--server-names', 'localhost,127.0.0.1', '--json'], { home: join(dir, 'home'), env: NO_OPENSSL });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const names = ['ca.crt', 'ca.key', 'server.crt', 'server.key', 'primary.crt', 'primary.key', 'backup.crt', 'backup.key'];
    expect(JSON.parse(r.stdout).files).toEqual(names.map((n) => join(out, n)));
    for (const k of names.filter((n) => n.endsWith('.key'))) expect(statSync(join(out, k)).mode & 0o777).toBe(0o600);
  });

  it('the certificates carry a mutual-TLS handshake, both sides authorized', async () => {
    expect(await handshake(join(dir, 'a'), 'primary')).toEqual({ server: true, client: true });
    expect(await handshake(join(dir, 'a'), 'backup')).toEqual({ server: true, client: true });
  });

  it('openssl verifies them, with the names, key usages and validity asked for', () => {
    const out = join(dir, 'a');
    expect(execFileSync('openssl', ['verify', '-CAfile', join(out, 'ca.crt'), join(out, 'server.crt'), join(out, 'primary.crt')], { encoding: 'utf8' })).toBe(
      `${join(out, 'server.crt')}: OK\n${join(out, 'primary.crt')}: OK\n`,
    );
    const server = execFileSync('openssl', ['x509', '-in', join(out, 'server.crt'), '-noout', '-text'], { encoding: 'utf8' });
    expect(server).toMatch(/DNS:localhost, IP Address:127\.0\.0\.1/);
    expect(server).toMatch(/TLS Web Server Authentication/);
    expect(server).toMatch(/ASN1 OID: prime256v1/);
    const client = execFileSync('openssl', ['x509', '-in', join(out, 'primary.crt'), '-noout', '-text', '-subject'], { encoding: 'utf8' });
    expect(client).toMatch(/TLS Web Client Authentication/);
    expect(client).toMatch(/subject=CN ?= ?primary/);
    const ca = execFileSync('openssl', ['x509', '-in', join(out, 'ca.crt'), '-noout', '-text'], { encoding: 'utf8' });
    expect(ca).toMatch(/CA:TRUE/);
  });

  it('--days sets the validity of the issued certificates', () => {
    const out = join(dir, 'days');
    cli(['cert', '--out', out, '--days', '30'], { home: join(dir, 'home'), env: NO_OPENSSL });
    const end = execFileSync('openssl', ['x509', '-in', join(out, 'server.crt'), '-noout', '-enddate'], { encoding: 'utf8' }).replace('notAfter=', '');
    const days = (new Date(end).getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(29);
    expect(days).toBeLessThan(31);
  });

  it('reuses an existing CA made by openssl: the CA files stay, new certificates chain to it', async () => {
    const out = join(dir, 'openssl-ca');
    execFileSync('mkdir', ['-p', out]);
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(out, 'ca.key'), '-out', join(out, 'ca.crt'), '-days', '30', '-subj', '/CN=their CA'], { stdio: 'ignore' });
    const before = readFileSync(join(out, 'ca.crt'), 'utf8');
    const r = cli(['cert', '--out', out, '--clients', 'late', '--json'], { home: join(dir, 'home'), env: NO_OPENSSL });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).files).not.toContain(join(out, 'ca.crt'));
    expect(readFileSync(join(out, 'ca.crt'), 'utf8')).toBe(before);
    expect(await handshake(out, 'late')).toEqual({ server: true, client: true });
  });
});
