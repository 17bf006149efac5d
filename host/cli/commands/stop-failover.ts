import type { Command } from 'commander';
import { VhdsyncError } from '../../errors.js';
import { stopFailover } from '../../replication/failover.js';
import { printJson } from '../output.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';

/** Stop-VMFailover: ends a test failover (its disks are removed; replication was never disturbed). */
export function register(program: Command): void {
  withHome(
    program
      .command('stop-failover')
      .description('End a test failover: remove its disks')
      .argument('<vm>', 'VM name')
      .option('--test', 'the test failover (the only kind that can be stopped)'),
  ).action(async (name: string, flags: HomeFlags & { test?: boolean }) => {
    if (!flags.test) throw new VhdsyncError('USAGE', `stop-failover ${name}: only a test failover can be stopped; add --test`);
    const out = await stopFailover(replicationFor(flags), name, 'test');
    if (flags.json) printJson({ Removed: out.removed });
    else process.stdout.write(`test failover of ${name} stopped; removed:\n${out.removed.map((r) => `  ${r}\n`).join('')}`);
  });
}
