import { asVhdsyncError, isVhdsyncError } from '../errors.js';
import { jsonText } from '../json-text.js';

/** Print one clear line for an error (or a JSON object with --json) and exit non-zero. */
export function exitWithError(e: unknown, json: boolean, exitCode = 2): never {
  const err = asVhdsyncError(e);
  if (json) process.stdout.write(JSON.stringify({ error: { code: err.code, message: err.message } }) + '\n');
  process.stderr.write(`vhdsync: ${err.message}\n`);
  if (!isVhdsyncError(e) && process.env.VHDSYNC_DEBUG) process.stderr.write(`${(e as Error)?.stack}\n`);
  process.exit(exitCode);
}

export function printJson(value: unknown): void {
  process.stdout.write(jsonText(value));
}
