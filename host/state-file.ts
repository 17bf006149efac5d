import { readFile } from 'node:fs/promises';
import { VhdsyncError, ioError } from './errors.js';

/**
 * The one reader of vhdsync's versioned JSON state files (replica.json, failover.json, a VM's vm.json,
 * a recovery point index…): every field is checked as it is read, so a damaged or foreign file is one
 * line naming the file and the field, never a TypeError later. Written with `jsonText` (json-text.ts).
 */
export interface StateFile<T> {
  /** What the file is, for the message: "the replica state". */
  what: string;
  /** The version this reader knows. */
  version: number;
  /** Builds the value from the checked fields (the `version` field is checked already). */
  read(f: Fields): T;
  /** The next step the message suggests ("run the initial replication again"), if any. */
  fix?: string;
}

/** Thrown by a field check; `readStateFile` turns it into the file's one line (a caller reading a network message, into its own). */
export class FieldError extends Error {}

/** Checked access to the fields of one JSON object (`at` names it in messages: "disks[1]"). */
export class Fields {
  private constructor(
    private readonly o: Record<string, unknown>,
    private readonly at: string,
  ) {}

  static of(value: unknown, at = ''): Fields {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new FieldError(`${at || 'the file'} is not an object`);
    return new Fields(value as Record<string, unknown>, at);
  }

  private name(key: string): string {
    return this.at ? `${this.at}.${key}` : key;
  }

  private bad(key: string, want: string): FieldError {
    const v = this.o[key];
    return new FieldError(v === undefined ? `${this.name(key)} is missing` : `${this.name(key)} is not ${want}`);
  }

  /** The object itself (a reader that only checks returns it as it is). */
  get raw(): unknown {
    return this.o;
  }

  has(key: string): boolean {
    return this.o[key] !== undefined;
  }

  /** Exactly `value` (a version). */
  literal<V extends string | number>(key: string, value: V): V {
    if (this.o[key] !== value) throw this.bad(key, JSON.stringify(value));
    return value;
  }

  string(key: string): string {
    const v = this.o[key];
    if (typeof v !== 'string') throw this.bad(key, 'a string');
    return v;
  }

  /** One plain file or folder name: no path separator, not `.` or `..` (a record from elsewhere names no other place). */
  fileName(key: string): string {
    const v = this.o[key];
    if (typeof v !== 'string' || v === '' || v === '.' || v === '..' || /[/\\\0]/.test(v)) throw this.bad(key, 'a plain file name');
    return v;
  }

  boolean(key: string): boolean {
    const v = this.o[key];
    if (typeof v !== 'boolean') throw this.bad(key, 'true or false');
    return v;
  }

  /** A whole number, at least `min` (default 0). */
  int(key: string, min = 0): number {
    const v = this.o[key];
    if (!Number.isSafeInteger(v) || (v as number) < min) throw this.bad(key, `a whole number${min > Number.MIN_SAFE_INTEGER ? ` ≥ ${min}` : ''}`);
    return v as number;
  }

  number(key: string): number {
    const v = this.o[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw this.bad(key, 'a number');
    return v;
  }

  /** One of `values`. */
  oneOf<V extends string>(key: string, values: readonly V[]): V {
    const v = this.o[key];
    if (typeof v !== 'string' || !values.includes(v as V)) throw this.bad(key, `one of ${values.join(', ')}`);
    return v as V;
  }

  /** A time as vhdsync writes them (ISO 8601). */
  time(key: string): string {
    const v = this.o[key];
    if (typeof v !== 'string' || v.length >= 64 || Number.isNaN(Date.parse(v))) throw this.bad(key, 'a time');
    return v;
  }

  /** `read(key)` when the field is present, else undefined. */
  optional<V>(key: string, read: (key: string) => V): V | undefined {
    return this.o[key] === undefined ? undefined : read(key);
  }

  /** `read(key)` when the field is present and not null, else null. */
  nullable<V>(key: string, read: (key: string) => V): V | null {
    return this.o[key] === undefined || this.o[key] === null ? null : read(key);
  }

  /** An array whose items are each read by `item`. */
  /** A list, each item checked by `item`; with `min`, of at least that many items. */
  array<V>(key: string, item: (value: unknown, at: string, index: number) => V, min = 0): V[] {
    const v = this.o[key];
    if (!Array.isArray(v) || v.length < min) throw this.bad(key, min > 0 ? `a list of at least ${min}` : 'a list');
    return v.map((x, i) => item(x, `${this.name(key)}[${i}]`, i));
  }

  /** A VM's list of disks: at least one, each `index` its place in the list. */
  disks<V>(key: string, item: (x: Fields) => V): V[] {
    return this.array(key, (d, at, i) => {
      const x = Fields.of(d, at);
      if (x.int('index') !== i) throw new FieldError(`${at}.index is not ${i}`);
      return item(x);
    }, 1);
  }

  /** A list of whole numbers (≥ 0). */
  intList(key: string): number[] {
    const v = this.o[key];
    if (!Array.isArray(v) || !v.every((x) => Number.isSafeInteger(x) && x >= 0)) throw this.bad(key, 'a list of whole numbers');
    return v as number[];
  }

  /** A nested object. */
  object(key: string): Fields {
    if (this.o[key] === undefined) throw this.bad(key, 'an object');
    return Fields.of(this.o[key], this.name(key));
  }
}

/** Parse and check state text; `path` names the file in the error. */
export function parseStateText<T>(path: string, text: string, spec: StateFile<T>): T {
  const damaged = (why: string) => new VhdsyncError('STATE', `${path}: ${spec.what} is damaged (${why})${spec.fix ? `; ${spec.fix}` : ''}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw damaged('not valid JSON');
  }
  try {
    const f = Fields.of(value);
    const version = (value as { version?: unknown }).version;
    if (version !== spec.version) throw new FieldError(version === undefined ? 'version is missing' : `version ${JSON.stringify(version)}, not ${spec.version}`);
    return spec.read(f);
  } catch (e) {
    if (e instanceof FieldError) throw damaged(e.message);
    throw e;
  }
}

/** Read a state file; undefined when it does not exist. */
export async function readStateFile<T>(path: string, spec: StateFile<T>): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(path, e);
  }
  return parseStateText(path, text, spec);
}
