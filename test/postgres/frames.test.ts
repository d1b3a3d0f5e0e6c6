// Frame scanning: message boundaries across arbitrary chunking, zero-copy views for frames
// inside a chunk, safe copies for assembled frames, and length validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { FrameReader, ProtocolError, WriteBatch, MAX_FRONTEND_MESSAGE, isUtf8CString, readCString } from '../../gateway/postgres/frames.ts';

function msg(type: string, body: string): Buffer {
  const b = Buffer.from(body);
  const out = Buffer.alloc(5 + b.length);
  out.write(type, 0, 'latin1');
  out.writeInt32BE(4 + b.length, 1);
  b.copy(out, 5);
  return out;
}

function drain(r: FrameReader): Array<{ type: string; body: string }> {
  const out: Array<{ type: string; body: string }> = [];
  while (r.next()) out.push({ type: String.fromCharCode(r.type), body: r.buf.toString('utf8', r.start + 5, r.end) });
  return out;
}

test('frames split at every possible byte boundary come out whole and in order', () => {
  const stream = Buffer.concat([msg('Q', 'SELECT 1\0'), msg('S', ''), msg('P', 'x'.repeat(300)), msg('X', '')]);
  const expected = [
    { type: 'Q', body: 'SELECT 1\0' },
    { type: 'S', body: '' },
    { type: 'P', body: 'x'.repeat(300) },
    { type: 'X', body: '' },
  ];
  for (let a = 1; a < stream.length; a++) {
    for (const b of [a + 1, a + 7, stream.length]) {
      const r = new FrameReader(MAX_FRONTEND_MESSAGE, 'frontend');
      const got: Array<{ type: string; body: string }> = [];
      for (const piece of [stream.subarray(0, a), stream.subarray(a, Math.min(b, stream.length)), stream.subarray(Math.min(b, stream.length))]) {
        r.push(piece);
        got.push(...drain(r));
      }
      assert.deepEqual(got, expected, `split at ${a}/${b}`);
      assert.equal(r.pending, 0);
    }
  }
});

test('a frame inside one chunk is a view on that chunk (no copy)', () => {
  const chunk = Buffer.concat([msg('Q', 'a\0'), msg('Q', 'b\0')]);
  const r = new FrameReader(MAX_FRONTEND_MESSAGE, 'frontend');
  r.push(chunk);
  assert.ok(r.next());
  assert.equal(r.buf, chunk);
  assert.equal(r.frameIsTransient, false);
  assert.ok(r.next());
  assert.equal(r.buf, chunk);
  assert.equal(r.start, 7);
  assert.equal(r.next(), false);
});

test('a frame spanning chunks is assembled; two assembled frames in a row do not overwrite each other', () => {
  const a = msg('D', 'first-frame');
  const b = msg('D', 'second-frame');
  const r = new FrameReader(MAX_FRONTEND_MESSAGE, 'frontend');
  // a spans chunk 1..2, b spans chunk 2..3
  r.push(a.subarray(0, 4));
  r.push(Buffer.concat([a.subarray(4), b.subarray(0, 3)]));
  r.push(b.subarray(3));
  const batch = new WriteBatch();
  assert.ok(r.next());
  assert.ok(r.frameIsTransient);
  batch.add(r.buf, r.start, r.end, r.frameIsTransient);
  assert.ok(r.next());
  batch.add(r.buf, r.start, r.end, r.frameIsTransient);
  assert.deepEqual(batch.take(), Buffer.concat([a, b]));
});

test('the write batch merges adjacent views of one chunk into a single slice', () => {
  const chunk = Buffer.concat([msg('Q', 'a\0'), msg('S', ''), msg('H', '')]);
  const r = new FrameReader(MAX_FRONTEND_MESSAGE, 'frontend');
  r.push(chunk);
  const batch = new WriteBatch();
  while (r.next()) batch.add(r.buf, r.start, r.end, r.frameIsTransient);
  const out = batch.take()!;
  assert.equal(out.buffer, chunk.buffer, 'no copy for a chunk that passes through');
  assert.deepEqual(out, chunk);
  assert.equal(batch.take(), null);
});

/** A socket stand-in that records each write() and each writev() it is handed; like a socket, it completes writes later. */
function recordingSink(highWaterMark = 1 << 20): { sink: Writable; calls: Array<{ writev: boolean; chunks: Buffer[] }> } {
  const calls: Array<{ writev: boolean; chunks: Buffer[] }> = [];
  const sink = new Writable({
    highWaterMark,
    write(chunk: Buffer, _enc, cb) {
      calls.push({ writev: false, chunks: [chunk] });
      setImmediate(cb);
    },
    writev(chunks, cb) {
      calls.push({ writev: true, chunks: chunks.map((c) => c.chunk as Buffer) });
      setImmediate(cb);
    },
  });
  return { sink, calls };
}

