import { checkImported } from '../replication/offline-ir.js';
import { VhdsyncError } from '../errors.js';
import { replicateCycle, type CycleOutcome } from '../replication/cycle.js';
import { TRACKING_STATES } from '../replication/names.js';
import type { Replication } from '../replication/replication.js';
import type { ResyncRunOutcome } from '../replication/resync-run.js';
import { resyncDecision } from '../replication/schedule.js';
import { averageLatencyMs, averageSize, DEFAULT_MONITORING_INTERVAL_MS, emptyStatistics } from '../replication/statistics.js';
import type { Trigger } from '../replication/triggers.js';
import { tryLock } from '../pid-lock.js';
import { pauseForWindow, suspendReplication } from '../replication/control.js';
import { evaluateTriggers } from '../replication/resync-required.js';
import { runResync, startInitialReplication } from '../replication/resync-run.js';
import { ExtendedReplication, type ExtendedCycleOutcome } from '../replication/extended.js';

/**
 * `vhdsync service`: the long-running daemon, Hyper-V's VMMS for our VMs. Each pass, for every VM:
 * evaluate the resync triggers on the evidence; run a replication cycle when one is due (every
 * ReplicationFrequencySec, or at the retry time after a failure); start a resync the policy allows
 * (scheduled time, automatic inside the start window), continue one whose process died or whose window
 * reopened, pause one whose window closed (when asked to); and at the end of each monitoring interval
 * report the statistics (29174). `once` does a single pass with every cycle due, waiting for resyncs.
 */
export interface ServiceOptions {
  once?: boolean;
  /** Statistics window (event 29174); Hyper-V's default is 12 hours. */
  monitoringIntervalMs?: number;
  /** Pause between passes of the daemon loop. */
  tickMs?: number;
  log?: (line: string) => void;
}

export interface VmPass {
  VMName: string;
  trigger?: Trigger;
  cycle?: CycleOutcome;
  resync?: { started: 'start' | 'continue'; outcome?: ResyncRunOutcome['result']; error?: string };
  /** An offline initial replication's import was found at the replica site: the VM replicates. */
  imported?: boolean;
  /** The initial replication started at its --initial-replication-start-time. */
  initialReplication?: { started: true; outcome?: ResyncRunOutcome['result']; error?: string };
  paused?: boolean;
  statisticsReported?: boolean;
  /** Set for the extended relationship of the VM's replica at this site (replication/extended.ts): its cycle. */
  relationship?: 'Extended';
  extended?: ExtendedCycleOutcome;
  error?: string;
}

export class ReplicationService {
  private readonly resyncs = new Map<string, Promise<void>>();
  private readonly log: (line: string) => void;

  constructor(
    private readonly rep: Replication,
    private readonly opts: ServiceOptions = {},
  ) {
    this.log = opts.log ?? (() => undefined);
  }

  /** One pass over every VM. */
  async pass(): Promise<VmPass[]> {
    const out: VmPass[] = [];
    for (const name of await this.rep.store.names()) out.push(await this.passVm(name));
    // Extended relationships of the replicas at this site: a cycle each when one is due.
    const ext = new ExtendedReplication(this.rep.store.home, { clock: this.rep.clock });
    let records: Awaited<ReturnType<typeof ext.list>> = [];
    try {
      records = await ext.list();
    } catch (e) {
      // A damaged record is one line in the log, and the VMs' passes above still count.
      this.log(`extended replication: ${(e as Error).message}`);
    }
    for (const rec of records) {
      if (!this.opts.once && !ext.due(rec, this.rep.clock.now())) continue;
      const report: VmPass = { VMName: rec.name, relationship: 'Extended', extended: await ext.cycle(rec.name) };
      this.log(`${rec.name} (extended): ${report.extended!.result}${'error' in report.extended! ? ` (${report.extended!.error})` : ''}`);
      out.push(report);
    }
    return out;
  }

