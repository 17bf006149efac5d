import { Option } from 'commander';
import { parseImageFormat } from '../disk/detect.js';

/** `-f/--format raw|vhd|vhdx`, as qemu-img's: skip detection (`raw` takes any file as raw). */
export function formatOption(flags = '-f, --format <format>', what = 'the image'): Option {
  return new Option(flags, `treat ${what} as raw, vhd or vhdx instead of detecting it`).argParser((v) => parseImageFormat(v, flags.replace(/^.*(--\S+).*$/, '$1')));
}
