import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { getCore } from '../core/index.js';
import { openDisk } from '../disk/index.js';
import { diskChecksum } from '../resync/checksum.js';
import { basename, join, resolve } from 'node:path';
import { VhdsyncError, ioError } from '../errors.js';
import { copyFileAtomic, pathExists, writeFileAtomic } from '../fsutil.js';
import { jsonText } from '../json-text.js';
import { FieldError, parseStateText, type StateFile } from '../state-file.js';
import { isReplicaAddress, parseSiteAddress } from '../transport/replica-address.js';
import { LocalReplicaSite } from '../replica/local-site.js';
import type { ReplicaDiskSpec } from '../replica/site.js';
import type { Replication } from './replication.js';
import type { ResyncRunOptions, ResyncRunOutcome } from './resync-run.js';
import type { VmRecord } from './store.js';
import { shellWord, vmFolderName } from '../replica/vm-name.js';
import { runResync } from './resync-run.js';

/**
 * Offline initial replication (Hyper-V's `Start-VMInitialReplication -DestinationPath` and
 * `Import-VMInitialReplication`): the initial copy travels on removable media instead of the network.
 *
 * - `start-initial-replication VM --destination-path DIR` runs the initial replication into
 *   `DIR/<replica folder>/` — the same engine, so the VM may run meanwhile: tracking starts when it
 *   starts, writes made during the copy are applied to the copy, and from its end on they go to the
 *   tracking log of the next cycle, which waits. `DIR/<replica folder>/` then holds the replica disks,
 *   `replica.json` and `export.json` (this file's manifest). The VM stays InitialReplicationInProgress.
 * - `import-initial-replication VM --path DIR` at the replica site copies them into the VM's replica
 *   folder (a local directory) — or, on a replica server's machine, `--replica-root ROOT` into
 *   `ROOT/<replica folder>` — and records them as the replica at the exported point.
 * - The VM is then Replicating (at once after a local import; the service sees a server's import at its
 *   next pass), and the writes made since the export ship as normal cycles.
 */
export interface ExportManifest {
  version: 1;
  vmName: string;
  vmId: string;
  /** The folder of the VM's replica on the replica site (a local replica directory's, or the server's NAME). */
  folder: string;
  disks: Omit<ReplicaDiskSpec, 'path'>[];
  /** The replica equals the primaries as of this cycle; replication continues with the next. */
  lastApplied: number;
  exportedAt: string;
  /** Each exported disk's checksum (`vhdsync checksum`), by disk index: the import checks its copy against it. */
  digests: string[];
}

const MANIFEST = 'export.json';

/** `export.json`, every field checked: media from elsewhere is one line when it is not an export of ours. */
const EXPORT_MANIFEST: StateFile<ExportManifest> = {
  what: "the offline initial replication's export",
  version: 1,
  read: (f) => ({
    version: 1,
    vmName: f.string('vmName'),
    vmId: f.string('vmId'),
    folder: f.fileName('folder'),
    disks: f.disks('disks', (x) => {
      return { index: x.int('index'), name: x.fileName('name'), diskId: x.string('diskId'), virtualSize: x.int('virtualSize'), format: x.oneOf('format', ['raw', 'vhd', 'vhdx']), sectorSize: x.int('sectorSize', 1) };
    }),
    lastApplied: f.int('lastApplied'),
    exportedAt: f.time('exportedAt'),
    digests: f.array('digests', (v, at) => {
      if (typeof v !== 'string' || !/^[0-9a-f]{32}$/.test(v)) throw new FieldError(`${at} is not a checksum`);
      return v;
    }),
  }),
};

/** The folder the VM's replica has on its replica site. */
export function replicaFolder(vm: VmRecord): string {
  return isReplicaAddress(vm.replica) ? parseSiteAddress(vm.replica, vmFolderName(vm.name)).target : vmFolderName(vm.name);
}

function diskSpecs(vm: VmRecord): Omit<ReplicaDiskSpec, 'path'>[] {
  return vm.disks.map((d) => ({ index: d.index, name: basename(d.replicaPath), diskId: d.diskId, virtualSize: d.virtualSize, format: d.format, sectorSize: d.sectorSize ?? 512 }));
}

