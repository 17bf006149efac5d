import type { FileIdentity } from '../file-identity.js';
import { writeFileAtomic } from '../fsutil.js';
import { jsonText } from '../json-text.js';
import { Fields, readStateFile, type StateFile } from '../state-file.js';
import { FAILOVER_PHASES, type FailoverRecord } from './site.js';
import { REPLICATION_STATES } from './states.js';

/**
 * The replica site's two state files (site-files.ts names them), each read by one checked reader:
 * `replica.json` — the last applied sequence, a cycle whose apply is under way, and each replica
 * disk's file identity — and `failover.json`, the failover in effect.
 */
export interface ReplicaState {
  version: 1;
  vmId: string;
  lastAppliedSequence: number;
  /** A cycle whose apply started and did not finish: it is applied again (writes are idempotent in order). */
  applying: number | null;
  /** `diskId`: the primary's id of the disk (absent in states written before it was recorded). */
  disks: { name: string; identity: FileIdentity; diskId?: string }[];
  updatedAt: string;
  /** A new id at every rebase (initial replication, resync, completed failover, revert): the disks changed outside the logs. */
  base?: string;
  /** Extended: this is the replica of a replica (extended replication's third site). */
  relationship?: 'Extended';
}

/** What `replica.json` says, for the replica side's own view. */
export interface ReplicaFolderState {
  vmId: string;
  lastAppliedSequence: number;
  applying: number | null;
  /** When the last apply (or rebase) finished. */
  updatedAt: string;
  disks: string[];
  /** Each disk's id as the primary names it (undefined where not recorded yet). */
  diskIds: (string | undefined)[];
  /** Changes at every rebase (null before the first one that recorded it). */
  base: string | null;
  relationship: 'Simple' | 'Extended';
}

function identityOf(f: Fields): FileIdentity {
  return { size: f.int('size'), ino: f.string('ino'), dev: f.string('dev'), mtimeNs: f.string('mtimeNs'), ctimeNs: f.string('ctimeNs') };
}

export const REPLICA_STATE: StateFile<ReplicaState> = {
  what: 'the replica state',
  version: 1,
  read: (f) => ({
    version: 1,
    vmId: f.string('vmId'),
    lastAppliedSequence: f.int('lastAppliedSequence'),
    applying: f.nullable('applying', (k) => f.int(k)),
    disks: f.array('disks', (d, at) => {
      const x = Fields.of(d, at);
      const diskId = x.optional('diskId', (k) => x.string(k));
      return { name: x.string('name'), identity: identityOf(x.object('identity')), ...(diskId !== undefined ? { diskId } : {}) };
    }),
    updatedAt: f.string('updatedAt'),
    ...optionalField('base', f.optional('base', (k) => f.string(k))),
    ...optionalField('relationship', f.optional('relationship', (k) => f.oneOf(k, ['Extended'] as const))),
  }),
};

export function readReplicaState(path: string): Promise<ReplicaState | undefined> {
  return readStateFile(path, REPLICA_STATE);
}

/** A field that is absent from the object when it has no value (as the writers leave it out). */
function optionalField<K extends string, V>(key: K, value: V | undefined): { [k in K]?: V } {
  return (value === undefined ? {} : { [key]: value }) as { [k in K]?: V };
}

export async function writeReplicaState(path: string, vmId: string, s: Pick<ReplicaState, 'lastAppliedSequence' | 'applying' | 'disks' | 'base' | 'relationship'>): Promise<void> {
  const state: ReplicaState = { version: 1, vmId, ...s, updatedAt: new Date().toISOString() };
  await writeFileAtomic(path, jsonText(state));
}

/** The failover record's fields, checked: from `failover.json`, or from a primary over the network (site-calls.ts). */
export function failoverRecordOf(f: Fields): FailoverRecord {
  const out: FailoverRecord = { version: f.literal('version', 1), kind: f.oneOf('kind', ['test', 'planned', 'unplanned']), sequence: f.int('sequence'), time: f.time('time'), startedAt: f.time('startedAt') };
  if (f.optional('reverting', (k) => f.boolean(k))) out.reverting = true;
  const phase = f.optional('phase', (k) => f.oneOf(k, FAILOVER_PHASES));
  if (phase !== undefined) out.phase = phase;
  const resumeState = f.optional('resumeState', (k) => f.oneOf(k, REPLICATION_STATES));
  if (resumeState !== undefined) out.resumeState = resumeState;
  return out;
}

export const FAILOVER_RECORD: StateFile<FailoverRecord> = { what: 'the failover record', version: 1, read: failoverRecordOf };

export function readFailoverRecord(path: string): Promise<FailoverRecord | undefined> {
  return readStateFile(path, FAILOVER_RECORD);
}
