import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { CLI } from './files.js';

/**
 * `vhdsync replica serve` as its own process (the built CLI), with the certificates `cli(['cert', '--out',
 * certs, …])` made: resolves with the port once it says `listening`. `port` 0 picks a free one; a port
 * given again restarts a server killed by the test on the address its primaries know.
 */
export function serveReplica(root: string, certs: string, port = 0): Promise<{ port: number; child: ChildProcess }> {
  return new Promise((resolve, reject) => {
    const args = ['--listen', `127.0.0.1:${port}`, '--root', root, '--cert', join(certs, 'server.crt'), '--key', join(certs, 'server.key'), '--ca', join(certs, 'ca.crt')];
    const child = spawn(process.execPath, [CLI, 'replica', 'serve', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buffered = '';
    child.stdout!.on('data', (x) => {
      buffered += x;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const e = JSON.parse(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
        if (e.event === 'listening') resolve({ port: e.port, child });
      }
    });
    let stderr = '';
    child.stderr!.on('data', (x) => (stderr += x));
    child.on('exit', (code) => reject(new Error(`replica serve exited ${code}: ${stderr}`)));
  });
}

/** Stop a child process (SIGKILL by default: a crash) and wait until it is gone. */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
}
