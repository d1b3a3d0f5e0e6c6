// Every channel other than rows that can carry data to the client is scrubbed when masking is in
// effect: ErrorResponse (values quoted in messages, constraint DETAILs), NoticeResponse (RAISE),
// NotificationResponse (pg_notify payloads) and ParameterStatus (set_config echoes). The audit
// store keeps the scrubbed error text, never the upstream's raw one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { startGateway, type GatewayHarness, pgError } from '../support/gateway.ts';
import { WireClient, serialize, type Message } from '../support/pgwire.ts';

let h: GatewayHarness;

// Values the client must never see: one an email detector would catch, others only a column mask can.
const EMAIL = 'ann.secret@example.com';
const NAME = 'Annabel Quux';
const QUOTED = 'O"Hara hidden" tail';
const PIN = 987654;
const SECRETS = [EMAIL, 'ann.secret', NAME, 'Annabel', 'Quux', 'hidden', 'Hara', String(PIN), String(PIN + 2000000)];

before(async () => {
  h = await startGateway({
    setup: `CREATE TABLE customers (id int PRIMARY KEY CHECK (id > 0), email text UNIQUE, name text, nick text, pin int);
            INSERT INTO customers VALUES (1, '${EMAIL}', '${NAME}', 'ann', ${PIN}), (2, 'bob@example.org', '${QUOTED.replace(/'/g, "''")}', 'bob', 1);
            CREATE FUNCTION notice_name() RETURNS void LANGUAGE plpgsql AS $$
              DECLARE n text; BEGIN SELECT name INTO n FROM customers WHERE id = 1; RAISE NOTICE 'name is %', n; END $$;
            CREATE FUNCTION fail_name() RETURNS void LANGUAGE plpgsql AS $$
              DECLARE n text; BEGIN SELECT name INTO n FROM customers WHERE id = 1; RAISE EXCEPTION 'bad %', n USING DETAIL = n, HINT = n; END $$;
            CREATE FUNCTION cast_in_function() RETURNS int LANGUAGE plpgsql AS $$
              DECLARE n text; BEGIN SELECT name INTO n FROM customers WHERE id = 1; RETURN n::int; END $$;`,
    config: () => ({
      masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.customers.email', strategy: 'redact' }, { column: 'public.customers.name', strategy: 'redact' }] },
      policy: { default: 'allow', rules: [] },
    }),
  });
});

after(async () => {
  await h?.close();
});

function assertClean(what: string, text: string): void {
  for (const s of SECRETS) assert.ok(!text.includes(s), `${what} leaks ${JSON.stringify(s)}: ${text}`);
}

function allText(e: pg.DatabaseError): string {
  return JSON.stringify({ message: e.message, detail: e.detail, hint: e.hint, where: e.where, internalQuery: e.internalQuery, table: e.table, column: e.column, constraint: e.constraint });
}

async function login(): Promise<WireClient> {
  return WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
}

test('a cast error does not quote the value (simple and extended protocol, column masks and detectors)', async () => {
  const c = await h.client();
  try {
    for (const sql of ['SELECT email::int FROM customers ORDER BY id', 'SELECT name::int FROM customers ORDER BY id', 'SELECT name::int FROM customers WHERE id = 2', 'SELECT upper(name)::numeric FROM customers', "SELECT ('x' || name)::date FROM customers"]) {
      const e = await pgError(c.query(sql));
      assert.match(e.code ?? '', /^22/, `${sql}: ${e.code} ${e.message}`);
      assertClean(sql, allText(e));
      assert.match(e.message, /\[redacted\]/, sql);
    }
    // json: the value is in DETAIL ("Token ... is invalid") and CONTEXT ("JSON data, line 1: ..."), both dropped.
    const json = await pgError(c.query('SELECT name::json FROM customers'));
    assert.equal(json.code, '22P02');
    assertClean('json', allText(json));
    assert.equal(json.where, undefined);
    const e = await pgError(c.query({ text: 'SELECT name::int FROM customers WHERE id = $1', values: [1] }));
    assert.equal(e.code, '22P02');
    assertClean('extended', allText(e));
  } finally {
    await c.end();
  }
});

