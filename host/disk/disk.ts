/**
 * The Disk interface: one shape for every image format, sector-accurate.
 *
 * Offsets and lengths are bytes (`number`, exact up to 2^53). Reads and writes may start and end at
 * any byte; backends clip at their block boundaries internally.
 */
export type DiskFormat = 'raw' | 'vhd' | 'vhdx';
export type DiskType = 'fixed' | 'dynamic' | 'differencing';

/**
 * What is known about a block without reading it.
 * - `absent`: no data anywhere in the chain; the block reads as zeros.
 * - `zero`: the format says the block reads as zeros (for example VHDX PAYLOAD_BLOCK_ZERO).
 * - `present`: data is stored for at least part of the block (in this file or an ancestor).
 */
export type BlockStatus = 'absent' | 'zero' | 'present';

export interface Disk {
  readonly path: string;
  readonly format: DiskFormat;
  readonly type: DiskType;
  /** Size of the disk as the VM sees it, in bytes (VHD: the footer's current size). */
  readonly virtualSize: number;
  /** Allocation unit in bytes (VHD: the dynamic header's block size; raw and fixed: 2 MiB by convention). */
  readonly blockSize: number;
  /** Logical sector size in bytes (512 for VHD). */
  readonly sectorSize: number;
  /** ceil(virtualSize / blockSize). */
  readonly blockCount: number;
  readonly readOnly: boolean;
  /** The parent in a differencing chain, if any. */
  readonly parent?: Disk;

  blockStatus(index: number): BlockStatus;
  /** Fill `into` with the virtual bytes at [offset, offset + into.length). Throws OUT_OF_RANGE past the end. */
  read(offset: number, into: Uint8Array): Promise<void>;
  /** Write `data` at `offset`. Throws READ_ONLY when opened read-only. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Optional: write the parts one after another from `offset`, as one write of their concatenation
   * (a batch of contiguous guest writes in one system call where the backend can).
   */
  writeRun?(offset: number, parts: readonly Uint8Array[]): Promise<void>;
  /** Make every completed write durable (fsync of data and metadata). */
  flush(): Promise<void>;
  /**
   * Formats that keep metadata in memory between flushes (a dynamic VHD's BAT entries, a VHDX's BAT and
   * bitmap pages): write it to the file now, data made durable first, so that another process opening
   * the file sees every completed write. Nothing to do (and absent) where reads of the file always do.
   */
  publish?(): Promise<void>;
  /** Whether `publish` has anything to write. */
  readonly unpublished?: boolean;
  /** Flush if writable, then release the file (and the parent chain). Idempotent. */
  close(): Promise<void>;
}

/** A run of virtual bytes: `length` bytes from `offset`. */
export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * One file of a differencing chain seen alone, without its parent: which blocks and sectors it defines
 * itself, and those bytes. What a merge copies into the parent and what a pre-resync point saves the
 * base's bytes under. Dynamic and differencing VHDs and every VHDX are layers (`BlockDisk`); open one
 * with `openDiskLayer`.
 */
export interface DiskLayer extends Disk {
  /** Does block `b` hold content of its own in this file (stored data, or defined zeros in a differencing disk)? */
  isAllocated(b: number): boolean;
  /** The virtual byte ranges of block `b` whose content this file defines, clipped to the virtual size, in order. */
  ownedRanges(b: number): Promise<ByteRange[]>;
  /** This file's own bytes for a range inside one allocated block, ignoring the bitmap and the parent. */
  readOwn(offset: number, into: Uint8Array): Promise<void>;
}
