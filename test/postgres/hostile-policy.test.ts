// Issue 10, policy side, end to end: a hostile agent with psql and node-postgres against a real
// PostgreSQL behind the gateway, under the `recommended` profile. Each test checks the upstream
// afterwards (as the superuser, directly) to prove the statement did not run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, type GatewayHarness, pgError } from '../support/gateway.ts';

let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    setup: `CREATE TABLE customers (id int PRIMARY KEY, full_name text, email text, ssn text);
            INSERT INTO customers VALUES (1, 'Ann Lee', 'ann@example.com', '123-45-6789'), (2, 'Bob Roe', 'bob@example.org', '987-65-4321');
            CREATE TABLE orders (id int PRIMARY KEY, customer_id int, note text);
            INSERT INTO orders SELECT g, 1 + g % 2, 'n' || g FROM generate_series(1, 200) g;
            CREATE TABLE staging (id int, note text);
            INSERT INTO staging VALUES (1, 'x');
            -- An existing function an agent might call: it writes.
            CREATE FUNCTION wipe_orders() RETURNS int LANGUAGE sql AS 'DELETE FROM orders WHERE id > 0 RETURNING 1';`,
    config: (upstream) => ({
      connections: [
        { name: 'app', type: 'postgres', host: upstream.host, port: upstream.port, database: 'postgres', user: upstream.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true },
        // The same upstream as a read-only connection (the start-up role check is app-level, see upstream-role.test.ts).
        { name: 'ro', type: 'postgres', host: upstream.host, port: upstream.port, database: 'postgres', user: upstream.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true, readOnly: true },
      ],
      masking: {
        hashKey: { file: 'hash.key' },
        columns: [
          { column: 'public.customers.email', strategy: 'redact' },
          { column: 'public.customers.ssn', strategy: 'redact' },
        ],
      },
      policy: {
        profile: 'recommended',
        default: 'deny',
        rules: [
          { name: 'agent-reads', match: { groups: ['agents'], kinds: ['read'] }, action: 'allow', limits: { maxRowsPerStatement: 50 } },
          { name: 'agent-session', match: { groups: ['agents'], kinds: ['transaction', 'utility'] }, action: 'allow' },
          { name: 'agent-writes', match: { groups: ['agents'], kinds: ['write'] }, action: 'review', review: { approvers: ['dba'] } },
        ],
      },
    }),
  });
});

after(async () => {
  await h?.close();
});

const agent = { user: 'agent-1' };

