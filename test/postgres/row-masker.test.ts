import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type pg from 'pg';
import { startPostgres, type RunningPostgres } from '../support/postgres.ts';
import { createMaskerFactory, type FieldInfo, type MaskerFactory } from '../../gateway/postgres/row-masker.ts';
import { Hasher } from '../../gateway/masking/strategies.ts';
import type { ColumnMask, DetectorMask, MaskPlan } from '../../gateway/policy/decision.ts';

const HASH_KEY = 'row-masker-test-key';
const hasher = new Hasher(HASH_KEY);

/** A DataRow frame from column values (strings are UTF-8, null is SQL NULL). */
function dataRow(values: Array<Buffer | string | null>): Buffer {
  const cols = values.map((v) => (v === null ? null : typeof v === 'string' ? Buffer.from(v, 'utf8') : v));
  const len = 4 + 2 + cols.reduce((n, c) => n + 4 + (c ? c.length : 0), 0);
  const out = Buffer.alloc(1 + len);
  out[0] = 0x44;
  out.writeInt32BE(len, 1);
  out.writeInt16BE(cols.length, 5);
  let off = 7;
  for (const c of cols) {
    off = out.writeInt32BE(c ? c.length : -1, off);
    if (c) off += c.copy(out, off);
  }
  return out;
}

/** Column values of a DataRow frame, checking its length header. */
function parseRow(frame: Buffer): Array<Buffer | null> {
  assert.equal(frame[0], 0x44);
  assert.equal(frame.readInt32BE(1), frame.length - 1, 'length header');
  const n = frame.readInt16BE(5);
  const out: Array<Buffer | null> = [];
  let off = 7;
  for (let i = 0; i < n; i++) {
    const len = frame.readInt32BE(off);
    off += 4;
    if (len < 0) out.push(null);
    else {
      out.push(frame.subarray(off, off + len));
      off += len;
    }
  }
  assert.equal(off, frame.length, 'no trailing bytes');
  return out;
}

const texts = (frame: Buffer) => parseRow(frame).map((v) => (v === null ? null : v.toString('utf8')));

function plan(columns: Array<Omit<ColumnMask, 'rule'>> = [], detectors: Array<Omit<DetectorMask, 'rule'>> = []): MaskPlan {
  return {
    columns: columns.map((c) => ({ ...c, rule: 'test-rule' })),
    detectors: detectors.map((d) => ({ ...d, rule: 'test-rule' })),
    denyMaskedExpressions: false,
  };
}

const field = (name: string, typeOid: number, format: 0 | 1 = 0, tableOid = 0, columnId = 0): FieldInfo => ({ name, tableOid, columnId, typeOid, format });

const TEXT = 25;
const INT4 = 23;
const INT8 = 20;
const NUMERIC = 1700;
const JSONB = 3802;
const VARCHAR = 1043;