test('numbers a message prints unquoted are replaced unless the client wrote them', async () => {
  const c = await h.client();
  try {
    const chr = await pgError(c.query('SELECT chr(pin + 2000000) FROM customers WHERE id = 1'));
    assert.equal(chr.message, 'requested character too large for encoding: [redacted]');
    const date = await pgError(c.query('SELECT make_date(2020, pin, 1) FROM customers WHERE id = 1'));
    assertClean('make_date', allText(date));
    assert.match(date.message, /: 2020-\[redacted\]-/);
    const own = await pgError(c.query('SELECT chr(3000000)'));
    assert.equal(own.message, 'requested character too large for encoding: 3000000');
  } finally {
    await c.end();
  }
});

test('one error cannot carry a whole column (string_agg ... ::int)', async () => {
  const c = await h.client();
  try {
    for (const sql of ["SELECT string_agg(email, ',')::int FROM customers", "SELECT string_agg(name, ' | ')::int FROM customers", "SELECT array_agg(name)::text::int FROM customers"]) {
      const e = await pgError(c.query(sql));
      assert.equal(e.code, '22P02', sql);
      assertClean(sql, allText(e));
    }
  } finally {
    await c.end();
  }
});

test('constraint violations keep the constraint but not the key or the failing row', async () => {
  const c = await h.client();
  try {
    const dup = await pgError(c.query('INSERT INTO customers (id, email) SELECT 3, email FROM customers WHERE id = 1'));
    assert.equal(dup.code, '23505');
    assert.equal(dup.constraint, 'customers_email_key');
    assert.match(dup.detail ?? '', /^Key \(email\)=\(\[redacted\]\) already exists\.$/);
    assertClean('unique', allText(dup));
    const check = await pgError(c.query('UPDATE customers SET id = -id WHERE id = 1'));
    assert.equal(check.code, '23514');
    assert.match(check.detail ?? '', /^Failing row contains \(\[redacted\]\)\.$/);
    assertClean('check', allText(check));
    const notNull = await pgError(c.query('INSERT INTO customers (id, email, name) SELECT 1, email, name FROM customers WHERE id = 1'));
    assert.equal(notNull.code, '23505');
    assertClean('pkey', allText(notNull));
  } finally {
    await c.end();
  }
});

test('messages raised by SQL code are withheld; errors inside functions lose their context', async () => {
  const c = await h.client();
  const notices: Array<{ message?: string; detail?: string; where?: string }> = [];
  c.on('notice', (n) => notices.push(n));
  try {
    await c.query('SELECT notice_name()');
    await c.query("DO $$ BEGIN RAISE NOTICE '%', (SELECT name FROM customers WHERE id = 1); END $$");
    assert.equal(notices.length, 2);
    for (const n of notices) {
      assertClean('notice', JSON.stringify(n));
      assert.match(n.message ?? '', /redacted by Airlock/);
    }
    const raised = await pgError(c.query('SELECT fail_name()'));
    assert.equal(raised.code, 'P0001');
    assertClean('raise exception', allText(raised));
    assert.equal(raised.where, undefined);
    const inner = await pgError(c.query('SELECT cast_in_function()'));
    assert.equal(inner.code, '22P02');
    assertClean('cast inside a function', allText(inner));
    assert.equal(inner.where, undefined);
  } finally {
    await c.end();
  }
});

test('psql with VERBOSITY verbose shows nothing either', async () => {
  const r = await h.psql("SELECT name::int FROM customers;\nINSERT INTO customers (id, email) SELECT 3, email FROM customers WHERE id = 1;\nSELECT notice_name();\nSELECT 'ok';\n", { args: ['-v', 'VERBOSITY=verbose'] });
  assertClean('psql', r.stdout + r.stderr);
  assert.match(r.stderr, /22P02/);
  assert.match(r.stderr, /23505/);
  assert.match(r.stdout, /ok/);
});

