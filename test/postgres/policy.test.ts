// Policy enforcement at the protocol level: denials in both protocols and inside transactions
// and pipelines, row and byte limits, masking of results and COPY output, and recording.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startGateway, type GatewayHarness, pgError } from '../support/gateway.ts';
import { WireClient, serialize } from '../support/pgwire.ts';

let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    setup: `CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance int);
            INSERT INTO accounts VALUES (1, 'ann', 100), (2, 'bob', 200);
            CREATE TABLE big (id int, payload text);
            INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 1000) g;
            CREATE TABLE customers (id int, email text, note text);
            INSERT INTO customers VALUES (1, 'ann@example.com', 'vip'), (2, 'bob@example.org', 'call bob@example.org');
            CREATE TABLE blobs (id int, data text);
            INSERT INTO blobs SELECT g, repeat('b', 1000) FROM generate_series(1, 100) g;
            CREATE SCHEMA s1; CREATE SCHEMA s2;
            CREATE TABLE s1.t (id int, email text); INSERT INTO s1.t VALUES (1, 'first@s1.test');
            CREATE TABLE s2.t (id int, email text); INSERT INTO s2.t VALUES (1, 'secret@s2.test');`,
    config: () => ({
      masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.customers.email', strategy: 'redact' }, { column: 's2.t.email', strategy: 'redact' }] },
      policy: {
        default: 'allow',
        rules: [
          { name: 'no-drop', match: { statements: ['DropStmt', 'TruncateStmt'] }, action: 'deny', reason: 'dropping or truncating tables is not allowed here' },
          { name: 'export-limit', match: { tables: ['public.big'] }, action: 'allow', limits: { maxRowsPerStatement: 100 } },
          { name: 'blob-budget', match: { tables: ['public.blobs'] }, action: 'allow', limits: { maxBytesPerSession: 30_000 } },
          { name: 'notes-detect', match: { tables: ['public.customers'] }, action: 'mask', mask: { detectors: [{ detector: 'email', strategy: 'redact' }] } },
          { name: 'approve-deletes', match: { statements: ['DeleteStmt'] }, action: 'review', review: { approvers: ['dba'] } },
        ],
      },
    }),
  });
});

after(async () => {
  await h?.close();
});

test('a denied statement gets 42501 naming the rule, is not executed, and the session stays usable', async () => {
  const r = await h.psql('DROP TABLE accounts;\nSELECT count(*) FROM accounts;\n', { args: ['-v', 'VERBOSITY=verbose'] });
  assert.match(r.stderr, /ERROR:  42501: Airlock denied this statement: rule no-drop: dropping or truncating tables is not allowed here/);
  assert.equal(r.stdout, '2\n');
  const still = await h.pg.query('SELECT count(*)::int AS n FROM accounts');
  assert.equal(still.rows[0].n, 2);
});

test('a denial inside a transaction block fails the transaction like any PostgreSQL error; ROLLBACK recovers', async () => {
  const c = await h.client();
  try {
    await c.query('BEGIN');
    await c.query("INSERT INTO accounts VALUES (3, 'cat', 300)");
    const denied = await pgError(c.query('TRUNCATE accounts'));
    assert.equal(denied.code, '42501');
    const aborted = await pgError(c.query('SELECT 1'));
    assert.equal(aborted.code, '25P02');
    await c.query('ROLLBACK');
    const n = await c.query('SELECT count(*)::int AS n FROM accounts');
    assert.equal(n.rows[0].n, 2, 'the insert before the denial was rolled back');
  } finally {
    await c.end();
  }
});

test('psql in a transaction: denial, then 25P02, then ROLLBACK and back to normal', async () => {
  const r = await h.psql('BEGIN;\nDROP TABLE accounts;\nSELECT 1;\nROLLBACK;\nSELECT 2;\n');
  assert.match(r.stderr, /Airlock denied this statement: rule no-drop/);
  assert.match(r.stderr, /current transaction is aborted, commands ignored until end of transaction block/);
  assert.equal(r.stdout, 'BEGIN\nROLLBACK\n2\n');
});

