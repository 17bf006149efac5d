import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { resync, parseRate, type ResyncProgress } from '../host/index.js';
import { compareDetail } from '../host/cli/progress.js';
import { randomBytes } from './support/bytes.js';
import { cli } from './support/cli.js';
import { rawImage } from './support/images.js';
import { qemuIdentical } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

let dir: string;
let cleanup: () => void;
beforeAll(async () => ({ dir, cleanup } = tempDir()));
afterAll(() => cleanup());

describe('resync progress, as rsync users read it', () => {
  it('while data is crossing a throttled link: a non-zero sent figure, a rate, and an ETA that is never 0:00', async () => {
    const changes: [number, Uint8Array][] = [[2 * MiB, randomBytes(MiB, 1)], [20 * MiB, randomBytes(MiB, 2)], [30 * MiB, randomBytes(MiB, 3)]];
    const p = await rawImage(join(dir, 'p.img'), 32 * MiB, changes);
    const r = await rawImage(join(dir, 'r.img'), 32 * MiB);
    const seen: ResyncProgress[] = [];
    // 3 MiB at 2 MB/s: about 1.6 s of sending, reported every 250 ms and at each region's end.
    const res = await resync({ primary: p, replica: r, link: { rate: 2e6, latencyMs: 0 }, onProgress: (x) => seen.push({ ...x }) });
    expect(res).toMatchObject({ result: 'completed', bytesSent: 3 * MiB });
    expect(qemuIdentical(p, r)).toBe(true);

    const sending = seen.filter((x) => x.phase === 'comparing' && (x.sendSeconds ?? 0) > 0);
    expect(sending.length).toBeGreaterThan(0);
    for (const x of sending) {
      expect(x.bytesSent).toBeGreaterThan(0);
      expect(x.etaSeconds).toBeGreaterThan(0);
      expect(x.sendRate).toBe(2e6);
      const line = compareDetail(x);
      expect(line).not.toMatch(/ETA 0:00|ETA --:--/);
      expect(line).not.toMatch(/(^|\s)0 B sent/);
      expect(line).toMatch(/ MiB sent at 1\.91 MiB\/s · ETA \d+:\d\d$/);
    }
    // Progress comes between region ends too (3 regions, more reports than that).
    expect(seen.filter((x) => x.phase === 'comparing').length).toBeGreaterThan(3);
    // The ETA counts what is still to cross the link: at least its share of the data handed over.
    for (const x of sending) expect(x.etaSeconds!).toBeGreaterThanOrEqual(x.sendSeconds!);
  });

  it('an ETA of a second or less is shown as 0:01 while data is still on its way', () => {
    const base: ResyncProgress = { phase: 'comparing', virtualSize: 64 * MiB, bytesCompared: 64 * MiB, bytesSent: 5 * MiB, wireBytes: 0, seconds: 3, sendRate: 187_500 };
    expect(compareDetail({ ...base, sendSeconds: 0.2, etaSeconds: 0.2 })).toBe('compared · 5 MiB sent at 183 KiB/s · ETA 0:01');
    expect(compareDetail({ ...base, sendSeconds: 0, etaSeconds: 0 })).toBe('compared · 5 MiB sent at 183 KiB/s · ETA 0:00');
    expect(compareDetail({ ...base, bytesSent: 0, sendRate: undefined, sendSeconds: 0, etaSeconds: 75 })).toBe('compared · 0 B sent · ETA 1:15');
  });
});

describe('link rates without a unit', () => {
  it('--link 1.5 is refused with exit 2 and the hint 1.5mbps; nothing is resynced', async () => {
    const p = await rawImage(join(dir, 'l-p.img'), 4 * MiB, [[0, randomBytes(4096, 9)]]);
    const r = await rawImage(join(dir, 'l-r.img'), 4 * MiB);
    const out = cli(['resync', p, r, '--link', '1.5'], { home: join(dir, 'home') });
    expect(out.status).toBe(2);
    expect(out.stderr).toMatch(/^vhdsync: --link: '1\.5' has no unit.*did you mean 1\.5mbps\?/);
    expect(out.stderr.trim().split('\n')).toHaveLength(1);
    expect(qemuIdentical(p, r)).toBe(false);
  });

  it('a plain number below 8 kbps is refused as a likely mistake; with a unit any rate goes', () => {
    expect(() => parseRate('1.5')).toThrow(/did you mean 1\.5mbps\?/);
    expect(() => parseRate('999', '--bandwidth')).toThrow(/^--bandwidth: '999' has no unit/);
    expect(parseRate('1000')).toBe(1000);
    expect(parseRate('125000')).toBe(125000);
    expect(parseRate('1.5mbps')).toBe(187_500);
    expect(parseRate('4kbps')).toBe(500);
    expect(parseRate('500b/s')).toBe(500);
  });
});
