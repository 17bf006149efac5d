import type { Socket } from 'node:net';
import { concatBytes } from '../bytes.js';
import { isVhdsyncError } from '../errors.js';
import { DiskExport, MAX_PAYLOAD } from './export.js';
import {
  BASE_ALLOCATION, BASE_ALLOCATION_ID, CLIENT_FLAGS_KNOWN, CMD, CMD_FLAG, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES, IHAVEOPT, INFO,
  MAX_OPTION_BYTES, NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM, NBD_ESHUTDOWN, NBD_MAGIC, OPT, OPTION_HEAD_BYTES,
  REPLY_FLAG_DONE, REPLY_TYPE, REP, REQUEST_BYTES, TFLAG, chunkHead, errorChunk, optionReply, parseGo, parseMetaContext,
  parseRequest, simpleReply, u16, view, type Request,
} from './protocol.js';
import { BufferPool } from './buffer-pool.js';
import { ConnectionClosed, SocketReader } from './socket-reader.js';
import { MiB } from '../units.js';

/** The exports a server offers, by every name each answers to. */
export interface ExportTable {
  /** Exports in order (index 0 first); each listed once. */
  list(): DiskExport[];
  find(name: string): DiskExport | undefined;
}

/** Requests one connection may have in flight; the next is read only when one completes. */
const MAX_IN_FLIGHT = 64;
const MAX_UNREAD_REPLIES = 64 * MiB;

/**
 * One client, from the fixed newstyle handshake to the end of transmission [proto §Handshake,
 * §Transmission]. Every length a client sends is checked before anything is allocated for it; a
 * request we cannot honour gets the protocol's error and the connection goes on; only a broken frame
 * (wrong magic) or a vanished client ends it.
 */
export class NbdConnection {
  private readonly reader: SocketReader;
  private structured = false;
  private metaAllocation = false;
  private inFlight = 0;
  private slotFree?: () => void;
  private idle?: () => void;
  private stopping = false;
  private corked = false;
  private readonly buffers = new BufferPool();
  readonly done: Promise<void>;

  constructor(
    private readonly socket: Socket,
    private readonly exports: ExportTable,
    private readonly log: (line: string) => void = () => undefined,
  ) {
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    this.reader = new SocketReader(socket);
    this.done = this.run().catch((e) => {
      if (!(e instanceof ConnectionClosed)) this.log(`nbd: connection ended: ${e instanceof Error ? e.message : String(e)}`);
    }).finally(() => this.close());
  }