test('extended protocol: a denied Parse is answered with 42501, the rest of the pipeline is skipped until Sync', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    const out = await w.roundtrip([
      serialize.parse({ text: "INSERT INTO accounts VALUES (9, 'zed', 9)" }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.parse({ text: 'DROP TABLE accounts' }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.parse({ text: 'SELECT 1' }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.sync(),
    ]);
    assert.deepEqual(out.map((m) => m.name), ['parseComplete', 'bindComplete', 'commandComplete', 'error', 'readyForQuery']);
    const err = out[3] as unknown as { code: string; message: string };
    assert.equal(err.code, '42501');
    assert.match(err.message, /rule no-drop/);
    assert.equal((out[4] as unknown as { status: string }).status, 'I');
    const n = await h.pg.query('SELECT count(*)::int AS n FROM accounts WHERE id = 9');
    assert.equal(n.rows[0].n, 0, 'the implicit transaction of the pipeline was rolled back, as PostgreSQL does after an error');
    const again = await w.roundtrip([serialize.parse({ text: 'SELECT 42' }), serialize.bind({}), serialize.execute({}), serialize.sync()]);
    assert.deepEqual(again.map((m) => m.name), ['parseComplete', 'bindComplete', 'dataRow', 'commandComplete', 'readyForQuery']);
  } finally {
    w.end();
  }
});

test('node-postgres parameterized statement that is denied gets 42501', async () => {
  const c = await h.client();
  try {
    const e = await pgError(c.query('DROP TABLE IF EXISTS accounts -- $1', []));
    assert.equal(e.code, '42501');
    assert.equal((await c.query('SELECT $1::int AS v', [3])).rows[0].v, 3);
  } finally {
    await c.end();
  }
});

test('row limit: the statement is cut with 54000 after N rows and the session stays usable', async () => {
  const c = await h.client();
  try {
    const rows: unknown[] = [];
    const q = new pg.Query('SELECT * FROM big');
    q.on('row', (r: unknown) => rows.push(r));
    const done = new Promise<pg.DatabaseError>((resolve, reject) => {
      q.on('error', (e: Error) => resolve(e as pg.DatabaseError));
      q.on('end', () => reject(new Error('the statement was not cut')));
    });
    c.query(q);
    const e = await done;
    assert.equal(e.code, '54000');
    assert.equal(e.message, 'Airlock row limit reached: rule export-limit allows at most 100 rows per statement');
    assert.equal(rows.length, 100);
    assert.equal((await c.query('SELECT count(*)::int AS n FROM big')).rows[0].n, 1000);
    const small = await c.query('SELECT id FROM big ORDER BY id LIMIT 5');
    assert.equal(small.rows.length, 5);
  } finally {
    await c.end();
  }
});

test('row limit with psql (simple protocol), then the session goes on', async () => {
  const r = await h.psql('SELECT id FROM big;\nSELECT 7;\n');
  assert.match(r.stderr, /Airlock row limit reached: rule export-limit allows at most 100 rows per statement/);
  assert.match(r.stdout, /^7\n$/m);
});

test('row limit inside a transaction leaves the transaction failed (the cancel landed), ROLLBACK recovers', async () => {
  const c = await h.client();
  try {
    await c.query('BEGIN');
    const e = await pgError(c.query('SELECT * FROM big CROSS JOIN generate_series(1, 1000000)'));
    assert.equal(e.code, '54000');
    await pgError(c.query('SELECT 1'));
    await c.query('ROLLBACK');
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
  } finally {
    await c.end();
  }
});

test('byte limit per session: result bytes beyond the budget are refused with 54000', async () => {
  const c = await h.client();
  try {
    const first = await c.query('SELECT data FROM blobs WHERE id <= 10');
    assert.equal(first.rows.length, 10);
    const e = await pgError(c.query('SELECT data FROM blobs'));
    assert.equal(e.code, '54000');
    assert.match(e.message, /Airlock byte limit reached: rule blob-budget allows at most 30000 result bytes per session/);
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
  } finally {
    await c.end();
  }
});

test('masking: configured columns and detectors are masked in simple and extended results', async () => {
  const simple = await h.psql('SELECT id, email, note FROM customers ORDER BY id;\n');
  assert.equal(simple.code, 0, simple.stderr);
  assert.doesNotMatch(simple.stdout, /@example/);
  const c = await h.client();
  try {
    const r = await c.query('SELECT id, email, note FROM customers WHERE id = $1', [2]);
    assert.equal(r.rows.length, 1);
    assert.doesNotMatch(JSON.stringify(r.rows), /bob@example\.org/);
    assert.equal(r.rows[0].id, 2);
  } finally {
    await c.end();
  }
});

test('masking: COPY TO STDOUT output is masked line by line', async () => {
  const r = await h.psql('COPY customers TO STDOUT;\n');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n').length, 2);
  assert.doesNotMatch(r.stdout, /@example/);
  assert.match(r.stdout, /^1\t/);
});

test('masked columns are recorded with the operation, never the values', async () => {
  const c = await h.client({ application_name: 'mask-record' });
  let sessionId = '';
  try {
    await c.query("SELECT email FROM customers WHERE id = 1 AND 'mask-record-marker' <> ''");
  } finally {
    await c.end();
  }
  await new Promise((r) => setTimeout(r, 100));
  for (const s of h.store.listSessions({ identity: 'alice' })) {
    const d = h.store.getSession(s.id)!;
    if (d.operations.some((o) => o.text.includes('mask-record-marker'))) sessionId = s.id;
  }
  const op = h.store.getSession(sessionId)!.operations.find((o) => o.text.includes('mask-record-marker'))!;
  assert.equal(op.decision, 'mask');
  assert.ok(op.maskedColumns.length > 0, JSON.stringify(op));
  assert.doesNotMatch(JSON.stringify(op), /ann@example\.com/);
});

test('review without an approval backend fails closed with 42501 and the session stays usable', async () => {
  const r = await h.psql('DELETE FROM accounts WHERE id = 1;\nSELECT count(*) FROM accounts;\n');
  assert.match(r.stderr, /Airlock: approval could not be obtained \(rule approve-deletes\): approval required by rule approve-deletes, but no approval backend is configured/);
  assert.equal(r.stdout, '2\n');
});

test('denials are recorded with rule and reason', async () => {
  await h.psql("DROP TABLE accounts /* deny-record-marker */;\n");
  await new Promise((r) => setTimeout(r, 100));
  const ops = h.store.listSessions({ identity: 'alice' }).flatMap((s) => h.store.getSession(s.id)!.operations);
  const op = ops.find((o) => o.text.includes('deny-record-marker'));
  assert.ok(op);
  assert.equal(op.decision, 'deny');
  assert.equal(op.rule, 'no-drop');
  assert.match(op.error ?? '', /Airlock denied this statement/);
});

test('extended protocol without a client Describe is still masked (the gateway describes the portal itself)', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    const out = await w.roundtrip([serialize.parse({ text: 'SELECT id, email FROM customers ORDER BY id' }), serialize.bind({}), serialize.execute({}), serialize.sync()]);
    assert.deepEqual(out.map((m) => m.name), ['parseComplete', 'bindComplete', 'dataRow', 'dataRow', 'commandComplete', 'readyForQuery']);
    const emails = out.filter((m) => m.name === 'dataRow').map((m) => String((m.fields as string[])[1]));
    assert.equal(emails.length, 2);
    for (const e of emails) assert.doesNotMatch(e, /@example/);
    // A statement prepared with SQL PREPARE is invisible to Airlock's protocol state: binding it
    // through the protocol is refused rather than run on a guess.
    await w.roundtrip([serialize.query('PREPARE by_sql AS SELECT email FROM customers ORDER BY id')]);
    const viaSql = await w.roundtrip([serialize.bind({ statement: 'by_sql' }), serialize.execute({}), serialize.sync()]);
    assert.deepEqual(viaSql.map((m) => m.name), ['error', 'readyForQuery']);
    assert.equal((viaSql[0] as unknown as { code: string }).code, '42501');
    assert.match(String(viaSql[0].message), /rule airlock-unknown-name: prepared statement "by_sql" was not defined through this session's extended protocol/);
  } finally {
    w.end();
  }
});

