import type { Command } from 'commander';
import { ReplicationService } from '../../service/service.js';
import { printJson } from '../output.js';
import { powerShellKeys } from '../powershell-keys.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';
import { parseDuration } from './workload.js';
import { healthNow } from '../../replication/views.js';

interface Flags extends HomeFlags {
  once?: boolean;
  tick: string;
  monitoringInterval: string;
  quiet?: boolean;
}

/** The replication daemon; `--once` does one pass (seal, ship, apply, triggers, due resyncs) and exits. */
export function register(program: Command): void {
  withHome(
    program
      .command('service')
      .description('Run replication: cycles every interval, trigger checks, automatic and scheduled resyncs, retries (--once: one pass)')
      .option('--once', 'one pass: seal and ship what is pending, apply it, check the triggers, run due resyncs, then exit')
      .option('--tick <time>', 'pause between passes', '1s')
      .option('--monitoring-interval <time>', 'statistics interval (event 29174)', '12h')
      .option('--quiet', 'no log lines on stderr'),
  ).action(async (flags: Flags) => {
    const rep = replicationFor(flags);
    const log = flags.quiet || flags.json ? undefined : (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
    const svc = new ReplicationService(rep, { once: flags.once, tickMs: parseDuration(flags.tick, '--tick'), monitoringIntervalMs: parseDuration(flags.monitoringInterval, '--monitoring-interval'), log });
    if (flags.once) {
      const passes = await svc.once();
      const failed = passes.filter((p) => p.error || p.resync?.error || p.extended?.result === 'failed');
      if (flags.json) {
        const out = [];
        for (const p of passes) {
          if (p.relationship === 'Extended') {
            out.push(powerShellKeys(p));
            continue;
          }
          const vm = await rep.store.tryLoad(p.VMName);
          out.push({ ...(powerShellKeys(p) as object), State: vm?.state, Health: vm ? healthNow(rep, vm).health : undefined });
        }
        printJson(out);
      } else {
        for (const p of passes) {
          if (p.relationship === 'Extended') {
            const e = p.extended!;
            process.stdout.write(`${p.VMName} (extended): ${e.result}${e.result === 'failed' ? ` (${e.error})` : e.result === 'resync-required' ? ` (${e.reason}: ${e.evidence})` : ''}\n`);
            continue;
          }
          const vm = await rep.store.tryLoad(p.VMName);
          process.stdout.write(`${p.VMName}: ${vm?.state ?? 'removed'} / ${vm ? healthNow(rep, vm).health : ''}${p.error ? ` (${p.error})` : ''}\n`);
        }
      }
      if (failed.length > 0) process.exitCode = 1;
      return;
    }
    const ac = new AbortController();
    const stop = () => ac.abort();
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    log?.(`replication service started (process ${process.pid}, home ${rep.store.home})`);
    try {
      await svc.run(ac.signal);
    } finally {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    }
    log?.('replication service stopped');
  });
}
