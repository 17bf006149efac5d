import { createHash, randomBytes } from 'node:crypto';
import { link, mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { VhdsyncError, ioError } from './errors.js';

/**
 * One writer, always (ARCHITECTURE.md): an exclusive lock between processes, keyed by the identity of the file
 * it protects (device + inode), so two names of one disk — a hard link, a symlink, `a/../b` — collide.
 *
 * Why a kernel object and not a lock file with a pid in it (or proper-lockfile): Node has no flock, and
 * a pid file is judged stale by asking whether "its" pid is alive, which is wrong after pid reuse, across
 * PID namespaces, and wrong in the other direction while a SIGKILLed writer's file lingers.
 * proper-lockfile refreshes an mtime and calls a lock stale after a timeout: it works across hosts on
 * shared storage, but a dead holder blocks everyone for the timeout, and a live holder paused longer than
 * the timeout (a stopped process, a swapped-out VM) loses its lock while it still writes.
 *
 * So on Linux the lock is an abstract unix socket named from the identity, `\0vhdsync-lock/<dev>:<ino>:<birth time>`:
 *   - bind() is exclusive in the kernel (EADDRINUSE for everyone else, this process included);
 *   - the kernel frees the name the instant the holder dies, however it dies: no stale state to judge;
 *   - nothing on disk, so a read-only or full file system does not stop a reader from locking;
 *   - the socket is also a control channel: a second process connects and asks the holder who it is
 *     (pid, host, since, command) or asks it to stop (`resync --cancel` on a running resync).
 * Its limits: it is per host (per network namespace), like every kernel lock on a local file; replicas
 * shared between hosts need the object store's conditional writes (ARCHITECTURE.md "Past one machine").
 *
 * Elsewhere (no abstract sockets: macOS, Windows), or with VHDSYNC_LOCK=file, the lock is a file created
 * with O_EXCL in a per-host folder, holding the owner's pid, boot id and process start time
 * (/proc/<pid>/stat field 22 where there is /proc): a lock is stale only when that exact process is gone,
 * so a recycled pid does not keep it alive. That mode has no control channel (a stop request is refused).
 */

export interface Holder {
  pid: number;
  host: string;
  /** ISO time the lock was taken. */
  since: string;
  /** The command line of the holder, shortened. */
  command: string;
  /** What the holder said it protects. */
  what: string;
}

/** What a holder answers to a stop request: it stops (and releases when done), or it says why not. */
export type StopAnswer = { stopping: true } | { stopping: false; why: string };

export interface HeldLock {
  readonly key: string;
  readonly since: string;
  /** Answer stop requests (`resync --cancel` while this process writes). Without a handler they are refused. */
  onStop(handler: ((reason: string) => StopAnswer) | undefined): void;
  /** Let go; `outcome` (e.g. 'cancelled') is told to whoever asked this holder to stop. */
  release(outcome?: string): Promise<void>;
}

export interface LockOptions {
  /** What the lock protects, in the messages (default: the path). */
  what?: string;
  /** Lock the name `sub` inside the directory `path` (keyed by the directory's identity) instead of the file itself. */
  sub?: string;
  /** Wait while another process holds it: true (forever), or at most this many milliseconds. Default: refuse at once. */
  wait?: boolean | number;
  /** Called once when the lock is found busy and we start waiting. */
  onWait?: (holder: Holder | undefined) => void;
}

const NAME_PREFIX = 'vhdsync-lock/';

function useSockets(): boolean {
  return process.platform === 'linux' && process.env.VHDSYNC_LOCK !== 'file';
}

/**
 * The identity of `path` (of the file itself after symlinks), optionally with a name inside that
 * directory: dev:ino, and the file's birth time where the file system records one, so that a file
 * created after a held one was deleted is not taken for it when it gets the same inode number.
 */
export async function lockKey(path: string, sub?: string): Promise<string> {
  let s;
  try {
    s = await stat(path, { bigint: true });
  } catch (e) {
    throw ioError(path, e);
  }
  const id = s.birthtimeNs > 0n ? `${s.dev}:${s.ino}:${s.birthtimeNs}` : `${s.dev}:${s.ino}`;
  return sub === undefined ? id : `${id}/${sub}`;
}

/** The kernel's limit on a unix socket name is 108 bytes: long names are hashed. */
function socketName(key: string): string {
  const name = NAME_PREFIX + key;
  return '\0' + (name.length <= 100 ? name : NAME_PREFIX + createHash('sha256').update(key).digest('hex').slice(0, 40));
}

function fallbackDir(): string {
  return join(tmpdir(), `vhdsync-locks-${process.getuid?.() ?? 'user'}`);
}

/** Where the file-mode lock for `key` lives (exported for tests). */
export function fallbackPath(key: string): string {
  return join(fallbackDir(), createHash('sha256').update(key).digest('hex').slice(0, 32) + '.lock');
}

function me(what: string, since: string): Holder {
  const argv = process.argv.slice(1).map((a, i) => (i === 0 ? basename(a) : a));
  let command = argv.join(' ');
  if (command.length > 160) command = command.slice(0, 157) + '...';
  return { pid: process.pid, host: hostname(), since, command, what };
}

/** One line naming the holder: "<what> is in use by process 1234 on host (since ..., vhdsync resync ...)". */
export function describeHolder(what: string, holder: Holder | undefined): string {
  if (!holder) return `${what} is in use by another process (it did not say which)`;
  const cmd = holder.command ? `, ${holder.command}` : '';
  return `${what} is in use by process ${holder.pid} on ${holder.host} (since ${holder.since}${cmd})`;
}

export function busyError(what: string, holder: Holder | undefined, hint = 'wait for it to finish, or run again with --wait'): VhdsyncError {
  return new VhdsyncError('BUSY', `${describeHolder(what, holder)}; ${hint}`);
}

// ---- Taking and releasing ----

/** Take the lock once: the held lock, or who holds it (undefined when the holder does not answer). */
export async function tryLockFile(path: string, opts: LockOptions = {}): Promise<HeldLock | { holder: Holder | undefined }> {
  const key = await lockKey(path, opts.sub);
  const what = opts.what ?? (opts.sub ? join(path, opts.sub) : path);
  const sockets = useSockets();
  const r = sockets ? await trySocket(key, what) : await tryFile(key, what);
  if (!('release' in r)) return r;
  // Processes of the two modes (VHDSYNC_LOCK=file beside the default) see each other: each takes its own
  // lock, then looks at the other's; of two at once, at least one sees the other and lets go.
  const other = sockets ? await liveFileHolder(key) : process.platform === 'linux' ? await socketHolder(key) : 'free';
  if (other === 'free') return r;
  await r.release();
  return { holder: other };
}

async function liveFileHolder(key: string): Promise<Holder | undefined | 'free'> {
  const h = await readFileHolder(fallbackPath(key));
  return h && h.pid !== 0 && (await fileHolderAlive(h)) ? h : 'free';
}

async function socketHolder(key: string): Promise<Holder | undefined | 'free'> {
  const r = await ask(key, { op: 'who' });
  return r === 'free' ? 'free' : (r?.holder as Holder | undefined);
}

/** Take the lock, refusing with one line naming the holder (BUSY), or waiting when asked to. */
export async function lockFile(path: string, opts: LockOptions = {}): Promise<HeldLock> {
  const what = opts.what ?? (opts.sub ? join(path, opts.sub) : path);
  const deadline = opts.wait === true ? Infinity : Date.now() + (typeof opts.wait === 'number' ? opts.wait : 0);
  let delay = 5;
  let told = false;
  for (;;) {
    const r = await tryLockFile(path, opts);
    if ('release' in r) return r;
    if (Date.now() >= deadline) throw busyError(what, r.holder);
    if (!told) {
      told = true;
      opts.onWait?.(r.holder);
    }
    await sleep(Math.min(delay, Math.max(0, deadline - Date.now())));
    delay = Math.min(delay * 2, 200);
  }
}

export async function withFileLock<T>(path: string, fn: (lock: HeldLock) => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const lock = await lockFile(path, opts);
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

/** Who holds the lock on `path` now (undefined when it is free). */
export async function lockHolderOf(path: string, sub?: string): Promise<Holder | undefined | 'free'> {
  const key = await lockKey(path, sub);
  // Either mode's holder (see tryLockFile).
  const bySocket = process.platform === 'linux' ? await socketHolder(key) : 'free';
  if (bySocket !== 'free') return bySocket;
  const h = await readFileHolder(fallbackPath(key));
  return h && (await fileHolderAlive(h)) ? h : 'free';
}

/**
 * Ask the holder of `path` to stop. Resolves `free` when nobody holds it, the holder's answer, and — when
 * it agreed — `released`, which settles once it has let go (its process exited or released the lock).
 */
export async function askToStop(path: string, reason: string, sub?: string): Promise<'free' | { holder: Holder | undefined; answer: StopAnswer; released?: Promise<string | undefined> }> {
  const key = await lockKey(path, sub);
  if (!useSockets()) {
    const h = await readFileHolder(fallbackPath(key));
    if (!h || !(await fileHolderAlive(h))) return 'free';
    return { holder: h, answer: { stopping: false, why: 'this system offers no way to ask it (file locks)' } };
  }
  return new Promise((resolvePromise) => {
    const sock = createConnection(socketName(key));
    let buf = '';
    let answered = false;
    let outcome: string | undefined;
    let releasedResolve!: (outcome: string | undefined) => void;
    const released = new Promise<string | undefined>((r) => (releasedResolve = r));
    sock.on('connect', () => sock.write(JSON.stringify({ op: 'stop', reason }) + '\n'));
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      if (answered) {
        // The holder's last word before it lets go: how the run it stopped ended.
        const last = parseLine(buf.slice(0, nl));
        if (typeof last?.outcome === 'string') outcome = last.outcome;
        buf = buf.slice(nl + 1);
        return;
      }
      answered = true;
      const msg = parseLine(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      const answer: StopAnswer = msg?.answer?.stopping === true ? { stopping: true } : { stopping: false, why: String(msg?.answer?.why ?? 'it did not say why') };
      if (answer.stopping) resolvePromise({ holder: msg?.holder, answer, released });
      else {
        sock.destroy();
        resolvePromise({ holder: msg?.holder, answer });
      }
    });
    // The holder closes every control connection when it lets go (or the kernel does when it dies).
    sock.on('close', () => {
      releasedResolve(outcome);
      if (!answered) resolvePromise('free');
    });
    sock.on('error', () => undefined);
  });
}

// ---- Abstract socket ----

async function trySocket(key: string, what: string): Promise<HeldLock | { holder: Holder | undefined }> {
  for (let attempt = 0; ; attempt++) {
    const since = new Date().toISOString();
    const server = createServer();
    const bound = await new Promise<true | NodeJS.ErrnoException>((res) => {
      server.once('error', (e: NodeJS.ErrnoException) => res(e));
      server.listen(socketName(key), () => res(true));
    });
    if (bound === true) return socketLock(server, key, what, since);
    if (bound.code !== 'EADDRINUSE') throw new VhdsyncError('IO', `${what}: could not take the lock (${bound.message})`, { cause: bound });
    const r = await ask(key, { op: 'who' });
    // Gone between our bind and our question: try again (a holder exiting right now).
    if (r === 'free' && attempt < 20) continue;
    return { holder: r === 'free' ? undefined : (r?.holder as Holder | undefined) };
  }
}

function socketLock(server: Server, key: string, what: string, since: string): HeldLock {
  const info = me(what, since);
  const clients = new Set<Socket>();
  const stopping = new Set<Socket>();
  let stopHandler: ((reason: string) => StopAnswer) | undefined;
  let released: Promise<void> | undefined;
  // A held lock must not keep a finished process alive; the kernel frees it at exit anyway.
  server.unref();
  server.on('connection', (sock) => {
    clients.add(sock);
    sock.unref();
    sock.on('close', () => clients.delete(sock));
    sock.on('error', () => undefined);
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      if (buf.length > 4096) return sock.destroy();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = parseLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (msg?.op === 'who') sock.end(JSON.stringify({ holder: info }) + '\n');
        else if (msg?.op === 'stop') {
          let answer: StopAnswer = { stopping: false, why: 'it cannot be stopped from outside' };
          try {
            if (stopHandler) answer = stopHandler(String(msg.reason ?? ''));
          } catch (e) {
            answer = { stopping: false, why: (e as Error).message };
          }
          sock.write(JSON.stringify({ holder: info, answer }) + '\n');
          // A refusal ends the conversation; an agreement keeps it open until we let go.
          if (!answer.stopping) sock.end();
          else stopping.add(sock);
        } else sock.destroy();
      }
    });
  });
  return {
    key,
    since,
    onStop: (h) => (stopHandler = h),
    release: (outcome) =>
      (released ??= new Promise<void>((res) => {
        // The name goes with the listening socket; connections still closing do not hold it (nor this process).
        server.close();
        setImmediate(res);
        for (const c of clients) {
          if (outcome !== undefined && stopping.has(c)) c.end(JSON.stringify({ outcome }) + '\n');
          else c.destroy();
        }
      })),
  };
}

