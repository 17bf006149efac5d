#!/usr/bin/env node
// A TCP relay that holds every chunk `delayMs` in each direction before passing it on: the one-way
// latency of the real shaped link where this kernel has no `tc ... netem` (real-link.mjs). It runs in
// the far network namespace, between the veth (shaped by tbf) and the servers on 127.0.0.1, so both
// rsync and vhdsync cross the same rate limit and the same delay.
//
// Usage: node delay-proxy.mjs LISTEN_HOST LISTEN_PORT TARGET_PORT DELAY_MS
import { createConnection, createServer } from 'node:net';

const [host, listenPort, targetPort, delay] = process.argv.slice(2);
const delayMs = Number(delay);
/** Bytes held in flight per direction before the reader is paused (the delay-bandwidth product, at least). */
const HIGH_WATER = 32 << 20;

function pipe(from, to) {
  let held = 0;
  from.on('data', (chunk) => {
    held += chunk.length;
    if (held > HIGH_WATER) from.pause();
    const pass = () => {
      held -= chunk.length;
      if (!to.destroyed) to.write(chunk);
      if (held <= HIGH_WATER && from.isPaused()) from.resume();
    };
    // Timers of equal duration fire in the order they were set: chunks stay in order.
    if (delayMs > 0) setTimeout(pass, delayMs);
    else pass();
  });
  from.on('end', () => setTimeout(() => to.end(), delayMs));
}

const server = createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
  const upstream = createConnection({ host: '127.0.0.1', port: Number(targetPort), allowHalfOpen: true, noDelay: true });
  const cut = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', cut);
  upstream.on('error', cut);
  pipe(client, upstream);
  pipe(upstream, client);
});
server.listen(Number(listenPort), host, () => process.stdout.write('listening\n'));
process.on('SIGTERM', () => process.exit(0));
