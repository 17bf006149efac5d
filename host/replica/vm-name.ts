import { createHash } from 'node:crypto';
import { VhdsyncError } from '../errors.js';

/**
 * VM names as Hyper-V allows them (spaces included: the seed's "RESYNC VM"), and the one folder name
 * each maps to (`<home>/vms/<folder>`, `<replica dir>/<folder>`, a replica server's default NAME).
 *
 * - A name is 1-100 characters (Hyper-V's limit), no control characters, no leading or trailing
 *   space, and none of `*` `?` (those are wildcards in `get-replication 'RESYNC*'`).
 * - Names are case-insensitive, as in Hyper-V (`Get-VM resync*` finds "RESYNC VM"): "resync vm"
 *   finds "RESYNC VM", and a second VM whose name differs only in case is refused. The spelling given
 *   to enable-replication is the one shown.
 * - The folder: a name of 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit (every
 *   name vhdsync accepted before) is its own folder, so existing state is found where it is. Any other
 *   name gets `<safe part>+<12 hex of SHA-256 of the name>`: the safe part replaces each run of other
 *   characters by '_' (so no '/', '..' or hidden folder can come out of it), and the hash keeps apart
 *   names that differ only in those characters ("a b" and "a:b"). '+' is never in a plain folder name,
 *   so a derived folder cannot be another VM's plain one.
 */
export const PLAIN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A folder under `<home>/vms`: a plain name, or a derived one. */
export const VM_FOLDER = /^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,63}|[A-Za-z0-9][A-Za-z0-9._-]{0,39}\+[0-9a-f]{12})$/;

export const MAX_VM_NAME = 100;

export function checkVmName(name: string): string {
  const bad = (why: string) => new VhdsyncError('USAGE', `'${name.slice(0, 120)}' is not a usable VM name: ${why}`);
  if (name.length === 0 || name.trim().length === 0) throw bad('it is empty');
  if (name.length > MAX_VM_NAME) throw bad(`it is longer than ${MAX_VM_NAME} characters (Hyper-V's limit)`);
  if (name !== name.trim()) throw bad('it starts or ends with a space');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) throw bad('it has a control character');
  if (/[*?]/.test(name)) throw bad("'*' and '?' are wildcards (get-replication 'WEB*')");
  return name;
}

/** The folder of a VM's state (and of its local replica): see above. */
export function vmFolderName(name: string): string {
  if (PLAIN_NAME.test(name)) return name;
  const safe = name.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[^A-Za-z0-9]+/, '').slice(0, 40) || 'vm';
  const hash = createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 12);
  return `${safe}+${hash}`;
}

/** Hyper-V compares VM names without regard to case. */
export function sameVmName(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

/** A PowerShell `-like` pattern (`*`, `?`, `[abc]`), case-insensitive, as Get-VMReplication's -VMName takes. */
export function namePattern(pattern: string): (name: string) => boolean {
  if (!/[*?[]/.test(pattern)) return (n) => sameVmName(n, pattern);
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        re += `[${pattern.slice(i + 1, end).replace(/[\\^]/g, '\\$&')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  const rx = new RegExp(`^${re}$`, 'is');
  return (n) => rx.test(n);
}

export function isNamePattern(text: string): boolean {
  return /[*?[]/.test(text);
}

/** A VM name as it would be typed in a shell, for the commands messages suggest ("RESYNC VM" quoted). */
export function shellWord(name: string): string {
  return /^[A-Za-z0-9._+-]+$/.test(name) ? name : `'${name.replace(/'/g, `'\\''`)}'`;
}