  private async passVm(name: string): Promise<VmPass> {
    const rep = this.rep;
    const report: VmPass = { VMName: name };
    const now = rep.clock.now();
    try {
      let vm = await rep.store.load(name);
      // Resynchronization Required is looked at too: a disk changed behind the tracker widens its scope.
      if ((TRACKING_STATES.includes(vm.state) || vm.state === 'WaitingForStartResynchronize') && !this.resyncs.has(name)) {
        report.trigger = await evaluateTriggers(rep, name);
        if (report.trigger) this.log(`${name}: resynchronization required: ${report.trigger.reason}: ${report.trigger.evidence}`);
        vm = await rep.store.load(name);
      }
      if (vm.state === 'ReadyForInitialReplication' && vm.initialReplicationStartTime && now.getTime() >= Date.parse(vm.initialReplicationStartTime) && !this.resyncs.has(name)) {
        // --initial-replication-start-time has come.
        report.initialReplication = { started: true };
        this.log(`${name}: starting the scheduled initial replication`);
        const run = startInitialReplication(rep, name)
          .then((o) => {
            if (report.initialReplication) report.initialReplication.outcome = o.result;
            this.log(`${name}: initial replication ${o.result}`);
          })
          .catch((e: Error) => {
            if (report.initialReplication) report.initialReplication.error = e.message;
            this.log(`${name}: initial replication failed: ${e.message}`);
          })
          .finally(() => this.resyncs.delete(name));
        this.resyncs.set(name, run);
        if (this.opts.once) await run;
        vm = await rep.store.load(name);
      }
      if (vm.state === 'InitialReplicationInProgress' && vm.offlineInitialReplication?.exportedAt && !this.resyncs.has(name)) {
        // An offline initial replication imported on a replica server: replication starts.
        if (await checkImported(rep, name)) {
          report.imported = true;
          this.log(`${name}: the replica site has imported the offline initial replication; replicating`);
          vm = await rep.store.load(name);
        }
      }
      if (vm.state === 'Replicating') {
        const freqMs = vm.settings.ReplicationFrequencySec * 1000;
        const last = vm.lastCycleAt ? new Date(vm.lastCycleAt).getTime() : undefined;
        const retryAt = vm.retry ? new Date(vm.retry.nextAt).getTime() : undefined;
        const due = this.opts.once || (retryAt !== undefined ? now.getTime() >= retryAt : last === undefined || now.getTime() >= last + freqMs);
        if (due) {
          if (!this.opts.once && last !== undefined && retryAt === undefined) {
            const missed = Math.floor((now.getTime() - last) / freqMs) - 1;
            if (missed > 0) await rep.store.update(name, (v) => void (v.statistics.missedReplicationCount += missed));
          }
          report.cycle = await replicateCycle(rep, name);
          this.log(`${name}: cycle ${describeCycle(report.cycle)}`);
        }
        vm = await rep.store.load(name);
      }
      if (vm.state === 'WaitingForStartResynchronize' || vm.state === 'Resynchronizing' || vm.state === 'ResynchronizeSuspended') {
        const owner = await rep.resyncPid(name);
        const d = resyncDecision(vm, now, owner !== undefined);
        if ((d.action === 'start' || d.action === 'continue') && !this.resyncs.has(name) && !(vm.retry && now.getTime() < new Date(vm.retry.nextAt).getTime())) {
          report.resync = { started: d.action };
          const origin = d.action === 'start' ? d.origin : undefined;
          this.log(`${name}: ${d.action === 'start' ? `starting a${origin === 'automatic' ? 'n automatic' : ' scheduled'}` : 'continuing the'} resynchronization`);
          const run = runResync(rep, name, { origin })
            .then((o) => {
              if (report.resync) report.resync.outcome = o.result;
              this.log(`${name}: resynchronization ${o.result}`);
            })
            .catch((e: Error) => {
              if (report.resync) report.resync.error = e.message;
              this.log(`${name}: resynchronization failed: ${e.message}`);
            })
            .finally(() => this.resyncs.delete(name));
          this.resyncs.set(name, run);
          if (this.opts.once) await run;
        } else if (d.action === 'pause') {
          await pauseForWindow(rep, name);
          report.paused = true;
          this.log(`${name}: the start window closed; pausing the resynchronization until it opens again`);
        }
      }
      report.statisticsReported = await this.reportStatistics(name);
    } catch (e) {
      report.error = (e as Error).message;
      this.log(`${name}: ${report.error}`);
    }
    return report;
  }

