// Bump allocator for messages the proxy builds on the result hot path (masked DataRow and
// CopyData frames). Consecutive messages land next to each other in one slab, so the write batch
// (WriteBatch.addRegion) merges a run of them into a single view and a chunk of masked rows reaches
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
  // Buffer.from(arrayBuffer, ...) builds the view with fewer steps than subarray (no offset
  // normalisation): ~60 ns less per masked message on the development machine.
  return Buffer.from(slab.buffer, slab.byteOffset + at, size);
}

/**
 * slabAlloc() without a Buffer object for the region (building one costs more than masking a short
 * row): reserves `size` bytes and returns the memory that holds them (the slab, or from
 * OWN_BUFFER_FROM bytes on a buffer of their own); they start at reservedAt(). Same rules: the
 * caller fills them completely, and nothing else ever writes them.
 */
export function slabReserve(size: number): Buffer {
  if (size >= OWN_BUFFER_FROM) {
    lastAt = 0;
    return Buffer.allocUnsafe(size);
  }
  if (pos + size > slab.length) {
    slab = Buffer.allocUnsafe(SLAB_SIZE);
    pos = 0;
  }
  lastAt = pos;
  pos += size;
  return slab;
}

let lastAt = 0;

/** Where the region of the last slabReserve() starts in its slab. */
export function reservedAt(): number {
  return lastAt;
}

/**
 * Up to this many bytes a plain loop is cheapest; above, one native copy from a plain Uint8Array
 * view (Buffer#copy costs more: it builds its own view and checks every argument). Measured on Node
 * 20: 34 bytes take ~58 ns by the loop, ~95 ns through the view; they cross at about 40-45 bytes.
 * 16 until round 4, which left a short text value with its length word (the export's 32-character
 * `note` column) on the slower side: -7 to -13 % per masked DataRow (scripts/bench-masking.ts).
 */
const LOOP_COPY_MAX = 40;

/** Copies src[start, end) to dst at `at`; returns the number of bytes copied (like Buffer#copy). */
export function copyBytes(src: Buffer, start: number, end: number, dst: Buffer, at: number): number {
  const n = end - start;
  if (n > LOOP_COPY_MAX) {
    dst.set(new Uint8Array(src.buffer, src.byteOffset + start, n), at);
    return n;
  }
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
