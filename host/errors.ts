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
  /** A bug in vhdsync itself (a TypeError, a failed assumption), not something the user can fix. */
  'INTERNAL',
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

/** Turn a Node fs error into a one-line VhdsyncError naming the path and what to do. */
export function ioError(path: string, e: unknown): VhdsyncError {
  if (e instanceof VhdsyncError) return e;
  const { code, what } = systemErrorLine(e, path);
  return new VhdsyncError(code, `${path}: ${what}`, { cause: e });
}

/** What a system error means for the user, and what to do next; `path` names the file when known. */
function systemErrorLine(e: unknown, path?: string): { code: ErrorCode; what: string } {
  const err = e as NodeJS.ErrnoException;
  switch (err?.code) {
    case 'ENOENT':
      return { code: 'NOT_FOUND', what: 'no such file' };
    case 'EACCES':
    case 'EPERM':
      return { code: 'IO', what: 'permission denied' };
    case 'ENOSPC':
    case 'EDQUOT':
      return { code: 'IO', what: `no space left on ${path ? `the device holding ${path}` : 'the device'}; free space there (or grow it) and run the same command again` };
    case 'EROFS':
      return { code: 'READ_ONLY', what: 'the file system is read-only; remount it read-write and run the same command again' };
    case 'EISDIR':
      return { code: 'IO', what: 'is a directory, not a disk image' };
    case 'EIO':
      return { code: 'IO', what: 'input/output error from the device; check the disk (dmesg) before going on' };
    case 'ENOTDIR':
      return { code: 'IO', what: 'a part of this path is a file, not a directory; give the directory that holds it' };
    case 'ELOOP':
      return { code: 'IO', what: 'too many symbolic links (a link that points at itself?)' };
    case 'ENAMETOOLONG':
      return { code: 'IO', what: 'the path is too long for the file system' };
    case 'EMFILE':
    case 'ENFILE':
      return { code: 'IO', what: 'too many open files; raise the limit (ulimit -n) and run the same command again' };
  }
  return { code: 'IO', what: withoutNodePath(err?.message ?? String(e)) };
}

/** Node's "EXDEV: cross-device link not permitted, rename 'a' -> 'b'" without its syscall and paths (the line names the path once). */
function withoutNodePath(message: string): string {
  return message.replace(/^[A-Z0-9]+: /, '').replace(/, [a-z_]+ '[^']*'( -> '[^']*')?$/, '');
}

/** A Node system error (it has an errno code such as ENOSPC), as opposed to a bug in our code. */
export function isSystemError(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string' && typeof (e as NodeJS.ErrnoException).syscall === 'string';
}

/**
 * Any failure as a VhdsyncError: the one place where what escaped without a type gets one. A system
 * error becomes one line naming its file (Node names it for most calls; `path` names it where Node
 * cannot, as for a write on an open handle); anything else is a bug in vhdsync: INTERNAL, never IO.
 */
export function asVhdsyncError(e: unknown, path?: string): VhdsyncError {
  if (e instanceof VhdsyncError) return e;
  if (isSystemError(e)) {
    const named = e.path ?? path;
    if (named !== undefined) return ioError(named, e);
    const { code, what } = systemErrorLine(e);
    return new VhdsyncError(code, `${e.syscall}: ${what}`, { cause: e });
  }
  const name = e instanceof Error ? e.name : 'Error';
  return new VhdsyncError('INTERNAL', `internal error (${name}: ${(e as Error)?.message ?? String(e)}); please report it — VHDSYNC_DEBUG=1 prints the stack`, { cause: e });
}
