// Tamper evidence of the audit store, as an auditor meets it: a COPY of the store is changed the way
// an insider would change it (an approver renamed, a statement rewritten, refused attempts deleted,
// rows inserted, chain entries edited, the chain recomputed, the tail cut off) and `verify` must name
// the first record that was changed, removed or inserted.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import Database from 'better-sqlite3';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { entryHash, entryText, makeCheckpoint, parseCheckpoint, type Checkpoint } from '../../gateway/recording/chain.ts';
import { verifyAuditDb, type VerifyReport } from '../../gateway/recording/verify.ts';

const { privateKey, publicKey } = generateKeyPairSync('ed25519');

interface Fixture {
  dir: string;
  path: string;
  anchor: string;
  /** Verifies a file with the right key and the anchor file. */
  check(path: string, opts?: { key?: KeyObject; from?: Date; anchored?: boolean }): VerifyReport;
  copy(name: string): string;
}

const at = (m: number, s = 0) => new Date(Date.UTC(2026, 10, 24, 9, m, s));

/** A store with two sessions, a held-then-approved statement, a refused statement and approval events. */
function fixture(t: { after(fn: () => void): void }): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-tamper-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'airlock.db');
  const anchor = join(dir, 'anchor.jsonl');
  const store = SqliteStore.open(path, { signingKey: privateKey, checkpointEvery: 4, anchorFile: anchor });
  store.startSession({ id: 's1', protocol: 'postgres', identity: 'agent-7', groups: ['agents'], connection: 'shop', clientAddress: '10.0.0.7:5000', startedAt: at(0) });
  store.recordOperation({ sessionId: 's1', seq: 1, at: at(1), text: 'SELECT id, total FROM orders WHERE id = 7', kind: 'read', classification: { tables: ['public.orders'] }, decision: 'allow', rows: 1, maskedColumns: [] });
  store.recordAudit({ at: at(2), kind: 'approval.requested', subject: 'apr-1', actor: 'agent-7', detail: { rule: 'review-writes' } });
  // Held, then recorded again with its outcome: two chain entries, one row.
  store.recordOperation({ sessionId: 's1', seq: 2, at: at(2), text: "UPDATE orders SET status = 'refunded' WHERE id = 7", kind: 'write', classification: {}, decision: 'review', rule: 'review-writes', maskedColumns: [] });
  store.recordAudit({ at: at(3), kind: 'approval.attempt', subject: 'apr-1', actor: 'agent-7', detail: { valid: false, why: 'self-approval' } });
  store.recordAudit({ at: at(4), kind: 'approval.decided', subject: 'apr-1', actor: 'alice', detail: { outcome: 'approved' } });
  store.flush();
  store.recordOperation({ sessionId: 's1', seq: 2, at: at(2), text: "UPDATE orders SET status = 'refunded' WHERE id = 7", kind: 'write', classification: {}, decision: 'review', rule: 'review-writes', rows: 1, maskedColumns: [], approval: { requestId: 'apr-1', outcome: 'approved', approvers: ['alice'] } });
  store.recordOperation({ sessionId: 's1', seq: 3, at: at(5), text: 'DROP TABLE orders', kind: 'ddl', classification: {}, decision: 'deny', rule: 'block-destructive-ddl', reason: 'DROP is blocked', maskedColumns: [] });
  store.endSession('s1', at(6), 'client terminated', { toClient: 900, fromClient: 300 });
  store.startSession({ id: 's2', protocol: 'ssh', identity: 'dana', groups: ['ops'], connection: 'bastion', clientAddress: '10.0.0.9:6000', startedAt: at(7) });
  store.recordOperation({ sessionId: 's2', seq: 1, at: at(8), text: 'uptime', kind: 'exec', classification: {}, decision: 'allow', maskedColumns: [] });
  store.endSession('s2', at(9), 'client closed', { toClient: 10, fromClient: 20 });
  store.close();
  const anchored = () => readFileSync(anchor, 'utf8').trim().split('\n').map((l) => parseCheckpoint(l) as Checkpoint);
  return {
    dir,
    path,
    anchor,
    check(p, opts = {}) {
      const db = new Database(p, { readonly: true });
      try {
        return verifyAuditDb(db, { publicKey: opts.key ?? publicKey, from: opts.from, anchored: opts.anchored === false ? undefined : anchored() });
      } finally {
        db.close();
      }
    },
    copy(name) {
      const p = join(dir, name);
      copyFileSync(path, p);
      for (const ext of ['-wal', '-shm']) if (existsSync(path + ext)) copyFileSync(path + ext, p + ext);
      return p;
    },
  };
}

