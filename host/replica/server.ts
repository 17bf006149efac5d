import type { Socket } from 'node:net';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { asVhdsyncError, VhdsyncError } from '../errors.js';
import { refuseResyncSource } from '../resync-source.js';
import { connectReplica, dropReplicaThreadReady, keepReplicaThreadReady, type ReplicaConnection } from '../resync/connect.js';
import { MAX_FRAME_BYTES } from '../transport/link.js';
import { decode, encode, PROTOCOL_VERSION } from '../transport/protocol.js';
import { describeLinkError, serverTlsOptions, type TlsMaterial } from '../transport/tls-config.js';
import { TlsLink } from '../transport/tls-link.js';
import type { TokenBucket } from '../transport/token-bucket.js';
import { cancelLocked, cancelResync } from '../resync/resync.js';
import { lockFile, lockKey, type HeldLock } from '../writer-lock.js';
import { confineTarget } from './root.js';
import { checkCall, confineSite, serveSiteCall, SITE_FRAME_LIMIT, type ConfinedSite } from './site-calls.js';
import { describeReplicas } from './view.js';
import { SITE_NAME } from '../transport/replica-address.js';
import { realpath } from 'node:fs/promises';

/**
 * `vhdsync replica serve`: the replica site's end of the network (ARCHITECTURE.md "Network").
 *
 * A connection goes through gates in order, and none of them touches a disk until the last:
 *   0. admission — until it has sent 'open', a connection is "pending": pending connections are capped
 *      (MAX_PENDING, and MAX_PENDING_PER_ADDRESS from one address; past a cap the oldest one is
 *      dropped, so a flood only ever evicts itself and a fresh handshake gets through), and each has
 *      `openTimeoutMs` from its TCP accept — an absolute deadline that dribbled bytes do not extend.
 *      Pending connections never take the slots of sessions past 'open';
 *   1. mutual TLS — a client without a certificate signed by our CA is dropped in the handshake;
 *   2. 'open' within that deadline — one small frame (at most 64 KiB) with the protocol version and
 *      what the session is for; a wrong version, a malformed frame or silence ends the connection:
 *        {target: 'NAME/disk.vhd'}              a resync of that disk
 *        {target: 'NAME/disk.vhd', call: 'cancel'}  drop that disk's unfinished resync
 *        {site: {vm, vmId, disks}, call, args}  one operation of a VM's replica site (site-calls.ts)
 *        {call: "describe", target: NAME | null}  the replica side's view of one folder or all (view.ts)
 *   3. the disk or folder is confined to `--root` (root.ts, site-calls.ts);
 *   4. the queue — at most `maxActiveTransfers` run at once, and one at a time per disk (a client that
 *      reconnects waits for its old session to checkpoint and let go; a site session holds its folder
 *      and all its disks); waiting clients hear 'queued';
 *   5. 'opened' — a resync's replica endpoint runs in its own thread (as for a local resync,
 *      connect.ts) and the server relays frames between it and the client until either side closes;
 *      a call runs here and answers 'result' (or 'error').
 */
export interface ReplicaServerOptions {
  host: string;
  port: number;
  root: string;
  tls: TlsMaterial;
  /** Transfers served at once; more wait in a queue (Hyper-V's MaxActiveTransfers; default 3). */
  maxActiveTransfers?: number;
  /** Caps the bytes received from all clients together (`--bandwidth`, `--bandwidth-schedule`). */
  limiter?: TokenBucket;
  /** A client has this long to finish the TLS handshake and send 'open' (default 10 s). */
  openTimeoutMs?: number;
  /** See TlsLinkOptions.stallMs (default 60 s). */
  stallMs?: number;
  log?: (e: ServerEvent) => void;
}

export type ServerEvent =
  | { event: 'listening'; host: string; port: number; root: string }
  | { event: 'refused'; peer: string; reason: string; target?: string }
  /** Connections dropped before 'open' (deadline, caps), summed over a few seconds: one line, not a flood. */
  | { event: 'dropped'; connections: number; addresses: number; reason: string }
  | { event: 'queued'; peer: string; target: string; position: number }
  | { event: 'started'; peer: string; client: string; target: string; active: number }
  | { event: 'finished'; peer: string; target: string; outcome: string; seconds: number; bytesReceived: number; bytesSent: number };

