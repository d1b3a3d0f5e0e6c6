// The audit store's contract, specified once and run against every backend (backends.ts): SQLite
// and PostgreSQL. Backend-specific behaviour (SQLite file modes and locks; PostgreSQL's shared
// database, writer thread and schema version table) follows.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_TEXT_CHARS, StoreOpenError } from '../../gateway/recording/sqlite-store.ts';
import { PostgresStore } from '../../gateway/recording/postgres-store.ts';
import { PG_SCHEMA_VERSION } from '../../gateway/recording/postgres-schema.ts';
import { parseCheckpoint } from '../../gateway/recording/chain.ts';
import { AuditUnavailableError, type OperationRecord, type SessionStart } from '../../gateway/recording/store.ts';
import { backends, postgresBackend, type AnyStore, type StoreLocation } from './backends.ts';

after(() => postgresBackend.stop());

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

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

async function waitFor(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const backend of backends) {
  describe(`audit store (${backend.name})`, () => {
    /** A fresh location and a store on it, both cleaned up after the test. */
    async function fresh(t: { after(fn: () => unknown): void }, opts = {}): Promise<{ store: AnyStore; loc: StoreLocation }> {
      const loc = await backend.location();
      const store = loc.open(opts);
      t.after(async () => {
        store.close();
        await loc.dispose();
      });
      return { store, loc };
    }

    test('round-trips a session, its operations and its end exactly', async (t) => {
      const { store } = await fresh(t);
      const started = new Date('2026-11-24T10:00:00.123Z');
      store.startSession(session('s1', started, { groups: ['agents', 'readers'] }));
      const masked = op('s1', 1, { decision: 'mask', rule: 'mask-pii', rows: 10, bytes: 2048, durationMs: 3.25, maskedColumns: ['public.customers.email', 'detector:card@notes'] });
      const held = op('s1', 2, {
        kind: 'write',
        text: "UPDATE orders SET status = 'refunded' WHERE id = 7",
        decision: 'review',
        rule: 'review-writes',
        reason: 'writes need approval',
        rows: 1,
        approval: { requestId: 'apr-1', outcome: 'approved', approvers: ['alice', 'bob'] },
      });
      const denied = op('s1', 3, { kind: 'ddl', decision: 'deny', rule: 'block-destructive-ddl', reason: 'DROP is blocked' });
      store.recordOperation(masked);
      store.recordOperation(held);
      store.recordOperation(denied);
      store.endSession('s1', new Date('2026-11-24T10:05:00Z'), 'client terminated', { toClient: 4096, fromClient: 512 });

      const got = store.getSession('s1');
      assert.ok(got);
      assert.deepEqual(got.session, {
        id: 's1', protocol: 'postgres', identity: 'agent-7', groups: ['agents', 'readers'], connection: 'shop', clientAddress: '127.0.0.1:50000',
        startedAt: started, endedAt: new Date('2026-11-24T10:05:00Z'), endReason: 'client terminated', bytesToClient: 4096, bytesFromClient: 512,
        operationCount: 3, deniedCount: 1, reviewCount: 1, maskedCount: 1, errorCount: 0,
      });
      assert.deepEqual(got.operations, [masked, held, denied].map(stripUndefined));
      assert.equal(store.getSession('nope'), undefined);
      assert.equal(await store.whenDrained(5000), true);
      assert.deepEqual({ ...store.stats(), lastError: undefined }, { writes: 5, failures: 0, pending: 0, dropped: 0, lastError: undefined });
    });

    test('returns operations ordered by seq whatever the write order, and a rewrite of a seq replaces it', async (t) => {
      const { store } = await fresh(t);
      store.startSession(session('s', new Date()));
      for (const seq of [3, 1, 4, 2]) store.recordOperation(op('s', seq));
      store.recordOperation(op('s', 5, { decision: 'review', rule: 'r', reason: 'held' }));
      store.recordOperation(op('s', 5, { decision: 'review', rule: 'r', reason: 'held', rows: 3, approval: { requestId: 'q', outcome: 'rejected', approvers: ['carol'], reason: 'too broad' } }));
      const got = store.getSession('s');
      assert.deepEqual(got?.operations.map((o) => o.seq), [1, 2, 3, 4, 5]);
      assert.equal(got?.operations[4].rows, 3);
      assert.deepEqual(got?.operations[4].approval, { requestId: 'q', outcome: 'rejected', approvers: ['carol'], reason: 'too broad' });
    });

    test('lists sessions newest first with counts, filtered by identity and connection, limited', async (t) => {
      const { store } = await fresh(t);
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
      assert.deepEqual({ ops: a?.operationCount, denied: a?.deniedCount, errors: a?.errorCount, masked: a?.maskedCount }, { ops: 4, denied: 2, errors: 1, masked: 0 });
      assert.equal(all.find((s) => s.id === 'c')?.maskedCount, 1);
      assert.deepEqual(store.listSessions({ identity: 'agent-7' }).map((s) => s.id), ['b', 'a']);
      assert.deepEqual(store.listSessions({ connection: 'shop' }).map((s) => s.id), ['c', 'a']);
      assert.deepEqual(store.listSessions({ limit: 2 }).map((s) => s.id), ['c', 'b']);
      assert.deepEqual(store.listSessions({ limit: 0 }), []);
      assert.throws(() => store.listSessions({ limit: -1 }), RangeError);
    });

    test('keeps audit events in time order, by subject or all', async (t) => {
      const { store } = await fresh(t);
      const at = (s: number) => new Date(Date.UTC(2026, 10, 24, 9, 0, s));
      store.recordAudit({ at: at(5), kind: 'approval.decided', subject: 'apr-1', actor: 'alice', detail: { outcome: 'approved', valid: true } });
      store.recordAudit({ at: at(1), kind: 'approval.requested', subject: 'apr-1', actor: 'agent-7', detail: { rule: 'review-writes' } });
      store.recordAudit({ at: at(3), kind: 'approval.attempt', subject: 'apr-2', actor: 'agent-7', detail: { valid: false } });
      store.recordAudit({ at: at(4), kind: 'grant.used', subject: 'apr-1', detail: {} });
      assert.deepEqual(store.listAudit('apr-1'), [
        { at: at(1), kind: 'approval.requested', subject: 'apr-1', actor: 'agent-7', detail: { rule: 'review-writes' } },
        { at: at(4), kind: 'grant.used', subject: 'apr-1', detail: {} },
        { at: at(5), kind: 'approval.decided', subject: 'apr-1', actor: 'alice', detail: { outcome: 'approved', valid: true } },
      ]);
      assert.deepEqual(store.listAudit().map((e) => e.kind), ['approval.requested', 'approval.attempt', 'grant.used', 'approval.decided']);
      assert.deepEqual(store.listAudit('apr-404'), []);
    });

    test('reopening keeps the data and migrates nothing twice', async (t) => {
      const loc = await backend.location();
      t.after(() => loc.dispose());
      const first = loc.open();
      first.startSession(session('keep', new Date()));
      first.close();
      first.close(); // idempotent
      const second = loc.open();
      t.after(() => second.close());
      assert.deepEqual(second.listSessions().map((s) => s.id), ['keep']);
      assert.equal(second.verify().ok, true);
    });

    test('writes never throw on bad input; odd values are kept in a storable form', async (t) => {
      const { store } = await fresh(t);
      store.startSession(session('s', new Date()));
      const cyclic: Record<string, unknown> = { big: 10n };
      cyclic.self = cyclic;
      assert.doesNotThrow(() => store.recordOperation(op('s', 1, { classification: cyclic, at: new Date('not a date') })));
      assert.doesNotThrow(() => store.recordOperation(op('s', 2, { text: 'SELECT 1 /* \u0000 */', reason: 'nul \u0000 inside' })));
      const got = store.getSession('s')?.operations ?? [];
      assert.deepEqual(got[0]?.classification, { big: '10', self: '[circular]' });
      assert.ok(got[0] && Math.abs(got[0].at.getTime() - Date.now()) < 60_000, 'an invalid timestamp is recorded as now');
      assert.equal(got.length, 2, 'a NUL character does not lose the record');
      assert.equal(store.verify().ok, true);
      store.close();
      assert.doesNotThrow(() => store.recordOperation(op('s', 3)));
      assert.ok(store.stats().dropped >= 1);
    });

    test('finds sessions by id prefix, taking the prefix literally', async (t) => {
      const { store } = await fresh(t);
      store.startSession(session('3f2a9c1e-aaaa', new Date(1000)));
      store.startSession(session('3f2a9c1e-bbbb', new Date(2000)));
      store.startSession(session('77aa0000-cccc', new Date(3000)));
      assert.deepEqual(store.findSessionIds('3f2a'), ['3f2a9c1e-bbbb', '3f2a9c1e-aaaa']);
      assert.deepEqual(store.findSessionIds('77'), ['77aa0000-cccc']);
      assert.deepEqual(store.findSessionIds('%'), []);
      assert.deepEqual(store.findSessionIds('_'), []);
      assert.deepEqual(store.findSessionIds(''), []);
    });

    test('keeps a huge statement up to a cap, marking what was cut', async (t) => {
      const { store } = await fresh(t);
      store.startSession(session('s', new Date()));
      const text = 'INSERT INTO t VALUES ' + '(1),'.repeat(300_000);
      store.recordOperation(op('s', 1, { text }));
      const got = store.getSession('s')?.operations[0].text ?? '';
      assert.ok(got.startsWith(text.slice(0, MAX_TEXT_CHARS)));
      assert.match(got, new RegExp(`\\[airlock: ${text.length - MAX_TEXT_CHARS} more characters not recorded\\]$`));
    });

    test('prune removes what ended before the cutoff only, the chain still verifies from a signed base, and a tampered chain is not pruned', async (t) => {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const { store, loc } = await fresh(t, { signingKey: privateKey });
      const day = (d: number) => new Date(Date.UTC(2026, 10, d));
      store.startSession(session('old', day(1)));
      store.recordOperation(op('old', 1, { at: day(1) }));
      store.endSession('old', day(2), 'done', { toClient: 0, fromClient: 0 });
      store.startSession(session('spans', day(9)));
      store.recordOperation(op('spans', 1, { at: day(9) }));
      store.endSession('spans', day(11), 'done', { toClient: 0, fromClient: 0 });
      store.startSession(session('new', day(20)));
      store.recordOperation(op('new', 1, { at: day(20) }));
      store.recordAudit({ at: day(3), kind: 'k', subject: 'old', detail: {} });
      store.recordAudit({ at: day(21), kind: 'k', subject: 'new', detail: {} });
      const pruned = store.prune(day(10), { publicKey });
      assert.deepEqual({ sessions: pruned.sessions, operations: pruned.operations, audit: pruned.audit }, { sessions: 1, operations: 1, audit: 1 });
      assert.deepEqual(store.listSessions().map((s) => s.id), ['new', 'spans']);
      assert.equal(store.getSession('old'), undefined);
      assert.equal(store.getSession('spans')?.operations.length, 1);
      assert.deepEqual(store.listAudit().map((e) => e.subject), ['new']);
      const report = store.verify({ publicKey });
      assert.equal(report.ok, true, JSON.stringify(report.problems));
      assert.ok(report.firstSeq > 1, 'the chain starts after the pruned entries');
      assert.throws(() => store.prune(new Date('nope')), RangeError);
      // Records written after a prune chain on from it.
      store.recordOperation(op('new', 2));
      assert.equal(await store.whenDrained(5000), true);
      assert.equal(store.verify({ publicKey }).ok, true);
      await tamper(loc, store, "UPDATE sessions SET identity = 'someone-else' WHERE id = 'new'");
      assert.throws(() => store.prune(day(30), { publicKey }), /does not verify/);
      assert.equal(store.getSession('new')?.operations.length, 2, 'nothing was pruned');
    });

    test('the hash chain verifies, signed checkpoints are kept in the store and the anchor file, and a changed row is named', async (t) => {
      const dir = mkdtempSync(join(tmpdir(), 'airlock-anchor-'));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const anchorFile = join(dir, 'anchor.jsonl');
      const { store, loc } = await fresh(t, { signingKey: privateKey, checkpointEvery: 3, anchorFile });
      store.startSession(session('s', new Date()));
      for (let i = 1; i <= 7; i++) store.recordOperation(op('s', i));
      store.recordAudit({ at: new Date(), kind: 'approval.decided', subject: 'apr-1', actor: 'alice', detail: { outcome: 'approved' } });
      store.endSession('s', new Date(), 'done', { toClient: 1, fromClient: 2 });
      assert.equal(await store.whenDrained(5000), true);
      store.checkpoint();
      const report = store.verify({ publicKey });
      assert.equal(report.ok, true, JSON.stringify(report.problems));
      assert.equal(report.entries, 10);
      assert.ok(report.signedCheckpoints >= 1, `signed checkpoints: ${report.signedCheckpoints}`);
      assert.equal(report.unsignedTail, 0);
      const anchored = readFileSync(anchorFile, 'utf8').trim().split('\n').map((l) => parseCheckpoint(l));
      assert.ok(anchored.length >= 1 && anchored.every((c) => c !== undefined));
      assert.equal(store.verify({ publicKey, anchored: anchored.filter((c) => c !== undefined) }).ok, true);

      // An insider edits a recorded statement behind Airlock's back.
      await tamper(loc, store, "UPDATE operations SET text = 'SELECT harmless' WHERE session_id = 's' AND seq = 4");
      const after = store.verify({ publicKey });
      assert.equal(after.ok, false);
      assert.equal(after.problems[0].record, 'operation s#4');
      assert.match(after.problems[0].message, /text differ/);
    });
  });
}

