/**
 * Machine-readable output, rule by rule, through the built CLI: a dry run writes no events; --json
 * errors are JSON for usage errors too; the replication verbs speak PowerShell's PascalCase (events and
 * the service included); a pipe closed early ends quietly; the service's ticks leak no abort listeners.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { getEventListeners } from 'node:events';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ReplicationService } from '../host/service/service.js';
import { MiB } from '../host/units.js';
import { cli, homeCli } from './support/cli.js';
import { rawDisk } from './support/images.js';
import { qemuImg } from './support/oracles.js';
import { CLI } from './support/paths.js';
import { replicatedVm } from './support/replicated-vm.js';
import { tempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir('vhdsync-output-')));
afterAll(() => cleanup());

/** Every object key in a JSON value, with its path. */
function keys(v: unknown, path = '$'): string[] {
  if (Array.isArray(v)) return v.flatMap((x, i) => keys(x, `${path}[${i}]`));
  if (v === null || typeof v !== 'object') return [];
  return Object.entries(v).flatMap(([k, x]) => [`${path}.${k}`, ...keys(x, `${path}.${k}`)]);
}
const notPascal = (v: unknown) => keys(v).filter((p) => !/\.[A-Z][^.[]*$/.test(p));

describe('--dry-run', () => {
  it('resync --dry-run writes no event to the event log; the events it reports are marked dryRun', async () => {
    const home = join(dir, 'dry-home');
    qemuImg('create', '-q', '-f', 'raw', join(dir, 'p.img'), '4M');
    qemuImg('create', '-q', '-f', 'raw', join(dir, 'r.img'), '4M');
    spawnSync('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 64k', join(dir, 'p.img')]);
    const r = cli(['resync', '--dry-run', '--json', join(dir, 'p.img'), join(dir, 'r.img')], { home: home });
    const out = JSON.parse(r.stdout);
    expect(out.dryRun).toBe(true);
    expect(out.events.map((e: { id: number }) => e.id)).toEqual([29242, 29244]);
    expect(out.events.every((e: { dryRun?: boolean }) => e.dryRun === true)).toBe(true);
    expect(existsSync(join(home, 'events.jsonl'))).toBe(false);
    expect(existsSync(join(home, 'counters.json'))).toBe(false);
    // The real run writes both events.
    cli(['resync', join(dir, 'p.img'), join(dir, 'r.img')], { home: home });
    expect(existsSync(join(home, 'events.jsonl'))).toBe(true);
  });
});

describe('--json errors', () => {
  for (const [args, message] of [
    [['info', '--json'], "missing required argument 'image'"],
    [['info', '--bogus', 'x', '--json'], "unknown option '--bogus'"],
    [['nosuch', '--json'], "unknown command 'nosuch'"],
    [['compare', '--json', 'a'], "missing required argument 'b'"],
    [['events', '--id', 'x', '--json', '--home', '/nonexistent'], "--id: 'x' is not an event id"],
  ] as const) {
    it(`vhdsync ${args.join(' ')}: one JSON object with code USAGE on stdout, the line on stderr, exit 2`, () => {
      const r = cli([...args], { home: join(dir, 'home') });
      expect(r.status).toBe(2);
      expect(JSON.parse(r.stdout)).toEqual({ error: { code: 'USAGE', message } });
      expect(r.stderr).toBe(`vhdsync: ${message}\n`);
    });
  }

  it('without --json a usage error stays commander text on stderr, nothing on stdout', () => {
    const r = cli(['info', '--bogus', 'x'], { home: join(dir, 'home') });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/unknown option '--bogus'/);
  });
});

