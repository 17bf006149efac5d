import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { resync } from '../host/index.js';
import { loadTlsMaterial } from '../host/transport/tls-config.js';
import { randomBytes } from './support/bytes.js';
import { cli, homeCli } from './support/cli.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { imageDigest } from './support/digest.js';
import { cliCerts, replicaServer, type CliCerts, type ServedReplica } from './support/served-replica.js';
import { MiB } from '../host/units.js';

let dir: string;
let cleanup: () => void;
let certs: string;
let tls: CliCerts;
let root: string;
let server: ServedReplica;
let port: number;

const clientFlags = () => tls.clientFlags();
const serverFlags = () => tls.serverFlags();

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return p;
}

beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-netcli-'));
  certs = join(dir, 'certs');
  tls = cliCerts(certs, { home: join(dir, 'home') }, { clients: 'primary,backup' });
  root = join(dir, 'root');
  server = await replicaServer(tls, root, { home: join(dir, 'server-home') }, { extra: ['--max-active-transfers', '3'] });
  port = server.port;
});
afterAll(async () => {
  await server?.stop();
  cleanup();
});

async function pair(name: string, size: number, seed: number): Promise<{ primary: string; replica: string; url: string }> {
  const writes: [number, Uint8Array][] = [];
  for (let off = 0; off < size; off += 8 * MiB) writes.push([off, randomBytes(MiB, seed + off / MiB)]);
  const primary = await rawImage(join(dir, `${name}.img`), size, writes);
  await mkdir(join(root, name));
  const replica = await rawImage(join(root, name, 'disk.img'), size);
  return { primary, replica, url: `tls://127.0.0.1:${port}/${name}/disk.img` };
}

