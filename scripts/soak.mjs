#!/usr/bin/env node
/**
 * `npm run soak` (issue 13 "Proof"): random SIGKILLs across initial replication, resync, merge, apply
 * and failover views, each followed by the next ordinary command and checked against the disks with
 * qemu-img (compare; check for VHDX replicas), plus the concurrency matrix — two resyncs of one replica,
 * resync + cancel, resync + apply, two services — where every process's claim (exit code, "identical",
 * "cancelled") is checked against the disks, never trusted.
 *
 *   node scripts/soak.mjs [--kills N] [--matrix N] [--seed S] [--json]
 *
 * Defaults: --kills 500 --matrix 20 (rounds of the four concurrency cases). Needs a build (dist/) and
 * qemu-img/qemu-io. Prints one line per failure and a summary; exits 1 when anything failed.
 * A bounded slice runs in the suite (test/soak.test.ts).
 */
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, linkSync, readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHash } from 'node:crypto';

const ROOT = resolve(import.meta.dirname, '..');
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const MiB = 1024 * 1024;

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const KILLS = opt('kills', 500);
const MATRIX = opt('matrix', 20);
let seed = opt('seed', Date.now() % 100000);
const SEED = seed;
const JSON_OUT = args.includes('--json');

function rand() {
  // xorshift32: a run is reproducible from its --seed.
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return ((seed >>> 0) % 1_000_000) / 1_000_000;
}
const pick = (a) => a[Math.floor(rand() * a.length)];

if (!existsSync(CLI)) {
  console.error(`soak: ${CLI} is missing; run 'npm run build' first`);
  process.exit(2);
}

const work = mkdtempSync(join(tmpdir(), 'vhdsync-soak-'));
const stats = { kills: 0, killRuns: {}, matrixRuns: {}, failures: [] };
const count = (bag, k) => (bag[k] = (bag[k] ?? 0) + 1);
function fail(kind, what) {
  stats.failures.push({ kind, what });
  console.log(`FAIL ${kind}: ${what}`);
}

