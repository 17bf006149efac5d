import { resyncRequiredMessage } from './names.js';
import { type ReplicationHealth } from '../replica/states.js';
import { averageLatencyMs, missedRatio } from './statistics.js';
import type { VmRecord } from './store.js';

/**
 * Replication health from the state and the statistics (Hyper-V team, "Interpreting Replication
 * Health"; reference §1.5): Critical when the primary cannot send (resync required, an error, failing
 * cycles); Warning when more than 20 % of cycles were missed, nothing was replicated for over an hour,
 * the initial replication is not complete, replication is paused or a resync is running; else Normal.
 */
export function replicationHealth(vm: VmRecord, now: Date): { health: ReplicationHealth; details: string[] } {
  const name = vm.name;
  switch (vm.state) {
    case 'Disabled':
      return { health: 'NotApplicable', details: [] };
    case 'WaitingForStartResynchronize': {
      const details = [resyncRequiredMessage(name)];
      if (vm.resync) details.push(`Reason: ${vm.resync.reason}: ${vm.resync.evidence}`);
      if (vm.resynchronizeStartTime) details.push(`Resynchronization is scheduled for ${vm.resynchronizeStartTime}.`);
      return { health: 'Critical', details };
    }
    case 'Error':
      return { health: 'Critical', details: [`Replication for virtual machine ${name} is in error${vm.lastError ? `: ${vm.lastError}` : ''}. Fix the error(s) and resume replication.`] };
    case 'ReadyForInitialReplication':
      return {
        health: 'Warning',
        details: [`Initial replication is not complete for virtual machine ${name}.`, ...(vm.initialReplicationStartTime ? [`Initial replication is scheduled for ${vm.initialReplicationStartTime}.`] : [])],
      };
    case 'InitialReplicationInProgress':
      if (vm.offlineInitialReplication?.exportedAt) {
        return {
          health: 'Warning',
          details: [
            `Initial replication is not complete for virtual machine ${name}.`,
            `The initial copy was exported to ${vm.offlineInitialReplication.path} at ${vm.offlineInitialReplication.exportedAt}; import it at the replica site (import-initial-replication).`,
          ],
        };
      }
      return { health: 'Warning', details: [`Initial replication is not complete for virtual machine ${name}.`] };
    case 'WaitingForInitialReplication':
      return { health: 'Warning', details: [`Initial replication is not complete for virtual machine ${name}.`] };
    case 'Suspended':
      return { health: 'Warning', details: [`Replication is paused for virtual machine ${name}.`] };
    case 'Resynchronizing':
      return { health: 'Warning', details: [`Resynchronization is in progress for virtual machine ${name}.`] };
    case 'ResynchronizeSuspended':
      return {
        health: 'Warning',
        details: [`Resynchronization is suspended for virtual machine ${name}${vm.resync?.pausedByWindow ? ' until its start window opens' : ''}. Resume replication to continue it.`],
      };
    case 'PreparedForFailover':
      return { health: 'Warning', details: [`Virtual machine ${name} is prepared for a planned failover: fail over (start-failover ${name}) or cancel it (stop-failover ${name}).`] };
    case 'FailedOverWaitingCompletion':
      return { health: 'Warning', details: [`Virtual machine ${name} is failed over, waiting for completion: complete-failover ${name} commits it, stop-failover ${name} rolls it back.`] };
    case 'FailedOver':
      return { health: 'Warning', details: [`Virtual machine ${name} is failed over and not reverse-replicated (reverse-replication ${name}).`] };
    case 'Replicating': {
      if (vm.retry) {
        return { health: 'Critical', details: [`Replication of virtual machine ${name} is failing (${vm.retry.error}); the next attempt is at ${vm.retry.nextAt}.`] };
      }
      const details: string[] = [];
      const s = vm.statistics;
      if (missedRatio(s) > 0.2) details.push(`More than 20 percent of replication cycles have been missed for virtual machine ${name}.`);
      const last = vm.lastReplicationTime ? new Date(vm.lastReplicationTime).getTime() : undefined;
      if (last !== undefined && now.getTime() - last > 3600_000) details.push(`Replication of virtual machine ${name} is behind the primary by more than an hour.`);
      if (averageLatencyMs(s) > 5 * 60_000) details.push(`The average replication latency of virtual machine ${name} is above 5 minutes.`);
      return { health: details.length > 0 ? 'Warning' : 'Normal', details };
    }
    default:
      return { health: 'Warning', details: [`Virtual machine ${name} is in state ${vm.state}.`] };
  }
}
