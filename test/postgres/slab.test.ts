import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyBytes, int32, putInt32, slabAlloc } from '../../gateway/postgres/slab.ts';

test('slab regions never overlap and are never handed out again, across slab boundaries', () => {
  const held: Array<{ b: Buffer; fill: number }> = [];
  for (let i = 0; i < 20_000; i++) {
    const size = 1 + ((i * 37) % 300);
    const b = slabAlloc(size);
    assert.equal(b.length, size);
    b.fill(i & 0xff);
    held.push({ b, fill: i & 0xff });
  }
  // Every region still holds what was written into it: later allocations did not reuse it.
  for (const { b, fill } of held) assert.ok(b.every((x) => x === fill));
  const big = slabAlloc(100_000);
  assert.equal(big.length, 100_000);
});

test('copyBytes copies short and long ranges like Buffer#copy', () => {
  const src = Buffer.from(Array.from({ length: 300 }, (_, i) => i & 0xff));
  for (const [s, e] of [[0, 0], [3, 10], [0, 64], [1, 66], [10, 300]]) {
    const a = Buffer.alloc(400, 7);
    const b = Buffer.alloc(400, 7);
    assert.equal(copyBytes(src, s, e, a, 5), src.copy(b, 5, s, e));
    assert.deepEqual(a, b);
  }
});

test('int32 and putInt32 read and write big-endian int32 like Buffer, -1 (SQL NULL) included', () => {
  for (const v of [0, 1, -1, 255, 256, 0x7fffffff, -0x80000000, 123456789, -987654321]) {
    const a = Buffer.alloc(6);
    putInt32(a, 1, v);
    const b = Buffer.alloc(6);
    b.writeInt32BE(v, 1);
    assert.deepEqual(a, b);
    assert.equal(int32(b, 1), v);
  }
});
