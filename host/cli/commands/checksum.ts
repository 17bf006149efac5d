import type { Command } from 'commander';
import { getCore } from '../../core/index.js';
import { openDisk, useSyncIo } from '../../disk/index.js';
import { diskChecksum } from '../../resync/checksum.js';
import { ProgressBar } from '../progress.js';
import { printJson } from '../output.js';
import { formatOption } from '../format-flag.js';
import type { ImageFormat } from '../../disk/detect.js';

export function register(program: Command): void {
  program
    .command('checksum')
    .description("A format-independent digest of an image's virtual contents (the root of the resync's hash tree): equal digests mean equal disks")
    .argument('<image>', 'image (raw, VHD, VHDX)')
    .addOption(formatOption())
    .option('--json', 'print the result as JSON')
    .action(async (path: string, flags: { json?: boolean; format?: ImageFormat }) => {
      useSyncIo(true); // this process only scans disks: see useSyncIo
      const disk = await openDisk(path, { readOnly: true, format: flags.format });
      try {
        const bar = new ProgressBar();
        const t0 = performance.now();
        const digest = await diskChecksum(getCore(), disk, (d, t) => bar.update(d, t, 'hashed'));
        bar.done();
        const seconds = (performance.now() - t0) / 1000;
        if (flags.json) printJson({ image: path, algorithm: 'xxh3-128-tree/4K/16/16M', checksum: digest, virtualSize: disk.virtualSize, seconds });
        else process.stdout.write(`${digest}  ${path}\n`);
      } finally {
        await disk.close();
      }
    });
}
