import { describe, it, expect } from 'vitest';
import { Command } from 'commander';
import { COMMAND_NAMES, registerCommands } from '../host/cli/commands/index.js';
import { cli } from './support/files.js';

describe('the CLI loads only the command it runs', () => {
  it('each command module registers exactly the command it is listed under', async () => {
    for (const name of COMMAND_NAMES) {
      const program = new Command();
      await registerCommands(program, [name, '--help']);
      expect(program.commands.map((c) => c.name())).toEqual([name]);
    }
  });

  it('help, a leading flag or an unknown name register every command', async () => {
    for (const args of [[], ['--help'], ['resyn']]) {
      const program = new Command();
      await registerCommands(program, args);
      expect([...program.commands.map((c) => c.name())].sort()).toEqual([...COMMAND_NAMES].sort()); // help groups them by purpose
    }
    const typo = cli(['resyn']);
    expect(typo.status).toBe(2);
    expect(typo.stderr).toMatch(/unknown command 'resyn'[\s\S]*Did you mean resync\?/);
    const help = cli(['--help']);
    for (const name of COMMAND_NAMES) expect(help.stdout).toContain(name);
  });
});
