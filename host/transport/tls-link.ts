import type { Socket } from 'node:net';
import { VhdsyncError } from '../errors.js';
import { FRAME_PREFIX_BYTES, MAX_FRAME_BYTES, type Link, type LinkStats } from './link.js';
import type { TokenBucket } from './token-bucket.js';
import { KiB, MiB } from '../units.js';

/**
 * A Link over a stream socket — in practice a mutually authenticated TLS socket (tls-config.ts).
 *
 * Wire format: each frame is a u32 little-endian length, then that many bytes. A zero length is a
 * keepalive: it proves the peer is alive during long quiet phases (a merge, a queue) and never reaches
 * the protocol. A length above `maxFrameBytes` breaks the link before a byte of it is allocated, and
 * a frame is only assembled once all its bytes have arrived, so a peer cannot make us hold more than
 * one frame's worth of its promises.
 *
 * - Backpressure: `send` resolves once the socket has taken the frame and its buffer is short.
 * - Stalls: nothing heard for `stallMs` (keepalives included), or nothing read by the peer for as long,
 *   breaks the link with a LINK error, so a frozen peer or a black-holed route cannot hang a resync.
 * - Close: `close()` flushes queued frames and ends the stream; the link then closes without an error.
 *   A reset, a stall, or an end in the middle of a frame closes it with one.
 */
export interface TlsLinkOptions {
  /** Largest frame accepted from the peer (default MAX_FRAME_BYTES; a server lowers it until 'open'). */
  maxFrameBytes?: number;
  /** Break the link after this long without hearing from the peer (default 60 s). */
  stallMs?: number;
  /** Paces what this end sends. */
  sendLimiter?: TokenBucket;
  /** Paces what this end reads (TCP flow control then slows the sender). */
  receiveLimiter?: TokenBucket;
  /** Turns a socket error into one line naming the peer. */
  describeError?: (e: Error) => VhdsyncError;
}

const KEEPALIVE = new Uint8Array(FRAME_PREFIX_BYTES);
/** Frames are written in slices of this size when paced, so the rate is smooth rather than bursty. */
const PACED_SLICE = 16 * KiB;
/** `send` waits for the socket to drain beyond this much buffered. */
const SEND_BUFFER = 2 * MiB;
/** Reading pauses while handlers still work on this many bytes of frames (when they return promises). */
const UNSETTLED_LIMIT = 32 * MiB;

type FrameHandler = (frame: Uint8Array) => void | Promise<void>;

export class TlsLink implements Link {
  readonly stats: LinkStats = { bytesSent: 0, bytesReceived: 0, framesSent: 0, framesReceived: 0 };
  maxFrameBytes: number;
  private readonly stallMs: number;
  private handler: FrameHandler = () => {};
  private held: Uint8Array[] | undefined;
  private closeHandlers: ((error?: Error) => void)[] = [];
  private chunks: Buffer[] = [];
  private buffered = 0;
  private expected = -1;
  private sendChain: Promise<void> = Promise.resolve();
  private midFrame = false;
  private closing = false;
  private closed = false;
  private failure: Error | undefined;
  private peerEnded = false;
  private lastHeard = performance.now();
  private lastSent = performance.now();
  private drainWait: { since: number; left: number; resolve: () => void; reject: (e: Error) => void } | undefined;
  private readonly pauses = new Set<'limit' | 'backlog'>();
  private unsettled = 0;
  private readonly timer: ReturnType<typeof setInterval>;

  constructor(
    private readonly socket: Socket,
    private readonly opts: TlsLinkOptions = {},
  ) {
    this.maxFrameBytes = opts.maxFrameBytes ?? MAX_FRAME_BYTES;
    this.stallMs = opts.stallMs ?? 60_000;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('end', () => (this.peerEnded = true));
    socket.on('drain', () => this.drained());
    socket.on('error', (e) => this.finish(this.closing ? undefined : (opts.describeError?.(e) ?? new VhdsyncError('LINK', `the connection to the peer broke: ${e.message}`, { cause: e }))));
    socket.on('close', () => {
      const clean = this.closing || (this.peerEnded && this.expected < 0 && this.buffered === 0);
      this.finish(clean ? undefined : new VhdsyncError('LINK', this.expected >= 0 ? 'the connection to the peer closed in the middle of a frame' : 'the connection to the peer was lost'));
    });
    this.timer = setInterval(() => this.tick(), Math.max(20, Math.min(this.stallMs / 4, 5000)));
    this.timer.unref();
  }

