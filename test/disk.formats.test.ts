/**
 * Formats vhdsync does not read (qcow2, VMDK, VDI, QED), made by the real qemu-img: recognised by
 * their signatures and refused by name with the `qemu-img convert` line that makes a VHDX of them —
 * a line that works as printed. The same one routine (host/disk/detect.ts) serves the CLI and the
 * page. `-f/--format` forces a format as qemu-img's does.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { detectFormat, foreignFormat, openDisk } from '../host/disk/index.js';
import { VhdsyncError } from '../host/errors.js';
import { openImage } from '../host/web/open-image.js';
import { cli } from './support/cli.js';
import { qemuImg } from './support/oracles.js';
import { tempDir } from './support/temp-dir.js';

let dir: string;
let cleanup: () => void;
const FOREIGN = [
  ['qcow2', 'x.qcow2', [], /a qcow2 image/],
  ['vmdk', 'x.vmdk', [], /a VMDK image/],
  ['vmdk', 'flat.vmdk', ['-o', 'subformat=monolithicFlat'], /a VMDK image/],
  ['vdi', 'x.vdi', [], /a VirtualBox VDI image/],
  ['qed', 'x.qed', [], /a QED image/],
] as const;

beforeAll(async () => {
  ({ dir, cleanup } = tempDir('vhdsync-formats-'));
  // Some data, so a conversion that lost it would show.
  qemuImg('create', '-q', '-f', 'raw', join(dir, 'src.raw'), '4M');
  execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0xa5 1M 64k', join(dir, 'src.raw')]);
  for (const [fmt, name, opts] of FOREIGN) qemuImg('convert', '-q', '-f', 'raw', '-O', fmt, ...opts, join(dir, 'src.raw'), join(dir, name));
});
afterAll(() => cleanup());

describe('foreign formats', () => {
  for (const [fmt, name, , what] of FOREIGN) {
    it(`${name}: refused by name (UNSUPPORTED), and the printed qemu-img convert line makes a VHDX equal to it`, () => {
      const r = cli(['info', '--json', name], { home: join(dir, 'home'), cwd: dir });
      expect(r.status).toBe(2);
      const err = JSON.parse(r.stdout).error;
      expect(err.code).toBe('UNSUPPORTED');
      expect(err.message).toMatch(what);
      const line = /qemu-img convert [^(]*[^\s(]/.exec(err.message)![0];
      expect(line).toBe(`qemu-img convert -f ${fmt} -O vhdx ${name} ${name.replace(/\.\w+$/, '')}.vhdx`);
      execFileSync('sh', ['-c', line], { cwd: dir });
      const out = cli(['compare', 'src.raw', name.replace(/\.\w+$/, '.vhdx')], { home: join(dir, 'home'), cwd: dir });
      expect(out.stdout).toBe('Images are identical.\n');
      expect(out.status).toBe(0);
    });
  }

  it('the page refuses them with the same line as the command line (one detection routine)', async () => {
    for (const [, name] of FOREIGN) {
      const file = new File([readFileSync(join(dir, name))], name);
      const e = await openImage(file).then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(VhdsyncError);
      const viaPath = await openDisk(join(dir, name)).then(() => undefined, (x: unknown) => x);
      expect((e as VhdsyncError).message).toBe((viaPath as VhdsyncError).message.replaceAll(`${dir}/`, ''));
    }
  });

  it('signatures: qcow v1 and v2, QED, the three VMDK kinds, VDI at 0x40; raw data is none of them', () => {
    const at = (off: number, ...bytes: number[]) => {
      const b = new Uint8Array(512);
      b.set(bytes, off);
      return b;
    };
    const txt = (s: string) => [...s].map((c) => c.charCodeAt(0));
    expect(foreignFormat(at(0, 0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3))).toBe('qcow2');
    expect(foreignFormat(at(0, 0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 1))).toBe('qcow');
    expect(foreignFormat(at(0, ...txt('QED'), 0))).toBe('qed');
    expect(foreignFormat(at(0, ...txt('KDMV')))).toBe('vmdk');
    expect(foreignFormat(at(0, ...txt('COWD')))).toBe('vmdk');
    expect(foreignFormat(at(0, ...txt('# Disk DescriptorFile')))).toBe('vmdk');
    expect(foreignFormat(at(0x40, 0x7f, 0x10, 0xda, 0xbe))).toBe('vdi');
    expect(foreignFormat(at(0, ...txt('QFI')))).toBeUndefined();
    expect(foreignFormat(new Uint8Array(3))).toBeUndefined();
    expect(detectFormat('disk.img', at(0, 0x51, 0x46, 0x49, 0xfb), new Uint8Array(512), 'raw')).toBe('raw');
  });

  it('a name with a space gets a quoted convert line', async () => {
    execFileSync('cp', [join(dir, 'x.qcow2'), join(dir, 'my disk.qcow2')]);
    const r = cli(['info', 'my disk.qcow2'], { home: join(dir, 'home'), cwd: dir });
    expect(r.stderr).toContain(`qemu-img convert -f qcow2 -O vhdx 'my disk.qcow2' 'my disk.vhdx'`);
  });
});

describe('-f/--format', () => {
  it('-f raw reads a qcow2 file as raw bytes, as qemu-img -f raw does', () => {
    const r = cli(['info', '--json', '-f', 'raw', 'x.qcow2'], { home: join(dir, 'home'), cwd: dir });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ format: 'raw' });
  });

  it('-f vhd on a VHDX, and --format vhdx on raw data, are refused; an unknown format is a usage error', () => {
    qemuImg('convert', '-q', '-f', 'raw', '-O', 'vhdx', join(dir, 'src.raw'), join(dir, 'src.vhdx'));
    expect(cli(['checksum', '-f', 'vhd', 'src.vhdx'], { home: join(dir, 'home'), cwd: dir }).stderr).toBe('vhdsync: src.vhdx: is a VHDX, not a VHD\n');
    expect(cli(['checksum', '--format', 'vhdx', 'src.raw'], { home: join(dir, 'home'), cwd: dir }).stderr).toMatch(/src\.raw: not a VHDX: no 'vhdxfile' signature/);
    const bad = cli(['info', '--json', '-f', 'qcow2', 'src.raw'], { home: join(dir, 'home'), cwd: dir });
    expect(JSON.parse(bad.stdout).error).toEqual({ code: 'USAGE', message: "--format: 'qcow2' is not a format vhdsync reads (raw, vhd or vhdx)" });
  });

  it('compare -f / -F force each side, as qemu-img compare', () => {
    qemuImg('convert', '-q', '-f', 'raw', '-O', 'vpc', join(dir, 'src.raw'), join(dir, 'src.vhd'));
    execFileSync('cp', [join(dir, 'src.raw'), join(dir, 'copy.bin')]);
    // As raw, the VHD's bytes (footer and all) differ from the raw source; as detected, they do not.
    expect(cli(['compare', 'src.raw', 'src.vhd'], { home: join(dir, 'home'), cwd: dir }).status).toBe(0);
    expect(cli(['compare', '-F', 'raw', 'src.raw', 'src.vhd'], { home: join(dir, 'home'), cwd: dir }).status).toBe(1);
    expect(cli(['compare', '-f', 'raw', '-F', 'vpc', 'copy.bin', 'src.vhd'], { home: join(dir, 'home'), cwd: dir }).status).toBe(0);
  });
});

describe('one detection for the CLI and the page', () => {
  const at = () => ({ home: join(dir, 'home'), cwd: dir });
  /** The page's refusal of the file at `name` in `dir`, or undefined when it opened. */
  const pageError = async (name: string) => {
    const e = await openImage(new File([readFileSync(join(dir, name))], name)).then((img) => img.disk.close(), (x: unknown) => x);
    return e instanceof VhdsyncError ? e : undefined;
  };

  for (const [fmt, what] of [['qcow2', 'a qcow2 image'], ['vmdk', 'a VMDK image'], ['vdi', 'a VirtualBox VDI image']] as const) {
    it(`an image made by qemu-img create -f ${fmt}: info, checksum and compare exit 2 with one line; the page refuses it with the same line`, async () => {
      const name = `made.${fmt}`;
      qemuImg('create', '-q', '-f', fmt, join(dir, name), '4M');
      const line = `${name}: ${what}; vhdsync reads VHDX, VHD and raw. Convert it first: qemu-img convert -f ${fmt} -O vhdx ${name} made.vhdx (or -O vpc made.vhd for a VHD)`;
      for (const args of [['info', name], ['checksum', name], ['compare', 'src.raw', name]]) {
        const r = cli(args, at());
        expect(r.status).toBe(2);
        expect(r.stderr).toBe(`vhdsync: ${line}\n`);
      }
      const e = await pageError(name);
      expect(e?.code).toBe('UNSUPPORTED');
      expect(e?.message).toBe(line);
    });
  }

  it('a .vhd, .avhd, .vhdx or .avhdx without its signature is a broken image, not raw, in the CLI and the page; as .img it is raw', async () => {
    const bytes = readFileSync(join(dir, 'src.raw'));
    for (const [name, kind] of [['plain.vhd', 'VHD'], ['snap.avhd', 'VHD'], ['plain.vhdx', 'VHDX'], ['snap.avhdx', 'VHDX']] as const) {
      writeFileSync(join(dir, name), bytes);
      const why = kind === 'VHD' ? "not a VHD: no 'conectix' footer at the end or the start of the file" : "not a VHDX: no 'vhdxfile' signature at the start of the file";
      const r = cli(['info', name], at());
      expect(r.status).toBe(2);
      expect(r.stderr).toBe(`vhdsync: ${name}: ${why}\n`);
      const e = await pageError(name);
      expect(e?.code).toBe('BAD_COOKIE');
      expect(e?.message).toBe(`${name}: ${why}`);
    }
    writeFileSync(join(dir, 'plain.img'), bytes);
    expect(JSON.parse(cli(['info', '--json', 'plain.img'], at()).stdout)).toMatchObject({ format: 'raw' });
    expect(await pageError('plain.img')).toBeUndefined();
  });
});
