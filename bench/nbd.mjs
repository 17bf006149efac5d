// npm run bench:nbd [-- --size 1G --count 4000 --depth 16 --runs 3 --json out.json]
//
// Throughput of a running VM's disk served by `vhdsync run` (every write through the tracker: in the
// tracking log before it is acknowledged; log, then disk, made durable by the client's FLUSH or FUA, as
// NBD asks, not fsynced per write) against `qemu-nbd` exporting the same raw
// image with no tracking, measured in the same run with the same client: `qemu-img bench` over a Unix
// socket, 64 KiB and 4 KiB, writes and reads, queue depth --depth. Each figure is the best of --runs;
// beside it, each server's CPU time per request (the least of --runs), which other load moves less.
// Targets (issue 15): tracked writes >= 0.5x qemu-nbd at 64 KiB, reads >= 0.8x.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(fileURLToPath(import.meta.url), '..', '..');
const BIN = join(ROOT, 'dist', 'cli', 'bin.js');
const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const sizeText = arg('--size', '1G');
const size = Number.parseInt(sizeText, 10) * { K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[sizeText.slice(-1).toUpperCase()];
const count = Number(arg('--count', '4000'));
const depth = Number(arg('--depth', '16'));
const runs = Number(arg('--runs', '3'));
const jsonOut = arg('--json');

if (!existsSync(BIN)) {
  console.error(`bench:nbd: ${BIN} is missing; run npm run build first`);
  process.exit(1);
}
for (const tool of ['qemu-img', 'qemu-nbd']) {
  if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).status !== 0) {
    console.error(`bench:nbd: ${tool} is not installed (Debian: apt-get install qemu-utils)`);
    process.exit(1);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'vhdsync-bench-nbd-'));
