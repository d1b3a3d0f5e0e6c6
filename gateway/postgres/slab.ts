// Bump allocator for messages the proxy builds on the result hot path (masked DataRow and
// CopyData frames). Consecutive messages land next to each other in one slab, so the write batch
// (WriteBatch.addView) merges a run of them into a single view and a chunk of masked rows reaches
// the socket without a per-row buffer or a concatenation copy.
//
// Safety: a region is handed out once and never written again (the position only moves forward;
// a full slab is dropped, not reset), so a view still queued in a socket's write buffer can never
// be overwritten by a later message. JavaScript is single-threaded: no two callers interleave
// inside alloc().

const SLAB_SIZE = 64 * 1024;
/** Larger messages get a buffer of their own (they would waste most of a slab). */
const OWN_BUFFER_FROM = 8 * 1024;

let slab = Buffer.allocUnsafe(SLAB_SIZE);
let pos = 0;

/** A new, uninitialised buffer of `size` bytes that the caller must fill completely. */
export function slabAlloc(size: number): Buffer {
  if (size >= OWN_BUFFER_FROM) return Buffer.allocUnsafe(size);
  if (pos + size > slab.length) {
    slab = Buffer.allocUnsafe(SLAB_SIZE);
    pos = 0;
  }
  const at = pos;
  pos += size;
  return slab.subarray(at, pos);
}

/** Below this many bytes a plain loop beats Buffer#copy, which allocates a view for a partial source. */
const LOOP_COPY_MAX = 40;

/** Copies src[start, end) to dst at `at`; returns the number of bytes copied (like Buffer#copy). */
export function copyBytes(src: Buffer, start: number, end: number, dst: Buffer, at: number): number {
  const n = end - start;
  if (n > LOOP_COPY_MAX) return src.copy(dst, at, start, end);
  for (let i = 0; i < n; i++) dst[at + i] = src[start + i];
  return n;
}

/** Big-endian int32 at `at` (the caller has checked the bounds; no per-call checks like Buffer#readInt32BE). */
export function int32(b: Uint8Array, at: number): number {
  return (b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3];
}

/** Writes a big-endian int32 at `at` (bounds are the caller's). */
export function putInt32(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 24;
  b[at + 1] = v >>> 16;
  b[at + 2] = v >>> 8;
  b[at + 3] = v;
}
