/** An in-process replica server (ReplicaServer) on 127.0.0.1, for tests that drive the transport directly. */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ReplicaServer, type ReplicaServerOptions, type ServerEvent } from '../../host/replica/server.js';
import { makeCerts, material, type TestCerts } from './certs.js';
import { tempDir } from './temp-dir.js';

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
  const { dir, cleanup } = tempDir(prefix);
  const certs = await makeCerts(join(dir, 'certs'));
  const root = join(dir, 'root');
  await mkdir(root);
  const { server, port, events } = await startServer(certs, root, opts);
  return {
    dir, certs, root, server, port, events,
    async close() {
      await server.close();
      cleanup();
    },
  };
}
