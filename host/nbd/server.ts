import { connect, createServer, type Server, type Socket } from 'node:net';
import { lstat, unlink } from 'node:fs/promises';
import { VhdsyncError } from '../errors.js';
import { NbdConnection, type ExportTable } from './connection.js';

/** Where the server listens: a Unix socket path, or a TCP host and port (port 0: any free one). */
export type ListenAt = { socket: string } | { host: string; port: number };

/** An NBD server over a table of exports: accepts clients until closed. */
export class NbdServer {
  private readonly connections = new Set<NbdConnection>();
  private closing = false;

  private constructor(
    private readonly server: Server,
    private readonly at: ListenAt,
  ) {}

  static async listen(exports: ExportTable, at: ListenAt, log: (line: string) => void = () => undefined): Promise<NbdServer> {
    const server = createServer({ noDelay: true });
    const self = new NbdServer(server, at);
    server.on('connection', (socket: Socket) => {
      if (self.closing) {
        socket.destroy();
        return;
      }
      const c = new NbdConnection(socket, exports, log);
      self.connections.add(c);
      void c.done.finally(() => self.connections.delete(c));
    });
    if ('socket' in at) await removeStaleSocket(at.socket);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        const where = 'socket' in at ? at.socket : `${at.host}:${at.port}`;
        if (e.code === 'EADDRINUSE') reject(new VhdsyncError('BUSY', `${where}: the address is in use; choose another --socket or --listen`, { cause: e }));
        else reject(new VhdsyncError('IO', `${where}: cannot listen (${e.message})`, { cause: e }));
      });
      if ('socket' in at) server.listen(at.socket, () => resolve());
      else server.listen(at.port, at.host, () => resolve());
    });
    return self;
  }

  /** The TCP port (after listening on port 0), or undefined for a Unix socket. */
  get port(): number | undefined {
    const a = this.server.address();
    return typeof a === 'object' && a ? a.port : undefined;
  }

  /** The URI a client (qemu, qemu-io, nbdinfo) opens for an export. */
  uri(exportName: string): string {
    const name = encodeURIComponent(exportName);
    return 'socket' in this.at ? `nbd+unix:///${name}?socket=${this.at.socket}` : `nbd://${this.at.host}:${this.port}/${name}`;
  }

  get clients(): number {
    return this.connections.size;
  }

  /** Stop accepting; answer what is in flight on every connection, then close them. */
  async close(): Promise<void> {
    this.closing = true;
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    await Promise.all([...this.connections].map((c) => c.stop()));
    await closed;
  }
}

/** A socket file left by a killed server (nobody accepts on it) is removed; a live one is not. */
async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw new VhdsyncError('EXISTS', `${path}: exists and is not a socket; choose another --socket`);
  const live = await new Promise<boolean>((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (live) throw new VhdsyncError('BUSY', `${path}: another server is listening on this socket; choose another --socket`);
  await unlink(path).catch(() => undefined);
}
