// Same-run peers on the same image pairs: rsync (Debian's rsync, `--inplace --no-whole-file`, as in
// bench/resync.mjs and reference/sync-peers.md §4), optionally with -z, and a plain copy. Plus the
// uncached read rate of this machine's disk, which bounds any full-size scan.
import { spawnSync } from 'node:child_process';
import { copyFileSync, statSync, unlinkSync } from 'node:fs';

const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;

export function rsyncVersion() {
  const r = spawnSync('rsync', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.split('\n')[0].trim() : undefined;
}

/**
 * rsync `src` onto `dst` in place, delta algorithm forced (`--no-whole-file`; a local rsync would
 * otherwise copy whole files) and the quick check off (`-I`). Bytes come from `--stats`: "Total bytes
 * sent" (sender → receiver: literal data and tokens) and "Total bytes received" (the block sums).
 */
export function rsync(src, dst, { compress = false } = {}) {
  const args = ['--inplace', '--no-whole-file', '-I', '--stats', ...(compress ? ['-z'] : []), src, dst];
  const t0 = process.hrtime.bigint();
  const r = spawnSync('rsync', args, { encoding: 'utf8', maxBuffer: 1 << 20 });
  const t = seconds(t0);
  if (r.status !== 0) throw new Error(`rsync ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  const num = (label) => {
    const m = new RegExp(`${label}: ([\\d,]+)`).exec(r.stdout);
    if (!m) throw new Error(`rsync --stats has no "${label}" line:\n${r.stdout}`);
    return Number(m[1].replace(/,/g, ''));
  };
  return {
    command: `rsync ${args.slice(0, -2).join(' ')}`,
    seconds: t,
    sent: num('Total bytes sent'),
    received: num('Total bytes received'),
    literal: num('Literal data'),
    matched: num('Matched data'),
    fileBytes: statSync(src).size,
  };
}

/** A plain copy of the image file (what a first-time transfer without any compare costs). */
export function plainCopy(src, dst) {
  const t0 = process.hrtime.bigint();
  copyFileSync(src, dst);
  const t = seconds(t0);
  const bytes = statSync(dst).size;
  unlinkSync(dst);
  return { seconds: t, sent: bytes, received: 0, fileBytes: bytes };
}

/** `cmp -s`: true when two files are byte-identical. */
export function sameFile(a, b) {
  return spawnSync('cmp', ['-s', a, b]).status === 0;
}

/**
 * Uncached sequential read rate of the disk holding `path` (dd with O_DIRECT, 4 MiB blocks, up to
 * 512 MiB), in bytes/s; undefined where O_DIRECT is not supported (tmpfs).
 */
export function uncachedReadRate(path) {
  const size = statSync(path).size;
  const count = Math.max(1, Math.min(128, Math.floor(size / (4 << 20))));
  const t0 = process.hrtime.bigint();
  const r = spawnSync('dd', [`if=${path}`, 'of=/dev/null', 'bs=4M', `count=${count}`, 'iflag=direct'], { encoding: 'utf8' });
  const t = seconds(t0);
  if (r.status !== 0) return undefined;
  return { bytesPerSecond: (count * (4 << 20)) / t, bytes: count * (4 << 20), method: `dd bs=4M count=${count} iflag=direct` };
}
