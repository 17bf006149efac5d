import { describe, it, expect } from 'vitest';
import { Command } from 'commander';
import { kebab, powerShellArgs } from '../host/cli/powershell-args.js';
import { parseStartTime } from '../host/replication/settings.js';
import { checkVmName, namePattern, vmFolderName, VM_FOLDER } from '../host/replica/vm-name.js';

describe('VM names and their folders (vm-name.ts)', () => {
  it('a plain name is its own folder; any other is a safe part and a hash, never a path', () => {
    for (const n of ['vm', 'VM1', 'web-01.prod', 'a_b']) expect(vmFolderName(n)).toBe(n);
    const cases = ['RESYNC VM', 'a b', 'a:b', 'a/b', '../../etc', '..', '.hidden', 'ü-vm', '名前', 'x'.repeat(100), 'a+b'];
    const folders = cases.map(vmFolderName);
    for (const f of folders) {
      expect(f).toMatch(VM_FOLDER);
      expect(f).not.toMatch(/[/\\]|^\./);
      expect(f.length).toBeLessThanOrEqual(53);
    }
    expect(new Set(folders).size).toBe(cases.length); // no two share a folder
    expect(vmFolderName('RESYNC VM')).toMatch(/^RESYNC_VM\+[0-9a-f]{12}$/);
    expect(vmFolderName('名前')).toMatch(/^vm\+[0-9a-f]{12}$/);
  });

  it('refuses what Hyper-V would not take, and wildcards', () => {
    for (const bad of ['', '   ', ' x', 'x ', 'a\nb', 'a*', 'a?', 'y'.repeat(101)]) expect(() => checkVmName(bad), JSON.stringify(bad)).toThrow(/not a usable VM name/);
    expect(checkVmName('RESYNC VM')).toBe('RESYNC VM');
  });

  it('wildcards as PowerShell -like, without regard to case', () => {
    const m = (p: string, n: string) => namePattern(p)(n);
    expect(m('resync*', 'RESYNC VM')).toBe(true);
    expect(m('RESYNC?VM', 'resync vm')).toBe(true);
    expect(m('web0[1-3]', 'WEB02')).toBe(true);
    expect(m('web0[1-3]', 'WEB04')).toBe(false);
    expect(m('a.b', 'aXb')).toBe(false); // '.' is literal
    expect(m('RESYNC VM', 'resync vm')).toBe(true);
  });
});

describe('PowerShell spellings (powershell-args.ts)', () => {
  const cmd = new Command('set-replication')
    .argument('<vm>')
    .option('--auto-resynchronize-enabled <0|1>')
    .option('--auto-resynchronize-interval-start <t>')
    .option('--frequency <s>')
    .option('--resynchronize')
    .option('--json');

  it('PascalCase to the command\'s own kebab-case options, aliases, -Name:value, switches; unknown left alone', () => {
    expect(kebab('AutoResynchronizeIntervalStart')).toBe('auto-resynchronize-interval-start');
    expect(kebab('VMName')).toBe('vm-name');
    expect(powerShellArgs(['set-replication', '-VMName', 'RESYNC VM', '-AutoResynchronizeEnabled', '1', '--AutoResynchronizeIntervalStart:18:30:00', '-RepFreq', '30'], cmd)).toEqual([
      'set-replication', 'RESYNC VM', '--auto-resynchronize-enabled', '1', '--auto-resynchronize-interval-start', '18:30:00', '--frequency', '30',
    ]);
    expect(powerShellArgs(['set-replication', 'vm', '-Resynchronize:$false', '-Resync', '-Bogus', '1', '--', '-Frequency'], cmd)).toEqual(['set-replication', 'vm', '--resynchronize', '-Bogus', '1', '--', '-Frequency']);
    // A value that looks like a switch is never taken for one: only -Word with a capital after the dash.
    expect(powerShellArgs(['set-replication', 'vm', '-f', '--json'], cmd)).toEqual(['set-replication', 'vm', '-f', '--json']);
  });
});

describe('dates as the Hyper-V docs write them (parseStartTime)', () => {
  const now = new Date(2013, 3, 14, 9, 0, 0); // 04/14/2013 09:00 local
  it('MM/dd/yyyy HH:mm:ss, h:mm AM/PM, ISO; local time; at most 7 days ahead', () => {
    expect(parseStartTime('04/15/2013 12:00:00', now).getTime()).toBe(new Date(2013, 3, 15, 12, 0, 0).getTime());
    expect(parseStartTime('4/15/2013 05:00 PM', now).getTime()).toBe(new Date(2013, 3, 15, 17, 0, 0).getTime());
    expect(parseStartTime('4/15/2013 12:30 AM', now).getTime()).toBe(new Date(2013, 3, 15, 0, 30, 0).getTime());
    expect(parseStartTime('2013-04-15 12:00', now).getTime()).toBe(new Date(2013, 3, 15, 12, 0, 0).getTime());
    expect(() => parseStartTime('02/30/2013 12:00:00', now)).toThrow(/not a date and time/);
    expect(() => parseStartTime('13/01/2013 12:00:00', now)).toThrow(/not a date and time/);
    expect(() => parseStartTime('04/22/2013 12:00:00', now)).toThrow(/more than 7 days ahead/);
    expect(() => parseStartTime('04/13/2013 12:00:00', now, '--initial-replication-start-time')).toThrow(/^--initial-replication-start-time: .* is in the past/);
  });
});
