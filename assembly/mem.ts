// Long-lived regions of linear memory for the host (its scratch arena, read buffers, workers'
// blocks). The stub runtime is a bump allocator: heap.free only gives memory back when the block
// is the last one. Regions are few and long-lived, so freed ones are remembered here and handed
// out again (smallest that fits) instead of adding a general-purpose allocator.

import { BLOCK, BLOCK_OVERHEAD } from '~lib/rt/common';

// @ts-ignore: decorator
@inline const MAX_FREE: usize = 64;
/** Freed region pointers waiting for reuse; 0 marks an empty slot. */
const FREE_LIST: usize = memory.data(<i32>MAX_FREE * 4, 4);

/** Usable bytes of a region (the stub allocator records it in the block header). */
// @ts-ignore: decorator
@inline function capacity(ptr: usize): usize {
  return changetype<BLOCK>(ptr - BLOCK_OVERHEAD).mmInfo;
}

/** A 16-byte aligned region of at least `size` bytes (contents unspecified). May grow memory. */
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
  return heap.alloc(size);
}

/** Give a region back for reuse. */
export function free(ptr: usize): void {
  for (let i: usize = 0; i < MAX_FREE; i++) {
    if (load<usize>(FREE_LIST + (i << 2)) == 0) {
      store<usize>(FREE_LIST + (i << 2), ptr);
      return;
    }
  }
  heap.free(ptr); // list full: the bump allocator reclaims it only if it is the last block
}
