import { VhdsyncError } from '../errors.js';

/**
 * Where a replica lives when it is not a local file: `tls://HOST:PORT/NAME/disk.vhd`, a path under
 * the replica server's `--root`. IPv6 hosts go in brackets (`tls://[::1]:4000/vm/disk.vhd`).
 */
export interface ReplicaAddress {
  host: string;
  port: number;
  /** The path under the server's root, as sent in the 'open' message (checked again by the server). */
  target: string;
  /** `host:port`, for messages. */
  display: string;
}

export function isReplicaAddress(text: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(text);
}

export function parseReplicaAddress(text: string): ReplicaAddress {
  const m = /^tls:\/\/(\[[0-9a-f:.]+\]|[^/:[\]]+):(\d+)\/(.+)$/i.exec(text);
  if (!m) {
    throw new VhdsyncError('USAGE', `'${text}' is not a replica address; expected tls://HOST:PORT/NAME/disk.vhd (or a local path)`);
  }
  const host = m[1].replace(/^\[|\]$/g, '');
  const port = parsePort(m[2], text);
  return { host, port, target: m[3], display: `${m[1]}:${port}` };
}

/**
 * A VM's replica site on a replica server: `tls://HOST:PORT/NAME`, the folder NAME under the server's
 * root (default: the VM's name). The disks are `tls://HOST:PORT/NAME/<primary file name>`.
 */
export function parseSiteAddress(text: string, defaultName: string): ReplicaAddress & { url: string } {
  const m = /^tls:\/\/(\[[0-9a-f:.]+\]|[^/:[\]]+):(\d+)(?:\/([^/]*))?\/?$/i.exec(text);
  if (!m) throw new VhdsyncError('USAGE', `'${text}' is not a replica server address; expected tls://HOST:PORT/NAME (or a local directory)`);
  const name = m[3] || defaultName;
  if (!SITE_NAME.test(name)) throw new VhdsyncError('USAGE', `${text}: '${name}' is not a usable replica folder name; use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  const host = m[1].replace(/^\[|\]$/g, '');
  const port = parsePort(m[2], text);
  const display = `${m[1]}:${port}`;
  return { host, port, target: name, display, url: `tls://${display}/${name}` };
}

/**
 * A replica folder's name under a server's root: one path segment, never '.', '..' or hidden. '+'
 * comes in the folders derived from VM names with other characters (replica/vm-name.ts).
 */
export const SITE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;

/** `--listen HOST:PORT` (port 0: any free port). */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+):(\d+)$/i.exec(text.trim());
  if (!m) throw new VhdsyncError('USAGE', `--listen: '${text}' is not HOST:PORT (examples: 0.0.0.0:4000, 127.0.0.1:4000, [::1]:4000)`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port: parsePort(m[2], `--listen ${text}`, true) };
}

function parsePort(digits: string, where: string, zeroOk = false): number {
  const port = Number(digits);
  if (!Number.isInteger(port) || port > 65535 || (port === 0 && !zeroOk)) throw new VhdsyncError('USAGE', `${where}: port ${digits} is out of range (1–65535)`);
  return port;
}
