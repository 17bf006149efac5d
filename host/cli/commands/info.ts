import type { Command } from 'commander';
import { stat } from 'node:fs/promises';
import {
  VhdDynamicDisk, VhdFixedDisk, VhdxDisk, diskTypeName, geometrySize, openDisk, openDiskAlone, timestampDate, uuidText, type Disk,
  type LogState,
} from '../../disk/index.js';
import { VhdsyncError } from '../../errors.js';
import { formatSize } from '../../units.js';
import { printJson } from '../output.js';
import { formatOption } from '../format-flag.js';
import type { ImageFormat } from '../../disk/detect.js';

interface InfoReport {
  image: string;
  format: 'vhd' | 'raw' | 'vhdx';
  type: string;
  virtualSize: number;
  blockSize: number;
  blockCount: number;
  /** Blocks allocated in this file (dynamic/differencing); every block for raw and fixed. */
  allocatedBlocks: number;
  fileSize: number;
  /** The parent's path for a differencing disk, else null. */
  parent: string | null;
  parentError?: { code: string; message: string };
  chain?: string[];
  geometry?: { cylinders: number; heads: number; sectorsPerTrack: number; size: number };
  uniqueId?: string;
  parentUniqueId?: string;
  creator?: { application: string; version: string; hostOs: string };
  timestamp?: string;
  checksums?: { footer: 'valid' | 'damaged'; footerCopy?: 'valid' | 'damaged'; header?: 'valid' };
  vhdx?: VhdxReport;
  warnings: string[];
}

interface VhdxReport {
  logicalSectorSize: number;
  physicalSectorSize: number;
  /** `empty`, or `replayed-in-memory` when a read-only open found a log to replay. */
  log: LogState;
  logEntries: number;
  /** Changes on the first write of every writable open: the evidence of a changed disk. */
  dataWriteGuid: string;
  fileWriteGuid: string;
  headerSequence: string;
  /** Page 83 id, shared by a differencing disk and its parent. */
  virtualDiskId: string;
  creator: string;
  /** Differencing only: the parent locator's keys and values (parent_linkage, relative_path, ...). */
  parentLocator?: Record<string, string>;
}

export function register(program: Command): void {
  program
    .command('info')
    .description('Describe an image: format, type, virtual size, block size, allocation, geometry, unique id, parent and checksum validity')
    .argument('<image>', 'image (raw, VHD, VHDX)')
    .addOption(formatOption())
    .option('--json', 'print the result as JSON')
    .action(async (path: string, flags: { json?: boolean; format?: ImageFormat }) => {
      const report = await describe(path, flags.format);
      if (flags.json) printJson(report);
      else process.stdout.write(render(report));
    });
}

