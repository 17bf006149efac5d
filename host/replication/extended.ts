import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { openDisk } from '../disk/index.js';
import { VhdsyncError } from '../errors.js';
import { EventLog } from '../events/event-log.js';
import { writeFileAtomic } from '../fsutil.js';
import { jsonText } from '../json-text.js';
import { FieldError, readStateFile, type StateFile } from '../state-file.js';
import { tryLock, lockHolder, withLock } from '../pid-lock.js';
import { dropKept, extendedLogsDir, keptBytes, keptLogs, stopKeeping } from '../replica/extended-logs.js';
import { resync } from '../resync/resync.js';
import { isReplicaAddress, parseSiteAddress } from '../transport/replica-address.js';
import { anyNetworkSetting, givenNetwork, loadNetwork, type NetworkSettings, checkNetworkField } from '../transport/network-settings.js';
import { choosePoint } from './failover.js';
import { LOG_SIZE_LIMIT_RATIO, resyncRequiredMessage } from './names.js';
import { RESYNC_REASONS, type ReplicationHealth, type ResyncReason } from '../replica/states.js';
import type { RecoveryPoint } from '../replica/recovery-points.js';
import { RemoteReplicaSite } from '../replica/remote-site.js';
import { LocalReplicaSite } from '../replica/local-site.js';
import type { ReplicaDiskSpec, ReplicaSite } from '../replica/site.js';
import { systemClock, type Clock } from './schedule.js';
import { parseRecoveryHistory } from './settings.js';
import { VmStore } from './store.js';
import { checkVmName, namePattern, sameVmName, shellWord, vmFolderName } from '../replica/vm-name.js';

/**
 * Extended replication (Hyper-V's Enable-VMReplication run on the replica server for the replica VM):
 * the replica at this site (B) is replicated onward to a third site (C). B's replica of a VM is the
 * primary of the extended relationship; the writes it receives are the primary's logs B applies, so
 * those are what B ships onward: each applied cycle is kept (replica/extended-logs.ts, hard-linked
 * before its first write lands, durable) and the extended cycle sends the kept cycles that the
 * extended replica has not applied yet, in the primary's own sequence, then deletes them. A crash of B
 * anywhere between its apply and the extended cycle loses nothing: the apply is resumed, the kept log
 * stays until C has applied it. The extended replica is an ordinary replica folder (replica.json says
 * Extended: get-replication there shows Mode ExtendedReplica) with its own recovery points.
 *
 * The record is `<home>/extended/<vm folder>/extended.json` in B's home. States as Hyper-V names them:
 *   ReadyForInitialReplication → InitialReplicationInProgress → Replicating ⇄ Suspended
 *   Replicating → WaitingForStartResynchronize (a trigger below) → Resynchronizing → Replicating
 *   Replicating | … → FailedOverWaitingCompletion (start-failover --extended) → FailedOver | back (stop-failover)
 *
 * Triggers where they apply to a replica as primary (the evidence, not a flag):
 * - modified / reverted: B's replica.json carries a base id that every rebase changes (a resync of the
 *   primary relationship, a completed failover, a revert): the disks changed outside the logs.
 * - onward tracking lost (the log write failure of this relationship): a cycle applied at B that is
 *   not kept (the folder deleted, a link that failed).
 * - kept logs > 50 % of the VM's disks.
 * - out of sequence / invalid at the extended replica (C restored from a backup, modified, a bad log),
 *   and C ahead of B.
 * - not closed gracefully does not apply: a kept log is a whole file linked in one step, and an
 *   apply killed half-way at B is resumed there and linked again.
 * The resync (B↔C) takes a cut — B's last applied cycle, under B's site lock with keeping on — then
 * compares B's disks with C's while B goes on applying; every byte that changes at B after the cut is
 * in a kept log after it, so C, rebased at the cut, becomes equal by the ordinary cycles that follow.
 */
export const EXTENDED_FREQUENCIES = [300, 900] as const;

export type ExtendedState =
  | 'ReadyForInitialReplication'
  | 'InitialReplicationInProgress'
  | 'Replicating'
  | 'Suspended'
  | 'WaitingForStartResynchronize'
  | 'Resynchronizing'
  | 'FailedOverWaitingCompletion'
  | 'FailedOver';

export interface ExtendedRecord {
  version: 1;
  name: string;
  /** The replica directory (or a replica server's --root) on this machine that holds the replica being extended. */
  replicaRoot: string;
  /** The replica's folder under it (vm-name.ts). */
  folder: string;
  /** The extended replica: a directory, or a replica server tls://HOST:PORT/NAME. */
  replica: string;
  network?: NetworkSettings;
  /** The primary VM's id: the logs carry it, and so does the extended replica. */
  vmId: string;
  disks: ReplicaDiskSpec[];
  settings: { ReplicationFrequencySec: number; RecoveryHistory: number };
  state: ExtendedState;
  /** B's replica base (replica.json) when the extended replica was last made equal to it. */
  base: string | null;
  resync: { reason: ResyncReason; evidence: string; requiredAt: string; cut?: number; base?: string | null; startedAt?: string } | null;
  lastAppliedSequence: number;
  lastReplicationTime: string | null;
  lastCycleAt: string | null;
  lastError: string | null;
  successfulReplicationCount: number;
  createdAt: string;
}

