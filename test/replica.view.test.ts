import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadCore } from '../host/core/index.js';
import { RunningVm } from '../host/replication/running-vm.js';
import { replicateCycle } from '../host/replication/cycle.js';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { homeCli } from './support/cli.js';
import { rawDisk } from './support/images.js';
import { FakeClock, replicatedVm } from './support/replicated-vm.js';
import { tempDir } from './support/temp-dir.js';
import { cliCerts, replicaServer, type CliCerts, type ServedReplica } from './support/served-replica.js';

// Get-VMReplication on the replica side, through the built CLI: what the replica folders say of
// themselves (Mode Replica), in a local replica directory and on a replica server over mutual TLS.
let dir: string;
let cleanup: () => void;
let certs: CliCerts;
let root: string;
let server: ServedReplica | undefined;
let port: number;

beforeAll(async () => {
  await loadCore();
  ({ dir, cleanup } = tempDir('vhdsync-replica-view-'));
  certs = cliCerts(join(dir, 'certs'), { home: join(dir, 'home') });
  root = join(dir, 'root');
  server = await replicaServer(certs, root, { home: join(dir, 'server-home') });
  port = server.port;
});
afterAll(async () => {
  await server?.stop();
  cleanup();
});

const clientFlags = () => certs.clientFlags();

describe('get-replication on the replica side', () => {
  it('--replica-path: Mode Replica, State/Health, last applied time and the recovery points; the failover states as the replica sees them', async () => {
    const d = join(dir, 'local');
    await mkdir(d, { recursive: true });
    // Three hourly cycles with RecoveryHistory 2 (a fake clock for the points' times).
    const clock = new FakeClock(new Date('2026-11-20T08:00:00Z'));
    const a = await rawDisk(join(d, 'a.img'), 4 * MiB, 3);
    const rep = await replicatedVm(d, 'vm', [a], { clock, settings: { recoveryHistory: 2 } });
    for (let k = 1; k <= 3; k++) {
      clock.advance(3600_000);
      const vm = await RunningVm.start(rep, 'vm');
      await vm.write(0, k * 65536, randomBytes(65536, 40 + k));
      await vm.close();
      expect((await replicateCycle(rep, 'vm')).result).toBe('replicated');
    }
    const replica = join(d, 'replica');
    await mkdir(join(replica, 'empty'));
    const { run, ok, json } = homeCli(join(d, 'other-home')); // the replica side has no primary record

    const view = json('get-replication', 'vm', '--replica-path', replica);
    expect(view).toMatchObject({ VMName: 'vm', Mode: 'Replica', Relationship: 'Simple', State: 'Replicating', Health: 'Normal', LastAppliedSequence: 3, ReplicatedDisks: ['a.img'], Failover: null });
    expect(Date.parse(view.LastAppliedLogTime)).not.toBeNaN();
    expect(view.RecoveryPoints.map((p: { Kind: string; Sequence: number }) => [p.Kind, p.Sequence])).toEqual([['Latest', 3], ['Standard', 2], ['Standard', 1]]);
    expect(view.RecoveryPoints[1].Time).toBe('2026-11-20T10:00:00.000Z');
    // Every replica in the directory; a folder without replica.json is not one.
    expect(json('get-replication', '--replica-path', replica).map((v: { VMName: string }) => v.VMName)).toEqual(['vm']);
    expect(json('get-replication', 'empty', '--replica-path', replica)).toMatchObject({ State: 'WaitingForInitialReplication', Health: 'Warning' });
    const text = ok('get-replication', 'vm', '--replica-path', replica).stdout;
    expect(text).toMatch(/^VMName +State +Health +Mode +LastAppliedLogTime +RecoveryPoints +Relationship/);
    expect(text).toMatch(/vm +Replicating +Normal +Replica +\S+ +3 +Simple/);
    expect(text).toMatch(/2026-11-20T10:00:00.000Z +Standard +2/);
    const missing = run('get-replication', 'nope', '--replica-path', replica);
    expect(missing.status).toBe(2);
    expect(missing.stderr.trim().split('\n')).toEqual([expect.stringMatching(/nope: no replica of that name here/)]);

    // The failover lifecycle, seen from the replica.
    const primary = homeCli(join(d, 'home'));
    primary.ok('start-failover', 'vm', '--test');
    expect(json('get-replication', 'vm', '--replica-path', replica)).toMatchObject({ State: 'Replicating', Failover: { Kind: 'test' } });
    primary.ok('stop-failover', 'vm', '--test');
    primary.ok('start-failover', 'vm', '--unplanned', '--point', view.RecoveryPoints[1].Time);
    expect(json('get-replication', 'vm', '--replica-path', replica)).toMatchObject({ State: 'FailedOverWaitingCompletion', Health: 'Warning', Failover: { Kind: 'unplanned', Phase: 'waiting', Sequence: 2 } });
    primary.ok('complete-failover', 'vm');
    const done = json('get-replication', 'vm', '--replica-path', replica);
    expect(done).toMatchObject({ State: 'FailedOver', Health: 'Warning', LastAppliedSequence: 2, Failover: { Kind: 'unplanned', Phase: 'completed' } });
    expect(done.RecoveryPoints.map((p: { Kind: string }) => p.Kind)).toEqual(['Latest']);
  });

  it('--replica-server: the same view from a replica server, one folder or all; refused without a certificate', async () => {
    const d = join(dir, 'net');
    await mkdir(d, { recursive: true });
    const { ok, json } = homeCli(join(d, 'home'));
    const a = await rawDisk(join(d, 'n.img'), 4 * MiB, 5);
    const url = `tls://127.0.0.1:${port}`;
    ok('enable-replication', 'netvm', '--disk', a, '--replica', `${url}/netvm`, ...clientFlags());
    ok('start-initial-replication', 'netvm');
    ok('workload', 'netvm', '--bytes', '256K', '--rate', 'unlimited', '--seed', '6');
    expect(json('service', '--once')[0].Cycle.Result).toBe('replicated');

    const side = homeCli(join(d, 'replica-side-home'));
    const one = side.json('get-replication', 'netvm', '--replica-server', url, ...clientFlags());
    expect(one).toMatchObject({ VMName: 'netvm', Mode: 'Replica', State: 'Replicating', Health: 'Normal', LastAppliedSequence: 1, ReplicatedDisks: ['n.img'] });
    expect(side.json('get-replication', '--replica-server', `${url}/netvm`, ...clientFlags())).toMatchObject({ VMName: 'netvm' });
    expect(side.json('get-replication', '--replica-server', url, ...clientFlags()).map((v: { VMName: string }) => v.VMName)).toContain('netvm');

    ok('start-failover', 'netvm', '--planned');
    expect(side.json('get-replication', 'netvm', '--replica-server', url, ...clientFlags())).toMatchObject({ State: 'FailedOverWaitingCompletion', Failover: { Kind: 'planned', Phase: 'waiting' } });
    ok('stop-failover', 'netvm');
    expect(side.json('get-replication', 'netvm', '--replica-server', url, ...clientFlags())).toMatchObject({ State: 'Replicating', Failover: null });

    const bare = side.run('get-replication', 'netvm', '--replica-server', url);
    expect(bare.status).toBe(2);
    expect(bare.stderr.trim().split('\n')).toHaveLength(1);
    const bad = side.run('get-replication', '../etc', '--replica-server', url, ...clientFlags());
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  });
});