  /** Stop taking requests; those in flight are answered, then the connection closes. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.drained();
    this.close();
    await this.done;
  }

  private async run(): Promise<void> {
    const greeting = new Uint8Array(18);
    const gv = view(greeting);
    gv.setBigUint64(0, NBD_MAGIC);
    gv.setBigUint64(8, IHAVEOPT);
    gv.setUint16(16, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    this.send(greeting);
    const clientFlags = view(await this.reader.read(4)).getUint32(0);
    // [proto §Newstyle negotiation]: the server MUST close the connection on client flags it does not know.
    if ((clientFlags & ~CLIENT_FLAGS_KNOWN) !== 0 || (clientFlags & FLAG_FIXED_NEWSTYLE) === 0) return;
    const exp = await this.negotiate((clientFlags & FLAG_NO_ZEROES) !== 0);
    if (exp) await this.transmit(exp);
  }

  // ---- Option haggling ----

  private async negotiate(noZeroes: boolean): Promise<DiskExport | undefined> {
    for (;;) {
      const head = view(await this.reader.read(OPTION_HEAD_BYTES));
      if (head.getBigUint64(0) !== IHAVEOPT) return undefined;
      const option = head.getUint32(8);
      const length = head.getUint32(12);
      if (length > MAX_OPTION_BYTES) {
        if (option === OPT.EXPORT_NAME) return undefined; // no error reply exists for it: close
        await this.reader.skip(length);
        this.optError(option, REP.ERR_TOO_BIG, `option data of ${length} bytes is larger than ${MAX_OPTION_BYTES}`);
        continue;
      }
      const data = await this.reader.read(length);
      switch (option) {
        case OPT.EXPORT_NAME: {
          const exp = this.exports.find(new TextDecoder().decode(data));
          if (!exp) return undefined; // [proto]: the server terminates on an unknown name here
          const b = new Uint8Array(noZeroes ? 10 : 134);
          view(b).setBigUint64(0, BigInt(exp.size));
          view(b).setUint16(8, this.transmissionFlags(exp));
          this.send(b);
          return exp;
        }
        case OPT.ABORT:
          this.send(optionReply(option, REP.ACK));
          return undefined;
        case OPT.LIST: {
          if (length !== 0) {
            this.optError(option, REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
            break;
          }
          for (const exp of this.exports.list()) {
            for (const name of exp.names) {
              const n = new TextEncoder().encode(name);
              const d = new Uint8Array(4 + n.byteLength);
              view(d).setUint32(0, n.byteLength);
              d.set(n, 4);
              this.send(optionReply(option, REP.SERVER, d));
            }
          }
          this.send(optionReply(option, REP.ACK));
          break;
        }
        case OPT.INFO:
        case OPT.GO: {
          const req = parseGo(data);
          if (typeof req === 'string') {
            this.optError(option, REP.ERR_INVALID, req);
            break;
          }
          const exp = this.exports.find(req.name);
          if (!exp) {
            this.optError(option, REP.ERR_UNKNOWN, `no export named '${req.name}'; exports: ${this.exportNames()}`);
            break;
          }
          const info = new Uint8Array(12);
          view(info).setUint16(0, INFO.EXPORT);
          view(info).setBigUint64(2, BigInt(exp.size));
          view(info).setUint16(10, this.transmissionFlags(exp));
          this.send(optionReply(option, REP.INFO, info));
          if (req.infos.includes(INFO.NAME)) this.send(optionReply(option, REP.INFO, concatBytes([u16(INFO.NAME), new TextEncoder().encode(exp.names[0])])));
          if (req.infos.includes(INFO.DESCRIPTION)) this.send(optionReply(option, REP.INFO, concatBytes([u16(INFO.DESCRIPTION), new TextEncoder().encode(exp.description)])));
          const bs = new Uint8Array(14);
          view(bs).setUint16(0, INFO.BLOCK_SIZE);
          view(bs).setUint32(2, exp.minBlock);
          view(bs).setUint32(6, exp.preferredBlock);
          view(bs).setUint32(10, MAX_PAYLOAD);
          this.send(optionReply(option, REP.INFO, bs));
          this.send(optionReply(option, REP.ACK));
          if (option === OPT.GO) return exp;
          break;
        }
        case OPT.STRUCTURED_REPLY:
          if (length !== 0) this.optError(option, REP.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          else {
            this.structured = true;
            this.send(optionReply(option, REP.ACK));
          }
          break;
        case OPT.LIST_META_CONTEXT:
        case OPT.SET_META_CONTEXT: {
          const req = parseMetaContext(data);
          if (typeof req === 'string') {
            this.optError(option, REP.ERR_INVALID, req);
            break;
          }
          if (option === OPT.SET_META_CONTEXT && !this.structured) {
            this.optError(option, REP.ERR_INVALID, 'metadata contexts need structured replies (NBD_OPT_STRUCTURED_REPLY) first');
            break;
          }
          if (!this.exports.find(req.name)) {
            this.optError(option, REP.ERR_UNKNOWN, `no export named '${req.name}'; exports: ${this.exportNames()}`);
            break;
          }
          // LIST with no query lists every context; 'base:' asks for the whole namespace.
          const wanted = req.queries.some((q) => q === BASE_ALLOCATION || (option === OPT.LIST_META_CONTEXT && q === 'base:')) ||
            (option === OPT.LIST_META_CONTEXT && req.queries.length === 0);
          if (option === OPT.SET_META_CONTEXT) this.metaAllocation = wanted;
          if (wanted) {
            const n = new TextEncoder().encode(BASE_ALLOCATION);
            const d = new Uint8Array(4 + n.byteLength);
            view(d).setUint32(0, BASE_ALLOCATION_ID);
            d.set(n, 4);
            this.send(optionReply(option, REP.META_CONTEXT, d));
          }
          this.send(optionReply(option, REP.ACK));
          break;
        }
        default:
          // STARTTLS, EXTENDED_HEADERS and anything newer or unknown.
          this.optError(option, REP.ERR_UNSUP, `option ${option} is not supported by this server`);
      }
    }
  }

  private optError(option: number, rep: number, message: string): void {
    this.send(optionReply(option, rep, new TextEncoder().encode(message)));
  }

  private exportNames(): string {
    return this.exports.list().map((e) => e.names.join(' or ')).join(', ');
  }

  private transmissionFlags(exp: DiskExport): number {
    let f = TFLAG.HAS_FLAGS | TFLAG.SEND_FLUSH | TFLAG.SEND_FUA | TFLAG.CAN_MULTI_CONN;
    if (exp.readOnly) f |= TFLAG.READ_ONLY;
    else f |= TFLAG.SEND_TRIM | TFLAG.SEND_WRITE_ZEROES;
    return f;
  }

  // ---- Transmission ----

  private async transmit(exp: DiskExport): Promise<void> {
    for (;;) {
      if (this.stopping) return;
      while (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((r) => (this.slotFree = r));
      // A client that does not read its replies stops being read from.
      if (this.socket.writableLength > MAX_UNREAD_REPLIES) await new Promise<void>((r) => this.socket.once('drain', r).once('close', r));
      const head = await this.reader.read(REQUEST_BYTES);
      const req = parseRequest(head);
      if (!req) {
        this.log('nbd: a request with a wrong magic; closing the connection');
        return;
      }
      if (req.type === CMD.DISC) {
        await this.drained();
        return;
      }
      let payload: Uint8Array | undefined;
      if (req.type === CMD.WRITE) {
        const refusal = this.stopping ? NBD_ESHUTDOWN : this.check(exp, req);
        if (refusal) {
          // The payload is on the wire anyway: drop it unread into memory, then answer.
          await this.reader.skip(req.length);
          this.reply(req, refusal, `write of ${req.length} bytes at ${req.offset} refused`);
          continue;
        }
        payload = await this.reader.read(req.length, this.buffers.take(req.length));
      } else {
        const refusal = this.stopping ? NBD_ESHUTDOWN : this.check(exp, req);
        if (refusal) {
          this.reply(req, refusal, `request ${req.type} of ${req.length} bytes at ${req.offset} refused`);
          continue;
        }
      }
      this.inFlight++;
      void this.serve(exp, req, payload).finally(() => {
        // The write is in the log and on the disk (or failed): nothing holds its payload any more.
        if (payload) this.buffers.give(payload);
        this.inFlight--;
        this.slotFree?.();
        this.slotFree = undefined;
        if (this.inFlight === 0) this.idle?.();
      });
    }
  }

  private drained(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((r) => (this.idle = r));
  }

  /** The error a request gets without touching the disk, or 0 [proto §Error values]. */
  private check(exp: DiskExport, req: Request): number {
    const { type, offset, length, flags } = req;
    const writes = type === CMD.WRITE || type === CMD.TRIM || type === CMD.WRITE_ZEROES;
    switch (type) {
      case CMD.READ:
      case CMD.WRITE:
      case CMD.TRIM:
      case CMD.WRITE_ZEROES:
      case CMD.BLOCK_STATUS:
        break;
      case CMD.FLUSH:
        return 0;
      default:
        return NBD_EINVAL; // CACHE, RESIZE and unknown commands: not advertised
    }
    if (writes && exp.readOnly) return NBD_EPERM;
    if ((type === CMD.READ || type === CMD.WRITE) && length > MAX_PAYLOAD) return NBD_EINVAL;
    if (type === CMD.BLOCK_STATUS && (!this.structured || !this.metaAllocation)) return NBD_EINVAL;
    if (type === CMD.WRITE_ZEROES && (flags & CMD_FLAG.FAST_ZERO) !== 0) return NBD_ENOTSUP;
    if (offset % exp.minBlock !== 0 || length % exp.minBlock !== 0) {
      // The last bytes of an export whose size is not a block multiple are reachable.
      if (!(offset % exp.minBlock === 0 && offset + length === exp.size)) return NBD_EINVAL;
    }
    if (offset + length > exp.size || (length === 0 && type !== CMD.BLOCK_STATUS && offset > exp.size)) {
      return type === CMD.WRITE || type === CMD.WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
    }
    return 0;
  }

