// The audit store never holds an unmasked value: statement text, parameters shown to approvers,
// error texts, reasons and audit details pass the PII detectors before they are written, whatever
// the masking config says. What `sessions show` and the chat session log print comes from there.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parameterDigest, redactDeep, redactForAudit } from '../../gateway/recording/redact.ts';
import { SqliteStore, MAX_TEXT_CHARS } from '../../gateway/recording/sqlite-store.ts';
import { formatSessionDetail, formatSessionLog } from '../../gateway/recording/format.ts';

const EMAIL = 'jane.doe@example.com';
const CARD = '4242 4242 4242 4242';
const SSN = '123-45-6789';
const PHONE = '+44 20 7946 0958';
const IBAN = 'DE89370400440532013000';
const JWT = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl';
const ALL = [EMAIL, CARD, SSN, PHONE, IBAN, JWT];

describe('redactForAudit', () => {
  test('replaces every detected value in free text and keeps the rest', () => {
    const sql = `INSERT INTO customers (email, card, ssn, phone, iban, token) VALUES ('${EMAIL}', '${CARD}', '${SSN}', '${PHONE}', '${IBAN}', '${JWT}')`;
    assert.equal(
      redactForAudit(sql),
      "INSERT INTO customers (email, card, ssn, phone, iban, token) VALUES ('[redacted:email]', '[redacted:card]', '[redacted:ssn]', '[redacted:phone]', '[redacted:iban]', '[redacted:secret]')",
    );
  });

  test('handles non-ASCII text around values without mangling it', () => {
    assert.equal(redactForAudit(`Zürich — Ümlaut ${EMAIL} café ✓`), 'Zürich — Ümlaut [redacted:email] café ✓');
    assert.equal(redactForAudit('SELECT 1 — nothing to see ✓'), 'SELECT 1 — nothing to see ✓');
  });

  test('leaves ids, years and timestamps alone', () => {
    const sql = "SELECT * FROM orders WHERE id = 123456789 AND created_at > '2026-11-24 10:00:00' AND year = 2026";
    assert.equal(redactForAudit(sql), sql);
  });

  test('redacts nested strings and keys of structured details', () => {
    assert.deepEqual(redactDeep({ params: [EMAIL, 7, null], [EMAIL]: { note: `card ${CARD}` } }), {
      params: ['[redacted:email]', 7, null],
      '[redacted:email]': { note: 'card [redacted:card]' },
    });
  });

  test('parameter digests bind exact values and their order, telling NULL from empty', () => {
    const key = 'k'.repeat(32);
    const d = parameterDigest(key, [EMAIL, null]);
    assert.match(d, /^hmac-sha256:[0-9a-f]{64}$/);
    assert.equal(parameterDigest(key, [EMAIL, null]), d);
    assert.notEqual(parameterDigest(key, [null, EMAIL]), d);
    assert.notEqual(parameterDigest(key, [EMAIL, '']), d);
    assert.notEqual(parameterDigest('other-key', [EMAIL, null]), d);
    assert.notEqual(parameterDigest(key, ['ab', 'c']), parameterDigest(key, ['a', 'bc']));
  });
});

