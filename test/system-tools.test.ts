/**
 * scripts/system-tools.mjs: the one list of Debian packages the tests need, and its decisions. Run
 * for real with a PATH that hides a tool (a directory of links to every tool but that one).
 */
import { spawnSync } from 'node:child_process';
import { symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from './support/paths.js';
// @ts-expect-error a plain .mjs script without types
import { TOOLS, plan } from '../scripts/system-tools.mjs';
import { tempDir, removeDir } from './support/temp-dir.js';

const SCRIPT = join(ROOT, 'scripts', 'system-tools.mjs');
const dirs: string[] = [];
afterAll(() => dirs.forEach(removeDir));

/** A PATH of one directory holding links to every tool the script checks (and apt-get), minus `hide`. */
function pathWithout(...hide: string[]): string {
  const { dir } = tempDir('vhdsync-path-');
  dirs.push(dir);
  const cmds = (TOOLS as { cmd?: string[] }[]).flatMap((t) => t.cmd ?? []).concat('apt-get');
  for (const c of cmds) {
    if (hide.includes(c)) continue;
    const found = spawnSync('sh', ['-c', `command -v ${c}`], { encoding: 'utf8' }).stdout.trim();
    if (!found) throw new Error(`${c} is not installed on this machine; run node scripts/system-tools.mjs`);
    symlinkSync(found, join(dir, c));
  }
  return dir;
}

function run(args: string[], env: Record<string, string>) {
  return spawnSync(process.execPath, [SCRIPT, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
}

describe('system tools script', () => {
  it('with every tool present it says so and exits 0', () => {
    const r = run(['--check'], { PATH: pathWithout() });
    expect(r.stdout).toBe('system tools: all present\n');
    expect(r.status).toBe(0);
  });

  it('a PATH without qemu-img: names qemu-utils alone in the one apt-get line, exits 1, installs nothing', () => {
    const r = run(['--check'], { PATH: pathWithout('qemu-img') });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^system tools missing: qemu-utils; the tests need them\. Install with:\n {2}(sudo )?apt-get install -y qemu-utils\n$/);
    expect(r.stdout).toBe('');
  });

  it('VHDSYNC_SYSTEM_TOOLS=check does the same for `npm test` (pretest)', () => {
    const r = run([], { PATH: pathWithout('nbdcopy', 'vhdiinfo'), VHDSYNC_SYSTEM_TOOLS: 'check' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/apt-get install -y libvhdi-utils libnbd-bin\n$/);
  });

  it('without apt-get: names the packages and says to use another package manager', () => {
    const r = run([], { PATH: pathWithout('apt-get', 'rsync') });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^system tools missing: rsync \(Debian package names; no apt-get here/);
  });

  it('decides: root installs after one apt-get update; not root explains; nothing missing does nothing', () => {
    const asRoot = plan({ missing: ['qemu-utils', 'chromium'], root: true, checkOnly: false, hasApt: true });
    expect(asRoot.action).toBe('install');
    expect(asRoot.commands).toEqual([
      ['apt-get', 'update', '-qq'],
      ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'qemu-utils', 'chromium'],
    ]);
    const user = plan({ missing: ['qemu-utils'], root: false, checkOnly: false, hasApt: true });
    expect(user).toMatchObject({ action: 'explain', commands: [], exitCode: 1 });
    expect(user.message).toContain('sudo apt-get install -y qemu-utils');
    expect(plan({ missing: ['rsync'], root: true, checkOnly: true, hasApt: true }).commands).toEqual([]);
    expect(plan({ missing: [], root: false, checkOnly: false, hasApt: false })).toMatchObject({ action: 'none', exitCode: 0 });
  });

  it('covers the NBD client tools and the list .ci/run used to carry', () => {
    expect((TOOLS as { pkg: string }[]).map((t) => t.pkg)).toEqual(
      ['qemu-utils', 'libvhdi-utils', 'python3-libvhdi', 'rsync', 'openssl', 'chromium', 'libnbd-bin'],
    );
  });
});