export interface ExtendedEnableInput {
  name: string;
  /** The replica directory (or replica server --root) holding the VM's replica. */
  replicaPath: string;
  replica: string;
  network?: NetworkSettings;
  frequency?: string | number;
  recoveryHistory?: string | number;
}

export type ExtendedCycleOutcome =
  | { result: 'replicated'; sequences: number[]; bytes: number }
  | { result: 'resync-required'; reason: ResyncReason; evidence: string }
  | { result: 'failed'; error: string }
  | { result: 'skipped'; why: string };

export function parseExtendedFrequency(text: string | number): number {
  const n = typeof text === 'number' ? text : Number(String(text).trim());
  if (!(EXTENDED_FREQUENCIES as readonly number[]).includes(n)) {
    throw new VhdsyncError('USAGE', `--frequency: '${text}' is not a frequency for extended replication; use 300 or 900 seconds (Hyper-V replicates to an extended replica every 5 or 15 minutes, never every 30 seconds)`);
  }
  return n;
}

const RECORD = 'extended.json';

const STATES: readonly ExtendedState[] = [
  'ReadyForInitialReplication', 'InitialReplicationInProgress', 'Replicating', 'Suspended', 'WaitingForStartResynchronize', 'Resynchronizing', 'FailedOverWaitingCompletion', 'FailedOver',
];

/** `extended.json`, every field checked as it is read (host/state-file.ts). */
function extendedStateFile(name: string): StateFile<ExtendedRecord> {
  return {
    what: 'the extended replication state',
    version: 1,
    fix: `remove it (vhdsync remove-replication ${shellWord(name)} --extended) and enable it again`,
    read: (f) => {
      f.string('name');
      for (const k of ['replicaRoot', 'replica', 'vmId']) f.string(k);
      f.fileName('folder');
      checkNetworkField(f);
      f.disks('disks', (x) => {
        x.fileName('name');
        x.string('diskId');
        x.int('virtualSize');
        x.oneOf('format', ['raw', 'vhd', 'vhdx']);
        x.int('sectorSize', 1);
      });
      const settings = f.object('settings');
      if (!(EXTENDED_FREQUENCIES as readonly number[]).includes(settings.int('ReplicationFrequencySec'))) throw new FieldError('settings.ReplicationFrequencySec is not 300 or 900');
      settings.int('RecoveryHistory');
      f.oneOf('state', STATES);
      f.nullable('base', (k) => f.string(k));
      f.nullable('resync', (k) => {
        const r = f.object(k);
        r.oneOf('reason', RESYNC_REASONS);
        r.string('evidence');
        r.time('requiredAt');
        r.optional('cut', (kk) => r.int(kk));
        r.nullable('base', (kk) => r.string(kk));
        r.optional('startedAt', (kk) => r.time(kk));
      });
      f.int('lastAppliedSequence');
      for (const k of ['lastReplicationTime', 'lastCycleAt']) f.nullable(k, (kk) => f.time(kk));
      f.nullable('lastError', (k) => f.string(k));
      f.int('successfulReplicationCount');
      f.time('createdAt');
      return f.raw as ExtendedRecord;
    },
  };
}

export class ExtendedReplication {
  private readonly vms: VmStore;
  /** The time of cycles, recovery points and records (tests set it). */
  readonly clock: Clock;

  constructor(
    readonly home: string,
    opts: { clock?: Clock } = {},
  ) {
    this.vms = new VmStore(home);
    this.clock = opts.clock ?? systemClock;
  }

  get events(): EventLog {
    return this.vms.events;
  }

  private dir(name: string): string {
    return join(this.home, 'extended', vmFolderName(name));
  }

  // ---- records ----

  async tryLoad(name: string): Promise<ExtendedRecord | undefined> {
    const rec = await readStateFile(join(this.dir(name), RECORD), extendedStateFile(name));
    if (rec && !sameVmName(rec.name, name)) throw new VhdsyncError('STATE', `${join(this.dir(name), RECORD)}: this extended replication state is of '${rec.name}', not '${name}'`);
    return rec;
  }

  async load(name: string): Promise<ExtendedRecord> {
    const r = await this.tryLoad(checkVmName(name));
    if (!r) throw new VhdsyncError('NOT_FOUND', `virtual machine '${name}' has no extended replication here (vhdsync get-replication --extended lists them)`);
    return r;
  }

