import { execFileSync } from 'node:child_process';
import { mkdir, readdir, lstat, writeFile } from 'node:fs/promises';
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { loadTlsMaterial, type TlsMaterial } from '../host/transport/tls-config.js';
import { ReplicaServer, type ReplicaServerOptions, type ServerEvent } from '../host/replica/server.js';
import { tempDir } from './support/files.js';

/**
 * Certificates for the network tests, made with the openssl CLI by the recipe in README "Network (TLS)":
 * a CA, a server certificate for 127.0.0.1, a client certificate; plus a second, unrelated CA with a
 * client certificate of its own ("rogue") and an expired client certificate from the right CA.
 */
export interface TestCerts {
  dir: string;
  files: (name: 'server' | 'client' | 'rogue' | 'expired', ca?: 'ca' | 'other') => { cert: string; key: string; ca: string };
}

export async function makeCerts(dir: string): Promise<TestCerts> {
  await mkdir(dir, { recursive: true });
  const at = (f: string) => join(dir, f);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  for (const ca of ['ca', 'other']) {
    ssl('req', '-x509', ...ec, '-keyout', at(`${ca}.key`), '-out', at(`${ca}.crt`), '-days', '3650', '-subj', `/CN=test ${ca}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  }
  const leaf = async (name: string, ca: string, ext: string, days: string) => {
    await writeFile(at(`${name}.ext`), ext);
    ssl('req', ...ec, '-keyout', at(`${name}.key`), '-out', at(`${name}.csr`), '-subj', `/CN=${name}`);
    ssl('x509', '-req', '-in', at(`${name}.csr`), '-CA', at(`${ca}.crt`), '-CAkey', at(`${ca}.key`), '-CAcreateserial', '-days', days, '-extfile', at(`${name}.ext`), '-out', at(`${name}.crt`));
  };
  await leaf('server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n', '30');
  await leaf('client', 'ca', 'extendedKeyUsage=clientAuth\n', '30');
  await leaf('rogue', 'other', 'extendedKeyUsage=clientAuth\n', '30');
  await leaf('expired', 'ca', 'extendedKeyUsage=clientAuth\n', '-1'); // notAfter already in the past
  return { dir, files: (name, ca = 'ca') => ({ cert: at(`${name}.crt`), key: at(`${name}.key`), ca: at(`${ca}.crt`) }) };
}

export async function material(certs: TestCerts, name: 'server' | 'client' | 'rogue', ca: 'ca' | 'other' = 'ca'): Promise<TlsMaterial> {
  return loadTlsMaterial(certs.files(name, ca));
}

/** An in-process replica server on 127.0.0.1 and a free port, recording what it logs. */
export async function startServer(certs: TestCerts, root: string, opts: Partial<ReplicaServerOptions> = {}): Promise<{ server: ReplicaServer; port: number; events: ServerEvent[] }> {
  const events: ServerEvent[] = [];
  const server = await ReplicaServer.start({ host: '127.0.0.1', port: 0, root, tls: await material(certs, 'server'), log: (e) => events.push(e), ...opts });
  return { server, port: server.address.port, events };
}

/** One test file's network: a temporary directory, certificates, a root, and a replica server on it. */
export interface ServerFixture {
  dir: string;
  certs: TestCerts;
  root: string;
  server: ReplicaServer;
  port: number;
  events: ServerEvent[];
  close(): Promise<void>;
}

export async function serverFixture(prefix: string, opts: Partial<ReplicaServerOptions> = {}): Promise<ServerFixture> {
  const { dir, cleanup } = await tempDir(prefix);
  const certs = await makeCerts(join(dir, 'certs'));
  const root = join(dir, 'root');
  await mkdir(root);
  const { server, port, events } = await startServer(certs, root, opts);
  return {
    dir, certs, root, server, port, events,
    async close() {
      await server.close();
      await cleanup();
    },
  };
}

/** Every file under a directory with its size and mtime: equal snapshots mean nothing was written. */
export async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of (await readdir(d)).sort()) {
      const p = join(d, e);
      const st = await lstat(p);
      out.push(`${p} ${st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out;
}

/**
 * A TCP proxy on 127.0.0.1 between a client and the replica server. It counts the bytes that really
 * cross (TLS records included), can delay every chunk, and can cut every connection once the
 * client has sent more than the next threshold of bytes (a dropped link, as far as both ends can tell).
 */
export class TcpProxy {
  bytesUp = 0;
  bytesDown = 0;
  drops = 0;
  private server: Server;
  private pairs = new Set<[Socket, Socket]>();
  private dropAt: number[] = [];
  port = 0;

  constructor(
    private readonly targetPort: number,
    private readonly delayMs = 0,
  ) {
    this.server = createServer({ allowHalfOpen: true }, (client) => {
      const upstream = createConnection({ host: '127.0.0.1', port: this.targetPort, allowHalfOpen: true });
      const pair: [Socket, Socket] = [client, upstream];
      this.pairs.add(pair);
      const cut = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', cut).on('close', () => this.pairs.delete(pair));
      upstream.on('error', cut);
      this.pipe(client, upstream, (n) => {
        this.bytesUp += n;
        if (this.dropAt.length > 0 && this.bytesUp >= this.dropAt[0]) {
          this.dropAt.shift();
          this.drops++;
          cut();
        }
      });
      this.pipe(upstream, client, (n) => (this.bytesDown += n));
    });
  }

  async listen(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
    return this;
  }

  /** Cut the connections when the client has sent these many bytes in total (ascending). */
  dropAfter(...thresholds: number[]): void {
    this.dropAt = thresholds;
  }

  /** Cut every connection now (a dropped link, as far as both ends can tell). */
  cut(): void {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.drops++;
  }

  async close(): Promise<void> {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private pipe(from: Socket, to: Socket, count: (n: number) => void): void {
    let chain = Promise.resolve();
    // An orderly end travels after the data still delayed, as on a real network.
    from.on('end', () => void chain.then(() => to.end()));
    from.on('data', (chunk: Buffer) => {
      if (this.delayMs === 0) {
        if (!to.destroyed) to.write(chunk);
        count(chunk.byteLength);
        return;
      }
      // Delay every chunk, in order; pause the reader so the delay also slows the sender.
      from.pause();
      chain = chain.then(
        () =>
          new Promise<void>((resolve) =>
            setTimeout(() => {
              if (!to.destroyed) to.write(chunk);
              count(chunk.byteLength);
              from.resume();
              resolve();
            }, this.delayMs),
          ),
      );
    });
  }
}
