/**
 * Every failure a user can cause or meet is a VhdsyncError: a stable code for scripts (`--json`)
 * and one human line that says what is wrong and, where possible, what to do next.
 */
export const ERROR_CODES = [
  'USAGE',
  'NOT_FOUND',
  'EXISTS',
  'IO',
  'BAD_COOKIE',
  'BAD_CHECKSUM',
  'FOOTER_MISMATCH',
  'BAD_BAT',
  'BAD_BLOCK_SIZE',
  'BAD_SIZE',
  'TRUNCATED',
  'UNSUPPORTED',
  'PARENT_MISSING',
  'PARENT_MISMATCH',
  'PARENT_LOOP',
  'READ_ONLY',
  'OUT_OF_RANGE',
  'SIZE_MISMATCH',
  'SECTOR_MISMATCH',
  'BUSY',
  'STATE',
  'CHECKPOINT',
  'LINK',
  'AUTH',
  'PROTOCOL',
  'CANCELLED',
  'CORE',
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** A code that came from elsewhere (a peer's error message), or `fallback` when it is not one of ours. */
export function errorCode(v: unknown, fallback: ErrorCode): ErrorCode {
  return (ERROR_CODES as readonly unknown[]).includes(v) ? (v as ErrorCode) : fallback;
}

export class VhdsyncError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VhdsyncError';
    this.code = code;
  }
}

export function isVhdsyncError(e: unknown): e is VhdsyncError {
  return e instanceof VhdsyncError;
}

/** Turn a Node fs error into a one-line VhdsyncError naming the path. */
export function ioError(path: string, e: unknown): VhdsyncError {
  if (e instanceof VhdsyncError) return e;
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOENT') return new VhdsyncError('NOT_FOUND', `${path}: no such file`, { cause: e });
  if (err?.code === 'EACCES' || err?.code === 'EPERM') return new VhdsyncError('IO', `${path}: permission denied`, { cause: e });
  if (err?.code === 'ENOSPC') return new VhdsyncError('IO', `${path}: no space left on device`, { cause: e });
  if (err?.code === 'EISDIR') return new VhdsyncError('IO', `${path}: is a directory, not a disk image`, { cause: e });
  return new VhdsyncError('IO', `${path}: ${err?.message ?? String(e)}`, { cause: e });
}