test('writeTo: a message that straddled two reads and the rest of a large chunk go out as one writev, the chunk not copied', () => {
  const a = msg('D', 'a'.repeat(40));
  const b = msg('D', 'b'.repeat(20_000));
  const c = msg('C', 'SELECT 2\0');
  const r = new FrameReader(MAX_FRONTEND_MESSAGE, 'frontend');
  r.push(a.subarray(0, 10));
  const chunk = Buffer.concat([a.subarray(10), b, c]);
  r.push(chunk);
  const batch = new WriteBatch();
  while (r.next()) batch.add(r.buf, r.start, r.end, r.frameIsTransient);
  const { sink, calls } = recordingSink();
  assert.equal(batch.writeTo(sink), true);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].writev, true, 'corked: one writev for both parts');
  assert.deepEqual(Buffer.concat(calls[0].chunks), Buffer.concat([a, b, c]));
  assert.equal(calls[0].chunks[1].buffer, chunk.buffer, 'the chunk goes out as a view of itself, not a copy');
  assert.equal(batch.size, 0);
  assert.equal(batch.writeTo(sink), true, 'nothing batched: nothing written');
  assert.equal(calls.length, 1);
});

test('writeTo: a small result in a few parts (a masked row between relayed messages) is one concatenated write', () => {
  const chunk = Buffer.concat([msg('T', 'x'.repeat(20)), msg('D', 'secret'), msg('C', 'SELECT 1\0'), msg('Z', 'I')]);
  const masked = msg('D', '******');
  const batch = new WriteBatch();
  batch.add(chunk, 0, 25, false);
  batch.addOwned(masked);
  batch.add(chunk, 36, chunk.length, false);
  const { sink, calls } = recordingSink();
  assert.equal(batch.writeTo(sink), true);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].writev, false, 'small: a copy is cheaper than a writev');
  assert.deepEqual(calls[0].chunks[0], Buffer.concat([chunk.subarray(0, 25), masked, chunk.subarray(36)]));
});

test('writeTo: one part is one write; many parts are concatenated into one write; backpressure is reported', () => {
  const mem = Buffer.from('0123456789');
  const batch = new WriteBatch();
  batch.add(mem, 0, 10, false);
  const one = recordingSink();
  assert.equal(batch.writeTo(one.sink), true);
  assert.deepEqual(one.calls, [{ writev: false, chunks: [mem] }]);
  // Twenty separate pieces (a gap between each): one concatenated write, bytes in order.
  const pieces = Buffer.from('abcdefghijklmnopqrstuvwxyz'.repeat(2));
  for (let i = 0; i < 20; i++) batch.add(pieces, i * 2, i * 2 + 1, false);
  const many = recordingSink();
  assert.equal(batch.writeTo(many.sink), true);
  assert.equal(many.calls.length, 1);
  assert.equal(many.calls[0].writev, false);
  assert.equal(many.calls[0].chunks[0].toString(), 'acegikmoqsuwyacegikm');
  // Above the sink's high-water mark, written as one buffer or corked: false, as write() says.
  const big = Buffer.alloc(61_000, 0x62);
  for (const [parts, each] of [[1, 1], [3, 1], [20, 1], [3, 20_000]]) {
    for (let i = 0; i < parts; i++) batch.add(big, i * (each + 1), i * (each + 1) + each, false);
    const full = recordingSink(2);
    assert.equal(batch.writeTo(full.sink), parts * each < 2, `${parts} part(s) of ${each} byte(s)`);
    assert.equal(full.calls[0].writev, parts === 3 && each === 20_000, `${parts} part(s) of ${each} byte(s)`);
  }
});

test('lengths below 4 and above the maximum are protocol errors, detected from the header alone', () => {
  const r = new FrameReader(MAX_FRONTEND_MESSAGE, 'frontend');
  r.push(Buffer.from([0x51, 0, 0, 0, 3]));
  assert.throws(() => r.next(), (e: unknown) => e instanceof ProtocolError && /invalid frontend message length 3 for message type 'Q'/.test(e.message));
  const big = new FrameReader(MAX_FRONTEND_MESSAGE, 'frontend');
  const h = Buffer.alloc(5);
  h[0] = 0x51;
  h.writeInt32BE(MAX_FRONTEND_MESSAGE + 1, 1);
  big.push(h);
  assert.throws(() => big.next(), new RegExp(`invalid frontend message length ${MAX_FRONTEND_MESSAGE + 1} for message type 'Q': larger than the limit of ${MAX_FRONTEND_MESSAGE} bytes`));
  assert.equal(MAX_FRONTEND_MESSAGE, 16 * 1024 * 1024, 'the default post-authentication limit is 16 MiB');
});