  onFrame(handler: FrameHandler): void {
    this.handler = handler;
    const held = this.held;
    this.held = undefined;
    // Replayed after the caller's synchronous set-up (its handlers and awaited replies are in place).
    if (held) queueMicrotask(() => held.forEach((frame) => this.deliver(frame)));
  }

  /**
   * Keep the frames that arrive from now until the next `onFrame`, for it: a reply the peer sent
   * right behind another (a 'welcome' behind 'opened') is not lost between two handlers.
   */
  holdFrames(): void {
    const held: Uint8Array[] = (this.held = []);
    this.handler = (frame) => void held.push(frame);
  }

  /** Called once when the link closes (at once, if it already has). */
  onClose(handler: (error?: Error) => void): void {
    if (this.closed) queueMicrotask(() => handler(this.failure));
    else this.closeHandlers.push(handler);
  }

  /** The peer's address, for logs. */
  get peer(): string {
    return `${this.socket.remoteAddress}:${this.socket.remotePort}`;
  }

  send(frame: Uint8Array): Promise<void> {
    if (this.closed || this.closing) return Promise.reject(this.failure ?? new VhdsyncError('LINK', 'the link to the peer is closed'));
    if (frame.byteLength > MAX_FRAME_BYTES) return Promise.reject(new VhdsyncError('PROTOCOL', `frame of ${frame.byteLength} bytes exceeds the limit`));
    const sent = this.sendChain.then(() => this.write(frame));
    this.sendChain = sent.catch(() => {});
    return sent;
  }

  close(): void {
    if (this.closed || this.closing) return;
    this.closing = true;
    void this.sendChain.then(() => {
      this.socket.end();
      // A peer that never closes its side does not keep the socket (and its file descriptor) alive.
      setTimeout(() => this.socket.destroy(), 5000).unref();
    });
  }

  abort(): void {
    this.finish(new VhdsyncError('LINK', 'the link to the peer was dropped'));
  }

  /** Break the link at once (a protocol violation, a refusal): nothing queued is sent. */
  destroy(error?: Error): void {
    this.finish(error);
  }

  private async write(frame: Uint8Array): Promise<void> {
    if (this.closed) throw this.failure ?? new VhdsyncError('LINK', 'the link to the peer is closed');
    const prefix = new Uint8Array(FRAME_PREFIX_BYTES);
    new DataView(prefix.buffer).setUint32(0, frame.byteLength, true);
    const limiter = this.opts.sendLimiter;
    this.midFrame = true;
    try {
      if (!limiter) {
        this.socket.cork();
        this.socket.write(prefix);
        this.socket.write(frame);
        this.socket.uncork();
      } else {
        // At most about a second's worth per slice, so even a very low limit keeps bytes flowing.
        const slice = Math.max(512, Math.min(PACED_SLICE, Math.floor(limiter.rate)));
        await limiter.take(Math.min(slice, frame.byteLength) + FRAME_PREFIX_BYTES);
        this.socket.write(prefix);
        for (let at = 0; at < frame.byteLength; ) {
          const end = Math.min(frame.byteLength, at + slice);
          if (at > 0) await limiter.take(end - at);
          if (this.closed) throw this.failure ?? new VhdsyncError('LINK', 'the link to the peer is closed');
          this.socket.write(frame.subarray(at, end));
          at = end;
        }
      }
    } finally {
      this.midFrame = false;
    }
    this.lastSent = performance.now();
    this.stats.bytesSent += frame.byteLength + FRAME_PREFIX_BYTES;
    this.stats.framesSent++;
    if (this.socket.writableLength > SEND_BUFFER) {
      await new Promise<void>((resolve, reject) => {
        this.drainWait = { since: performance.now(), left: this.socket.writableLength, resolve, reject };
      });
    }
  }

