import type { Socket } from 'node:net';
import { MiB } from '../units.js';

/** The peer went away (or the connection was closed) before the bytes asked for arrived. */
export class ConnectionClosed extends Error {
  constructor() {
    super('connection closed');
  }
}

/**
 * Exact reads from a socket: `read(n)` resolves with the next n bytes. The caller decides n only
 * after validating what it came from, so nothing is allocated on a peer's word alone. Data arriving
 * faster than it is consumed is held up to `highWater` bytes, then the socket is paused
 * (backpressure), so a flooding client cannot grow our memory.
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiting?: { n: number; resolve: () => void; reject: (e: Error) => void };
  private ended = false;
  private paused = false;

  constructor(
    private readonly socket: Socket,
    private readonly highWater = 8 * MiB,
  ) {
    socket.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.buffered += b.byteLength;
      if (this.buffered >= this.highWater && !this.paused) {
        this.paused = true;
        socket.pause();
      }
      this.wake();
    });
    const end = () => {
      this.ended = true;
      this.wake();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  private wake(): void {
    const w = this.waiting;
    if (!w) return;
    if (this.buffered >= w.n) {
      this.waiting = undefined;
      w.resolve();
    } else if (this.ended) {
      this.waiting = undefined;
      w.reject(new ConnectionClosed());
    } else if (this.paused && this.buffered < w.n) {
      // The caller needs more than we hold: let data flow again.
      this.paused = false;
      this.socket.resume();
    }
  }

  private async need(n: number): Promise<void> {
    if (this.buffered >= n) return;
    if (this.ended) throw new ConnectionClosed();
    await new Promise<void>((resolve, reject) => {
      this.waiting = { n, resolve, reject };
      this.wake();
    });
  }

  /** The next `n` bytes, copied into `into` when given (n = into.byteLength), else into a new array. */
  async read(n: number, into?: Uint8Array): Promise<Uint8Array> {
    const out = into ?? new Uint8Array(n);
    let done = 0;
    while (done < n) {
      await this.need(Math.min(n - done, this.highWater));
      while (done < n && this.chunks.length > 0) {
        const c = this.chunks[0];
        const take = Math.min(c.byteLength, n - done);
        out.set(take === c.byteLength ? c : c.subarray(0, take), done);
        done += take;
        this.consume(take);
      }
    }
    return out;
  }

  /** Read and drop `n` bytes (an oversized or refused payload) without holding them. */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      await this.need(Math.min(left, this.highWater, Math.max(1, this.buffered)));
      while (left > 0 && this.chunks.length > 0) {
        const take = Math.min(this.chunks[0].byteLength, left);
        this.consume(take);
        left -= take;
      }
    }
  }

  private consume(n: number): void {
    const c = this.chunks[0];
    if (n === c.byteLength) this.chunks.shift();
    else this.chunks[0] = c.subarray(n);
    this.buffered -= n;
    if (this.paused && this.buffered < this.highWater / 2) {
      this.paused = false;
      this.socket.resume();
    }
  }
}