/** Runs SQL on the store's data directly, as someone with database access could. */
async function tamper(loc: StoreLocation, store: AnyStore, sql: string): Promise<void> {
  if (store instanceof PostgresStore) {
    const c = await postgresBackend.server();
    const db = /\/([^/]+)$/.exec(store.path)?.[1];
    await c.query(sql, db);
  } else {
    store.database.exec(sql);
  }
  void loc;
}

describe('audit store (postgres): shared by several gateways', () => {
  test('two stores on one database writing at once form one chain that verifies, and see each other’s sessions', async (t) => {
    const loc = await postgresBackend.location();
    t.after(() => loc.dispose());
    const a = loc.open({ checkpointEvery: 50, signingKey: generateKeyPairSync('ed25519').privateKey });
    const b = loc.open();
    t.after(() => {
      a.close();
      b.close();
    });
    const per = 60;
    // Interleaved across turns, like two busy gateways.
    for (let i = 0; i < per; i++) {
      for (const [name, store] of [['a', a], ['b', b]] as const) {
        const id = `${name}-${i}`;
        store.startSession(session(id, new Date(Date.now() + i), { identity: `agent-${name}` }));
        for (let seq = 1; seq <= 4; seq++) store.recordOperation(op(id, seq));
        store.recordAudit({ at: new Date(), kind: 'note', subject: id, detail: { i } });
        store.endSession(id, new Date(), 'done', { toClient: i, fromClient: seq0(i) });
      }
      if (i % 10 === 0) await new Promise((r) => setImmediate(r));
    }
    assert.equal(await a.whenDrained(30_000), true);
    assert.equal(await b.whenDrained(30_000), true);
    const report = b.verify();
    assert.equal(report.ok, true, JSON.stringify(report.problems.slice(0, 3)));
    assert.equal(report.entries, 2 * per * 7);
    assert.equal(a.listSessions({ identity: 'agent-b' }).length, per, 'gateway A sees the sessions gateway B recorded');
    assert.equal(b.listSessions().length, 2 * per);
    assert.equal(a.getSession('b-7')?.operations.length, 4);
    assert.equal(a.stats().dropped + b.stats().dropped, 0);
  });

  test('a prune on one gateway while another keeps recording leaves one chain that verifies', async (t) => {
    const loc = await postgresBackend.location();
    t.after(() => loc.dispose());
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const a = loc.open({ signingKey: privateKey });
    const b = loc.open({ signingKey: privateKey });
    t.after(() => {
      a.close();
      b.close();
    });
    const old = new Date(Date.UTC(2026, 0, 1));
    for (let i = 0; i < 30; i++) {
      a.startSession(session(`old-${i}`, old));
      a.recordOperation(op(`old-${i}`, 1, { at: old }));
      a.endSession(`old-${i}`, old, 'done', { toClient: 0, fromClient: 0 });
    }
    assert.equal(await a.whenDrained(10_000), true);
    // B records continuously while A prunes.
    let writing = true;
    let n = 0;
    const writer = (async () => {
      b.startSession(session('live', new Date()));
      while (writing) {
        b.recordOperation(op('live', ++n, { at: new Date() }));
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    await new Promise((r) => setTimeout(r, 50));
    const pruned = a.prune(new Date(Date.UTC(2026, 5, 1)), { publicKey });
    await new Promise((r) => setTimeout(r, 50));
    writing = false;
    await writer;
    assert.equal(pruned.sessions, 30);
    assert.equal(await b.whenDrained(10_000), true);
    const report = b.verify({ publicKey });
    assert.equal(report.ok, true, JSON.stringify(report.problems.slice(0, 3)));
    assert.equal(b.getSession('live')?.operations.length, n, 'no write of B was lost to the prune');
    assert.deepEqual(a.listSessions().map((s) => s.id), ['live']);
  });

  test('a schema version table records the migrations; a database from a newer Airlock is refused by name', async (t) => {
    const loc = await postgresBackend.location();
    t.after(() => loc.dispose());
    const s = loc.open() as PostgresStore;
    assert.equal(s.schemaVersion(), PG_SCHEMA_VERSION);
    const db = /\/([^/]+)$/.exec(s.path)?.[1];
    s.close();
    const server = await postgresBackend.server();
    const rows = (await server.query('SELECT version FROM airlock_schema_version ORDER BY version', db)).rows as { version: number }[];
    assert.deepEqual(rows.map((r) => r.version), Array.from({ length: PG_SCHEMA_VERSION }, (_, i) => i + 1));
    await server.query(`INSERT INTO airlock_schema_version (version) VALUES (${PG_SCHEMA_VERSION + 1})`, db);
    assert.throws(() => loc.open(), (e: unknown) => e instanceof StoreOpenError && e.message.includes(`schema version ${PG_SCHEMA_VERSION + 1}`) && e.message.includes(String(db)));
  });

  test('fails clearly at open when the database cannot be reached', async () => {
    const conn = await postgresBackend.connection('no_such_database');
    assert.throws(() => PostgresStore.open(conn, { connectTimeoutMs: 3000 }), (e: unknown) => e instanceof StoreOpenError && /no_such_database/.test(e.message));
  });
});

describe('audit store (postgres): durability', () => {
  test('fail-closed: writes blocked by a lock are tolerated up to maxPendingMs, then new work is refused; once unblocked every record is written', async (t) => {
    const loc = await postgresBackend.location();
    t.after(() => loc.dispose());
    const store = loc.open({ maxPendingMs: 300 });
    t.after(() => store.close());
    store.startSession(session('s', new Date()));
    assert.equal(await store.whenDrained(5000), true);
    const server = await postgresBackend.server();
    const db = /\/([^/]+)$/.exec(store.path)?.[1];
    const locker = await server.client(db);
    t.after(() => locker.end());
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE journal IN ACCESS EXCLUSIVE MODE');
    for (let i = 1; i <= 20; i++) store.recordOperation(op('s', i));
    assert.equal(store.health().ok, true, 'a short wait is tolerated');
    await waitFor(() => !store.health().ok, 'the lag bound');
    assert.equal(store.writable(), false);
    assert.throws(() => store.assertWritable(), (e: unknown) => e instanceof AuditUnavailableError && e.sqlstate === '53100' && /waited/.test(e.message));
    await locker.query('COMMIT');
    assert.equal(await store.whenDrained(10_000), true);
    assert.equal(store.health().ok, true);
    assert.doesNotThrow(() => store.assertWritable());
    assert.equal(store.getSession('s')?.operations.length, 20);
    assert.equal(store.stats().dropped, 0);
  });

  test('fail-closed: a database that refuses connections makes the store unhealthy at once; records are kept and written when it is back', async (t) => {
    const loc = await postgresBackend.location();
    t.after(() => loc.dispose());
    const store = loc.open({ maxPendingMs: 60_000 });
    t.after(() => store.close());
    const db = /\/([^/]+)$/.exec(store.path)?.[1];
    const server = await postgresBackend.server();
    store.startSession(session('s', new Date()));
    assert.equal(await store.whenDrained(5000), true);
    await server.query(`ALTER DATABASE ${db} ALLOW_CONNECTIONS false`);
    await server.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${db}'`);
    for (let i = 1; i <= 5; i++) store.recordOperation(op('s', i));
    await waitFor(() => !store.health().ok, 'the failure to be noticed');
    assert.match(store.health().reason ?? '', /cannot be written/);
    assert.throws(() => store.assertWritable(), AuditUnavailableError);
    // Reads block the event loop: while the database is known to be failing they fail at once.
    assert.throws(() => store.getSession('s'), /audit database is unavailable/);
    await server.query(`ALTER DATABASE ${db} ALLOW_CONNECTIONS true`);
    assert.equal(await store.whenDrained(15_000), true);
    assert.equal(store.health().ok, true);
    assert.equal(store.getSession('s')?.operations.length, 5);
    assert.equal(store.verify().ok, true);
  });

  test('fail-open: the same outage is reported unhealthy but traffic is not refused, and memory stays bounded', async (t) => {
    const loc = await postgresBackend.location();
    t.after(() => loc.dispose());
    const store = loc.open({ onFailure: 'open', maxPending: 5, maxPendingMs: 200 });
    t.after(() => store.close());
    const db = /\/([^/]+)$/.exec(store.path)?.[1];
    const server = await postgresBackend.server();
    const locker = await server.client(db);
    t.after(() => locker.end());
    await locker.query('BEGIN');
    await locker.query('LOCK TABLE journal IN ACCESS EXCLUSIVE MODE');
    for (let i = 1; i <= 12; i++) store.recordOperation(op('s', i));
    await waitFor(() => !store.health().ok, 'unhealthy');
    assert.equal(store.writable(), true);
    assert.doesNotThrow(() => store.assertWritable());
    assert.ok(store.health().pending <= 5, `pending ${store.health().pending}`);
    assert.ok(store.stats().dropped >= 7);
    await locker.query('COMMIT');
  });
});

function seq0(i: number): number {
  return i * 2;
}

for (const backend of backends) {
  describe(`audit store (${backend.name}): elevation windows`, () => {
    test('a window is written at once, listed while open, revoked once, and its reason is redacted', async (t) => {
      const loc = await backend.location();
      const store = loc.open({});
      t.after(async () => {
        store.close();
        await loc.dispose();
      });
      const now = Date.now();
      const base = { identity: 'erin', role: 'writer', connection: 'shop', approvers: ['bob'], breakGlass: false, startsAt: new Date(now - 1000) };
      store.putElevation({ ...base, id: 'el-1', owner: 'carol', reason: 'INC-1 mail me at erin@example.com', until: new Date(now + 60_000) });
      store.putElevation({ ...base, id: 'el-2', reason: 'old', until: new Date(now - 1) });
      store.putElevation({ ...base, id: 'el-3', identity: 'olga', breakGlass: true, reason: 'outage', until: new Date(now + 60_000) });
      // The same id again (an activity retry) keeps the first window.
      store.putElevation({ ...base, id: 'el-1', reason: 'retry', until: new Date(now + 1) });
      const e = store.getElevation('el-1');
      assert.ok(e);
      assert.equal(e.reason, 'INC-1 mail me at [redacted:email]');
      assert.equal(e.owner, 'carol');
      assert.equal(e.until.getTime(), now + 60_000);
      assert.deepEqual(e.approvers, ['bob']);
      assert.deepEqual(store.listElevations({ identity: 'erin', activeAt: new Date() }).map((x) => x.id), ['el-1']);
      assert.deepEqual(store.listElevations({ activeAt: new Date() }).map((x) => x.id).sort(), ['el-1', 'el-3']);
      assert.equal(store.getElevation('el-3')?.breakGlass, true);
      assert.equal(store.revokeElevation('el-2', new Date(), 'bob', 'already over'), false);
      assert.equal(store.revokeElevation('el-1', new Date(), 'bob', 'done'), true);
      assert.equal(store.revokeElevation('el-1', new Date(), 'bob', 'again'), false);
      assert.equal(store.getElevation('el-1')?.revokedBy, 'bob');
      assert.deepEqual(store.listElevations({ identity: 'erin', activeAt: new Date() }), []);
      assert.equal(store.listElevations({ identity: 'erin' }).length, 2);
      assert.equal(store.getElevation('nope'), undefined);
    });
  });
}
