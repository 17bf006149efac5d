import { randomUUID } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { openDisk } from '../disk/index.js';
import { VhdsyncError, ioError } from '../errors.js';
import { sampleRanges, takeFingerprint } from './fingerprint.js';
import { RESYNC_STATES } from './names.js';
import { LocalReplicaSite } from '../replica/local-site.js';
import { isReplicaAddress, parseSiteAddress } from '../transport/replica-address.js';
import { anyNetworkSetting, givenNetwork, loadNetwork, type NetworkSettings } from '../transport/network-settings.js';
import { applySettings, defaultSettings, parseStartTime, type SettingsChange } from './settings.js';
import { vmFolderName } from '../replica/vm-name.js';
import { checkVmName, newRecord, type VmDisk, type VmRecord } from './store.js';
import { dropDirtyMaps, stopTracking } from './vm-logs.js';
import type { Replication } from './replication.js';
import { discardResync } from './resync-required.js';
import { toHex } from '../bytes.js';

/** Enable-, Remove- and Set-VMReplication: a VM's replication comes into being, goes, and changes its settings. */

export interface EnableInput {
  name: string;
  disks: string[];
  /** A local directory, or a replica server: tls://HOST:PORT[/NAME] (NAME defaults to the VM's name). */
  replica: string;
  /** Certificates and bandwidth limit for a replica server. */
  network?: NetworkSettings;
  settings?: SettingsChange;
  /** `--initial-replication-start-time`: the service starts the initial replication then (≤ 7 days ahead). */
  initialReplicationStartTime?: string;
}

export async function enableReplication(rep: Replication, input: EnableInput): Promise<VmRecord> {
  const name = checkVmName(input.name);
  const now = rep.clock.now();
  if (input.disks.length === 0) throw new VhdsyncError('USAGE', `enable-replication ${name}: give at least one --disk`);
  const irTime = input.initialReplicationStartTime === undefined ? undefined : parseStartTime(input.initialReplicationStartTime, now, '--initial-replication-start-time').toISOString();
  const settings = applySettings(defaultSettings(), input.settings ?? {});
  const remote = isReplicaAddress(input.replica);
  const replica = remote ? parseSiteAddress(input.replica, vmFolderName(name)).url : resolve(input.replica);
  const given = givenNetwork(input.network ?? {});
  if (!remote && anyNetworkSetting(given)) throw new VhdsyncError('USAGE', `${anyNetworkSetting(given)} applies to a replica server (--replica tls://HOST:PORT/NAME); ${input.replica} is a local directory`);
  const network = remote ? given : undefined;
  // Certificates and rates are checked now: one line here rather than a failing cycle later.
  if (network) await loadNetwork(network, `enable-replication ${name} --replica ${replica}`);
  const disks: VmDisk[] = [];
  const seen = new Map<string, string>();
  for (const [index, given] of input.disks.entries()) {
    const path = await realpath(resolve(given)).catch((e) => {
      throw ioError(given, e);
    });
    const file = basename(path);
    if (seen.has(path)) throw new VhdsyncError('USAGE', `${given}: the same disk is given twice`);
    if ([...seen.values()].includes(file)) throw new VhdsyncError('USAGE', `${given}: another disk of ${name} has the file name ${file}; replica disks are named after their primaries, so names must differ`);
    seen.set(path, file);
    const disk = await openDisk(path, { readOnly: true });
    const info = { format: disk.format, type: disk.type, virtualSize: disk.virtualSize, sectorSize: disk.sectorSize };
    await disk.close();
    const replicaPath = remote ? `${replica}/${file}` : LocalReplicaSite.diskPathFor(replica, vmFolderName(name), path);
    if (replicaPath === path) throw new VhdsyncError('USAGE', `${given}: the replica of this disk would be the disk itself; choose another --replica directory`);
    const dataWriteId = toHex(crypto.getRandomValues(new Uint8Array(16)));
    const fingerprint = await takeFingerprint(path, sampleRanges(info.virtualSize).map((r) => ({ ...r, kind: 'sample' as const })), dataWriteId, now);
    disks.push({ index, path, diskId: randomUUID(), ...info, replicaPath, fingerprint });
  }
  const vm = newRecord({ name, vmId: randomUUID(), replica, disks, settings, ...(network ? { network } : {}) }, now);
  if (irTime) vm.initialReplicationStartTime = irTime;
  // The replica site is asked now whether it takes this VM (Hyper-V's Enable-VMReplication checks the
  // connection too): a wrong address, certificate, or a folder that holds another VM's replica (a
  // local one as much as a server's) is one line here, before anything is written there.
  await rep.site(vm).lastApplied();
  await rep.store.create(vm, (others) => {
    for (const o of others) {
      for (const d of o.disks) {
        if (disks.some((x) => x.path === d.path)) throw new VhdsyncError('BUSY', `${d.path}: this disk is already replicated by virtual machine '${o.name}'`);
        if (disks.some((x) => x.replicaPath === d.path || x.path === d.replicaPath)) {
          throw new VhdsyncError('BUSY', `${d.path}: this disk is a primary or replica of virtual machine '${o.name}'`);
        }
      }
    }
  });
  await rep.events.emit({ id: 90001, level: 'Information', vm: name, from: 'Disabled', to: vm.state });
  return vm;
}

/**
 * Remove-VMReplication. Returns what could not be cleaned up: a replica server that cannot be reached
 * does not keep a VM from being removed (the server may be gone for good); its unfinished resync files
 * then stay under the server's root.
 */
export async function removeReplication(rep: Replication, name: string): Promise<{ warnings: string[] }> {
  const vm = await rep.store.load(name);
  const busy = (await rep.runningPid(name)) ?? (await rep.resyncPid(name));
  if (busy) throw new VhdsyncError('BUSY', `virtual machine '${name}' is in use by process ${busy}; stop it first`);
  const warnings: string[] = [];
  if (RESYNC_STATES.includes(vm.state)) {
    await discardResync(rep, vm).catch((e: VhdsyncError) => {
      if (!isReplicaAddress(vm.replica) || (e.code !== 'LINK' && e.code !== 'AUTH')) throw e;
      warnings.push(`the unfinished resynchronization on ${vm.replica} was left there: ${e.message}`);
    });
  }
  await stopTracking(vm);
  await dropDirtyMaps(vm, { activityLogs: true });
  await rep.store.remove(name);
  await rep.events.emit({ id: 90001, level: 'Information', vm: vm.name, from: vm.state, to: 'Disabled', ...(warnings.length ? { warnings } : {}) });
  return { warnings };
}

/**
 * Set-VMReplication. `network` changes what a VM replicated to a replica server connects with: its
 * certificate files (checked now) and bandwidth limit (`unlimited` removes it).
 */
export async function setReplication(rep: Replication, name: string, change: SettingsChange, network: NetworkSettings = {}): Promise<VmRecord> {
  const given = givenNetwork(network);
  let next: NetworkSettings | undefined;
  if (anyNetworkSetting(given)) {
    const vm = await rep.store.load(name);
    if (!isReplicaAddress(vm.replica)) throw new VhdsyncError('USAGE', `${anyNetworkSetting(given)} applies to a VM replicated to a replica server; '${name}' replicates to the directory ${vm.replica}`);
    next = { ...vm.network, ...given };
    await loadNetwork(next, `set-replication ${name}`);
  }
  const { vm } = await rep.store.update(name, (vm) => {
    vm.settings = applySettings(vm.settings, change);
    if (next) vm.network = next;
  });
  return vm;
}
