import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadTlsMaterial, type TlsMaterial } from '../../host/transport/tls-config.js';

/**
 * Certificates for the network tests, made with the openssl CLI by the recipe in README "Network (TLS)":
 * a CA, a server certificate for 127.0.0.1, a client certificate; plus a second, unrelated CA with a
 * client certificate of its own ("rogue") and an expired client certificate from the right CA.
 */
export interface TestCerts {
  dir: string;
  files: (name: 'server' | 'client' | 'rogue' | 'expired', ca?: 'ca' | 'other') => { cert: string; key: string; ca: string };
}

export async function makeCerts(dir: string): Promise<TestCerts> {
  await mkdir(dir, { recursive: true });
  const at = (f: string) => join(dir, f);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  for (const ca of ['ca', 'other']) {
    ssl('req', '-x509', ...ec, '-keyout', at(`${ca}.key`), '-out', at(`${ca}.crt`), '-days', '3650', '-subj', `/CN=test ${ca}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  }
  const leaf = async (name: string, ca: string, ext: string, days: string) => {
    await writeFile(at(`${name}.ext`), ext);
    ssl('req', ...ec, '-keyout', at(`${name}.key`), '-out', at(`${name}.csr`), '-subj', `/CN=${name}`);
    ssl('x509', '-req', '-in', at(`${name}.csr`), '-CA', at(`${ca}.crt`), '-CAkey', at(`${ca}.key`), '-CAcreateserial', '-days', days, '-extfile', at(`${name}.ext`), '-out', at(`${name}.crt`));
  };
  await leaf('server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n', '30');
  await leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n', '30');
  await leaf('rogue', 'other', 'extendedKeyUsage=clientAuth\n', '30');
  await leaf('expired', 'ca', 'extendedKeyUsage=clientAuth\n', '-1'); // notAfter already in the past
  return { dir, files: (name, ca = 'ca') => ({ cert: at(`${name}.crt`), key: at(`${name}.key`), ca: at(`${ca}.crt`) }) };
}

export async function material(certs: TestCerts, name: 'server' | 'client' | 'rogue', ca: 'ca' | 'other' = 'ca'): Promise<TlsMaterial> {
  return loadTlsMaterial(certs.files(name, ca));
}