/** Run the CLI; SIGKILL it `killMs` after start (or when `killWhen()` turns true, plus `killMs`). */
function run(argv, { env = {}, killMs, killWhen } = {}) {
  return new Promise((res) => {
    const child = spawn(process.execPath, [CLI, ...argv], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    let killed = false;
    const kill = () => {
      if (child.exitCode === null && child.signalCode === null) {
        killed = true;
        child.kill('SIGKILL');
      }
    };
    let poll;
    if (killWhen) {
      poll = setInterval(() => {
        if (killWhen()) {
          clearInterval(poll);
          setTimeout(kill, killMs ?? 0);
        }
      }, 2);
    } else if (killMs !== undefined) setTimeout(kill, killMs);
    child.on('exit', (code) => {
      clearInterval(poll);
      res({ code, stdout, stderr, killed, pid: child.pid });
    });
  });
}

function identical(a, b, fa = fmt(a), fb = fmt(b)) {
  const r = spawnSync('qemu-img', ['compare', '-f', fa, '-F', fb, a, b], { encoding: 'utf8' });
  return r.status === 0;
}
function fmt(p) {
  return p.endsWith('.vhdx') ? 'vhdx' : p.endsWith('.vhd') ? 'vpc' : 'raw';
}
function checkImage(p) {
  if (!p.endsWith('.vhdx')) return true;
  return spawnSync('qemu-img', ['check', '-q', '-f', 'vhdx', p]).status === 0;
}
function sha(p) {
  return createHash('sha256').update(readFileSync(p)).digest('hex');
}
function qemuIo(f, file, ...cmds) {
  execFileSync('qemu-io', ['-f', f, ...cmds.flatMap((c) => ['-c', c]), file], { stdio: 'ignore' });
}

/** A primary with random scattered data, and a replica that is empty or a near copy. */
function makePair(dir, sizeMiB, replicaFormat) {
  const p = join(dir, 'p.img');
  rmSync(dir, { recursive: true, force: true });
  spawnSync('mkdir', ['-p', dir]);
  execFileSync('truncate', ['-s', `${sizeMiB}M`, p]);
  const cmds = [];
  for (let i = 0; i < 24; i++) cmds.push(`write -P ${1 + Math.floor(rand() * 250)} ${Math.floor(rand() * (sizeMiB - 1) * 16) * 64}K ${64 * (1 + Math.floor(rand() * 8))}K`);
  qemuIo('raw', p, ...cmds);
  const r = join(dir, `r.${replicaFormat === 'vhdx' ? 'vhdx' : 'img'}`);
  if (replicaFormat === 'vhdx') execFileSync('qemu-img', ['create', '-q', '-f', 'vhdx', r, `${sizeMiB}M`]);
  else execFileSync('truncate', ['-s', `${sizeMiB}M`, r]);
  if (rand() < 0.5) qemuIo(fmt(r), r, `write -P 7 0 ${sizeMiB >> 1}M`);
  return { p, r };
}

const leftovers = (r) => [`${r}.resync.json`, `${r}.resync.vhd`, `${r}.resync.vhdx`].filter((f) => existsSync(f));

// ---- Kills ----

/** resync killed at random (compare or merge), then run again until it completes. */
async function killResync(i) {
  const dir = join(work, `k${i}`);
  const format = pick(['raw', 'vhdx']);
  const { p, r } = makePair(dir, 32, format);
  const env = { VHDSYNC_HOME: join(dir, 'home') };
  const link = pick(['200mbps', '1gbps', 'unlimited']);
  const atMerge = rand() < 0.4;
  const journal = join(dir, `.${r.split('/').pop()}.resync.${format === 'vhdx' ? 'vhdx' : 'vhd'}.merge.json`);
  const kind = `kill-${atMerge ? 'merge' : 'resync'}-${format}`;
  count(stats.killRuns, kind);
  const first = await run(['resync', p, r, '--link', link, '--no-progress'], atMerge ? { env, killWhen: () => existsSync(journal), killMs: Math.floor(rand() * 30) } : { env, killMs: Math.floor(rand() * 1500) });
  if (first.killed) stats.kills++;
  else if (first.code !== 0) return fail(kind, `unkilled run exited ${first.code}: ${first.stderr.trim()}`);
  for (let attempt = 0; attempt < 3; attempt++) {
    const again = await run(['resync', p, r, '--json', '--no-progress'], { env });
    if (again.code === 0) {
      const claim = JSON.parse(again.stdout);
      if (!claim.identical) return fail(kind, `exit 0 without identical (seed ${SEED})`);
      if (!identical(p, r)) return fail(kind, `claimed identical, qemu-img compare differs (${dir})`);
      if (!checkImage(r)) return fail(kind, `qemu-img check fails on ${r}`);
      if (leftovers(r).length) return fail(kind, `left ${leftovers(r).join(', ')}`);
      return;
    }
    if (again.code !== 1 && again.code !== 3) return fail(kind, `resume exited ${again.code}: ${again.stderr.trim()}`);
  }
  fail(kind, 'did not complete in 3 runs after the kill');
}

/** A VM: initial replication, writes + apply, a test failover view — each killed at random, then done again. */
async function killReplication(i) {
  const dir = join(work, `v${i}`);
  rmSync(dir, { recursive: true, force: true });
  spawnSync('mkdir', ['-p', dir]);
  const home = join(dir, 'home');
  const env = { VHDSYNC_HOME: home };
  const p = join(dir, 'p.img');
  execFileSync('truncate', ['-s', '16M', p]);
  qemuIo('raw', p, `write -P 9 1M 3M`, `write -P 10 9M 2M`);
  const v = (...a) => run([...a, '--home', home], { env });
  if ((await v('enable-replication', 'vm', '--disk', p, '--replica', join(dir, 'rep'))).code !== 0) return fail('setup', 'enable-replication');
  const replica = join(dir, 'rep', 'vm', 'p.img');
  const state = async () => JSON.parse((await v('get-replication', 'vm', '--json')).stdout).State;

  // Initial replication, killed.
  count(stats.killRuns, 'kill-initial-replication');
  const init = await run(['start-initial-replication', 'vm', '--home', home], { env, killMs: Math.floor(rand() * 800) });
  if (init.killed) stats.kills++;
  for (let attempt = 0; attempt < 3 && (await state()) !== 'Replicating'; attempt++) {
    const s = await state();
    const again = s === 'ReadyForInitialReplication' || s === 'InitialReplicationInProgress' ? await v('start-initial-replication', 'vm') : await v('resume-replication', 'vm', '--resynchronize');
    if (again.code !== 0 && attempt === 2) return fail('kill-initial-replication', `state ${s}: ${again.stderr.trim()}`);
  }
  if (!identical(p, replica)) return fail('kill-initial-replication', `Replicating but the replica differs (${dir})`);

  // Writes through the tracker, then the apply, killed.
  count(stats.killRuns, 'kill-apply');
  for (let w = 0; w < 3; w++) await v('write', 'vm', '--offset', `${Math.floor(rand() * 255) * 64}K`, '--length', '64K', '--pattern', `0x${(16 + Math.floor(rand() * 200)).toString(16)}`);
  const apply = await run(['service', '--once', '--home', home], { env, killMs: Math.floor(rand() * 400) });
  if (apply.killed) stats.kills++;
  for (let attempt = 0; attempt < 4; attempt++) {
    const s = await state();
    if (s === 'WaitingForStartResynchronize' || s === 'ResynchronizeSuspended' || s === 'Resynchronizing') await v('resume-replication', 'vm', '--resynchronize');
    else await v('service', '--once');
  }
  if ((await state()) !== 'Replicating') return fail('kill-apply', `state ${await state()} after the kill (${dir})`);
  if (!identical(p, replica)) return fail('kill-apply', `Replicating, all shipped, but the replica differs (${dir})`);

  // A test failover's views, killed while built, then built again: the view equals the replica.
  count(stats.killRuns, 'kill-failover-view');
  const before = sha(replica);
  const tf = await run(['start-failover', 'vm', '--test', '--home', home], { env, killMs: Math.floor(rand() * 300) });
  if (tf.killed) stats.kills++;
  await v('stop-failover', 'vm', '--test');
  const again = await v('start-failover', 'vm', '--test', '--json');
  if (again.code !== 0) return fail('kill-failover-view', `start-failover --test after the kill: ${again.stderr.trim()}`);
  const views = JSON.stringify(JSON.parse(again.stdout)).match(/"[^"]*\.test[^"]*"/g)?.map((s) => JSON.parse(s)).filter((f) => existsSync(f)) ?? [];
  // qemu-img cannot follow a differencing VHD over a raw parent (vhdsync's own kind): compare with vhdsync.
  for (const view of views) if ((await run(['compare', view, replica])).code !== 0) fail('kill-failover-view', `view ${view} differs from the replica`);
  await v('stop-failover', 'vm', '--test');
  if (sha(replica) !== before) fail('kill-failover-view', 'the replica changed under a test failover');
}

// ---- Concurrency matrix ----

async function matrix(i) {
  const dir = join(work, `m${i}`);
  const { p, r } = makePair(dir, 32, 'raw');
  const env = { VHDSYNC_HOME: join(dir, 'home') };
  const r2 = join(dir, 'r-link.img');
  linkSync(r, r2);
  const slow = ['--link', pick(['100mbps', '300mbps']), '--no-progress', '--json'];

  // Two resyncs of one replica (two names): at most one writes; every exit 0 is a true "identical".
  count(stats.matrixRuns, 'two-resyncs');
  const [a, b] = await Promise.all([run(['resync', p, r, ...slow], { env }), run(['resync', p, r2, ...slow], { env })]);
  const codes = [a.code, b.code].sort().join(',');
  if (codes !== '0,2' && codes !== '0,0') fail('two-resyncs', `exits ${codes}: ${a.stderr.trim()} | ${b.stderr.trim()}`);
  if (codes === '0,2' && !/is in use by process \d+/.test(a.stderr + b.stderr)) fail('two-resyncs', 'the refusal does not name the holder');
  if (!identical(p, r)) fail('two-resyncs', 'a run exited 0 but the replica differs');

  // Resync + cancel at a random moment: either the cancel wins (base untouched) or the resync (identical).
  count(stats.matrixRuns, 'resync+cancel');
  qemuIo('raw', p, `write -P 77 ${Math.floor(rand() * 16)}M 4M`);
  const base = sha(r);
  const running = run(['resync', p, r, ...slow], { env });
  await new Promise((res) => setTimeout(res, Math.floor(rand() * 800)));
  const c = await run(['resync', '--cancel', r2, '--json'], { env });
  const ran = await running;
  const cancelled = c.code === 0 && JSON.parse(c.stdout).result === 'cancelled';
  if (ran.code === 0) {
    if (!identical(p, r)) fail('resync+cancel', 'the resync exited 0 but the replica differs');
    if (cancelled && JSON.parse(c.stdout).stopped) fail('resync+cancel', 'both the resync and the cancel claim success');
  } else if (ran.code === 1 && JSON.parse(ran.stdout).result === 'cancelled') {
    if (!cancelled) fail('resync+cancel', `the resync says cancelled, the canceller exited ${c.code}`);
    if (sha(r) !== base) fail('resync+cancel', 'cancelled, but the base changed');
    if (leftovers(r).length) fail('resync+cancel', `cancelled, but left ${leftovers(r).join(', ')}`);
  } else fail('resync+cancel', `resync exited ${ran.code}: ${ran.stderr.trim()}`);
  if (c.code !== 0 && c.code !== 2) fail('resync+cancel', `cancel exited ${c.code}`);

  // Two services on one home: one runs, the other is refused.
  count(stats.matrixRuns, 'two-services');
  const vdir = join(dir, 'svc');
  spawnSync('mkdir', ['-p', vdir]);
  const home = join(vdir, 'home');
  const vp = join(vdir, 'p.img');
  execFileSync('truncate', ['-s', '8M', vp]);
  const v = (...x) => run([...x, '--home', home], { env: { VHDSYNC_HOME: home } });
  await v('enable-replication', 'vm', '--disk', vp, '--replica', join(vdir, 'rep'));
  await v('start-initial-replication', 'vm');
  const [s1, s2] = await Promise.all([v('service', '--once'), v('service', '--once')]);
  const sc = [s1.code, s2.code].sort().join(',');
  if (sc !== '0,2' && sc !== '0,0') fail('two-services', `exits ${sc}`);
  if (sc === '0,2' && !/already running/.test(s1.stderr + s2.stderr)) fail('two-services', 'the refusal does not say why');

  // Resync of a replicated VM's replica disk + its apply (service) at once: one writer at a time, and
  // once both are done the replica equals the primary.
  count(stats.matrixRuns, 'resync+apply');
  const replica = join(vdir, 'rep', 'vm', 'p.img');
  await v('write', 'vm', '--offset', '1M', '--length', '256K', '--pattern', '0x5c');
  const [rs, ap] = await Promise.all([run(['resync', vp, replica, '--link', '100mbps', '--no-progress', '--wait'], { env: { VHDSYNC_HOME: home } }), v('service', '--once')]);
  if (rs.code !== 0) fail('resync+apply', `resync exited ${rs.code}: ${rs.stderr.trim()}`);
  if (ap.code !== 0) fail('resync+apply', `service exited ${ap.code}: ${ap.stderr.trim()}`);
  if (!identical(vp, replica)) fail('resync+apply', `both done, the replica differs (${vdir})`);
}

const t0 = Date.now();
let k = 0;
while (stats.kills < KILLS) {
  if (k % 4 === 3) await killReplication(k);
  else await killResync(k);
  k++;
  if (k % 25 === 0) console.log(`soak: ${stats.kills} kills in ${k} runs, ${stats.failures.length} failures (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  if (k > KILLS * 4) break;
}
for (let m = 0; m < MATRIX; m++) await matrix(m);

const summary = {
  seed: SEED,
  kills: stats.kills,
  killRuns: stats.killRuns,
  matrixRuns: stats.matrixRuns,
  failures: stats.failures.length,
  seconds: Math.round((Date.now() - t0) / 1000),
};
if (JSON_OUT) console.log(JSON.stringify({ ...summary, failureList: stats.failures }));
else {
  console.log(`soak (seed ${SEED}): ${summary.kills} SIGKILLs over ${Object.values(stats.killRuns).reduce((a, b) => a + b, 0)} runs ${JSON.stringify(stats.killRuns)}`);
  console.log(`soak: concurrency matrix ${JSON.stringify(stats.matrixRuns)}`);
  console.log(`soak: ${summary.failures} failures in ${summary.seconds} s`);
}
if (stats.failures.length === 0) rmSync(work, { recursive: true, force: true });
else console.log(`soak: the failed runs are kept under ${work}`);
process.exit(stats.failures.length ? 1 : 0);