/** Largest frame before 'opened': an 'open' message is a few hundred bytes. */
const OPEN_FRAME_LIMIT = 64 * 1024;
/** Clients allowed to wait in the queue; more are refused as busy. */
const MAX_QUEUED = 64;
/** Connections not yet past 'open' (TCP accepted, TLS handshake, waiting for 'open'): overall, per address. */
const MAX_PENDING = 128;
const MAX_PENDING_PER_ADDRESS = 16;
/** Sessions past 'open' beyond the active and queued ones (refused ones saying goodbye, cancels, calls). */
const SESSION_MARGIN = 64;
/** Dropped pending connections are logged as one summed line at most this often. */
const DROP_LOG_MS = 5000;

interface Pending {
  raw: Socket;
  address: string;
  timer: ReturnType<typeof setTimeout>;
  deadline: number;
}

interface Waiting {
  keys: string[];
  link: TlsLink;
  peer: string;
  start: () => void;
  position: number;
}

export class ReplicaServer {
  readonly maxActive: number;
  private readonly openTimeoutMs: number;
  private readonly server: Server;
  private readonly queue: Waiting[] = [];
  private readonly busyTargets = new Set<string>();
  private readonly sessions = new Set<Promise<void>>();
  private readonly links = new Set<TlsLink>();
  private active = 0;
  /** Most transfers that ran at once (for tests and logs). */
  peakActive = 0;
  /** Connections before 'open', oldest first (a Map keeps insertion order). */
  private readonly pending = new Map<Socket, Pending>();
  private readonly pendingByAddress = new Map<string, number>();
  private readonly droppedByUs = new WeakSet<Socket>();
  private dropped = { connections: 0, addresses: new Set<string>(), reasons: new Set<string>(), timer: undefined as ReturnType<typeof setTimeout> | undefined };

