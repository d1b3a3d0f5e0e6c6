// Message framing for the PostgreSQL v3 protocol (type byte + int32 length including itself).
// The reader is pull-based so a session can stop pulling at any frame (a held statement, an
// async masker lookup) and the unread frames simply stay queued, in order, without copying.
// Frames that lie inside one incoming chunk are handed out as views on that chunk; only a frame
// that spans chunks is assembled, into one of two reusable buffers (two, so the previous
// assembled frame stays valid while the next one is built; see FrameReader.buf).
import { isUtf8 } from 'node:buffer';
import type { Writable } from 'node:stream';

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/**
 * Default largest frontend message after authentication (listen.postgres.maxMessageBytes). A
 * declared length above it is refused from the 5-byte header alone, before any of the body is
 * buffered. (PostgreSQL allows 1 GiB, but a gateway holding one per session is a memory lever.)
 */
export const MAX_FRONTEND_MESSAGE = 16 * 1024 * 1024;
/** Backend messages can carry a whole row; PG caps a field at 1 GiB, rows can be larger. */
export const MAX_BACKEND_MESSAGE = 0x7fffffff;

const INITIAL_ASSEMBLY = 64 * 1024;
/** Assembled frames larger than this get a buffer of their own, freed with the frame, so one big message does not pin memory for the rest of the session. */
const MAX_RETAINED_ASSEMBLY = 1024 * 1024;

export class FrameReader {
  /** Current frame: type byte, and [start, end) in `buf` covering the whole frame incl. header. */
  type = 0;
  buf: Buffer = Buffer.alloc(0);
  start = 0;
  end = 0;

  private chunks: Buffer[] = [];
  private pos = 0; // offset into chunks[0]
  private queued = 0; // unread bytes across chunks
  private assembly: [Buffer, Buffer] = [Buffer.alloc(INITIAL_ASSEMBLY), Buffer.alloc(INITIAL_ASSEMBLY)];
  private which = 0;

  constructor(private readonly maxLength: number, private readonly side: string) {}

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.queued += chunk.length;
  }

  /** Bytes received but not yet handed out as frames. */
  get pending(): number {
    return this.queued;
  }

  /** Takes every unread byte out of the reader (used when handing a socket to another reader). */
  drain(): Buffer {
    const parts = this.chunks.map((c, i) => (i === 0 ? c.subarray(this.pos) : c));
    this.chunks = [];
    this.pos = 0;
    this.queued = 0;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  /**
   * Puts the current frame back in front of the unread bytes, so the next `next()` returns it
   * again (a session that must wait before acting on a frame it has already looked at).
   */
  rewind(): void {
    const frame = Buffer.from(this.buf.subarray(this.start, this.end));
    if (this.chunks.length > 0) {
      this.chunks[0] = this.chunks[0].subarray(this.pos);
      this.pos = 0;
    }
    this.chunks.unshift(frame);
    this.queued += frame.length;
  }

  /** Advances to the next complete frame; false when more bytes are needed. Throws ProtocolError on a bad length. */
  next(): boolean {
    if (this.queued < 5) return false;
    let head = this.chunks[0];
    if (this.pos === head.length) {
      this.chunks.shift();
      this.pos = 0;
      head = this.chunks[0];
    }
    let type: number;
    let len: number;
    if (head.length - this.pos >= 5) {
      type = head[this.pos];
      len = head.readInt32BE(this.pos + 1);
    } else {
      const h = this.peek(5);
      type = h[0];
      len = h.readInt32BE(1);
    }
    if (len < 4) throw new ProtocolError(`invalid ${this.side} message length ${len} for message type ${describeType(type)}`);
    if (len > this.maxLength) {
      throw new ProtocolError(`invalid ${this.side} message length ${len} for message type ${describeType(type)}: larger than the limit of ${this.maxLength} bytes`);
    }
    const total = len + 1;
    if (this.queued < total) return false;
    this.type = type;
    if (head.length - this.pos >= total) {
      // Fast path: the whole frame is inside the first chunk, hand out a view.
      this.buf = head;
      this.start = this.pos;
      this.end = this.pos + total;
      this.pos += total;
      this.queued -= total;
      if (this.pos === head.length) {
        this.chunks.shift();
        this.pos = 0;
      }
      return true;
    }
    // Assembled once, when every byte is there: each byte is copied at most once (no re-copying
    // of a growing buffer per chunk), so assembling is linear in the frame size.
    let out: Buffer;
    if (total > MAX_RETAINED_ASSEMBLY) {
      out = Buffer.allocUnsafe(total);
    } else {
      this.which ^= 1;
      out = this.assembly[this.which];
      if (out.length < total) {
        out = Buffer.alloc(Math.min(MAX_RETAINED_ASSEMBLY, Math.max(total, out.length * 2)));
        this.assembly[this.which] = out;
      }
    }
    this.copyOut(out, total);
    this.buf = out;
    this.start = 0;
    this.end = total;
    return true;
  }

  /** True when the current frame lives in a reusable buffer and must be copied to be kept. */
  get frameIsTransient(): boolean {
    return this.buf === this.assembly[0] || this.buf === this.assembly[1];
  }

  private peek(n: number): Buffer {
    const out = Buffer.alloc(n);
    let off = 0;
    let p = this.pos;
    for (const c of this.chunks) {
      const take = Math.min(n - off, c.length - p);
      c.copy(out, off, p, p + take);
      off += take;
      p = 0;
      if (off === n) break;
    }
    return out;
  }

  private copyOut(out: Buffer, n: number): void {
    let off = 0;
    while (off < n) {
      const c = this.chunks[0];
      const take = Math.min(n - off, c.length - this.pos);
      c.copy(out, off, this.pos, this.pos + take);
      off += take;
      this.pos += take;
      if (this.pos === c.length) {
        this.chunks.shift();
        this.pos = 0;
      }
    }
    this.queued -= n;
  }
}

