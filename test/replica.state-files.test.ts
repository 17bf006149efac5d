import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MiB } from '../host/units.js';
import { homeCli } from './support/cli.js';
import { rawDisk } from './support/images.js';
import { tempDir } from './support/temp-dir.js';

/**
 * Every versioned JSON state file of a VM's replication — the VM's record (vm.json), the replica's
 * state (replica.json), the failover record (failover.json), the recovery point index, an offline
 * initial replication's export (export.json) — is read by one
 * checked reader (host/state-file.ts): a damaged file is one line naming the file and what is wrong
 * (code STATE), never a TypeError. Each kind is corrupted four ways through the built CLI.
 */
let dir: string;
let cleanup: () => void;
let cli: ReturnType<typeof homeCli>;
let replicaDir: string;

beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-state-files-'));
  cli = homeCli(join(dir, 'home'));
  replicaDir = join(dir, 'replica');
  const a = await rawDisk(join(dir, 'a.img'), 4 * MiB, 5);
  cli.ok('enable-replication', 'vm', '--disk', a, '--replica', replicaDir);
  cli.ok('set-replication', 'vm', '--recovery-history', '2');
  cli.ok('start-initial-replication', 'vm');
  cli.ok('workload', 'vm', '--bytes', '64K', '--rate', 'unlimited', '--seed', '3');
  expect(cli.json('service', '--once')[0].Cycle.Result).toBe('replicated');
  cli.ok('start-failover', 'vm', '--test');
  // A second VM exported for offline initial replication: its export.json on the media.
  const b = await rawDisk(join(dir, 'b.img'), 2 * MiB, 6);
  cli.ok('enable-replication', 'off', '--disk', b, '--replica', join(dir, 'replica-off'));
  cli.ok('start-initial-replication', 'off', '--destination-path', join(dir, 'media'));
}, 120_000);
afterAll(async () => cleanup());

interface Kind {
  name: string;
  path: () => string;
  /** What the file is, as the message says it. */
  what: RegExp;
  /** A command that reads it. */
  read: string[];
  /** A field every such file has, and one it must have of a given type. */
  field: string;
  /** Reading it succeeds once it is put back (false: the command would change what the next case needs). */
  readsAgain?: boolean;
}

const kinds: Kind[] = [
  { name: 'vm.json (the VM state store)', path: () => join(dir, 'home', 'vms', 'vm', 'vm.json'), what: /the replication state of vm is damaged/, read: ['get-replication', 'vm'], field: 'nextSequence' },
  { name: 'replica.json', path: () => join(replicaDir, 'vm', 'replica.json'), what: /the replica state is damaged/, read: ['get-replication', 'vm', '--replica-path', '@replica'], field: 'lastAppliedSequence' },
  { name: 'failover.json', path: () => join(replicaDir, 'vm', 'failover.json'), what: /the failover record is damaged/, read: ['get-replication', 'vm', '--replica-path', '@replica'], field: 'sequence' },
  { name: 'export.json (offline initial replication)', path: () => join(dir, 'media', 'off', 'export.json'), what: /the offline initial replication's export is damaged/, read: ['import-initial-replication', 'off', '--path', '@media'], field: 'lastApplied', readsAgain: false },
  { name: 'the recovery point index', path: () => join(replicaDir, 'vm', 'a.img.recovery-points', 'index.json'), what: /the recovery point index is damaged/, read: ['get-recovery-points', 'vm'], field: 'points' },
];

const arg = (a: string) => (a === '@replica' ? replicaDir : a === '@media' ? join(dir, 'media') : a);

const corruptions: [string, (o: Record<string, unknown>, field: string) => string, RegExp][] = [
  ['bad JSON', () => '{"version": 1, ', /\(not valid JSON\)/],
  ['a wrong version', (o) => JSON.stringify({ ...o, version: 7 }), /\(version 7, not 1\)/],
  ['a missing field', (o, f) => JSON.stringify({ ...o, [f]: undefined }), (/\(\w+ is missing\)/)],
  ['a field of the wrong type', (o, f) => JSON.stringify({ ...o, [f]: 'twelve' }), /\(\w+ is not /],
];

describe('a record of a VM without disks is damaged, never a VM that replicates nothing', () => {
  for (const k of kinds.filter((k) => /vm\.json|export\.json/.test(k.name))) {
    it(k.name, async () => {
      const path = k.path();
      const good = await readFile(path, 'utf8');
      await writeFile(path, JSON.stringify({ ...(JSON.parse(good) as object), disks: [] }));
      try {
        const r = cli.run(...k.read.map(arg));
        expect(r.status).toBe(2);
        expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/\(disks is not a list of at least 1\)/)]);
      } finally {
        await writeFile(path, good);
      }
    });
  }
});

describe('a damaged state file is one line naming the file, never a TypeError', () => {
  for (const k of kinds) {
    for (const [how, corrupt, detail] of corruptions) {
      it(`${k.name}: ${how}`, async () => {
        const path = k.path();
        const good = await readFile(path, 'utf8');
        await writeFile(path, corrupt(JSON.parse(good) as Record<string, unknown>, k.field));
        try {
          const r = cli.run(...k.read.map(arg), '--json');
          expect(r.status).toBe(2);
          const lines = r.stderr.trim().split('\n');
          expect(lines).toHaveLength(1);
          expect(lines[0]).toContain(path);
          expect(lines[0]).toMatch(k.what);
          expect(lines[0]).toMatch(detail);
          expect(lines[0]).not.toMatch(/TypeError|Cannot read|undefined/);
          expect(JSON.parse(r.stdout).error.code).toBe('STATE');
        } finally {
          await writeFile(path, good);
        }
        // Put back, it reads again.
        if (k.readsAgain !== false) expect(cli.run(...k.read.map(arg)).status).toBe(0);
      });
    }
  }
});
