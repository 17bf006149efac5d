#!/usr/bin/env node
/**
 * The system tools the tests need, checked and (as root) installed: the one list, used by `npm test`
 * (pretest) and `.ci/run`. Debian package names; each is judged by the commands or files the tests use.
 *
 *   node scripts/system-tools.mjs           as root: apt-get update once, install what is missing;
 *                                           otherwise: print the one `apt-get install` line, exit 1
 *   node scripts/system-tools.mjs --check   only print what is missing (exit 1 if anything is)
 *   VHDSYNC_SYSTEM_TOOLS=check              same as --check (for `npm test` without root)
 *
 * No dependencies: it runs before `npm ci`.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** Debian package → what the tests run from it. `cmd` is looked up on PATH, `file` must be executable. */
export const TOOLS = [
  { pkg: 'qemu-utils', cmd: ['qemu-img', 'qemu-io', 'qemu-nbd'], why: 'interop tests, NBD client tests' },
  { pkg: 'libvhdi-utils', cmd: ['vhdiinfo'], why: 'VHD interop tests' },
  { pkg: 'python3-libvhdi', python: 'pyvhdi', why: 'VHD chain reads by libvhdi' },
  { pkg: 'rsync', cmd: ['rsync'], why: 'benchmark peer' },
  { pkg: 'openssl', cmd: ['openssl'], why: 'certificate interop tests' },
  { pkg: 'chromium', file: '/usr/bin/chromium', why: 'browser tests of the page' },
  { pkg: 'libnbd-bin', cmd: ['nbdinfo', 'nbdcopy'], why: 'NBD client tests' },
];

/** Debian's own python, where python3-libvhdi installs (a pyenv python on PATH would not see it). */
const PYTHON = '/usr/bin/python3';

function onPath(cmd, path) {
  for (const dir of (path ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      /* not here */
    }
  }
  return false;
}

function executable(file) {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Is this package's part present? `env` carries PATH (so a test can hide a tool). */
export function present(tool, env = process.env) {
  if (tool.cmd) return tool.cmd.every((c) => onPath(c, env.PATH));
  if (tool.file) return executable(tool.file);
  if (tool.python) return executable(PYTHON) && spawnSync(PYTHON, ['-c', `import ${tool.python}`], { stdio: 'ignore' }).status === 0;
  return true;
}

/**
 * The decision, pure: given the missing packages, whether we are root, whether only to check, and
 * whether apt-get exists, what to do. `commands` are argv arrays run in order; `message` is for the user.
 */
export function plan({ missing, root, checkOnly, hasApt }) {
  if (missing.length === 0) return { action: 'none', commands: [], message: 'system tools: all present', exitCode: 0 };
  const line = `apt-get install -y ${missing.join(' ')}`;
  if (!hasApt) {
    return {
      action: 'explain',
      commands: [],
      message: `system tools missing: ${missing.join(' ')} (Debian package names; no apt-get here: install the equivalents with your package manager)`,
      exitCode: 1,
    };
  }
  if (root && !checkOnly) {
    return {
      action: 'install',
      commands: [
        ['apt-get', 'update', '-qq'],
        ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...missing],
      ],
      message: `system tools: installing ${missing.join(' ')}`,
      exitCode: 0,
    };
  }
  return {
    action: 'explain',
    commands: [],
    message: `system tools missing: ${missing.join(' ')}; the tests need them. Install with:\n  ${root ? '' : 'sudo '}${line}`,
    exitCode: 1,
  };
}

export function main(argv = process.argv.slice(2), env = process.env) {
  const checkOnly = argv.includes('--check') || env.VHDSYNC_SYSTEM_TOOLS === 'check';
  const missing = TOOLS.filter((t) => !present(t, env)).map((t) => t.pkg);
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const p = plan({ missing, root, checkOnly, hasApt: onPath('apt-get', env.PATH) });
  (p.exitCode === 0 ? process.stdout : process.stderr).write(p.message + '\n');
  for (const argv of p.commands) {
    const r = spawnSync(argv[0], argv.slice(1), { stdio: 'inherit', env: { ...env, DEBIAN_FRONTEND: 'noninteractive' } });
    if (r.status !== 0) {
      process.stderr.write(`system tools: '${argv.join(' ')}' failed (exit ${r.status ?? r.signal})\n`);
      return 1;
    }
  }
  if (p.action === 'install') {
    const still = TOOLS.filter((t) => !present(t, env)).map((t) => t.pkg);
    if (still.length > 0) {
      process.stderr.write(`system tools: still missing after install: ${still.join(' ')}\n`);
      return 1;
    }
  }
  return p.exitCode;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = main();
