import { basename } from 'node:path';
import { VhdsyncError } from '../errors.js';
import { EventLog } from '../events/event-log.js';
import { lockHolder } from '../pid-lock.js';
import type { LinkShape } from '../transport/memory-link.js';
import { LocalReplicaSite } from '../replica/local-site.js';
import type { ReplicaDiskSpec, ReplicaSite } from '../replica/site.js';
import { RemoteReplicaSite } from '../replica/remote-site.js';
import { isReplicaAddress, parseSiteAddress } from '../transport/replica-address.js';
import { loadNetwork } from '../transport/network-settings.js';
import type { DialOptions } from '../transport/tls-connect.js';
import { systemClock, type Clock } from './schedule.js';
import { vmFolderName } from '../replica/vm-name.js';
import { VmStore, type VmRecord } from './store.js';

/**
 * The context every verb of a VM's replication takes (the verbs are free functions, one file per verb:
 * enable.ts, control.ts, resync-required.ts, resync-run.ts, views.ts, cycle.ts, failover.ts,
 * reverse.ts): the VM store, the clock, the simulated link, and where each VM's replica site is.
 * Every change goes through the store's lock and is written atomically. The state machine:
 *
 *   ReadyForInitialReplication → InitialReplicationInProgress → Replicating ⇄ Suspended
 *   Replicating | Suspended | Error | (a resync) → WaitingForStartResynchronize   (a trigger; tracking stops)
 *   WaitingForStartResynchronize → Resynchronizing ⇄ ResynchronizeSuspended → Replicating
 *   Resynchronizing | ResynchronizeSuspended → WaitingForStartResynchronize     (stop-replication: cancel)
 */
export class Replication {
  readonly store: VmStore;
  readonly clock: Clock;

  /** The simulated link to local replica directories when a run names none (tests, demos). */
  readonly link: LinkShape | undefined;

  constructor(home: string, opts: { clock?: Clock; link?: LinkShape } = {}) {
    this.store = new VmStore(home);
    this.clock = opts.clock ?? systemClock;
    this.link = opts.link;
  }

  get events(): EventLog {
    return this.store.events;
  }

  /** Where the VM's replica is: a local directory, or a folder on a replica server. */
  site(vm: VmRecord): ReplicaSite {
    if (isReplicaAddress(vm.replica)) {
      const address = parseSiteAddress(vm.replica, vmFolderName(vm.name));
      return new RemoteReplicaSite(address, { vm: address.target, vmId: vm.vmId, disks: replicaDisks(vm) }, () => this.dialOptions(vm));
    }
    return this.localSite(vm);
  }

  /**
   * The VM's replica directory on this machine, for what runs on the replica's files (failover,
   * recovery points, reverse replication). `what` names the operation refused for a replica server.
   */
  localSite(vm: VmRecord, what = 'this operation'): LocalReplicaSite {
    if (isReplicaAddress(vm.replica)) {
      throw new VhdsyncError('UNSUPPORTED', `virtual machine '${vm.name}' is replicated to the replica server ${vm.replica}: ${what} works on a replica directory on this machine, not through a replica server yet`);
    }
    // A reversed relationship's replica disks stay where the old primary disks are.
    const disks = replicaDisks(vm).map((spec, i) => {
      const at = vm.disks[i].replicaPath;
      return at !== LocalReplicaSite.diskPathFor(vm.replica, vmFolderName(vm.name), vm.disks[i].path) ? { ...spec, path: at } : spec;
    });
    return new LocalReplicaSite(vm.replica, vmFolderName(vm.name), vm.vmId, disks, vm.name);
  }

  /** How to reach the VM's replica server: its certificates (loaded now) and bandwidth limit. */
  async dialOptions(vm: VmRecord): Promise<DialOptions> {
    return loadNetwork(vm.network ?? {}, `virtual machine '${vm.name}' (replica server ${vm.replica})`);
  }

  /** The pid of the live process running the VM (workload / write), if any. */
  runningPid(name: string): Promise<number | undefined> {
    return lockHolder(this.store.runLockPath(name));
  }

  /** The pid of the live process running the VM's resync, if any. */
  resyncPid(name: string): Promise<number | undefined> {
    return lockHolder(this.store.resyncLockPath(name));
  }

  async get(name: string): Promise<VmRecord> {
    return this.store.load(name);
  }

  async list(): Promise<VmRecord[]> {
    return this.store.list();
  }
}

/** What a replica site is told of each disk of the VM (named after the replica's file). */
function replicaDisks(vm: VmRecord): ReplicaDiskSpec[] {
  return vm.disks.map((d) => ({ index: d.index, name: basename(d.replicaPath), diskId: d.diskId, virtualSize: d.virtualSize, format: d.format, sectorSize: d.sectorSize ?? 512 }));
}
