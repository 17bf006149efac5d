/** A VM's replication (Hyper-V Replica's model): the API behind the *-replication verbs. */
export { Replication } from './replication.js';
export { enableReplication, removeReplication, setReplication, type EnableInput } from './enable.js';
export { suspendReplication, resumeReplication, stopReplication, resetStatistics, type ResumeInput } from './control.js';
export { startInitialReplication, scheduleInitialReplication, runResync, type ResyncRunOptions, type ResyncRunOutcome } from './resync-run.js';
export { evaluateTriggers, requireResync } from './resync-required.js';
export { replicationView, healthNow, measureReplication, type Measurement } from './views.js';
export { RunningVm, type RunOptions } from './running-vm.js';
export { driveWorkload, type WorkloadOptions, type WorkloadResult } from './workload-driver.js';
export { replicateCycle, type CycleOutcome } from './cycle.js';
export { LocalReplicaSite } from '../replica/local-site.js';
export type { ApplyResult, ApplyProblem } from '../replica/site.js';
export { detectPrimaryTriggers, checkLogSize, type Trigger } from './triggers.js';
export { replicationHealth } from './health.js';
export { inWindow, nextWindowOpen, resyncDecision, retryDelayMs, systemClock, type Clock, type ResyncDecision } from './schedule.js';
export { defaultSettings, applySettings, parseFrequency, parseTimeSpan, parseStartTime, type ReplicationSettings, type SettingsChange } from './settings.js';
export { DEFAULTS } from './names.js';
export { REPLICATION_STATES, REPLICATION_HEALTH, RESYNC_REASONS, type ReplicationState, type ReplicationHealth, type ResyncReason } from '../replica/states.js';
export type { VmRecord, VmDisk } from './store.js';
