import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { Command } from 'commander';
import { COMMAND_NAMES, registerCommands } from '../host/cli/commands/index.js';
import { cli } from './support/cli.js';
import { tempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
beforeAll(() => ({ dir, cleanup } = tempDir('vhdsync-commands-')));
afterAll(() => cleanup());

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
    const typo = cli(['resyn'], { home: join(dir, 'home') });
    expect(typo.status).toBe(2);
    expect(typo.stderr).toMatch(/unknown command 'resyn'[\s\S]*Did you mean resync\?/);
    const help = cli(['--help'], { home: join(dir, 'home') });
    for (const name of COMMAND_NAMES) expect(help.stdout).toContain(name);
  });
});