test('a large frame arriving in many chunks is assembled once, into a buffer of its own that is not kept', () => {
  const r = new FrameReader(MAX_FRONTEND_MESSAGE, 'frontend');
  const body = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < body.length; i++) body[i] = 0x61 + (i % 26);
  const whole = msg('d', body.toString('latin1'));
  let frames = 0;
  for (let off = 0; off < whole.length; off += 4096) {
    r.push(whole.subarray(off, Math.min(off + 4096, whole.length)));
    // Until the last chunk, nothing is copied: next() only looks at the header.
    if (r.next()) frames++;
    else assert.equal(r.pending, Math.min(off + 4096, whole.length));
  }
  assert.equal(frames, 1);
  assert.deepEqual(r.buf.subarray(r.start, r.end), whole);
  assert.equal(r.frameIsTransient, false, 'a big frame gets its own buffer (freed with it), not a reusable one that would stay this big');
  r.push(msg('Q', 'SELECT 1\0'));
  assert.ok(r.next());
  assert.equal(r.type, 0x51);
});

test('an incomplete frame waits for more data', () => {
  const r = new FrameReader(MAX_FRONTEND_MESSAGE, 'frontend');
  const m = msg('Q', 'SELECT 1\0');
  r.push(m.subarray(0, 2));
  assert.equal(r.next(), false);
  r.push(m.subarray(2, 8));
  assert.equal(r.next(), false);
  r.push(m.subarray(8));
  assert.ok(r.next());
  assert.equal(r.end - r.start, m.length);
});

test('strings are decoded only when they are valid UTF-8, short (ASCII fast path) or long', () => {
  for (const len of [0, 1, 127, 128, 129, 4000]) {
    const ascii = Buffer.concat([Buffer.from('x'.repeat(len)), Buffer.from([0])]);
    assert.deepEqual(readCString(ascii, 0, ascii.length), ['x'.repeat(len), len + 1]);
    assert.equal(isUtf8CString(ascii, 0, ascii.length), true);
    const multi = Buffer.concat([Buffer.from(`${'x'.repeat(len)}é€`), Buffer.from([0])]);
    assert.equal(readCString(multi, 0, multi.length)[0], `${'x'.repeat(len)}é€`);
    // A lone continuation byte, an overlong '/', a truncated sequence: anywhere in the string.
    for (const bad of [[0x80], [0xc0, 0xaf], [0xe2, 0x82]]) {
      for (const at of [0, Math.floor(len / 2), len]) {
        const b = Buffer.concat([Buffer.from('x'.repeat(at)), Buffer.from(bad), Buffer.from('x'.repeat(len - at)), Buffer.from([0])]);
        assert.equal(isUtf8CString(b, 0, b.length), false, `len ${len} bad ${bad} at ${at}`);
        assert.throws(() => readCString(b, 0, b.length), ProtocolError);
      }
    }
  }
  // The terminator must lie inside the frame.
  assert.throws(() => readCString(Buffer.from('abc\0'), 0, 3), ProtocolError);
});

test('addRegion: messages built back to back in one buffer go out as one slice; anything else is not merged', () => {
  const mem = Buffer.alloc(64);
  mem.write('AAAABBBBCCCCDDDD', 'latin1');
  const batch = new WriteBatch();
  batch.addRegion(mem, 0, 4);
  batch.addRegion(mem, 4, 4);
  batch.addRegion(mem, 8, 4);
  const out = batch.take()!;
  assert.equal(out.toString('latin1'), 'AAAABBBBCCCC');
  assert.equal(out.buffer, mem.buffer, 'one view of the memory, not a copy');
  // A gap, another buffer, or relayed bytes in between: separate parts, same bytes in order.
  const other = Buffer.from('XY');
  const chunk = Buffer.from('relay');
  batch.addRegion(mem, 0, 4);
  batch.addRegion(mem, 8, 4);
  batch.addRegion(other, 0, other.length);
  batch.add(chunk, 0, chunk.length, false);
  batch.addRegion(mem, 12, 4);
  assert.equal(batch.size, 4 + 4 + 2 + 5 + 4);
  assert.equal(batch.take()!.toString('latin1'), 'AAAACCCCXYrelayDDDD');
  assert.equal(batch.take(), null);
});

test('addRegion: offsets are relative to the Buffer passed, also inside a subarray', () => {
  const mem = Buffer.alloc(64);
  mem.write('AAAABBBBCCCCDDDD', 'latin1');
  const batch = new WriteBatch();
  // A subarray starting at 4 of the same memory.
  const sub = mem.subarray(4);
  batch.addRegion(mem, 0, 4);
  batch.addRegion(sub, 0, 4); // = mem[4, 8): continues
  batch.addRegion(sub, 8, 4); // = mem[12, 16): a gap, not merged
  const chunk = Buffer.from('relay');
  batch.add(chunk, 0, chunk.length, false);
  batch.addRegion(Buffer.from('XY'), 0, 2);
  assert.equal(batch.size, 4 + 4 + 4 + 5 + 2);
  assert.equal(batch.take()!.toString('latin1'), 'AAAABBBBDDDDrelayXY');
  assert.equal(batch.take(), null);
});
