import { createServer, createConnection, type Server, type Socket } from 'node:net';

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