const cleanup = () => rmSync(dir, { recursive: true, force: true });
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});
const home = join(dir, 'home');
const env = { ...process.env, VHDSYNC_HOME: home };
const vhdsync = (...a) => execFileSync(process.execPath, [BIN, ...a], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Start a server; resolves when its socket accepts. */
async function server(cmd, argv, sock, ready) {
  const child = spawn(cmd, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (x) => (err += x));
  for (let i = 0; i < 1000 && !ready(err); i++) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited: ${err}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return { pid: child.pid, stop: () => new Promise((r) => (child.exitCode !== null ? r() : (child.once('close', r), child.kill('SIGTERM')))) };
}

/** CPU seconds (user + system, all threads) a process has used: /proc/PID/stat, in USER_HZ (100 on Linux). */
function cpuSeconds(pid) {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/**
 * qemu-img bench over the export served by process `pid`: MiB/s (best of `runs`) and the server's CPU
 * microseconds per request (least of `runs`: under other load, the figure that moves least); `after`
 * runs after each write run.
 */
function bench(pid, uri, bytes, write, after = () => undefined) {
  let best = 0;
  let cpu = Infinity;
  // 4 KiB requests: 4x as many (a run long enough to measure), 64 KiB: --count.
  const n = bytes < 65536 ? count * 4 : count;
  for (let i = 0; i < runs; i++) {
    const a = ['bench', '-f', 'raw', '-c', String(n), '-d', String(depth), '-s', String(bytes), '-S', String(bytes)];
    if (write) a.push('-w', '--pattern', '0x5a');
    a.push(uri);
    const before = cpuSeconds(pid);
    const out = execFileSync('qemu-img', a, { encoding: 'utf8' });
    cpu = Math.min(cpu, ((cpuSeconds(pid) - before) * 1e6) / n);
    const secs = Number(/Run completed in ([\d.]+) seconds/.exec(out)?.[1]);
    best = Math.max(best, (n * bytes) / secs / 1024 ** 2);
    if (write) after();
  }
  return { mib: best, cpu };
}

const CASES = [
  ['write 64 KiB', 65536, true],
  ['read 64 KiB', 65536, false],
  ['write 4 KiB', 4096, true],
  ['read 4 KiB', 4096, false],
];

try {
  const img = join(dir, 'disk.img');
  writeFileSync(img, new Uint8Array(0));
  execFileSync('truncate', ['-s', String(size), img]);
  // Fill it once, so that reads read data and neither server finds holes.
  execFileSync('qemu-io', ['-f', 'raw', '-c', `write -P 0x33 0 ${size}`, img], { stdio: 'ignore' });
  vhdsync('enable-replication', 'vm', '--disk', img, '--replica', join(dir, 'replica'));
  vhdsync('start-initial-replication', 'vm');
  const results = {};
  // Several rounds, alternating the servers, so that the page cache and the machine's load hit both alike.
  const sockV = join(dir, 'v.sock');
  const sockQ = join(dir, 'q.sock');
  for (const [name] of CASES) results[name] = { vhdsync: 0, qemuNbd: 0, vhdsyncCpuUs: Infinity, qemuNbdCpuUs: Infinity };
  const keep = (r, who, m) => {
    r[who] = Math.max(r[who], m.mib);
    r[`${who}CpuUs`] = Math.min(r[`${who}CpuUs`], m.cpu);
  };
  const load = [loadavg()[0]];
  for (let round = 0; round < 2; round++) {
    const v = await server(process.execPath, [BIN, 'run', 'vm', '--socket', sockV], sockV, (e) => /is running/.test(e));
    for (const [name, bytes, write] of CASES) {
      // Ship the logs after each write run (the service replicates while the VM runs), so that the
      // 50 % rule never stops tracking: every write measured here is tracked.
      keep(results[name], 'vhdsync', bench(v.pid, `nbd+unix:///0?socket=${sockV}`, bytes, write, () => vhdsync('service', '--once')));
    }
    await v.stop();
    const state = JSON.parse(vhdsync('get-replication', 'vm', '--json')).State;
    if (state !== 'Replicating') throw new Error(`the VM is ${state} (${JSON.parse(vhdsync('get-replication', 'vm', '--json')).ResynchronizationEvidence}): writes were not all tracked; use a larger --size or a smaller --count`);
    const q = await server('qemu-nbd', ['-f', 'raw', '-x', '0', '-k', sockQ, '--persistent', '--shared', '8', img], sockQ, () => existsSync(sockQ));
    for (const [name, bytes, write] of CASES) keep(results[name], 'qemuNbd', bench(q.pid, `nbd+unix:///0?socket=${sockQ}`, bytes, write));
    await q.stop();
    if (round === 0) {
      // qemu-nbd wrote the VM's disk while the VM was off: vhdsync sees it (ModifiedWhileOff) and a resync
      // (same bytes, nothing to send) brings replication back before the next tracked round.
      vhdsync('service', '--once');
      vhdsync('resume-replication', 'vm', '--resynchronize');
    }
  }
  load.push(loadavg()[0]);
  const targets = { 'write 64 KiB': 0.5, 'read 64 KiB': 0.8 };
  console.log(`qemu-img bench, ${count} requests of 64 KiB / ${count * 4} of 4 KiB, depth ${depth}, ${sizeText} raw image, best of ${runs * 2} runs each`);
  console.log(`node ${process.version}, load average ${load.map((l) => l.toFixed(1)).join(' -> ')} (1 min, at start and end)`);
  console.log('case          vhdsync run   qemu-nbd    ratio  target          server CPU per request: vhdsync  qemu-nbd');
  for (const [name] of CASES) {
    const r = results[name];
    r.ratio = r.vhdsync / r.qemuNbd;
    const t = targets[name];
    const verdict = t ? `>= ${t}x ${r.ratio >= t ? 'met' : 'MISSED'}` : '';
    console.log(
      `${name.padEnd(13)} ${r.vhdsync.toFixed(0).padStart(7)} MiB/s ${r.qemuNbd.toFixed(0).padStart(6)} MiB/s ${r.ratio.toFixed(2).padStart(6)}x  ${verdict.padEnd(15)} ${r.vhdsyncCpuUs.toFixed(0).padStart(24)} us ${r.qemuNbdCpuUs.toFixed(0).padStart(6)} us`,
    );
  }
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ bench: 'nbd', node: process.version, loadAverage: load, size, count, depth, runs, results, targets }, null, 2) + '\n');
} finally {
  cleanup();
}
