import { resolve } from 'node:path';
import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import {
  ExtendedReplication, completeFailoverAtSite, extendedView, startFailoverAtSite, stopFailoverAtSite, type ExtendedRecord,
} from '../../replication/extended.js';
import { isNamePattern, shellWord } from '../../replica/vm-name.js';
import type { NetworkSettings } from '../../transport/network-settings.js';
import { formatSize } from '../../units.js';
import { printJson } from '../output.js';
import { ProgressBar } from '../progress.js';
import { vhdsyncHome } from './resync.js';
import { formatList, formatTable, type HomeFlags, tableMiB } from './replication-common.js';

/**
 * `--extended` on the replication verbs (Hyper-V's `-ReplicationRelationshipType Extended`): the same
 * verb, run at the replica site, acts on the extended relationship of the VM's replica there
 * (replication/extended.ts). Each verb adds the flag and hands over here when it is given.
 */
export const EXTENDED_HELP = 'the extended relationship: this site\'s replica of the VM replicated onward to a third site (-ReplicationRelationshipType Extended)';

export function withExtended(cmd: Command, opts: { atSite?: boolean } = {}): Command {
  cmd.option('--extended', EXTENDED_HELP);
  // The failover verbs also run at the extended site itself, from its folder (when B is gone).
  if (opts.atSite) cmd.option('--replica-path <dir>', "at the extended site itself: the replica directory (or replica server --root) holding the VM's extended replica");
  return cmd;
}

export function extendedFor(flags: HomeFlags): ExtendedReplication {
  return new ExtendedReplication(resolve(flags.home ?? vhdsyncHome()));
}

/** `--replication-relationship-type Simple|Extended` (PowerShell's -ReplicationRelationshipType): true for Extended. */
export function relationshipFlag(flags: { extended?: boolean; replicationRelationshipType?: string }): boolean {
  const t = flags.replicationRelationshipType?.trim().toLowerCase();
  if (t !== undefined && t !== 'simple' && t !== 'extended') throw new VhdsyncError('USAGE', `--replication-relationship-type: '${flags.replicationRelationshipType}' is not one of Simple, Extended`);
  if (t === 'simple' && flags.extended) throw new VhdsyncError('USAGE', '--extended and --replication-relationship-type Simple contradict each other');
  return flags.extended === true || t === 'extended';
}

export function extendedTable(recs: ExtendedRecord[]): string {
  const now = new Date();
  return formatTable(
    ['VMName', 'State', 'Health', 'Mode', 'FrequencySec', 'PrimaryServer', 'ReplicaServer', 'ReplicaPort', 'AuthType', 'Relationship'],
    recs.map((r) => {
      const v = extendedView(r, now);
      return [v.VMName, v.State, v.Health, v.Mode, v.FrequencySec, v.PrimaryServer, v.ReplicaServer, v.ReplicaServerPort ?? '', v.AuthenticationType, v.Relationship];
    }),
  );
}

function notes(recs: ExtendedRecord[]): string {
  const lines = recs.flatMap((r) => extendedView(r).ReplicationHealthDetails.map((d) => `${r.name}: ${d}`));
  return lines.length ? '\n' + lines.join('\n') + '\n' : '';
}

function show(flags: HomeFlags, rec: ExtendedRecord): void {
  if (flags.json) printJson(extendedView(rec));
  else process.stdout.write(extendedTable([rec]) + notes([rec]));
}

export async function enableExtended(name: string, flags: HomeFlags & NetworkSettings & { replica: string; replicaPath?: string; frequency?: string; recoveryHistory?: string; disk?: string[] }): Promise<void> {
  if (flags.replicaPath === undefined) throw new VhdsyncError('USAGE', `enable-replication ${name} --extended: give --replica-path, the replica directory (or the replica server's --root) that holds this VM's replica`);
  if (flags.disk !== undefined) throw new VhdsyncError('USAGE', `enable-replication ${name} --extended: the disks are the replica's own (in --replica-path); leave out --disk`);
  const rec = await extendedFor(flags).enable({ name, replicaPath: flags.replicaPath, replica: flags.replica, network: flags, frequency: flags.frequency, recoveryHistory: flags.recoveryHistory });
  show(flags, rec);
}