/**
 * Collects frames to forward and writes them in one go. Consecutive views on the same chunk
 * are merged into one range, so a chunk that passes through untouched is written as one slice
 * with no copy; views on a reader's reusable buffers are copied before that buffer is reused.
 */
export class WriteBatch {
  private parts: Buffer[] = [];
  private curBuf: Buffer | null = null;
  private curStart = 0;
  private curEnd = 0;
  private curTransient = false;
  size = 0;

  add(buf: Buffer, start: number, end: number, transient: boolean): void {
    if (this.curBuf === buf && this.curEnd === start && !transient && !this.curTransient) {
      this.curEnd = end;
    } else {
      this.close();
      this.curBuf = buf;
      this.curStart = start;
      this.curEnd = end;
      this.curTransient = transient;
    }
    this.size += end - start;
  }

  /** Adds a buffer the batch may keep (a freshly built message). */
  addOwned(b: Buffer): void {
    this.close();
    this.parts.push(b);
    this.size += b.length;
  }

  /**
   * Adds buf[start, start + length), memory the batch may keep, like addOwned, but continues the
   * open view when it starts right where that ends in the same memory (messages built one after
   * another in a slab, see slab.ts: the masked DataRow and CopyData messages, left in place by the
   * maskers' region methods), so a run of built messages is written as one slice, without a
   * concatenation and without a Buffer object per message. Only for memory never written again.
   */
  addRegion(buf: Buffer, start: number, length: number): void {
    const cur = this.curBuf;
    const at = buf.byteOffset + start;
    if (cur !== null && !this.curTransient && cur.buffer === buf.buffer && cur.byteOffset + this.curEnd === at && this.curEnd + length <= cur.length) {
      this.curEnd += length;
    } else {
      this.close();
      // Open the view over the rest of the memory, so later messages built behind this one extend it.
      this.curBuf = Buffer.from(buf.buffer, at, buf.buffer.byteLength - at);
      this.curStart = 0;
      this.curEnd = length;
      this.curTransient = false;
    }
    this.size += length;
  }

