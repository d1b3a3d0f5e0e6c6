import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { SqliteStore, StoreOpenError, SCHEMA_VERSION, MAX_TEXT_CHARS } from '../../gateway/recording/sqlite-store.ts';
import type { OperationRecord, SessionStart } from '../../gateway/recording/store.ts';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'airlock-store-'));
}

function session(id: string, startedAt: Date, over: Partial<SessionStart> = {}): SessionStart {
  return { id, protocol: 'postgres', identity: 'agent-7', groups: ['agents'], connection: 'shop', clientAddress: '127.0.0.1:50000', startedAt, ...over };
}

function op(sessionId: string, seq: number, over: Partial<OperationRecord> = {}): OperationRecord {
  return {
    sessionId,
    seq,
    at: new Date(Date.UTC(2026, 10, 24, 12, 0, seq)),
    text: `SELECT ${seq}`,
    kind: 'read',
    classification: { tables: ['public.customers'], statementTypes: ['SelectStmt'] },
    decision: 'allow',
    maskedColumns: [],
    ...over,
  };
}

async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('SqliteStore', () => {
  test('round-trips a session, its operations and its end exactly', (t) => {
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const store = SqliteStore.open(join(dir, 'nested', 'deeper', 'airlock.db'));
    t.after(() => store.close());

    const started = new Date('2026-11-24T10:00:00.123Z');
    store.startSession(session('s1', started, { groups: ['agents', 'readers'] }));
    const masked = op('s1', 1, {
      decision: 'mask',
      rule: 'mask-pii',
      rows: 10,
      bytes: 2048,
      durationMs: 3.25,
      maskedColumns: ['public.customers.email', 'detector:card@notes', 'public.customers.card_number'],
    });
    const held = op('s1', 2, {
      kind: 'write',
      text: "UPDATE orders SET status = 'refunded' WHERE id = 7",
      decision: 'review',
      rule: 'review-writes',
      reason: 'writes need approval',
      rows: 1,
      approval: { requestId: 'apr-1', outcome: 'approved', approvers: ['alice', 'bob'] },
    });
    const denied = op('s1', 3, { kind: 'ddl', decision: 'deny', rule: 'block-destructive-ddl', reason: 'DROP is blocked', error: undefined });
    store.recordOperation(masked);
    store.recordOperation(held);
    store.recordOperation(denied);
    store.endSession('s1', new Date('2026-11-24T10:05:00Z'), 'client terminated', { toClient: 4096, fromClient: 512 });

    const got = store.getSession('s1');
    assert.ok(got);
    assert.deepEqual(got.session, {
      instance: store.instance.id, // the gateway instance that recorded it
      id: 's1',
      protocol: 'postgres',
      identity: 'agent-7',
      groups: ['agents', 'readers'],
      connection: 'shop',
      clientAddress: '127.0.0.1:50000',
      startedAt: started,
      endedAt: new Date('2026-11-24T10:05:00Z'),
      endReason: 'client terminated',
      bytesToClient: 4096,
      bytesFromClient: 512,
      operationCount: 3,
      deniedCount: 1,
      reviewCount: 1,
      maskedCount: 1,
      errorCount: 0,
    });
    assert.deepEqual(got.operations, [masked, held, { ...denied, error: undefined }].map(stripUndefined));
    assert.deepEqual(got.operations[0].maskedColumns, ['public.customers.email', 'detector:card@notes', 'public.customers.card_number']);
    assert.deepEqual(got.operations[1].approval, { requestId: 'apr-1', outcome: 'approved', approvers: ['alice', 'bob'] });
    assert.equal(store.getSession('nope'), undefined);
    assert.deepEqual(store.stats(), { writes: 5, failures: 0, pending: 0, dropped: 0, lastError: undefined });
  });

  test('returns operations ordered by seq whatever the write order, and a rewrite of a seq replaces it', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    store.startSession(session('s', new Date()));
    for (const seq of [3, 1, 4, 2]) store.recordOperation(op('s', seq));
    // A held operation is written when held, then again with its outcome.
    store.recordOperation(op('s', 5, { decision: 'review', rule: 'r', reason: 'held' }));
    store.recordOperation(op('s', 5, { decision: 'review', rule: 'r', reason: 'held', rows: 3, approval: { requestId: 'q', outcome: 'rejected', approvers: ['carol'], reason: 'too broad' } }));
    const got = store.getSession('s');
    assert.deepEqual(got?.operations.map((o) => o.seq), [1, 2, 3, 4, 5]);
    assert.equal(got?.operations[4].rows, 3);
    assert.deepEqual(got?.operations[4].approval, { requestId: 'q', outcome: 'rejected', approvers: ['carol'], reason: 'too broad' });
    assert.equal(got?.session && 'operationCount' in got.session ? got.session.operationCount : -1, 5);
  });

  test('lists sessions newest first with counts, filtered by identity and connection, limited', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    const at = (m: number) => new Date(Date.UTC(2026, 10, 24, 9, m));
    store.startSession(session('a', at(1), { identity: 'agent-7', connection: 'shop' }));
    store.startSession(session('c', at(3), { identity: 'dana', connection: 'shop' }));
    store.startSession(session('b', at(2), { identity: 'agent-7', connection: 'billing' }));
    store.recordOperation(op('a', 1));
    store.recordOperation(op('a', 2, { decision: 'deny', rule: 'x', reason: 'y' }));
    store.recordOperation(op('a', 3, { decision: 'deny', rule: 'x', reason: 'y' }));
    store.recordOperation(op('a', 4, { error: 'row limit reached' }));
    store.recordOperation(op('c', 1, { maskedColumns: ['public.customers.email'] }));

    const all = store.listSessions();
    assert.deepEqual(all.map((s) => s.id), ['c', 'b', 'a']);
    const a = all.find((s) => s.id === 'a');
    assert.deepEqual(
      { ops: a?.operationCount, denied: a?.deniedCount, errors: a?.errorCount, masked: a?.maskedCount },
      { ops: 4, denied: 2, errors: 1, masked: 0 },
    );
    assert.equal(all.find((s) => s.id === 'c')?.maskedCount, 1);
    assert.equal(all.find((s) => s.id === 'b')?.operationCount, 0);
    assert.deepEqual(store.listSessions({ identity: 'agent-7' }).map((s) => s.id), ['b', 'a']);
    assert.deepEqual(store.listSessions({ connection: 'shop' }).map((s) => s.id), ['c', 'a']);
    assert.deepEqual(store.listSessions({ identity: 'agent-7', connection: 'shop' }).map((s) => s.id), ['a']);
    assert.deepEqual(store.listSessions({ limit: 2 }).map((s) => s.id), ['c', 'b']);
    assert.deepEqual(store.listSessions({ identity: 'nobody' }), []);
  });

  test('keeps audit events in time order, by subject or all', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    const at = (s: number) => new Date(Date.UTC(2026, 10, 24, 9, 0, s));
    store.recordAudit({ at: at(5), kind: 'approval.decided', subject: 'apr-1', actor: 'alice', detail: { outcome: 'approved', valid: true } });
    store.recordAudit({ at: at(1), kind: 'approval.requested', subject: 'apr-1', actor: 'agent-7', detail: { rule: 'review-writes' } });
    store.recordAudit({ at: at(3), kind: 'approval.attempt', subject: 'apr-2', actor: 'agent-7', detail: { valid: false, why: 'self-approval' } });
    store.recordAudit({ at: at(4), kind: 'grant.used', subject: 'apr-1', detail: {} });

    assert.deepEqual(store.listAudit('apr-1'), [
      { at: at(1), kind: 'approval.requested', subject: 'apr-1', actor: 'agent-7', detail: { rule: 'review-writes' } },
      { at: at(4), kind: 'grant.used', subject: 'apr-1', detail: {} },
      { at: at(5), kind: 'approval.decided', subject: 'apr-1', actor: 'alice', detail: { outcome: 'approved', valid: true } },
    ]);
    assert.deepEqual(store.listAudit().map((e) => e.kind), ['approval.requested', 'approval.attempt', 'grant.used', 'approval.decided']);
    assert.deepEqual(store.listAudit('apr-404'), []);
  });

  test('reopening migrates nothing twice and keeps the data; the file is private to its owner', (t) => {
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'airlock.db');
    const first = SqliteStore.open(path);
    first.startSession(session('keep', new Date()));
    assert.equal(first.schemaVersion(), SCHEMA_VERSION);
    first.close();
    first.close(); // idempotent

    const second = SqliteStore.open(path);
    t.after(() => second.close());
    assert.equal(second.schemaVersion(), SCHEMA_VERSION);
    assert.deepEqual(second.listSessions().map((s) => s.id), ['keep']);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const raw = new Database(path, { readonly: true });
    t.after(() => raw.close());
    assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
  });

  test('two stores open on one file see each other’s writes once committed (writes of one turn commit together)', (t) => {
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'shared.db');
    const gateway = SqliteStore.open(path);
    const cli = SqliteStore.open(path);
    t.after(() => {
      gateway.close();
      cli.close();
    });
    gateway.startSession(session('live', new Date()));
    gateway.recordOperation(op('live', 1));
    assert.equal(cli.getSession('live'), undefined, 'not committed before the end of the turn');
    gateway.flush();
    assert.deepEqual(cli.getSession('live')?.operations.map((o) => o.seq), [1]);
    cli.recordAudit({ at: new Date(), kind: 'note', subject: 'live', detail: {} });
    cli.flush();
    assert.equal(gateway.listAudit('live').length, 1);
  });

  test('processes opening a brand-new file at once all migrate it safely and lose no writes', async (t) => {
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'fresh', 'shared.db');
    const go = join(dir, 'go');
    const storeModule = fileURLToPath(new URL('../../gateway/recording/sqlite-store.ts', import.meta.url));
    const script = join(dir, 'writer.mts');
    writeFileSync(
      script,
      `import { existsSync } from 'node:fs';
import { SqliteStore } from ${JSON.stringify(storeModule)};
const id = process.argv[2];
// Start line: both writers open the file within a millisecond of each other.
process.stdout.write('ready\\n');
const tick = new Int32Array(new SharedArrayBuffer(4));
while (!existsSync(${JSON.stringify(go)})) Atomics.wait(tick, 0, 0, 1);
const s = SqliteStore.open(${JSON.stringify(path)});
s.startSession({ id, protocol: 'postgres', identity: id, groups: [], connection: 'c', clientAddress: 'x', startedAt: new Date() });
for (let i = 1; i <= 300; i++) s.recordOperation({ sessionId: id, seq: i, at: new Date(), text: 'select ' + i, kind: 'read', classification: {}, decision: 'allow', maskedColumns: [] });
const deadline = Date.now() + 10000;
while (s.stats().pending > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
const st = s.stats();
s.close();
process.stdout.write(JSON.stringify(st));
`,
    );
    const run = (id: string) => {
      const child = spawn(process.execPath, ['--import', 'tsx', script, id], { cwd: process.cwd(), env: { ...process.env, AIRLOCK_LOG_LEVEL: 'silent' } });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      return {
        ready: () => out.startsWith('ready\n'),
        done: new Promise<{ code: number | null; out: string; err: string }>((resolve) => child.on('exit', (code) => resolve({ code, out: out.slice('ready\n'.length), err }))),
      };
    };
    const children = [run('child-1'), run('child-2')];
    await waitFor(() => children.every((c) => c.ready()), 'both writers to load', 60_000);
    writeFileSync(go, '');
    for (const r of await Promise.all(children.map((c) => c.done))) {
      assert.equal(r.code, 0, r.err);
      assert.equal(JSON.parse(r.out).dropped, 0);
    }
    const store = SqliteStore.open(path);
    t.after(() => store.close());
    assert.equal(store.schemaVersion(), SCHEMA_VERSION);
    assert.equal(store.getSession('child-1')?.operations.length, 300);
    assert.equal(store.getSession('child-2')?.operations.length, 300);
    assert.deepEqual(store.verify().problems, [], 'two writers share one unbroken chain');
  });

  test('a store open in this process keeps writing while another process writes', async (t) => {
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'shared.db');
    const storeModule = fileURLToPath(new URL('../../gateway/recording/sqlite-store.ts', import.meta.url));
    const script = join(dir, 'writer.mts');
    writeFileSync(
      script,
      `import { SqliteStore } from ${JSON.stringify(storeModule)};
const s = SqliteStore.open(${JSON.stringify(path)});
s.startSession({ id: 'child', protocol: 'postgres', identity: 'child', groups: [], connection: 'c', clientAddress: 'x', startedAt: new Date() });
for (let i = 1; i <= 300; i++) s.recordOperation({ sessionId: 'child', seq: i, at: new Date(), text: 'select ' + i, kind: 'read', classification: {}, decision: 'allow', maskedColumns: [] });
const st = s.stats();
s.close();
process.stdout.write(JSON.stringify(st));
`,
    );
    const parent = SqliteStore.open(path);
    t.after(() => parent.close());
    const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: process.cwd(), env: { ...process.env, AIRLOCK_LOG_LEVEL: 'silent' } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));

    parent.startSession(session('parent', new Date()));
    for (let i = 1; i <= 300; i++) {
      parent.recordOperation(op('parent', i));
      if (i % 50 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(await exited, 0, err);
    await waitFor(() => parent.stats().pending === 0, 'parent writes to drain');
    assert.equal(JSON.parse(out).dropped, 0);
    assert.equal(parent.stats().dropped, 0);
    assert.equal(parent.getSession('parent')?.operations.length, 300);
    assert.equal(parent.getSession('child')?.operations.length, 300);
    assert.deepEqual(parent.verify().problems, [], 'two writers share one unbroken chain');
  });

  test('a write blocked by another process’s lock does not throw, is retried, and keeps its order', async (t) => {
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'locked.db');
    const store = SqliteStore.open(path, { busyTimeoutMs: 20 });
    t.after(() => store.close());
    store.startSession(session('s', new Date('2026-11-24T09:00:00Z')));
    store.flush();

    const other = new Database(path);
    t.after(() => other.close());
    other.exec('BEGIN IMMEDIATE'); // holds the write lock, like a long write from another gateway

    assert.doesNotThrow(() => store.recordOperation(op('s', 1)));
    assert.doesNotThrow(() => store.endSession('s', new Date('2026-11-24T09:01:00Z'), 'client terminated', { toClient: 1, fromClient: 2 }));
    assert.doesNotThrow(() => store.flush());
    assert.equal(store.stats().pending, 2);
    assert.ok(store.stats().failures >= 1);
    assert.match(store.stats().lastError ?? '', /record operation s#1.*(locked|busy)/i);

    other.exec('COMMIT');
    await waitFor(() => store.stats().pending === 0, 'the retry to write the queued records');
    const got = store.getSession('s');
    assert.deepEqual(got?.operations.map((o) => o.seq), [1]);
    assert.equal(got?.session.endReason, 'client terminated');
    assert.equal(store.stats().dropped, 0);
  });

  test('writes never throw on bad input; unserializable classification data is kept in a safe form', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    store.startSession(session('s', new Date()));
    const cyclic: Record<string, unknown> = { big: 10n };
    cyclic.self = cyclic;
    assert.doesNotThrow(() => store.recordOperation(op('s', 1, { classification: cyclic, at: new Date('not a date') })));
    const got = store.getSession('s')?.operations[0];
    assert.deepEqual(got?.classification, { big: '10', self: '[circular]' });
    assert.ok(got && Math.abs(got.at.getTime() - Date.now()) < 60_000, 'an invalid timestamp is recorded as now');
    store.close();
    assert.doesNotThrow(() => store.recordOperation(op('s', 2)));
    assert.equal(store.stats().dropped, 1);
  });

  test('finds sessions by id prefix', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    store.startSession(session('3f2a9c1e-aaaa', new Date(1000)));
    store.startSession(session('3f2a9c1e-bbbb', new Date(2000)));
    store.startSession(session('77aa0000-cccc', new Date(3000)));
    assert.deepEqual(store.findSessionIds('3f2a'), ['3f2a9c1e-bbbb', '3f2a9c1e-aaaa']);
    assert.deepEqual(store.findSessionIds('77'), ['77aa0000-cccc']);
    assert.deepEqual(store.findSessionIds('%'), []);
    assert.deepEqual(store.findSessionIds(''), []);
  });

  test('refuses a file from a newer Airlock, naming the file and both versions', (t) => {
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'future.db');
    const raw = new Database(path);
    raw.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    raw.close();
    assert.throws(
      () => SqliteStore.open(path),
      (e: unknown) =>
        e instanceof StoreOpenError && e.path === path && e.message.includes(`schema version ${SCHEMA_VERSION + 1}`) && e.message.includes(path),
    );
  });

  test('fails clearly at open when the location is unusable', (t) => {
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const blocker = join(dir, 'not-a-dir');
    writeFileSync(blocker, 'x');
    assert.throws(() => SqliteStore.open(join(blocker, 'airlock.db')), (e: unknown) => e instanceof StoreOpenError && e.message.includes(blocker));
    const garbage = join(dir, 'garbage.db');
    writeFileSync(garbage, 'this is not a database, just text long enough to look like a header........................................');
    assert.throws(() => SqliteStore.open(garbage), (e: unknown) => e instanceof StoreOpenError && e.message.includes(garbage));
  });

  test('read-only mode reads a migrated file, refuses one that is not, and drops writes without throwing', (t) => {
    const dir = tempDir();
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'airlock.db');
    const writer = SqliteStore.open(path);
    t.after(() => writer.close());
    writer.startSession(session('s', new Date()));
    writer.flush();
    const reader = SqliteStore.open(path, { readonly: true });
    t.after(() => reader.close());
    assert.deepEqual(reader.listSessions().map((s) => s.id), ['s']);
    assert.doesNotThrow(() => reader.startSession(session('t', new Date())));
    assert.doesNotThrow(() => reader.flush());
    assert.equal(reader.stats().dropped, 1);
    assert.deepEqual(writer.listSessions().map((s) => s.id), ['s']);

    const blank = join(dir, 'blank.db');
    new Database(blank).close();
    assert.throws(() => SqliteStore.open(blank, { readonly: true }), /schema version 0, older .* open it read-write once/);
    assert.throws(() => SqliteStore.open(join(dir, 'missing.db'), { readonly: true }), StoreOpenError);
  });

  test('prune removes sessions, their operations and audit events older than the cutoff only', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    const day = (d: number) => new Date(Date.UTC(2026, 10, d));
    store.startSession(session('old', day(1)));
    store.recordOperation(op('old', 1));
    store.endSession('old', day(2), 'done', { toClient: 0, fromClient: 0 });
    store.startSession(session('spans', day(9)));
    store.recordOperation(op('spans', 1));
    store.endSession('spans', day(11), 'done', { toClient: 0, fromClient: 0 });
    store.startSession(session('new', day(20)));
    store.recordOperation(op('new', 1));
    store.recordAudit({ at: day(3), kind: 'k', subject: 'old', detail: {} });
    store.recordAudit({ at: day(21), kind: 'k', subject: 'new', detail: {} });

    const pruned = store.prune(day(10));
    assert.deepEqual({ sessions: pruned.sessions, operations: pruned.operations, audit: pruned.audit }, { sessions: 1, operations: 1, audit: 1 });
    assert.deepEqual(store.listSessions().map((s) => s.id), ['new', 'spans']);
    assert.equal(store.getSession('old'), undefined);
    assert.equal(store.getSession('spans')?.operations.length, 1);
    assert.deepEqual(store.listAudit().map((e) => e.subject), ['new']);
    assert.throws(() => store.prune(new Date('nope')), RangeError);
  });

  test('keeps a huge statement up to a cap, marking what was cut', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    store.startSession(session('s', new Date()));
    const text = 'INSERT INTO t VALUES ' + '(1),'.repeat(300_000);
    store.recordOperation(op('s', 1, { text }));
    const got = store.getSession('s')?.operations[0].text ?? '';
    assert.ok(got.startsWith(text.slice(0, MAX_TEXT_CHARS)));
    assert.match(got, new RegExp(`\\[airlock: ${text.length - MAX_TEXT_CHARS} more characters not recorded\\]$`));
  });

  test('rejects a nonsensical listing limit instead of guessing', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    assert.throws(() => store.listSessions({ limit: Number('ten') }), /non-negative integer/);
    assert.throws(() => store.listSessions({ limit: -1 }), RangeError);
    assert.deepEqual(store.listSessions({ limit: 0 }), []);
  });
});

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
