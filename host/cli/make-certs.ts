/**
 * The certificates of `vhdsync cert`, made with @peculiar/x509 on Node's WebCrypto: no openssl command
 * (Windows has none), the same certificates as the openssl recipe in README "Network (TLS)".
 */
import 'reflect-metadata'; // tsyringe, under @peculiar/x509, needs the Reflect metadata API
import { webcrypto } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import * as x509 from '@peculiar/x509';
import { VhdsyncError } from '../errors.js';

const crypto = webcrypto as unknown as Crypto;
x509.cryptoProvider.set(crypto);
const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
const DAY = 86_400_000;

export interface Issuer {
  cert: x509.X509Certificate;
  key: CryptoKey;
}

/** A positive 128-bit serial number, as hex (RFC 5280 4.1.2.2: at most 20 octets, unique per CA). */
function serial(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[0] &= 0x7f;
  return Buffer.from(b).toString('hex');
}

/** The CA: self-signed, 10 years, CA:TRUE and keyCertSign/cRLSign, both critical (as openssl's recipe). */
export async function makeCa(): Promise<Issuer> {
  const keys = (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: 'CN=vhdsync CA',
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3650 * DAY),
    signingAlgorithm: EC,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, key: keys.privateKey };
}

export async function loadCa(certPath: string, keyPath: string): Promise<Issuer> {
  const cert = new x509.X509Certificate(await readFile(certPath, 'utf8'));
  const pem = await readFile(keyPath, 'utf8');
  if (!/-----BEGIN PRIVATE KEY-----/.test(pem)) {
    throw new VhdsyncError('UNSUPPORTED', `${keyPath}: not a PKCS#8 private key ('BEGIN PRIVATE KEY'); convert it with: openssl pkcs8 -topk8 -nocrypt -in ${keyPath} -out ${keyPath}.p8`);
  }
  try {
    const key = await crypto.subtle.importKey('pkcs8', x509.PemConverter.decode(pem)[0], { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
    return { cert, key };
  } catch {
    throw new VhdsyncError('UNSUPPORTED', `${keyPath}: the existing CA key is not an EC P-256 key; move ca.crt and ca.key away to make a new CA`);
  }
}

export async function writeKey(path: string, key: CryptoKey): Promise<void> {
  await writeFile(path, x509.PemConverter.encode(await crypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY') + '\n', { mode: 0o600 });
  await chmod(path, 0o600);
}

export async function issue(at: (f: string) => string, ca: Issuer, name: string, cn: string, extensions: x509.Extension[], days: number): Promise<void> {
  const keys = (await crypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: new x509.Name([{ CN: [cn] }]).toString(),
    issuer: ca.cert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + days * DAY),
    signingAlgorithm: EC,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      ...extensions,
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey),
    ],
  });
  await writeKey(at(`${name}.key`), keys.privateKey);
  await writeFile(at(`${name}.crt`), cert.toString('pem') + '\n');
}

export function serverExtensions(names: { type: 'ip' | 'dns'; value: string }[]): x509.Extension[] {
  return [new x509.SubjectAlternativeNameExtension(names), new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])];
}

export function clientExtensions(): x509.Extension[] {
  return [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])];
}