  private constructor(private readonly opts: ReplicaServerOptions) {
    this.maxActive = opts.maxActiveTransfers ?? 3;
    if (!Number.isInteger(this.maxActive) || this.maxActive < 1) throw new VhdsyncError('USAGE', `--max-active-transfers: '${opts.maxActiveTransfers}' must be a whole number of at least 1`);
    const openTimeoutMs = (this.openTimeoutMs = opts.openTimeoutMs ?? 10_000);
    this.server = createServer({ ...serverTlsOptions(opts.tls), handshakeTimeout: openTimeoutMs });
    // A backstop only: pending connections are capped below it (admit), sessions by the queue.
    this.server.maxConnections = MAX_PENDING + this.maxActive + MAX_QUEUED + SESSION_MARGIN;
    // The TLS socket of a refused client is gone before we hear of it: note its address on arrival.
    const peers = new WeakMap<object, string>();
    this.server.on('connection', (raw: Socket) => {
      peers.set(raw, `${raw.remoteAddress}:${raw.remotePort}`);
      raw.setNoDelay(true); // digest requests and replies are small and latency-bound
      this.admitConnection(raw, openTimeoutMs);
    });
    this.server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket & { _parent?: Socket }) => {
      // Node drops a client whose certificate fails verification; the reason is on the socket.
      // One we dropped ourselves (deadline, caps) is already counted.
      if (socket._parent && this.droppedByUs.has(socket._parent)) return void socket.destroy();
      const peer = (socket._parent && peers.get(socket._parent)) ?? 'unknown peer';
      this.log({ event: 'refused', peer, reason: socket.authorizationError ? String(socket.authorizationError) : (err.code ?? err.message) });
      socket.destroy(); // with a listener here, Node leaves that to us
    });
    this.server.on('secureConnection', (socket: TLSSocket) => this.accept(socket));
  }

  static async start(opts: ReplicaServerOptions): Promise<ReplicaServer> {
    const s = new ReplicaServer(opts);
    await new Promise<void>((resolve, reject) => {
      s.server.once('error', (e: NodeJS.ErrnoException) => {
        const why = e.code === 'EADDRINUSE' ? 'the address is already in use' : e.code === 'EADDRNOTAVAIL' ? 'no such local address' : e.code === 'EACCES' ? 'permission denied' : e.message;
        reject(new VhdsyncError('USAGE', `--listen ${opts.host}:${opts.port}: ${why}`, { cause: e }));
      });
      s.server.listen(opts.port, opts.host, () => resolve());
    });
    const { port } = s.address;
    // The first session's replica thread is up before it connects (connect.ts), and each session's next one.
    keepReplicaThreadReady();
    s.log({ event: 'listening', host: opts.host, port, root: opts.root });
    return s;
  }

  get address(): { host: string; port: number } {
    const a = this.server.address();
    return { host: this.opts.host, port: typeof a === 'object' && a ? a.port : this.opts.port };
  }

  /** Stop accepting, drop every client (their replicas keep their checkpoints), wait for the endpoints. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const p of [...this.pending.values()]) this.dropPending(p, 'the replica server is shutting down');
    if (this.dropped.timer) clearTimeout(this.dropped.timer);
    for (const link of this.links) link.destroy(new VhdsyncError('LINK', 'the replica server is shutting down'));
    await Promise.all(this.sessions);
    await dropReplicaThreadReady();
    await closed;
  }

  private log(e: ServerEvent): void {
    this.opts.log?.(e);
  }

  /** Gate 0: a new TCP connection is pending until 'open'; make room under the caps by dropping the oldest. */
  private admitConnection(raw: Socket, openTimeoutMs: number): void {
    const address = raw.remoteAddress ?? '?';
    if ((this.pendingByAddress.get(address) ?? 0) >= MAX_PENDING_PER_ADDRESS) {
      for (const p of this.pending.values()) {
        if (p.address !== address) continue;
        this.dropPending(p, `more than ${MAX_PENDING_PER_ADDRESS} connections from one address before 'open'`);
        break;
      }
    }
    if (this.pending.size >= MAX_PENDING) {
      this.dropPending(this.pending.values().next().value!, `more than ${MAX_PENDING} connections before 'open'`);
    }
    const p: Pending = {
      raw,
      address,
      deadline: performance.now() + openTimeoutMs,
      timer: setTimeout(() => this.dropPending(p, `no 'open' within ${openTimeoutMs / 1000} s of connecting`), openTimeoutMs),
    };
    this.pending.set(raw, p);
    this.pendingByAddress.set(address, (this.pendingByAddress.get(address) ?? 0) + 1);
    raw.once('close', () => this.forgetPending(raw));
  }

  /** The connection sent 'open': it is a session now, out of the pending caps and deadline. */
  private forgetPending(raw: Socket | undefined): void {
    const p = raw && this.pending.get(raw);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(raw);
    const n = (this.pendingByAddress.get(p.address) ?? 1) - 1;
    if (n > 0) this.pendingByAddress.set(p.address, n);
    else this.pendingByAddress.delete(p.address);
  }

  private dropPending(p: Pending, reason: string): void {
    this.forgetPending(p.raw);
    this.droppedByUs.add(p.raw);
    p.raw.destroy();
    const d = this.dropped;
    d.connections++;
    d.addresses.add(p.address);
    d.reasons.add(reason);
    d.timer ??= setTimeout(() => {
      this.log({ event: 'dropped', connections: d.connections, addresses: d.addresses.size, reason: [...d.reasons].join('; ') });
      this.dropped = { connections: 0, addresses: new Set(), reasons: new Set(), timer: undefined };
    }, DROP_LOG_MS);
    d.timer.unref();
  }

  private accept(socket: TLSSocket & { _parent?: Socket }): void {
    const raw = socket._parent;
    const pending = raw && this.pending.get(raw);
    if (!pending) {
      socket.destroy(); // dropped while its handshake finished
      return;
    }
    const left = Math.max(1, pending.deadline - performance.now());
    clearTimeout(pending.timer); // readOpen keeps the same deadline from here, and says so
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    if (!socket.authorized) {
      // rejectUnauthorized already does this; never rely on one check for the door.
      this.log({ event: 'refused', peer, reason: String(socket.authorizationError ?? 'not authorized') });
      socket.destroy();
      return;
    }
    const client = String(socket.getPeerCertificate().subject?.CN ?? '?');
    const link = new TlsLink(socket, {
      maxFrameBytes: OPEN_FRAME_LIMIT,
      stallMs: this.opts.stallMs,
      receiveLimiter: this.opts.limiter,
      describeError: (e) => describeLinkError(e, `client ${peer}`),
    });
    this.links.add(link);
    const session = this.serve(link, peer, client, { left, total: this.openTimeoutMs }, () => this.forgetPending(raw))
      .catch(() => {})
      .finally(() => {
        this.links.delete(link);
        this.sessions.delete(session);
      });
    this.sessions.add(session);
  }

  private async serve(link: TlsLink, peer: string, client: string, openTimeout: { left: number; total: number }, spokeOpen: () => void): Promise<void> {
    let target: string | undefined;
    let site: ConfinedSite | undefined;
    const refuse = async (e: unknown) => {
      const err = asVhdsyncError(e);
      this.log({ event: 'refused', peer, reason: err.message, target });
      await link.send(encode({ t: 'control', op: 'error', body: { code: err.code, message: err.message } })).catch(() => {});
      link.close();
    };
    // Gate 2: 'open', in time.
    let open: Record<string, unknown>;
    try {
      open = await readOpen(link, openTimeout);
      spokeOpen();
    } catch (e) {
      // A peer that says nothing or breaks the framing gets no answer; one that speaks badly gets a line.
      if (e instanceof VhdsyncError && e.code === 'LINK') {
        this.log({ event: 'refused', peer, reason: e.message });
        link.destroy(e);
      } else await refuse(e);
      return;
    }
    try {
      if (open.version !== PROTOCOL_VERSION) {
        throw new VhdsyncError('PROTOCOL', `protocol version ${String(open.version)} is not supported by this replica server (it speaks ${PROTOCOL_VERSION}); upgrade vhdsync on both sides`);
      }
      // Gate 3: under --root.
      if (open.site !== undefined) {
        checkCall(open.call);
        site = await confineSite(this.opts.root, open.site);
      } else if (open.call === 'describe') {
        // The replica side's view (get-replication --replica-server): read-only, one folder or all.
        if (open.target !== null && (typeof open.target !== 'string' || !SITE_NAME.test(open.target))) throw new VhdsyncError('USAGE', `replica folder '${String(open.target).slice(0, 80)}' is refused: not a folder name`);
      } else {
        if (open.call !== undefined && open.call !== 'cancel') throw new VhdsyncError('PROTOCOL', `protocol error: '${String(open.call).slice(0, 40)}' is not a call on a disk`);
        target = await confineTarget(this.opts.root, open.target);
      }
    } catch (e) {
      await refuse(e);
      return;
    }
    // Gate 4: the queue. Frames before 'opened' are a protocol violation.
    link.onFrame(() => link.destroy(new VhdsyncError('PROTOCOL', "protocol error: frame before 'opened'")));
    const name = site ? `${site.site.vmName} (${String(open.call)})` : open.call === 'cancel' || open.call === 'describe' ? `${String(open.target ?? '*')} (${open.call})` : String(open.target);
    // The queue is keyed by file identity: two names of one disk (a hard link) wait for each other.
    // A cancel does not queue behind the resync it cancels: it asks that session to stop (writer-lock.ts).
    const unqueued = open.call === 'cancel' || open.call === 'describe';
    const keys = unqueued ? [] : await identityKeys(site ? site.keys : [target!]);
    const admitted = unqueued ? true : await this.admit(link, peer, name, keys);
    if (admitted !== true) {
      this.log({ event: 'refused', peer, target: name, reason: admitted === false ? 'gone while queued' : 'busy' });
      return;
    }
    // Gate 5: serve until either side closes.
    const t0 = performance.now();
    let outcome = 'disconnected';
    let conn: ReplicaConnection | undefined;
    let lock: HeldLock | undefined;
    const served = { merging: false, cancelled: false };
    try {
      this.log({ event: 'started', peer, client, target: name, active: this.active });
      if (site) {
        link.maxFrameBytes = SITE_FRAME_LIMIT;
        outcome = await serveSiteCall(link, site.site, open.call, open.args, () => link.send(opened()));
      } else if (open.call === 'describe') {
        await link.send(opened());
        const value = await describeReplicas(await realpath(this.opts.root), (open.target as string | null) ?? undefined);
        await link.send(encode({ t: 'control', op: 'result', body: { value } }));
        link.close();
        outcome = `described ${value.length}`;
      } else if (open.call === 'cancel') {
        await link.send(opened());
        const value = await cancelResync(target!);
        await link.send(encode({ t: 'control', op: 'result', body: { value } }));
        link.close();
        outcome = value.cancelled ? 'cancelled' : 'nothing to cancel';
      } else {
        // One writer: this session holds the replica like a local resync would (a local `vhdsync resync`
        // or another server on this host is refused, and asked to stop by `resync --cancel`).
        lock = await lockFile(target!, { what: String(open.target) });
        await refuseResyncSource(target!, 'a resync onto it');
        lock.onStop(() => {
          if (served.merging) return { stopping: false, why: 'it is merging its overlay into the replica (the point of no return)' };
          served.cancelled = true;
          void link.send(encode({ t: 'control', op: 'error', body: { code: 'CANCELLED', message: `${String(open.target)}: the resync was cancelled on the replica server (resync --cancel); run it again to start over` } })).catch(() => {}).finally(() => link.close());
          return { stopping: true };
        });
        conn = await connectReplica(target!, { link: { rate: Infinity, latencyMs: 0 }, readyThread: true });
        outcome = await relay(link, conn, served, helloOf(open.hello));
      }
    } catch (e) {
      outcome = `error: ${(e as Error).message}`;
      await refuse(e);
    } finally {
      await conn?.close().catch(() => {});
      let told: string | undefined;
      if (lock && served.cancelled) {
        // The endpoint has checkpointed and let go of its files: remove the overlay under our lock.
        told = await cancelLocked(target!).then(() => 'cancelled', (e: Error) => ((outcome = `error: ${e.message}`), undefined));
        if (told) outcome = 'cancelled';
      }
      await lock?.release(told);
      if (open.call !== 'cancel') this.release(keys);
      this.log({ event: 'finished', peer, target: name, outcome, seconds: (performance.now() - t0) / 1000, bytesReceived: link.stats.bytesReceived, bytesSent: link.stats.bytesSent });
    }
  }

  /** Wait for a slot and for the disk to be free; resolves true when admitted, false if the client left. */
  private admit(link: TlsLink, peer: string, name: string, keys: string[]): Promise<boolean | 'busy'> {
    if (this.queue.length >= MAX_QUEUED) {
      void link.send(encode({ t: 'control', op: 'error', body: { code: 'BUSY', message: `the replica server is busy (${this.queue.length} transfers waiting); try again later` } })).catch(() => {});
      link.close();
      return Promise.resolve('busy');
    }
    return new Promise((resolve) => {
      const w: Waiting = { keys, link, peer, position: 0, start: () => resolve(true) };
      this.queue.push(w);
      link.onClose(() => {
        const i = this.queue.indexOf(w);
        if (i < 0) return;
        this.queue.splice(i, 1);
        resolve(false);
        this.pump();
      });
      this.pump();
      if (this.queue.includes(w)) this.log({ event: 'queued', peer, target: name, position: w.position });
    });
  }

  /** Start every waiting transfer that may start, in arrival order; tell the others where they stand. */
  private pump(): void {
    for (let i = 0; i < this.queue.length && this.active < this.maxActive; ) {
      const w = this.queue[i];
      if (w.keys.some((k) => this.busyTargets.has(k))) {
        i++;
        continue;
      }
      this.queue.splice(i, 1);
      for (const k of w.keys) this.busyTargets.add(k);
      this.active++;
      this.peakActive = Math.max(this.peakActive, this.active);
      w.start();
    }
    this.queue.forEach((w, i) => {
      if (w.position === i + 1) return;
      w.position = i + 1;
      void w.link.send(encode({ t: 'control', op: 'queued', body: { position: w.position } })).catch(() => {});
    });
  }

  private release(keys: string[]): void {
    for (const k of keys) this.busyTargets.delete(k);
    this.active--;
    this.pump();
  }
}

