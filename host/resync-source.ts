import { VhdsyncError } from './errors.js';
import { describeHolder, lockFile, lockHolderOf, tryLockFile, type HeldLock, type LockOptions } from './writer-lock.js';

/**
 * The primary of a running resync. The resync reads it while tracked writers (a running VM, `vhdsync
 * write`) append every write to its one tracking log, so two things must not happen meanwhile: a second
 * resync from it (the log is one per disk: each would take the other's writes), and a write around the
 * tracker (a resync onto it, a resize), which the running resync would never see and still report as
 * completed. Held by the disk's identity (writer-lock.ts), beside the disk's own writer lock, which the
 * tracked writers hold.
 */
const SUB = 'resync-source';

/** Taken by a resync for its whole run; refused in one line while another resync reads the disk, or waited for (`wait`). */
export async function holdResyncSource(primary: string, opts: Pick<LockOptions, 'wait' | 'onWait'> = {}): Promise<HeldLock> {
  const r = await tryLockFile(primary, { sub: SUB, what: primary });
  if ('release' in r) return r;
  if (opts.wait) return lockFile(primary, { sub: SUB, what: primary, ...opts });
  throw new VhdsyncError('BUSY', `${describeHolder(primary, r.holder)}: it is the primary of that resync, and its writes are tracked in one log; wait for that resync to end, or run again with --wait`);
}

/** For a writer that writes around the tracker (a resync onto `path`, a resize): refused while a resync reads `path`. */
export async function refuseResyncSource(path: string, writing: string): Promise<void> {
  const holder = await lockHolderOf(path, SUB);
  if (holder === 'free') return;
  throw new VhdsyncError('BUSY', `${describeHolder(path, holder)}: it is the primary of that resync, so ${writing} now would change it behind the resync's back; wait for that resync to end`);
}
