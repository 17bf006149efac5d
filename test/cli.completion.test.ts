/** `vhdsync --help` grouped by purpose, and `vhdsync completion bash|zsh` run in a real bash. */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_NAMES } from '../host/cli/commands/index.js';
import { cli } from './support/cli.js';
import { tempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-completion-')));
afterAll(() => cleanup());

describe('help', () => {
  it('lists every command under a purpose: images, resync, replication, running VMs, failover, sites, shell', () => {
    const help = cli(['--help'], { home: join(dir, 'home') }).stdout;
    const headings = help.split('\n').filter((l) => /^[A-Z][\w ]*:$/.test(l));
    expect(headings).toEqual(['Options:', 'Images:', 'Resync:', 'Replication:', 'Running VMs:', 'Failover:', 'Sites:', 'Shell:']);
    const sections = help.split(/\n(?=[A-Z][\w ]*:\n)/);
    for (const name of COMMAND_NAMES) {
      const home = sections.find((s) => new RegExp(`\\n  ${name} `).test(s));
      expect([name, home?.split('\n')[0]]).not.toEqual([name, undefined]);
      expect(home!.startsWith('Options:')).toBe(false);
    }
  });
});

describe('completion', () => {
  /** What bash completes for the words typed so far (the last is the one being completed). */
  function complete(...words: string[]): string[] {
    const script = join(dir, 'vhdsync.bash');
    writeFileSync(script, cli(['completion', 'bash'], { home: join(dir, 'home') }).stdout);
    const arr = words.map((w) => `'${w}'`).join(' ');
    const r = spawnSync('bash', ['-c', `cd "${dir}" && source "${script}" && COMP_WORDS=(${arr}) && COMP_CWORD=${words.length - 1} && _vhdsync && printf '%s\\n' "\${COMPREPLY[@]}"`], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    return r.stdout.split('\n').filter(Boolean);
  }

  it('bash: command names, each command\'s own options, file names for arguments', () => {
    expect(complete('vhdsync', 're').sort()).toEqual(['remove-replication', 'replica', 'reset-replication-statistics', 'resize', 'resume-replication', 'resync', 'reverse-replication']);
    expect(complete('vhdsync', 'resync', '--dr')).toEqual(['--dry-run']);
    expect(complete('vhdsync', 'resize', '--sh')).toEqual(['--shrink']);
    // The failover lifecycle: complete-failover, start-failover --prepare, run --failover-view, get-replication's replica side.
    expect(complete('vhdsync', 'complete-')).toEqual(['complete-failover']);
    expect(complete('vhdsync', 'start-failover', '--pr')).toEqual(['--prepare']);
    expect(complete('vhdsync', 'run', '--failover')).toEqual(['--failover-view']);
    expect(complete('vhdsync', 'get-replication', '--replica-')).toEqual(['--replica-path', '--replica-server']);
    expect(complete('vhdsync', 'info', '--f')).toEqual(['--format']);
    expect(complete('vhdsync', 'compare', '-')).toEqual(expect.arrayContaining(['--json', '--format', '-f', '--format-b', '-F', '--help']));
    writeFileSync(join(dir, 'disk-one.vhdx'), '');
    expect(complete('vhdsync', 'info', 'disk-o')).toEqual(['disk-one.vhdx']);
  });

  it('bash: the script registers itself for the vhdsync command', () => {
    const r = spawnSync('bash', ['-c', `eval "$(cat)"; complete -p vhdsync`], {
      encoding: 'utf8',
      input: cli(['completion', 'bash'], { home: join(dir, 'home') }).stdout,
    });
    expect(r.stdout).toBe('complete -o filenames -F _vhdsync vhdsync\n');
  });

  it('zsh: a #compdef script naming every command with its summary (syntax checked when zsh is installed)', () => {
    const script = cli(['completion', 'zsh'], { home: join(dir, 'home') }).stdout;
    expect(script.startsWith('#compdef vhdsync\n')).toBe(true);
    for (const name of COMMAND_NAMES) expect(script).toMatch(new RegExp(`'${name}:[^']+'`));
    const zsh = spawnSync('zsh', ['-n'], { input: script, encoding: 'utf8' });
    if (zsh.error === undefined) expect(zsh.status).toBe(0);
  });

  it('another shell is a usage error', () => {
    const r = cli(['completion', 'fish', '--json'], { home: join(dir, 'home') });
    expect(r.status).toBe(2);
  });
});
