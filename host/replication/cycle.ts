import { VhdsyncError } from '../errors.js';
import { removeIfExists } from '../fsutil.js';
import type { Replication } from './replication.js';
import { DEFAULT_RECOVERY_HISTORY } from './names.js';
import { retryDelayMs } from './schedule.js';
import { recordCycle } from './statistics.js';
import { shippedSequenceBack, type Trigger } from './triggers.js';
import { pendingCycles, switchLogs } from './vm-logs.js';
import { requireResync } from './resync-required.js';

export type CycleOutcome =
  | { result: 'replicated'; sequences: number[]; bytes: number; records: number; latencyMs: number }
  | { result: 'resync-required'; trigger: Trigger }
  | { result: 'failed'; error: string; attempt: number; retryAt: Date }
  | { result: 'skipped'; why: string };

/**
 * One replication cycle of a Replicating VM: seal the open logs (the next ones open in the same
 * instant if the VM runs), ship every sealed cycle to the replica in order, have the replica apply
 * them in sequence, and record the statistics. A failure is retried on Hyper-V's back-off (event 32315
 * names the retry time); what the replica refuses requires a resync.
 */
export async function replicateCycle(rep: Replication, name: string): Promise<CycleOutcome> {
  const store = rep.store;
  const now = rep.clock.now();
  const t0 = performance.now();
  let attempt = 0;
  try {
    const { vm, result: skip } = await store.update(name, async (vm) => {
      if (vm.state !== 'Replicating') return `the VM is ${vm.state}`;
      attempt = (vm.retry?.attempt ?? 0) + 1;
      vm.lastCycleAt = now.toISOString();
      // Asked under the state lock: a VM that starts now takes its run lock first, then waits for this
      // lock to open its logs, so either we open its next logs or it does.
      const running = (await rep.runningPid(name)) !== undefined;
      await switchLogs(vm, { running });
      return undefined;
    });
    if (skip) return { result: 'skipped', why: skip };
    const site = rep.site(vm);
    const sequences: number[] = [];
    let bytes = 0;
    for (const [seq, logs] of await pendingCycles(vm)) {
      const trigger = shippedSequenceBack(vm, seq, logs.find((l) => l !== undefined)?.path ?? `tracking log ${seq}`);
      if (trigger) {
        await requireResync(rep, name, trigger);
        return { result: 'resync-required', trigger };
      }
      for (const [i, log] of logs.entries()) if (log) await site.receive(seq, i, log.path);
      for (const log of logs) if (log) await removeIfExists(log.path);
      bytes += logs.reduce((n, l) => n + (l?.size ?? 0), 0);
      await store.update(name, (v) => {
        v.lastShippedSequence = Math.max(v.lastShippedSequence, seq);
      });
      sequences.push(seq);
    }
    const applied = await site.apply({ now: rep.clock.now(), recoveryHistory: vm.settings.RecoveryHistory ?? DEFAULT_RECOVERY_HISTORY });
    if (applied.problem) {
      const trigger: Trigger = { reason: applied.problem.reason, evidence: applied.problem.evidence };
      await requireResync(rep, name, trigger);
      return { result: 'resync-required', trigger };
    }
    const latencyMs = performance.now() - t0;
    const done = rep.clock.now();
    await store.update(name, (v) => {
      recordCycle(v.statistics, bytes, latencyMs);
      v.lastReplicationTime = done.toISOString();
      v.lastReplicationType = 'Regular';
      v.retry = null;
      v.lastError = null;
    });
    await store.counters.add(name, { 'Network Bytes Sent': bytes, 'Replication Count': 1 });
    return { result: 'replicated', sequences, bytes, records: applied.records, latencyMs };
  } catch (e) {
    const error = e instanceof VhdsyncError ? e.message : `${(e as Error).message}`;
    const retryAt = new Date(now.getTime() + retryDelayMs(Math.max(attempt, 1)));
    await store.update(name, (v, ctx) => {
      v.statistics.replicationErrors++;
      v.retry = { attempt: Math.max(attempt, 1), nextAt: retryAt.toISOString(), error };
      v.lastError = error;
      ctx.emit({ id: 32315, level: 'Warning', vm: v.name, error, attempt: Math.max(attempt, 1), retryTime: retryAt.toISOString() });
    });
    return { result: 'failed', error, attempt: Math.max(attempt, 1), retryAt };
  }
}
