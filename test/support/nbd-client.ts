import { connect, type Socket } from 'node:net';
import { SocketReader } from '../../host/nbd/socket-reader.js';
import {
  IHAVEOPT, OPT, OPT_REPLY_MAGIC, REQUEST_BYTES, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, encodeRequest, view, type Request,
} from '../../host/nbd/protocol.js';
import { concatBytes } from '../../host/bytes.js';

/** A bare NBD client speaking bytes, for the cases real clients never send. */
export class RawClient {
  readonly reader: SocketReader;
  private constructor(readonly socket: Socket) {
    this.reader = new SocketReader(socket);
  }

  static async connect(path: string): Promise<RawClient> {
    const socket = connect(path);
    await new Promise<void>((res, rej) => socket.once('connect', () => res()).once('error', rej));
    socket.on('error', () => undefined);
    return new RawClient(socket);
  }

  /** Greeting read, client flags sent (fixed newstyle, no zeroes). Returns the handshake flags. */
  async hello(clientFlags = 3): Promise<number> {
    const g = view(await this.reader.read(18));
    const u32 = new Uint8Array(4);
    view(u32).setUint32(0, clientFlags);
    this.socket.write(u32);
    return g.getUint16(16);
  }

  sendOption(option: number, data: Uint8Array = new Uint8Array(0), declaredLength = data.byteLength): void {
    const h = new Uint8Array(16);
    view(h).setBigUint64(0, IHAVEOPT);
    view(h).setUint32(8, option);
    view(h).setUint32(12, declaredLength);
    this.socket.write(concatBytes([h, data]));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Uint8Array }> {
    const h = view(await this.reader.read(20));
    if (h.getBigUint64(0) !== OPT_REPLY_MAGIC) throw new Error('bad option reply magic');
    const length = h.getUint32(16);
    return { option: h.getUint32(8), type: h.getUint32(12), data: await this.reader.read(length) };
  }

  /** NBD_OPT_GO on `name`; returns every reply up to the final one. */
  async go(name: string): Promise<{ type: number; data: Uint8Array }[]> {
    const n = new TextEncoder().encode(name);
    const d = new Uint8Array(4 + n.byteLength + 2);
    view(d).setUint32(0, n.byteLength);
    d.set(n, 4);
    this.sendOption(OPT.GO, d);
    const out = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type !== 3) return out; // not NBD_REP_INFO: ACK or an error ends it
    }
  }

  request(r: Partial<Request> & { type: number }, payload?: Uint8Array): void {
    const head = encodeRequest({ flags: 0, cookie: 7n, offset: 0, length: payload?.byteLength ?? 0, ...r });
    this.socket.write(payload ? concatBytes([head, payload]) : head);
  }

  /** A simple reply's error (and, for a successful read, `length` bytes of data). */
  async simpleReply(dataLength = 0): Promise<{ error: number; cookie: bigint; data?: Uint8Array }> {
    const h = view(await this.reader.read(16));
    if (h.getUint32(0) !== SIMPLE_REPLY_MAGIC) throw new Error(`not a simple reply: ${h.getUint32(0).toString(16)}`);
    const error = h.getUint32(4);
    return { error, cookie: h.getBigUint64(8), data: error === 0 && dataLength ? await this.reader.read(dataLength) : undefined };
  }

  async chunk(): Promise<{ flags: number; type: number; data: Uint8Array }> {
    const h = view(await this.reader.read(20));
    if (h.getUint32(0) !== STRUCTURED_REPLY_MAGIC) throw new Error('not a structured reply');
    return { flags: h.getUint16(4), type: h.getUint16(6), data: await this.reader.read(h.getUint32(16)) };
  }

  /** Resolves when the server has closed the connection. */
  closed(): Promise<void> {
    return new Promise((res) => {
      if (this.socket.destroyed || this.socket.readableEnded) return res();
      this.socket.once('close', () => res());
      this.socket.resume();
    });
  }

  end(): void {
    this.socket.destroy();
  }
}

export const REQ_BYTES = REQUEST_BYTES;
