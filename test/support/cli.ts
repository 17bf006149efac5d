/**
 * The built CLI as a child process. Every run names its home (VHDSYNC_HOME, and --home for the
 * replication verbs through `homeCli`): a test can not forget it, so no test reads or writes the real
 * ~/.vhdsync (home-guard.ts checks that after the whole run).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CLI } from './paths.js';

/** Where one CLI run lives: its VHDSYNC_HOME, more environment, a working directory. */
export interface CliAt {
  home: string;
  env?: Record<string, string>;
  cwd?: string;
}

export interface CliResult {
  status: number | null;
  /** The signal that ended it: SIGTERM when it outlived `timeout` (a hang). */
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment of a CLI child: this process's, `at.env`, and the home last (it always wins). */
export function cliEnv(at: CliAt): NodeJS.ProcessEnv {
  return { ...process.env, ...at.env, VHDSYNC_HOME: at.home };
}

/** Run the built CLI to its end (or `timeout` ms); never throws, returns status and output. */
export function cli(args: string[], at: CliAt, timeout?: number): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: cliEnv(at), cwd: at.cwd, timeout });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Run the built CLI; it must exit 0, else this throws with its stderr. */
export function cliOk(args: string[], at: CliAt): CliResult {
  const r = cli(args, at);
  if (r.status !== 0) throw new Error(`vhdsync ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r;
}

/**
 * The CLI bound to a replication home: `run` (any exit), `ok` (must exit 0, else throws with its
 * stderr), `json` (ok, with --json, parsed), `background` (a child that goes on while the test acts).
 */
export function homeCli(home: string) {
  const run = (...args: string[]) => cli([...args, '--home', home], { home });
  const ok = (...args: string[]) => {
    const r = run(...args);
    if (r.status !== 0) throw new Error(`vhdsync ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
    return r;
  };
  const json = (...args: string[]) => JSON.parse(ok(...args, '--json').stdout);
  const inBackground = (...args: string[]) => background([...args, '--home', home], { home });
  return { run, ok, json, background: inBackground };
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Background {
  child: ChildProcess;
  /** Resolves on 'close' (not 'exit': only then has everything the child printed been read). */
  exited: Promise<Exit>;
  output(): { stdout: string; stderr: string };
  /** Resolves once `check` holds for the output so far; rejects if the child ends first. */
  ready(check: (out: { stdout: string; stderr: string }) => boolean): Promise<void>;
}

const children = new Set<ChildProcess>();

/** The CLI in the background (a server, a VM, a slow resync); `killBackground` in afterAll ends what a failed test left. */
export function background(args: string[], at: CliAt): Background {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: cliEnv(at), cwd: at.cwd });
  children.add(child);
  let stdout = '';
  let stderr = '';
  const waiting = new Set<() => void>();
  const changed = () => waiting.forEach((w) => w());
  child.stdout!.on('data', (x) => {
    stdout += x;
    changed();
  });
  child.stderr!.on('data', (x) => {
    stderr += x;
    changed();
  });
  const exited = new Promise<Exit>((res) => child.on('close', (code, signal) => res({ code, signal, stdout, stderr })));
  const output = () => ({ stdout, stderr });
  const ready = (check: (out: { stdout: string; stderr: string }) => boolean) =>
    new Promise<void>((res, rej) => {
      const w = () => {
        if (!check(output())) return;
        waiting.delete(w);
        res();
      };
      waiting.add(w);
      w();
      void exited.then((r) => {
        if (!waiting.has(w)) return;
        waiting.delete(w);
        rej(new Error(`vhdsync ${args.join(' ')} exited ${r.code ?? r.signal}: ${r.stderr}`));
      });
    });
  return { child, exited, output, ready };
}

/** Stop a child process (SIGKILL by default: a crash) and wait until it is gone. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
}

/** Every background CLI a test started and left running (a failed test) is killed: call in afterAll. */
export function killBackground(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
}

/** `vhdsync run` in the background; resolves once it serves, with its output and a way to stop or kill it. */
export async function startRun(home: string, args: string[]): Promise<Background> {
  const run = background(['run', ...args, '--home', home], { home });
  // Both streams: the exports (stdout) and "is running" (stderr) may arrive in either order.
  await run.ready((o) => /is running \(process/.test(o.stderr) && /export |"Exports"/.test(o.stdout));
  return run;
}

let sites = 0;

/** A fresh site under `dir`: a folder for its disks, its home, its replica directory, and a `vhdsync` bound to that home. */
export async function newSite(dir: string) {
  const d = join(dir, `s${++sites}`);
  await mkdir(d);
  const home = join(d, 'home');
  return { d, home, replica: join(d, 'replica'), ...homeCli(home) };
}
export type Site = Awaited<ReturnType<typeof newSite>>;
