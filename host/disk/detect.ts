/**
 * Which format an image is, from its first and last sector and its name: the one detection routine,
 * called by `readImage` (image.ts) for `openDisk` (paths) and the page's `openImage` (picked files),
 * and by `resize`. VHDX by its `vhdxfile`
 * signature ([MS-VHDX] 2.2.1), VHD by a `conectix` footer at the end or its copy at the start, raw
 * otherwise. Formats we do not read (qcow2, VMDK, VDI, QED) are recognised by their signatures and
 * refused by name with the `qemu-img convert` line that makes a VHDX or VHD of them, rather than
 * being taken for raw. A forced format (`-f`, as qemu-img's) skips the guess: `raw` takes any file.
 */
import { VhdsyncError } from '../errors.js';
import { looksLikeVhd } from './vhd/image.js';
import { hasFileSignature } from './vhdx/header.js';

export const IMAGE_FORMATS = ['raw', 'vhd', 'vhdx'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

/** A format qemu-img reads and we do not: its name as qemu-img spells it (for `-f`). */
export type ForeignFormat = 'qcow' | 'qcow2' | 'qed' | 'vmdk' | 'vdi';

const startsWith = (b: Uint8Array, at: number, sig: readonly number[]): boolean =>
  b.length >= at + sig.length && sig.every((x, i) => b[at + i] === x);
const text = (s: string): number[] => [...s].map((c) => c.charCodeAt(0));

/** The foreign format whose signature starts `head` (the first sector), if any. */
export function foreignFormat(head: Uint8Array): ForeignFormat | undefined {
  // QEMU qcow/qcow2 header: magic 'QFI\xfb', then a big-endian version (1 = qcow, 2 or 3 = qcow2).
  if (startsWith(head, 0, [0x51, 0x46, 0x49, 0xfb])) return startsWith(head, 4, [0, 0, 0, 1]) ? 'qcow' : 'qcow2';
  if (startsWith(head, 0, [0x51, 0x45, 0x44, 0x00])) return 'qed'; // 'QED\0'
  // VMDK: a hosted sparse extent 'KDMV', an ESX sparse 'COWD', or a text descriptor.
  if (startsWith(head, 0, text('KDMV')) || startsWith(head, 0, text('COWD')) || startsWith(head, 0, text('# Disk DescriptorFile'))) return 'vmdk';
  // VirtualBox VDI: the little-endian signature 0xbeda107f at offset 0x40 after a 64-byte text banner.
  if (startsWith(head, 0x40, [0x7f, 0x10, 0xda, 0xbe])) return 'vdi';
  return undefined;
}

const FOREIGN_NAMES: Record<ForeignFormat, string> = { qcow: 'qcow (v1)', qcow2: 'qcow2', qed: 'QED', vmdk: 'VMDK', vdi: 'VirtualBox VDI' };

/** A name as one shell word (quoted when it needs to be), so the suggested command runs as printed. */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The refusal of a foreign image, with the command that converts it. */
export function foreignFormatError(name: string, format: ForeignFormat): VhdsyncError {
  const stem = name.replace(/\.[^./\\]*$/, '');
  const q = shellWord(name);
  return new VhdsyncError(
    'UNSUPPORTED',
    `${name}: a ${FOREIGN_NAMES[format]} image; vhdsync reads VHDX, VHD and raw. Convert it first: ` +
      `qemu-img convert -f ${format} -O vhdx ${q} ${shellWord(stem + '.vhdx')} (or -O vpc ${shellWord(stem + '.vhd')} for a VHD)`,
  );
}

/**
 * The format of the image named `name` whose first and last sectors are `head` and `tail`. Throws a
 * one-line VhdsyncError when it is not one we read or not the `forced` one. `parentOf` names the child
 * when this image is opened as a parent in a chain (the refusals then say so: PARENT_MISMATCH).
 */
export function detectFormat(name: string, head: Uint8Array, tail: Uint8Array, forced?: ImageFormat, parentOf?: string): ImageFormat {
  if (forced === 'raw') return 'raw';
  const notA = (what: 'VHD' | 'VHDX', why: string, asParent: string): never => {
    if (parentOf !== undefined) throw new VhdsyncError('PARENT_MISMATCH', `${parentOf}: parent ${name} ${asParent}`);
    throw new VhdsyncError('BAD_COOKIE', `${name}: ${why}`);
  };
  const foreign = foreignFormat(head);
  if (foreign !== undefined) {
    if (parentOf !== undefined) throw new VhdsyncError('PARENT_MISMATCH', `${parentOf}: parent ${name} is a ${FOREIGN_NAMES[foreign]} image, not a ${forced === 'vhdx' ? 'VHDX' : 'VHD'}`);
    throw foreignFormatError(name, foreign);
  }
  if (hasFileSignature(head)) {
    if (forced === 'vhd') return notA('VHD', 'is a VHDX, not a VHD', "is a VHDX, but a VHD's parent must be a VHD");
    return 'vhdx';
  }
  if (forced === 'vhdx') return notA('VHDX', "not a VHDX: no 'vhdxfile' signature at the start of the file", "is not a VHDX (no 'vhdxfile' signature)");
  if (looksLikeVhd(head, tail)) return 'vhd';
  const ext = /\.[^./\\]*$/.exec(name)?.[0].toLowerCase() ?? '';
  // A file that says by its name (Hyper-V's .avhd/.avhdx are differencing disks) or by -f that it is a VHD
  // or VHDX but has no signature is broken, not raw.
  if ((ext === '.vhdx' || ext === '.avhdx') && forced !== 'vhd') return notA('VHDX', "not a VHDX: no 'vhdxfile' signature at the start of the file", "is not a VHDX (no 'vhdxfile' signature)");
  if (forced === 'vhd' || parentOf !== undefined || ext === '.vhd' || ext === '.avhd') {
    return notA('VHD', "not a VHD: no 'conectix' footer at the end or the start of the file", "is not a VHD (no 'conectix' footer)");
  }
  return 'raw';
}

/** `-f/--format` as given on the command line, checked. */
export function parseImageFormat(v: string, flag = '--format'): ImageFormat {
  const f = v.toLowerCase();
  if ((IMAGE_FORMATS as readonly string[]).includes(f)) return f as ImageFormat;
  if (f === 'vpc') return 'vhd'; // qemu-img's name for VHD
  throw new VhdsyncError('USAGE', `${flag}: '${v}' is not a format vhdsync reads (raw, vhd or vhdx)`);
}
