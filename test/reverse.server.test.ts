import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { copyFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { openDisk } from '../host/disk/index.js';
import { Replication } from '../host/replication/replication.js';
import { enableReplication } from '../host/replication/enable.js';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { homeCli } from './support/cli.js';
import { rawDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { cliCerts, replicaServer, type CliCerts, type ServedReplica } from './support/served-replica.js';

// Reverse replication of a VM that failed over to a replica server, run on that server's machine and
// replicating back to the old primary's side through a replica server there (two servers, mutual TLS).
let dir: string;
let cleanup: () => void;
let certs: CliCerts;
const servers: ServedReplica[] = [];

/** A replica server serving `root` (made when missing); its port. */
async function serve(root: string): Promise<number> {
  const server = await replicaServer(certs, root, { home: join(dir, `server-home-${servers.length}`) });
  servers.push(server);
  return server.port;
}

beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-reverse-srv-'));
  certs = cliCerts(join(dir, 'certs'), { home: join(dir, 'home') });
});
afterAll(async () => {
  for (const s of servers) await s.stop();
  cleanup();
});

const tlsFlags = () => certs.clientFlags();

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
    await enableReplication(new Replication(homeB), { name: 'vm', disks: [join(rootB, 'vm', 'a.img')], replica: `tls://127.0.0.1:${portA}/vm`, network: { cert: join(certs.dir, 'primary.crt'), key: join(certs.dir, 'primary.key'), ca: join(certs.dir, 'ca.crt') } });
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
