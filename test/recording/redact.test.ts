// The audit store never holds an unmasked value: statement text, parameters shown to approvers,
// error texts, reasons and audit details pass the PII detectors before they are written, whatever
// the masking config says. What `sessions show` and the chat session log print comes from there.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parameterDigest, redactDeep, redactedJson, redactForAudit, safeJson, wellFormed } from '../../gateway/recording/redact.ts';
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

describe('wellFormed', () => {
  test('replaces every lone surrogate with U+FFFD and keeps pairs, as SQLite\'s UTF-8 would store them', () => {
    assert.equal(wellFormed('a\ud800'), 'a\ufffd');
    assert.equal(wellFormed('\udc00a'), '\ufffda');
    assert.equal(wellFormed('\udc00\ud800'), '\ufffd\ufffd', 'a reversed pair is two lone surrogates');
    assert.equal(wellFormed('\ud83d\ude00'), '\ud83d\ude00');
    const plain = 'SELECT 1';
    assert.equal(wellFormed(plain), plain);
    // Against the definition (a regex over UTF-16 code units) on generated strings.
    const units = [0x61, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xd83d, 0xde00, 0xfffd, 0x20];
    let seed = 11;
    for (let i = 0; i < 3000; i++) {
      let str = '';
      for (let n = i % 9; n > 0; n--) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        str += String.fromCharCode(units[seed % units.length]);
      }
      assert.equal(wellFormed(str), str.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd'), JSON.stringify(str));
    }
  });
});

describe('redactedJson (the stored form of classifications and audit details)', () => {
  // The reference: what the store wrote before redactedJson existed.
  const reference = (v: unknown) => safeJson(redactDeep(v));
  const EMAIL = 'bob@example.com';

  test('is exactly the redacted copy serialized, for the values the proxies record', () => {
    const shared = ['public.users'];
    const cases: unknown[] = [
      {},
      { tables: ['public.pgbench_accounts'], functions: [], statementTypes: ['SelectStmt'], copy: undefined, fingerprint: 'abc', parseError: undefined, tag: 'SELECT 1' },
      { tables: shared, functions: shared, binding: { digest: 'hmac-sha256:00', parameters: [EMAIL, null, 3, -0, Number.NaN, Infinity, true] } },
      { approvers: [EMAIL, { nested: EMAIL }], identity: EMAIL, groups: [EMAIL], reason: `mail ${EMAIL}`, actor: { who: EMAIL } },
      { odd: '\ud800 \u0000 \u2028 "quoted" \\', 'key with "quotes"': 1, '': '', [`${'\u00e9'}`]: [undefined, () => 1, [[[]]]] },
      [EMAIL, undefined, null, [EMAIL]],
      EMAIL,
      42,
      undefined,
      null,
      Object.assign(Object.create(null), { a: EMAIL }),
    ];
    for (const v of cases) assert.equal(redactedJson(v), reference(v), JSON.stringify(v) ?? String(v));
  });

  test('hands what it does not serialize itself to the reference path, with the same result', () => {
    const cyclic: Record<string, unknown> = { a: EMAIL };
    cyclic.self = cyclic;
    let deep: Record<string, unknown> = { leaf: EMAIL };
    for (let i = 0; i < 200; i++) deep = { d: deep };
    class Point {
      constructor(readonly x: number, readonly mail: string) {}
    }
    const withProto = JSON.parse('{"__proto__": {"x": "bob@example.com"}, "y": 1}');
    const cases: unknown[] = [
      cyclic,
      deep,
      { at: new Date(0), n: 10n, p: new Point(1, EMAIL), m: new Map([[1, 2]]) },
      { [EMAIL]: 'a key that is itself sensitive' },
      withProto,
      { toJSON: () => EMAIL },
      { s: Symbol('x'), f: () => 1 },
      [1n, new Date(1)],
    ];
    for (const v of cases) assert.equal(redactedJson(v), reference(v));
    assert.ok(!redactedJson({ [EMAIL]: 1 }).includes(EMAIL), 'a sensitive key is redacted too');
  });

  test('matches the reference on generated values', () => {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const strings = [EMAIL, '4242 4242 4242 4242', 'plain', '', '\ud800', 'x"y\\z', '\u00e9t\u00e9', '555-867-5309', 'identity'];
    const keys = ['identity', 'approvers', 'groups', 'tables', 'reason', 'x', 'actor', 'detail', 'k\u00e9y'];
    const gen = (depth: number): unknown => {
      const r = rnd(depth > 3 ? 6 : 8);
      if (r === 0) return strings[rnd(strings.length)];
      if (r === 1) return rnd(1000) - 500;
      if (r === 2) return rnd(2) === 0;
      if (r === 3) return null;
      if (r === 4) return undefined;
      if (r === 5) return rnd(10) / 3;
      if (r === 6) return Array.from({ length: rnd(4) }, () => gen(depth + 1));
      const o: Record<string, unknown> = {};
      for (let i = rnd(5); i > 0; i--) o[keys[rnd(keys.length)]] = gen(depth + 1);
      return o;
    };
    for (let i = 0; i < 2000; i++) {
      const v = gen(0);
      assert.equal(redactedJson(v), reference(v), JSON.stringify(v));
    }
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
