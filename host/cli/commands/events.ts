import type { Command } from 'commander';
import { join } from 'node:path';
import { VhdsyncError } from '../../errors.js';
import { readEventLog } from '../../events/event-log.js';
import { printJson } from '../output.js';
import { eventJson } from '../powershell-keys.js';
import { namePattern } from '../../replica/vm-name.js';
import { replicationFor, withHome, type HomeFlags } from './replication-common.js';

interface Flags extends HomeFlags {
  id?: string;
}

/** The event log (Hyper-V-VMMS-Admin's replica events): 29242, 29244, 29174, 32315, state changes. */
export function register(program: Command): void {
  withHome(
    program
      .command('events')
      .description('Show replication events (29242/29244 resync, 29174 statistics, 32315 failed cycle, 90001 state change, 90002 resync required)')
      .argument('[vm]', 'only this VM (any case; wildcards * and ? as in Hyper-V)')
      .option('--id <n>', 'only events with this id'),
  ).action(async (vm: string | undefined, flags: Flags) => {
    const id = flags.id === undefined ? undefined : Number(flags.id);
    if (id !== undefined && !Number.isSafeInteger(id)) throw new VhdsyncError('USAGE', `--id: '${flags.id}' is not an event id`);
    const rep = replicationFor(flags);
    const all = await readEventLog(join(rep.store.home, 'events.jsonl'));
    const matches = vm === undefined ? () => true : namePattern(vm);
    const events = all.filter((e) => matches(e.vm) && (id === undefined || e.id === id));
    if (flags.json) printJson(events.map(eventJson));
    else for (const e of events) process.stdout.write(`${e.time}  ${String(e.id).padEnd(5)} ${e.level.padEnd(11)} ${e.message}\n`);
  });
}
