#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { registerCommands } from './commands/index.js';
import { exitWithError } from './output.js';

const program = new Command();
program
  .name('vhdsync')
  .description('Resynchronize virtual hard disks (VHDX, VHD, raw) the way Hyper-V Replica does — only what differs crosses the wire.')
  .version('0.1.0')
  .showHelpAfterError('(run vhdsync --help for usage)')
  .exitOverride();

await registerCommands(program, process.argv.slice(2));

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // commander already printed its one-line message (or the help / version text).
    process.exit(e.exitCode === 0 ? 0 : 2);
  }
  exitWithError(e, process.argv.includes('--json'));
}
