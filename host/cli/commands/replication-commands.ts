import type { Command } from 'commander';
import * as enable from './enable-replication.js';
import * as startInitial from './start-initial-replication.js';
import * as get from './get-replication.js';
import * as set from './set-replication.js';
import * as suspend from './suspend-replication.js';
import * as resume from './resume-replication.js';
import * as stop from './stop-replication.js';
import * as measure from './measure-replication.js';
import * as remove from './remove-replication.js';
import * as events from './events.js';
import * as workload from './workload.js';
import * as write from './write.js';
import * as service from './service.js';
import * as recoveryPoints from './get-recovery-points.js';
import * as startFailover from './start-failover.js';
import * as stopFailover from './stop-failover.js';
import * as reverse from './reverse-replication.js';

/** The replication verbs (Hyper-V's *-VMReplication cmdlets), the running VM, and the service. */
export function register(program: Command): void {
  for (const c of [enable, startInitial, get, set, suspend, resume, stop, measure, remove, events, workload, write, service, recoveryPoints, startFailover, stopFailover, reverse]) c.register(program);
}