function tamper(path: string, fn: (db: Database.Database) => void): void {
  const db = new Database(path);
  try {
    fn(db);
  } finally {
    db.close();
  }
}

function first(r: VerifyReport): string {
  assert.equal(r.ok, false, 'verification must fail');
  return `${r.problems[0].kind} ${r.problems[0].record}: ${r.problems[0].message}`;
}

/** Rewrites entry `seq` with new data and recomputes every later hash, as an attacker who knows the algorithm would. */
function rewriteChainFrom(db: Database.Database, seq: number, change: (data: Record<string, unknown>) => void): void {
  const rows = db.prepare('SELECT seq, entry FROM journal WHERE seq >= ? ORDER BY seq').all(seq) as { seq: number; entry: string }[];
  let prev = (db.prepare('SELECT hash FROM journal WHERE seq = ?').get(seq - 1) as { hash: string }).hash;
  for (const r of rows) {
    const e = JSON.parse(r.entry) as { seq: number; kind: 'operation'; at: number; data: Record<string, unknown> };
    if (r.seq === seq) change(e.data);
    const text = entryText(e.seq, e.kind, e.at, e.data);
    prev = entryHash(prev, text);
    db.prepare('UPDATE journal SET entry = ?, hash = ? WHERE seq = ?').run(text, prev, r.seq);
  }
}

function entrySeq(db: Database.Database, kind: string, where: (data: Record<string, unknown>) => boolean): number {
  const rows = db.prepare('SELECT seq, entry FROM journal WHERE kind = ? ORDER BY seq').all(kind) as { seq: number; entry: string }[];
  const hit = rows.filter((r) => where((JSON.parse(r.entry) as { data: Record<string, unknown> }).data));
  return hit[hit.length - 1].seq;
}

