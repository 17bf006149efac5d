import { join } from 'node:path';
import { Replication } from '../../host/replication/replication.js';
import type { Clock } from '../../host/replication/schedule.js';
import type { LinkShape } from '../../host/transport/memory-link.js';
import { enableReplication } from '../../host/replication/enable.js';
import { startInitialReplication } from '../../host/replication/resync-run.js';

/** A mutable clock for the scheduler and the service: tests set the time, nothing sleeps. */
export class FakeClock implements Clock {
  constructor(public t: Date) {}
  now(): Date {
    return new Date(this.t);
  }
  set(d: Date): void {
    this.t = d;
  }
  advance(ms: number): void {
    this.t = new Date(this.t.getTime() + ms);
  }
}

/** A VM with its disks in `dir`, replicated to `dir/replica`, initial replication done. */
export async function replicatedVm(
  dir: string,
  name: string,
  disks: string[],
  opts: { clock?: Clock; link?: LinkShape; initial?: boolean; settings?: Record<string, string | number | boolean> } = {},
): Promise<Replication> {
  const rep = new Replication(join(dir, 'home'), { clock: opts.clock, link: opts.link });
  await enableReplication(rep, { name, disks, replica: join(dir, 'replica'), settings: opts.settings });
  if (opts.initial !== false) {
    const ir = await startInitialReplication(rep, name);
    if (ir.result !== 'completed') throw new Error(`initial replication ${ir.result}`);
  }
  return rep;
}
