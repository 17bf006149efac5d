import type { Command } from 'commander';
import { printJson } from '../output.js';
import {
  healthNotes, outcomeJson, outcomeText, replicationFor, replicationTable, runInForeground, viewOf, withHome, withLink, type HomeFlags,
} from './replication-common.js';
import { resumeReplication } from '../../replication/control.js';
import { runResync } from '../../replication/resync-run.js';
import { relationshipFlag, resumeExtended, withExtended } from './extended.js';

interface Flags extends HomeFlags {
  resynchronize?: boolean;
  resynchronizeStartTime?: string;
  continue?: boolean;
  keepPreResyncPoint?: boolean;
  full?: boolean;
  link?: string;
}

/**
 * Resume-VMReplication: resumes paused replication; with --resynchronize starts (or, with a start
 * time, schedules) a resync, which runs here in the foreground; --continue carries on a suspended one.
 * Exit status: 0 done, 3 paused (run again with --continue).
 */
export function register(program: Command): void {
  const cmd = program
    .command('resume-replication')
    .description('Resume replication of a VM; --resynchronize starts a resynchronization (now, or at --resynchronize-start-time); --continue carries on a suspended one')
    .argument('<vm>', 'VM name')
    .option('--resynchronize', 'start a resynchronization (Resume-VMReplication -Resynchronize)')
    .option('--resynchronize-start-time <time>', 'schedule it instead, at most 7 days ahead (e.g. "2024-08-01 05:00")')
    .option('--continue', 'continue a suspended resynchronization from where it stopped')
    .option('--full', 'with --resynchronize or --continue: compare every block, even when only dirty extents need it (after a crash or a log overflow)')
    .option('--keep-pre-resync-point', 'with --resynchronize: keep the replica as it was before as one protected recovery point, until the first new one exists');
  withExtended(withLink(withHome(cmd))).option('--replication-relationship-type <type>', 'Simple (default) or Extended (as --extended)').action(async (name: string, flags: Flags & { extended?: boolean; replicationRelationshipType?: string }) => {
    if (relationshipFlag(flags)) return resumeExtended(name, flags);
    const rep = replicationFor(flags);
    const { vm, run } = await resumeReplication(rep, name, {
      resynchronize: flags.resynchronize,
      resynchronizeStartTime: flags.resynchronizeStartTime,
      continue: flags.continue,
      keepPreResyncPoint: flags.keepPreResyncPoint,
    });
    if (!run) {
      if (flags.json) printJson(viewOf(rep, vm));
      else process.stdout.write(replicationTable(rep, [vm]) + healthNotes(rep, [vm]));
      return;
    }
    const outcome = await runInForeground((opts) => runResync(rep, name, { ...opts, restart: run.restart, full: flags.full, origin: 'manual' }), flags.link);
    if (flags.json) printJson(outcomeJson(rep, outcome));
    else process.stdout.write(outcomeText(rep, outcome, 'Resynchronization'));
    process.exitCode = outcome.result === 'completed' ? 0 : outcome.result === 'paused' ? 3 : 1;
  });
}
