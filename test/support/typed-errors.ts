import { expect } from 'vitest';
import { VhdsyncError } from '../../host/errors.js';

/** Await `p` and return the VhdsyncError it rejected with (failing on success or on any other error). */
export async function vhdsyncError(p: Promise<unknown>): Promise<VhdsyncError> {
  try {
    await p;
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(VhdsyncError);
    const err = e as VhdsyncError;
    expect(err.message).not.toContain('\n');
    return err;
  }
  throw new Error('expected a VhdsyncError, the call succeeded');
}

export function syncError(fn: () => unknown): VhdsyncError {
  try {
    fn();
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(VhdsyncError);
    return e as VhdsyncError;
  }
  throw new Error('expected a VhdsyncError, the call succeeded');
}

/** Run `fn`: returning or throwing a VhdsyncError are both fine (fuzzed input); anything else fails the test. */
export function onlyTyped(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof VhdsyncError)) throw e;
  }
}