async function count(table: string): Promise<number> {
  return Number((await h.pg.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n);
}

test('DO blocks, dynamic SQL and server-side code are refused before they reach the server', async () => {
  const r = await h.psql(
    [
      "DO $$ BEGIN EXECUTE 'DELETE FROM orders'; END $$;",
      "DO $$ BEGIN EXECUTE format('DELETE FROM %I', 'orders'); END $$;",
      "CREATE FUNCTION wipe() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DELETE FROM orders WHERE id > 0; END $$;",
      "CREATE FUNCTION sh() RETURNS int LANGUAGE sql AS $$ COPY (SELECT 1) TO PROGRAM 'touch /tmp/airlock-pwned' $$;",
      'CREATE TRIGGER t AFTER INSERT ON staging FOR EACH ROW EXECUTE FUNCTION wipe_orders();',
      'CREATE RULE r AS ON INSERT TO staging DO ALSO DELETE FROM orders WHERE id > 0;',
      "COPY orders TO PROGRAM 'cat > /tmp/airlock-pwned';",
      'SELECT count(*) FROM orders;',
    ].join('\n'),
    agent,
  );
  assert.match(r.stderr, /rule recommended-no-dynamic-code[\s\S]*rule recommended-no-dynamic-code/);
  assert.match(r.stderr, /rule recommended-no-server-side-code[\s\S]*rule recommended-no-server-side-code[\s\S]*rule recommended-no-server-side-code[\s\S]*rule recommended-no-server-side-code/);
  assert.match(r.stderr, /rule block-copy-program/);
  assert.equal(r.stdout.trim(), '200', 'the session stayed usable and nothing was deleted');
  assert.equal(await count('orders'), 200);
  const fns = await h.pg.query(`SELECT count(*)::int AS n FROM pg_proc WHERE proname IN ('wipe', 'sh')`);
  assert.equal(fns.rows[0].n, 0);
});

test('calling a function Airlock has not reviewed is a write: held for review (fail-closed here), in both protocols', async () => {
  const r = await h.psql('SELECT wipe_orders();\nSELECT public.wipe_orders() FROM customers WHERE id = 1;\n', agent);
  assert.match(r.stderr, /approval required by rule agent-writes/);
  const c = await h.client(agent);
  try {
    const e = await pgError(c.query('SELECT wipe_orders() WHERE $1::int = 1', [1]));
    assert.match(e.message, /approval required by rule agent-writes/);
    const e2 = await pgError(c.query({ text: 'SELECT * FROM customers WHERE id = wipe_orders()', values: [] }));
    assert.match(e2.message, /approval required by rule agent-writes/);
  } finally {
    await c.end();
  }
  assert.equal(await count('orders'), 200);
});

test('MERGE that deletes every matched row is an unbounded write', async () => {
  const r = await h.psql('MERGE INTO orders o USING staging s ON o.id = s.id WHEN MATCHED THEN DELETE;\n', agent);
  assert.match(r.stderr, /rule block-unbounded-writes/);
  assert.equal(await count('orders'), 200);
});

test('role and encoding changes are decided on the parse tree, whatever the spelling', async () => {
  const r = await h.psql(
    [
      "SELECT set_config(lower('ROLE'), 'postgres', false);",
      "SELECT set_config($$role$$, 'postgres', false);",
      "SELECT set_config(E'\\x72ole', 'postgres', false);",
      "SET client_encoding = 'SJIS';",
      "SET NAMES 'BIG5';",
      "SELECT set_config('client_encoding', 'GBK', false);",
      'RESET ALL;',
      "UPDATE pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding';",
      "SELECT current_setting('client_encoding');",
    ].join('\n'),
    agent,
  );
  assert.match(r.stderr, /rule unparseable-sql: .*set_config\(\) with a setting name computed at run time/);
  assert.equal((r.stderr.match(/rule block-role-changes/g) ?? []).length, 2);
  assert.equal((r.stderr.match(/rule client-encoding/g) ?? []).length, 4);
  assert.match(r.stderr, /writing to pg_settings/);
  assert.equal(r.stdout.trim(), 'UTF8');
});

test('masked columns: plain reads are masked, transformed ones are refused in every clause', async () => {
  const plain = await h.psql('SELECT id, email, ssn FROM customers ORDER BY id;\nSELECT * FROM customers WHERE id = 2;\n', agent);
  assert.equal(plain.stderr, '');
  assert.doesNotMatch(plain.stdout, /example\.(com|org)|\d{3}-\d{2}-\d{4}/);
  assert.match(plain.stdout, /1\|\[redacted\]\|\[redacted\]/);

  const leaks = [
    'SELECT reverse(email) FROM customers',
    "SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers",
    "SELECT replace(ssn, '-', '') FROM customers",
    'SELECT email::bytea FROM customers',
    'SELECT to_jsonb(c) FROM customers c',
    "SELECT query_to_xml('SELECT email FROM customers', true, true, '')",
    "SELECT string_agg(email, ',') FROM customers",
    "SELECT id FROM customers WHERE email LIKE 'a%'",
    'SELECT id FROM customers ORDER BY ssn',
    'SELECT (SELECT email FROM customers LIMIT 1)',
  ];
  const r = await h.psql(leaks.map((q) => q + ';').join('\n'), agent);
  assert.equal((r.stderr.match(/rule masked-expression/g) ?? []).length, leaks.length, r.stderr);
  assert.equal(r.stdout, '');

  // Extended protocol too, with binary results requested by node-postgres' text default.
  const c = await h.client(agent);
  try {
    const e = await pgError(c.query('SELECT md5(email) FROM customers WHERE id = $1', [1]));
    assert.match(e.message, /rule masked-expression/);
    const ok = await c.query('SELECT email FROM customers WHERE id = $1', [1]);
    assert.equal(ok.rows[0].email, '[redacted]');
  } finally {
    await c.end();
  }
});

test('copies and renames of masked data are refused', async () => {
  const r = await h.psql(
    [
      'CREATE TABLE copy1 AS SELECT * FROM customers;',
      'SELECT * INTO copy2 FROM customers;',
      'CREATE VIEW v1 AS SELECT email FROM customers;',
      'INSERT INTO staging (note) SELECT email FROM customers;',
      'ALTER TABLE customers RENAME COLUMN email TO contact;',
      'ALTER TABLE customers RENAME TO people;',
    ].join('\n'),
    agent,
  );
  assert.equal((r.stderr.match(/rule masked-expression/g) ?? []).length, 4, r.stderr);
  assert.equal((r.stderr.match(/rule masked-rename/g) ?? []).length, 2, r.stderr);
  const rels = await h.pg.query(`SELECT count(*)::int AS n FROM pg_class WHERE relname IN ('copy1', 'copy2', 'v1', 'people')`);
  assert.equal(rels.rows[0].n, 0);
  const col = await h.pg.query(`SELECT count(*)::int AS n FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'email'`);
  assert.equal(col.rows[0].n, 1);
  assert.equal(await count('staging'), 1);
});

test('cursors and SQL prepared statements get the read limits and masks', async () => {
  const r = await h.psql(
    [
      'BEGIN;',
      'DECLARE c CURSOR FOR SELECT * FROM orders;',
      'FETCH ALL FROM c;',
      'ROLLBACK;',
      'BEGIN;',
      'DECLARE m CURSOR FOR SELECT id, email FROM customers ORDER BY id;',
      'FETCH 1 FROM m;',
      'COMMIT;',
      'PREPARE p AS SELECT * FROM orders;',
      'EXECUTE p;',
    ].join('\n'),
    agent,
  );
  assert.equal((r.stderr.match(/Airlock row limit reached: rule agent-reads allows at most 50 rows/g) ?? []).length, 2, r.stderr);
  assert.match(r.stdout, /^1\|\[redacted\]$/m);
  assert.doesNotMatch(r.stdout, /example\./);
});

test('a PREPARE that would need review is refused, so EXECUTE cannot repeat an approval', async () => {
  const r = await h.psql("PREPARE w AS UPDATE orders SET note = 'x' WHERE id = $1;\nEXECUTE w(1);\n", agent);
  assert.match(r.stderr, /rule prepare-needs-review/);
  assert.match(r.stderr, /prepared statement "w" does not exist/);
  const note = await h.pg.query('SELECT note FROM orders WHERE id = 1');
  assert.equal(note.rows[0].note, 'n1');
});

test('exclusive locks and backend control are refused', async () => {
  const r = await h.psql('BEGIN;\nLOCK TABLE orders;\nROLLBACK;\nSELECT pg_terminate_backend(pg_backend_pid());\nSELECT pg_reload_conf();\nSELECT 1;\n', agent);
  assert.match(r.stderr, /rule recommended-no-exclusive-locks/);
  assert.equal((r.stderr.match(/rule recommended-no-backend-control/g) ?? []).length, 2);
  assert.equal(r.stdout.trim(), 'BEGIN\nROLLBACK\n1', 'the session survived (pg_terminate_backend never ran)');
});

test("psql's catalog commands stay reads for an agent (reviewed introspection functions)", async () => {
  const r = await h.psql('\\d customers\n\\dt\n\\df wipe_orders\n', agent);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, /email/);
  assert.match(r.stdout, /orders/);
  assert.match(r.stdout, /wipe_orders/);
});

test('a readOnly connection refuses writes and anything that lifts read-only mode', async () => {
  const r = await h.psql(
    [
      "UPDATE orders SET note = 'x' WHERE id = 2;",
      'BEGIN READ WRITE;',
      'SET default_transaction_read_only = off;',
      'SELECT count(*) FROM orders;',
    ].join('\n'),
    { ...agent, dbname: 'ro' },
  );
  assert.equal((r.stderr.match(/rule read-only-connection/g) ?? []).length, 3, r.stderr);
  assert.equal(r.stdout.trim(), '200');
  const note = await h.pg.query('SELECT note FROM orders WHERE id = 2');
  assert.equal(note.rows[0].note, 'n2');
});

