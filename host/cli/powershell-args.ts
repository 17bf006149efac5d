import type { Command } from 'commander';

/**
 * PowerShell's spellings of the replication cmdlets' parameters, accepted after the verb so that a
 * runbook's line works as written: `set-replication 'RESYNC VM' -AutoResynchronizeEnabled 1`,
 * `resume-replication 'RESYNC VM' -Resynchronize -ResynchronizeStartTime "04/15/2013 12:00:00"`.
 * `-Name` and `--Name` (PascalCase), `-Name:value`, and the cmdlets' documented aliases (`-Resync`,
 * `-AutoResync`, `-RepFreq` …; reference/hyperv-replica.md §1.1, §1.4) become the command's own
 * `--kebab-case` option — only when the command has that option, so nothing is guessed: anything else
 * is left for commander to refuse. `-VMName X` is the positional VM name.
 * Options keep one spelling in help and completion; this runs once, before parsing, for every command.
 */
const ALIASES: Record<string, string> = {
  resync: 'resynchronize',
  resyncstart: 'resynchronize-start-time',
  autoresync: 'auto-resynchronize-enabled',
  autoresyncstart: 'auto-resynchronize-interval-start',
  autoresyncend: 'auto-resynchronize-interval-end',
  repfreq: 'frequency',
  replicationfrequencysec: 'frequency',
  rechist: 'recovery-history',
  irtime: 'initial-replication-start-time',
  astest: 'test',
  state: 'replication-state',
  health: 'health',
  replicationhealth: 'health',
  replicaserver: 'replica-server-name',
  replicaport: 'replica-server-port',
  replicaservername: 'replica-server-name',
  replicaserverport: 'replica-server-port',
  authtype: 'authentication-type',
  thumbprint: 'certificate-thumbprint',
  cert: 'certificate-thumbprint',
  useexistingreplica: 'use-existing-replica',
};

/** `AutoResynchronizeIntervalStart` → `auto-resynchronize-interval-start` (`VMName` → `vm-name`). */
export function kebab(pascal: string): string {
  return pascal
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1-$2')
    .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
    .toLowerCase();
}

/**
 * Rewrite the arguments after the verb (`args[0]`) for `cmd`. A token is PowerShell's when it is
 * `-Word` or `--Word` with Word starting upper-case (short flags are one letter, ours are lower-case).
 */
export function powerShellArgs(args: readonly string[], cmd: Command | undefined): string[] {
  if (!cmd) return [...args];
  const longs = new Set(cmd.options.map((o) => o.long?.replace(/^--/, '')).filter((x): x is string => !!x));
  const out: string[] = [args[0]];
  for (let i = 1; i < args.length; i++) {
    const a = args[i];
    if (a === '--') {
      out.push(...args.slice(i));
      break;
    }
    const m = /^--?([A-Z][A-Za-z0-9]+)(?::(.*))?$/.exec(a);
    if (!m) {
      out.push(a);
      continue;
    }
    const [, word, value] = m;
    if ((word.toLowerCase() === 'vmname' || word.toLowerCase() === 'name') && !longs.has('name')) {
      // The positional VM name.
      if (value !== undefined) out.push(value);
      continue;
    }
    const own = kebab(word);
    const long = longs.has(own) ? own : ALIASES[word.toLowerCase()] !== undefined && longs.has(ALIASES[word.toLowerCase()]) ? ALIASES[word.toLowerCase()] : undefined;
    if (long === undefined) {
      out.push(a);
      continue;
    }
    const opt = cmd.options.find((o) => o.long === `--${long}`)!;
    const takesValue = opt.required || opt.optional;
    if (value !== undefined) {
      // `-Resynchronize:$true` on a switch: the switch when true, nothing when false.
      if (takesValue) out.push(`--${long}`, value);
      else if (!/^\$?(false|0)$/i.test(value)) out.push(`--${long}`);
    } else out.push(`--${long}`);
  }
  return out;
}
