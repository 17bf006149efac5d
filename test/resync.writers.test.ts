/**
 * One writer, always (issue 13, items 1, 2, 4, 5, 6): real processes racing on one replica, checked
 * against the disks with qemu-img, never against what the processes claim.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import { copyFile, link, readFile, rm, symlink, writeFile, open } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { lockHolderOf } from '../host/writer-lock.js';
import { cli, background } from './support/cli.js';
import { sha256File } from './support/digest.js';
import { rawImage } from './support/images.js';
import { qemuIdentical, qemuImg } from './support/oracles.js';
import { ROOT } from './support/paths.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-writers-')));
afterAll(() => cleanup());

interface Run {
  pid: number;
  exited: Promise<{ code: number | null; stdout: string; stderr: string }>;
  kill(signal?: NodeJS.Signals): void;
}

function start(args: string[], env: Record<string, string> = {}): Run {
  const { child, exited } = background(args, { home: join(dir, 'home'), env });
  return { pid: child.pid!, exited, kill: (s = 'SIGKILL') => child.kill(s) };
}

/** Until `run` holds the replica and its resync is comparing (its checkpoint exists). */
async function progressed(replica: string, run: Run): Promise<void> {
  let gone = false;
  void run.exited.then(() => (gone = true));
  for (;;) {
    if (gone) throw new Error('the resync ended before it was seen running');
    const cp = await readFile(`${replica}.resync.json`, 'utf8').catch(() => '');
    const holder = await lockHolderOf(replica);
    if (cp && JSON.parse(cp).phase === 'comparing' && holder !== 'free' && holder?.pid === run.pid) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A 64 MiB pair: a primary with 48 MiB of data in three runs, an empty replica. */
async function pair(name: string): Promise<{ p: string; r: string }> {
  const p = await rawImage(join(dir, `${name}-p.img`), 64 * MiB);
  const r = await rawImage(join(dir, `${name}-r.img`), 64 * MiB);
  execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 16M', '-c', 'write -P 0x22 24M 16M', '-c', 'write -P 0x33 48M 16M', p]);
  return { p, r };
}

const SLOW = ['--link', '60mbps', '--no-progress'];

describe('two writers of one replica', () => {
  it('a second resync of the same replica (by a hard-linked name) is refused with exit 2 and one line naming the holder; the first completes', async () => {
    const { p, r } = await pair('two');
    const r2 = join(dir, 'two-r-hardlink.img');
    await link(r, r2);
    const a = start(['resync', p, r, ...SLOW]);
    await progressed(r, a);
    const b = start(['resync', p, r2, ...SLOW]);
    const second = await b.exited;
    expect(second.stderr).toMatch(/in use/);
    expect(second.code).toBe(2);
    expect(second.stderr.trim().split('\n')).toHaveLength(1);
    expect(second.stderr).toMatch(new RegExp(`^vhdsync: ${r2.replace(/[.]/g, '\\.')} is in use by process ${a.pid} on \\S+ \\(since \\d{4}-\\d\\d-\\d\\dT.*resync.*\\); wait for it to finish, or run again with --wait\\n$`));
    const first = await a.exited;
    expect(first.code).toBe(0);
    expect(qemuIdentical(p, r)).toBe(true);
    expect(existsSync(`${r}.resync.json`)).toBe(false);
  });

  it('the primary of a running resync is not written around its tracker: a resync onto it, a resize and a second resync from it are refused in one line; the first completes equal', async () => {
    const { p, r } = await pair('source');
    const other = await rawImage(join(dir, 'source-other.img'), 64 * MiB);
    const r2 = await rawImage(join(dir, 'source-r2.img'), 64 * MiB);
    const before = sha256File(p);
    const a = start(['resync', p, r, ...SLOW]);
    await progressed(r, a);
    const holderLine = (what: string) => new RegExp(`^vhdsync: ${what.replace(/[.]/g, '\\.')} is in use by process ${a.pid} on \\S+ \\(since .*resync.*\\): it is the primary of that resync`);
    for (const [args, tail] of [
      [['resync', other, p, '--no-progress'], /so a resync onto it now would change it behind the resync's back; wait for that resync to end\n$/],
      [['resize', p, '+1M'], /so resizing it now would change it behind the resync's back; wait for that resync to end\n$/],
      [['resync', p, r2, '--no-progress'], /and its writes are tracked in one log; wait for that resync to end, or run again with --wait\n$/],
    ] as const) {
      const refused = cli([...args], { home: join(dir, 'home') });
      expect(refused.status, args.join(' ')).toBe(2);
      expect(refused.stderr.trim().split('\n')).toHaveLength(1);
      expect(refused.stderr).toMatch(holderLine(p));
      expect(refused.stderr).toMatch(tail);
    }
    expect(sha256File(p)).toBe(before);
    expect((await a.exited).code).toBe(0);
    expect(qemuIdentical(p, r)).toBe(true);
    // Once it ended, the same commands go through.
    expect(cli(['resync', p, r2, '--no-progress'], { home: join(dir, 'home') }).status).toBe(0);
    expect(qemuIdentical(p, r2)).toBe(true);
  });

  it('with --wait the second resync waits for the first, then runs, and the replica equals the primary', async () => {
    const { p, r } = await pair('wait');
    const a = start(['resync', p, r, ...SLOW]);
    await progressed(r, a);
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 8M 1M', p]);
    const b = start(['resync', p, r, '--wait', '--json', ...SLOW]);
    const [first, second] = await Promise.all([a.exited, b.exited]);
    expect(first.code).toBe(0);
    expect(second.code).toBe(0);
    expect(second.stderr).toMatch(/waiting for process \d+/);
    expect(JSON.parse(second.stdout)).toMatchObject({ result: 'completed', identical: true });
    expect(qemuIdentical(p, r)).toBe(true);
  });

  it('resync --cancel during a running resync asks it to stop: the runner exits as cancelled, the canceller reports it, the base is untouched', async () => {
    const { p, r } = await pair('cancel');
    const before = sha256File(r);
    const a = start(['resync', p, r, '--json', ...SLOW]);
    await progressed(r, a);
    const c = cli(['resync', '--cancel', r], { home: join(dir, 'home') });
    expect(c.stderr).toBe('');
    expect(c.status).toBe(0);
    expect(c.stdout).toMatch(new RegExp(`asked process ${a.pid} on \\S+ to stop; resync of .* cancelled; the replica is as it was before the resync`));
    const ran = await a.exited;
    expect(ran.code).toBe(1);
    expect(JSON.parse(ran.stdout)).toMatchObject({ result: 'cancelled', identical: false });
    expect(sha256File(r)).toBe(before);
    expect(existsSync(`${r}.resync.json`)).toBe(false);
    expect(existsSync(`${r}.resync.vhd`)).toBe(false);
    // The next resync starts from the beginning and completes.
    expect(cli(['resync', p, r, '--no-progress'], { home: join(dir, 'home') }).status).toBe(0);
    expect(qemuIdentical(p, r)).toBe(true);
  });

  it('a missing overlay is "already merged" only when the checkpoint says the merge finished; otherwise an error, never identical', async () => {
    const { p, r } = await pair('gone');
    const before = sha256File(r);
    const a = start(['resync', p, r, ...SLOW]);
    await progressed(r, a);
    // The overlay is made with the first differing leaf (issue 17): wait for it.
    while (!existsSync(`${r}.resync.vhd`)) await new Promise((res) => setTimeout(res, 10));
    a.kill('SIGKILL');
    await a.exited;
    // The overlay removed behind the resync's back, while its checkpoint says it was being merged.
    const cp = JSON.parse(await readFile(`${r}.resync.json`, 'utf8'));
    await writeFile(`${r}.resync.json`, JSON.stringify({ ...cp, phase: 'merging', nextRegion: 4 }));
    await rm(`${r}.resync.vhd`);
    const out = cli(['resync', p, r, '--json', '--no-progress'], { home: join(dir, 'home') });
    expect(out.status).toBe(2);
    expect(JSON.parse(out.stdout)).toMatchObject({ error: { code: 'STATE' } });
    expect(out.stderr).toMatch(/overlay .* is gone but no merge journal says it was merged/);
    expect(sha256File(r)).toBe(before);
  });
});

describe('the point of no return is where the base is written', () => {
  it('a read-only replica (chattr +i): the merge fails, the phase is not merging, and --cancel leaves the replica untouched', async (ctx) => {
    const { p, r } = await pair('ro');
    const before = sha256File(r);
    if (spawnSync('chattr', ['+i', r]).status !== 0) return ctx.skip();
    try {
      const out = cli(['resync', p, r, '--no-progress'], { home: join(dir, 'home') });
      expect(out.status).toBe(2);
      expect(out.stderr.trim().split('\n')).toHaveLength(1);
      expect(JSON.parse(await readFile(`${r}.resync.json`, 'utf8')).phase).toBe('compared');
      const c = cli(['resync', '--cancel', r], { home: join(dir, 'home') });
      expect(c.stderr).toBe('');
      expect(c.status).toBe(0);
      expect(existsSync(`${r}.resync.json`)).toBe(false);
      expect(sha256File(r)).toBe(before);
    } finally {
      spawnSync('chattr', ['-i', r]);
    }
  });

  it('--keep-pre-resync-point and a kill during the merge: the resumed run keeps the point taken before the merge (it reverts to the old replica)', async () => {
    const p = await rawImage(join(dir, 'keep-p.img'), 256 * MiB);
    const r = await rawImage(join(dir, 'keep-r.img'), 256 * MiB);
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 256M', p]);
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x0f 0 1M', '-c', 'write -P 0x0e 255M 1M', r]);
    const original = join(dir, 'keep-original.img');
    await copyFile(r, original);
    const lib = pathToFileURL(join(ROOT, 'dist', 'index.js')).href;
    const script = `const { resync } = await import(${JSON.stringify(lib)}); const r = await resync({ primary: process.argv[2], replica: process.argv[3], keepPreResyncPoint: true }); process.stdout.write(JSON.stringify(r.result));`;
    const scriptFile = join(dir, 'keep-resync.mjs');
    await writeFile(scriptFile, script);
    const journal = join(dir, '.keep-r.img.resync.vhd.merge.json');
    let halfMerged = false;
    for (let attempt = 0; attempt < 5 && !halfMerged; attempt++) {
      await copyFile(original, r);
      await rm(`${r}.resync.json`, { force: true });
      await rm(`${r}.resync.vhd`, { force: true });
      await rm(journal, { force: true });
      await rm(`${r}.recovery-points`, { recursive: true, force: true });
      const child = spawn(process.execPath, [scriptFile, p, r], { stdio: 'ignore' });
      const exited = new Promise((res) => child.on('exit', res));
      let ended = false;
      void exited.then(() => (ended = true));
      // Kill once the merge has written the first block of the base (and so before it wrote the last).
      const fh = await open(r, 'r');
      const first = new Uint8Array(1);
      while (!ended) {
        await fh.read(first, 0, 1, 0);
        if (first[0] === 0x5a) break;
        await new Promise((res) => setTimeout(res, 2));
      }
      child.kill('SIGKILL');
      await exited;
      const last = new Uint8Array(1);
      await fh.read(last, 0, 1, 256 * MiB - 1);
      await fh.close();
      halfMerged = first[0] === 0x5a && last[0] === 0x0e && existsSync(journal);
      if (!halfMerged) console.log('not half merged:', first[0], last[0], existsSync(journal));
    }
    expect(halfMerged).toBe(true);
    // The CLI has no --keep-pre-resync-point: resume as the replication layer does.
    const resumed = spawnSync(process.execPath, [scriptFile, p, r], { encoding: 'utf8' });
    expect(resumed.stdout).toBe('"completed"');
    expect(qemuIdentical(p, r)).toBe(true);
    // Undo records: [offset u64 LE][length u32 LE][before-image]. Applied to the result, they give the old replica.
    const undo = new Uint8Array(await readFile(`${r}.recovery-points/pre-resync.undo`));
    const view = new DataView(undo.buffer, undo.byteOffset, undo.byteLength);
    const back = await open(r, 'r+');
    for (let at = 0; at < undo.length; ) {
      const off = Number(view.getBigUint64(at, true));
      const len = view.getUint32(at + 8, true);
      await back.write(undo, at + 12, len, off);
      at += 12 + len;
    }
    await back.close();
    expect(qemuIdentical(original, r)).toBe(true);
  });
});

describe('preflight: the replica is not the primary', () => {
  it('refuses a replica that is the primary by another name (hard link, symlink) or in its parent chain, with one line', async () => {
    const base = join(dir, 'chain-base.vhdx');
    const child = join(dir, 'chain-child.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', base, '16M');
    expect(cli(['create', child, '--parent', base], { home: join(dir, 'home') }).status).toBe(0);
    const baseBefore = sha256File(base);
    const hard = join(dir, 'chain-hard.vhdx');
    const soft = join(dir, 'chain-soft.vhdx');
    await link(child, hard);
    await symlink(child, soft);
    const home = { home: join(dir, 'home') };
    const inChain = cli(['resync', child, base, '--no-progress'], home);
    expect(inChain.status).toBe(2);
    expect(inChain.stderr).toMatch(/^vhdsync: .*chain-base\.vhdx: is in the parent chain of the primary .*chain-child\.vhdx; a resync would change the primary — choose another replica\n$/);
    for (const same of [hard, soft, child]) {
      const out = cli(['resync', child, same, '--no-progress'], home);
      expect(out.status).toBe(2);
      expect(out.stderr).toMatch(/^vhdsync: .*: is the primary .*chain-child\.vhdx itself \(the same file by another name\); choose another replica\n$/);
    }
    expect(sha256File(base)).toBe(baseBefore);
    expect(existsSync(`${base}.resync.json`)).toBe(false);
  });
});