// ---------------------------------------------------------------------------------------------
describe('detectors on built-in types (no catalog needed)', () => {
  /** A factory whose catalog must not be touched: built-in types and detectors need no lookup. */
  let factory: MaskerFactory;
  before(() => {
    factory = createMaskerFactory({ connect: () => Promise.reject(new Error('catalog must not be used')), hashKey: HASH_KEY });
  });
  after(() => factory.close());

  const DETECT = plan([], [{ detector: 'email', strategy: 'redact' }, { detector: 'card', strategy: 'partial' }, { detector: 'ssn', strategy: 'null' }]);

  test('fast path: an empty plan needs no masker', async () => {
    assert.equal(await factory.forResult([field('x', TEXT)], plan()), null);
  });

  test('fast path: detectors but only non-text table columns', async () => {
    assert.equal(await factory.forResult([field('id', INT4, 0, 16384, 1), field('ts', 1184, 0, 16384, 2)], DETECT), null);
  });

  test('spans inside text are replaced; NULLs and clean columns untouched; header correct', async () => {
    const m = (await factory.forResult([field('id', INT4, 0, 16384, 1), field('note', TEXT), field('n', TEXT), field('card', VARCHAR, 0, 16384, 3)], DETECT))!;
    const frame = dataRow(['7', 'write to alice@example.com', null, 'card 4242-4242-4242-4242 ok']);
    const out = m.maskDataRow(frame);
    assert.notEqual(out, frame);
    assert.deepEqual(texts(out), ['7', 'write to [redacted:email]', null, 'card ****-****-****-4242 ok']);
    assert.deepEqual([...m.maskedColumns].sort(), ['card:card', 'email:note']);
  });

  test('a row with nothing to mask is returned as the same Buffer', async () => {
    const m = (await factory.forResult([field('id', INT4, 0, 16384, 1), field('note', TEXT)], DETECT))!;
    const frame = dataRow(['1', 'nothing sensitive, order 1234567890123']);
    assert.equal(m.maskDataRow(frame), frame);
    assert.equal(m.maskedColumns.size, 0);
  });

  test('a null-strategy hit makes the value SQL NULL', async () => {
    const m = (await factory.forResult([field('a', TEXT), field('b', TEXT)], DETECT))!;
    assert.deepEqual(texts(m.maskDataRow(dataRow(['ssn 123-45-6789', 'x']))), [null, 'x']);
    assert.deepEqual([...m.maskedColumns], ['ssn:a']);
  });

  test('a derived number holding a card becomes NULL (text and binary format)', async () => {
    const m = (await factory.forResult([field('n', INT8), field('b', INT8, 1), field('ok', INT8, 1)], DETECT))!;
    const bin = (v: bigint) => {
      const b = Buffer.alloc(8);
      b.writeBigInt64BE(v);
      return b;
    };
    const out = parseRow(m.maskDataRow(dataRow(['4242424242424242', bin(4242424242424242n), bin(2024n)])));
    assert.equal(out[0], null);
    assert.equal(out[1], null);
    assert.deepEqual(out[2], bin(2024n));
  });

  test('binary numeric values are decoded to look for cards', async () => {
    const m = (await factory.forResult([field('n', NUMERIC, 1)], DETECT))!;
    // 4242424242424242 in base 10000: 4242 4242 4242 4242, weight 3, positive, scale 0.
    const num = Buffer.alloc(8 + 8);
    num.writeInt16BE(4, 0);
    num.writeInt16BE(3, 2);
    num.writeUInt16BE(0, 4);
    num.writeInt16BE(0, 6);
    for (let i = 0; i < 4; i++) num.writeInt16BE(4242, 8 + 2 * i);
    assert.deepEqual(parseRow(m.maskDataRow(dataRow([num]))), [null]);
  });

  test('text in binary format is masked in place; jsonb keeps its version byte', async () => {
    const m = (await factory.forResult([field('t', TEXT, 1), field('j', JSONB, 1)], DETECT))!;
    const jsonb = Buffer.concat([Buffer.from([1]), Buffer.from('{"email": "bob@example.com"}')]);
    const out = parseRow(m.maskDataRow(dataRow([Buffer.from('to bob@example.com'), jsonb])));
    assert.equal(out[0]!.toString(), 'to [redacted:email]');
    assert.equal(out[1]![0], 1);
    assert.deepEqual(JSON.parse(out[1]!.subarray(1).toString()), { email: '[redacted:email]' });
  });

  test('non-ASCII bytes around a span are preserved exactly', async () => {
    const m = (await factory.forResult([field('t', TEXT)], DETECT))!;
    assert.deepEqual(texts(m.maskDataRow(dataRow(['Grüße an josé@example.com — danke']))), ['Grüße an [redacted:email] — danke']);
  });

  test('many columns, several edits: the new frame is exact', async () => {
    const fields = Array.from({ length: 12 }, (_, i) => field(`c${i}`, TEXT));
    const m = (await factory.forResult(fields, DETECT))!;
    const values = fields.map((_, i) => (i % 3 === 0 ? `u${i}@example.com` : i % 3 === 1 ? null : 'x'.repeat(i * 50)));
    const out = texts(m.maskDataRow(dataRow(values)));
    assert.deepEqual(out, values.map((v, i) => (i % 3 === 0 ? '[redacted:email]' : v)));
  });

  test('malformed frames are rejected, never relayed', async () => {
    const m = (await factory.forResult([field('a', TEXT), field('b', TEXT)], DETECT))!;
    const good = dataRow(['a@example.com', 'x']);
    assert.throws(() => m.maskDataRow(dataRow(['only one'])), /DataRow has 1 columns, RowDescription had 2/);
    assert.throws(() => m.maskDataRow(good.subarray(0, good.length - 1)), /length header/);
    const lying = Buffer.from(good);
    lying.writeInt32BE(1000, 7);
    assert.throws(() => m.maskDataRow(lying), /truncated DataRow/);
    const notRow = Buffer.from(good);
    notRow[0] = 0x54;
    assert.throws(() => m.maskDataRow(notRow), /not a DataRow/);
  });

  test('maskDataRowRegion: the same message as maskDataRow, for a row anywhere in a socket chunk', async () => {
    const fields = [field('id', INT4, 0, 16384, 1), field('note', TEXT), field('n', TEXT), field('card', VARCHAR, 0, 16384, 3)];
    const m = (await factory.forResult(fields, DETECT))!;
    const samples: Array<Array<string | null>> = [
      ['1', 'mail bob@example.com', null, '4242 4242 4242 4242'],
      ['2', 'clean', 'x', 'nothing'],
      ['3', 'ssn 123-45-6789', 'Grüße josé@example.com', ''],
      ['4', 'x'.repeat(9000) + ' a@example.com', null, null], // a masked message too large for a slab region
    ];
    let seed = 3;
    const handedOut: Array<{ buf: Buffer; at: number; want: Buffer }> = [];
    for (let i = 0; i < 400; i++) {
      const row = samples[i % samples.length];
      const frame = dataRow(row);
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      const lead = seed % 64;
      const chunk = Buffer.concat([Buffer.alloc(lead, 0x5a), frame, Buffer.alloc(seed % 7, 0x5a)]);
      const want = m.maskDataRow(frame);
      const len: number = m.maskDataRowRegion(chunk, lead, lead + frame.length);
      if (want === frame) {
        assert.equal(len, -1, 'an unchanged row is relayed as it is');
        continue;
      }
      assert.equal(len, want.length);
      const got = Buffer.from(m.regionBuffer.subarray(m.regionStart, m.regionStart + len));
      assert.deepEqual(got, want);
      handedOut.push({ buf: m.regionBuffer, at: m.regionStart, want: Buffer.from(want) });
    }
    // A region may still sit in a socket's queue: no later row may write over it.
    for (const h of handedOut) assert.deepEqual(h.buf.subarray(h.at, h.at + h.want.length), h.want);
    // Malformed messages throw on this path too (the session cuts the statement).
    const good = dataRow(['1', 'a@example.com', 'x', 'y']);
    const chunk = Buffer.concat([Buffer.alloc(3), good]);
    assert.throws(() => m.maskDataRowRegion(chunk, 3, chunk.length - 1), /length header/);
    assert.throws(() => m.maskDataRowRegion(chunk, 2, chunk.length), /not a DataRow/);
    assert.throws(() => m.maskDataRowRegion(chunk, 3, chunk.length + 1), /not a DataRow/);
  });

  test('hash strategy is deterministic and keyed', async () => {
    const m = (await factory.forResult([field('a', TEXT)], plan([], [{ detector: 'email', strategy: 'hash' }])))!;
    const a = texts(m.maskDataRow(dataRow(['alice@example.com'])))[0];
    const b = texts(m.maskDataRow(dataRow(['alice@example.com'])))[0];
    assert.equal(a, hasher.hash('alice@example.com'));
    assert.equal(a, b);
    const other = createMaskerFactory({ connect: () => Promise.reject(new Error('unused')), hashKey: 'another-key' });
    const m2 = (await other.forResult([field('a', TEXT)], plan([], [{ detector: 'email', strategy: 'hash' }])))!;
    assert.notEqual(texts(m2.maskDataRow(dataRow(['alice@example.com'])))[0], a);
    await other.close();
  });

  test('COPY (query): detectors on every column, escapes preserved', async () => {
    const line = Buffer.from('1\tmail alice@example.com\\tthen\t\\N\tplain\n');
    const out = await factory.maskCopyLine(line, DETECT, undefined);
    assert.equal(out.toString(), '1\tmail [redacted:email]\\tthen\t\\N\tplain\n');
    const clean = Buffer.from('1\tnothing\t\\N\n');
    assert.equal(await factory.maskCopyLine(clean, DETECT, undefined), clean);
  });
});