test('a prepared statement whose result layout changes under it (search_path, DDL in another session) is masked by the layout it has now', async () => {
  // PostgreSQL replans a prepared statement after a search_path change or DDL on what it reads,
  // and only errors when the result TYPES change: the same `SELECT id, email FROM t` can start
  // returning another table's rows with nothing on this session's wire saying so. A layout cached
  // per statement from an earlier Describe would relay s2.t's masked column unmasked; the layout
  // must come from the server for every execution.
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  const emails = (out: Array<{ name: string; fields?: unknown }>) => out.filter((m) => m.name === 'dataRow').map((m) => String((m.fields as string[])[1]));
  const again = () => w.roundtrip([serialize.bind({ statement: 'q' }), serialize.execute({}), serialize.sync()]);
  try {
    await w.roundtrip([serialize.query('SET search_path = s1, s2')]);
    const first = await w.roundtrip([serialize.parse({ name: 'q', text: 'SELECT id, email FROM t' }), serialize.bind({ statement: 'q' }), serialize.describe({ type: 'P' }), serialize.execute({}), serialize.sync()]);
    assert.deepEqual(emails(first), ['first@s1.test'], 's1.t is not masked');
    assert.deepEqual(emails(await again()), ['first@s1.test']);
    await w.roundtrip([serialize.query('SET search_path = s2, s1')]);
    assert.deepEqual(emails(await again()), ['[redacted]'], 'same statement, now reading s2.t');
    await w.roundtrip([serialize.query('SET search_path = s1, s2')]);
    assert.deepEqual(emails(await again()), ['first@s1.test']);
    await h.pg.query('ALTER TABLE s1.t RENAME TO t_gone'); // another session: nothing on this wire
    assert.deepEqual(emails(await again()), ['[redacted]'], 'replanned onto s2.t by DDL elsewhere');
  } finally {
    w.end();
    await h.pg.query('ALTER TABLE s1.t_gone RENAME TO t');
  }
});

test('fast-path function calls, which bypass SQL, are refused with 42501', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    const call = Buffer.alloc(5 + 4 + 2 + 2 + 2);
    call.write('F', 0, 'latin1');
    call.writeInt32BE(call.length - 1, 1);
    call.writeInt32BE(1299, 5); // pg_catalog.now()
    const out = await w.roundtrip([call]);
    assert.deepEqual(out.map((m) => m.name), ['error', 'readyForQuery']);
    assert.equal((out[0] as unknown as { code: string }).code, '42501');
    assert.match(String(out[0].message), /rule airlock-fastpath: fast-path function calls bypass SQL policy/);
  } finally {
    w.end();
  }
});
