import { describe, it, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './support/files.js';

/** A bounded slice of `npm run soak` (scripts/soak.mjs): a few kills of every kind and one round of the concurrency matrix. */
describe('soak (bounded slice)', () => {
  it('random SIGKILLs across resync, merge, initial replication, apply and failover views, and the concurrency matrix: no claim contradicted by the disks', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'scripts', 'soak.mjs'), '--kills', '4', '--matrix', '1', '--seed', '4242', '--json'], { encoding: 'utf8', timeout: 280_000 });
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(summary.failureList).toEqual([]);
    expect(summary.kills).toBeGreaterThanOrEqual(4);
    expect(Object.keys(summary.matrixRuns).sort()).toEqual(['resync+apply', 'resync+cancel', 'two-resyncs', 'two-services']);
    expect(r.status).toBe(0);
  }, 300_000);
});