/** One question to the holder: its answer, undefined when it does not answer in time, 'free' when nobody listens. */
function ask(key: string, msg: Record<string, unknown>, timeoutMs = 5000): Promise<Record<string, any> | undefined | 'free'> {
  return new Promise((res) => {
    const sock = createConnection(socketName(key));
    let buf = '';
    const done = (v: Record<string, any> | undefined | 'free') => {
      clearTimeout(timer);
      sock.destroy();
      res(v);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on('connect', () => sock.write(JSON.stringify(msg) + '\n'));
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl >= 0) done(parseLine(buf.slice(0, nl)));
    });
    sock.on('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED' || e.code === 'ENOENT' ? 'free' : undefined));
    sock.on('close', () => done(buf ? parseLine(buf) : undefined));
  });
}

function parseLine(line: string): Record<string, any> | undefined {
  try {
    const v = JSON.parse(line);
    return v && typeof v === 'object' ? v : undefined;
  } catch {
    return undefined;
  }
}

// ---- File fallback ----

interface FileHolder extends Holder {
  /** /proc/<pid>/stat start time (clock ticks since boot), or 0 where there is no /proc. */
  start: number;
  boot: string;
}

async function processStart(pid: number): Promise<number> {
  try {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return Number(fields[19]) || 0;
  } catch {
    return -1;
  }
}