  private close(): void {
    if (this.curBuf) {
      const view = this.curBuf.subarray(this.curStart, this.curEnd);
      this.parts.push(this.curTransient ? Buffer.from(view) : view);
      this.curBuf = null;
    }
  }

  /** The batched bytes as one buffer (null when empty); resets the batch. */
  take(): Buffer | null {
    const parts = this.takeParts();
    if (parts.length === 0) return null;
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }

  /**
   * Writes the batched bytes to `out` in one go and resets the batch; returns what `out.write()`
   * returned (false: `out` is above its high-water mark), true when there was nothing to write.
   * A large batch in a few parts (a message that straddled two reads, then the rest of a 64 KiB
   * chunk) goes out corked, as one writev, instead of being concatenated first: a copy of every
   * byte of the chunk saved. A small batch (a statement's result: a masked row between relayed
   * messages) or one in many parts is concatenated: the copy is cheaper there than a writev.
   */
  writeTo(out: Writable): boolean {
    const size = this.size;
    const parts = this.takeParts();
    const n = parts.length;
    if (n === 0) return true;
    if (n === 1) return out.write(parts[0]);
    if (n > WRITEV_MAX_PARTS || size < WRITEV_MIN_BYTES) return out.write(Buffer.concat(parts));
    out.cork();
    let ok = true;
    for (let i = 0; i < n; i++) ok = out.write(parts[i]);
    out.uncork();
    return ok;
  }

  /** Drops what is batched (the peer is gone). */
  clear(): void {
    this.takeParts();
  }

  private takeParts(): Buffer[] {
    this.close();
    const parts = this.parts;
    if (parts.length > 0) this.parts = [];
    this.size = 0;
    return parts;
  }
}

/** WriteBatch.writeTo() writes corked (writev) at most this many parts, of at least this many bytes in all. */
const WRITEV_MAX_PARTS = 8;
const WRITEV_MIN_BYTES = 16_384;

export function describeType(t: number): string {
  return t >= 0x20 && t < 0x7f ? `'${String.fromCharCode(t)}'` : `0x${t.toString(16).padStart(2, '0')}`;
}

/**
 * Reads a NUL-terminated string at `off`; returns the string and the offset after the NUL. The
 * bytes must be valid UTF-8 (the only client encoding Airlock allows): a lossy decode could make
 * two different names (statements, portals) or texts look the same to Airlock but not to the server.
 */
export function readCString(buf: Buffer, off: number, end: number): [string, number] {
  const nul = buf.indexOf(0, off);
  if (nul < 0 || nul >= end) throw new ProtocolError('malformed message: missing string terminator');
  if (!validUtf8(buf, off, nul)) throw new ProtocolError('malformed message: a string is not valid UTF-8 (Airlock sessions use client_encoding UTF8)');
  return [nul === off ? '' : buf.toString('utf8', off, nul), nul + 1];
}

/** Whether the NUL-terminated string at `off` is valid UTF-8 (checked on the bytes, before any decoding). */
export function isUtf8CString(buf: Buffer, off: number, end: number): boolean {
  const nul = buf.indexOf(0, off);
  if (nul < 0 || nul >= end) throw new ProtocolError('malformed message: missing string terminator');
  return validUtf8(buf, off, nul);
}

/** Up to this many bytes, an all-ASCII check in JS beats allocating a view for isUtf8. */
const SHORT_STRING = 128;

/**
 * Whether buf[off, to) is valid UTF-8. Names and short statements (nearly all of them ASCII) are
 * checked byte by byte without a Buffer view per string: ASCII is always valid UTF-8. Anything
 * else goes to isUtf8 as before.
 */
function validUtf8(buf: Buffer, off: number, to: number): boolean {
  if (to - off <= SHORT_STRING) {
    let i = off;
    while (i < to && buf[i] < 0x80) i++;
    if (i === to) return true;
  }
  return isUtf8(buf.subarray(off, to));
}
