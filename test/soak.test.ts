import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { ROOT } from './support/paths.js';

/** Run the soak in its own process group, so that a timeout ends it and every process it started. */
function soak(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(ROOT, 'scripts', 'soak.mjs'), ...args], { detached: true, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout });
    });
  });
}

/** A bounded slice of `npm run soak` (scripts/soak.mjs): a few kills of every kind and one round of the concurrency matrix. */
describe('soak (bounded slice)', () => {
  it('random SIGKILLs across resync, merge, initial replication, apply and failover views, and the concurrency matrix: no claim contradicted by the disks', async () => {
    const r = await soak(['--kills', '4', '--matrix', '1', '--seed', '4242', '--json'], 280_000);
    const summary = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(summary.failureList).toEqual([]);
    expect(summary.kills).toBeGreaterThanOrEqual(4);
    expect(Object.keys(summary.matrixRuns).sort()).toEqual(['resync+apply', 'resync+cancel', 'two-resyncs', 'two-services']);
    expect(r.code).toBe(0);
  }, 300_000);
});
