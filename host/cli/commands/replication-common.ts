import type { Command } from 'commander';
import { resolve } from 'node:path';
import { Replication } from '../../replication/replication.js';
import { replicationView } from '../../replication/views.js';
import { type ResyncRunOptions, type ResyncRunOutcome } from '../../replication/resync-run.js';
import { parseRate } from '../../transport/rate.js';
import { MiB, formatSize } from '../../units.js';
import { ProgressBar, compareDetail } from '../progress.js';
import type { VmRecord } from '../../replication/store.js';
import { vhdsyncHome } from './resync.js';
import { isNamePattern, namePattern } from '../../replica/vm-name.js';
import { healthNow } from '../../replication/views.js';

/** Shared by the replication verbs: the home directory, and Get-VMReplication-like tables. */
export interface HomeFlags {
  home?: string;
  json?: boolean;
}

/** The foreground resync verbs take a simulated link to the (local) replica, as `vhdsync resync --link`. */
export function withLink(cmd: Command): Command {
  return cmd.option('--link <rate>', 'simulated link to the replica site: 1gbps, 1.5mbps, 10MB/s, unlimited (default)');
}

export function withHome(cmd: Command): Command {
  return cmd.option('--home <dir>', 'where replication state lives (default: $VHDSYNC_HOME or ~/.vhdsync)').option('--json', 'print JSON (PascalCase keys, as Hyper-V)');
}

export function replicationFor(flags: HomeFlags): Replication {
  return new Replication(resolve(flags.home ?? vhdsyncHome()));
}

export function viewOf(rep: Replication, vm: VmRecord) {
  return replicationView(vm, healthNow(rep, vm));
}

/**
 * The VMs a name names: one VM (any case; an unknown name is an error, as Hyper-V's), or with a
 * wildcard (`*`, `?`, `[a-c]`) every VM it matches — none is not an error. Undefined: every VM.
 */
export async function matchingVms(rep: Replication, name: string | undefined): Promise<VmRecord[]> {
  if (name === undefined) return rep.list();
  if (!isNamePattern(name)) return [await rep.get(name)];
  const match = namePattern(name);
  return (await rep.list()).filter((vm) => match(vm.name));
}

/**
 * A list like PowerShell's `Format-List *`: one `Name : Value` line per property, names padded to the
 * longest, a blank line between objects; arrays as `{a, b}`, objects inside as `@{K=v; …}`.
 */
export function formatList(objects: Record<string, unknown>[]): string {
  const value = (v: unknown): string => {
    if (v === null || v === undefined) return '';
    if (Array.isArray(v)) return `{${v.map(value).join(', ')}}`;
    if (typeof v === 'object') return `@{${Object.entries(v as object).map(([k, x]) => `${k}=${value(x)}`).join('; ')}}`;
    if (typeof v === 'boolean') return v ? 'True' : 'False';
    return String(v);
  };
  return objects
    .map((o) => {
      const width = Math.max(...Object.keys(o).map((k) => k.length));
      return Object.entries(o).map(([k, v]) => `${k.padEnd(width)} : ${value(v)}`.trimEnd()).join('\n') + '\n';
    })
    .join('\n');
}

/** A plain text table, columns padded to their widest cell (like `Format-Table`). */
/** A size in the (M) columns of Measure-VMReplication's table: MiB with two decimals. */
export function tableMiB(bytes: number): string {
  return (bytes / MiB).toFixed(2);
}

export function formatTable(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = rows.map((r) => r.map((c) => (c === null || c === undefined ? '' : String(c))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i]?.length ?? 0)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join(' ').trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n') + '\n';
}

export function replicationTable(rep: Replication, vms: VmRecord[]): string {
  return formatTable(
    ['VMName', 'State', 'Health', 'Mode', 'FrequencySec', 'PrimaryServer', 'ReplicaServer', 'ReplicaPort', 'AuthType', 'Relationship'],
    vms.map((vm) => {
      const v = viewOf(rep, vm);
      return [v.VMName, v.State, v.Health, v.Mode, v.FrequencySec, v.PrimaryServer, v.ReplicaServer, v.ReplicaServerPort ?? '', v.AuthenticationType, v.Relationship];
    }),
  );
}

/** Details under the table when something needs attention. */
export function healthNotes(rep: Replication, vms: VmRecord[]): string {
  const lines: string[] = [];
  for (const vm of vms) {
    const h = healthNow(rep, vm);
    if (h.health === 'Normal' || h.health === 'NotApplicable') continue;
    for (const d of h.details) lines.push(`${vm.name}: ${d}`);
  }
  return lines.length ? '\n' + lines.join('\n') + '\n' : '';
}

/** Drive a VM's resync (or initial replication) in the foreground: progress on a terminal, SIGINT/SIGTERM pause it. */
export async function runInForeground(
  run: (opts: ResyncRunOptions) => Promise<ResyncRunOutcome>,
  link?: string,
): Promise<ResyncRunOutcome> {
  const shape = link === undefined ? undefined : { rate: parseRate(link), latencyMs: 0 };
  const bar = new ProgressBar();
  let pause = false;
  let signals = 0;
  const onSignal = () => {
    if (++signals > 1) process.exit(130);
    bar.done();
    process.stderr.write('vhdsync: pausing the resynchronization (again to stop now)…\n');
    pause = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await run({
      link: shape,
      shouldPause: () => pause,
      onProgress: (d, p) => {
        if (p.phase === 'comparing') bar.update(p.bytesCompared, p.virtualSize, `disk ${d.index} ${compareDetail(p)}`);
        else if (p.phase === 'merging' && p.mergeTotal) bar.update(p.mergeDone ?? 0, p.mergeTotal, `disk ${d.index} · merging`);
      },
    });
  } finally {
    bar.done();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

export function outcomeJson(rep: Replication, o: ResyncRunOutcome) {
  return {
    Result: o.result,
    ...viewOf(rep, o.vm),
    Disks: o.disks.map((d) => ({
      Index: d.index,
      Path: d.path,
      Result: d.result.result,
      ResumedFrom: d.result.resumedFrom,
      BytesCompared: d.result.bytesCompared,
      ResynchronizationScope: d.result.scope,
      ScopeBytes: d.result.scopeBytes,
      BytesRead: d.result.bytesRead,
      BlocksSent: d.result.blocksSent,
      BytesSent: d.result.bytesSent,
      TrackedWritesApplied: d.result.trackedWritesApplied,
      Seconds: d.result.seconds,
      Events: d.result.events.map((e) => e.id),
    })),
  };
}

export function outcomeText(rep: Replication, o: ResyncRunOutcome, what: string): string {
  const lines = [`${what} of ${o.vm.name}: ${o.result}`];
  for (const d of o.disks) {
    const r = d.result;
    lines.push(
      `  disk ${d.index} ${d.path}: ${r.result}${r.resumedFrom > 0 ? `, resumed from ${formatSize(r.resumedFrom)}` : ''}, scope ${r.scope}${r.scope === 'DirtyExtents' ? ` (${formatSize(r.scopeBytes)})` : ''}, read ${formatSize(r.bytesRead)}, compared ${formatSize(r.bytesCompared)}, sent ${formatSize(r.bytesSent)} in ${r.blocksSent} blocks, ${r.trackedWritesApplied} tracked writes applied, ${r.seconds.toFixed(2)} s`,
    );
  }
  return lines.join('\n') + '\n' + replicationTable(rep, [o.vm]) + healthNotes(rep, [o.vm]);
}
