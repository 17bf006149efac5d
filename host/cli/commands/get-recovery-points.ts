import type { Command } from 'commander';
import { getRecoveryPoints } from '../../replication/failover.js';
import { formatSize } from '../../units.js';
import { printJson } from '../output.js';
import { formatTable, replicationFor, withHome, type HomeFlags } from './replication-common.js';
import { recoveryPointsExtended, withExtended } from './extended.js';

/** Get-VMSnapshot -SnapshotType Replica-like: the latest point and the hourly ones, newest first. */
export function register(program: Command): void {
  const cmd = withHome(
    program
      .command('get-recovery-points')
      .description('List the recovery points of a VM on its replica: time, kind, size on disk')
      .argument('<vm>', 'VM name'),
  );
  withExtended(cmd).action(async (name: string, flags: HomeFlags & { extended?: boolean }) => {
    if (flags.extended) return recoveryPointsExtended(name, flags);
    const points = await getRecoveryPoints(replicationFor(flags), name);
    if (flags.json) {
      printJson(points.map((p) => ({ Time: p.time, Kind: p.kind, SizeOnDisk: p.sizeOnDisk, Sequence: p.sequence, ...(p.protected ? { PreResync: true } : {}) })));
      return;
    }
    process.stdout.write(formatTable(['Time', 'Kind', 'SizeOnDisk', 'Cycle'], points.map((p) => [p.time, p.protected ? `${p.kind} (pre-resync)` : p.kind, formatSize(p.sizeOnDisk), p.sequence])));
  });
}
