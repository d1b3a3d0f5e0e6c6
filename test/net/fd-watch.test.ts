// File-descriptor watch: Node drops connections silently when accept() hits EMFILE (libuv's
// reserve-descriptor trick), so the gateway watches its own descriptor count against the limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openSync, closeSync } from 'node:fs';
import { fdLimit, openFds, watchFds } from '../../gateway/net/fd-watch.ts';

test('the limit and the open count come from the running process', () => {
  const limit = fdLimit();
  assert.ok(limit && limit > 0, 'Linux reports RLIMIT_NOFILE');
  const before = openFds()!;
  const fds = Array.from({ length: 5 }, () => openSync('/dev/null', 'r'));
  assert.equal(openFds(), before + 5);
  for (const fd of fds) closeSync(fd);
  assert.equal(openFds(), before);
});

test('the watch reports exhaustion once fewer than the margin are left, at a bounded rate', async () => {
  const limit = fdLimit()!;
  const open = openFds()!;
  const seen: { open: number; limit: number }[] = [];
  // A margin that leaves fewer than (limit - open) descriptors counts as exhausted now.
  const stop = watchFds((i) => seen.push(i), { intervalMs: 20, margin: limit - open + 1, everyMs: 10_000 });
  await new Promise((r) => setTimeout(r, 200));
  stop();
  assert.equal(seen.length, 1, 'reported once within everyMs');
  assert.equal(seen[0].limit, limit);
  assert.ok(seen[0].open >= open - 2);
  // With descriptors to spare nothing is reported.
  const quiet: unknown[] = [];
  const stop2 = watchFds((i) => quiet.push(i), { intervalMs: 20, margin: 1 });
  await new Promise((r) => setTimeout(r, 100));
  stop2();
  assert.equal(quiet.length, 0);
});