export async function getExtended(name: string | undefined, flags: HomeFlags & { list?: boolean }): Promise<void> {
  const ext = extendedFor(flags);
  const recs = name === undefined || isNamePattern(name) ? await ext.list(name) : [await ext.load(name)];
  const views = recs.map((r) => extendedView(r));
  if (flags.json) printJson(name !== undefined && !isNamePattern(name) ? views[0] : views);
  else if (recs.length === 0) process.stdout.write('No virtual machine has an extended replication here.\n');
  else if (flags.list) process.stdout.write(formatList(views.map((v) => ({ ...v, ReplicatedDisks: v.ReplicatedDisks.map((d) => d.Path) }))));
  else process.stdout.write(extendedTable(recs) + notes(recs));
}

/** The initial replication or a resynchronization of the extended replica, in the foreground with a progress bar. */
async function runExtended(name: string, flags: HomeFlags, opts: { initial?: boolean; again?: boolean }): Promise<void> {
  const bar = new ProgressBar();
  let out;
  try {
    out = await extendedFor(flags).run(name, { ...opts, onProgress: (disk, done, total) => bar.update(done, total, `disk ${disk}`) });
  } finally {
    bar.done();
  }
  const what = opts.initial ? 'Initial replication' : 'Resynchronization';
  if (flags.json) printJson({ Result: 'completed', ...extendedView(out.rec), BytesSent: out.bytesSent, Cut: out.cut });
  else process.stdout.write(`${what} of the extended replica of ${out.rec.name}: completed at log ${out.cut}, sent ${formatSize(out.bytesSent)}\n` + extendedTable([out.rec]) + notes([out.rec]));
}

export function startInitialExtended(name: string, flags: HomeFlags & { again?: boolean }): Promise<void> {
  return runExtended(name, flags, { initial: true, again: flags.again });
}

export async function resumeExtended(name: string, flags: HomeFlags & { resynchronize?: boolean; continue?: boolean }): Promise<void> {
  const ext = extendedFor(flags);
  if (flags.resynchronize || flags.continue) {
    const rec = await ext.load(name);
    if (flags.continue && rec.state !== 'Resynchronizing') throw new VhdsyncError('STATE', `the extended replication of '${name}' is ${rec.state}; --continue only applies to an interrupted resynchronization`);
    if (flags.resynchronize) await ext.requestResync(name);
    return runExtended(name, flags, {});
  }
  show(flags, await ext.resume(name));
}

export async function suspendExtended(name: string, flags: HomeFlags): Promise<void> {
  show(flags, await extendedFor(flags).suspend(name));
}

export async function setExtended(name: string, flags: HomeFlags & { frequency?: string; recoveryHistory?: string }): Promise<void> {
  show(flags, await extendedFor(flags).set(name, { frequency: flags.frequency, recoveryHistory: flags.recoveryHistory }));
}

export async function removeExtended(name: string, flags: HomeFlags): Promise<void> {
  await extendedFor(flags).remove(name);
  if (flags.json) printJson({ VMName: name, Relationship: 'Extended', Removed: true });
  else process.stdout.write(`extended replication of ${name} removed (the extended replica's files stay where they are)\n`);
}

type SiteFlags = HomeFlags & { replicaPath?: string };