describe('vhdsync cert, replica serve and resync tls:// (CLI)', () => {
  it('vhdsync cert makes a CA, a server and client certificates that load, with private keys 0600', async () => {
    for (const name of ['server', 'primary', 'backup']) {
      const m = await loadTlsMaterial({ cert: join(certs, `${name}.crt`), key: join(certs, `${name}.key`), ca: join(certs, 'ca.crt') });
      expect(m.caSubject).toBe('CN=vhdsync CA');
      expect((await stat(join(certs, `${name}.key`))).mode & 0o777).toBe(0o600);
    }
    expect((await readFile(join(certs, 'ca.crt'), 'utf8')).startsWith('-----BEGIN CERTIFICATE-----')).toBe(true);
  });

  it('resyncs to the replica server and prints one JSON object', async () => {
    const { primary, replica, url } = await pair('one', 64 * MiB, 1);
    const out = cli(['resync', primary, url, '--json', ...clientFlags()], { home: join(dir, 'home') });
    expect(out.stderr).toBe('');
    expect(out.status).toBe(0);
    const j = JSON.parse(out.stdout);
    expect(j).toMatchObject({ result: 'completed', identical: true, bytesCompared: 64 * MiB, bytesSent: 8 * MiB, reconnects: [] });
    expect(qemuIdentical(primary, replica)).toBe(true);
  });

  it('a VM replicated to the replica server: enable, initial replication, cycles, a resync, all through the CLI', async () => {
    const home = join(dir, 'vmhome');
    const { json: run } = homeCli(home);
    const disk = await rawImage(join(dir, 'vm-sys.img'), 32 * MiB, [[0, randomBytes(MiB, 41)]]);
    const url = `tls://127.0.0.1:${port}/cli-vm`;
    expect(run('enable-replication', 'cli-vm', '--disk', disk, '--replica', url, '--bandwidth', '400mbps', ...clientFlags())).toMatchObject({ ReplicaServer: url, State: 'ReadyForInitialReplication' });
    expect(run('start-initial-replication', 'cli-vm')).toMatchObject({ Result: 'completed', State: 'Replicating' });
    const replica = join(root, 'cli-vm', 'vm-sys.img');
    expect(qemuIdentical(disk, replica)).toBe(true);
    run('workload', 'cli-vm', '--bytes', '2M', '--rate', 'unlimited', '--seed', '5');
    expect(run('service', '--once')[0].Cycle.Result).toBe('replicated');
    expect(qemuIdentical(disk, replica)).toBe(true);
    run('suspend-replication', 'cli-vm');
    run('workload', 'cli-vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '6');
    const out = run('resume-replication', 'cli-vm', '--resynchronize');
    expect(out.Result).toBe('completed');
    expect(run('get-replication', 'cli-vm')).toMatchObject({ State: 'Replicating', Health: 'Normal', ReplicatedDisks: [{ ReplicaPath: `${url}/vm-sys.img` }] });
    expect(qemuIdentical(disk, replica)).toBe(true);
    // Recovery points and a test failover live on the server, asked for from here.
    const points = run('get-recovery-points', 'cli-vm');
    expect(points[0]).toMatchObject({ Kind: 'Latest' });
    const test = run('start-failover', 'cli-vm', '--test');
    expect(test.Disks).toEqual([`${url}/vm-sys.img.test-failover.vhd`]);
    const view = join(root, 'cli-vm', 'vm-sys.img.test-failover.vhd');
    // A differencing VHD over a raw parent (qemu's vpc driver reads no differencing disks): our checksum of both.
    expect(await imageDigest(view)).toBe(await imageDigest(disk));
    expect(run('stop-failover', 'cli-vm', '--test')).toEqual({ Removed: [`${url}/vm-sys.img.test-failover.vhd`] });
    expect(existsSync(view)).toBe(false);
    // The VM's network settings change with set-replication (checked first: a wrong file changes nothing).
    const bad = cli(['set-replication', 'cli-vm', '--cert', join(dir, 'nope.crt'), '--home', home], { home: join(dir, 'home') });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/nope\.crt: no such file/);
    run('set-replication', 'cli-vm', '--bandwidth', 'unlimited', '--cert', join(certs, 'backup.crt'), '--key', join(certs, 'backup.key'));
    const rec = JSON.parse(await readFile(join(home, 'vms', 'cli-vm', 'vm.json'), 'utf8'));
    expect(rec.network).toMatchObject({ bandwidth: 'unlimited', cert: join(certs, 'backup.crt'), key: join(certs, 'backup.key'), ca: join(certs, 'ca.crt') });
    run('workload', 'cli-vm', '--bytes', '256K', '--rate', 'unlimited', '--seed', '7');
    expect(run('service', '--once')[0].Cycle.Result).toBe('replicated');
    // The server's log line may trail the client's answer by a moment.
    for (let i = 0; i < 100 && !server.events().some((e) => e.event === 'started' && e.client === 'backup'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(server.events().filter((e) => e.event === 'started').map((e) => e.client)).toContain('backup');
    expect(qemuIdentical(disk, replica)).toBe(true);
    const local = cli(['set-replication', 'nope', '--bandwidth', '1mbps', '--home', home], { home: join(dir, 'home') });
    expect(local.status).toBe(2);
    const reverse = cli(['reverse-replication', 'cli-vm', '--home', home], { home: join(dir, 'home') });
    expect(reverse.status).toBe(2);
    expect(reverse.stderr).toMatch(/reverse-replication needs 'cli-vm' failed over/);
  });

  it('bad input: one clear line and exit 2', async () => {
    const p = await rawImage(join(dir, 'bad.img'), 8 * MiB);
    const url = `tls://127.0.0.1:${port}/one/disk.img`;
    const unreachable = `tls://127.0.0.1:${await freePort()}/one/disk.img`;
    const cases: [string[], RegExp][] = [
      [['resync', p, url, '--cert', join(certs, 'primary.crt'), '--key', join(certs, 'primary.key')], /needs --ca/],
      [['resync', p, url, '--cert', join(dir, 'nope.crt'), '--key', join(certs, 'primary.key'), '--ca', join(certs, 'ca.crt')], /--cert .*nope.crt: no such file/],
      [['resync', p, url, '--cert', join(certs, 'primary.crt'), '--key', join(certs, 'server.key'), '--ca', join(certs, 'ca.crt')], /--key .* does not belong to --cert/],
      [['resync', p, url, '--cert', join(certs, 'ca.key'), '--key', join(certs, 'primary.key'), '--ca', join(certs, 'ca.crt')], /not a PEM certificate/],
      [['resync', p, url, ...clientFlags(), '--bandwidth', 'fast'], /--bandwidth: 'fast' is not a rate/],
      [['resync', p, url, ...clientFlags(), '--bandwidth-schedule', '9-17=1mbps'], /not a window/],
      [['resync', p, url, ...clientFlags(), '--link', '1mbps'], /--link and --latency simulate a link to a local replica/],
      [['resync', p, join(dir, 'r.img'), ...clientFlags()], /--cert applies to a tls:\/\/HOST:PORT\/NAME\/disk.vhd replica/],
      [['resync', p, 'tls://127.0.0.1/x.img', ...clientFlags()], /expected tls:\/\/HOST:PORT\/NAME\/disk.vhd/],
      [['resync', p, unreachable, ...clientFlags()], /connection refused \(is 'vhdsync replica serve' listening there\?\)/],
      [['resync', '--cancel', url], /resync --cancel tls:.* needs --cert, --key, --ca/],
      [['resync', '--cancel', join(dir, 'r.img'), ...clientFlags()], /--cert applies to a tls:/],
      [['enable-replication', 'v', '--disk', p, '--replica', `tls://127.0.0.1:${port}/v`, '--home', join(dir, 'h')], /needs --cert, --key, --ca/],
      [['enable-replication', 'v', '--disk', p, '--replica', join(dir, 'rr'), '--home', join(dir, 'h'), ...clientFlags()], /--cert applies to a replica server/],
      [['enable-replication', 'v', '--disk', p, '--replica', `tls://127.0.0.1:${port}/a/b`, '--home', join(dir, 'h'), ...clientFlags()], /not a replica server address/],
      [['enable-replication', 'v', '--disk', p, '--replica', unreachable.replace('/one/disk.img', '/v'), '--home', join(dir, 'h'), ...clientFlags()], /connection refused/],
      [['replica', 'serve', '--listen', '127.0.0.1:0', ...serverFlags()], /required option '--root <dir>'/],
      [['replica', 'serve', '--listen', 'localhost', '--root', root, ...serverFlags()], /--listen: 'localhost' is not HOST:PORT/],
      [['replica', 'serve', '--listen', `127.0.0.1:${port}`, '--root', root, ...serverFlags()], /address is already in use/],
      [['replica', 'serve', '--listen', '127.0.0.1:0', '--root', join(dir, 'missing'), ...serverFlags()], /--root .*missing: no such file/],
      [['replica', 'serve', '--listen', '127.0.0.1:0', '--root', root], /replica serve needs --cert, --key, --ca/],
      [['replica', 'serve', '--listen', '127.0.0.1:0', '--root', root, '--max-active-transfers', '0', ...serverFlags()], /--max-active-transfers: '0'/],
      [['cert'], /required option '--out <dir>'/],
    ];
    for (const [args, msg] of cases) {
      const out = cli(args, { home: join(dir, 'home') });
      expect(out.status, args.join(' ')).toBe(2);
      expect(out.stderr, args.join(' ')).toMatch(msg);
      expect(out.stderr.trim().split('\n').length, out.stderr).toBeLessThanOrEqual(2);
      expect(out.stderr).not.toMatch(/at .*\.js:\d+/); // no stack trace
    }
  });

  it('load: 8 resyncs against one server with --max-active-transfers 3 all complete; server memory stays bounded', async () => {
    const size = 64 * MiB;
    const pairs = await Promise.all(Array.from({ length: 8 }, (_, i) => pair(`load${i}`, size, 100 * (i + 1))));
    const tls = await loadTlsMaterial({ cert: join(certs, 'primary.crt'), key: join(certs, 'primary.key'), ca: join(certs, 'ca.crt') });
    const logFrom = server.events().length;
    const t0 = performance.now();
    const results = await Promise.all(pairs.map((p) => resync({ primary: p.primary, replica: p.url, network: { tls } })));
    const seconds = (performance.now() - t0) / 1000;
    for (const [i, r] of results.entries()) {
      expect(r.result).toBe('completed');
      expect(qemuIdentical(pairs[i].primary, pairs[i].replica)).toBe(true);
    }
    const log = server.events().slice(logFrom);
    expect(log.filter((e) => e.event === 'started').map((e) => e.active as number).every((n) => n <= 3)).toBe(true);
    expect(log.filter((e) => e.event === 'queued').length).toBeGreaterThanOrEqual(5);
    // Peak resident memory of the server process over its whole life (Linux: VmHWM).
    const status = await readFile(`/proc/${server.child.pid}/status`, 'utf8');
    const peakMiB = Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024;
    const payload = results.reduce((n, r) => n + r.bytesSent, 0);
    console.log(`[network] load: 8 × ${size / MiB} MiB (${payload / MiB} MiB sent) in ${seconds.toFixed(2)} s; replica server peak RSS ${peakMiB.toFixed(0)} MiB`);
    expect(peakMiB).toBeLessThan(512);
  });

  it('SIGTERM stops the server cleanly', async () => {
    const exited = new Promise<number | null>((r) => server.child.once('exit', (code) => r(code)));
    server.child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
