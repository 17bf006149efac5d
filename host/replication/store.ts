import { type NetworkSettings, checkNetworkField } from '../transport/network-settings.js';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { VhdsyncError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { jsonText } from '../json-text.js';
import { Fields, readStateFile } from '../state-file.js';
import { REPLICATION_STATES, RESYNC_REASONS } from '../replica/states.js';
import { CounterStore } from '../events/counters.js';
import { EventLog, type EventInput } from '../events/event-log.js';
import { withLock } from '../pid-lock.js';
import type { DiskFingerprint } from './fingerprint.js';
import type { ReplicationState, ResyncReason } from '../replica/states.js';
import type { ReplicationSettings } from './settings.js';
import { emptyStatistics, type ReplicationStatistics } from './statistics.js';
import { checkVmName, sameVmName, VM_FOLDER, vmFolderName } from '../replica/vm-name.js';

export interface VmDisk {
  index: number;
  /** Absolute path of the primary disk. */
  path: string;
  diskId: string;
  format: 'raw' | 'vhd' | 'vhdx';
  type: 'fixed' | 'dynamic' | 'differencing';
  virtualSize: number;
  /** Logical sector size (512 or 4096; 512 when not recorded): the replica is made with the same. */
  sectorSize?: number;
  /** Where the replica of this disk lives: `<replica dir>/<vm>/<primary file name>`. */
  replicaPath: string;
  /** The disk as it was when the VM last stopped cleanly (or when replication was enabled). */
  fingerprint?: DiskFingerprint;
}

export interface ResyncInfo {
  reason: ResyncReason;
  /** What was seen: the evidence, in one line. */
  evidence: string;
  requiredAt: string;
  /** Started by a person, by the automatic policy, or at the scheduled time. */
  origin?: 'manual' | 'automatic' | 'scheduled';
  /** The sequence replication continues with once the resync is done (allocated when it starts). */
  continuationSequence?: number;
  /** Disks whose resync completed (a paused multi-disk resync continues with the others). */
  disksDone: number[];
  /** Paused because its start window closed; continued when the window opens again. */
  pausedByWindow?: boolean;
  /** The next run starts from the beginning (after a cancel). */
  restart?: boolean;
  startedAt?: string;
  /** `--keep-pre-resync-point`: the replica before this resync stays as one protected recovery point. */
  keepPreResyncPoint?: boolean;
  /**
   * What the resync compares: every block (absent: Full), or only the extents of the disks' dirty maps
   * (a crash or a log overflow; host/tracking/scope.ts). `scopeBytes`: their size when last collected.
   */
  scope?: 'Full' | 'DirtyExtents';
  scopeBytes?: number;
  /**
   * The disks' dirty maps hold this requirement's extents (collected once): from then on a map that is
   * gone, damaged or foreign means extents were lost, and the scope becomes Full.
   */
  mapsKept?: boolean;
  /** Compare seconds of the sessions so far, per disk index (event 29244 reports the whole resync's time). */
  compareSeconds?: Record<number, number>;
}

/** Everything persisted about one VM's replication, in `<home>/vms/<name>/vm.json`. */
export interface VmRecord {
  version: 1;
  name: string;
  vmId: string;
  createdAt: string;
  /** A local directory, or a replica server's folder for this VM: tls://HOST:PORT/NAME. */
  replica: string;
  /** For a replica server: this side's certificate files and bandwidth limit (absolute paths, rate texts). */
  network?: NetworkSettings;
  disks: VmDisk[];
  settings: ReplicationSettings;
  state: ReplicationState;
  /** Set when resynchronization is required or running. */
  resync: ResyncInfo | null;
  resynchronizeStartTime: string | null;
  /** A request to the process running this VM's resync. */
  control: 'pause' | 'cancel' | null;
  /** The next tracking-log sequence (replication cycle) to open. */
  nextSequence: number;
  lastShippedSequence: number;
  lastReplicationTime: string | null;
  lastCycleAt: string | null;
  retry: { attempt: number; nextAt: string; error: string } | null;
  lastError: string | null;
  statistics: ReplicationStatistics;
  /** `--initial-replication-start-time`: the initial replication starts then (the service starts it). */
  initialReplicationStartTime?: string | null;
  /** Bytes the initial replication sent (every session), once it has run: Measure's InitialReplicationSize. */
  initialReplicationSize?: number;
  /**
   * Offline initial replication (`start-initial-replication --destination-path`): where the replica
   * was exported, the sequence replication continues with, and when the export finished (null while it runs).
   */
  offlineInitialReplication?: { path: string; sequence: number; exportedAt: string | null } | null;
  /** The kind of the last replication: Regular (a cycle), Planned (a planned failover's last cycle). */
  lastReplicationType?: 'Regular' | 'Planned';
}

export { checkVmName } from '../replica/vm-name.js';

/** Folders named as vhdsync named every VM before derived names (vm-name.ts PLAIN_NAME). */
const PLAIN_FOLDER = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface UpdateContext {
  /** Queue an event; it is written after the new state is saved. */
  emit(e: EventInput): void;
}

/** A VM's state and settings under the home directory: atomic writes, a pid lock per VM. */
export class VmStore {
  readonly events: EventLog;
  readonly counters: CounterStore;

  constructor(readonly home: string) {
    this.events = new EventLog(join(home, 'events.jsonl'));
    this.counters = new CounterStore(join(home, 'counters.json'));
  }

  /** The VM's folder: `vm-name.ts` derives it; a name in another case finds the VM's folder. */
  vmDir(name: string): string {
    return join(this.home, 'vms', this.folderOf(name));
  }

  private readonly folders = new Map<string, string>();

  private folderOf(name: string): string {
    const known = this.folders.get(name);
    if (known) return known;
    const direct = vmFolderName(checkVmName(name));
    let found: string | undefined;
    if (this.recordNameIn(direct) !== undefined) found = direct;
    else {
      const matches: [string, string][] = [];
      for (const f of this.folderNames()) {
        const n = this.recordNameIn(f);
        if (n !== undefined && sameVmName(n, name)) matches.push([f, n]);
      }
      if (matches.length > 1) {
        throw new VhdsyncError('USAGE', `'${name}' matches ${matches.map(([, n]) => `'${n}'`).join(' and ')} (names are compared without regard to case); give the exact name`);
      }
      found = matches[0]?.[0];
    }
    if (found === undefined) return direct;
    this.folders.set(name, found);
    return found;
  }

  private folderNames(): string[] {
    try {
      return readdirSync(join(this.home, 'vms')).filter((f) => VM_FOLDER.test(f));
    } catch {
      return [];
    }
  }

  /** The name recorded in a folder's vm.json, if it has a readable one. */
  private recordNameIn(folder: string): string | undefined {
    try {
      const name = (JSON.parse(readFileSync(join(this.home, 'vms', folder, 'vm.json'), 'utf8')) as { name?: unknown }).name;
      return typeof name === 'string' ? name : undefined;
    } catch {
      return undefined;
    }
  }
  private recordPath(name: string): string {
    return join(this.vmDir(name), 'vm.json');
  }
  stateLockPath(name: string): string {
    return join(this.vmDir(name), 'state.lock');
  }
  /** Held by the process running the VM (workload / write). */
  runLockPath(name: string): string {
    return join(this.vmDir(name), 'run.lock');
  }
  /** Held by the process running the VM's resync or initial replication. */
  resyncLockPath(name: string): string {
    return join(this.vmDir(name), 'resync.lock');
  }
  serviceLockPath(): string {
    return join(this.home, 'service.lock');
  }

  /** The VMs' names, as they were enabled (folders of other shapes, or without a record, are not VMs). */
  async names(): Promise<string[]> {
    let folders: string[];
    try {
      folders = (await readdir(join(this.home, 'vms'))).filter((f) => VM_FOLDER.test(f));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const names: string[] = [];
    for (const f of folders) {
      const n = this.recordNameIn(f);
      if (n !== undefined && vmFolderName(n) === f) names.push(n);
      else if (n === undefined && PLAIN_FOLDER.test(f)) names.push(f); // a damaged record: load() says so
    }
    return names.sort((a, b) => a.localeCompare(b));
  }

  async list(): Promise<VmRecord[]> {
    const out: VmRecord[] = [];
    for (const n of await this.names()) {
      const vm = await this.tryLoad(n);
      if (vm) out.push(vm);
    }
    return out;
  }

  async tryLoad(name: string): Promise<VmRecord | undefined> {
    const fix = "remove the VM's folder and enable replication again";
    const vm = await readStateFile(this.recordPath(name), { what: `the replication state of ${name}`, version: 1, fix, read: checkVmRecord });
    if (vm && !sameVmName(vm.name, name)) throw new VhdsyncError('STATE', `${this.recordPath(name)}: the replication state of ${name} is damaged (it names '${vm.name}'); ${fix}`);
    return vm;
  }

  async load(name: string): Promise<VmRecord> {
    const vm = await this.tryLoad(checkVmName(name));
    if (!vm) throw new VhdsyncError('NOT_FOUND', `no virtual machine named '${name}' is enabled for replication (vhdsync get-replication lists them)`);
    return vm;
  }

  /** Create a new VM; the check for name and disk conflicts runs under one home-wide lock. */
  async create(vm: VmRecord, check: (others: VmRecord[]) => void): Promise<void> {
    await mkdir(join(this.home, 'vms'), { recursive: true });
    await withLock(join(this.home, 'vms.lock'), async () => {
      this.folders.clear();
      const existing = await this.tryLoad(vm.name);
      if (existing) {
        throw new VhdsyncError('EXISTS', `a virtual machine named '${existing.name}' is already enabled for replication${existing.name !== vm.name ? ' (names are compared without regard to case, as in Hyper-V)' : ''}`);
      }
      check(await this.list());
      await mkdir(this.vmDir(vm.name), { recursive: true });
      await this.save(vm);
    }, { what: 'the list of replicated VMs' });
  }

  async remove(name: string): Promise<void> {
    const dir = this.vmDir(name);
    await withLock(join(this.home, 'vms.lock'), () => rm(dir, { recursive: true, force: true }), { what: 'the list of replicated VMs' });
    this.folders.clear();
  }

  private async save(vm: VmRecord): Promise<void> {
    await writeFileAtomic(this.recordPath(vm.name), jsonText(vm));
  }

  /**
   * Look at the record, and at what changes with it (a disk's logs), under the VM's lock: an update
   * that removes the logs and then saves the state that goes with them is never seen half done.
   * Nothing is saved.
   */
  async inspect<T>(name: string, fn: (vm: VmRecord) => Promise<T>): Promise<T> {
    await this.load(name);
    return withLock(this.stateLockPath(name), async () => fn(await this.load(name)), { what: `the replication state of ${name}` });
  }

  /**
   * Read-modify-write under the VM's lock. `fn` mutates the record (or throws: nothing is saved).
   * State changes are recorded as events after the save.
   */
  async update<T>(name: string, fn: (vm: VmRecord, ctx: UpdateContext) => Promise<T> | T): Promise<{ vm: VmRecord; result: T }> {
    const queued: EventInput[] = [];
    await this.load(name); // an unknown VM is a clear error, not a missing lock directory
    const out = await withLock(this.stateLockPath(name), async () => {
      const vm = await this.load(name);
      const before = vm.state;
      const result = await fn(vm, { emit: (e) => queued.push(e) });
      if (vm.state !== before) {
        queued.unshift({ id: 90001, level: vm.state === 'WaitingForStartResynchronize' || vm.state === 'Error' ? 'Error' : 'Information', vm: vm.name, from: before, to: vm.state });
      }
      await this.save(vm);
      return { vm, result };
    }, { what: `the replication state of ${name}` });
    for (const e of queued) await this.events.emit(e);
    return out;
  }
}

export function newRecord(fields: Pick<VmRecord, 'name' | 'vmId' | 'replica' | 'disks' | 'settings' | 'network'>, now: Date): VmRecord {
  return {
    version: 1,
    ...fields,
    createdAt: now.toISOString(),
    state: 'ReadyForInitialReplication',
    resync: null,
    resynchronizeStartTime: null,
    control: null,
    nextSequence: 1,
    lastShippedSequence: 0,
    lastReplicationTime: null,
    lastCycleAt: null,
    retry: null,
    lastError: null,
    statistics: emptyStatistics(now),
  };
}

/**
 * Every field of a VM's record checked as it is read (vm.json): a damaged record is one line naming
 * the file and the field. The record is returned as it was written (fields added by later versions
 * are optional, and checked when present).
 */
function checkVmRecord(f: Fields): VmRecord {
  f.string('name');
  f.string('vmId');
  f.time('createdAt');
  f.string('replica');
  checkNetworkField(f);
  f.disks('disks', (x) => {
    x.string('path');
    x.string('diskId');
    x.oneOf('format', ['raw', 'vhd', 'vhdx']);
    x.oneOf('type', ['fixed', 'dynamic', 'differencing']);
    x.int('virtualSize');
    x.optional('sectorSize', (k) => x.int(k, 1));
    x.string('replicaPath');
    x.optional('fingerprint', (k) => {
      const p = x.object(k);
      p.int('size');
      for (const key of ['ino', 'dev', 'mtimeNs', 'ctimeNs', 'dataWriteId']) p.string(key);
      p.time('recordedAt');
      p.array('probes', (q, qat) => {
        const y = Fields.of(q, qat);
        y.int('offset');
        y.int('length');
        y.string('digest');
        y.oneOf('kind', ['written', 'sample']);
      });
    });
  });
  const settings = f.object('settings');
  settings.int('ReplicationFrequencySec', 1);
  settings.boolean('AutoResynchronizeEnabled');
  settings.string('AutoResynchronizeIntervalStart');
  settings.string('AutoResynchronizeIntervalEnd');
  settings.boolean('PauseResynchronizeOutsideWindow');
  settings.optional('RecoveryHistory', (k) => settings.int(k));
  f.oneOf('state', REPLICATION_STATES);
  f.nullable('resync', (k) => {
    const r = f.object(k);
    r.oneOf('reason', RESYNC_REASONS);
    r.string('evidence');
    r.time('requiredAt');
    r.optional('origin', (kk) => r.oneOf(kk, ['manual', 'automatic', 'scheduled']));
    r.optional('continuationSequence', (kk) => r.int(kk));
    r.intList('disksDone');
    for (const key of ['pausedByWindow', 'restart', 'keepPreResyncPoint', 'mapsKept']) r.optional(key, (kk) => r.boolean(kk));
    r.optional('startedAt', (kk) => r.time(kk));
    r.optional('scope', (kk) => r.oneOf(kk, ['Full', 'DirtyExtents']));
    r.optional('scopeBytes', (kk) => r.int(kk));
    r.optional('compareSeconds', (kk) => {
      const c = r.object(kk);
      for (const key of Object.keys(c.raw as object)) c.number(key);
    });
  });
  f.nullable('resynchronizeStartTime', (k) => f.time(k));
  f.nullable('control', (k) => f.oneOf(k, ['pause', 'cancel']));
  f.int('nextSequence', 1);
  f.int('lastShippedSequence');
  f.nullable('lastReplicationTime', (k) => f.time(k));
  f.nullable('lastCycleAt', (k) => f.time(k));
  f.nullable('retry', (k) => {
    const r = f.object(k);
    r.int('attempt');
    r.time('nextAt');
    r.string('error');
  });
  f.nullable('lastError', (k) => f.string(k));
  const st = f.object('statistics');
  st.time('monitoringStartTime');
  for (const key of ['successfulReplicationCount', 'missedReplicationCount', 'replicationErrors', 'totalReplicationSize', 'maximumReplicationSize', 'lastReplicationSize']) st.int(key);
  for (const key of ['totalReplicationLatencyMs', 'maximumReplicationLatencyMs']) st.number(key);
  f.nullable('initialReplicationStartTime', (k) => f.time(k));
  f.optional('initialReplicationSize', (k) => f.int(k));
  f.nullable('offlineInitialReplication', (k) => {
    const o = f.object(k);
    o.string('path');
    o.int('sequence');
    o.nullable('exportedAt', (kk) => o.time(kk));
  });
  f.optional('lastReplicationType', (k) => f.oneOf(k, ['Regular', 'Planned']));
  return f.raw as VmRecord;
}