export async function exportInitialReplication(rep: Replication, name: string, destination: string, opts: ResyncRunOptions = {}): Promise<ResyncRunOutcome> {
  const dir = resolve(destination);
  const vm = await rep.get(name);
  const folder = replicaFolder(vm);
  const again = vm.state === 'InitialReplicationInProgress' && vm.offlineInitialReplication?.path === dir && vm.offlineInitialReplication.exportedAt === null;
  if (!again) {
    if (vm.state !== 'ReadyForInitialReplication') {
      throw new VhdsyncError('STATE', `virtual machine '${vm.name}' is ${vm.state}; an offline initial replication starts from ReadyForInitialReplication`);
    }
    const target = join(dir, folder);
    if ((await pathExists(target)) && (await readdir(target)).length > 0) {
      throw new VhdsyncError('EXISTS', `${target}: not empty; export to an empty folder (the media of another export?)`);
    }
    const owner = await rep.resyncPid(name);
    await rep.store.update(name, (v) => {
      if (v.state !== 'ReadyForInitialReplication') throw new VhdsyncError('STATE', `virtual machine '${v.name}' is ${v.state} now (process ${owner ?? 'gone'}); nothing changed`);
      v.state = 'InitialReplicationInProgress';
      v.offlineInitialReplication = { path: dir, sequence: 0, exportedAt: null };
      v.initialReplicationSize = 0;
      v.initialReplicationStartTime = null;
      v.resync = null;
    });
  }
  await mkdir(dir, { recursive: true }).catch((e) => {
    throw ioError(dir, e);
  });
  const site = new LocalReplicaSite(dir, folder, vm.vmId, diskSpecs(vm), vm.name);
  const out = await runResync(rep, name, { ...opts, origin: 'manual', site });
  if (out.result === 'completed') {
    const o = out.vm.offlineInitialReplication!;
    const disks = diskSpecs(vm);
    const digests: string[] = [];
    for (const d of disks) digests.push(await checksumOf(site.diskPath(d.index)));
    const manifest: ExportManifest = { version: 1, vmName: vm.name, vmId: vm.vmId, folder, disks, lastApplied: o.sequence - 1, exportedAt: o.exportedAt!, digests };
    await writeFileAtomic(join(site.vmDir, MANIFEST), jsonText(manifest));
  }
  return out;
}

/** The export on the media: `DIR/<folder>/export.json` (DIR may also be that folder itself). */
async function readExport(path: string, folder?: string): Promise<{ manifest: ExportManifest; from: string }> {
  const candidates = folder ? [join(path, folder), path] : [path, ...(await readdir(path).catch(() => [] as string[])).map((f) => join(path, f))];
  for (const from of candidates) {
    let text: string;
    try {
      text = await readFile(join(from, MANIFEST), 'utf8');
    } catch {
      continue;
    }
    return { manifest: parseStateText(join(from, MANIFEST), text, EXPORT_MANIFEST), from };
  }
  throw new VhdsyncError('NOT_FOUND', `${path}: no offline initial replication here (no ${folder ? `${folder}/` : ''}${MANIFEST}); export one with start-initial-replication VM --destination-path DIR`);
}

/**
 * Copy the exported disks into `<root>/<folder>/` (refused where replica disks already are) and record
 * them as the replica at the exported point. Disks are copied under a temporary name and renamed.
 */
async function adopt(manifest: ExportManifest, from: string, root: string, label: string): Promise<string> {
  const site = new LocalReplicaSite(root, manifest.folder, manifest.vmId, manifest.disks, label);
  const there = await site.existingDisks();
  if (there.length > 0) throw new VhdsyncError('EXISTS', `${there[0]}: a replica disk is already there; the import does not overwrite it (remove it first)`);
  await mkdir(site.vmDir, { recursive: true }).catch((e) => {
    throw ioError(site.vmDir, e);
  });
  for (const d of manifest.disks) {
    const src = join(from, d.name);
    const st = await stat(src).catch((e) => {
      throw ioError(src, e);
    });
    if (!st.isFile()) throw new VhdsyncError('STATE', `${src}: not a file`);
    // Durable before replica.json says the site is at the exported point (site.rebase below).
    const dst = site.diskPath(d.index);
    await copyFileAtomic(src, dst).catch((e) => {
      throw ioError(dst, e);
    });
    // The copy, not the media (which may change meanwhile), must be the disk the manifest names.
    await checkCopiedDisk(src, dst, d, manifest.digests[d.index]).catch(async (e) => {
      await rm(dst, { force: true });
      throw e;
    });
  }
  await site.rebase(manifest.lastApplied);
  return site.vmDir;
}

/** An imported disk is of the format and virtual size its export recorded: a file swapped on the media (a smaller, larger or foreign one) is refused in one line. */
async function checkCopiedDisk(src: string, copy: string, d: Omit<ReplicaDiskSpec, 'path'>, digest: string | undefined): Promise<void> {
  const refused = (why: string) => new VhdsyncError('STATE', `${src}: ${why}, not the ${d.format} disk of ${d.virtualSize} bytes its export recorded; this is not the exported disk (export again)`);
  const disk = await openDisk(copy, { readOnly: true }).catch((e) => {
    throw refused(`not a readable disk image (${e instanceof Error ? e.message : String(e)})`);
  });
  try {
    if (disk.format !== d.format || disk.virtualSize !== d.virtualSize) throw refused(`a ${disk.format} disk of ${disk.virtualSize} bytes`);
    // Same format and size, other bytes (a damaged or swapped copy): its checksum says so.
    const got = await diskChecksum(getCore(), disk);
    if (got !== digest) {
      throw new VhdsyncError('STATE', `${src}: its checksum ${got} is not the ${digest ?? '(none)'} its export recorded; the media's copy is damaged or not the exported disk (export again)`);
    }
  } finally {
    await disk.close();
  }
}

