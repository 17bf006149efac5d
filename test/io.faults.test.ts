/**
 * I/O faults injected under the tracking log and the disk layer with memfs: the project's own write
 * loops and error mapping run over an in-memory file system whose handles fail on demand — a full
 * volume (ENOSPC), a broken one (EIO), short writes, a write of nothing.
 */
import type { FileHandle } from 'node:fs/promises';
import { Volume } from 'memfs';
import { describe, expect, it } from 'vitest';
import { DiskFile } from '../host/disk/file-io.js';
import { RawDisk } from '../host/disk/raw.js';
import { VhdsyncError } from '../host/errors.js';
import { appendRecords, buildHeader, encodeRecords, HEADER_BYTES, newHeader, parseHeader } from '../host/tracking/log.js';
import { logFsOver, type LogHandle } from '../host/tracking/log-fs.js';

type Fault = 'ENOSPC' | 'EIO' | 'short' | 'nothing' | 'sync-EIO' | 'read-EIO' | undefined;

/** memfs's FileHandle with one fault: every write (or read, or sync) fails or falls short. */
function faulty(vol: InstanceType<typeof Volume>, fault: () => Fault) {
  return async (path: string, flags: string) => {
    const fh = await vol.promises.open(path, flags);
    const err = (code: string) => Object.assign(new Error(`${code}: injected`), { code });
    return new Proxy(fh, {
      get(target, prop, receiver) {
        const f = fault();
        if (prop === 'write') {
          if (f === 'ENOSPC' || f === 'EIO') return async () => Promise.reject(err(f));
          if (f === 'short') return (b: Uint8Array, off: number, len: number, pos: number) => target.write(b, off, Math.min(len, 1000), pos);
          if (f === 'nothing') return async () => ({ bytesWritten: 0 });
        }
        if (prop === 'writev') {
          if (f === 'ENOSPC' || f === 'EIO') return async () => Promise.reject(err(f));
          if (f === 'short') return (parts: Uint8Array[], pos: number) => target.write(parts[0], 0, Math.min(parts[0].byteLength, 1000), pos);
          if (f === 'nothing') return async () => ({ bytesWritten: 0 });
        }
        if ((prop === 'datasync' || prop === 'sync') && f === 'sync-EIO') return async () => Promise.reject(err('EIO'));
        if (prop === 'read' && f === 'read-EIO') return async () => Promise.reject(err('EIO'));
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  };
}

const LOG = '/vm/disk.img.vhdsync-track';
function volWithLog() {
  const vol = new Volume();
  vol.mkdirSync('/vm', { recursive: true });
  vol.writeFileSync(LOG, buildHeader(newHeader()));
  return vol;
}
const record = (n: number) => ({ offset: n * 4096, data: new Uint8Array(4096).fill(n) });

describe('tracking log appends under injected faults (memfs)', () => {
  it('a clean append over memfs lands byte for byte (the baseline)', async () => {
    const vol = volWithLog();
    const fs = logFsOver(faulty(vol, () => undefined) as (p: string, f: string) => Promise<LogHandle>);
    expect(await appendRecords(LOG, [record(1), record(2)], { fs })).toBe(HEADER_BYTES + encodeRecords([record(1), record(2)]).byteLength);
    const bytes = new Uint8Array(vol.readFileSync(LOG) as Buffer);
    expect(bytes.subarray(HEADER_BYTES)).toEqual(encodeRecords([record(1), record(2)]));
  });

  for (const f of ['ENOSPC', 'EIO', 'sync-EIO'] as const) {
    it(`${f}: the append rejects (the write is never acknowledged), the header stays intact`, async () => {
      const vol = volWithLog();
      let fault: Fault;
      const fs = logFsOver(faulty(vol, () => fault) as (p: string, f: string) => Promise<LogHandle>);
      await appendRecords(LOG, [record(1)], { fs });
      fault = f;
      await expect(appendRecords(LOG, [record(2)], { fs })).rejects.toMatchObject({ code: f === 'sync-EIO' ? 'EIO' : f });
      const bytes = new Uint8Array(vol.readFileSync(LOG) as Buffer);
      expect(parseHeader(bytes.subarray(0, HEADER_BYTES), LOG).endOfLog).toBe(0);
      expect(bytes.subarray(HEADER_BYTES, HEADER_BYTES + encodeRecords([record(1)]).byteLength)).toEqual(encodeRecords([record(1)]));
    });
  }

  it('short writes (1000 bytes at a time) still append every byte', async () => {
    const vol = volWithLog();
    const fs = logFsOver(faulty(vol, () => 'short') as (p: string, f: string) => Promise<LogHandle>);
    await appendRecords(LOG, [record(3), record(4)], { fs });
    expect(new Uint8Array(vol.readFileSync(LOG) as Buffer).subarray(HEADER_BYTES)).toEqual(encodeRecords([record(3), record(4)]));
  });

  it('a write of nothing is an EIO, not an endless loop', async () => {
    const vol = volWithLog();
    const fs = logFsOver(faulty(vol, () => 'nothing') as (p: string, f: string) => Promise<LogHandle>);
    await expect(appendRecords(LOG, [record(5)], { fs })).rejects.toMatchObject({ code: 'EIO' });
  });
});

describe('the disk layer under injected faults (memfs)', () => {
  const IMG = '/disk.img';
  async function disk(fault: () => Fault) {
    const vol = new Volume();
    vol.writeFileSync(IMG, new Uint8Array(1 << 20));
    const file = DiskFile.fromHandle(IMG, (await faulty(vol, fault)(IMG, 'r+')) as unknown as FileHandle, false);
    return { vol, disk: RawDisk.fromFile(file, 1 << 20) };
  }
  const err = async (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as VhdsyncError);

  it('ENOSPC on a write: one IO error line naming the file', async () => {
    const { disk: d } = await disk(() => 'ENOSPC');
    const e = await err(d.write(0, new Uint8Array(4096).fill(7)));
    expect(e).toBeInstanceOf(VhdsyncError);
    expect(e!.code).toBe('IO');
    expect(e!.message).toMatch(/^\/disk\.img: no space left on /);
  });

  it('EIO on a read: an IO error, not a crash', async () => {
    const { disk: d } = await disk(() => 'read-EIO');
    const e = await err(d.read(0, new Uint8Array(4096)));
    expect(e).toBeInstanceOf(VhdsyncError);
    expect(e!.code).toBe('IO');
    expect(e!.message).toMatch(/^\/disk\.img: input\/output error/);
  });

  it('short writes: the data lands whole', async () => {
    const { vol, disk: d } = await disk(() => 'short');
    const data = new Uint8Array(10_000).map((_, i) => i & 0xff);
    await d.write(4096, data);
    expect(new Uint8Array(vol.readFileSync(IMG) as Buffer).subarray(4096, 4096 + data.length)).toEqual(data);
  });

  it('a write of nothing: an IO error instead of a hang', async () => {
    const { disk: d } = await disk(() => 'nothing');
    const e = await err(d.write(0, new Uint8Array(512)));
    expect(e).toBeInstanceOf(VhdsyncError);
    expect(e!.code).toBe('IO'); // the loop ends (a short write of 0 bytes is EIO), it does not spin
    expect(e!.message).toMatch(/^\/disk\.img: input\/output error/);
  });
});
