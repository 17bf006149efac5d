import { lstat, readdir, realpath } from 'node:fs/promises';
import { basename, join, sep } from 'node:path';
import { VhdsyncError, asVhdsyncError, ioError } from '../errors.js';
import { LocalReplicaSite } from './local-site.js';
import type { FailoverRecord, ReplicaDiskSpec } from './site.js';
import { SITE_CALLS, type SiteCall, type SiteSpec } from './remote-site.js';
import { decode, encode } from '../transport/protocol.js';
import type { TlsLink } from '../transport/tls-link.js';
import { SITE_NAME } from '../transport/replica-address.js';
import { Fields, FieldError } from '../state-file.js';
import { SITE_FILE_NAMES } from './site-files.js';
import { failoverRecordOf } from './site-state.js';

/**
 * The replica server's side of a VM's replica site (`enable-replication --replica tls://HOST:PORT/NAME`):
 * one call per session, run by a LocalReplicaSite on `<root>/NAME`, exactly as a local replica
 * directory would run it. Everything the primary says is checked before the site is touched: the
 * VM's description (names, ids, sizes), the folder (confined to the root, no symbolic links in it),
 * the call and its arguments, and a shipped log's size and byte order.
 */

/** Largest frame of a site session: a log arrives in pieces of at most this much. */
export const SITE_FRAME_LIMIT = 1024 * 1024 + 64;
const MAX_DISKS = 64;

export interface ConfinedSite {
  site: LocalReplicaSite;
  /** What the session holds while it runs: the folder and every disk in it (resync sessions hold a disk). */
  keys: string[];
}

/** Check the VM description of an 'open' and confine its folder under the root. */
export async function confineSite(root: string, raw: unknown): Promise<ConfinedSite> {
  const spec = checkSiteSpec(raw);
  const realRoot = await realpath(root).catch((e) => {
    throw ioError(root, e);
  });
  const dir = join(realRoot, spec.vm);
  const st = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw ioError(dir, e);
  });
  if (st) {
    if (st.isSymbolicLink()) throw refuse(spec.vm, 'it is a symbolic link');
    if (!st.isDirectory()) throw refuse(spec.vm, 'it is not a folder');
    await noLinksIn(dir, spec.vm, 2);
  }
  const site = new LocalReplicaSite(realRoot, spec.vm, spec.vmId, spec.disks);
  if (!site.vmDir.startsWith(realRoot + sep)) throw refuse(spec.vm, "it is not under the server's root");
  return { site, keys: [site.vmDir, ...spec.disks.map((d) => site.diskPath(d.index))] };
}

/**
 * Serve one call after 'opened': for 'receive' the log's bytes arrive first as 'write' frames at
 * their offsets, in order; then the call's value is sent as 'result', or its error as 'error'.
 */
export async function serveSiteCall(link: TlsLink, site: LocalReplicaSite, call: unknown, args: unknown, opened: () => Promise<void>): Promise<string> {
  try {
    const value = await runCall(link, site, checkCall(call), (args ?? {}) as Record<string, unknown>, opened);
    await link.send(encode({ t: 'control', op: 'result', body: { value: value ?? null } }));
    return `${String(call)} done`;
  } catch (e) {
    const err = asVhdsyncError(e);
    await link.send(encode({ t: 'control', op: 'error', body: { code: err.code, message: err.message } })).catch(() => {});
    return `${String(call)} failed: ${err.message}`;
  } finally {
    link.close();
  }
}

