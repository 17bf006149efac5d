import { Command, CommanderError } from 'commander';
import { registerCommands } from './commands/index.js';
import { exitWithError } from './output.js';
import { VERSION } from './version.js';

/** Run `vhdsync` with the given process.argv: parse, load and run the one command named. */
export async function runCli(argv: readonly string[]): Promise<void> {
  const program = new Command();
  program
    .name('vhdsync')
    .description('Resynchronize virtual hard disks (VHDX, VHD, raw) the way Hyper-V Replica does — only what differs crosses the wire.')
    .version(VERSION)
    .showHelpAfterError('(run vhdsync --help for usage)')
    .exitOverride();

  await registerCommands(program, argv.slice(2));

  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander already printed its one-line message (or the help / version text).
      process.exit(e.exitCode === 0 ? 0 : 2);
    }
    exitWithError(e, argv.includes('--json'));
  }
}