  private async serve(exp: DiskExport, req: Request, payload?: Uint8Array): Promise<void> {
    const fua = (req.flags & CMD_FLAG.FUA) !== 0;
    try {
      switch (req.type) {
        case CMD.READ: {
          if (req.length === 0) break;
          const data = this.buffers.take(req.length);
          try {
            await exp.read(req.offset, data);
          } catch (e) {
            this.buffers.give(data);
            throw e;
          }
          if (this.structured) {
            const head = new Uint8Array(28);
            head.set(chunkHead(req.cookie, REPLY_FLAG_DONE, REPLY_TYPE.OFFSET_DATA, 8 + req.length), 0);
            view(head).setBigUint64(20, BigInt(req.offset));
            this.send(head);
          } else {
            this.send(simpleReply(req.cookie, 0));
          }
          this.sendThenReuse(data);
          return;
        }
        case CMD.WRITE:
          await exp.write(req.offset, payload!, fua);
          break;
        case CMD.TRIM:
        case CMD.WRITE_ZEROES:
          await exp.writeZeroes(req.offset, req.length, fua);
          break;
        case CMD.FLUSH:
          await exp.flush();
          break;
        case CMD.BLOCK_STATUS: {
          const extents = exp.allocation(req.offset, req.length, (req.flags & CMD_FLAG.REQ_ONE) !== 0);
          const body = new Uint8Array(4 + extents.length * 8);
          const v = view(body);
          v.setUint32(0, BASE_ALLOCATION_ID);
          extents.forEach((e, i) => {
            v.setUint32(4 + i * 8, e.length);
            v.setUint32(8 + i * 8, e.flags);
          });
          this.send(chunkHead(req.cookie, REPLY_FLAG_DONE, REPLY_TYPE.BLOCK_STATUS, body.byteLength), body);
          return;
        }
      }
      this.reply(req, 0, '');
    } catch (e) {
      const code = isVhdsyncError(e) ? e.code : undefined;
      const errno = code === 'OUT_OF_RANGE' ? NBD_EINVAL : code === 'READ_ONLY' ? NBD_EPERM : (e as NodeJS.ErrnoException)?.code === 'ENOSPC' ? NBD_ENOSPC : NBD_EIO;
      const message = e instanceof Error ? e.message : String(e);
      this.log(`nbd: ${exp.names[0]}: request ${req.type} at ${req.offset} (${req.length} bytes) failed: ${message}`);
      this.reply(req, errno, message);
    }
  }

