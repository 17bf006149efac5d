import { VhdsyncError, asVhdsyncError, errorCode } from '../errors.js';
import type { Link } from '../transport/link.js';
import { decode, encode, messageType, type Message } from '../transport/protocol.js';

type Handler = (m: Message) => void | Promise<void>;

/**
 * Typed messages over a Link: one handler per message type, awaitable control replies, and errors
 * from the peer surfaced as VhdsyncErrors. Incoming messages are handled strictly in arrival order
 * (a handler's promise completes before the next message is handled), which the replica relies on to
 * apply data before the region's `end`.
 *
 * Any exception in a handler ends the conversation on both sides: the peer gets it as an error frame
 * and the link closes (see `abort`). Failing only here would leave the peer waiting forever, its
 * keepalives holding the link (and a replica server's transfer slot) open.
 */
export class Channel {
  private handlers = new Map<string, Handler>();
  private immediate = new Set<string>();
  private waiters = new Map<string, { resolve: (body: Record<string, unknown>) => void; reject: (e: Error) => void }[]>();
  private chain: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  private closeListeners: ((e?: Error) => void)[] = [];
  private held = new Map<string, Message[]>();

  constructor(readonly link: Link) {
    link.onFrame((frame) => {
      if (this.immediate.size > 0 && this.immediate.has(messageType(frame) ?? '')) {
        this.dispatch(frame).catch((e) => this.abort(e));
        return;
      }
      this.chain = this.chain.then(() => this.dispatch(frame)).catch((e) => this.abort(e));
    });
    link.onClose((e) => {
      this.fail(e ?? new VhdsyncError('LINK', 'the connection to the peer was lost'));
    });
  }

  on<K extends Message['t']>(t: K, handler: (m: Extract<Message, { t: K }>) => void | Promise<void>): void {
    this.handlers.set(t, handler as Handler);
    const held = this.held.get(t);
    this.held.delete(t);
    try {
      for (const m of held ?? []) void (handler as Handler)(m);
    } catch (e) {
      this.abort(e);
    }
  }

  /**
   * Keep messages of type `t` that arrive before anyone handles them, for the handler `on` sets: a
   * peer may stream them as soon as it is asked (roots right behind 'started').
   */
  holdUntilHandled(t: Message['t']): void {
    if (!this.handlers.has(t)) this.held.set(t, []);
  }

  /**
   * Like `on`, but the handler runs as soon as the message arrives instead of waiting behind slower
   * handlers (for requests that only read state, such as digest lookups, which must not queue behind
   * disk writes).
   */
  onImmediate<K extends Message['t']>(t: K, handler: (m: Extract<Message, { t: K }>) => void | Promise<void>): void {
    this.immediate.add(t);
    this.on(t, handler);
  }

  onControl(op: string, handler: (body: Record<string, unknown>) => void | Promise<void>): void {
    this.handlers.set(`control:${op}`, (m) => handler((m as Extract<Message, { t: 'control' }>).body));
  }

  onClosed(listener: (e?: Error) => void): void {
    this.closeListeners.push(listener);
  }

  send(m: Message): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    return this.link.send(encode(m));
  }

  control(op: string, body: Record<string, unknown> = {}): Promise<void> {
    return this.send({ t: 'control', op, body });
  }

  /** Wait for the peer's control message `op` (or its error, or the link closing). */
  expect(op: string): Promise<Record<string, unknown>> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const list = this.waiters.get(op) ?? [];
      list.push({ resolve, reject });
      this.waiters.set(op, list);
    });
  }

  async request(op: string, body: Record<string, unknown>, reply: string): Promise<Record<string, unknown>> {
    const answer = this.expect(reply);
    await this.control(op, body);
    return answer;
  }

  /** Report an error to the peer (best effort) so it fails with the same line. */
  async sendError(e: unknown): Promise<void> {
    const err = asVhdsyncError(e);
    try {
      await this.link.send(errorFrame(err));
    } catch {
      // The link is gone; the peer will notice on its own.
    }
  }

  /**
   * A failure on this side: fail here, tell the peer in an error frame, and close the link (after
   * what is queued), so both sides end within a round trip, whatever the state of the conversation.
   */
  abort(e: unknown): void {
    if (this.failure) return;
    const err = asVhdsyncError(e);
    this.fail(err);
    this.link.send(errorFrame(err)).catch(() => {});
    this.link.close();
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  close(): void {
    this.link.close();
  }

  private async dispatch(frame: Uint8Array): Promise<void> {
    if (this.failure) return; // ended: what was still queued must not act (write, reply) any more
    const m = decode(frame);
    if (m.t === 'control') {
      if (m.op === 'error') {
        // The peer has ended: so do we, even if it does not close its side.
        this.fail(new VhdsyncError(errorCode(m.body.code, 'IO'), String(m.body.message ?? 'the peer failed')));
        this.link.close();
        return;
      }
      const waiting = this.waiters.get(m.op);
      if (waiting && waiting.length > 0) {
        waiting.shift()!.resolve(m.body);
        return;
      }
      const h = this.handlers.get(`control:${m.op}`);
      if (!h) throw new VhdsyncError('PROTOCOL', `protocol error: unexpected control message '${m.op}'`);
      await h(m);
      return;
    }
    const h = this.handlers.get(m.t);
    const held = this.held.get(m.t);
    if (!h && held) return void held.push(m);
    if (!h) throw new VhdsyncError('PROTOCOL', `protocol error: unexpected message '${m.t}'`);
    await h(m);
  }

  private fail(e: Error): void {
    if (this.failure) return;
    this.failure = e;
    for (const list of this.waiters.values()) for (const w of list) w.reject(e);
    this.waiters.clear();
    for (const l of this.closeListeners) l(e);
  }
}


function errorFrame(err: VhdsyncError): Uint8Array {
  return encode({ t: 'control', op: 'error', body: { code: err.code, message: err.message } });
}