/** `opened` tells the primary to go on: for 'receive', only once its bytes have somewhere to go. */
async function runCall(link: TlsLink, site: LocalReplicaSite, call: SiteCall, a: Record<string, unknown>, opened: () => Promise<void>): Promise<unknown> {
  if (call === 'receive') {
    return receiveLog(link, site, wholeNumber(a.sequence, 'receive: sequence'), diskIndex(site, a.disk), wholeNumber(a.size, 'receive: size'), opened);
  }
  await opened();
  switch (call) {
    case 'createEmptyDisks':
      return site.createEmptyDisks();
    case 'requireReplica':
      return site.requireReplica();
    case 'existingDisks':
      return names(await site.existingDisks());
    case 'lastApplied':
      return site.lastApplied();
    case 'rebase': {
      const time = a.preResyncPointTime;
      if (time !== undefined && (typeof time !== 'string' || Number.isNaN(Date.parse(time)))) throw bad('rebase: preResyncPointTime is not a time');
      return site.rebase(wholeNumber(a.lastApplied, 'rebase: lastApplied'), { ...(time === undefined ? {} : { preResyncPointTime: time }), ...(a.extended === true ? { extended: true } : {}) });
    }
    case 'apply': {
      const now = a.now === undefined ? undefined : new Date(String(a.now));
      if (now && Number.isNaN(now.getTime())) throw bad('apply: now is not a time');
      return site.apply({ now, recoveryHistory: a.recoveryHistory === undefined ? undefined : wholeNumber(a.recoveryHistory, 'apply: recoveryHistory') });
    }
    case 'cancelResync':
      return site.cancelResync(diskIndex(site, a.disk));
    case 'points': {
      const t = a.latestTime;
      if (t !== null && (typeof t !== 'string' || Number.isNaN(Date.parse(t)))) throw bad('points: latestTime is not a time');
      return site.points(t);
    }
    case 'failoverRecord':
      return site.failoverRecord();
    case 'setFailoverRecord':
      return site.setFailoverRecord(a.record === null ? null : checkFailoverRecord(a.record));
    case 'createTestViews':
      return names(await site.createTestViews(wholeNumber(a.sequence, 'createTestViews: sequence')));
    case 'removeTestViews':
      return names(await site.removeTestViews());
    case 'revertTo':
      return site.revertTo(wholeNumber(a.sequence, 'revertTo: sequence'));
    case 'resyncPhase':
      return site.resyncPhase(diskIndex(site, a.disk));
    case 'createFailoverViews':
      return names(await site.createFailoverViews(wholeNumber(a.sequence, 'createFailoverViews: sequence')));
    case 'removeFailoverViews':
      return names(await site.removeFailoverViews());
    case 'commitFailover':
      return site.commitFailover(wholeNumber(a.sequence, 'commitFailover: sequence'));
  }
}

/** Files in the VM's folder are answered by name: the server's paths are its own business. */
function names(paths: string[]): string[] {
  return paths.map((p) => basename(p));
}

function checkFailoverRecord(raw: unknown): FailoverRecord {
  try {
    return failoverRecordOf(Fields.of(raw));
  } catch (e) {
    if (e instanceof FieldError) throw bad(`setFailoverRecord: not a failover record (${e.message})`);
    throw e;
  }
}

/**
 * A shipped log: at most twice the VM's total size (the 50 % rule trips long before), written under a
 * temporary name as it arrives and renamed into place only when every byte is there.
 */
async function receiveLog(link: TlsLink, site: LocalReplicaSite, sequence: number, disk: number, size: number, opened: () => Promise<void>): Promise<void> {
  const limit = 2 * site.disks.reduce((n, d) => n + d.virtualSize, 0) + 16 * 1024 * 1024;
  if (size > limit) throw bad(`receive: a log of ${size} bytes is larger than this VM's logs can be (${limit})`);
  // The primary sends the bytes as soon as it hears 'opened': take them from then on, in order, and
  // write them once the temporary file is open.
  const opening = site.logWriter(sequence, disk);
  opening.catch(() => {});
  let received = 0;
  let chain: Promise<unknown> = opening;
  const whole = new Promise<void>((resolve, reject) => {
    if (size === 0) resolve();
    link.onClose((e) => reject(e ?? new VhdsyncError('LINK', `the primary went away after ${received} of ${size} bytes of log ${sequence}`)));
    link.onFrame((frame) => {
      chain = chain.then(async () => {
        const m = decode(frame);
        if (m.t !== 'write') throw bad(`receive: expected the log's bytes, got '${m.t === 'control' ? m.op : m.t}'`);
        if (m.offset !== received) throw bad(`receive: bytes at ${m.offset} arrived, expected ${received}`);
        if (received + m.data.byteLength > size) throw bad(`receive: more than the ${size} bytes announced`);
        await (await opening).write(m.data);
        received += m.data.byteLength;
        if (received === size) resolve();
      });
      chain.catch(reject);
      return chain.then(() => {}, () => {});
    });
  });
  whole.catch(() => {});
  await opened();
  const writer = await opening;
  try {
    await whole;
    link.onFrame(() => link.destroy(bad('receive: bytes after the end of the log')));
    await writer.commit();
  } catch (e) {
    await chain.catch(() => {}); // no write may land after the abort
    await writer.abort();
    throw e;
  }
}