  /** A reply with no data: simple, or (for READ and BLOCK_STATUS under structured replies) a chunk. */
  private reply(req: Request, error: number, message: string): void {
    const structuredOnly = this.structured && (req.type === CMD.READ || req.type === CMD.BLOCK_STATUS);
    if (structuredOnly && error !== 0) this.send(errorChunk(req.cookie, error, message));
    else if (structuredOnly) this.send(chunkHead(req.cookie, REPLY_FLAG_DONE, REPLY_TYPE.NONE, 0));
    else this.send(simpleReply(req.cookie, error));
  }

  /** Send `data`, and take it back into the pool once the socket has written it. */
  private sendThenReuse(data: Uint8Array): void {
    if (this.socket.destroyed) {
      this.buffers.give(data);
      return;
    }
    this.send();
    this.socket.write(data, () => this.buffers.give(data));
  }

  /** Replies still corked leave first (a destroyed socket drops what it holds). */
  private close(): void {
    this.uncork();
    this.socket.destroy();
  }

  private uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  /**
   * Replies sent in one turn of the event loop (a batch's writes all complete together) leave in one
   * writev: the socket is corked at the first and uncorked once, after this turn's callbacks have run.
   */
  private send(...parts: Uint8Array[]): void {
    if (this.socket.destroyed) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => this.uncork());
    }
    for (const p of parts) this.socket.write(p);
  }
}