/** `vhdsync checksum` of an image. */
async function checksumOf(path: string): Promise<string> {
  const disk = await openDisk(path, { readOnly: true });
  try {
    return await diskChecksum(getCore(), disk);
  } finally {
    await disk.close();
  }
}

/**
 * `import-initial-replication VM --path DIR`: for a VM replicated to a directory, adopt the export there
 * and start replicating. `replicaRoot` (on a replica server's machine, no VM record): adopt it under
 * the server's root; the primary sees it at its next service pass.
 */
export async function importInitialReplication(rep: Replication | undefined, input: { vm?: string; path: string; replicaRoot?: string }): Promise<{ folder: string; manifest: ExportManifest; vm?: VmRecord }> {
  const path = resolve(input.path);
  if (input.replicaRoot !== undefined) {
    const { manifest, from } = await readExport(path);
    if (input.vm !== undefined && manifest.vmName.toLowerCase() !== input.vm.toLowerCase()) {
      throw new VhdsyncError('USAGE', `${join(from, MANIFEST)}: this is the export of '${manifest.vmName}', not '${input.vm}'`);
    }
    return { folder: await adopt(manifest, from, resolve(input.replicaRoot), manifest.vmName), manifest };
  }
  if (!rep || input.vm === undefined) throw new VhdsyncError('USAGE', 'import-initial-replication: give the VM (with its --home), or --replica-root on a replica server');
  const vm = await rep.get(input.vm);
  const o = vm.offlineInitialReplication;
  if (vm.state !== 'InitialReplicationInProgress' || !o?.exportedAt) {
    throw new VhdsyncError('STATE', `virtual machine '${vm.name}' is ${vm.state}${o ? ' (its export has not finished)' : ''}; nothing waits for an import (export first: start-initial-replication ${shellWord(vm.name)} --destination-path DIR)`);
  }
  if (isReplicaAddress(vm.replica)) {
    throw new VhdsyncError('USAGE', `virtual machine '${vm.name}' replicates to ${vm.replica}: import on the replica server's machine with --replica-root ROOT (the server's --root); the primary sees it at its next service pass`);
  }
  const { manifest, from } = await readExport(path, replicaFolder(vm));
  if (manifest.vmId !== vm.vmId) throw new VhdsyncError('STATE', `${join(from, MANIFEST)}: this export is of another VM ('${manifest.vmName}', id ${manifest.vmId})`);
  const want = diskSpecs(vm);
  const same = manifest.disks.length === want.length && manifest.disks.every((d, i) => (['index', 'name', 'diskId', 'virtualSize', 'format', 'sectorSize'] as const).every((k) => d[k] === want[i][k]));
  if (!same) throw new VhdsyncError('STATE', `${join(from, MANIFEST)}: its disks are not the disks of '${vm.name}' (export again)`);
  if (manifest.lastApplied !== o.sequence - 1) throw new VhdsyncError('STATE', `${join(from, MANIFEST)}: an older export of '${vm.name}' (cycle ${manifest.lastApplied}, the VM expects ${o.sequence - 1})`);
  const folder = await adopt(manifest, from, vm.replica, vm.name);
  return { folder, manifest, vm: await finishImport(rep, vm.name) };
}

/** The replica site holds the export: the VM replicates from now on (the waiting log ships next cycle). */
async function finishImport(rep: Replication, name: string): Promise<VmRecord> {
  const { vm } = await rep.store.update(name, (v) => {
    const o = v.offlineInitialReplication;
    if (v.state !== 'InitialReplicationInProgress' || !o?.exportedAt) return;
    v.state = 'Replicating';
    v.lastReplicationTime = o.exportedAt;
    v.lastCycleAt = null; // the next pass ships what was tracked since the export
    v.offlineInitialReplication = null;
  });
  return vm;
}

/** The service, for a VM whose export waits: has the replica site imported it (a replica server's root)? */
export async function checkImported(rep: Replication, name: string): Promise<boolean> {
  const vm = await rep.get(name);
  const o = vm.offlineInitialReplication;
  if (vm.state !== 'InitialReplicationInProgress' || !o?.exportedAt) return false;
  const site = rep.site(vm);
  if ((await site.existingDisks()).length !== vm.disks.length) return false;
  if ((await site.lastApplied()) !== o.sequence - 1) return false;
  return (await finishImport(rep, name)).state === 'Replicating';
}
