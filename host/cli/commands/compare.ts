import type { Command } from 'commander';
import { getCore } from '../../core/index.js';
import { openDisk, useSyncIo } from '../../disk/index.js';
import { compareReport, diffDisks } from '../../resync/diff.js';
import { formatSize } from '../../units.js';
import { ProgressBar } from '../progress.js';
import { printJson } from '../output.js';
import { formatOption } from '../format-flag.js';
import type { ImageFormat } from '../../disk/detect.js';

export function register(program: Command): void {
  program
    .command('compare')
    .description('Compare the virtual contents of two images of any format; exit 0 identical, 1 different, 2 error (as qemu-img compare), listing every differing range')
    .argument('<a>', 'first image')
    .argument('<b>', 'second image')
    .addOption(formatOption('-f, --format <format>', 'the first image'))
    .addOption(formatOption('-F, --format-b <format>', 'the second image'))
    .option('--json', 'print the result as JSON')
    .action(async (pa: string, pb: string, flags: { json?: boolean; format?: ImageFormat; formatB?: ImageFormat }) => {
      useSyncIo(true); // this process only scans disks: see useSyncIo
      const a = await openDisk(pa, { readOnly: true, format: flags.format });
      try {
        const b = await openDisk(pb, { readOnly: true, format: flags.formatB });
        try {
          const bar = new ProgressBar();
          const r = await diffDisks(getCore(), a, b, (d, t) => bar.update(d, t, 'compared'));
          bar.done();
          if (flags.json) {
            printJson(compareReport(r));
          } else if (r.identical) {
            process.stdout.write('Images are identical.\n');
          } else {
            process.stdout.write(`Images differ: ${formatSize(r.differingBytes)} (${r.differingBytes} bytes) in ${r.ranges.length} range(s)\n`);
            for (const x of r.ranges.slice(0, 20)) process.stdout.write(`  ${x.start}-${x.end} (${formatSize(x.end - x.start)})\n`);
            if (r.ranges.length > 20) process.stdout.write(`  … ${r.ranges.length - 20} more (use --json for all)\n`);
          }
          if (r.sizeA !== r.sizeB && !flags.json) process.stdout.write(`Note: sizes differ (${r.sizeA} vs ${r.sizeB} bytes); the shorter image's missing tail counts as zeros.\n`);
          process.exitCode = r.identical ? 0 : 1;
        } finally {
          await b.close();
        }
      } finally {
        await a.close();
      }
    });
}
