// One real link for both tools, beside the simulated one: a network namespace joined to this one by a
// veth pair, shaped with `tc ... tbf` (rate) on both ends, and a one-way delay added by a userspace
// relay (delay-proxy.mjs) where the kernel has no netem. On the far side run an rsync daemon and
// `vhdsync replica serve` (mutual TLS), each behind its own relay; rsync, rsync -z and our resync run
// from here over the same link in the same run. Bytes are what each tool reports and, for all of them
// alike, what crossed the veth (IP packets: TCP/IP headers, TLS records, acks).
//
// Needs root, `ip netns`, `tc` with tbf, and rsync. Where any of it is missing, open() says why and
// the benchmark keeps its modeled rows only.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..');
const CLI = join(ROOT, 'dist', 'cli', 'bin.js');
// Addresses of our own namespace pair only (a /30 on the veth); nothing else is ever dialled.
const NEAR = '10.213.77.1';
const FAR = '10.213.77.2';
const RSYNC_PORT = 8730;
const VHDSYNC_PORT = 4000;
const RELAY = 1; // relay port = service port + 1, on FAR

const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
const run = (cmd, args) => spawnSync(cmd, args, { encoding: 'utf8' });

export class RealLink {
  /** Set up the namespace, veth, servers. Returns { link } or { skipped: reason }. */
  static async open({ dir, log }) {
    if (process.getuid?.() !== 0) return { skipped: 'not root (network namespaces need root)' };
    for (const tool of ['ip', 'tc', 'rsync']) if (run('which', [tool]).status !== 0) return { skipped: `${tool} is not installed` };
    const l = new RealLink(dir, log);
    try {
      await l.setup();
      return { link: l };
    } catch (e) {
      await l.close();
      return { skipped: `could not set up the shaped link: ${e.message.split('\n')[0]}` };
    }
  }

  constructor(dir, log) {
    this.dir = join(dir, 'real-link');
    this.log = log;
    this.ns = `vhdsync-far-${process.pid}`;
    this.near = `vzn${process.pid % 100000}`;
    this.far = `vzf${process.pid % 100000}`;
    this.children = [];
    this.shape = undefined;
  }

  sh(args, what) {
    const r = run(args[0], args.slice(1));
    if (r.status !== 0) throw new Error(`${what ?? args.join(' ')}: ${(r.stderr || r.stdout).trim()}`);
    return r.stdout;
  }

  async setup() {
    mkdirSync(this.dir, { recursive: true });
    this.sh(['ip', 'netns', 'add', this.ns]);
    this.nsMade = true;
    this.sh(['ip', 'link', 'add', this.near, 'type', 'veth', 'peer', 'name', this.far]);
    this.vethMade = true;
    this.sh(['ip', 'link', 'set', this.far, 'netns', this.ns]);
    this.sh(['ip', 'addr', 'add', `${NEAR}/30`, 'dev', this.near]);
    this.sh(['ip', 'link', 'set', this.near, 'up']);
    this.sh(['ip', 'netns', 'exec', this.ns, 'ip', 'addr', 'add', `${FAR}/30`, 'dev', this.far]);
    this.sh(['ip', 'netns', 'exec', this.ns, 'ip', 'link', 'set', this.far, 'up']);
    this.sh(['ip', 'netns', 'exec', this.ns, 'ip', 'link', 'set', 'lo', 'up']);
    // Certificates for the far side's name (its address), by our own `vhdsync cert`.
    this.certs = join(this.dir, 'certs');
    this.sh([process.execPath, CLI, 'cert', '--out', this.certs, '--server-names', FAR, '--clients', 'primary']);
    this.vhdsyncRoot = join(this.dir, 'vhdsync-root');
    this.rsyncRoot = join(this.dir, 'rsync-root');
    mkdirSync(join(this.vhdsyncRoot, 'vm'), { recursive: true });
    mkdirSync(this.rsyncRoot, { recursive: true });
    const conf = join(this.dir, 'rsyncd.conf');
    writeFileSync(conf, `use chroot = no\npid file = ${join(this.dir, 'rsyncd.pid')}\n[m]\n  path = ${this.rsyncRoot}\n  read only = false\n  uid = root\n  gid = root\n`);
    this.far_(['rsync', '--daemon', '--no-detach', `--config=${conf}`, `--port=${RSYNC_PORT}`, '--address=127.0.0.1'], 'rsync daemon');
    const serve = this.far_(
      [process.execPath, CLI, 'replica', 'serve', '--listen', `127.0.0.1:${VHDSYNC_PORT}`, '--root', this.vhdsyncRoot, '--json', '--max-active-transfers', '2',
        '--cert', join(this.certs, 'server.crt'), '--key', join(this.certs, 'server.key'), '--ca', join(this.certs, 'ca.crt')],
      'vhdsync replica serve',
    );
    await waitFor(serve, /"listening"/, 'vhdsync replica serve');
    const { loadTlsMaterial } = await import('../../dist/transport/tls-config.js');
    this.tls = await loadTlsMaterial({ cert: join(this.certs, 'primary.crt'), key: join(this.certs, 'primary.key'), ca: join(this.certs, 'ca.crt') });
  }

