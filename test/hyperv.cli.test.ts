import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MiB } from '../host/units.js';
import { randomBytes } from './support/bytes.js';
import { cli, newSite } from './support/cli.js';
import { rawDisk } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { until } from './support/until.js';
import { cliCerts, replicaServer, type CliCerts, type ServedReplica } from './support/served-replica.js';

/**
 * Issue 18, "Cmdlets and names": what a Hyper-V administrator types, through the built binary.
 */
let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-hyperv-')));
afterAll(() => cleanup());

const site = () => newSite(dir);

/** A date as PowerShell's en-US culture writes it: "04/15/2013 12:00:00". */
function usDate(d: Date): string {
  const p = (x: number) => String(x).padStart(2, '0');
  return `${p(d.getMonth() + 1)}/${p(d.getDate())}/${d.getFullYear()} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

describe('VM names as Hyper-V allows them', () => {
  it('"RESYNC VM" works in any case; unsafe characters never reach a path; names differing only in them do not collide; plain names keep their folder', async () => {
    const s = await site();
    const disks = await Promise.all(['a', 'b', 'c', 'd', 'e'].map((x) => rawDisk(join(s.d, `${x}.img`), 4 * MiB, 3)));
    const names = ['RESYNC VM', 'a b', 'a:b', '../../escape', 'plain-vm'];
    for (const [i, name] of names.entries()) s.ok('enable-replication', name, '--disk', disks[i], '--replica', s.replica);
    // The state folders: the plain name as itself (as before), the others derived, all distinct, all inside.
    const folders = (await readdir(join(s.home, 'vms'))).sort();
    expect(folders).toHaveLength(5);
    expect(folders).toContain('plain-vm');
    for (const f of folders) expect(f).toMatch(/^[A-Za-z0-9][A-Za-z0-9._-]*(\+[0-9a-f]{12})?$/);
    expect(folders.filter((f) => f.startsWith('a_b+'))).toHaveLength(2);
    expect(existsSync(join(s.d, 'escape'))).toBe(false);
    expect(existsSync(join(dir, 'escape'))).toBe(false);

    // Any case finds it, and prints the name as it was enabled.
    expect(s.json('start-initial-replication', 'resync vm')).toMatchObject({ Result: 'completed', VMName: 'RESYNC VM', State: 'Replicating' });
    expect(s.json('get-replication', 'Resync Vm')).toMatchObject({ VMName: 'RESYNC VM', State: 'Replicating' });
    const derived = folders.find((f) => f.startsWith('RESYNC_VM+'));
    expect(await readdir(s.replica)).toEqual([derived]); // the replica folder is named as the state folder
    expect(qemuIdentical(disks[0], s.json('get-replication', 'RESYNC VM').ReplicatedDisks[0].ReplicaPath)).toBe(true);
    // A second VM whose name differs only in case is refused.
    const again = s.run('enable-replication', 'resync vm', '--disk', await rawDisk(join(s.d, 'x.img'), MiB), '--replica', s.replica);
    expect(again.status).toBe(2);
    expect(again.stderr).toMatch(/a virtual machine named 'RESYNC VM' is already enabled for replication \(names are compared without regard to case/);
    // Names Hyper-V would not take, or that are wildcards here.
    for (const [bad, why] of [['', /empty/], ['x'.repeat(101), /longer than 100/], [' lead', /starts or ends with a space/], ['tab\there', /control character/], ['web*', /wildcards/]] as const) {
      const r = s.run('enable-replication', bad, '--disk', disks[4], '--replica', s.replica);
      expect(r.status, bad).toBe(2);
      expect(r.stderr, bad).toMatch(why);
    }
    expect(s.json('get-replication').map((v: { VMName: string }) => v.VMName).sort()).toEqual([...names].sort());
    // remove-replication in another case removes that VM's folder only.
    s.ok('remove-replication', 'a B');
    expect((await readdir(join(s.home, 'vms'))).length).toBe(4);
    expect(s.json('get-replication', 'A:B').VMName).toBe('a:b');
  });

  it('a home written before derived names (plain folders, including two that differ in case) is read as it is', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 4 * MiB, 1);
    const q = await rawDisk(join(s.d, 'q.img'), 4 * MiB, 2);
    s.ok('enable-replication', 'Web01', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'Web01');
    expect(existsSync(join(s.home, 'vms', 'Web01', 'vm.json'))).toBe(true);
    expect(existsSync(join(s.replica, 'Web01', 'p.img'))).toBe(true);
    // An old home could hold "web01" beside "Web01" (names were case-sensitive then): copy the record in by hand.
    s.ok('enable-replication', 'other', '--disk', q, '--replica', s.replica);
    const rec = JSON.parse(execFileSync('cat', [join(s.home, 'vms', 'other', 'vm.json')], { encoding: 'utf8' }));
    await mkdir(join(s.home, 'vms', 'web01'));
    await writeFile(join(s.home, 'vms', 'web01', 'vm.json'), JSON.stringify({ ...rec, name: 'web01' }));
    expect(s.json('get-replication', 'Web01').VMName).toBe('Web01'); // the exact name wins
    expect(s.json('get-replication', 'web01').VMName).toBe('web01');
    const r = s.run('get-replication', 'WEB01');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/'WEB01' matches 'Web01' and 'web01'.*give the exact name/);
  });
});

describe('PowerShell spellings after the verb', () => {
  it("Set-VMReplication's and Resume-VMReplication's parameters work as the seed writes them", async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 4 * MiB, 4);
    s.ok('enable-replication', 'RESYNC VM', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'RESYNC VM');
    // -Name value, --Name value, -Name:value, and the cmdlets' aliases.
    const set = s.json('set-replication', 'RESYNC VM', '-AutoResynchronizeEnabled', '1', '--AutoResynchronizeIntervalStart', '00:00:00', '-AutoResyncEnd:23:59:59', '-ReplicationFrequencySec', '30', '-RecHist', '2');
    expect(set).toMatchObject({ AutoResynchronizeEnabled: true, AutoResynchronizeIntervalStart: '00:00:00', AutoResynchronizeIntervalEnd: '23:59:59', FrequencySec: 30, RecoveryHistory: 2 });
    expect(s.json('set-replication', '-VMName', 'RESYNC VM', '-AutoResynchronizeEnabled', '$false').AutoResynchronizeEnabled).toBe(false);
    // Resume … -Resynchronize -ResynchronizeStartTime "MM/dd/yyyy HH:mm:ss" (the seed's format), within 7 days.
    s.ok('suspend-replication', 'RESYNC VM');
    const at = new Date(Date.now() + 2 * 24 * 3600_000);
    at.setMilliseconds(0);
    const resumed = s.json('resume-replication', 'RESYNC VM', '-Resynchronize', '-ResynchronizeStartTime', usDate(at));
    expect(resumed).toMatchObject({ State: 'WaitingForStartResynchronize', ResynchronizeStartTime: at.toISOString() });
    // An unknown parameter is refused, not guessed.
    const r = s.run('set-replication', 'RESYNC VM', '-AutoResynchronizeBogus', '1');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/unknown option '-AutoResynchronizeBogus'/);
    const late = s.run('resume-replication', 'RESYNC VM', '-Resync', '-ResyncStart', usDate(new Date(Date.now() + 8 * 24 * 3600_000)));
    expect(late.status).toBe(2);
    expect(late.stderr).toMatch(/more than 7 days ahead/);
  });
});

describe('get-replication and measure-replication as Get-/Measure-VMReplication', () => {
  it('--list shows every property; --replication-state, --health and wildcards filter; measure adds CurrentTask, LastReplicationType, InitialReplicationSize', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 8 * MiB, 5);
    const b = await rawDisk(join(s.d, 'b.img'), 4 * MiB, 6);
    s.ok('enable-replication', 'WEB01', '--disk', a, '--replica', s.replica, '--auto-resynchronize-enabled', '1');
    s.ok('enable-replication', 'SQL01', '--disk', b, '--replica', s.replica);
    expect(s.json('measure-replication', 'WEB01')).toMatchObject({ InitialReplicationSize: 0, LastReplicationType: 'None', CurrentTask: null });
    s.ok('start-initial-replication', 'WEB01');

    const list = s.ok('get-replication', 'web*', '--list').stdout;
    for (const key of ['VMName', 'ReplicationState', 'ReplicationHealth', 'AutoResynchronizeEnabled', 'AutoResynchronizeIntervalStart', 'AutoResynchronizeIntervalEnd', 'RecoveryHistory', 'ReplicaServerPort', 'AuthenticationType', 'ReplicationFrequencySec', 'ReplicatedDisks']) {
      expect(list).toMatch(new RegExp(`^${key} +:`, 'm'));
    }
    expect(list).toMatch(/^AutoResynchronizeEnabled +: True$/m);
    expect(list).toMatch(/^AutoResynchronizeIntervalStart +: 18:30:00$/m);
    expect(list).toMatch(/^AuthenticationType +: None$/m);
    expect(list).not.toMatch(/SQL01/);

    const names = (args: string[]) => s.json('get-replication', ...args).map((v: { VMName: string }) => v.VMName).sort();
    expect(names(['*01'])).toEqual(['SQL01', 'WEB01']);
    expect(names(['?QL0[0-9]'])).toEqual(['SQL01']);
    expect(names(['nothing*'])).toEqual([]);
    expect(names(['--replication-state', 'replicating'])).toEqual(['WEB01']);
    expect(names(['--replication-state', 'ReadyForInitialReplication'])).toEqual(['SQL01']);
    expect(names(['--health', 'Warning'])).toEqual(['SQL01']);
    expect(names(['-ReplicationHealth', 'Normal'])).toEqual(['WEB01']);
    const bad = s.run('get-replication', '--replication-state', 'Sleeping');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--replication-state: 'Sleeping' is not one of Disabled, ReadyForInitialReplication/);

    const m = s.json('measure-replication', 'WEB01');
    expect(m.InitialReplicationSize).toBeGreaterThan(0); // what the initial replication sent (the seeded bytes)
    expect(m.InitialReplicationSize).toBeLessThanOrEqual(8 * MiB);
    expect(m.LastReplicationType).toBe('None');
    s.ok('write', 'WEB01', '--offset', '0', '--length', '64K', '--pattern', '0x5a');
    s.ok('service', '--once');
    const after = s.json('measure-replication', 'WEB01');
    expect(after).toMatchObject({ LastReplicationType: 'Regular', SuccessfulReplicationCount: 1 });
    expect(s.ok('measure-replication', 'web01').stdout).toMatch(/CurrentTask +None\n +LastReplicationType +Regular\n +InitialReplicationSize +[\d.]+ (KiB|MiB)/);

    // Reset-VMReplicationStatistics: the interval starts again; the counters stay.
    const counters = after.Counters['Replication Count'];
    const reset = s.json('reset-replication-statistics', 'web01');
    expect(reset).toEqual([{ VMName: 'WEB01', MonitoringStartTime: expect.any(String) }]);
    const m2 = s.json('measure-replication', 'WEB01');
    expect(m2).toMatchObject({ SuccessfulReplicationCount: 0, AverageReplicationSize: 0, MonitoringStartTime: reset[0].MonitoringStartTime });
    expect(m2.Counters['Replication Count']).toBe(counters);
    expect(s.run('reset-replication-statistics', 'nosuch').stderr).toMatch(/no virtual machine named 'nosuch'/);
  });

  it('CurrentTask follows a resync: its % done and scope while it runs and once suspended; 29244 says cancelled for a cancel and counts the time across pauses', async () => {
    const s = await site();
    const a = await rawDisk(join(s.d, 'a.img'), 16 * MiB);
    const b = await rawDisk(join(s.d, 'b.img'), 48 * MiB);
    s.ok('enable-replication', 'RESYNC VM', '--disk', a, b, '--replica', s.replica);
    s.ok('start-initial-replication', 'RESYNC VM');
    // Changed while off: every block differs (and does not compress).
    await writeFile(a, randomBytes(16 * MiB, 61));
    await writeFile(b, randomBytes(48 * MiB, 62));
    s.ok('service', '--once');
    expect(s.json('get-replication', 'RESYNC VM').State).toBe('WaitingForStartResynchronize');

    let bg = s.background('resume-replication', 'RESYNC VM', '--resynchronize', '--link', '8MB/s', '--json');
    await until(() => s.json('measure-replication', 'RESYNC VM').CurrentTask?.Disk === 1, 'the resync to reach disk 1');
    const running = s.json('measure-replication', 'RESYNC VM').CurrentTask;
    expect(running).toMatchObject({ Task: 'Resynchronization', State: 'Resynchronizing', Running: true, Scope: 'Full', Disk: 1, BytesTotal: 64 * MiB });
    // Disk 0 (a quarter of the bytes) is done.
    expect(running.PercentComplete).toBeGreaterThanOrEqual(25);
    expect(running.PercentComplete).toBeLessThan(100);
    s.ok('suspend-replication', 'RESYNC VM');
    let done = await bg.exited;
    expect(done.code, done.stderr).toBe(3);
    const suspended = s.json('measure-replication', 'RESYNC VM').CurrentTask;
    expect(suspended).toMatchObject({ Task: 'Resynchronization', State: 'ResynchronizeSuspended', Running: false, Disk: 1 });
    expect(suspended.PercentComplete).toBeGreaterThanOrEqual(25);
    expect(s.ok('measure-replication', 'RESYNC VM').stdout).toMatch(/CurrentTask +Resynchronization \d+ % \(scope Full, disk 1 \w+, not running\)/);
    const first = s.json('events', 'RESYNC VM', '--id', '29244').pop();
    expect(first).toMatchObject({ Result: 'paused' });
    expect(first.Seconds).toBe(first.SessionSeconds);

    // Continue, then cancel it (stop-replication): 29244 says cancelled, with the time of both sessions.
    bg = s.background('resume-replication', 'RESYNC VM', '--continue', '--link', '8MB/s', '--json');
    await until(() => s.json('events', 'RESYNC VM', '--id', '29242').length === 3, 'the 29242 of disk 1 continued');
    expect(s.json('stop-replication', 'RESYNC VM')).toMatchObject({ State: 'WaitingForStartResynchronize' });
    done = await bg.exited;
    expect(JSON.parse(done.stdout).Result).toBe('cancelled');
    const last = s.json('events', 'RESYNC VM', '--id', '29244').pop();
    expect(last).toMatchObject({ Result: 'cancelled', LevelDisplayName: 'Warning' });
    expect(last.Seconds).toBeCloseTo(first.Seconds + last.SessionSeconds, 6);
    expect(last.Message).toMatch(/cancelled: \d+ blocks sent in [\d.]+ s in total \([\d.]+ s in this session\)/);
    expect(s.json('measure-replication', 'RESYNC VM').CurrentTask).toBeNull();

    // A new resync starts from the beginning, and its time starts from zero.
    const again = s.json('resume-replication', 'RESYNC VM', '--resynchronize');
    expect(again.Result).toBe('completed');
    const end = s.json('events', 'RESYNC VM', '--id', '29244').pop();
    expect(end).toMatchObject({ Result: 'completed' });
    expect(end.Seconds).toBe(end.SessionSeconds);
    const folder = join(s.replica, (await readdir(s.replica))[0]);
    expect(qemuIdentical(a, join(folder, 'a.img'))).toBe(true);
    expect(qemuIdentical(b, join(folder, 'b.img'))).toBe(true);
  });
});

describe('the new commands in help and completion', () => {
  it('help lists them under Replication; bash and zsh complete them and their options', () => {
    const help = cli(['--help'], { home: join(dir, 'home'), env: { VHDSYNC_NO_HELP_CACHE: '1' } }).stdout;
    const replication = help.slice(help.indexOf('Replication:'), help.indexOf('Running VMs:'));
    for (const c of ['reset-replication-statistics', 'test-replication-connection', 'import-initial-replication']) expect(replication).toContain(c);
    const bash = cli(['completion', 'bash'], { home: join(dir, 'home') }).stdout;
    expect(bash).toMatch(/test-replication-connection\) opts='[^']*--vm[^']*--cert/);
    expect(bash).toMatch(/get-replication\) opts='[^']*--list --replication-state --health/);
    expect(bash).toMatch(/import-initial-replication\) opts='[^']*--path --replica-root/);
    expect(bash).toMatch(/start-initial-replication\) opts='[^']*--use-existing-replica --destination-path --initial-replication-start-time/);
    expect(cli(['completion', 'zsh'], { home: join(dir, 'home') }).stdout).toContain("'reset-replication-statistics:Reset the replication statistics of a VM'");
  });
});

describe('forcing a resynchronization', () => {
  it('from Replicating is refused with the way Hyper-V does it: suspend first', async () => {
    const s = await site();
    const p = await rawDisk(join(s.d, 'p.img'), 4 * MiB, 8);
    s.ok('enable-replication', 'RESYNC VM', '--disk', p, '--replica', s.replica);
    s.ok('start-initial-replication', 'RESYNC VM');
    const r = s.run('resume-replication', 'RESYNC VM', '--resynchronize');
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe(
      "vhdsync: virtual machine 'RESYNC VM' is Replicating; to force a resynchronization, suspend replication first (vhdsync suspend-replication 'RESYNC VM'), then resume-replication 'RESYNC VM' --resynchronize, as Hyper-V requires",
    );
    expect(s.json('get-replication', 'RESYNC VM').State).toBe('Replicating');
    s.ok('suspend-replication', 'RESYNC VM');
    expect(s.json('resume-replication', 'RESYNC VM', '--resynchronize')).toMatchObject({ Result: 'completed', State: 'Replicating' });
  });
});

describe('test-replication-connection', () => {
  let certs: string;
  let root: string;
  let server: ServedReplica | undefined;
  let port: number;
  let tls: CliCerts;
  const client = () => tls.clientFlags();
  beforeAll(async () => {
    certs = join(dir, 'certs');
    tls = cliCerts(certs, { home: join(dir, 'home') });
    cliCerts(join(dir, 'other-certs'), { home: join(dir, 'home') }, { serverNames: '127.0.0.1' });
    root = join(dir, 'root');
    server = await replicaServer(tls, root, { home: join(dir, 'server-home') });
    port = server.port;
  });
  afterAll(() => server?.stop());

  it('checks what enable-replication checks: the server, mutual TLS, the folder; a directory can be written', async () => {
    const s = await site();
    const ok = s.json('test-replication-connection', `tls://127.0.0.1:${port}/RESYNC_VM`, ...client());
    expect(ok).toMatchObject({ Result: 'Succeeded', ReplicaServerName: '127.0.0.1', ReplicaServerPort: port, AuthenticationType: 'Certificate', Folder: 'RESYNC_VM' });
    expect(ok.CertificateThumbprint).toMatch(/^[0-9A-F]{40}$/);
    expect(await readdir(root)).toEqual([]); // nothing was made there

    // A client certificate of another CA, nobody listening, certificates missing: one line each, exit 2.
    const other = ['--cert', join(dir, 'other-certs', 'primary.crt'), '--key', join(dir, 'other-certs', 'primary.key'), '--ca', join(certs, 'ca.crt')];
    for (const [args, why] of [
      [[`tls://127.0.0.1:${port}`, ...other], /certificate|TLS|refused|authenticat/i],
      [['tls://127.0.0.1:1/x', ...client()], /127\.0\.0\.1:1/],
      [[`tls://127.0.0.1:${port}`], /needs --cert, --key, --ca/],
      [[join(s.d, 'p.img')], /not a folder/],
    ] as const) {
      if (args[0].endsWith('p.img')) await rawDisk(args[0], MiB);
      const r = s.run('test-replication-connection', ...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr, args.join(' ')).toMatch(why);
    }

    // Test-VMReplicationConnection's own parameters, as a runbook writes them.
    const named = s.json('test-replication-connection', '-ReplicaServerName', '127.0.0.1', '-ReplicaServerPort', String(port), '-AuthenticationType', 'Certificate', ...client());
    expect(named).toMatchObject({ Result: 'Succeeded', ReplicaServerPort: port });
    const kerberos = s.run('test-replication-connection', '-ReplicaServerName', '127.0.0.1', '-ReplicaServerPort', String(port), '-AuthenticationType', 'Kerberos', ...client());
    expect(kerberos.status).toBe(2);
    expect(kerberos.stderr).toMatch(/'Kerberos' is not available; vhdsync authenticates with certificates only/);

    // A local directory (made later by enable), and a VM's own replica with its own settings.
    expect(s.json('test-replication-connection', join(s.d, 'not-yet', 'replica'))).toMatchObject({ Result: 'Succeeded', AuthenticationType: 'None' });
    const p = await rawDisk(join(s.d, 'q.img'), 4 * MiB, 9);
    s.ok('enable-replication', 'RESYNC VM', '--disk', p, '--replica', `tls://127.0.0.1:${port}`, ...client());
    const vmTest = s.json('test-replication-connection', '--vm', 'resync vm');
    expect(vmTest).toMatchObject({ Result: 'Succeeded', ReplicaServerPort: port, Folder: expect.stringMatching(/^RESYNC_VM\+[0-9a-f]{12}$/) });
    const g = s.json('get-replication', 'RESYNC VM');
    expect(g).toMatchObject({ ReplicaServerName: '127.0.0.1', ReplicaServerPort: port, AuthenticationType: 'Certificate', CertificateThumbprint: ok.CertificateThumbprint });
    // The VM replicates under its derived folder on the server.
    expect(s.json('start-initial-replication', 'RESYNC VM').Result).toBe('completed');
    expect(await readdir(root)).toEqual([vmTest.Folder]);
  });
});
