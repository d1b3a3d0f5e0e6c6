// The SQLite store a running gateway uses: records are appended by a writer thread. What the
// relaying thread must still guarantee on its own: health that fails closed when the writer is
// gone or stalled, and reads that see every record handed over before them. (The store contract
// and durability tests run against this store too: store.test.ts, durability.test.ts.)
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { StoreOpenError } from '../../gateway/recording/sqlite-store.ts';
import { ThreadedSqliteStore } from '../../gateway/recording/sqlite-writer.ts';
import { AuditUnavailableError, type OperationRecord } from '../../gateway/recording/store.ts';

function op(seq: number): OperationRecord {
  return { sessionId: 's', seq, at: new Date(), text: `SELECT ${seq}`, kind: 'read', classification: { tables: ['public.t'] }, decision: 'allow', maskedColumns: [] };
}

function tempPath(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-writer-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'airlock.db');
}

async function waitFor(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('SQLite store with a writer thread', () => {
  test('records handed over in one turn are visible to the next read, in order, and the chain verifies', (t) => {
    const store = ThreadedSqliteStore.open(tempPath(t));
    t.after(() => store.close());
    store.startSession({ id: 's', protocol: 'postgres', identity: 'a', groups: [], connection: 'c', clientAddress: 'x', startedAt: new Date() });
    for (let i = 1; i <= 1500; i++) store.recordOperation(op(i));
    store.endSession('s', new Date(), 'client terminated', { toClient: 1, fromClient: 2 });
    const got = store.getSession('s');
    assert.deepEqual(got?.operations.map((o) => o.seq), Array.from({ length: 1500 }, (_, i) => i + 1));
    assert.equal(got?.session.endReason, 'client terminated');
    assert.deepEqual(store.verify().problems, []);
    assert.equal(store.stats().writes, 1502);
  });

  test('a writer thread that dies makes the store unhealthy at once and new work is refused; reads still answer', async (t) => {
    const store = ThreadedSqliteStore.open(tempPath(t));
    t.after(() => store.close());
    store.startSession({ id: 's', protocol: 'postgres', identity: 'a', groups: [], connection: 'c', clientAddress: 'x', startedAt: new Date() });
    store.flush();
    assert.equal(store.writable(), true);
    await store.crashWriterForTests();
    await waitFor(() => !store.health().ok, 'the store to notice');
    assert.match(store.health().reason ?? '', /writer thread exited/);
    assert.equal(store.writable(), false);
    assert.throws(() => store.assertWritable(), (e: unknown) => e instanceof AuditUnavailableError && e.sqlstate === '53100');
    store.recordOperation(op(1));
    store.flush();
    assert.equal(store.stats().dropped, 1, 'a record nothing can write is counted as dropped');
    assert.equal(store.listSessions().length, 1, 'what was written stays readable');
    assert.equal(await store.whenDrained(100), false);
  });

  test('a writer stalled inside SQLite (a lock held elsewhere, long busy timeout) is noticed from the relaying thread alone', async (t) => {
    const path = tempPath(t);
    const store = ThreadedSqliteStore.open(path, { busyTimeoutMs: 3000, maxPendingMs: 300 });
    t.after(() => store.close());
    store.startSession({ id: 's', protocol: 'postgres', identity: 'a', groups: [], connection: 'c', clientAddress: 'x', startedAt: new Date() });
    store.flush();
    const other = new Database(path);
    t.after(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    store.recordOperation(op(1));
    // The writer is blocked in SQLite's busy wait and cannot acknowledge; this thread keeps serving.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(store.writable(), true, 'a short wait is normal');
    await waitFor(() => !store.writable(), 'the unacknowledged record to cross maxPendingMs');
    assert.match(store.health().reason ?? '', /waited \d+ ms to be taken by the audit writer \(bound 300 ms\)/);
    other.exec('COMMIT');
    await waitFor(() => store.writable(), 'the writer to catch up');
    assert.equal(store.getSession('s')?.operations.length, 1);
  });

  test('a record that cannot cross to the writer is dropped alone and counted; the records around it are written', (t) => {
    const store = ThreadedSqliteStore.open(tempPath(t));
    t.after(() => store.close());
    store.startSession({ id: 's', protocol: 'postgres', identity: 'a', groups: [], connection: 'c', clientAddress: 'x', startedAt: new Date() });
    store.recordOperation(op(1));
    store.recordOperation({ ...op(2), classification: { oops: () => 'a function cannot be cloned' } });
    store.recordOperation(op(3));
    assert.deepEqual(store.getSession('s')?.operations.map((o) => o.seq), [1, 3]);
    assert.equal(store.stats().dropped, 1);
  });

  test('opening needs a file: :memory: and read-only are refused by name', () => {
    assert.throws(() => ThreadedSqliteStore.open(':memory:'), (e: unknown) => e instanceof StoreOpenError && /needs a file/.test(e.message));
    assert.throws(() => ThreadedSqliteStore.open('/tmp/x.db', { readonly: true }), StoreOpenError);
  });

  test('an unusable location fails at open with the path, before any thread starts', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-writer-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'not-a-directory');
    writeFileSync(file, '');
    assert.throws(() => ThreadedSqliteStore.open(join(file, 'airlock.db')), (e: unknown) => e instanceof StoreOpenError && e.message.includes(file));
  });
});