describe('one key style per family: the replication verbs are PascalCase, as Hyper-V', () => {
  it('every replication verb, events --json and service --once --json included', async () => {
    const d = join(dir, 'ps');
    await mkdir(d);
    const disk = await rawDisk(join(d, 'p.img'), 4 * MiB);
    const s = homeCli(join(d, 'home'));
    const outputs: Record<string, unknown> = {};
    const j = (...args: string[]) => (outputs[args.join(' ')] = s.json(...args));
    j('enable-replication', 'vm', '--disk', disk, '--replica', join(d, 'replica'));
    j('start-initial-replication', 'vm');
    j('write', 'vm', '--offset', '0', '--pattern', '0xab', '--length', '4096');
    j('workload', 'vm', '--bytes', '64K', '--rate', 'unlimited', '--duration', '2s');
    j('service', '--once');
    j('get-replication');
    j('get-replication', 'vm');
    j('measure-replication', 'vm');
    j('get-recovery-points', 'vm');
    j('set-replication', 'vm', '--frequency', '300');
    j('suspend-replication', 'vm');
    j('resume-replication', 'vm');
    j('start-failover', 'vm', '--test');
    j('stop-failover', 'vm', '--test');
    j('events');
    j('events', 'vm', '--id', '90001');
    j('remove-replication', 'vm');
    for (const [cmd, out] of Object.entries(outputs)) expect([cmd, notPascal(out)]).toEqual([cmd, []]);
    const events = outputs['events'] as Record<string, unknown>[];
    expect(events.length).toBeGreaterThan(0);
    expect(Object.keys(events[0]).slice(0, 5)).toEqual(['TimeCreated', 'Id', 'LevelDisplayName', 'Message', 'VMName']);
    expect((outputs['service --once'] as { Cycle: { Result: string } }[])[0].Cycle.Result).toBe('replicated');
  });
});

describe('pipes', () => {
  it('`vhdsync events --json | head -c 100` ends quietly: exit 0, nothing on stderr', async () => {
    const home = join(dir, 'pipe-home');
    await mkdir(home, { recursive: true });
    const line = JSON.stringify({ id: 90001, level: 'Information', time: '2026-01-01T00:00:00.000Z', message: 'x'.repeat(200), vm: 'vm', from: 'A', to: 'B' });
    await writeFile(join(home, 'events.jsonl'), `${line}\n`.repeat(5000)); // ~1.5 MB of output, far past a pipe's buffer
    const r = spawnSync('bash', ['-c', `"${process.execPath}" "${CLI}" events --json --home "${home}" | head -c 100 >/dev/null; echo "status=\${PIPESTATUS[0]}" >&2`], { encoding: 'utf8' });
    expect(r.stderr).toBe('status=0\n');
  });
});

describe('service', () => {
  it('a long-running service adds one abort listener per tick and removes it (no MaxListenersExceededWarning)', async () => {
    const d = join(dir, 'svc');
    await mkdir(d);
    const rep = await replicatedVm(d, 'vm', [await rawDisk(join(d, 'p.img'), 1 * MiB)]);
    const svc = new ReplicationService(rep, { tickMs: 1 });
    let passes = 0;
    const pass = svc.pass.bind(svc);
    svc.pass = async () => (passes++, pass());
    const ac = new AbortController();
    const running = svc.run(ac.signal);
    while (passes < 25) await new Promise((r) => setTimeout(r, 5));
    expect(getEventListeners(ac.signal, 'abort').length).toBeLessThanOrEqual(1);
    ac.abort();
    await running;
  });

  it('the CLI service over many ticks prints no MaxListenersExceededWarning', async () => {
    const d = join(dir, 'svc-cli');
    await mkdir(d);
    const s = homeCli(join(d, 'home'));
    s.ok('enable-replication', 'vm', '--disk', await rawDisk(join(d, 'p.img'), 1 * MiB), '--replica', join(d, 'replica'));
    s.ok('start-initial-replication', 'vm');
    // 40 passes at least (the warning came at the 11th): count them by the pass log of --tick 1ms.
    const r = spawnSync('bash', ['-c', `timeout -s INT 6 "${process.execPath}" "${CLI}" service --tick 1ms --home "${join(d, 'home')}"; true`], { encoding: 'utf8' });
    expect(r.stderr).toMatch(/replication service stopped/);
    expect(r.stderr).not.toMatch(/MaxListeners|Warning/);
  });
});
