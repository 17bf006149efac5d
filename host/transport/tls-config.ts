import { readFile } from 'node:fs/promises';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import type { ConnectionOptions, TlsOptions } from 'node:tls';
import { VhdsyncError, ioError } from '../errors.js';

/**
 * Mutual TLS, as Hyper-V's certificate-based authentication: each side presents a certificate signed
 * by a CA the other trusts (`--ca`), and each side verifies the other against that CA alone — the
 * system's public roots are not trusted. Files are checked when loaded, so a wrong path, a key that
 * does not match its certificate or an expired certificate of our own is one clear line up front,
 * not an obscure handshake failure later.
 */
export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
}

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
  /** Subject of our certificate and of the CA, for messages and logs. */
  subject: string;
  caSubject: string;
}

export async function loadTlsMaterial(files: TlsFiles): Promise<TlsMaterial> {
  const [cert, key, ca] = await Promise.all([
    readPem(files.cert, '--cert'),
    readPem(files.key, '--key'),
    readPem(files.ca, '--ca'),
  ]);
  const own = parseCert(cert, `--cert ${files.cert}`);
  const authority = parseCert(ca, `--ca ${files.ca}`);
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(key);
  } catch {
    throw new VhdsyncError('USAGE', `--key ${files.key}: not a PEM private key (an encrypted key is not supported; decrypt it with openssl pkey)`);
  }
  if (!own.checkPrivateKey(keyObject)) throw new VhdsyncError('USAGE', `--key ${files.key} does not belong to --cert ${files.cert}`);
  const now = Date.now();
  if (Date.parse(own.validTo) < now) throw new VhdsyncError('USAGE', `--cert ${files.cert}: the certificate expired on ${own.validTo}; make a new one (see README "Network (TLS)")`);
  if (Date.parse(authority.validTo) < now) throw new VhdsyncError('USAGE', `--ca ${files.ca}: the CA certificate expired on ${authority.validTo}`);
  return { cert, key, ca, subject: oneLine(own.subject), caSubject: oneLine(authority.subject) };
}

/** Server side: a client without a certificate signed by our CA is refused during the handshake. */
export function serverTlsOptions(m: TlsMaterial): TlsOptions {
  return { cert: m.cert, key: m.key, ca: m.ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' };
}

/** Client side: the server must present a certificate signed by our CA and issued for `host`. */
export function clientTlsOptions(m: TlsMaterial, host: string, port: number): ConnectionOptions {
  return {
    host,
    port,
    cert: m.cert,
    key: m.key,
    ca: m.ca,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.2',
    // SNI carries host names only; the certificate check still covers IP addresses (subjectAltName IP).
    ...(isIP(host) ? {} : { servername: host }),
  };
}

/** One line for a failure to reach (LINK) or authenticate (AUTH) a peer (`peer`: "replica server 10.0.0.5:4000"). */
export function describeLinkError(e: unknown, peer: string, ourCa?: string): VhdsyncError {
  if (e instanceof VhdsyncError) return e;
  const err = e as NodeJS.ErrnoException & { reason?: string };
  const ca = ourCa ? ` (${ourCa})` : '';
  let code: 'LINK' | 'AUTH' = 'AUTH';
  const line = ((): string => {
    switch (err?.code) {
      case 'ECONNREFUSED':
        code = 'LINK';
        return `${peer}: connection refused (is 'vhdsync replica serve' listening there?)`;
      case 'ENOTFOUND':
      case 'EAI_AGAIN':
        code = 'LINK';
        return `${peer}: unknown host`;
      case 'ETIMEDOUT':
      case 'EHOSTUNREACH':
      case 'ENETUNREACH':
        code = 'LINK';
        return `${peer}: unreachable (${err.code})`;
      case 'ECONNRESET':
      case 'EPIPE':
        code = 'LINK';
        return `${peer}: the connection was reset`;
      case 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED':
      case 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE':
        return `${peer} requires a client certificate (--cert, --key)`;
      case 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA':
      case 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE':
      case 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED':
        return `${peer} refused our certificate (${err.code.replace(/^ERR_SSL_/, '').toLowerCase()})`;
      case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
      case 'UNABLE_TO_GET_ISSUER_CERT':
      case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
      case 'SELF_SIGNED_CERT_IN_CHAIN':
      case 'DEPTH_ZERO_SELF_SIGNED_CERT':
      case 'CERT_SIGNATURE_FAILURE':
        return `${peer}: its certificate is not signed by our --ca${ca}; refused`;
      case 'CERT_HAS_EXPIRED':
        return `${peer}: its certificate has expired; refused`;
      case 'CERT_NOT_YET_VALID':
        return `${peer}: its certificate is not valid yet (check the clocks); refused`;
      case 'ERR_TLS_CERT_ALTNAME_INVALID':
        return `${peer}: its certificate is not issued for this address (${err.reason ?? err.message}); refused`;
      case 'ERR_TLS_HANDSHAKE_TIMEOUT':
        code = 'LINK';
        return `${peer}: the TLS handshake timed out`;
      default:
        code = 'LINK';
        return `${peer}: ${err?.message ?? String(e)}`;
    }
  })();
  // AUTH: a certificate was refused, by either side; retrying will not help, unlike a lost link.
  return new VhdsyncError(code, line, { cause: e });
}

async function readPem(path: string, flag: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const io = ioError(path, e);
    throw new VhdsyncError(io.code === 'NOT_FOUND' ? 'NOT_FOUND' : 'USAGE', `${flag} ${io.message}`, { cause: e });
  }
}

function parseCert(pem: Buffer, what: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch {
    throw new VhdsyncError('USAGE', `${what}: not a PEM certificate`);
  }
}

function oneLine(subject: string): string {
  return subject.split('\n').filter(Boolean).join(', ');
}
