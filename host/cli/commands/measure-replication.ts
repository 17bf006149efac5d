import type { Command } from 'commander';
import { formatSize } from '../../units.js';
import { printJson } from '../output.js';
import type { CurrentTask } from '../../replication/views.js';
import { isNamePattern } from '../../replica/vm-name.js';
import { formatTable, type HomeFlags, matchingVms, replicationFor, tableMiB, withHome } from './replication-common.js';
import { measureReplication } from '../../replication/views.js';
import { measureExtended, relationshipFlag, withExtended } from './extended.js';

/** CurrentTask in one line: "Resynchronization 42 % (scope Full, disk 1 comparing, suspended)". */
function taskText(t: CurrentTask | null): string {
  if (!t) return 'None';
  const how = [`scope ${t.Scope}${t.ScopeBytes !== null && t.Scope === 'DirtyExtents' ? ` ${formatSize(t.ScopeBytes)}` : ''}`];
  if (t.Disk !== null) how.push(`disk ${t.Disk}${t.Phase ? ` ${t.Phase}` : ''}`);
  if (!t.Running) how.push('not running');
  return `${t.Task} ${t.PercentComplete} % (${how.join(', ')})`;
}

/** Measure-VMReplication: statistics of the monitoring interval and the replication counters. */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('measure-replication')
      .description('Replication statistics and counters of one VM or of all VMs')
      .argument('[vm]', 'VM name (any case; wildcards * and ? as in Hyper-V; default: every VM)')
      .option('--replication-relationship-type <type>', 'Simple (default) or Extended (as --extended)'),
  );
  withExtended(cmd).action(async (name: string | undefined, flags: HomeFlags & { extended?: boolean; replicationRelationshipType?: string }) => {
    if (relationshipFlag(flags)) return measureExtended(name, flags);
    const rep = replicationFor(flags);
    const all = [];
    for (const vm of await matchingVms(rep, name)) all.push(await measureReplication(rep, vm.name));
    if (flags.json) {
      printJson(name === undefined || isNamePattern(name) ? all : all[0]);
      return;
    }
    process.stdout.write(
      formatTable(
        ['VMName', 'State', 'Health', 'LReplTime', 'PReplSize(M)', 'AvgLatency', 'AvgReplSize(M)', 'Relationship'],
        all.map((m) => [m.VMName, m.State, m.Health, m.LastReplicationTime ?? '', tableMiB(m.PendingReplicationSize), `${m.AverageReplicationLatency.toFixed(2)} s`, tableMiB(m.AverageReplicationSize), m.Relationship]),
      ),
    );
    for (const m of all) {
      process.stdout.write(`\n${m.VMName}:\n`);
      process.stdout.write(`  ${'CurrentTask'.padEnd(28)} ${taskText(m.CurrentTask)}\n`);
      process.stdout.write(`  ${'LastReplicationType'.padEnd(28)} ${m.LastReplicationType}\n`);
      process.stdout.write(`  ${'InitialReplicationSize'.padEnd(28)} ${formatSize(m.InitialReplicationSize)} (${m.InitialReplicationSize} bytes)\n`);
      for (const [k, v] of Object.entries(m.Counters)) process.stdout.write(`  ${k.padEnd(28)} ${k.includes('Latency') ? `${v.toFixed(3)} s` : k.includes('Count') ? v : `${formatSize(v)} (${v} bytes)`}\n`);
      for (const d of m.ReplicationHealthDetails) process.stdout.write(`  ${d}\n`);
    }
  });
}
