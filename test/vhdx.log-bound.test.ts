/**
 * Issue 13 item 10: a VHDX log entry with a valid CRC can still describe absurd writes. A replay is
 * bounded by the image's structures (the largest file its regions, BAT and blocks can make), pure
 * (checkReplayBound on a plan) and on a real image crafted from a qemu-made one.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { open, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { openDisk } from '../host/disk/index.js';
import { HEADER_OFFSETS, HEADER_SIZE, buildHeader, pickHeader } from '../host/disk/vhdx/header.js';
import { randomGuid } from '../host/disk/vhdx/le.js';
import { LOG_SECTOR, buildEntry, checkReplayBound, parseEntry, replayPlan, type LogWrite } from '../host/disk/vhdx/log.js';
import { sha256File } from './support/digest.js';
import { tempDir } from './support/temp-dir.js';
import { MiB } from '../host/units.js';

const TiB = 1024 * 1024 * MiB;

describe('a VHDX log replay is bounded by the image', () => {
  const guid = randomGuid();
  const plan = (writes: LogWrite[], lastFileOffset: number) => {
    const e = parseEntry(buildEntry({ sequenceNumber: 1n, logGuid: guid, tail: 0, flushedFileOffset: 4 * MiB, lastFileOffset, writes }), guid, 0)!;
    return replayPlan([e], 8 * MiB, { offset: MiB, length: MiB }, 'x.vhdx');
  };

  it.each([
    ['a 1 TiB zero descriptor (LastFileOffset 2 TiB)', [{ kind: 'zero', offset: 4 * MiB, length: TiB }] as LogWrite[], 2 * TiB, /grow the file to 2 TiB/],
    ['LastFileOffset 2 TiB', [{ kind: 'data', offset: 4 * MiB, data: new Uint8Array(LOG_SECTOR) }] as LogWrite[], 2 * TiB, /grow the file to 2 TiB/],
  ])('refuses %s in one line (BAD_SIZE)', (_name, writes, last, message) => {
    const p = plan(writes, last);
    let err: unknown;
    try {
      checkReplayBound(p, 72 * MiB, 'x.vhdx');
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'BAD_SIZE' });
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toMatch(/^x\.vhdx: .*past the 72 MiB its structures can hold; the log is corrupt$/);
  });

  it('accepts a replay inside the structures', () => {
    expect(() => checkReplayBound(plan([{ kind: 'zero', offset: 4 * MiB, length: 2 * MiB }], 8 * MiB), 72 * MiB, 'x.vhdx')).not.toThrow();
  });

  it('a crafted entry (valid CRC, LastFileOffset 2 TiB) in a qemu-made image: opening it is refused, the file untouched', async () => {
    const { dir, cleanup } = tempDir('vhdsync-logbound-');
    try {
      const path = join(dir, 'crafted.vhdx');
      execFileSync('qemu-img', ['create', '-q', '-f', 'vhdx', path, '64M']);
      const fh = await open(path, 'r+');
      const h = [new Uint8Array(HEADER_SIZE), new Uint8Array(HEADER_SIZE)];
      await fh.read(h[0], 0, HEADER_SIZE, HEADER_OFFSETS[0]);
      await fh.read(h[1], 0, HEADER_SIZE, HEADER_OFFSETS[1]);
      const cur = pickHeader(h[0], h[1], path);
      const size = (await stat(path)).size;
      // One entry at the start of the log, its own tail; a page far past anything the image can hold.
      const entry = buildEntry({
        sequenceNumber: 1n, logGuid: guid, tail: 0, flushedFileOffset: size, lastFileOffset: 2 * TiB,
        writes: [{ kind: 'data', offset: 2 * TiB - LOG_SECTOR, data: new Uint8Array(LOG_SECTOR).fill(7) }],
      });
      await fh.write(entry, 0, entry.byteLength, cur.header.logOffset);
      const next = buildHeader({ ...cur.header, logGuid: guid, sequenceNumber: cur.header.sequenceNumber + 1n });
      await fh.write(next, 0, HEADER_SIZE, HEADER_OFFSETS[cur.index === 0 ? 1 : 0]);
      await fh.close();
      const before = sha256File(path);

      for (const readOnly of [false, true]) {
        const opened = openDisk(path, { readOnly });
        await expect(opened).rejects.toMatchObject({ code: 'BAD_SIZE' });
        await expect(opened).rejects.toThrow(/the VHDX log would grow the file to 2 TiB, past the .* its structures can hold; the log is corrupt/);
      }
      expect((await stat(path)).size).toBe(size);
      expect(sha256File(path)).toBe(before);
    } finally {
      await cleanup();
    }
  });
});