async function bootId(): Promise<string> {
  return readFile('/proc/sys/kernel/random/boot_id', 'utf8').then((t) => t.trim(), () => '');
}

async function fileHolderAlive(h: FileHolder): Promise<boolean> {
  if (h.host !== hostname()) return true; // another host: we cannot judge it, so it holds
  if (h.boot && h.boot !== (await bootId())) return false; // written before a reboot
  const start = await processStart(h.pid);
  if (start >= 0) return h.start === 0 || start === h.start; // /proc: that exact process, not a recycled pid
  try {
    process.kill(h.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readFileHolder(path: string): Promise<FileHolder | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const v = parseLine(text);
  if (!v || !Number.isSafeInteger(v.pid)) return { pid: 0, host: hostname(), since: '', command: '', what: '', start: 0, boot: '' };
  return v as FileHolder;
}

async function tryFile(key: string, what: string): Promise<HeldLock | { holder: Holder | undefined }> {
  const path = fallbackPath(key);
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  for (let attempt = 0; attempt < 5; attempt++) {
    const since = new Date().toISOString();
    const h: FileHolder = { ...me(what, since), start: await processStart(process.pid), boot: await bootId() };
    try {
      // The content goes in a unique temp file first and is linked into place: never a half-written lock.
      const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}`;
      await writeFile(tmp, JSON.stringify({ ...h, key }) + '\n', { flag: 'wx' });
      try {
        await link(tmp, path);
      } finally {
        await unlink(tmp).catch(() => undefined);
      }
      return fileLock(path, key, since);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new VhdsyncError('IO', `${what}: could not take the lock (${(e as Error).message})`, { cause: e });
    }
    const owner = await readFileHolder(path);
    if (!owner) continue;
    if (owner.pid === 0) {
      const age = await stat(path).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (age < 5000) return { holder: undefined };
    } else if (await fileHolderAlive(owner)) return { holder: owner };
    // Stale: move it aside under a unique name, then check that what we moved is what we judged.
    const aside = `${path}.stale-${process.pid}-${randomBytes(6).toString('hex')}`;
    try {
      await rename(path, aside);
    } catch {
      continue;
    }
    const moved = await readFileHolder(aside);
    if (moved && (moved.pid !== owner.pid || moved.since !== owner.since)) {
      await link(aside, path).catch(() => undefined);
    }
    await unlink(aside).catch(() => undefined);
  }
  return { holder: undefined };
}

function fileLock(path: string, key: string, since: string): HeldLock {
  let released: Promise<void> | undefined;
  return {
    key,
    since,
    onStop: () => undefined,
    release: () =>
      (released ??= (async () => {
        const h = await readFileHolder(path);
        if (h && h.pid === process.pid && h.since === since) await unlink(path).catch(() => undefined);
      })()),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The identity of a file (dev, ino), to compare two names: undefined when it does not exist. */
export async function fileIdentity(path: string): Promise<{ dev: bigint; ino: bigint } | undefined> {
  try {
    const s = await stat(resolve(path), { bigint: true });
    return { dev: s.dev, ino: s.ino };
  } catch {
    return undefined;
  }
}