describe('the store keeps only redacted text', () => {
  test('statement text, reason, error, approval reason, audit details and end reason are redacted before they are written', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-redact-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'airlock.db');
    const store = SqliteStore.open(path);
    store.startSession({ id: 's', protocol: 'postgres', identity: 'agent-7', groups: [], connection: 'shop', clientAddress: 'x', startedAt: new Date() });
    store.recordOperation({
      sessionId: 's',
      seq: 1,
      at: new Date(),
      text: `UPDATE customers SET email = '${EMAIL}', card = '${CARD}' WHERE ssn = '${SSN}'`,
      kind: 'write',
      classification: { tables: ['public.customers'], parameters: [PHONE] },
      decision: 'review',
      reason: `touches ${IBAN}`,
      error: `ERROR: duplicate key value violates unique constraint "customers_email_key" DETAIL: Key (email)=(${EMAIL}) already exists.`,
      maskedColumns: [],
      approval: { requestId: 'apr-1', outcome: 'rejected', approvers: ['alice'], reason: `do not expose ${JWT}` },
    });
    store.recordAudit({ at: new Date(), kind: 'approval.requested', subject: 'apr-1', actor: 'agent-7', detail: { shownParameters: [EMAIL], nested: { card: CARD } } });
    store.endSession('s', new Date(), `upstream error: Key (phone)=(${PHONE})`, { toClient: 0, fromClient: 0 });
    store.close();

    // Nothing in the file, the WAL included, holds a raw value.
    const raw = readFileSync(path).toString('latin1');
    for (const v of ALL) assert.ok(!raw.includes(v), `raw ${v} in the store file`);
    const db = new Database(path, { readonly: true });
    t.after(() => db.close());
    const dump = JSON.stringify([db.prepare('SELECT * FROM sessions').all(), db.prepare('SELECT * FROM operations').all(), db.prepare('SELECT * FROM audit').all(), db.prepare('SELECT * FROM journal').all()]);
    for (const v of ALL) assert.ok(!dump.includes(v), `raw ${v} in a table`);
    assert.match(dump, /\[redacted:email\]/);

    const reader = SqliteStore.open(path, { readonly: true });
    t.after(() => reader.close());
    const d = reader.getSession('s');
    assert.ok(d);
    assert.equal(d.operations[0].text, "UPDATE customers SET email = '[redacted:email]', card = '[redacted:card]' WHERE ssn = '[redacted:ssn]'");
    assert.equal(d.operations[0].approval?.reason, 'do not expose [redacted:secret]');
    const audit = reader.listAudit('apr-1');
    for (const out of [formatSessionDetail(d, audit, { full: true }), formatSessionLog(d, audit)]) {
      for (const v of ALL) assert.ok(!out.includes(v), `raw ${v} shown:\n${out}`);
      assert.match(out, /\[redacted:email\]/);
    }
    assert.deepEqual(reader.verify().problems, [], 'the chain holds the redacted form, so it verifies');
  });

  test('identities stay readable (an approver may be an email address); what people typed is redacted', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    store.startSession({ id: 's', protocol: 'postgres', identity: 'agent-7', groups: [], connection: 'c', clientAddress: 'x', startedAt: new Date() });
    store.recordOperation({
      sessionId: 's', seq: 1, at: new Date(), text: 'UPDATE t SET x = 1 WHERE id = 1', kind: 'write', classification: {}, decision: 'review', maskedColumns: [],
      approval: { requestId: 'apr-1', outcome: 'approved', approvers: ['alice@corp.example'], reason: `ok, call ${PHONE}` },
    });
    store.recordAudit({ at: new Date(), kind: 'approval.decision', subject: 'apr-1', actor: 'alice@corp.example', detail: { approvers: ['alice@corp.example'], approverGroups: ['dba'], reason: `see ${EMAIL}` } });
    const op = store.getSession('s')?.operations[0];
    assert.deepEqual(op?.approval, { requestId: 'apr-1', outcome: 'approved', approvers: ['alice@corp.example'], reason: 'ok, call [redacted:phone]' });
    const [e] = store.listAudit('apr-1');
    assert.equal(e.actor, 'alice@corp.example');
    assert.deepEqual(e.detail, { approvers: ['alice@corp.example'], approverGroups: ['dba'], reason: 'see [redacted:email]' });
  });

  test('text an agent can send in odd encodings (lone surrogates, NUL, controls) is stored and still verifies', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    const odd = "SELECT '\ud800 \udfff \u0000 \u001b[2J \u2028' -- \ud83d\ude00";
    store.startSession({ id: `s\ud800`, protocol: 'http', identity: 'a\udc00', groups: ['g\ud800'], connection: 'c', clientAddress: 'x', startedAt: new Date() });
    store.recordOperation({ sessionId: `s\ud800`, seq: 1, at: new Date(), text: odd, kind: 'read', classification: { path: '\ud800' }, decision: 'allow', rule: 'r\udfff', error: '\udfff', maskedColumns: [] });
    store.recordAudit({ at: new Date(), kind: 'k\ud800', subject: 's', actor: 'a\ud800', detail: { x: '\udfff' } });
    store.endSession(`s\ud800`, new Date(), '\ud800', { toClient: 1, fromClient: 1 });
    assert.deepEqual(store.verify().problems, []);
    const got = store.getSession('s\ufffd')?.operations[0];
    assert.equal(got?.text, "SELECT '\ufffd \ufffd \u0000 \u001b[2J \u2028' -- \ud83d\ude00");
  });

  test('a value straddling the length cap is still redacted', (t) => {
    const store = SqliteStore.open(':memory:');
    t.after(() => store.close());
    store.startSession({ id: 's', protocol: 'postgres', identity: 'a', groups: [], connection: 'c', clientAddress: 'x', startedAt: new Date() });
    const text = 'x'.repeat(MAX_TEXT_CHARS - 10) + ` ${CARD} ` + 'y'.repeat(100);
    store.recordOperation({ sessionId: 's', seq: 1, at: new Date(), text, kind: 'write', classification: {}, decision: 'allow', maskedColumns: [] });
    const got = store.getSession('s')?.operations[0].text ?? '';
    assert.ok(!got.includes('4242 4242'), 'no part of the card is kept');
    assert.match(got, /\[airlock: \d+ more characters not recorded\]$/);
  });
});
