// Long-lived regions of linear memory for the host (its scratch arena, read buffers, workers'
// blocks). The stub runtime is a bump allocator: heap.free only gives memory back when the block
// is the last one. Regions are few and long-lived, so freed ones are remembered here and handed
// out again (smallest that fits) instead of adding a general-purpose allocator.

// @ts-ignore: decorator
@inline const MAX_FREE: usize = 64;
/** Freed region pointers waiting for reuse; 0 marks an empty slot. */
const FREE_LIST: usize = memory.data(<i32>MAX_FREE * 4, 4);

// Each region starts with a 16-byte header holding its capacity, so the region itself stays
// 16-byte aligned (heap.alloc returns 16-byte aligned blocks) and reuse needs no allocator internals.
// @ts-ignore: decorator
@inline const HEADER: usize = 16;

/**
 * End of the highest block handed out. The stub allocator does no overflow check: a request that
 * would pass 4 GiB wraps its 32-bit offset and hands out memory that is already in use. So
 * alloc refuses (returns 0) any request that could reach the end of the 32-bit address space.
 */
let top: u64 = <u64>__heap_base;
// @ts-ignore: decorator
@inline const ADDRESS_SPACE: u64 = 1 << 32;
// @ts-ignore: decorator
@inline const SLACK: u64 = 64; // the stub's block header and alignment

// @ts-ignore: decorator
@inline function capacity(ptr: usize): usize {
  return load<usize>(ptr - HEADER);
}

/**
 * A 16-byte aligned region of at least `size` bytes (contents unspecified), or 0 when the 32-bit
 * address space cannot hold it. May grow memory (and trap if the engine refuses to grow).
 */
export function alloc(size: usize): usize {
  let best: usize = 0, bestSlot: usize = 0, bestCap: usize = <usize>-1;
  for (let i: usize = 0; i < MAX_FREE; i++) {
    const ptr = load<usize>(FREE_LIST + (i << 2));
    if (ptr == 0) continue;
    const cap = capacity(ptr);
    if (cap >= size && cap < bestCap) {
      best = ptr;
      bestSlot = i;
      bestCap = cap;
    }
  }
  if (best != 0) {
    store<usize>(FREE_LIST + (bestSlot << 2), 0);
    return best;
  }
  if (top + <u64>HEADER + <u64>size + SLACK > ADDRESS_SPACE) return 0;
  const block = heap.alloc(HEADER + size);
  store<usize>(block, size);
  top = max(top, <u64>block + <u64>HEADER + <u64>size);
  return block + HEADER;
}

/** Give a region back for reuse. */
export function free(ptr: usize): void {
  for (let i: usize = 0; i < MAX_FREE; i++) {
    if (load<usize>(FREE_LIST + (i << 2)) == 0) {
      store<usize>(FREE_LIST + (i << 2), ptr);
      return;
    }
  }
  heap.free(ptr - HEADER); // list full: the bump allocator reclaims it only if it is the last block
}