  /** At the end of a monitoring interval: event 29174 with its statistics, then a new interval. */
  private async reportStatistics(name: string): Promise<boolean> {
    const now = this.rep.clock.now();
    const interval = this.opts.monitoringIntervalMs ?? DEFAULT_MONITORING_INTERVAL_MS;
    const { result } = await this.rep.store.update(name, (vm, ctx) => {
      const s = vm.statistics;
      if (now.getTime() - new Date(s.monitoringStartTime).getTime() < interval) return false;
      ctx.emit({
        id: 29174,
        level: 'Information',
        vm: name,
        monitoringStartTime: s.monitoringStartTime,
        monitoringEndTime: now.toISOString(),
        successfulReplicationCount: s.successfulReplicationCount,
        missedReplicationCount: s.missedReplicationCount,
        replicationErrors: s.replicationErrors,
        averageReplicationSize: averageSize(s),
        maximumReplicationSize: s.maximumReplicationSize,
        averageReplicationLatencySeconds: averageLatencyMs(s) / 1000,
        maximumReplicationLatencySeconds: s.maximumReplicationLatencyMs / 1000,
      });
      vm.statistics = emptyStatistics(now);
      return true;
    });
    return result;
  }

  /** Resyncs this service started and that are still running. */
  async idle(): Promise<void> {
    while (this.resyncs.size > 0) await Promise.all([...this.resyncs.values()]);
  }

  /** The daemon: a pass every tick until `signal` aborts; running resyncs are then paused, not lost. */
  async run(signal: AbortSignal): Promise<void> {
    const lock = await tryLock(this.rep.store.serviceLockPath());
    if (!('release' in lock)) throw new VhdsyncError('BUSY', `the replication service is already running for this home (process ${lock.holder})`);
    try {
      while (!signal.aborted) {
        await this.pass();
        await new Promise<void>((res) => {
          // One abort listener per wait, removed when the tick ends (else they pile up: MaxListenersExceededWarning).
          const done = () => (clearTimeout(t), signal.removeEventListener('abort', done), res());
          const t = setTimeout(done, this.opts.tickMs ?? 1000);
          signal.addEventListener('abort', done, { once: true });
        });
      }
      for (const name of this.resyncs.keys()) await suspendReplication(this.rep, name).catch(() => undefined);
      await this.idle();
    } finally {
      await lock.release();
    }
  }

  /** `--once`: a single pass under the service lock, waiting for the resyncs it started. */
  async once(): Promise<VmPass[]> {
    const lock = await tryLock(this.rep.store.serviceLockPath());
    if (!('release' in lock)) throw new VhdsyncError('BUSY', `the replication service is already running for this home (process ${lock.holder})`);
    try {
      const out = await this.pass();
      await this.idle();
      return out;
    } finally {
      await lock.release();
    }
  }
}

function describeCycle(c: CycleOutcome): string {
  switch (c.result) {
    case 'replicated':
      return `replicated ${c.sequences.length ? `log${c.sequences.length > 1 ? 's' : ''} ${c.sequences.join(', ')}` : 'nothing new'} (${c.bytes} bytes, ${c.records} writes)`;
    case 'resync-required':
      return `stopped: resynchronization required (${c.trigger.reason})`;
    case 'failed':
      return `failed (${c.error}); retry at ${c.retryAt.toISOString()}`;
    case 'skipped':
      return `skipped (${c.why})`;
  }
}