  private drained(): void {
    const w = this.drainWait;
    this.drainWait = undefined;
    w?.resolve();
  }

  private receive(chunk: Buffer): void {
    if (this.closed) return;
    this.lastHeard = performance.now();
    const limiter = this.opts.receiveLimiter;
    if (limiter) {
      const wait = limiter.reserve(chunk.byteLength);
      if (wait > 0) {
        this.pause('limit');
        setTimeout(() => this.resume('limit'), wait).unref();
      }
    }
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
    while (!this.closed) {
      if (this.expected < 0) {
        if (this.buffered < FRAME_PREFIX_BYTES) return;
        const length = this.take(FRAME_PREFIX_BYTES).readUInt32LE(0);
        this.stats.bytesReceived += FRAME_PREFIX_BYTES;
        if (length > this.maxFrameBytes) {
          this.finish(new VhdsyncError('PROTOCOL', `protocol error: the peer sent a frame of ${length} bytes; the limit is ${this.maxFrameBytes}`));
          return;
        }
        if (length === 0) continue; // keepalive
        this.expected = length;
      }
      if (this.buffered < this.expected) return;
      const frame = this.take(this.expected);
      this.expected = -1;
      this.stats.bytesReceived += frame.byteLength;
      this.stats.framesReceived++;
      this.deliver(frame);
    }
  }

  private deliver(frame: Uint8Array): void {
    let pending: void | Promise<void>;
    try {
      pending = this.handler(frame);
    } catch (e) {
      this.finish(e as Error);
      return;
    }
    if (!pending || typeof pending.then !== 'function') return;
    // A handler that returns a promise gets backpressure: we stop reading while it is behind.
    this.unsettled += frame.byteLength;
    if (this.unsettled > UNSETTLED_LIMIT) this.pause('backlog');
    pending.then(
      () => {
        this.unsettled -= frame.byteLength;
        if (this.unsettled <= UNSETTLED_LIMIT / 2) this.resume('backlog');
      },
      (e: Error) => this.finish(e),
    );
  }

  /** The first n buffered bytes, without copying when they sit in one chunk. */
  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (first.byteLength >= n) {
      if (first.byteLength === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0];
      const use = Math.min(c.byteLength, n - at);
      c.copy(out, at, 0, use);
      at += use;
      if (use === c.byteLength) this.chunks.shift();
      else this.chunks[0] = c.subarray(use);
    }
    return out;
  }

  private pause(why: 'limit' | 'backlog'): void {
    this.pauses.add(why);
    this.socket.pause();
  }

  private resume(why: 'limit' | 'backlog'): void {
    if (!this.pauses.delete(why) || this.pauses.size > 0 || this.closed) return;
    this.lastHeard = performance.now();
    this.socket.resume();
  }

  private tick(): void {
    if (this.closed) return;
    const now = performance.now();
    const secs = Math.round(this.stallMs / 100) / 10;
    if (this.pauses.size === 0 && now - this.lastHeard > this.stallMs) {
      this.finish(new VhdsyncError('LINK', `nothing heard from the peer for ${secs} s; the link stalled`));
      return;
    }
    const w = this.drainWait;
    if (w) {
      // Stalled only if the peer read nothing at all for stallMs (a slow reader is not a stalled one).
      const left = this.socket.writableLength;
      if (left < w.left) {
        w.left = left;
        w.since = now;
      } else if (now - w.since > this.stallMs) {
        this.finish(new VhdsyncError('LINK', `the peer has read nothing for ${secs} s; the link stalled`));
        return;
      }
    }
    if (!this.midFrame && !this.closing && this.socket.writableLength === 0 && now - this.lastSent >= this.stallMs / 3) {
      this.socket.write(KEEPALIVE);
      this.lastSent = now;
      this.stats.bytesSent += FRAME_PREFIX_BYTES;
    }
  }

  private finish(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.failure = error;
    clearInterval(this.timer);
    if (error) this.socket.destroy();
    this.chunks = [];
    this.buffered = 0;
    const w = this.drainWait;
    this.drainWait = undefined;
    w?.reject(error ?? new VhdsyncError('LINK', 'the link to the peer is closed'));
    for (const h of this.closeHandlers) h(error);
  }
}