function checkSiteSpec(raw: unknown): SiteSpec {
  if (typeof raw !== 'object' || raw === null) throw bad("'site' is not an object");
  const s = raw as Record<string, unknown>;
  if (typeof s.vm !== 'string' || !SITE_NAME.test(s.vm)) throw refuse(String(s.vm).slice(0, 80), "a replica folder is one name of 1-64 letters, digits, '.', '_' or '-'");
  if (typeof s.vmId !== 'string' || !/^[0-9a-f-]{8,64}$/i.test(s.vmId)) throw bad('site: vmId is not an id');
  if (!Array.isArray(s.disks) || s.disks.length === 0 || s.disks.length > MAX_DISKS) throw bad(`site: 1 to ${MAX_DISKS} disks`);
  const names = new Set<string>();
  const disks = s.disks.map((d: unknown, index): ReplicaDiskSpec => {
    const x = (d ?? {}) as Record<string, unknown>;
    const name = x.name;
    if (typeof name !== 'string' || !SITE_NAME.test(name) || SITE_FILE_NAMES.has(name) || names.has(name) || /\.(tmp|resync\.(vhdx?|json)|failover\.vhdx?)$/.test(name)) {
      throw refuse(`${s.vm}/${String(name).slice(0, 80)}`, 'not a usable disk file name');
    }
    names.add(name);
    if (x.index !== index) throw bad(`site: disk ${index} says it is disk ${String(x.index)}`);
    if (typeof x.diskId !== 'string' || !/^[0-9a-f-]{8,64}$/i.test(x.diskId)) throw bad(`site: disk ${index} has no id`);
    const virtualSize = wholeNumber(x.virtualSize, `site: disk ${index} size`);
    if (virtualSize === 0 || virtualSize > 2 ** 48) throw bad(`site: disk ${index} size ${virtualSize} is out of range`);
    if (x.format !== 'raw' && x.format !== 'vhd' && x.format !== 'vhdx') throw bad(`site: disk ${index} format '${String(x.format)}' is not raw, vhd or vhdx`);
    const sectorSize = x.sectorSize ?? 512;
    if (sectorSize !== 512 && sectorSize !== 4096) throw bad(`site: disk ${index} sector size ${String(sectorSize)} is not 512 or 4096`);
    return { index, name, diskId: x.diskId, virtualSize, format: x.format, sectorSize };
  });
  return { vm: s.vm, vmId: s.vmId, disks };
}

export function checkCall(call: unknown): SiteCall {
  if (!(SITE_CALLS as readonly unknown[]).includes(call)) throw bad(`'${String(call).slice(0, 40)}' is not a replica site call`);
  return call as SiteCall;
}

/** A replica folder must not lead out of the root: no symbolic link anywhere in it. */
async function noLinksIn(dir: string, name: string, depth: number): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isSymbolicLink()) throw refuse(name, `${e.name} in it is a symbolic link`);
    if (e.isDirectory() && depth > 1) await noLinksIn(join(dir, e.name), name, depth - 1);
  }
}

function diskIndex(site: LocalReplicaSite, v: unknown): number {
  const i = wholeNumber(v, 'disk');
  if (i >= site.disks.length) throw bad(`disk ${i} is not a disk of this VM`);
  return i;
}

function wholeNumber(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw bad(`${what} is not a whole number`);
  return v;
}

function bad(what: string): VhdsyncError {
  return new VhdsyncError('PROTOCOL', `protocol error: ${what}`);
}

function refuse(name: string, why: string): VhdsyncError {
  return new VhdsyncError('USAGE', `replica folder '${name}' is refused: ${why}`);
}