  async list(pattern?: string): Promise<ExtendedRecord[]> {
    let folders: string[] = [];
    try {
      folders = await readdir(join(this.home, 'extended'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const out: ExtendedRecord[] = [];
    for (const f of folders.sort()) {
      const r = await readStateFile(join(this.home, 'extended', f, RECORD), extendedStateFile(f));
      if (r && (pattern === undefined || namePattern(pattern)(r.name))) out.push(r);
    }
    return out;
  }

  private async save(r: ExtendedRecord): Promise<void> {
    await writeFileAtomic(join(this.dir(r.name), RECORD), jsonText(r));
  }

  /** Read-modify-write under the record's lock; a state change is event 90001. */
  async update<T>(name: string, fn: (r: ExtendedRecord) => Promise<T> | T): Promise<{ rec: ExtendedRecord; result: T }> {
    await this.load(name);
    const out = await withLock(join(this.dir(name), 'state.lock'), async () => {
      const rec = await this.load(name);
      const before = rec.state;
      const result = await fn(rec);
      await this.save(rec);
      return { rec, result, before };
    }, { what: `the extended replication state of ${name}` });
    if (out.rec.state !== out.before) {
      await this.events.emit({ id: 90001, level: out.rec.state === 'WaitingForStartResynchronize' ? 'Error' : 'Information', vm: out.rec.name, from: `${out.before} (Extended)`, to: `${out.rec.state} (Extended)` });
    }
    return { rec: out.rec, result: out.result };
  }

  resyncPid(name: string): Promise<number | undefined> {
    return lockHolder(join(this.dir(name), 'resync.lock'));
  }

  // ---- the two sites ----

  /** The replica being extended (this site's own folder). */
  source(rec: ExtendedRecord): LocalReplicaSite {
    return new LocalReplicaSite(rec.replicaRoot, rec.folder, rec.vmId, rec.disks, rec.name);
  }

  /** The extended replica. */
  site(rec: ExtendedRecord): ReplicaSite {
    if (isReplicaAddress(rec.replica)) {
      const address = parseSiteAddress(rec.replica, rec.folder);
      return new RemoteReplicaSite(address, { vm: address.target, vmId: rec.vmId, disks: rec.disks }, () => this.dial(rec));
    }
    return new LocalReplicaSite(rec.replica, rec.folder, rec.vmId, rec.disks, rec.name, `vhdsync start-initial-replication ${shellWord(rec.name)} --extended --again`);
  }

  private dial(rec: ExtendedRecord) {
    return loadNetwork(rec.network ?? {}, `extended replication of '${rec.name}' (replica server ${rec.replica})`);
  }

  private vmDir(rec: ExtendedRecord): string {
    return join(rec.replicaRoot, rec.folder);
  }

  // ---- Enable-VMReplication on the replica ----

  async enable(input: ExtendedEnableInput): Promise<ExtendedRecord> {
    const name = checkVmName(input.name);
    const frequency = parseExtendedFrequency(input.frequency ?? 300);
    const recoveryHistory = input.recoveryHistory === undefined ? 0 : parseRecoveryHistory(input.recoveryHistory);
    const replicaRoot = resolve(input.replicaPath);
    const folder = vmFolderName(name);
    const found = await LocalReplicaSite.fromFolder(replicaRoot, folder);
    if (!found) {
      throw new VhdsyncError('NOT_FOUND', `${join(replicaRoot, folder)}: there is no replica of '${name}' here; --extended extends a replica: give --replica-path the replica directory (or the replica server's --root) that holds it`);
    }
    if (found.state.relationship === 'Extended') {
      throw new VhdsyncError('UNSUPPORTED', `${join(replicaRoot, folder)}: this is itself an extended replica; Hyper-V extends a replica once (there is no fourth site)`);
    }
    if (found.state.diskIds.some((id) => !id)) {
      throw new VhdsyncError('STATE', `${join(replicaRoot, folder)}: the replica does not record its disks' ids yet (made by an older vhdsync); let one replication cycle from the primary apply here, then enable again`);
    }
    const remote = isReplicaAddress(input.replica);
    const replica = remote ? parseSiteAddress(input.replica, folder).url : resolve(input.replica);
    if (!remote && resolve(replica) === replicaRoot) throw new VhdsyncError('USAGE', `--replica ${input.replica}: the extended replica must be another place than the replica it extends`);
    const given = givenNetwork(input.network ?? {});
    if (!remote && anyNetworkSetting(given)) throw new VhdsyncError('USAGE', `${anyNetworkSetting(given)} applies to a replica server (--replica tls://HOST:PORT/NAME); ${input.replica} is a local directory`);
    if (remote) await loadNetwork(given, `enable-replication ${name} --extended --replica ${replica}`);
    const disks: ReplicaDiskSpec[] = [];
    for (const [index, file] of found.state.disks.entries()) {
      const disk = await openDisk(join(replicaRoot, folder, file), { readOnly: true });
      disks.push({ index, name: file, diskId: found.state.diskIds[index]!, virtualSize: disk.virtualSize, format: disk.format, sectorSize: disk.sectorSize });
      await disk.close();
    }
    const now = this.clock.now();
    const rec: ExtendedRecord = {
      version: 1,
      name,
      replicaRoot,
      folder,
      replica,
      ...(remote ? { network: given } : {}),
      vmId: found.state.vmId,
      disks,
      settings: { ReplicationFrequencySec: frequency, RecoveryHistory: recoveryHistory },
      state: 'ReadyForInitialReplication',
      base: null,
      resync: null,
      lastAppliedSequence: 0,
      lastReplicationTime: null,
      lastCycleAt: null,
      lastError: null,
      successfulReplicationCount: 0,
      createdAt: now.toISOString(),
    };
    // Hyper-V's Enable-VMReplication checks the connection: a wrong address or certificate is one line now.
    if (remote) await this.site(rec).lastApplied();
    await mkdir(join(this.home, 'extended'), { recursive: true });
    await withLock(join(this.home, 'extended.lock'), async () => {
      const existing = await this.tryLoad(name);
      if (existing) throw new VhdsyncError('EXISTS', `virtual machine '${existing.name}' already has an extended replication here (to ${existing.replica})`);
      await mkdir(this.dir(name), { recursive: true });
      await this.save(rec);
    }, { what: 'the list of extended replications' });
    await this.events.emit({ id: 90001, level: 'Information', vm: name, from: 'Disabled (Extended)', to: `${rec.state} (Extended)` });
    return rec;
  }

  /** Remove-VMReplication -ReplicationRelationshipType Extended: the record goes, and B stops keeping logs. */
  async remove(name: string): Promise<void> {
    const rec = await this.load(name);
    const busy = await this.resyncPid(name);
    if (busy) throw new VhdsyncError('BUSY', `the extended replication of '${name}' is in use by process ${busy}; stop it first`);
    await stopKeeping(this.vmDir(rec), rec.disks.length);
    await rm(this.dir(name), { recursive: true, force: true });
    await this.events.emit({ id: 90001, level: 'Information', vm: rec.name, from: `${rec.state} (Extended)`, to: 'Disabled (Extended)' });
  }

  async set(name: string, change: { frequency?: string | number; recoveryHistory?: string | number }): Promise<ExtendedRecord> {
    const frequency = change.frequency === undefined ? undefined : parseExtendedFrequency(change.frequency);
    const history = change.recoveryHistory === undefined ? undefined : parseRecoveryHistory(change.recoveryHistory);
    const { rec } = await this.update(name, (r) => {
      if (frequency !== undefined) r.settings.ReplicationFrequencySec = frequency;
      if (history !== undefined) r.settings.RecoveryHistory = history;
    });
    return rec;
  }

  async suspend(name: string): Promise<ExtendedRecord> {
    const { rec } = await this.update(name, (r) => {
      if (r.state !== 'Replicating' && r.state !== 'Suspended') throw new VhdsyncError('STATE', `the extended replication of '${name}' is ${r.state}; only replication can be suspended`);
      r.state = 'Suspended';
    });
    return rec;
  }

  // ---- triggers ----

  /** Resynchronization Required for the extended relationship: kept logs go (tracking stops) until the resync takes its cut. */
  async requireResync(name: string, reason: ResyncReason, evidence: string): Promise<ExtendedRecord> {
    const { rec } = await this.update(name, async (r) => {
      r.state = 'WaitingForStartResynchronize';
      r.resync = { reason, evidence, requiredAt: this.clock.now().toISOString() };
      await stopKeeping(this.vmDir(r), r.disks.length);
    });
    await this.events.emit({ id: 90002, level: 'Error', vm: rec.name, reason, evidence: `extended replica ${rec.replica}: ${evidence}` });
    return rec;
  }

  // ---- the extended cycle ----

  /**
   * Ship the cycles B has applied and the extended replica has not, in sequence; have it apply them.
   * Kept logs it has applied are deleted (also those of an earlier cycle killed before deleting them).
   */
  async cycle(name: string): Promise<ExtendedCycleOutcome> {
    const rec = await this.load(name);
    if (rec.state !== 'Replicating') return { result: 'skipped', why: `the extended replication is ${rec.state}` };
    const required = async (reason: ResyncReason, evidence: string): Promise<ExtendedCycleOutcome> => {
      await this.requireResync(name, reason, evidence);
      return { result: 'resync-required', reason, evidence };
    };
    try {
      const vmDir = this.vmDir(rec);
      const src = await LocalReplicaSite.fromFolder(rec.replicaRoot, rec.folder);
      if (!src) throw new VhdsyncError('NOT_FOUND', `${vmDir}: the replica being extended is missing (unmounted or deleted?)`);
      const b = src.state;
      if ((b.base ?? null) !== rec.base) {
        return required('ModifiedWhileOff', `${vmDir}: the replica was rebased at log ${b.lastAppliedSequence} on ${b.updatedAt} (resynchronized, failed over or reverted): its disks changed outside the logs the extended replica receives`);
      }
      const site = this.site(rec);
      await site.requireReplica();
      const failover = await site.failoverRecord();
      if (failover && failover.kind !== 'test') return { result: 'skipped', why: `the extended replica is failed over (${failover.kind})` };
      const cLast = await site.lastApplied();
      if (cLast > b.lastAppliedSequence) {
        return required('ReplicaLogOutOfSequence', `the extended replica ${site.where} has applied up to log ${cLast}, beyond this replica's ${b.lastAppliedSequence}`);
      }
      const n = rec.disks.length;
      await dropKept(vmDir, n, cLast);
      const total = rec.disks.reduce((t, d) => t + d.virtualSize, 0);
      const keptSize = await keptBytes(vmDir, n);
      if (keptSize > LOG_SIZE_LIMIT_RATIO * total) {
        return required('TrackingLogTooLarge', `${extendedLogsDir(vmDir)}: ${keptSize} bytes of logs wait for the extended replica, more than 50 % of the VM's ${total} bytes of disks`);
      }
      const kept = await keptLogs(vmDir, n);
      const sequences: number[] = [];
      let bytes = 0;
      for (let seq = cLast + 1; seq <= b.lastAppliedSequence; seq++) {
        const row = kept.get(seq);
        const lost = rec.disks.find((d) => !row?.[d.index]);
        if (lost) {
          return required(
            'TrackingLogWriteFailure',
            `log ${seq} of disk ${lost.index} (${lost.name}) was applied here but not kept for the extended replica (${extendedLogsDir(vmDir)} lost, or not writable): the onward tracking was lost`,
          );
        }
        for (const d of rec.disks) {
          await site.receive(seq, d.index, row![d.index]!);
          bytes += (await stat(row![d.index]!)).size;
        }
        sequences.push(seq);
      }
      const applied = await site.apply({ now: this.clock.now(), recoveryHistory: rec.settings.RecoveryHistory });
      if (applied.problem) return required(applied.problem.reason, applied.problem.evidence);
      await dropKept(vmDir, n, applied.lastApplied);
      const done = this.clock.now().toISOString();
      await this.update(name, (r) => {
        r.lastAppliedSequence = applied.lastApplied;
        r.lastReplicationTime = done;
        r.lastCycleAt = done;
        r.lastError = null;
        r.successfulReplicationCount++;
      });
      return { result: 'replicated', sequences, bytes };
    } catch (e) {
      const error = (e as Error).message;
      await this.update(name, (r) => {
        r.lastError = error;
        r.lastCycleAt = this.clock.now().toISOString();
      }).catch(() => undefined);
      await this.events.emit({ id: 32315, level: 'Warning', vm: rec.name, error: `extended replica ${rec.replica}: ${error}`, attempt: 1, retryTime: new Date(this.clock.now().getTime() + rec.settings.ReplicationFrequencySec * 1000).toISOString() });
      return { result: 'failed', error };
    }
  }

  /**
   * Measure-VMReplication -ReplicationRelationshipType Extended: PendingReplicationSize is what B has
   * applied and C has not (the kept logs) — what a failover to C would lose now.
   */
  async measure(name: string) {
    const rec = await this.load(name);
    const h = extendedHealth(rec, this.clock.now());
    const running = (await this.resyncPid(name)) !== undefined;
    const task = rec.state === 'Resynchronizing' || rec.state === 'InitialReplicationInProgress'
      ? { Task: rec.state === 'Resynchronizing' ? 'Resynchronization' : 'InitialReplication', Running: running, Cut: rec.resync?.cut ?? null, StartedAt: rec.resync?.startedAt ?? null }
      : null;
    return {
      VMName: rec.name,
      State: rec.state,
      Health: h.health,
      Relationship: 'Extended' as const,
      CurrentTask: task,
      LastReplicationTime: rec.lastReplicationTime,
      LastAppliedLogSequence: rec.lastAppliedSequence,
      PendingReplicationSize: await keptBytes(this.vmDir(rec), rec.disks.length),
      SuccessfulReplicationCount: rec.successfulReplicationCount,
      LastError: rec.lastError,
      ReplicationHealthDetails: h.details,
    };
  }

  /** Whether the service should run a cycle now. */
  due(rec: ExtendedRecord, now: Date): boolean {
    return rec.state === 'Replicating' && (rec.lastCycleAt === null || now.getTime() >= Date.parse(rec.lastCycleAt) + rec.settings.ReplicationFrequencySec * 1000);
  }

  // ---- initial replication and resynchronization (B ↔ C) ----

  /**
   * Start-VMInitialReplication (`initial`) or Resume-VMReplication -Resynchronize for the extended
   * relationship, in this process: B's disks are compared with C's by the resync engine (only the
   * differences travel), C is rebased at the cut, and the cycles that follow bring it to B.
   * `again`: the extended replica was lost — make a new one from any state.
   */
  async run(name: string, opts: { initial?: boolean; again?: boolean; onProgress?: (disk: number, done: number, total: number) => void } = {}): Promise<{ rec: ExtendedRecord; bytesSent: number; cut: number }> {
    const lock = await tryLock(join(this.dir(checkVmName(name)), 'resync.lock'));
    if (!('release' in lock)) throw new VhdsyncError('BUSY', `the extended replication of '${name}' is already being synchronized (process ${lock.holder})`);
    try {
      return await this.runLocked(name, opts);
    } finally {
      await lock.release();
    }
  }

  private async runLocked(name: string, opts: { initial?: boolean; again?: boolean; onProgress?: (disk: number, done: number, total: number) => void }) {
    const first = await this.load(name);
    const initial = opts.initial === true;
    const from: ExtendedState[] = initial
      ? opts.again ? ['ReadyForInitialReplication', 'InitialReplicationInProgress', 'Replicating', 'Suspended', 'WaitingForStartResynchronize', 'Resynchronizing'] : ['ReadyForInitialReplication', 'InitialReplicationInProgress']
      : ['WaitingForStartResynchronize', 'Resynchronizing'];
    if (!from.includes(first.state)) {
      const next = first.state === 'Replicating' && !initial
        ? `; to force one, suspend it first (vhdsync suspend-replication ${shellWord(name)} --extended), as Hyper-V requires`
        : first.state === 'ReadyForInitialReplication' ? `; start the initial replication first (vhdsync start-initial-replication ${shellWord(name)} --extended)` : '';
      throw new VhdsyncError('STATE', `the extended replication of '${name}' is ${first.state}; ${initial ? 'its initial replication is done (--again makes a new extended replica)' : 'there is no resynchronization to run'}${next}`);
    }
    const source = this.source(first);
    // Continue an interrupted run at the same cut while B was not rebased meanwhile; else take a new one.
    const continuing = (first.state === 'InitialReplicationInProgress' || first.state === 'Resynchronizing') && !opts.again && first.resync?.cut !== undefined;
    let cut: { cut: number; base: string | null };
    const now = await LocalReplicaSite.fromFolder(first.replicaRoot, first.folder);
    const restart = !continuing || (now?.state.base ?? null) !== (first.resync?.base ?? null);
    if (restart) cut = await source.takeExtendedCut();
    else cut = { cut: first.resync!.cut!, base: first.resync!.base ?? null };
    const { rec } = await this.update(name, (r) => {
      r.state = initial ? 'InitialReplicationInProgress' : 'Resynchronizing';
      r.resync = { ...(r.resync ?? { reason: 'Requested', evidence: initial ? 'initial replication' : 'requested', requiredAt: this.clock.now().toISOString() }), cut: cut.cut, base: cut.base, startedAt: this.clock.now().toISOString() };
      r.lastError = null;
    });
    const site = this.site(rec);
    const remote = isReplicaAddress(rec.replica);
    let bytesSent = 0;
    try {
      if (initial) await site.createEmptyDisks();
      else await site.requireReplica();
      const network = remote ? await this.dial(rec) : undefined;
      for (const d of rec.disks) {
        const target = remote ? `${parseSiteAddress(rec.replica, rec.folder).url}/${d.name}` : (site as LocalReplicaSite).diskPath(d.index);
        const r = await resync({
          primary: source.diskPath(d.index),
          replica: target,
          vm: rec.name,
          restart,
          ...(network ? { network } : {}),
          // An initial replication is not a resync: its 29242/29244 stay private.
          events: initial ? new EventLog() : this.events,
          counters: initial ? undefined : this.vms.counters,
          onProgress: (p) => opts.onProgress?.(d.index, p.bytesCompared, p.virtualSize),
        });
        if (r.result !== 'completed') throw new VhdsyncError('STATE', `${target}: the ${initial ? 'initial replication' : 'resynchronization'} of the extended replica ${r.result}; run it again to continue`);
        bytesSent += r.bytesSent;
      }
      await site.rebase(cut.cut, { extended: true });
    } catch (e) {
      await this.update(name, (r) => {
        r.lastError = (e as Error).message;
      }).catch(() => undefined);
      throw e;
    }
    await dropKept(this.vmDir(rec), rec.disks.length, cut.cut);
    const done = this.clock.now().toISOString();
    const { rec: after } = await this.update(name, (r) => {
      r.state = 'Replicating';
      r.base = cut.base;
      r.resync = null;
      r.lastAppliedSequence = cut.cut;
      r.lastReplicationTime = done;
      r.lastCycleAt = done;
      r.lastError = null;
    });
    return { rec: after, bytesSent, cut: cut.cut };
  }

  /** Resume-VMReplication -ReplicationRelationshipType Extended: from Suspended back to Replicating. */
  async resume(name: string): Promise<ExtendedRecord> {
    const { rec } = await this.update(name, (r) => {
      if (r.state === 'Suspended') r.state = 'Replicating';
      else if (r.state === 'WaitingForStartResynchronize') throw new VhdsyncError('STATE', `${resyncRequiredMessage(`${name} (extended replication)`)} Use resume-replication ${shellWord(name)} --extended --resynchronize`);
      else if (r.state !== 'Replicating') throw new VhdsyncError('STATE', `the extended replication of '${name}' is ${r.state}; it cannot be resumed`);
    });
    return rec;
  }

  /** Suspend-, then Resume-VMReplication -Resynchronize: a requested resync of the extended replica. */
  async requestResync(name: string): Promise<ExtendedRecord> {
    const rec = await this.load(name);
    if (rec.state === 'Replicating') {
      throw new VhdsyncError('STATE', `the extended replication of '${name}' is Replicating; to force a resynchronization, suspend it first (vhdsync suspend-replication ${shellWord(name)} --extended), as Hyper-V requires`);
    }
    if (rec.state === 'Suspended') return this.requireResync(name, 'Requested', 'resynchronization requested while Suspended');
    return rec;
  }

  // ---- failover to the extended replica ----

  async points(name: string): Promise<RecoveryPoint[]> {
    const rec = await this.load(name);
    return this.site(rec).points(rec.lastReplicationTime);
  }

  /**
   * Start-VMFailover on the extended replica (unplanned: at a recovery point, what was not replicated
   * onward is lost): a writable view of each of C's disks at the point is the running copy; C and its
   * points are untouched until complete-failover.
   */
  async startFailover(name: string, opts: { point?: string } = {}): Promise<{ point: RecoveryPoint; disks: string[]; rec: ExtendedRecord }> {
    const rec = await this.load(name);
    if (rec.state === 'ReadyForInitialReplication' || rec.state === 'InitialReplicationInProgress') {
      throw new VhdsyncError('STATE', `failover is not possible: the extended replica of '${name}' is not complete yet (${rec.state})`);
    }
    if (rec.state === 'FailedOverWaitingCompletion') throw new VhdsyncError('STATE', `the extended replica of '${name}' is already failed over, waiting for completion: complete-failover ${shellWord(name)} --extended commits it, stop-failover ${shellWord(name)} --extended rolls it back`);
    const pid = await this.resyncPid(name);
    if (pid !== undefined) throw new VhdsyncError('BUSY', `process ${pid} is synchronizing the extended replica of '${name}'; stop it first`);
    const site = this.site(rec);
    if (rec.state === 'Resynchronizing') for (const d of rec.disks) await site.cancelResync(d.index);
    const { point, disks } = await startSiteFailover(site, { what: `the extended replica of '${name}'`, latestTime: rec.lastReplicationTime, point: opts.point, resumeState: rec.state, now: this.clock.now() });
    const { rec: after } = await this.update(name, (r) => {
      r.state = 'FailedOverWaitingCompletion';
    });
    return { point, disks, rec: after };
  }

  /** Complete-VMFailover: the views are merged into C's disks (the point of no return); C's other points go. */
  async completeFailover(name: string): Promise<{ point: RecoveryPoint; disks: string[]; rec: ExtendedRecord }> {
    const rec = await this.load(name);
    const site = this.site(rec);
    const out = await completeSiteFailover(site, `complete-failover --extended needs the extended replica of '${name}' failed over and waiting for completion (start-failover ${shellWord(name)} --extended); it is ${rec.state}`);
    const { rec: after } = await this.update(name, (r) => {
      r.state = 'FailedOver';
    });
    return { point: out.point, disks: rec.disks.map((d) => site.diskLocation(d.index)), rec: after };
  }

  /** Stop-VMFailover: the views go, C is as it was, the relationship returns to its state. */
  async stopFailover(name: string): Promise<{ removed: string[]; rec: ExtendedRecord }> {
    const rec = await this.load(name);
    const site = this.site(rec);
    const { removed, resumeState } = await stopSiteFailover(site, `the extended replica of '${name}'`);
    const back = (resumeState ?? 'Replicating') as ExtendedState;
    const { rec: after } = await this.update(name, (r) => {
      r.state = back;
    });
    return { removed, rec: after };
  }
}

/**
 * Failover at the extended site itself, from its folder alone (Start-VMFailover run on C's server):
 * what a disaster that took both the primary and B leaves possible. Only for an extended replica — a
 * replica of the primary relationship fails over through the primary's record, which stops its cycles
 * first; B's extended cycle sees C's failover record and ships nothing while it is in effect.
 */
export async function extendedSite(root: string, name: string): Promise<{ site: LocalReplicaSite; updatedAt: string }> {
  const folder = vmFolderName(checkVmName(name));
  const found = await LocalReplicaSite.fromFolder(resolve(root), folder);
  if (!found) throw new VhdsyncError('NOT_FOUND', `${join(resolve(root), folder)}: there is no replica of '${name}' here`);
  if (found.state.relationship !== 'Extended') {
    throw new VhdsyncError('UNSUPPORTED', `${join(resolve(root), folder)}: this replica is the primary's own (Relationship Simple): fail it over from the primary's home (vhdsync start-failover ${shellWord(name)}); --replica-path fails over an extended replica`);
  }
  return { site: found.site, updatedAt: found.state.updatedAt };
}

export async function startFailoverAtSite(root: string, name: string, opts: { point?: string; now?: Date } = {}): Promise<{ point: RecoveryPoint; disks: string[] }> {
  const { site, updatedAt } = await extendedSite(root, name);
  return startSiteFailover(site, { what: `the extended replica ${site.where}`, latestTime: updatedAt, point: opts.point, resumeState: 'Replicating', now: opts.now ?? new Date() });
}

export async function completeFailoverAtSite(root: string, name: string): Promise<{ point: RecoveryPoint; disks: string[] }> {
  const { site } = await extendedSite(root, name);
  const out = await completeSiteFailover(site, `complete-failover needs the extended replica ${site.where} failed over and waiting for completion (start-failover ${shellWord(name)} --replica-path ${shellWord(root)})`);
  return { point: out.point, disks: site.disks.map((d) => site.diskLocation(d.index)) };
}

export async function stopFailoverAtSite(root: string, name: string): Promise<{ removed: string[] }> {
  const { site } = await extendedSite(root, name);
  return stopSiteFailover(site, `the extended replica ${site.where}`);
}

/** An unplanned failover on a site (a view of each disk at the point); recorded first, so a crash is finished by running it again. */
async function startSiteFailover(site: ReplicaSite, o: { what: string; latestTime: string | null; point?: string; resumeState: string; now: Date }): Promise<{ point: RecoveryPoint; disks: string[] }> {
  const existing = await site.failoverRecord();
  if (existing) throw new VhdsyncError('STATE', `${o.what} already has a ${existing.kind} failover${existing.phase ? ` (${existing.phase})` : ''} in effect`);
  const point = choosePoint(await site.points(o.latestTime), o.point);
  await site.setFailoverRecord({ version: 1, kind: 'unplanned', sequence: point.sequence, time: point.time, phase: 'waiting', resumeState: o.resumeState, startedAt: o.now.toISOString() });
  return { point, disks: await site.createFailoverViews(point.sequence) };
}

/** Complete-VMFailover on a site: the views merged into its disks (the point of no return), its other points deleted. */
async function completeSiteFailover(site: ReplicaSite, refusal: string): Promise<{ point: RecoveryPoint }> {
  const f = await site.failoverRecord();
  if (!f || f.kind === 'test' || (f.phase !== 'waiting' && f.phase !== 'completing')) throw new VhdsyncError('STATE', refusal);
  if (f.phase !== 'completing') await site.setFailoverRecord({ ...f, phase: 'completing' });
  await site.commitFailover(f.sequence);
  const { phase: _p, resumeState: _r, ...completed } = f;
  await site.setFailoverRecord(completed);
  return { point: { sequence: f.sequence, time: f.time, kind: 'Latest', sizeOnDisk: 0 } };
}

/** Stop-VMFailover on a site: the views go, the disks are as they were. */
async function stopSiteFailover(site: ReplicaSite, what: string): Promise<{ removed: string[]; resumeState?: string }> {
  const f = await site.failoverRecord();
  if (!f || f.kind === 'test' || !f.phase || f.phase === 'completing') {
    throw new VhdsyncError('STATE', `${what} has no failover to stop${f?.phase === 'completing' ? ' (complete-failover has started merging: run it again to finish)' : ''}`);
  }
  if (f.phase !== 'stopping') await site.setFailoverRecord({ ...f, phase: 'stopping' });
  const removed = await site.removeFailoverViews();
  await site.setFailoverRecord(null);
  return { removed, resumeState: f.resumeState };
}

/** Health of an extended relationship, as replication health reads (names.ts, health.ts). */
export function extendedHealth(rec: ExtendedRecord, now: Date): { health: ReplicationHealth; details: string[] } {
  const what = `the extended replication of virtual machine ${rec.name}`;
  switch (rec.state) {
    case 'WaitingForStartResynchronize':
      return { health: 'Critical', details: [resyncRequiredMessage(`${rec.name} (extended replication)`), ...(rec.resync ? [`Reason: ${rec.resync.reason}: ${rec.resync.evidence}`] : [])] };
    case 'ReadyForInitialReplication':
    case 'InitialReplicationInProgress':
      return { health: 'Warning', details: [`Initial replication is not complete for ${what}.`] };
    case 'Resynchronizing':
      return { health: 'Warning', details: [`Resynchronization is in progress for ${what}.`] };
    case 'Suspended':
      return { health: 'Warning', details: [`Replication is paused for ${what}.`] };
    case 'FailedOverWaitingCompletion':
    case 'FailedOver':
      return { health: 'Warning', details: [`The extended replica of virtual machine ${rec.name} is failed over.`] };
    case 'Replicating': {
      if (rec.lastError) return { health: 'Critical', details: [`Replication for ${what} failed: ${rec.lastError}`] };
      const last = rec.lastReplicationTime ? Date.parse(rec.lastReplicationTime) : undefined;
      if (last !== undefined && now.getTime() - last > 3600_000) return { health: 'Warning', details: [`The extended replica of virtual machine ${rec.name} is behind by more than an hour.`] };
      return { health: 'Normal', details: [] };
    }
  }
}

/** Get-VMReplication -ReplicationRelationshipType Extended, run at the replica site: Mode Replica, Relationship Extended. */
export function extendedView(rec: ExtendedRecord, now = new Date()) {
  const h = extendedHealth(rec, now);
  const server = isReplicaAddress(rec.replica) ? parseSiteAddress(rec.replica, rec.folder) : undefined;
  return {
    VMName: rec.name,
    VMId: rec.vmId,
    State: rec.state,
    Health: h.health,
    Mode: 'Replica' as const,
    FrequencySec: rec.settings.ReplicationFrequencySec,
    PrimaryServer: hostname(),
    ReplicaServer: rec.replica,
    Relationship: 'Extended' as const,
    ReplicationState: rec.state,
    ReplicationHealth: h.health,
    ReplicationMode: 'Replica' as const,
    ReplicationRelationshipType: 'Extended' as const,
    ReplicationFrequencySec: rec.settings.ReplicationFrequencySec,
    PrimaryServerName: hostname(),
    ReplicaServerName: server ? server.host : hostname(),
    ReplicaServerPort: server ? server.port : null,
    AuthenticationType: server ? ('Certificate' as const) : ('None' as const),
    RecoveryHistory: rec.settings.RecoveryHistory,
    ExtendedReplicaOf: join(rec.replicaRoot, rec.folder),
    LastReplicationTime: rec.lastReplicationTime,
    LastAppliedLogSequence: rec.lastAppliedSequence,
    ReplicationHealthDetails: h.details,
    ResynchronizationReason: rec.resync?.reason ?? null,
    ResynchronizationEvidence: rec.resync?.evidence ?? null,
    LastError: rec.lastError,
    ReplicatedDisks: rec.disks.map((d) => ({ Index: d.index, Path: join(rec.replicaRoot, rec.folder, d.name), VirtualSize: d.virtualSize, Format: d.format })),
  };
}
