// The queue of expected upstream responses: FIFO order, indexed access and scans behave like the
// array it replaced, and shift stays O(1) (counted in element moves, never timed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Deque } from '../../gateway/postgres/expect-queue.ts';

test('a deque is first in, first out across wrap-around and growth', () => {
  const q = new Deque<number>(4);
  const model: number[] = [];
  let next = 0;
  // Interleave pushes and shifts so the head wraps many times while the buffer grows.
  for (let round = 0; round < 200; round++) {
    for (let i = 0; i < (round % 7) + 1; i++) {
      q.push(next);
      model.push(next++);
    }
    for (let i = 0; i < (round % 5); i++) assert.equal(q.shift(), model.shift());
    assert.equal(q.length, model.length);
    assert.equal(q.first(), model[0]);
    assert.equal(q.last(), model[model.length - 1]);
    for (let i = 0; i < model.length; i += 3) assert.equal(q.at(i), model[i]);
    assert.deepEqual([...q], model);
  }
  assert.equal(q.at(-1), undefined);
  assert.equal(q.at(q.length), undefined);
});

test('find, some and someFrom scan from the head', () => {
  const q = new Deque<{ k: string; n: number }>();
  for (let n = 0; n < 10; n++) q.push({ k: n % 3 === 0 ? 'sync' : 'parse', n });
  q.shift();
  assert.equal(q.find((e) => e.k === 'sync')?.n, 3);
  assert.equal(q.some((e) => e.n === 9), true);
  assert.equal(q.some((e) => e.n === 0), false, 'shifted elements are gone');
  // Indexes count from the head: n=1 is at 0, so n=3 is at 2 and n=9 (the last) at 8.
  assert.equal(q.someFrom(2, (e) => e.n === 3), true);
  assert.equal(q.someFrom(3, (e) => e.n === 3), false);
  assert.equal(q.someFrom(8, (e) => e.k === 'sync'), true);
  assert.equal(q.someFrom(9, () => true), false);
  q.clear();
  assert.equal(q.length, 0);
  assert.equal(q.shift(), undefined);
});

test('100k pushes and shifts stay linear: the backing buffer is reallocated only log2(n) times', () => {
  const q = new Deque<number>();
  const sizes = new Set<number>();
  for (let i = 0; i < 100_000; i++) {
    q.push(i);
    sizes.add((q as unknown as { buf: unknown[] }).buf.length);
  }
  assert.ok(sizes.size <= 14, `grew ${sizes.size} times`);
  let sum = 0;
  for (let i = 0; i < 100_000; i++) sum += q.shift()!;
  assert.equal(sum, (100_000 * 99_999) / 2);
  assert.equal(q.length, 0);
  // A shift never moves the other elements: the buffer keeps its size and the head just advances.
  assert.equal((q as unknown as { buf: unknown[] }).buf.length, Math.max(...sizes));
});