  /** Spawn a long-running process in the far namespace. */
  far_(args, name) {
    const p = spawn('ip', ['netns', 'exec', this.ns, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.name = name;
    p.stderrText = '';
    p.stderr.on('data', (d) => (p.stderrText += d));
    this.children.push(p);
    return p;
  }

  /** Shape both directions to `rate` bytes/s with `latencyMs` one-way delay (relays restarted). */
  async configure({ rate, latencyMs }) {
    if (this.shape && this.shape.rate === rate && this.shape.latencyMs === latencyMs) return;
    const bits = Math.round(rate * 8);
    // burst: enough for the rate at a 1 ms timer (and at least a few full packets); latency: queue bound.
    const burst = Math.max(16 * 1514, Math.ceil(rate / 250));
    const inFar = (args) => ['ip', 'netns', 'exec', this.ns, ...args];
    for (const [dev, wrap] of [[this.near, (args) => args], [this.far, inFar]]) {
      const del = wrap(['tc', 'qdisc', 'del', 'dev', dev, 'root']);
      run(del[0], del.slice(1));
      this.sh(wrap(['tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${bits}bit`, 'burst', String(burst), 'latency', '200ms']), `tc tbf on ${dev}`);
    }
    for (const r of this.relays ?? []) r.kill('SIGTERM');
    this.relays = [];
    for (const port of [RSYNC_PORT, VHDSYNC_PORT]) {
      const relay = this.far_([process.execPath, join(HERE, 'delay-proxy.mjs'), FAR, String(port + RELAY), String(port), String(latencyMs)], `delay relay ${port}`);
      await waitFor(relay, /listening/, 'delay relay');
      this.relays.push(relay);
    }
    this.shape = { rate, latencyMs };
  }

  vethBytes() {
    const at = (k) => Number(readFileSync(`/sys/class/net/${this.near}/statistics/${k}`, 'utf8'));
    return at('tx_bytes') + at('rx_bytes');
  }

  /** Where a replica goes for each tool, and the name each tool uses for it. */
  stage(replicaAtBreak, name) {
    copyFileSync(replicaAtBreak, join(this.vhdsyncRoot, 'vm', name));
    copyFileSync(replicaAtBreak, join(this.rsyncRoot, name));
    return { vhdsync: join(this.vhdsyncRoot, 'vm', name), rsync: join(this.rsyncRoot, name) };
  }

  /** rsync to the daemon on the far side, as an admin would (`rsync://`), delta algorithm, in place. */
  rsync(src, name, { compress = false } = {}) {
    const args = ['--inplace', '--no-whole-file', '-I', '--stats', ...(compress ? ['-z'] : []), src, `rsync://${FAR}:${RSYNC_PORT + RELAY}/m/${name}`];
    const v0 = this.vethBytes();
    const t0 = process.hrtime.bigint();
    const r = spawnSync('rsync', args, { encoding: 'utf8', maxBuffer: 1 << 20 });
    const t = seconds(t0);
    if (r.status !== 0) throw new Error(`rsync ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
    const num = (label) => Number(new RegExp(`${label}: ([\\d,]+)`).exec(r.stdout)[1].replace(/,/g, ''));
    return { command: `rsync ${args.slice(0, -2).join(' ')} (daemon)`, seconds: t, sent: num('Total bytes sent'), received: num('Total bytes received'), vethBytes: this.vethBytes() - v0 };
  }

  /** Our resync to `vhdsync replica serve` on the far side, with the library (same process as the RSS sampler). */
  async ours(resync, primary, name, { compressForRate }) {
    const v0 = this.vethBytes();
    const t0 = process.hrtime.bigint();
    const res = await resync({ primary, replica: `tls://${FAR}:${VHDSYNC_PORT + RELAY}/vm/${name}`, network: { tls: this.tls }, compress: true, compressForRate });
    const t = seconds(t0);
    if (res.result !== 'completed') throw new Error(`resync over the real link ended '${res.result}'`);
    return {
      seconds: t,
      wireBytes: res.wireBytes,
      payloadBytes: res.bytesSent,
      payloadWireBytes: res.payloadWireBytes,
      compression: res.compression,
      vethBytes: this.vethBytes() - v0,
    };
  }

  async close() {
    for (const p of this.children) if (p.exitCode === null) p.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 200));
    for (const p of this.children) if (p.exitCode === null) p.kill('SIGKILL');
    if (this.vethMade) run('ip', ['link', 'del', this.near]);
    if (this.nsMade) run('ip', ['netns', 'del', this.ns]);
  }
}

function waitFor(child, pattern, what, ms = 15_000) {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${what} did not start within ${ms / 1000} s: ${child.stderrText}`)), ms);
    child.stdout.on('data', (d) => {
      out += d;
      if (pattern.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}): ${child.stderrText.trim()}`));
    });
  });
}
