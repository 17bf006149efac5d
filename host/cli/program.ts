import { Command, CommanderError } from 'commander';
import { registerCommands } from './commands/index.js';
import { exitWithError } from './output.js';
import { endQuietlyOnClosedPipe } from './pipe.js';
import { powerShellArgs } from './powershell-args.js';
import { VhdsyncError } from '../errors.js';
import { VERSION } from './version.js';

/** Run `vhdsync` with the given process.argv: parse, load and run the one command named. */
export async function runCli(argv: readonly string[]): Promise<void> {
  endQuietlyOnClosedPipe();
  const json = argv.includes('--json');
  let usage = '';
  const program = new Command();
  // With --json a usage error is JSON too: commander's text is kept and printed as a USAGE error.
  if (json) program.configureOutput({ writeErr: (s) => void (usage += s) });
  program
    .name('vhdsync')
    .description('Resynchronize virtual hard disks (VHDX, VHD, raw) the way Hyper-V Replica does — only what differs crosses the wire.')
    .version(VERSION)
    .showHelpAfterError('(run vhdsync --help for usage)')
    .exitOverride();

  await registerCommands(program, argv.slice(2));
  // PowerShell's parameter spellings after the verb (`-AutoResynchronizeEnabled 1`), for every command.
  const verb = program.commands.find((c) => c.name() === argv[2]);
  const args = verb ? [...argv.slice(0, 2), ...powerShellArgs(argv.slice(2), verb)] : argv;

  try {
    await program.parseAsync(args);
  } catch (e) {
    if (e instanceof CommanderError) {
      // commander already printed its one-line message (or the help / version text).
      if (json && e.exitCode !== 0) exitWithError(new VhdsyncError('USAGE', usageLine(usage || e.message)), true);
      process.exit(e.exitCode === 0 ? 0 : 2);
    }
    exitWithError(e, json);
  }
}

/** commander's message without its `error: ` prefix and the help hint after it. */
function usageLine(text: string): string {
  return text.split('\n')[0].replace(/^error: /, '').trim();
}
