import { MiB } from '../units.js';
/**
 * A link carries whole frames between a primary and a replica endpoint, in order. Two implementations
 * share this interface: the in-memory link with a simulated rate and latency (memory-link.ts) and
 * TCP with mutual TLS (tls-link.ts). Every frame counts 4 bytes of length prefix on the wire.
 */
export interface LinkStats {
  /** Bytes this end put on the wire (frames + length prefixes). */
  bytesSent: number;
  bytesReceived: number;
  framesSent: number;
  framesReceived: number;
}

export interface Link {
  /** Queue a frame. Resolves when the link can take more, so a fast sender cannot fill memory. */
  send(frame: Uint8Array): Promise<void>;
  onFrame(handler: (frame: Uint8Array) => void): void;
  /** Called once when the link closes; with an error when it broke. */
  onClose(handler: (error?: Error) => void): void;
  close(): void;
  /**
   * Close at once, delivering nothing that is still queued (a pause that must not wait for a slow
   * link to drain). The peer sees a lost connection. Frames already delivered stay delivered, in order.
   */
  abort(): void;
  readonly stats: LinkStats;
}

export const FRAME_PREFIX_BYTES = 4;
/** Upper bound of one frame, enforced on both ends: a peer cannot make us allocate more. */
export const MAX_FRAME_BYTES = 16 * MiB + 4096;
