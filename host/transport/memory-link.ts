import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { FRAME_PREFIX_BYTES, MAX_FRAME_BYTES, type Link, type LinkStats } from './link.js';
import { VhdsyncError } from '../errors.js';

export interface LinkShape {
  /** Bytes per second in each direction; Infinity for no limit. */
  rate: number;
  /** One-way latency in milliseconds. */
  latencyMs: number;
}

interface Pending {
  frame: Uint8Array;
  deliverAt: number;
}

/**
 * One end of an in-memory link over a MessagePort (so the two ends may live in different threads).
 * The sender simulates the wire: a frame leaves when the previous one has been serialized at `rate`
 * and arrives `latencyMs` later. Frames are delivered in order.
 */
export class MemoryLink implements Link {
  readonly stats: LinkStats = { bytesSent: 0, bytesReceived: 0, framesSent: 0, framesReceived: 0 };
  private frameHandler: (frame: Uint8Array) => void = () => {};
  private closeHandlers: ((error?: Error) => void)[] = [];
  private queue: Pending[] = [];
  private queuedBytes = 0;
  private busyUntil = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private drainWaiters: (() => void)[] = [];
  private closed = false;
  private readonly highWater: number;

  constructor(
    private readonly port: MessagePort,
    private readonly shape: LinkShape = { rate: Infinity, latencyMs: 0 },
  ) {
    // Enough queued to keep the simulated wire busy for ~50 ms, at least 1 MiB.
    this.highWater = Math.max(1 << 20, Number.isFinite(shape.rate) ? shape.rate * 0.05 : 8 << 20);
    port.on('message', (data: Uint8Array | null) => {
      if (data === null) {
        this.finish();
        return;
      }
      this.stats.bytesReceived += data.byteLength + FRAME_PREFIX_BYTES;
      this.stats.framesReceived++;
      this.frameHandler(data);
    });
    port.on('close', () => this.finish());
  }

  onFrame(handler: (frame: Uint8Array) => void): void {
    this.frameHandler = handler;
  }

  onClose(handler: (error?: Error) => void): void {
    this.closeHandlers.push(handler);
  }

  async send(frame: Uint8Array): Promise<void> {
    if (this.closed) throw new VhdsyncError('LINK', 'the link to the peer is closed');
    if (frame.byteLength > MAX_FRAME_BYTES) throw new VhdsyncError('PROTOCOL', `frame of ${frame.byteLength} bytes exceeds the limit`);
    const wire = frame.byteLength + FRAME_PREFIX_BYTES;
    this.stats.bytesSent += wire;
    this.stats.framesSent++;
    if (!Number.isFinite(this.shape.rate) && this.shape.latencyMs === 0) {
      this.port.postMessage(frame);
      return;
    }
    const now = performance.now();
    const depart = Math.max(now, this.busyUntil) + (Number.isFinite(this.shape.rate) ? (wire / this.shape.rate) * 1000 : 0);
    this.busyUntil = depart;
    this.queue.push({ frame, deliverAt: depart + this.shape.latencyMs });
    this.queuedBytes += wire;
    this.schedule();
    if (this.queuedBytes > this.highWater) await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
  }

  close(): void {
    if (this.closed) return;
    // Deliver what is queued, then tell the peer.
    const flushAndClose = () => {
      if (this.queue.length > 0) {
        setTimeout(flushAndClose, Math.max(1, this.queue[this.queue.length - 1].deliverAt - performance.now()));
        return;
      }
      this.port.postMessage(null);
      this.port.close();
      this.finish();
    };
    flushAndClose();
  }

  abort(): void {
    if (this.closed) return;
    this.queue = [];
    this.queuedBytes = 0;
    this.port.postMessage(null);
    this.port.close();
    this.finish(new VhdsyncError('LINK', 'the link to the peer was dropped'));
  }

  private schedule(): void {
    if (this.timer || this.queue.length === 0) return;
    const wait = Math.max(0, this.queue[0].deliverAt - performance.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const now = performance.now();
      while (this.queue.length > 0 && this.queue[0].deliverAt <= now + 0.5) {
        const p = this.queue.shift()!;
        this.queuedBytes -= p.frame.byteLength + FRAME_PREFIX_BYTES;
        if (!this.closed) this.port.postMessage(p.frame);
      }
      if (this.queuedBytes <= this.highWater / 2) {
        const waiters = this.drainWaiters;
        this.drainWaiters = [];
        for (const w of waiters) w();
      }
      this.schedule();
    }, wait);
  }

  private finish(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.drainWaiters) w();
    this.drainWaiters = [];
    for (const h of this.closeHandlers) h(error);
  }
}

/** Two connected ends. Hand `remotePort` to another thread and wrap it there with `new MemoryLink(port, shape)`. */
export function createMemoryLink(shape: LinkShape): { local: MemoryLink; remotePort: MessagePort } {
  const { port1, port2 } = new MessageChannel();
  return { local: new MemoryLink(port1, shape), remotePort: port2 };
}
