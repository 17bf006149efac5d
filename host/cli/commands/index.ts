import type { Command } from 'commander';

interface CommandModule {
  register(program: Command): void;
}

/**
 * Each command lives in its own file and adds itself to the program. Only the command being run is
 * loaded (with what it needs): `vhdsync resync` never loads the replication service or the web page
 * server. Help, a flag first, or a name we do not know (commander then suggests one) load them all,
 * in this order.
 */
const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  resync: () => import('./resync.js'),
  compare: () => import('./compare.js'),
  checksum: () => import('./checksum.js'),
  info: () => import('./info.js'),
  create: () => import('./create.js'),
  resize: () => import('./resize.js'),
  'enable-replication': () => import('./enable-replication.js'),
  'start-initial-replication': () => import('./start-initial-replication.js'),
  'import-initial-replication': () => import('./import-initial-replication.js'),
  'get-replication': () => import('./get-replication.js'),
  'set-replication': () => import('./set-replication.js'),
  'suspend-replication': () => import('./suspend-replication.js'),
  'resume-replication': () => import('./resume-replication.js'),
  'stop-replication': () => import('./stop-replication.js'),
  'measure-replication': () => import('./measure-replication.js'),
  'remove-replication': () => import('./remove-replication.js'),
  'reset-replication-statistics': () => import('./reset-replication-statistics.js'),
  'test-replication-connection': () => import('./test-replication-connection.js'),
  events: () => import('./events.js'),
  workload: () => import('./workload.js'),
  write: () => import('./write.js'),
  run: () => import('./run.js'),
  'stop-vm': () => import('./stop-vm.js'),
  service: () => import('./service.js'),
  'get-recovery-points': () => import('./get-recovery-points.js'),
  'start-failover': () => import('./start-failover.js'),
  'stop-failover': () => import('./stop-failover.js'),
  'complete-failover': () => import('./complete-failover.js'),
  'reverse-replication': () => import('./reverse-replication.js'),
  web: () => import('./web.js'),
  replica: () => import('./replica.js'),
  cert: () => import('./cert.js'),
  completion: () => import('./completion.js'),
};

export const COMMAND_NAMES = Object.keys(COMMANDS);

/** `vhdsync --help` lists the commands by purpose, under these headings. */
const GROUPS: [string, string[]][] = [
  ['Images:', ['info', 'compare', 'checksum', 'create', 'resize', 'web']],
  ['Resync:', ['resync']],
  ['Replication:', [
    'enable-replication', 'start-initial-replication', 'import-initial-replication', 'get-replication', 'set-replication', 'suspend-replication',
    'resume-replication', 'stop-replication', 'measure-replication', 'reset-replication-statistics', 'test-replication-connection',
    'remove-replication', 'events', 'service',
  ]],
  ['Running VMs:', ['run', 'stop-vm', 'workload', 'write']],
  ['Failover:', ['get-recovery-points', 'start-failover', 'complete-failover', 'stop-failover', 'reverse-replication']],
  ['Sites:', ['replica', 'cert']],
  ['Shell:', ['completion']],
];
const GROUP_OF = new Map(GROUPS.flatMap(([heading, names]) => names.map((n) => [n, heading] as const)));

/** Register the command named by `args[0]` (the first argument after `vhdsync`), or every command. */
export async function registerCommands(program: Command, args: readonly string[]): Promise<void> {
  // All of them in the order of the help's groups (commander lists a group where its first command comes).
  const ordered = [...new Set([...GROUPS.flatMap(([, names]) => names), ...COMMAND_NAMES])].filter((n) => Object.hasOwn(COMMANDS, n));
  const load = Object.hasOwn(COMMANDS, args[0] ?? '') ? [COMMANDS[args[0]]] : ordered.map((n) => COMMANDS[n]);
  for (const m of await Promise.all(load.map((f) => f()))) m.register(program);
  for (const c of program.commands) c.helpGroup(GROUP_OF.get(c.name()) ?? 'Other:');
  program.commandsGroup('Shell:').helpCommand(true); // `help [command]` beside completion
}
