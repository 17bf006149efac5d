import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { openDisk } from '../host/disk/index.js';
import { Replication } from '../host/replication/replication.js';
import { CLI, cli, homeCli, qemuIdentical, randomBytes, tempDir } from './support/files.js';
import { MiB, rawDisk } from './replication.support.js';
import { enableReplication } from '../host/replication/enable.js';

// Reverse replication of a VM that failed over to a replica server, run on that server's machine and
// replicating back to the old primary's side through a replica server there (two servers, mutual TLS).
let dir: string;
let cleanup: () => Promise<void>;
let certs: string;
const servers: ChildProcess[] = [];

function serve(root: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const args = ['--listen', '127.0.0.1:0', '--root', root, '--cert', join(certs, 'server.crt'), '--key', join(certs, 'server.key'), '--ca', join(certs, 'ca.crt')];
    const child = spawn(process.execPath, [CLI, 'replica', 'serve', '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    servers.push(child);
    let buffered = '';
    child.stdout!.on('data', (x) => {
      buffered += x;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const e = JSON.parse(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
        if (e.event === 'listening') resolve(e.port);
      }
    });
    let stderr = '';
    child.stderr!.on('data', (x) => (stderr += x));
    child.on('exit', (code) => reject(new Error(`replica serve exited ${code}: ${stderr}`)));
  });
}

beforeAll(async () => {
  ({ dir, cleanup } = await tempDir('vhdsync-reverse-srv-'));
  certs = join(dir, 'certs');
  const made = cli(['cert', '--out', certs, '--server-names', '127.0.0.1,localhost', '--clients', 'primary']);
  expect(made.status, made.stderr).toBe(0);
});
afterAll(async () => {
  for (const s of servers) {
    if (s.exitCode !== null) continue;
    const exited = new Promise((r) => s.once('exit', r));
    s.kill('SIGTERM');
    await exited;
  }
  await cleanup();
});

const tlsFlags = () => ['--cert', join(certs, 'primary.crt'), '--key', join(certs, 'primary.key'), '--ca', join(certs, 'ca.crt')];

describe('reverse-replication through replica servers', () => {
  it('fail over to server B, reverse on B back to the old primary served by A: a resync, then cycles; the replica folder on B is a primary now', async () => {
    const rootA = join(dir, 'rootA');
    const rootB = join(dir, 'rootB');
    await mkdir(rootA);
    await mkdir(rootB);
    const portA = await serve(rootA);
    const portB = await serve(rootB);
    const siteA = join(dir, 'siteA');
    await mkdir(siteA);
    const a = await rawDisk(join(siteA, 'a.img'), 8 * MiB, 51);
    const primary = homeCli(join(siteA, 'home'));
    primary.ok('enable-replication', 'vm', '--disk', a, '--replica', `tls://127.0.0.1:${portB}/vm`, ...tlsFlags());
    primary.ok('start-initial-replication', 'vm');
    primary.ok('workload', 'vm', '--bytes', '1M', '--rate', 'unlimited', '--seed', '52');
    expect(primary.json('service', '--once')[0].Cycle.Result).toBe('replicated');

    const failed = primary.json('start-failover', 'vm', '--planned');
    expect(failed).toMatchObject({ State: 'FailedOverWaitingCompletion' });
    // From the primary's home it is refused with the way to do it.
    const here = primary.run('reverse-replication', 'vm');
    expect(here.status).toBe(2);
    expect(here.stderr.trim().split('\n')).toEqual([expect.stringMatching(/failed over to the replica server .*: reverse it on that server's machine \(vhdsync reverse-replication vm --replica-path <its --root> --replica tls:\/\/<this host>:PORT\/vm\)/)]);

    // The failed-over VM writes to its running copy on B.
    const view = join(rootB, 'vm', 'a.img.failover.vhd');
    const v = await openDisk(view);
    await v.write(3 * MiB, randomBytes(300_000, 53));
    await v.close();
    // On A, a replica server serves the old primary disk as vm/a.img (here: a copy put under its root).
    await mkdir(join(rootA, 'vm'));
    await copyFile(a, join(rootA, 'vm', 'a.img'));

    // A first reverse on B killed right after it enabled the VM (before anything else): simulated by
    // enabling it as that run would have; the run below finishes it, the failover's writes included.
    const homeB = join(dir, 'homeB');
    await enableReplication(new Replication(homeB), { name: 'vm', disks: [join(rootB, 'vm', 'a.img')], replica: `tls://127.0.0.1:${portA}/vm`, network: { cert: join(certs, 'primary.crt'), key: join(certs, 'primary.key'), ca: join(certs, 'ca.crt') } });
    const siteB = homeCli(homeB);
    const out = siteB.json('reverse-replication', 'vm', '--replica-path', rootB, '--replica', `tls://127.0.0.1:${portA}/vm`, ...tlsFlags());
    expect(out).toMatchObject({ Result: 'completed' });
    const newPrimary = join(rootB, 'vm', 'a.img');
    expect(qemuIdentical(newPrimary, join(rootA, 'vm', 'a.img'))).toBe(true);
    // The failed-over VM's writes reached A's side; the original file outside A's root was not touched.
    expect(qemuIdentical(newPrimary, a)).toBe(false);
    // Nothing of a replica is left in B's folder: it holds a primary disk now.
    for (const f of ['replica.json', 'failover.json', 'logs', 'a.img.failover.vhd', 'a.img.recovery-points']) expect(existsSync(join(rootB, 'vm', f))).toBe(false);
    expect(siteB.json('get-replication', 'vm')).toMatchObject({ State: 'Replicating', ReplicaServer: `tls://127.0.0.1:${portA}/vm` });
    expect(siteB.json('get-replication', 'vm', '--replica-server', `tls://127.0.0.1:${portA}`, ...tlsFlags())).toMatchObject({ Mode: 'Replica', State: 'Replicating' });

    siteB.ok('workload', 'vm', '--bytes', '512K', '--rate', 'unlimited', '--seed', '54');
    expect(siteB.json('service', '--once')[0].Cycle.Result).toBe('replicated');
    expect(qemuIdentical(newPrimary, join(rootA, 'vm', 'a.img'))).toBe(true);

    // A second reverse of the same VM here is refused in one line.
    const again = siteB.run('reverse-replication', 'vm', '--replica-path', rootB, '--replica', `tls://127.0.0.1:${portA}/vm`, ...tlsFlags());
    expect(again.status).toBe(2);
    expect(again.stderr.trim().split('\n')).toEqual([expect.stringMatching(/a virtual machine 'vm' is already enabled in this home \(Replicating\)/)]);
  });
});