export async function startFailoverExtended(name: string, flags: SiteFlags & { point?: string; planned?: boolean; prepare?: boolean; test?: boolean }): Promise<void> {
  if (flags.planned || flags.prepare || flags.test) {
    throw new VhdsyncError('USAGE', `start-failover ${name} --extended: fails over to the extended replica at a recovery point (as --unplanned); --planned, --prepare and --test are for the primary relationship`);
  }
  const out = flags.replicaPath !== undefined
    ? { ...(await startFailoverAtSite(flags.replicaPath, name, { point: flags.point })), rec: { state: 'FailedOverWaitingCompletion' } }
    : await extendedFor(flags).startFailover(name, { point: flags.point });
  if (flags.json) {
    printJson({ Kind: 'unplanned', Relationship: 'Extended', Point: { Time: out.point.time, Kind: out.point.kind, Sequence: out.point.sequence }, Disks: out.disks, State: out.rec.state });
    return;
  }
  // At the extended site itself (no extended record in this home), the same --replica-path again.
  const how = flags.replicaPath !== undefined ? `--replica-path ${shellWord(resolve(flags.replicaPath))}` : '--extended';
  process.stdout.write(
    [
      `failover of ${name} to its extended replica at ${out.point.time} (${out.point.kind}, cycle ${out.point.sequence})`,
      ...out.disks.map((d) => `  ${d}`),
      `the disks above are the running copy; commit with: vhdsync complete-failover ${shellWord(name)} ${how}   or roll back with: vhdsync stop-failover ${shellWord(name)} ${how}`,
    ].join('\n') + '\n',
  );
}

export async function completeFailoverExtended(name: string, flags: SiteFlags): Promise<void> {
  const out = flags.replicaPath !== undefined ? { ...(await completeFailoverAtSite(flags.replicaPath, name)), rec: { state: 'FailedOver' } } : await extendedFor(flags).completeFailover(name);
  if (flags.json) printJson({ Kind: 'unplanned', Relationship: 'Extended', Point: { Time: out.point.time, Sequence: out.point.sequence }, Disks: out.disks, State: out.rec.state });
  else process.stdout.write(`failover of ${name} to its extended replica completed (point of ${out.point.time}); its disks:\n${out.disks.map((d) => `  ${d}\n`).join('')}`);
}

export async function stopFailoverExtended(name: string, flags: SiteFlags): Promise<void> {
  const out = flags.replicaPath !== undefined ? { ...(await stopFailoverAtSite(flags.replicaPath, name)), rec: { state: 'Replicating' } } : await extendedFor(flags).stopFailover(name);
  if (flags.json) printJson({ Relationship: 'Extended', Removed: out.removed, State: out.rec.state });
  else process.stdout.write(`failover of ${name} to its extended replica stopped; ${name}'s extended replication is ${out.rec.state}\n`);
}

export async function recoveryPointsExtended(name: string, flags: HomeFlags): Promise<void> {
  const points = await extendedFor(flags).points(name);
  if (flags.json) printJson(points.map((p) => ({ Time: p.time, Kind: p.kind, Sequence: p.sequence, SizeOnDisk: p.sizeOnDisk })));
  else process.stdout.write(formatTable(['Time', 'Kind', 'Sequence'], points.map((p) => [p.time, p.kind, p.sequence])));
}

export async function measureExtended(name: string | undefined, flags: HomeFlags): Promise<void> {
  const ext = extendedFor(flags);
  const names = name === undefined || isNamePattern(name) ? (await ext.list(name)).map((r) => r.name) : [name];
  const all = [];
  for (const n of names) all.push(await ext.measure(n));
  if (flags.json) {
    printJson(name === undefined || isNamePattern(name) ? all : all[0]);
    return;
  }
  process.stdout.write(
    formatTable(
      ['VMName', 'State', 'Health', 'LReplTime', 'PReplSize(M)', 'Relationship'],
      all.map((m) => [m.VMName, m.State, m.Health, m.LastReplicationTime ?? '', tableMiB(m.PendingReplicationSize), m.Relationship]),
    ) + all.flatMap((m) => m.ReplicationHealthDetails.map((d) => `${m.VMName}: ${d}\n`)).join(''),
  );
}