/** The first frame, which must be control 'open', within the time allowed. */
function readOpen(link: TlsLink, timeout: { left: number; total: number }): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new VhdsyncError('LINK', `no 'open' within ${timeout.total / 1000} s`)), timeout.left);
    link.onClose((e) => {
      clearTimeout(timer);
      reject(e ?? new VhdsyncError('LINK', "closed before 'open'"));
    });
    link.onFrame((frame) => {
      clearTimeout(timer);
      try {
        const m = decode(frame);
        if (m.t !== 'control' || m.op !== 'open') throw new VhdsyncError('PROTOCOL', `protocol error: expected 'open' first, got '${m.t === 'control' ? m.op : m.t}'`);
        resolve(m.body);
      } catch (e) {
        reject(e);
      }
    });
  });
}

/**
 * Relay frames between the client and the replica endpoint's thread until one side closes.
 * Resolves with how the session ended, as the endpoint said it (committed, paused, an error).
 */
function relay(link: TlsLink, conn: ReplicaConnection, served: { merging: boolean; cancelled: boolean }, hello: Record<string, unknown> | undefined): Promise<string> {
  return new Promise((resolve) => {
    let outcome = 'disconnected';
    link.maxFrameBytes = MAX_FRAME_BYTES;
    // Every frame is checked against the protocol's bounds (protocol.ts LIMITS) at the door: a
    // malformed one ends the session with an error frame, and never reaches the replica endpoint.
    link.onFrame((frame) => {
      // Once cancelled, nothing more reaches the replica; once 'merge' passed, a cancel is refused.
      if (served.cancelled) return;
      let m;
      try {
        m = decode(frame);
      } catch (e) {
        const err = e instanceof VhdsyncError ? e : new VhdsyncError('PROTOCOL', `protocol error: ${(e as Error).message}`);
        outcome = `error: ${err.message}`;
        link.onFrame(() => {});
        link.send(encode({ t: 'control', op: 'error', body: { code: err.code, message: err.message } })).catch(() => {});
        link.close();
        return;
      }
      if (m.t === 'control' && m.op === 'merge') served.merging = true;
      // The endpoint may have ended (and closed its side) with an error the client is about to hear.
      return conn.link.send(frame).catch(() => {});
    });
    conn.link.onFrame((frame) => {
      if (frame[0] === CONTROL_TYPE) {
        const m = decode(frame);
        if (m.t === 'control' && (m.op === 'committed' || m.op === 'paused')) outcome = m.op;
        if (m.t === 'control' && m.op === 'error') outcome = `error: ${String(m.body.message)}`;
      }
      link.send(frame).catch(() => {});
    });
    // Either side closing closes the other: the endpoint checkpoints when the client goes away.
    link.onClose(() => {
      conn.link.close();
      resolve(outcome);
    });
    conn.link.onClose(() => link.close());
    conn.failed.catch((e: unknown) => {
      // The endpoint's own failure keeps its code; a bug is INTERNAL, a system error IO (errors.ts).
      const err = asVhdsyncError(e);
      outcome = `error: ${err.message}`;
      link.send(encode({ t: 'control', op: 'error', body: { code: err.code, message: err.message } })).catch(() => {});
      link.close();
    });
    void link.send(opened(hello ? { hello: true } : {})).catch(() => {});
    // The client's hello came with 'open': the endpoint hears it first, as if it had been its own frame.
    if (hello) void conn.link.send(encode({ t: 'control', op: 'hello', body: hello })).catch(() => {});
  });
}

/** The resync's hello carried in 'open' (protocol.ts), as a control body: an object, without an op of its own. */
function helloOf(v: unknown): Record<string, unknown> | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const { op: _op, ...body } = v as Record<string, unknown>;
  return body;
}

/** Queue keys: a file's identity (dev:ino) where it exists, else its path. */
async function identityKeys(paths: string[]): Promise<string[]> {
  return Promise.all(paths.map((p) => lockKey(p).catch(() => `path:${p}`)));
}

function opened(extra: Record<string, unknown> = {}): Uint8Array {
  return encode({ t: 'control', op: 'opened', body: { version: PROTOCOL_VERSION, ...extra } });
}

const CONTROL_TYPE = encode({ t: 'control', op: '', body: {} })[0];