test('the client still sees its own identifiers and literals in errors', async () => {
  const c = await h.client();
  try {
    const e = await pgError(c.query('SELECT * FROM no_such_table'));
    assert.equal(e.message, 'relation "no_such_table" does not exist');
    const col = await pgError(c.query('SELECT emial FROM customers'));
    assert.equal(col.message, 'column "emial" does not exist');
    const lit = await pgError(c.query("SELECT 'abc'::int"));
    assert.equal(lit.message, 'invalid input syntax for type integer: "abc"');
    // "a" appears in the statement only inside words: a value "a" is not the client's own.
    const sub = await pgError(c.query('SELECT substr(nick, 1, 1)::int FROM customers WHERE id = 1'));
    assert.equal(sub.message, 'invalid input syntax for type integer: "[redacted]"');
  } finally {
    await c.end();
  }
});

test('notification payloads are redacted; the channel is kept', async () => {
  const listener = await h.client();
  const sender = await h.client();
  try {
    const got: Array<{ channel: string; payload?: string }> = [];
    listener.on('notification', (n) => got.push(n));
    await listener.query('LISTEN leak');
    await sender.query("SELECT pg_notify('leak', name) FROM customers WHERE id = 1");
    await sender.query("SELECT pg_notify('leak', reverse(email)) FROM customers WHERE id = 1");
    await sender.query("NOTIFY leak, 'typed by the sender'");
    for (let i = 0; i < 50 && got.length < 3; i++) await listener.query('SELECT 1');
    assert.equal(got.length, 3);
    for (const n of got) {
      assert.equal(n.channel, 'leak');
      assert.equal(n.payload, '[redacted]');
    }
  } finally {
    await listener.end();
    await sender.end();
  }
});

test('ParameterStatus never echoes a value set after startup (application_name, search_path, odd time zones)', async () => {
  const w = await login();
  try {
    const out = await w.roundtrip([
      serialize.query("SELECT set_config('application_name', name, false) IS NOT NULL FROM customers WHERE id = 1"),
      serialize.query("SELECT set_config('search_path', name, false) IS NOT NULL FROM customers WHERE id = 1"),
      serialize.query("SELECT set_config('timezone', 'ANNA+3', false) IS NOT NULL"),
      serialize.query("SET TIME ZONE 'Europe/Berlin'"),
      serialize.query('SET DateStyle = ISO, DMY'),
    ], 5);
    const statuses = out.filter((m) => m.name === 'parameterStatus') as Array<Message & { parameterName: string; parameterValue: string }>;
    assertClean('ParameterStatus', JSON.stringify(statuses));
    assert.ok(!statuses.some((s) => s.parameterName === 'application_name' || s.parameterName === 'search_path'));
    assert.ok(!statuses.some((s) => s.parameterValue.includes('ANNA')));
    assert.ok(statuses.some((s) => s.parameterName === 'TimeZone' && s.parameterValue === 'Europe/Berlin'), JSON.stringify(statuses));
    assert.ok(statuses.some((s) => s.parameterName === 'DateStyle' && s.parameterValue === 'ISO, DMY'), JSON.stringify(statuses));
  } finally {
    w.end();
  }
});

test('the audit store keeps the scrubbed error, never the raw one', async () => {
  const c = await h.client();
  try {
    await pgError(c.query("SELECT name::int, 'audit-marker-1' FROM customers"));
    await pgError(c.query({ text: "SELECT email::int, 'audit-marker-2' FROM customers WHERE id = $1", values: [1] }));
  } finally {
    await c.end();
  }
  const ops = h.store.listSessions({ identity: 'alice' }).flatMap((s) => h.store.getSession(s.id)!.operations);
  for (const marker of ['audit-marker-1', 'audit-marker-2']) {
    const op = ops.find((o) => o.text.includes(marker) && o.error);
    assert.ok(op, marker);
    assert.match(op.error!, /^22P02 invalid input syntax for type integer: "\[redacted\]"$/);
  }
  assertClean('audit', JSON.stringify(ops));
});
