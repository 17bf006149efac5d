import { describe, it, expect, beforeAll, afterAll, afterEach } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { link, readFile, stat, symlink, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { askToStop, fallbackPath, lockFile, lockHolderOf, lockKey, tryLockFile } from '../host/writer-lock.js';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/temp-dir.js';

const LIB = pathToFileURL(join(ROOT, 'dist', 'writer-lock.js')).href;
let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-lock-')));
afterAll(() => cleanup());

/** Every holder started, so one a failed assertion left running is killed after its test. */
const children = new Set<ChildProcess>();
afterEach(async () => {
  await Promise.all([...children].map(killed));
  children.clear();
});

/** A child process that takes the lock on `path` and says 'held' (or 'busy'); with `stop`, it agrees to stop requests and exits. */
function holder(path: string, env: Record<string, string> = {}, stop = false): Promise<{ child: ChildProcess; line: string }> {
  const script = `
const { tryLockFile } = await import(${JSON.stringify(LIB)});
const r = await tryLockFile(${JSON.stringify(path)}, { what: 'the test disk' });
if (!('release' in r)) { process.stdout.write('busy\\n'); process.exit(0); }
${stop ? `r.onStop((why) => { setTimeout(async () => { await r.release(); process.stdout.write('stopped ' + why + '\\n'); process.exit(0); }, 100); return { stopping: true }; });` : ''}
process.stdout.write('held\\n');
setInterval(() => {}, 1000);
`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  children.add(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve({ child, line: out.trim() });
    });
    child.on('exit', (code) => reject(new Error(`holder exited ${code} before taking the lock`)));
  });
}

