import { basename, join } from 'node:path';

/**
 * The files of one VM's replica site, named here once (the local site, the replica server's
 * confinement, the replica side's view, reverse replication):
 *   <root>/<vm>/<primary file name>      the replica of each disk
 *   <root>/<vm>/logs/<seq>-<disk>.log    shipped tracking logs waiting to be applied (log-folder.ts names them)
 *   <root>/<vm>/replica.json             the last applied sequence and each replica disk's file identity
 *   <root>/<vm>/failover.json            the failover in effect, and its phase
 *   <root>/<vm>/site.lock                one writer of the site's disks at a time
 *   <root>/<vm>/extended-logs/           applied cycles kept for an extended replica (extended-logs.ts)
 * Beside each replica disk: `<disk>.recovery-points/` (resync/paths.ts), a test failover's view
 * `<disk>.test-failover.vhd(x)` and a failover's running copy `<disk>.failover.vhd(x)`.
 */
export const SITE_FILES = {
  logs: 'logs',
  state: 'replica.json',
  failover: 'failover.json',
  lock: 'site.lock',
  extendedLogs: 'extended-logs',
} as const;

/** Names in a VM's folder that are the site's own, never a disk (a replica server refuses them as disk names). */
export const SITE_FILE_NAMES: ReadonlySet<string> = new Set(Object.values(SITE_FILES));

/** Where the replica of `primaryPath` is made in a site: named after the primary's file. */
export function replicaDiskPathFor(root: string, vmFolder: string, primaryPath: string): string {
  return join(root, vmFolder, basename(primaryPath));
}

/** A test failover's view of a replica disk: a differencing disk of the replica's own kind (VHDX for VHDX). */
export function testViewPathFor(replica: string): string {
  return `${replica}.test-failover.${/\.vhdx$/i.test(replica) ? 'vhdx' : 'vhd'}`;
}

/** A planned or unplanned failover's view of a replica disk (the running copy until complete-failover). */
export function failoverViewPathFor(replica: string): string {
  return `${replica}.failover.${/\.vhdx$/i.test(replica) ? 'vhdx' : 'vhd'}`;
}
