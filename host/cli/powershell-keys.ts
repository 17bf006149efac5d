import type { EventRecord } from '../events/event-log.js';

/**
 * The replication verbs print what Hyper-V's cmdlets would: PascalCase property names (`VMName`,
 * `State`, ...). Library records use camelCase; this turns one into the other, deeply, at the CLI edge.
 */
export function powerShellKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(powerShellKeys);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[propertyName(k)] = powerShellKeys(v);
  return out;
}

const SPECIAL: Record<string, string> = { vm: 'VMName', id: 'Id', time: 'TimeCreated', level: 'LevelDisplayName' };

function propertyName(k: string): string {
  return SPECIAL[k] ?? k.charAt(0).toUpperCase() + k.slice(1);
}

/** An event as Get-WinEvent shows one: TimeCreated, Id, LevelDisplayName, Message, then its fields. */
export function eventJson(e: EventRecord): Record<string, unknown> {
  const { time, id, level, message, ...fields } = e;
  return { TimeCreated: time, Id: id, LevelDisplayName: level, Message: message, ...(powerShellKeys(fields) as object) };
}