function killed(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

describe.each([
  ['abstract socket', {}],
  ['file (fallback)', { VHDSYNC_LOCK: 'file' }],
])('one writer: the lock by file identity (%s)', (_mode, env: Record<string, string>) => {
  const withEnv = async <T>(fn: () => Promise<T>): Promise<T> => {
    const was = process.env.VHDSYNC_LOCK;
    if (env.VHDSYNC_LOCK) process.env.VHDSYNC_LOCK = env.VHDSYNC_LOCK;
    try {
      return await fn();
    } finally {
      if (was === undefined) delete process.env.VHDSYNC_LOCK;
      else process.env.VHDSYNC_LOCK = was;
    }
  };

  it('a hard link and a symlink of a held disk are refused with the holder named; SIGKILL frees it at once', () =>
    withEnv(async () => {
      const tag = env.VHDSYNC_LOCK ?? 'sock';
      const disk = join(dir, `${tag}-disk.vhd`);
      await writeFile(disk, 'x');
      await link(disk, join(dir, `${tag}-hard.vhd`));
      await symlink(disk, join(dir, `${tag}-soft.vhd`));
      const { child, line } = await holder(disk, env);
      expect(line).toBe('held');
      for (const name of [disk, join(dir, `${tag}-hard.vhd`), join(dir, `${tag}-soft.vhd`)]) {
        const r = await tryLockFile(name);
        expect('holder' in r && r.holder?.pid).toBe(child.pid);
      }
      await expect(lockFile(join(dir, `${tag}-hard.vhd`), { what: 'r.vhd' })).rejects.toMatchObject({
        code: 'BUSY',
        message: expect.stringMatching(new RegExp(`^r\\.vhd is in use by process ${child.pid} on \\S+ \\(since \\d{4}-.*\\); wait for it to finish, or run again with --wait$`)),
      });
      // Killed, not released: the next taker gets it on its first try, without any timeout.
      await killed(child);
      const t0 = Date.now();
      const r = await tryLockFile(join(dir, `${tag}-hard.vhd`));
      expect('release' in r).toBe(true);
      expect(Date.now() - t0).toBeLessThan(5000);
      // This process holds it now: another name in this process is refused too (not re-entrant).
      expect('holder' in (await tryLockFile(disk))).toBe(true);
      if ('release' in r) await r.release();
      expect(await lockHolderOf(disk)).toBe('free');
    }));

  it('--wait: a waiting taker gets the lock when the holder dies', () =>
    withEnv(async () => {
      const disk = join(dir, `${env.VHDSYNC_LOCK ?? 'sock'}-wait.vhd`);
      await writeFile(disk, 'x');
      const { child } = await holder(disk, env);
      let waitingFor: number | undefined;
      const taking = lockFile(disk, { wait: true, onWait: (h) => (waitingFor = h?.pid) });
      await new Promise((r) => setTimeout(r, 300));
      expect(waitingFor).toBe(child.pid);
      await killed(child);
      const held = await taking;
      expect(held.key).toBe(await lockKey(disk));
      await held.release();
    }));
});

describe('one writer: the two lock modes see each other', () => {
  it.each([
    ['held by the default (socket) mode, refused to VHDSYNC_LOCK=file', {}, 'file'],
    ['held by VHDSYNC_LOCK=file, refused to the default mode', { VHDSYNC_LOCK: 'file' }, undefined],
  ] as const)('%s', async (_name, holderEnv, takerMode) => {
    const p = join(dir, `modes-${takerMode ?? 'socket'}.img`);
    await writeFile(p, '');
    const h = await holder(p, holderEnv);
    const was = process.env.VHDSYNC_LOCK;
    try {
      if (takerMode) process.env.VHDSYNC_LOCK = takerMode;
      else delete process.env.VHDSYNC_LOCK;
      const r = await tryLockFile(p, { what: p });
      expect('release' in r).toBe(false);
      expect((r as { holder?: { pid: number } }).holder?.pid).toBe(h.child.pid);
      expect((await lockHolderOf(p)) as { pid: number }).toMatchObject({ pid: h.child.pid });
      await killed(h.child);
      const free = await tryLockFile(p, { what: p });
      expect('release' in free).toBe(true);
      if ('release' in free) await free.release();
    } finally {
      if (was === undefined) delete process.env.VHDSYNC_LOCK;
      else process.env.VHDSYNC_LOCK = was;
    }
  });
});

describe('one writer: what the lock does not trust', () => {
  it('file mode: a lock file naming a live but recycled pid (another start time) is stale', async () => {
    process.env.VHDSYNC_LOCK = 'file';
    try {
      const disk = join(dir, 'reuse.vhd');
      await writeFile(disk, 'x');
      const { child } = await holder(disk, { VHDSYNC_LOCK: 'file' });
      await killed(child);
      // The dead holder's record, now pointing at a live process (this one) as if its pid were reused.
      const path = fallbackPath(await lockKey(disk));
      const rec = JSON.parse(await readFile(path, 'utf8'));
      await writeFile(path, JSON.stringify({ ...rec, pid: process.pid }) + '\n');
      const r = await tryLockFile(disk);
      expect('release' in r).toBe(true);
      if ('release' in r) await r.release();
    } finally {
      delete process.env.VHDSYNC_LOCK;
    }
  });

  it('a file made after a held one was deleted is not taken for it, even with the same inode number', async () => {
    const held = join(dir, 'gone.vhd');
    await writeFile(held, 'x');
    const lock = await lockFile(held);
    try {
      const { ino } = await stat(held);
      await unlink(held);
      // File systems hand a freed inode number to the next file made: make files until one has it.
      let reused: string | undefined;
      for (let i = 0; i < 200 && !reused; i++) {
        const candidate = join(dir, `new-${i}.vhd`);
        await writeFile(candidate, 'y');
        if ((await stat(candidate)).ino === ino) reused = candidate;
      }
      if (!reused) return; // this file system did not reuse it: nothing to prove here
      const r = await tryLockFile(reused);
      expect('release' in r, 'a new file with a reused inode number was refused as locked').toBe(true);
      if ('release' in r) await r.release();
    } finally {
      await lock.release();
    }
  });

  it('a stop request reaches the holder, which agrees, lets go and exits; a holder without a handler refuses', async () => {
    const disk = join(dir, 'stop.vhd');
    await writeFile(disk, 'x');
    const { child } = await holder(disk, {}, true);
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    const asked = await askToStop(disk, 'cancel');
    expect(asked).not.toBe('free');
    if (asked === 'free') return;
    expect(asked.answer).toEqual({ stopping: true });
    expect(asked.holder?.pid).toBe(child.pid);
    await asked.released;
    await new Promise((r) => child.once('exit', r));
    expect(out).toContain('stopped cancel');
    expect(await lockHolderOf(disk)).toBe('free');

    const plain = await holder(disk);
    const refused = await askToStop(disk, 'cancel');
    expect(refused !== 'free' && refused.answer.stopping).toBe(false);
    await killed(plain.child);
    expect(await askToStop(disk, 'cancel')).toBe('free');
  });
});

describe('one writer: a tracking log', () => {
  it('two names of one primary disk (a hard link) share one tracking-log lock: their critical sections never overlap', async () => {
    const { withLogLock } = await import('../host/tracking/log-files.js');
    const disk = join(dir, 'primary.img');
    await writeFile(disk, 'x');
    await link(disk, join(dir, 'primary-hard.img'));
    const order: string[] = [];
    const section = (name: string) => async () => {
      order.push(`${name} in`);
      await new Promise((r) => setTimeout(r, 150));
      order.push(`${name} out`);
    };
    await Promise.all([withLogLock(disk, section('a')), withLogLock(join(dir, 'primary-hard.img'), section('b'))]);
    // Whichever came first, the other one entered only after it left.
    const first = order[0].split(' ')[0];
    const second = first === 'a' ? 'b' : 'a';
    expect(order).toEqual([`${first} in`, `${first} out`, `${second} in`, `${second} out`]);
  });
});
