import { connect, type TLSSocket } from 'node:tls';
import { VhdsyncError, errorCode } from '../errors.js';
import { decode, encode, PROTOCOL_VERSION } from './protocol.js';
import type { ReplicaAddress } from './replica-address.js';
import { clientTlsOptions, describeLinkError, type TlsMaterial } from './tls-config.js';
import { TlsLink } from './tls-link.js';
import type { TokenBucket } from './token-bucket.js';

/**
 * How a primary reaches a replica server: TCP, mutual TLS, then the 'open' exchange that names the
 * replica disk (protocol.ts). The returned link is ready for the resync handshake (hello ...).
 */
export interface DialOptions {
  tls: TlsMaterial;
  /** Paces what the primary sends (`--bandwidth`, `--bandwidth-schedule`). */
  limiter?: TokenBucket;
  /** See TlsLinkOptions.stallMs. */
  stallMs?: number;
  /** Give up connecting (TCP + TLS) after this long (default 15 s). */
  connectTimeoutMs?: number;
  /** The server is at --max-active-transfers; we wait in its queue at this position. */
  onQueued?: (position: number) => void;
  /** Tests only: speak another protocol version. */
  version?: number;
}

/**
 * What a session asks for in 'open' (protocol.ts), besides the version: by default a resync of the
 * disk `address.target`; or a call on a disk (`{target, call: 'cancel'}`) or on a VM's replica site
 * (`{site, call, args}`).
 */
export type OpenRequest = Record<string, unknown>;

export async function dialReplicaServer(address: ReplicaAddress, opts: DialOptions, request: OpenRequest = { target: address.target }): Promise<TlsLink> {
  return (await openReplicaSession(address, opts, request)).link;
}

/**
 * As dialReplicaServer, and what the server said in 'opened': `{hello: true}` when it took the resync's
 * hello from 'open' (the request's `hello`) and its 'welcome' follows without being asked. Frames that
 * follow 'opened' are kept for the link's next handler.
 */
export async function openReplicaSession(address: ReplicaAddress, opts: DialOptions, request: OpenRequest): Promise<{ link: TlsLink; opened: Record<string, unknown> }> {
  const peer = `replica server ${address.display}`;
  const socket = await handshake(address, opts, peer);
  const link = new TlsLink(socket, {
    stallMs: opts.stallMs,
    sendLimiter: opts.limiter,
    describeError: (e) => describeLinkError(e, peer, opts.tls.caSubject),
  });
  try {
    return { link, opened: await openTarget(link, address, opts, peer, request) };
  } catch (e) {
    link.destroy();
    throw e;
  }
}

function handshake(address: ReplicaAddress, opts: DialOptions, peer: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect(clientTlsOptions(opts.tls, address.host, address.port));
    const timer = setTimeout(() => socket.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })), opts.connectTimeoutMs ?? 15_000);
    const fail = (e: Error) => {
      clearTimeout(timer);
      reject(describeLinkError(e, peer, opts.tls.caSubject));
    };
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.off('error', fail);
      resolve(socket);
    });
  });
}

/** Send 'open', wait through 'queued' notices for 'opened' (or the server's error). */
function openTarget(link: TlsLink, address: ReplicaAddress, opts: DialOptions, peer: string, request: OpenRequest): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    link.onFrame((frame) => {
      let m;
      try {
        m = decode(frame);
      } catch (e) {
        reject(e);
        return;
      }
      if (m.t !== 'control') return reject(new VhdsyncError('PROTOCOL', `protocol error: ${peer} sent '${m.t}' before 'opened'`));
      if (m.op === 'queued') return opts.onQueued?.(Number(m.body.position));
      if (m.op === 'error') return reject(new VhdsyncError(errorCode(m.body.code, 'LINK'), `${peer}: ${String(m.body.message)}`));
      if (m.op !== 'opened') return reject(new VhdsyncError('PROTOCOL', `protocol error: ${peer} sent '${m.op}' before 'opened'`));
      if (m.body.version !== PROTOCOL_VERSION) {
        return reject(new VhdsyncError('PROTOCOL', `${peer} speaks protocol version ${String(m.body.version)}; this vhdsync speaks ${PROTOCOL_VERSION} — upgrade vhdsync on both sides`));
      }
      link.holdFrames();
      resolve(m.body);
    });
    link.onClose((e) => {
      // A server that does not trust our certificate drops us right after the handshake (TLS 1.3: the
      // client's handshake ends first), without a TLS alert — Node's server checks the certificate
      // after the handshake and just closes. A close before any answer is that refusal: AUTH, so
      // scripts tell it from a network fault and nothing retries it.
      const cause = (e as { cause?: { code?: string } } | undefined)?.cause;
      const silent = e === undefined || /was lost|was reset/.test(e.message) || cause?.code === 'ECONNRESET';
      if (!silent) return reject(e);
      reject(new VhdsyncError('AUTH', `${peer} closed the connection before opening ${address.target}; if this persists, it refuses a certificate it does not trust — check that --cert is signed by the server's CA and has not expired`, { cause: e }));
    });
    link.send(encode({ t: 'control', op: 'open', body: { ...request, version: opts.version ?? PROTOCOL_VERSION } })).catch(reject);
  });
}

/**
 * One call on a replica server (a disk's 'cancel', a replica site's operation): open with the request,
 * send what the call needs with `upload`, and wait for its 'result' (its value) or 'error' (thrown).
 */
export async function callReplicaServer(address: ReplicaAddress, opts: DialOptions, request: OpenRequest, upload?: (link: TlsLink) => Promise<void>): Promise<unknown> {
  const link = await dialReplicaServer(address, opts, request);
  const peer = `replica server ${address.display}`;
  const what = `${String(request.call)} of ${address.target}`;
  try {
    const reply = new Promise<unknown>((resolve, reject) => {
      link.onFrame((frame) => {
        try {
          const m = decode(frame);
          if (m.t === 'control' && m.op === 'result') return resolve(m.body.value);
          if (m.t === 'control' && m.op === 'error') return reject(new VhdsyncError(errorCode(m.body.code, 'LINK'), `${peer}: ${String(m.body.message)}`));
          reject(new VhdsyncError('PROTOCOL', `protocol error: ${peer} sent '${m.t === 'control' ? m.op : m.t}' instead of the result of ${what}`));
        } catch (e) {
          reject(e);
        }
      });
      link.onClose((e) => reject(e ?? new VhdsyncError('LINK', `${peer} closed the connection before answering ${what}`)));
    });
    reply.catch(() => {});
    if (upload) await Promise.race([upload(link), reply]);
    return await reply;
  } finally {
    link.close();
  }
}
