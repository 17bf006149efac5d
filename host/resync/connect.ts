import { Worker, type MessagePort } from 'node:worker_threads';
import { compiledModule, loadCoreSync } from '../core/index.js';
import { VhdsyncError, asVhdsyncError } from '../errors.js';
import type { Link } from '../transport/link.js';
import { createMemoryLink, MemoryLink, type LinkShape } from '../transport/memory-link.js';
import { isReplicaAddress, parseReplicaAddress } from '../transport/replica-address.js';
import type { DialOptions } from '../transport/tls-connect.js';
import { ReplicaEndpoint } from './replica.js';

/**
 * How the primary reaches the replica endpoint: a replica image on this machine, served by a
 * ReplicaEndpoint in its own thread over an in-memory link with a simulated rate and latency; or a
 * `tls://HOST:PORT/NAME/disk.vhd` address, served by `vhdsync replica serve` over mutual TLS. Every
 * connection has the same shape, so the resync does not care where the replica lives.
 */
export interface ReplicaConnection {
  link: Link;
  /** Rejects if the replica side dies outright (not for errors it reports over the link). */
  failed: Promise<never>;
  /** Close the link and wait for the replica side to finish its last writes. */
  close(): Promise<void>;
  /** The replica server took `hello` with 'open' (ConnectOptions.hello): its 'welcome' comes unasked. */
  helloSent?: boolean;
}

export interface ConnectOptions {
  /** The simulated link to a local replica. */
  link: LinkShape;
  /** Certificates and limits for a `tls://` replica. */
  network?: DialOptions;
  /** The disks' virtual size, to serve a small local replica in this thread (see REPLICA_THREAD_MIN_BYTES); absent: a thread. */
  virtualSize?: number;
  /**
   * The resync's 'hello', carried in a replica server's 'open' so the two need one round trip, not
   * two (protocol.ts); a server that does not take it (older) gets it as its own frame.
   */
  hello?: Record<string, unknown>;
  /** Serve a local replica on the thread kept ready (keepReplicaThreadReady), if there is one: a replica server's sessions. */
  readyThread?: boolean;
}

/**
 * A local replica at least this large gets its own thread. Starting one (an isolate, its modules)
 * costs ~50–100 ms on a 2-core machine, about what hashing 128 MiB on the replica's side costs, so
 * below this the parallel hashing does not pay for the thread (bench/fixed-cost.mjs: the 16 MiB
 * resync). VHDSYNC_REPLICA_THREAD=always|never overrides it (tests use it to cover both ways).
 */
export const REPLICA_THREAD_MIN_BYTES = 128 << 20;

function replicaThread(virtualSize: number | undefined): boolean {
  const force = process.env.VHDSYNC_REPLICA_THREAD;
  if (force === 'always' || force === 'never') return force === 'always';
  return virtualSize === undefined || virtualSize >= REPLICA_THREAD_MIN_BYTES;
}

const WORKER_URL = (() => {
  // Under the TypeScript sources (tests), run the compiled worker from dist/.
  const here = import.meta.url;
  const base = here.endsWith('.ts') ? here.replace(/\/host\/resync\/[^/]+\.ts$/, '/dist/resync/') : here;
  return new URL('./replica-worker.js', base);
})();

/**
 * A replica thread started ahead of its job (`keepReplicaThreadReady`): its isolate, modules and WASM
 * core are loaded by the time a session needs it, which saves that session ~50–80 ms before its
 * welcome. A replica server keeps one ready; it gets its job (link, replica) as its first message.
 */
let ready: { worker: Worker; alive: boolean } | undefined;

/** Start a replica thread now for the next local replica endpoint (a replica server calls this). */
export function keepReplicaThreadReady(): void {
  if (ready?.alive) return;
  const worker = new Worker(WORKER_URL, { workerData: { core: compiledModule(), waitForJob: true } });
  const spare = { worker, alive: true };
  worker.unref(); // idle, it keeps no process alive
  // Dead before it was used (out of memory, a broken install): the next session starts its own.
  worker.on('error', () => (spare.alive = false));
  worker.once('exit', () => (spare.alive = false));
  ready = spare;
}

/** End the thread kept ready (a replica server that closes). */
export async function dropReplicaThreadReady(): Promise<void> {
  const spare = ready;
  ready = undefined;
  if (spare?.alive) await spare.worker.terminate();
}

export async function connectReplica(replica: string, opts: ConnectOptions): Promise<ReplicaConnection> {
  if (isReplicaAddress(replica)) return connectReplicaServer(replica, opts);
  const { local, remotePort } = createMemoryLink(opts.link);
  if (!replicaThread(opts.virtualSize)) return connectInThread(replica, opts, local, remotePort);
  let worker: Worker;
  const spare = opts.readyThread && ready?.alive ? ready : undefined;
  if (spare) {
    ready = undefined;
    worker = spare.worker;
    worker.ref();
    worker.postMessage({ port: remotePort, shape: opts.link, replicaPath: replica }, [remotePort]);
    keepReplicaThreadReady(); // for the next session
  } else {
    worker = new Worker(WORKER_URL, {
      workerData: { port: remotePort, shape: opts.link, replicaPath: replica, core: compiledModule() },
      transferList: [remotePort],
    });
  }
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  const failed = new Promise<never>((_, reject) => {
    worker.once('error', (e) => reject(asVhdsyncError(e)));
  });
  failed.catch(() => {});
  return {
    link: local,
    failed,
    async close() {
      local.close();
      // The replica thread exits once it has closed its files; terminate it only if it hangs.
      const timer = setTimeout(() => void worker.terminate(), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** The replica endpoint in this thread, over the same in-memory link, with a core of its own (own memory). */
function connectInThread(replica: string, opts: ConnectOptions, local: Link, remotePort: MessagePort): ReplicaConnection {
  const running = new ReplicaEndpoint(new MemoryLink(remotePort, opts.link), replica, loadCoreSync()).run();
  const failed = running.then(
    () => new Promise<never>(() => {}),
    (e: unknown) => Promise.reject(asVhdsyncError(e)),
  );
  failed.catch(() => {});
  return {
    link: local,
    failed,
    async close() {
      local.close();
      await running.catch(() => {});
    },
  };
}

async function connectReplicaServer(replica: string, opts: ConnectOptions): Promise<ReplicaConnection> {
  const address = parseReplicaAddress(replica);
  if (!opts.network) throw new VhdsyncError('USAGE', `${replica}: a replica server needs --cert, --key and --ca`);
  // Loaded here: node:tls costs a local resync ~10–40 ms it has no use for.
  const { openReplicaSession } = await import('../transport/tls-connect.js');
  const { link, opened } = await openReplicaSession(address, opts.network, { target: address.target, ...(opts.hello ? { hello: opts.hello } : {}) });
  const closed = new Promise<void>((resolve) => link.onClose(() => resolve()));
  return {
    link,
    helloSent: opts.hello !== undefined && opened.hello === true,
    // The server's failures reach us over the link, or as the link breaking.
    failed: new Promise<never>(() => {}),
    async close() {
      link.close();
      await closed;
    },
  };
}
