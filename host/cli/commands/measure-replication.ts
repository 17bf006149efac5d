import type { Command } from 'commander';
import { formatSize } from '../../units.js';
import { printJson } from '../output.js';
import { formatTable, replicationFor, withHome, type HomeFlags } from './replication-common.js';

/** Measure-VMReplication: statistics of the monitoring interval and the replication counters. */
export function register(program: Command): void {
  withHome(
    program
      .command('measure-replication')
      .description('Replication statistics and counters of one VM or of all VMs')
      .argument('[vm]', 'VM name (default: every VM)'),
  ).action(async (name: string | undefined, flags: HomeFlags) => {
    const rep = replicationFor(flags);
    const names = name === undefined ? await rep.store.names() : [name];
    const all = [];
    for (const n of names) all.push(await rep.measure(n));
    if (flags.json) {
      printJson(name === undefined ? all : all[0]);
      return;
    }
    const mb = (b: number) => (b / (1024 * 1024)).toFixed(2);
    process.stdout.write(
      formatTable(
        ['VMName', 'State', 'Health', 'LReplTime', 'PReplSize(M)', 'AvgLatency', 'AvgReplSize(M)', 'Relationship'],
        all.map((m) => [m.VMName, m.State, m.Health, m.LastReplicationTime ?? '', mb(m.PendingReplicationSize), `${m.AverageReplicationLatency.toFixed(2)} s`, mb(m.AverageReplicationSize), m.Relationship]),
      ),
    );
    for (const m of all) {
      process.stdout.write(`\n${m.VMName}:\n`);
      for (const [k, v] of Object.entries(m.Counters)) process.stdout.write(`  ${k.padEnd(28)} ${k.includes('Latency') ? `${v.toFixed(3)} s` : k.includes('Count') ? v : `${formatSize(v)} (${v} bytes)`}\n`);
      for (const d of m.ReplicationHealthDetails) process.stdout.write(`  ${d}\n`);
    }
  });
}
