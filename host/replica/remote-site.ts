import { open } from 'node:fs/promises';
import { VhdsyncError, ioError } from '../errors.js';
import { encode } from '../transport/protocol.js';
import type { ReplicaAddress } from '../transport/replica-address.js';
import { callReplicaServer, type DialOptions } from '../transport/tls-connect.js';
import type { TlsLink } from '../transport/tls-link.js';
import type { RecoveryPoint } from './recovery-points.js';
import type { ReplicaView } from './view.js';
import type { ApplyOptions, ApplyResult, FailoverRecord, RebaseOptions, ReplicaDiskSpec, ReplicaSite } from './site.js';
import { MiB } from '../units.js';

/**
 * A VM's replica site on a replica server (`tls://HOST:PORT/NAME`): every operation is one session
 * on the server (site-calls.ts), which runs it with a LocalReplicaSite on `<root>/NAME`.
 * A session waits in the server's queue like a transfer (--max-active-transfers). A shipped log
 * streams from its file in 1 MiB pieces, paced by the VM's bandwidth limit; a broken connection
 * fails the operation (the replication cycle retries it, the replica only takes whole logs).
 */
export const SITE_CALLS = [
  'createEmptyDisks', 'requireReplica', 'lastApplied', 'rebase', 'apply', 'cancelResync', 'receive',
  'points', 'failoverRecord', 'setFailoverRecord', 'createTestViews', 'removeTestViews', 'revertTo', 'resyncPhase',
  'createFailoverViews', 'removeFailoverViews', 'commitFailover', 'existingDisks',
] as const;
export type SiteCall = (typeof SITE_CALLS)[number];

/** Get-VMReplication on a replica server: the replica side's view of one folder (or all) under its root (view.ts). */
export async function describeRemoteReplicas(address: ReplicaAddress, dial: DialOptions, name?: string): Promise<ReplicaView[]> {
  const r = await callReplicaServer(address, dial, { call: 'describe', target: name ?? null });
  if (!Array.isArray(r)) throw new VhdsyncError('PROTOCOL', `protocol error: replica server ${address.display} answered describe with something else`);
  return r as ReplicaView[];
}

/** What the server is told of the VM: the folder's name, the VM's id, and each disk. */
export interface SiteSpec {
  vm: string;
  vmId: string;
  disks: Omit<ReplicaDiskSpec, 'path'>[];
}

const CHUNK = MiB;

export class RemoteReplicaSite implements ReplicaSite {
  /** Loaded at the first call, then shared by this site's sessions (one bandwidth bucket for them all). */
  private dial: Promise<DialOptions> | undefined;

  constructor(
    private readonly address: ReplicaAddress & { url: string },
    private readonly spec: SiteSpec,
    private readonly network: () => Promise<DialOptions>,
  ) {}

  get where(): string {
    return this.address.url;
  }

  async createEmptyDisks(): Promise<void> {
    await this.call('createEmptyDisks');
  }

  async requireReplica(): Promise<void> {
    await this.call('requireReplica');
  }

  async existingDisks(): Promise<string[]> {
    return this.locations(await this.call('existingDisks'), 'existingDisks');
  }

  async lastApplied(): Promise<number> {
    const n = await this.call('lastApplied');
    if (typeof n !== 'number') throw this.garbled('lastApplied');
    return n;
  }

  async rebase(lastApplied: number, opts: RebaseOptions = {}): Promise<void> {
    await this.call('rebase', { lastApplied, ...opts });
  }

  async apply(opts: ApplyOptions = {}): Promise<ApplyResult> {
    const r = (await this.call('apply', { now: opts.now?.toISOString(), recoveryHistory: opts.recoveryHistory })) as ApplyResult | null;
    if (!r || !Array.isArray(r.applied) || typeof r.lastApplied !== 'number') throw this.garbled('apply');
    return r;
  }

  async cancelResync(diskIndex: number): Promise<{ cancelled: boolean }> {
    const r = (await this.call('cancelResync', { disk: diskIndex })) as { cancelled?: unknown } | null;
    return { cancelled: r?.cancelled === true };
  }

  async receive(sequence: number, diskIndex: number, from: string): Promise<void> {
    const fh = await open(from, 'r').catch((e) => {
      throw ioError(from, e);
    });
    try {
      const { size } = await fh.stat();
      await this.call('receive', { sequence, disk: diskIndex, size }, async (link) => {
        const buf = new Uint8Array(CHUNK);
        for (let at = 0; at < size; ) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - at), at);
          if (bytesRead === 0) throw new VhdsyncError('IO', `${from}: the log shrank while it was shipped`);
          await link.send(encode({ t: 'write', offset: at, data: buf.subarray(0, bytesRead) }));
          at += bytesRead;
        }
      });
    } finally {
      await fh.close();
    }
  }

  // ---- Failover: run there, on the server's files ----

  diskLocation(index: number): string {
    return `${this.address.url}/${this.spec.disks[index].name}`;
  }

  async points(latestTime: string | null): Promise<RecoveryPoint[]> {
    const r = await this.call('points', { latestTime });
    if (!Array.isArray(r)) throw this.garbled('points');
    return r as RecoveryPoint[];
  }

  async failoverRecord(): Promise<FailoverRecord | undefined> {
    return ((await this.call('failoverRecord')) as FailoverRecord | null) ?? undefined;
  }

  async setFailoverRecord(record: FailoverRecord | null): Promise<void> {
    await this.call('setFailoverRecord', { record });
  }

  async createTestViews(sequence: number): Promise<string[]> {
    return this.locations(await this.call('createTestViews', { sequence }), 'createTestViews');
  }

  async removeTestViews(): Promise<string[]> {
    return this.locations(await this.call('removeTestViews'), 'removeTestViews');
  }

  async revertTo(sequence: number): Promise<void> {
    await this.call('revertTo', { sequence });
  }

  async resyncPhase(index: number): Promise<string | null> {
    const r = await this.call('resyncPhase', { disk: index });
    return typeof r === 'string' ? r : null;
  }

  async createFailoverViews(sequence: number): Promise<string[]> {
    return this.locations(await this.call('createFailoverViews', { sequence }), 'createFailoverViews');
  }

  async removeFailoverViews(): Promise<string[]> {
    return this.locations(await this.call('removeFailoverViews'), 'removeFailoverViews');
  }

  async commitFailover(sequence: number): Promise<void> {
    await this.call('commitFailover', { sequence });
  }

  /** The server answers with file names in the VM's folder; the user sees them as addresses. */
  private locations(v: unknown, call: SiteCall): string[] {
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw this.garbled(call);
    return v.map((name) => `${this.address.url}/${name}`);
  }

  /** One session: open with the call, send what it needs, wait for its result. */
  private async call(call: SiteCall, args: Record<string, unknown> = {}, upload?: (link: TlsLink) => Promise<void>): Promise<unknown> {
    this.dial ??= this.network();
    this.dial.catch(() => (this.dial = undefined)); // a file fixed meanwhile is read at the next call
    return callReplicaServer(this.address, await this.dial, { site: this.spec, call, args }, upload);
  }

  private garbled(call: SiteCall): VhdsyncError {
    return new VhdsyncError('PROTOCOL', `protocol error: replica server ${this.address.display} answered ${call} with something else`);
  }
}
