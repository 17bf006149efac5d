/**
 * The README's shell examples run as written: each ```sh block is one bash script (`set -e -o
 * pipefail`, so every line must succeed), run in a fresh folder with its own VHDSYNC_HOME and HOME and
 * `vhdsync` on the PATH as the built bin. A block that cannot run here (a registry install, a server that
 * runs until stopped, two sites) carries `<!-- not run: why -->` on the line before it; such blocks are
 * listed as skipped with their reason, never dropped silently.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ROOT } from './support/paths.js';
import { tempDir } from './support/temp-dir.js';

interface Block {
  /** 1-based line of the opening fence. */
  line: number;
  heading: string;
  code: string;
  notRun?: string;
}

const SHELL = new Set(['sh', 'bash', 'shell']);
// \x3c is '<': an HTML comment opener in module source upsets the transform.
const NOT_RUN = /^\x3c!-- not run: (.+) -->$/;

/** Every fenced block in a shell language, with the heading it sits under and its marker, if any. */
export function shellBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  let heading = '';
  for (let i = 0; i < lines.length; i++) {
    if (/^#+ /.test(lines[i])) heading = lines[i].replace(/^#+ /, '');
    const open = /^```(\S*)/.exec(lines[i]);
    if (!open) continue;
    let end = i + 1;
    while (end < lines.length && !/^```\s*$/.test(lines[end])) end++;
    if (SHELL.has(open[1])) {
      let j = i - 1;
      while (j >= 0 && lines[j].trim() === '') j--;
      const marker = NOT_RUN.exec(lines[j] ?? '');
      blocks.push({ line: i + 1, heading, code: lines.slice(i + 1, end).join('\n'), notRun: marker?.[1] });
    }
    i = end;
  }
  return blocks;
}

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const blocks = shellBlocks(readme);
let dir: string;
let cleanup: () => void;
let bin: string;

beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-readme-'));
  bin = join(dir, 'bin');
  mkdirSync(bin);
  symlinkSync(CLI, join(bin, 'vhdsync'));
});
afterAll(async () => {
  await cleanup?.();
});

describe('README.md shell examples', () => {
  it('every shell block either runs or says why not, and a not-run marker always sits right above a block', () => {
    const markers = readme.split('\n').flatMap((l, i) => (/\x3c!-- not run/.test(l) && !/`\x3c!-- not run/.test(l) ? [i + 1] : []));
    const marked = blocks.filter((b) => b.notRun !== undefined);
    expect(markers.length).toBe(marked.length); // a marker that is malformed, or not just above a block, is caught here
    for (const b of marked) expect(b.notRun!.length, `line ${b.line}`).toBeGreaterThan(10);
    // The examples a reader runs first are runnable: images and resync, certificates, replication.
    expect(blocks.filter((b) => !b.notRun).map((b) => b.heading)).toEqual(['Using it', 'Network (TLS)', "Replication (Hyper-V Replica's cmdlets)", 'Coming from Hyper-V']);
  });

  for (const b of blocks) {
    const title = `line ${b.line} (${b.heading}): ${b.code.split('\n')[0].replace(/\s+#.*$/, '').slice(0, 60)}`;
    if (b.notRun) {
      it.skip(`${title} — not run: ${b.notRun}`, () => {});
      continue;
    }
    it(`${title} runs as written and exits 0`, () => {
      const cwd = join(dir, `block-${b.line}`);
      mkdirSync(join(cwd, '.home'), { recursive: true });
      const script = join(dir, `block-${b.line}.sh`);
      writeFileSync(script, `set -e -o pipefail -x\n${b.code}\n`);
      const started = performance.now();
      const r = spawnSync('bash', [script], {
        cwd,
        encoding: 'utf8',
        timeout: 60_000,
        env: {
          ...process.env,
          PATH: `${bin}:${process.env.PATH}`,
          HOME: join(cwd, '.home'),
          VHDSYNC_HOME: join(cwd, '.home', '.vhdsync'),
        },
      });
      const seconds = (performance.now() - started) / 1000;
      console.log(`README line ${b.line}: exit ${r.status} in ${seconds.toFixed(1)} s`);
      // On failure: the last commands bash traced (set -x) and what they printed.
      expect(r.status, `exit ${r.status}${r.signal ? ` (${r.signal})` : ''}\n${r.stderr.split('\n').slice(-25).join('\n')}`).toBe(0);
    }, 90_000);
  }
});