async function describe(path: string, format?: ImageFormat): Promise<InfoReport> {
  let disk: Disk;
  let parentError: VhdsyncError | undefined;
  try {
    disk = await openDisk(path, { readOnly: true, format });
  } catch (e) {
    // A differencing disk whose parent is missing or wrong is still worth describing.
    if (!(e instanceof VhdsyncError) || !e.code.startsWith('PARENT_')) throw e;
    parentError = e;
    disk = await openDiskAlone(path, { readOnly: true });
  }
  try {
    const fileSize = (await stat(path)).size;
    const report: InfoReport = {
      image: path,
      format: disk.format,
      type: disk.type,
      virtualSize: disk.virtualSize,
      blockSize: disk.blockSize,
      blockCount: disk.blockCount,
      allocatedBlocks: disk instanceof VhdDynamicDisk || disk instanceof VhdxDisk ? disk.allocatedBlocks() : disk.blockCount,
      fileSize,
      parent: disk.parent ? disk.parent.path : null,
      warnings: [],
    };
    if (parentError) {
      report.parentError = { code: parentError.code, message: parentError.message };
      report.parent = null;
    }
    const chain: string[] = [];
    for (let p = disk.parent; p; p = p.parent) chain.push(p.path);
    if (chain.length) report.chain = chain;
    if (disk instanceof VhdDynamicDisk || disk instanceof VhdFixedDisk) {
      const f = disk.footer;
      report.type = diskTypeName(f.diskType);
      report.geometry = { ...f.geometry, size: geometrySize(f.geometry) };
      report.uniqueId = uuidText(f.uniqueId);
      report.creator = {
        application: f.creatorApp,
        version: `${f.creatorVersion >>> 16}.${f.creatorVersion & 0xffff}`,
        hostOs: f.creatorHostOs,
      };
      report.timestamp = timestampDate(f.timestamp).toISOString();
      report.warnings.push(...disk.warnings);
      if (disk instanceof VhdDynamicDisk) {
        report.checksums = {
          footer: disk.footerSource === 'trailing' ? 'valid' : 'damaged',
          footerCopy: disk.footerCopyValid ? 'valid' : 'damaged',
          header: 'valid',
        };
        if (disk.type === 'differencing') report.parentUniqueId = uuidText(disk.header.parentUniqueId);
      } else {
        report.checksums = { footer: 'valid' };
      }
      if ((f.creatorApp === 'vpc ' || f.creatorApp === 'qemu') && report.geometry.size !== f.currentSize) {
        report.warnings.push(
          `creator '${f.creatorApp}': qemu before 10.0 reads this disk as ${report.geometry.size} bytes (CHS) while its current size is ${f.currentSize}`,
        );
      }
    }
    if (disk instanceof VhdxDisk) {
      report.vhdx = {
        logicalSectorSize: disk.params.logicalSectorSize,
        physicalSectorSize: disk.params.physicalSectorSize,
        log: disk.logState,
        logEntries: disk.replayedEntries,
        dataWriteGuid: disk.dataWriteGuid,
        fileWriteGuid: disk.fileWriteGuid,
        headerSequence: String(disk.headerSequence),
        virtualDiskId: disk.virtualDiskId,
        creator: disk.creator,
      };
      if (disk.parentLocator) report.vhdx.parentLocator = Object.fromEntries(disk.parentLocator.entries);
      report.warnings.push(...disk.warnings);
    }
    return report;
  } finally {
    await disk.close();
  }
}

function render(r: InfoReport): string {
  const rows: Array<[string, string]> = [
    ['image', r.image],
    ['format', `${r.format} (${r.type})`],
    ['virtual size', `${formatSize(r.virtualSize)} (${r.virtualSize} bytes)`],
    ['block size', formatSize(r.blockSize)],
    ['allocated blocks', `${r.allocatedBlocks} of ${r.blockCount}`],
    ['file size', `${formatSize(r.fileSize)} (${r.fileSize} bytes)`],
  ];
  if (r.geometry) rows.push(['geometry', `${r.geometry.cylinders}/${r.geometry.heads}/${r.geometry.sectorsPerTrack} (C/H/S = ${r.geometry.size} bytes)`]);
  if (r.uniqueId) rows.push(['unique id', r.uniqueId]);
  if (r.creator) rows.push(['creator', `'${r.creator.application}' ${r.creator.version} on '${r.creator.hostOs}', ${r.timestamp}`]);
  if (r.type === 'differencing') {
    rows.push(['parent', r.parent ?? `unavailable: ${r.parentError?.message ?? 'unknown'}`]);
    if (r.parentUniqueId) rows.push(['parent unique id', r.parentUniqueId]);
    if (r.chain && r.chain.length > 1) rows.push(['chain', r.chain.join(' -> ')]);
  }
  if (r.vhdx) {
    const v = r.vhdx;
    rows.push(['sector size', `${v.logicalSectorSize} logical, ${v.physicalSectorSize} physical`]);
    rows.push(['log', v.log === 'empty' ? 'empty' : `${v.logEntries} entr${v.logEntries === 1 ? 'y' : 'ies'} to replay (read through them; open writable to apply)`]);
    rows.push(['data write id', v.dataWriteGuid]);
    rows.push(['file write id', v.fileWriteGuid]);
    rows.push(['virtual disk id', v.virtualDiskId]);
    rows.push(['creator', v.creator || '(none)']);
    if (v.parentLocator) for (const [k, val] of Object.entries(v.parentLocator)) rows.push([k.replace(/_/g, ' '), val]);
  }
  if (r.checksums) {
    const c = r.checksums;
    rows.push(['checksums', [`footer ${c.footer}`, c.footerCopy && `footer copy ${c.footerCopy}`, c.header && `header ${c.header}`].filter(Boolean).join(', ')]);
  }
  for (const w of r.warnings) rows.push(['warning', w]);
  const width = Math.max(...rows.map(([k]) => k.length)) + 1;
  return rows.map(([k, v]) => `${(k + ':').padEnd(width + 1)}${v}\n`).join('');
}