describe('audit chain verification', () => {
  test('an untouched store verifies: every write is a chain entry, checkpoints are signed and anchored outside', (t) => {
    const f = fixture(t);
    const r = f.check(f.path);
    assert.deepEqual(r.problems, []);
    assert.equal(r.ok, true);
    assert.equal(r.entries, 12, 'two starts, five operation versions (the held one twice), three audit events, two ends');
    assert.ok(r.signedCheckpoints >= 3, `checkpoints verified by signature: ${r.signedCheckpoints}`);
    assert.equal(r.unsignedTail, 0, 'close signs the head');
  });

  test('an approver renamed in a copy is named as a changed operation', (t) => {
    const f = fixture(t);
    const p = f.copy('renamed.db');
    tamper(p, (db) => db.prepare(`UPDATE operations SET approval = replace(approval, 'alice', 'bob') WHERE session_id = 's1' AND seq = 2`).run());
    assert.match(first(f.check(p)), /^changed operation s1#2: .*approval differ/);
  });

  test('a rewritten statement is named', (t) => {
    const f = fixture(t);
    const p = f.copy('rewritten.db');
    tamper(p, (db) => db.prepare(`UPDATE operations SET text = 'SELECT 1' WHERE session_id = 's1' AND seq = 1`).run());
    assert.match(first(f.check(p)), /^changed operation s1#1: .*text differ/);
  });

  test('a refused statement and a refused approval attempt deleted are named as removed', (t) => {
    const f = fixture(t);
    const p = f.copy('deleted.db');
    tamper(p, (db) => {
      db.prepare(`DELETE FROM operations WHERE decision = 'deny'`).run();
      db.prepare(`DELETE FROM audit WHERE kind = 'approval.attempt'`).run();
    });
    const r = f.check(p);
    const records = r.problems.map((x) => `${x.kind} ${x.record}`);
    assert.match(records[0], /^removed audit event \d+ \(approval\.attempt apr-1\)$/, 'the earlier of the two comes first');
    assert.ok(records.includes('removed operation s1#3'), records.join('; '));
  });

  test('a session rewritten (identity, end) is named', (t) => {
    const f = fixture(t);
    const p = f.copy('session.db');
    tamper(p, (db) => db.prepare(`UPDATE sessions SET identity = 'someone-else', end_reason = 'x' WHERE id = 's1'`).run());
    assert.match(first(f.check(p)), /^changed session s1: .*identity, endReason differ/);
  });

  test('an operation, a session and an audit event inserted are named', (t) => {
    const f = fixture(t);
    const p = f.copy('inserted.db');
    tamper(p, (db) => {
      db.prepare(`INSERT INTO operations (session_id, seq, at, text, kind, classification, decision, masked_columns) VALUES ('s2', 2, 0, 'ls', 'exec', '{}', 'allow', '[]')`).run();
      db.prepare(`INSERT INTO sessions (id, protocol, identity, groups, connection, client_address, started_at) VALUES ('s9', 'ssh', 'x', '[]', 'c', 'a', 0)`).run();
      db.prepare(`INSERT INTO audit (at, kind, subject, actor, detail) VALUES (0, 'approval.decided', 'apr-9', 'mallory', '{}')`).run();
    });
    const records = f.check(p).problems.map((x) => `${x.kind} ${x.record}`);
    assert.ok(records.includes('inserted operation s2#2'), records.join('; '));
    assert.ok(records.includes('inserted session s9'), records.join('; '));
    assert.ok(records.some((x) => /^inserted audit event \d+ \(approval\.decided apr-9\)$/.test(x)), records.join('; '));
  });

  test('the earlier version of an upserted operation restored in place is detected (the chain covers the final form)', (t) => {
    const f = fixture(t);
    const p = f.copy('restored.db');
    tamper(p, (db) => db.prepare(`UPDATE operations SET approval = NULL, rows = NULL WHERE session_id = 's1' AND seq = 2`).run());
    assert.match(first(f.check(p)), /^changed operation s1#2: .*approval, rows differ/);
  });

  test('a chain entry edited together with its row is named by position', (t) => {
    const f = fixture(t);
    const p = f.copy('entry.db');
    let seq = 0;
    tamper(p, (db) => {
      seq = entrySeq(db, 'operation', (d) => d.sessionId === 's1' && d.seq === 1);
      const row = db.prepare('SELECT entry FROM journal WHERE seq = ?').get(seq) as { entry: string };
      db.prepare('UPDATE journal SET entry = ? WHERE seq = ?').run(row.entry.replace('WHERE id = 7', 'WHERE id = 8'), seq);
      db.prepare(`UPDATE operations SET text = replace(text, 'id = 7', 'id = 8') WHERE session_id = 's1' AND seq = 1`).run();
    });
    assert.equal(first(f.check(p)), `changed chain entry #${seq} (operation s1#1): chain entry #${seq} was changed or inserted: its hash does not match its content and the entry before it`);
  });

  test('the unhashed index columns that steer prune are checked against the entry', (t) => {
    const f = fixture(t);
    const p = f.copy('index.db');
    let seq = 0;
    tamper(p, (db) => {
      seq = entrySeq(db, 'operation', (d) => d.decision === 'deny');
      db.prepare(`UPDATE journal SET entity = 's:elsewhere' WHERE seq = ?`).run(seq);
    });
    assert.equal(first(f.check(p)), `changed chain entry #${seq} (operation s1#3): the index columns of chain entry #${seq} (kind, entity, item) were changed`);
  });

  test('a chain entry removed together with its row is named', (t) => {
    const f = fixture(t);
    const p = f.copy('gap.db');
    let seq = 0;
    tamper(p, (db) => {
      seq = entrySeq(db, 'operation', (d) => d.decision === 'deny');
      db.prepare('DELETE FROM journal WHERE seq = ?').run(seq);
      db.prepare(`DELETE FROM operations WHERE decision = 'deny'`).run();
    });
    assert.equal(first(f.check(p)), `removed chain entries #${seq}..#${seq}: chain entries #${seq} to #${seq} were removed`);
  });

  test('a chain entry inserted in the middle (later entries renumbered) is named', (t) => {
    const f = fixture(t);
    const p = f.copy('insert-entry.db');
    tamper(p, (db) => {
      const rows = db.prepare('SELECT seq FROM journal WHERE seq >= 5 ORDER BY seq DESC').all() as { seq: number }[];
      for (const r of rows) db.prepare('UPDATE journal SET seq = seq + 1 WHERE seq = ?').run(r.seq);
      const prev = (db.prepare('SELECT hash FROM journal WHERE seq = 4').get() as { hash: string }).hash;
      const text = entryText(5, 'audit', 0, { id: 99, at: 0, kind: 'approval.decided', subject: 'apr-1', actor: 'mallory', detail: '{}' });
      db.prepare(`INSERT INTO journal (seq, at, kind, entity, item, entry, hash) VALUES (5, 0, 'audit', 'a:99', NULL, ?, ?)`).run(text, entryHash(prev, text));
      db.prepare(`INSERT INTO audit (id, at, kind, subject, actor, detail) VALUES (99, 0, 'approval.decided', 'apr-1', 'mallory', '{}')`).run();
    });
    assert.equal(first(f.check(p)), 'inserted chain entry #6: chain entry at position #6 says it is #5: entries were inserted or removed before it');
  });

  test('a change with the whole chain recomputed after it is caught by the signed checkpoints', (t) => {
    const f = fixture(t);
    const p = f.copy('recomputed.db');
    tamper(p, (db) => {
      const seq = entrySeq(db, 'operation', (d) => d.sessionId === 's1' && d.seq === 1);
      rewriteChainFrom(db, seq, (d) => (d.text = 'SELECT 1'));
      db.prepare(`UPDATE operations SET text = 'SELECT 1' WHERE session_id = 's1' AND seq = 1`).run();
    });
    const r = f.check(p, { anchored: false });
    assert.match(first(r), /^changed chain up to #\d+: the chain up to entry #\d+ no longer matches the stored checkpoint signed at/);
    assert.ok(r.problems.every((x) => x.kind === 'changed' && x.record.startsWith('chain up to')), 'rows agree with the recomputed chain; only signatures can tell');
  });

  test('checkpoints re-signed with another key are refused; the anchor file still tells', (t) => {
    const f = fixture(t);
    const p = f.copy('resigned.db');
    const other = generateKeyPairSync('ed25519').privateKey;
    tamper(p, (db) => {
      const seq = entrySeq(db, 'operation', (d) => d.sessionId === 's1' && d.seq === 1);
      rewriteChainFrom(db, seq, (d) => (d.text = 'SELECT 1'));
      db.prepare(`UPDATE operations SET text = 'SELECT 1' WHERE session_id = 's1' AND seq = 1`).run();
      for (const c of db.prepare('SELECT seq FROM checkpoints').all() as { seq: number }[]) {
        const h = (db.prepare('SELECT hash FROM journal WHERE seq = ?').get(c.seq) as { hash: string }).hash;
        const cp = makeCheckpoint(c.seq, h, new Date(), other);
        db.prepare('UPDATE checkpoints SET hash = ?, sig = ?, key_id = ? WHERE seq = ?').run(cp.hash, cp.sig, cp.keyId, c.seq);
      }
    });
    const r = f.check(p);
    assert.ok(r.problems.some((x) => x.kind === 'signature' && /stored checkpoint #\d+/.test(x.record)), r.problems.map((x) => x.message).join('\n'));
    assert.ok(r.problems.some((x) => x.kind === 'changed' && /anchored checkpoint/.test(x.message)), 'the anchored checkpoints still hold the true hashes');
  });

  test('the tail cut off (entries, rows and stored checkpoints) is caught by the anchor file', (t) => {
    const f = fixture(t);
    const p = f.copy('truncated.db');
    let cut = 0;
    tamper(p, (db) => {
      cut = entrySeq(db, 'session.start', (d) => d.id === 's2');
      db.prepare('DELETE FROM journal WHERE seq >= ?').run(cut);
      db.prepare('DELETE FROM checkpoints WHERE seq >= ?').run(cut);
      db.prepare(`DELETE FROM operations WHERE session_id = 's2'`).run();
      db.prepare(`DELETE FROM sessions WHERE id = 's2'`).run();
    });
    assert.equal(f.check(p, { anchored: false }).ok, true, 'without the anchor a cut tail is not visible: that is what the anchor is for');
    assert.match(first(f.check(p)), new RegExp(`^removed chain entries after #${cut - 1}: anchored checkpoint #\\d+ .* entries #${cut} to #\\d+ were removed`));
  });

  test('without the right public key signatures fail; without any key they are reported as not checked', (t) => {
    const f = fixture(t);
    const wrong = generateKeyPairSync('ed25519').publicKey;
    const r = f.check(f.path, { key: wrong });
    assert.equal(r.ok, false);
    assert.ok(r.problems.every((x) => x.kind === 'signature'));
    const db = new Database(f.path, { readonly: true });
    t.after(() => db.close());
    const unchecked = verifyAuditDb(db);
    assert.equal(unchecked.ok, true);
    assert.match(unchecked.notes.join('\n'), /signatures not checked/);
  });

  test('--from verifies from the last checkpoint before the date and still names changes after it', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-from-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'airlock.db');
    const store = SqliteStore.open(path, { signingKey: privateKey });
    const op = (sessionId: string, text: string) => ({ sessionId, seq: 1, at: at(1), text, kind: 'read', classification: {}, decision: 'allow' as const, maskedColumns: [] });
    store.startSession({ id: 'early', protocol: 'postgres', identity: 'a', groups: [], connection: 'c', clientAddress: 'x', startedAt: at(0) });
    store.recordOperation(op('early', 'select 1'));
    store.flush();
    const cp = store.checkpoint();
    await new Promise((r) => setTimeout(r, 15));
    const from = new Date();
    await new Promise((r) => setTimeout(r, 15));
    store.startSession({ id: 'late', protocol: 'postgres', identity: 'b', groups: [], connection: 'c', clientAddress: 'y', startedAt: at(2) });
    store.recordOperation(op('late', 'select 2'));
    store.endSession('early', at(3), 'done', { toClient: 1, fromClient: 1 });
    store.close();
    tamper(path, (db) => {
      db.prepare(`UPDATE operations SET text = 'select 9' WHERE session_id = 'late'`).run();
      db.prepare(`UPDATE sessions SET end_reason = 'other' WHERE id = 'early'`).run();
    });
    const db = new Database(path, { readonly: true });
    t.after(() => db.close());
    const r = verifyAuditDb(db, { publicKey, from });
    assert.match(r.notes.join('\n'), new RegExp(`verified from checkpoint #${cp?.seq}`));
    assert.deepEqual(r.problems.map((p) => `${p.kind} ${p.record}`), ['changed operation late#1', 'changed session early'], 'an end recorded after the checkpoint is checked even though the start is before it');
  });
});

describe('checkpoint cadence', () => {
  test('the head is signed after checkpointInterval even when few entries were written, and only once', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-interval-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const anchor = join(dir, 'anchor.jsonl');
    const store = SqliteStore.open(join(dir, 'airlock.db'), { signingKey: privateKey, checkpointEvery: 1_000_000, checkpointIntervalMs: 50, anchorFile: anchor });
    t.after(() => store.close());
    store.startSession({ id: 's', protocol: 'postgres', identity: 'a', groups: [], connection: 'c', clientAddress: 'x', startedAt: at(0) });
    store.flush();
    const deadline = Date.now() + 5000;
    while (!existsSync(anchor) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 200));
    const lines = readFileSync(anchor, 'utf8').trim().split('\n');
    assert.equal(lines.length, 1, 'nothing new, nothing signed again');
    assert.equal(parseCheckpoint(lines[0])?.seq, 1);
    assert.equal(store.verify({ publicKey }).unsignedTail, 0);
  });
});

describe('prune keeps the chain verifiable', () => {
  test('prune deletes old records, snapshots a straddling session, leaves a signed checkpoint, and tampering after it is still named', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-prune-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'airlock.db');
    const anchor = join(dir, 'anchor.jsonl');
    const day = (d: number) => new Date(Date.UTC(2026, 10, d));
    const store = SqliteStore.open(path, { signingKey: privateKey, checkpointEvery: 3, anchorFile: anchor });
    store.startSession({ id: 'old', protocol: 'postgres', identity: 'a', groups: [], connection: 'c', clientAddress: 'x', startedAt: day(1) });
    store.startSession({ id: 'long', protocol: 'postgres', identity: 'b', groups: [], connection: 'c', clientAddress: 'y', startedAt: day(1) });
    store.recordOperation({ sessionId: 'old', seq: 1, at: day(1), text: 'select 1', kind: 'read', classification: {}, decision: 'allow', maskedColumns: [] });
    store.recordOperation({ sessionId: 'long', seq: 1, at: day(2), text: 'select 2', kind: 'read', classification: {}, decision: 'allow', maskedColumns: [] });
    store.recordAudit({ at: day(2), kind: 'approval.requested', subject: 'apr-old', detail: {} });
    store.endSession('old', day(2), 'done', { toClient: 1, fromClient: 1 });
    store.recordOperation({ sessionId: 'long', seq: 2, at: day(20), text: 'select 3', kind: 'read', classification: {}, decision: 'allow', maskedColumns: [] });
    store.recordAudit({ at: day(21), kind: 'approval.requested', subject: 'apr-new', detail: {} });
    t.after(() => store.close());

    const r = store.prune(day(10), { publicKey });
    assert.deepEqual({ s: r.sessions, o: r.operations, a: r.audit }, { s: 1, o: 1, a: 1 });
    assert.ok(r.base >= 6 && r.entries === r.base, `entries up to #${r.base} removed`);
    assert.deepEqual(store.listSessions().map((s) => s.id), ['long']);
    assert.deepEqual(store.getSession('long')?.operations.map((o) => o.text), ['select 2', 'select 3'], 'a session spanning the cutoff keeps everything');
    store.endSession('long', day(22), 'done', { toClient: 5, fromClient: 5 });
    store.checkpoint();
    store.flush();

    const anchored = readFileSync(anchor, 'utf8').trim().split('\n').map((l) => parseCheckpoint(l) as Checkpoint);
    assert.ok(anchored.some((c) => c.base && c.seq === r.base), 'the prune checkpoint is anchored outside too');
    const verify = (p: string, key = publicKey) => {
      const db = new Database(p, { readonly: true });
      try {
        return verifyAuditDb(db, { publicKey: key, anchored });
      } finally {
        db.close();
      }
    };
    assert.deepEqual(verify(path).problems, [], 'verification starts at the first remaining entry');

    const copy = join(dir, 'copy.db');
    store.close();
    copyFileSync(path, copy);
    tamper(copy, (db) => db.prepare(`UPDATE operations SET text = 'select 9' WHERE session_id = 'long' AND seq = 1`).run());
    assert.match(first(verify(copy)), /^changed operation long#1: .*text differ/, 'the snapshot of a record whose first entries were pruned still binds it');

    const forged = join(dir, 'forged.db');
    copyFileSync(path, forged);
    tamper(forged, (db) => db.prepare(`UPDATE checkpoints SET sig = ? WHERE base = 1`).run(Buffer.alloc(64).toString('base64')));
    assert.match(first(verify(forged)), /^signature prune checkpoint #\d+/, 'a forged prune checkpoint could hide a removed prefix');
  });

  test('prune refuses to run on a chain that does not verify', (t) => {
    const f = fixture(t);
    tamper(f.path, (db) => db.prepare(`UPDATE operations SET text = 'SELECT 1' WHERE session_id = 's1' AND seq = 1`).run());
    const store = SqliteStore.open(f.path, { signingKey: privateKey });
    t.after(() => store.close());
    assert.throws(() => store.prune(new Date('2030-01-01')), /does not verify \(operation s1#1: .*refusing to prune/);
    assert.equal(store.getSession('s1')?.operations.length, 3, 'nothing deleted');
  });

  test('a store from before the chain is chained on upgrade and verifies from then on', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-upgrade-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'old.db');
    const s = SqliteStore.open(path);
    s.startSession({ id: 'legacy', protocol: 'postgres', identity: 'a', groups: [], connection: 'c', clientAddress: 'x', startedAt: at(0) });
    s.recordOperation({ sessionId: 'legacy', seq: 1, at: at(1), text: 'select 1', kind: 'read', classification: {}, decision: 'allow', maskedColumns: [] });
    s.recordAudit({ at: at(2), kind: 'k', subject: 'legacy', detail: {} });
    s.close();
    // What a schema-1 file looks like: no journal, no checkpoints.
    tamper(path, (db) => db.exec('DROP TABLE journal; DROP TABLE checkpoints; DROP INDEX sessions_open_instance; ALTER TABLE sessions DROP COLUMN instance; DROP TABLE gateway_instances; PRAGMA user_version = 1;'));
    const upgraded = SqliteStore.open(path, { signingKey: privateKey });
    t.after(() => upgraded.close());
    assert.deepEqual(upgraded.verify({ publicKey }).problems, []);
    const kinds = (upgraded.database.prepare('SELECT kind FROM journal ORDER BY seq').all() as { kind: string }[]).map((r) => r.kind);
    assert.deepEqual(kinds, ['session.snapshot', 'operation', 'audit']);
  });
});