// ---------------------------------------------------------------------------------------------
describe('column rules against a real PostgreSQL', () => {
  let server: RunningPostgres;
  let admin: pg.Client;
  let factory: MaskerFactory;

  before(async () => {
    server = await startPostgres();
    admin = await server.client();
    await admin.query(`
      CREATE SCHEMA app;
      CREATE TABLE app.users (id int PRIMARY KEY, email text, ssn text, born date, salary int, profile jsonb, tags text[]);
      CREATE TABLE app.orders (id int PRIMARY KEY, user_id int, card varchar(32), note text);
      CREATE VIEW app.people AS SELECT id, email AS contact FROM app.users;
      INSERT INTO app.users VALUES (1, 'alice@example.com', '123-45-6789', '1990-01-02', 120000, '{"phone": "+1 415 555 2671"}', '{a,b}'),
                                   (2, NULL, '219-09-9999', NULL, 90000, NULL, NULL);
      INSERT INTO app.orders VALUES (10, 1, '4242 4242 4242 4242', 'ship to alice@example.com'), (11, 2, '5555555555554444', E'tab\\there');
    `);
    factory = createMaskerFactory({ connect: () => server.client(), hashKey: HASH_KEY });
  });

  after(async () => {
    await factory?.close();
    await admin?.end();
    await server?.stop();
  });

  /** Runs `sql`, then masks each row's DataRow (rebuilt from the text values) with the real RowDescription. */
  async function run(sql: string, p: MaskPlan) {
    const r = await admin.query({ text: sql, rowMode: 'array' });
    const fields: FieldInfo[] = r.fields.map((f) => ({ name: f.name, tableOid: f.tableID, columnId: f.columnID, typeOid: f.dataTypeID, format: 0 }));
    const raw = await admin.query({ text: sql, rowMode: 'array', types: { getTypeParser: () => (v: string) => v } });
    const masker = await factory.forResult(fields, p);
    const rows = raw.rows.map((row: Array<string | null>) => (masker ? texts(masker.maskDataRow(dataRow(row))) : row));
    return { rows, masked: masker ? [...masker.maskedColumns].sort() : null };
  }

  const EMAIL_REDACT = plan([{ column: 'app.users.email', strategy: 'redact' }]);

  test('a masked column is caught under an alias, with SELECT *, and in joins', async () => {
    assert.deepEqual((await run('SELECT email AS e, id FROM app.users ORDER BY id', EMAIL_REDACT)).rows, [['[redacted]', '1'], [null, '2']]);
    const star = await run('SELECT * FROM app.users WHERE id = 1', EMAIL_REDACT);
    assert.equal(star.rows[0][1], '[redacted]');
    assert.equal(star.rows[0][2], '123-45-6789');
    assert.deepEqual(star.masked, ['app.users.email']);
    const join = await run('SELECT o.id, u.email FROM app.orders o JOIN app.users u ON u.id = o.user_id ORDER BY o.id', EMAIL_REDACT);
    assert.deepEqual(join.rows, [['10', '[redacted]'], ['11', null]]);
  });

  test('a column read through a view is caught by its base column', async () => {
    assert.deepEqual((await run('SELECT contact FROM app.people WHERE id = 1', EMAIL_REDACT)).rows, [['[redacted]']]);
  });

  test('forResultCached answers only from a fresh catalog cache, with the masks forResult gives', async () => {
    const f = createMaskerFactory({ connect: () => server.client(), hashKey: HASH_KEY, cacheTtlMs: 300 });
    try {
      const fieldsOf = async (sql: string) => (await admin.query({ text: sql, rowMode: 'array' })).fields.map((x): FieldInfo => ({ name: x.name, tableOid: x.tableID, columnId: x.columnID, typeOid: x.dataTypeID, format: 0 }));
      const direct = await fieldsOf('SELECT id, email FROM app.users WHERE id = 1');
      const viaView = await fieldsOf('SELECT contact FROM app.people WHERE id = 1');
      assert.equal(f.forResultCached!(direct, EMAIL_REDACT), undefined, 'nothing cached yet: the caller must wait for forResult');
      assert.ok(await f.forResult(direct, EMAIL_REDACT));
      const cached = f.forResultCached!(direct, EMAIL_REDACT);
      assert.ok(cached);
      assert.deepEqual(texts(cached.maskDataRow(dataRow(['1', 'alice@example.com']))), ['1', '[redacted]']);
      // A view column needs the view and its base relation fresh.
      assert.equal(f.forResultCached!(viaView, EMAIL_REDACT), undefined);
      assert.ok(await f.forResult(viaView, EMAIL_REDACT));
      assert.deepEqual(texts(f.forResultCached!(viaView, EMAIL_REDACT)!.maskDataRow(dataRow(['alice@example.com']))), ['[redacted]']);
      assert.equal(f.forResultCached!(await fieldsOf('SELECT id FROM app.orders'), EMAIL_REDACT), undefined, 'app.orders was never looked up');
      await new Promise((r) => setTimeout(r, 350));
      assert.equal(f.forResultCached!(direct, EMAIL_REDACT), undefined, 'expired entries are not used');
      // Detectors on built-in types need no catalog at all.
      assert.ok(f.forResultCached!([field('x', TEXT)], plan([], [{ detector: 'email', strategy: 'redact' }])));
    } finally {
      await f.close();
    }
  });

  test('results that touch no masked column need no masker', async () => {
    const r = await admin.query({ text: 'SELECT id, user_id FROM app.orders', rowMode: 'array' });
    const fields: FieldInfo[] = r.fields.map((f) => ({ name: f.name, tableOid: f.tableID, columnId: f.columnID, typeOid: f.dataTypeID, format: 0 }));
    assert.equal(await factory.forResult(fields, EMAIL_REDACT), null);
  });

  test('strategies: partial, hash, null on text columns', async () => {
    const p = plan([
      { column: 'app.orders.card', strategy: 'partial' },
      { column: 'app.users.ssn', strategy: 'hash' },
      { column: 'app.users.email', strategy: 'null' },
    ]);
    assert.deepEqual((await run('SELECT card FROM app.orders ORDER BY id', p)).rows, [['**** **** **** 4242'], ['************4444']]);
    assert.deepEqual((await run('SELECT ssn, email FROM app.users WHERE id = 1', p)).rows, [[hasher.hash('123-45-6789'), null]]);
  });

  test('masked non-text columns become NULL whatever the strategy', async () => {
    const p = plan([
      { column: 'app.users.born', strategy: 'redact' },
      { column: 'app.users.salary', strategy: 'hash' },
      { column: 'app.users.tags', strategy: 'partial' },
    ]);
    const r = await run('SELECT id, born, salary, tags FROM app.users WHERE id = 1', p);
    assert.deepEqual(r.rows, [['1', null, null, null]]);
    assert.deepEqual(r.masked, ['app.users.born', 'app.users.salary', 'app.users.tags']);
  });

  test('a masked jsonb column stays valid JSON', async () => {
    const r = await run('SELECT profile FROM app.users WHERE id = 1', plan([{ column: 'app.users.profile', strategy: 'redact' }]));
    assert.equal(JSON.parse(r.rows[0][0]!), '[redacted]');
  });

  test('binary format: masked text in place, masked int becomes NULL', async () => {
    const r = await admin.query({ text: 'SELECT email, salary FROM app.users WHERE id = 1', rowMode: 'array' });
    const fields: FieldInfo[] = r.fields.map((f) => ({ name: f.name, tableOid: f.tableID, columnId: f.columnID, typeOid: f.dataTypeID, format: 1 }));
    const m = (await factory.forResult(fields, plan([{ column: 'app.users.email', strategy: 'hash' }, { column: 'app.users.salary', strategy: 'redact' }])))!;
    const salary = Buffer.alloc(4);
    salary.writeInt32BE(120000);
    const out = parseRow(m.maskDataRow(dataRow([Buffer.from('alice@example.com'), salary])));
    assert.equal(out[0]!.toString(), hasher.hash('alice@example.com'));
    assert.equal(out[1], null);
  });

  test('derived expressions escape column rules but not detectors', async () => {
    const p = plan([{ column: 'app.users.email', strategy: 'redact' }], [{ detector: 'email', strategy: 'redact' }]);
    const r = await run(`SELECT email, upper(email) AS up, 'to: ' || email AS cat FROM app.users WHERE id = 1`, p);
    assert.deepEqual(r.rows, [['[redacted]', '[redacted:email]', 'to: [redacted:email]']]);
    assert.deepEqual(r.masked, ['app.users.email', 'email:cat', 'email:up']);
  });

  test('detectors also cover unmasked text table columns and jsonb', async () => {
    const p = plan([], [{ detector: 'email', strategy: 'redact' }, { detector: 'phone', strategy: 'partial' }]);
    const r = await run('SELECT o.note, u.profile FROM app.orders o JOIN app.users u ON u.id = o.user_id WHERE o.id = 10', p);
    assert.equal(r.rows[0][0], 'ship to [redacted:email]');
    assert.deepEqual(JSON.parse(r.rows[0][1]!), { phone: '+* *** *** 2671' });
  });

  test('the catalog failing makes forResult throw (fail closed)', async () => {
    const broken = createMaskerFactory({ connect: () => Promise.reject(new Error('no route to host')), hashKey: HASH_KEY });
    try {
      await assert.rejects(broken.forResult([field('email', TEXT, 0, 16384, 2)], EMAIL_REDACT), /masking catalog lookup failed.*no route to host/);
    } finally {
      await broken.close();
    }
  });

  /** Real COPY TO STDOUT output from psql, one Buffer per line. */
  function psql(sql: string, input?: Buffer): Buffer {
    return execFileSync('/usr/bin/psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', server.host, '-p', String(server.port), '-U', server.user, '-d', 'postgres', '-c', sql], {
      env: { ...process.env, PGPASSWORD: server.password },
      input,
    });
  }

  function copyOut(sql: string): Buffer[] {
    const out = psql(sql);
    const lines: Buffer[] = [];
    let s = 0;
    for (let i = 0; i < out.length; i++) if (out[i] === 0x0a) lines.push(out.subarray(s, i + 1)), (s = i + 1);
    return lines;
  }

  test('COPY table TO STDOUT: column rules by catalog order, non-text masked columns as \\N', async () => {
    const p = plan([{ column: 'app.users.email', strategy: 'redact' }, { column: 'app.users.salary', strategy: 'hash' }, { column: 'app.users.ssn', strategy: 'partial' }]);
    const lines = copyOut('COPY app.users TO STDOUT');
    const out = await Promise.all(lines.map((l) => factory.maskCopyLine(l, p, 'app.users')));
    assert.deepEqual(out.map((b) => b.toString()), [
      '1\t[redacted]\t***-**-6789\t1990-01-02\t\\N\t{"phone": "+1 415 555 2671"}\t{a,b}\n',
      '2\t\\N\t***-**-9999\t\\N\t\\N\t\\N\t\\N\n',
    ]);
  });

  test('COPY with a column list and escaped values', async () => {
    const p = plan([{ column: 'app.orders.card', strategy: 'partial' }], [{ detector: 'email', strategy: 'hash' }]);
    const lines = copyOut('COPY app.orders (note, card) TO STDOUT');
    const out = await Promise.all(lines.map((l) => factory.maskCopyLine(l, p, 'app.orders', ['note', 'card'])));
    assert.deepEqual(out.map((b) => b.toString()), [
      `ship to ${hasher.hash('alice@example.com')}\t**** **** **** 4242\n`,
      'tab\\there\t************4444\n',
    ]);
    const masker = (await factory.forCopy(p, 'app.orders', ['note', 'card']))!;
    for (const l of lines) masker.maskLine(l);
    assert.deepEqual([...masker.maskedColumns].sort(), ['app.orders.card', 'email:note']);
  });

  /** Splits CSV output into rows (a quoted value may hold a newline). */
  function csvRows(out: Buffer): Buffer[] {
    const rows: Buffer[] = [];
    let s = 0;
    let inQuote = false;
    for (let i = 0; i < out.length; i++) {
      if (out[i] === 0x22) inQuote = !inQuote;
      else if (out[i] === 0x0a && !inQuote) rows.push(out.subarray(s, i + 1)), (s = i + 1);
    }
    return rows;
  }

  test('COPY in CSV format with a header: quoted values, embedded newlines, NULL vs empty', async () => {
    await admin.query(`CREATE TABLE app.notes (id int, body text, owner text)`);
    await admin.query(`INSERT INTO app.notes VALUES (1, E'he said "hi",\nmail bob@example.com', ''), (2, NULL, 'carol@example.com')`);
    const p = plan([{ column: 'app.notes.owner', strategy: 'hash' }], [{ detector: 'email', strategy: 'redact' }]);
    const masker = (await factory.forCopy(p, 'app.notes', undefined, { format: 'csv', header: true }))!;
    const masked = csvRows(psql('COPY app.notes TO STDOUT (FORMAT csv, HEADER)')).map((r) => masker.maskLine(r));
    const out = masked.map((b) => b.toString());
    assert.deepEqual(out, [
      'id,body,owner\n',
      `1,"he said ""hi"",\nmail [redacted:email]","${hasher.hash('')}"\n`,
      `2,,"${hasher.hash('carol@example.com')}"\n`,
    ]);
    // The masked CSV is still well-formed: PostgreSQL itself loads it back, NULL and all.
    await admin.query('CREATE TABLE app.notes_back (id int, body text, owner text)');
    psql('COPY app.notes_back FROM STDIN (FORMAT csv, HEADER)', Buffer.concat(masked));
    const back = await admin.query(`SELECT id, body, owner FROM app.notes_back ORDER BY id`);
    assert.deepEqual(back.rows, [
      { id: 1, body: 'he said "hi",\nmail [redacted:email]', owner: hasher.hash('') },
      { id: 2, body: null, owner: hasher.hash('carol@example.com') },
    ]);
    assert.deepEqual([...masker.maskedColumns].sort(), ['app.notes.owner', 'email:body']);
  });

  test('COPY text format with a custom delimiter keeps escaped delimiters inside values', async () => {
    const p = plan([], [{ detector: 'email', strategy: 'redact' }]);
    const masker = (await factory.forCopy(p, 'app.orders', ['note', 'id'], { delimiter: '|' }))!;
    assert.equal(masker.maskLine(Buffer.from('a\\|b to x@example.com|10\n')).toString(), 'a\\|b to [redacted:email]|10\n');
    assert.equal(masker.maskLine(Buffer.from('pipe \\| and dave@example.com|11\n')).toString(), 'pipe \\| and [redacted:email]|11\n');
  });

  /** A CopyData message around one row. */
  const copyData = (row: Buffer) => {
    const f = Buffer.alloc(5 + row.length);
    f[0] = 0x64;
    f.writeInt32BE(4 + row.length, 1);
    row.copy(f, 5);
    return f;
  };

  test('maskFrame rebuilds the CopyData message around exactly what maskLine gives (text and csv, header, escapes, NULLs)', async () => {
    const cases: Array<{ p: MaskPlan; rows: Buffer[]; table: string; columns?: string[]; options?: Parameters<MaskerFactory['forCopy']>[3] }> = [
      { p: plan([{ column: 'app.users.email', strategy: 'redact' }, { column: 'app.users.salary', strategy: 'hash' }, { column: 'app.users.ssn', strategy: 'partial' }]), rows: copyOut('COPY app.users TO STDOUT'), table: 'app.users' },
      { p: plan([{ column: 'app.orders.card', strategy: 'partial' }], [{ detector: 'email', strategy: 'hash' }]), rows: copyOut('COPY app.orders (note, card) TO STDOUT'), table: 'app.orders', columns: ['note', 'card'] },
      { p: plan([{ column: 'app.notes.owner', strategy: 'hash' }], [{ detector: 'email', strategy: 'redact' }]), rows: csvRows(psql('COPY app.notes TO STDOUT (FORMAT csv, HEADER)')), table: 'app.notes', options: { format: 'csv', header: true } },
    ];
    for (const c of cases) {
      const byLine = (await factory.forCopy(c.p, c.table, c.columns, c.options))!;
      const byFrame = (await factory.forCopy(c.p, c.table, c.columns, c.options))!;
      let changed = 0;
      for (const row of c.rows) {
        const frame = copyData(row);
        const line = byLine.maskLine(row);
        const out = byFrame.maskFrame(frame);
        assert.deepEqual(out, copyData(line), `${c.table}: ${row.toString()}`);
        if (line === row) assert.equal(out, frame, 'an unchanged row is the same message, not a copy');
        else changed++;
      }
      assert.ok(changed > 0, `${c.table}: something was masked`);
      assert.deepEqual([...byFrame.maskedColumns].sort(), [...byLine.maskedColumns].sort());
    }
    const m = (await factory.forCopy(plan([], [{ detector: 'email', strategy: 'redact' }]), 'app.orders', ['note']))!;
    assert.throws(() => m.maskFrame(Buffer.from('d\0\0\0\x09abc\n', 'latin1')), /not a complete CopyData message/);
    assert.throws(() => m.maskFrame(copyData(Buffer.from('a\tb\n'))), /COPY line has 2 columns, expected 1/);
  });

  test('masked DataRows built one after another are contiguous, and earlier ones are never overwritten', async () => {
    const p = plan([], [{ detector: 'email', strategy: 'redact' }]);
    const m = (await factory.forResult([field('t', 25)], p))!;
    const outs: Buffer[] = [];
    const expect: string[] = [];
    for (let i = 0; i < 5000; i++) {
      outs.push(m.maskDataRow(dataRow([`row ${i} of user${i}@example.com`])));
      expect.push(`row ${i} of [redacted:email]`);
    }
    assert.deepEqual(outs.map((o) => texts(o)[0]), expect);
    const adjacent = outs.filter((o, i) => i > 0 && o.buffer === outs[i - 1].buffer && o.byteOffset === outs[i - 1].byteOffset + outs[i - 1].length).length;
    assert.ok(adjacent > 4000, `most masked rows follow the previous one in memory (${adjacent})`);
  });

  test('COPY in binary format is refused', async () => {
    await assert.rejects(factory.forCopy(EMAIL_REDACT, 'app.users', undefined, { format: 'binary' }), /binary format cannot be masked/);
    // ...unless nothing in it needs masking.
    assert.equal(await factory.forCopy(EMAIL_REDACT, 'app.orders', undefined, { format: 'binary' }), null);
  });

  test('COPY: unknown tables or columns and wrong column counts are errors', async () => {
    await assert.rejects(factory.maskCopyLine(Buffer.from('x\n'), EMAIL_REDACT, 'app.nope'), /not in the catalog/);
    await assert.rejects(factory.maskCopyLine(Buffer.from('x\n'), EMAIL_REDACT, 'app.users', ['nope']), /COPY column "nope" is not a column of app.users/);
    await assert.rejects(factory.maskCopyLine(Buffer.from('1\ta@b.co\n'), EMAIL_REDACT, 'app.users'), /COPY line has 2 columns, expected 7/);
  });
});
