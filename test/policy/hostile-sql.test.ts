// The policy engine against SQL a hostile agent sends (issue 10): code that runs later or
// elsewhere, settings changed by another name, masked values transformed before they leave,
// copies and renames, statements that return rows without looking like reads, and the
// `recommended` profile. Each case here was allowed (or classified `read`) before.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { parseConfig } from '../../gateway/config/load.ts';
import type { Decision } from '../../gateway/policy/decision.ts';
import { PolicyConfigError, PolicyEngine, sqlOperations } from '../../gateway/policy/engine.ts';
import type { Identity } from '../../gateway/policy/operation.ts';
import { classifySql, initSqlParser } from '../../gateway/policy/sql/classify.ts';

before(async () => {
  await initSqlParser();
});

function engine(yaml: string): PolicyEngine {
  const { config } = parseConfig(`auth:\n  signingKey: { env: AIRLOCK_TEST_KEY }\n${yaml}`);
  return new PolicyEngine(config.policy, config.masking);
}

const agent: Identity = { name: 'agent-7', groups: ['agents'], owner: 'alice' };

function decide(e: PolicyEngine, query: string, identity: Identity = agent): Decision {
  const ops = sqlOperations(query, { protocol: 'postgres', identity, connection: { name: 'prod', clientAddress: '127.0.0.1', sessionId: 's1' } });
  return e.decideAll(ops).decision;
}

function denied(d: Decision, rule: string, q = ''): void {
  assert.equal(d.action, 'deny', `expected deny by ${rule} for ${q}, got ${JSON.stringify(d)}`);
  if (d.action === 'deny') assert.equal(d.rule, rule, `${q}: ${d.reason}`);
}

const one = (q: string) => {
  const s = classifySql(q);
  assert.equal(s.length, 1, q);
  return s[0];
};

// An agent policy as people write it: reads allowed with limits, writes reviewed, nothing else.
const agentRules = `
    - name: agent-reads
      match: { groups: [agents], kinds: [read] }
      action: allow
      limits: { maxRowsPerStatement: 50, maxStatementTime: 30s }
    - name: agent-writes
      match: { groups: [agents], kinds: [write] }
      action: review
      review: { approvers: [dba] }
`;

const recommended = engine(`
masking:
  columns:
    - { column: public.customers.email, strategy: hash }
    - { column: public.customers.ssn, strategy: redact }
    - { column: public.customers.card_number, strategy: partial }
policy:
  profile: recommended
  default: deny
  rules:${agentRules}`);

describe('code that runs later or elsewhere is never a read', () => {
  it('a call to a function Airlock has not reviewed is a potential write', () => {
    for (const q of [
      'SELECT wipe()',
      'SELECT * FROM customers WHERE id = public.lookup(1)',
      'SELECT app.report()',
      'SELECT pg_catalog.wipe()',
      'SELECT 1 FROM customers c WHERE EXISTS (SELECT evil(c.id))',
      'SELECT * FROM my_set_returning_fn()',
      "SELECT nextval('orders_id_seq')",
      "SELECT set_config('search_path', 'app', false)",
      'SELECT pg_terminate_backend(123)',
      'VALUES (f())',
      'EXPLAIN ANALYZE SELECT wipe()',
      'DECLARE c CURSOR FOR SELECT wipe()',
    ]) {
      assert.equal(one(q).kind, 'write', q);
      assert.equal(decide(recommended, q).action === 'allow', false, q);
    }
    const review = decide(recommended, 'SELECT wipe()');
    assert.equal(review.action, 'review');
    assert.equal(review.action === 'review' && review.rule, 'agent-writes');
  });

  it('reviewed read-only built-ins keep a statement a read, bare or pg_catalog-qualified', () => {
    for (const q of [
      'SELECT lower(city), count(*), now(), pg_catalog.upper(city) FROM customers GROUP BY 1, 4',
      "SELECT to_char(created_at, 'YYYY'), coalesce(city, '-') FROM customers",
      'SELECT * FROM generate_series(1, 3)',
      'EXPLAIN SELECT wipe()', // plain EXPLAIN only plans the call
    ]) {
      assert.equal(one(q).kind, 'read', q);
    }
    assert.equal(one('SELECT public.lower(city) FROM customers').kind, 'write', 'a schema other than pg_catalog is a user function');
  });

  const denials: Array<[string, string]> = [
    ["DO $$ BEGIN EXECUTE 'DELETE FROM orders'; END $$", 'recommended-no-dynamic-code'],
    ["DO $$ BEGIN EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'id'); END $$", 'recommended-no-dynamic-code'],
    ["DO LANGUAGE plperlu $$ system('id') $$", 'recommended-no-dynamic-code'],
    ['DO $$ BEGIN PERFORM 1; END $$', 'recommended-no-dynamic-code'],
    ["CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM orders WHERE id > 0'", 'recommended-no-server-side-code'],
    ["CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'SELECT 1'; RETURN 1; END $$", 'recommended-no-dynamic-code'],
    ["CREATE FUNCTION sys(cstring) RETURNS int LANGUAGE c AS '/lib/x86_64-linux-gnu/libc.so.6', 'system'", 'recommended-no-server-side-code'],
    ["CREATE FUNCTION lo(oid) RETURNS int LANGUAGE internal AS 'lo_unlink'", 'recommended-no-server-side-code'],
    ['CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC UPDATE orders SET a = 1 WHERE id = 1; END', 'recommended-no-server-side-code'],
    ['CREATE OR REPLACE FUNCTION lower(text) RETURNS text LANGUAGE sql AS $$ SELECT $1 $$', 'recommended-no-server-side-code'],
    ['CREATE TRIGGER t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION f()', 'recommended-no-server-side-code'],
    ['CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()', 'recommended-no-server-side-code'],
    ['CREATE RULE r AS ON SELECT TO orders DO INSTEAD NOTHING', 'recommended-no-server-side-code'],
    ['CREATE RULE r AS ON INSERT TO orders DO ALSO DELETE FROM customers WHERE id > 0', 'recommended-no-server-side-code'],
    ['CREATE LANGUAGE plperlu', 'recommended-no-extensions'], // parsed as CREATE EXTENSION since PostgreSQL 13
    ["CREATE TRUSTED LANGUAGE evil HANDLER plpgsql_call_handler", 'recommended-no-server-side-code'],
    ['CREATE OPERATOR === (LEFTARG = text, RIGHTARG = text, FUNCTION = f)', 'recommended-no-server-side-code'],
    ['CREATE EXTENSION pgcrypto', 'recommended-no-extensions'],
    ["LOAD '/tmp/evil.so'", 'recommended-no-extensions'],
    ["ALTER SYSTEM SET log_statement = 'none'", 'block-role-changes'],
    ["ALTER DATABASE postgres SET log_min_duration_statement = -1", 'recommended-no-server-settings'],
    ["ALTER ROLE CURRENT_USER SET session_replication_role = 'replica'", 'block-role-changes'],
    ["SET session_replication_role = 'replica'", 'recommended-no-dangerous-settings'],
    ["SET LOCAL session_replication_role TO replica", 'recommended-no-dangerous-settings'],
    ["SELECT set_config('session_replication_role', 'replica', true)", 'recommended-no-dangerous-settings'],
    ["SET log_statement = 'none'", 'recommended-no-dangerous-settings'],
    ["SELECT set_config($$log_min_messages$$, 'panic', false)", 'recommended-no-dangerous-settings'],
    ['SET default_transaction_read_only = off', 'recommended-no-dangerous-settings'],
    ['SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE', 'recommended-no-dangerous-settings'],
    ['SET TRANSACTION READ WRITE', 'recommended-no-dangerous-settings'],
    ['BEGIN READ WRITE', 'recommended-no-dangerous-settings'],
    ['START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE', 'recommended-no-dangerous-settings'],
    ['SELECT pg_reload_conf()', 'recommended-no-backend-control'],
    ['SELECT pg_terminate_backend(pid) FROM pg_stat_activity', 'recommended-no-backend-control'],
    ['SELECT pg_catalog.pg_cancel_backend(42)', 'recommended-no-backend-control'],
    ['CREATE DATABASE evil', 'recommended-no-create-database'],
    ['LOCK TABLE orders', 'recommended-no-exclusive-locks'],
    ['LOCK TABLE orders IN ACCESS EXCLUSIVE MODE', 'recommended-no-exclusive-locks'],
    ['SELECT 1; LOCK orders IN EXCLUSIVE MODE', 'recommended-no-exclusive-locks'],
    ["COPY orders TO PROGRAM 'id'", 'block-copy-program'],
    ["COPY orders FROM '/etc/passwd'", 'block-copy-program'],
    ['MERGE INTO orders o USING staging s ON o.id = s.id WHEN MATCHED THEN DELETE', 'block-unbounded-writes'],
    ['MERGE INTO orders o USING staging s ON true WHEN MATCHED THEN UPDATE SET note = s.note', 'block-unbounded-writes'],
    ['MERGE INTO orders o USING staging s ON o.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE', 'block-unbounded-writes'],
    ['WITH m AS (MERGE INTO orders o USING staging s ON o.id = s.id WHEN MATCHED THEN DELETE RETURNING o.id) SELECT 1', 'block-unbounded-writes'],
  ];
  for (const [q, rule] of denials) {
    it(`denies ${q.slice(0, 90)}`, () => denied(decide(recommended, q), rule, q));
  }

  it('keeps what agents need: bounded writes are reviewed, conditional MERGE is a reviewed write, SHARE locks pass', () => {
    assert.equal(decide(recommended, 'MERGE INTO orders o USING staging s ON o.id = s.id WHEN MATCHED AND s.gone THEN DELETE').action, 'review');
    assert.equal(decide(recommended, 'MERGE INTO orders o USING staging s ON o.id = s.id WHEN MATCHED THEN UPDATE SET note = s.note').action, 'review');
    assert.equal(decide(recommended, 'LOCK TABLE orders IN SHARE MODE').action, 'deny', 'utility is not allowed by agent rules (default deny)');
    assert.equal(decide(recommended, 'SELECT id, city FROM customers').action, 'allow');
    const profileOnly = engine('policy:\n  profile: recommended\n');
    for (const q of ['BEGIN', 'BEGIN READ ONLY', 'START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY', 'SET TRANSACTION READ ONLY', 'COMMIT']) {
      assert.equal(decide(profileOnly, q).action, 'allow', q);
    }
  });
});

describe('embedded SQL is listed for the audit record', () => {
  it('DO bodies, function bodies and SQL passed as text are listed with the outer statement', () => {
    assert.deepEqual(one("DO $$ BEGIN DELETE FROM orders WHERE id = 1; PERFORM pg_sleep(1); END $$").sql.embedded, ['DELETE FROM orders WHERE id = 1', 'SELECT pg_sleep(1)']);
    assert.deepEqual(one("CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'UPDATE t SET a = 1 WHERE id = 2'").sql.embedded, ['UPDATE t SET a = 1 WHERE id = 2']);
    assert.deepEqual(one("SELECT query_to_xml('SELECT id FROM t', true, true, '')").sql.embedded, ['SELECT id FROM t']);
    assert.equal(one('SELECT 1').sql.embedded, undefined);
  });
});

describe('settings are decided on the parse tree', () => {
  const builtins = engine('policy:\n  builtins: [block-role-changes]\n');
  for (const q of [
    "SELECT set_config('role', 'postgres', false)",
    "SELECT set_config('ROLE', 'postgres', false)",
    "SELECT set_config($$role$$, 'postgres', false)",
    "SELECT set_config($x$Role$x$, 'postgres', false)",
    "SELECT set_config(E'\\x72ole', 'postgres', false)",
    "SELECT set_config(U&'\\0072ole', 'postgres', false)",
    "SELECT set_config('role'::text, 'postgres', false)",
    "SELECT pg_catalog.set_config('session_authorization', 'postgres', false)",
    "SELECT * FROM customers WHERE set_config('role', 'postgres', true) IS NOT NULL",
    "DO $$ BEGIN PERFORM set_config('role', 'postgres', false); END $$",
    'SET ROLE postgres',
  ]) {
    it(`block-role-changes denies ${q}`, () => denied(decide(builtins, q), 'block-role-changes', q));
  }
  for (const q of [
    "SELECT set_config(lower('ROLE'), 'postgres', false)",
    "SELECT set_config('ro' || 'le', 'postgres', false)",
    "SELECT set_config(name, 'postgres', false) FROM (VALUES ('role')) v(name)",
    "SELECT set_config(current_setting('x.y'), 'postgres', false)",
    "SELECT set_config(format('%s', 'role'), 'postgres', false)",
    "UPDATE pg_settings SET setting = 'postgres' WHERE name = 'role'",
    "UPDATE pg_catalog.pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'",
  ]) {
    it(`refuses a setting name it cannot read: ${q}`, () => {
      denied(decide(builtins, q), 'unparseable-sql', q);
      denied(decide(engine(''), q), 'unparseable-sql', q);
    });
  }

  for (const q of [
    "SET client_encoding = 'SJIS'",
    "SET client_encoding TO 'BIG5'",
    "SET NAMES 'GBK'",
    'RESET client_encoding',
    'RESET ALL',
    'DISCARD ALL',
    "SELECT set_config('client_encoding', 'SJIS', false)",
    "SELECT set_config('CLIENT_ENCODING', 'mskanji', true)",
    "SELECT set_config($$client_encoding$$, 'UHC', false)",
    "ALTER ROLE CURRENT_USER SET client_encoding = 'SJIS'",
    "ALTER DATABASE postgres SET client_encoding = 'SJIS'",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET client_encoding = 'SJIS' AS 'SELECT 1'",
    "DO $$ BEGIN SET client_encoding = 'SJIS'; END $$",
    "SELECT 1; SET client_encoding = 'SJIS'",
    "SET LOCAL client_encoding = 'GB18030'",
  ]) {
    it(`client-encoding denies ${q} under any policy`, () => {
      denied(decide(engine(''), q), 'client-encoding', q);
      denied(decide(recommended, q), 'client-encoding', q);
    });
  }

  it('refuses query text that is not valid UTF-8 (decoded as U+FFFD)', () => {
    denied(decide(engine(''), "SELECT '\uFFFD'; DELETE FROM orders"), 'unparseable-sql');
    denied(decide(engine(''), Buffer.from([0x53, 0x45, 0x4c, 0x45, 0x43, 0x54, 0x20, 0x27, 0x93, 0x5c, 0x27]).toString('utf8')), 'unparseable-sql');
  });

  it('lets harmless settings through', () => {
    for (const q of ["SET search_path = app, public", "SET statement_timeout = '5s'", 'RESET ROLE', "SET application_name = 'x'", 'SHOW client_encoding']) {
      assert.notEqual(decide(engine('policy:\n  builtins: [block-role-changes]\n'), q).action, 'deny', q);
    }
  });
});

describe('masked columns leave only as plain output columns (recommended profile)', () => {
  const leaks = [
    'SELECT reverse(email) FROM customers',
    "SELECT translate(ssn, '0123456789', 'abcdefghij') FROM customers",
    "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM customers",
    'SELECT email::bytea FROM customers',
    "SELECT email || '.' FROM customers",
    "SELECT replace(ssn, '-', '') FROM customers",
    'SELECT to_jsonb(c) FROM customers c',
    'SELECT row_to_json(c.*) FROM customers c',
    'SELECT c FROM customers c',
    'SELECT customers FROM customers',
    "SELECT query_to_xml('SELECT email FROM customers', true, true, '')",
    "SELECT string_agg(email, '|') FROM customers",
    'SELECT card_number::numeric + 1 FROM customers',
    "SELECT id FROM customers WHERE email LIKE 'a%'",
    "SELECT id FROM customers WHERE substr(ssn, 1, 1) = '1'",
    'SELECT id FROM customers ORDER BY email',
    'SELECT count(*) FROM customers GROUP BY email',
    'SELECT max(id) FROM customers HAVING max(email) > $1',
    'SELECT o.id FROM orders o JOIN customers c ON c.email = o.note',
    'SELECT o.id FROM orders o JOIN customers c USING (email)',
    'SELECT o.id FROM orders o NATURAL JOIN customers',
    'SELECT (SELECT email FROM customers LIMIT 1)',
    'SELECT id FROM orders WHERE note IN (SELECT ssn FROM customers)',
    'WITH x AS (SELECT lower(email) AS e FROM customers) SELECT e FROM x',
    'SELECT upper(e) FROM (SELECT email AS e FROM customers) s',
    'SELECT md5(m) FROM customers AS c(i, n, m)',
    'SELECT md5(m) FROM (SELECT email FROM customers) s(m)',
    'SELECT x FROM customers c, LATERAL (SELECT c.email AS x) s',
    'SELECT (c).email FROM customers c',
    // Attribute notation calls a function on the whole row when no column has that name.
    'SELECT c.to_json FROM customers c',
    'SELECT customers.row_to_json FROM customers',
    'SELECT public.customers.to_jsonb FROM customers',
    'SELECT c.quote_literal AS q FROM customers c',
    'SELECT x.record_out FROM (SELECT * FROM customers) x',
    'SELECT (SELECT c.concat) FROM customers c',
    "SELECT id FROM customers c WHERE c.json_build_array::text LIKE '%ann@%'",
    // Positions in ORDER BY / GROUP BY / DISTINCT ON use the value of the column they point at.
    'SELECT id, email FROM customers ORDER BY 2',
    'SELECT c.email, count(*) FROM customers c GROUP BY 1',
    'SELECT DISTINCT ON (1) ssn, id FROM customers',
    'SELECT email AS e, id FROM customers GROUP BY ROLLUP (1, 2)',
    'SELECT * FROM customers ORDER BY 3',
    'SELECT email COLLATE "C" FROM customers',
    "SELECT pg_notify('ch', email) FROM customers",
    "SELECT set_config('application_name', email, false) FROM customers",
    'ALTER TABLE customers ALTER COLUMN email TYPE text USING reverse(email)',
    'SELECT id FROM customers WINDOW w AS (PARTITION BY email)',
    'SELECT DISTINCT ON (ssn) id FROM customers',
    "SELECT email FROM customers UNION SELECT 'x'",
    'DECLARE c CURSOR FOR SELECT lower(email) FROM customers',
    'PREPARE p AS SELECT md5(ssn) FROM customers',
    'EXPLAIN ANALYZE SELECT id FROM customers WHERE email = $1',
  ];
  for (const q of leaks) it(`denies ${q}`, () => denied(decide(recommended, q), 'masked-expression', q));

  it('a position is read from each statement, not shared by statements of the same shape', () => {
    assert.equal(decide(recommended, 'SELECT id, email FROM customers ORDER BY 1').action, 'allow');
    denied(decide(recommended, 'SELECT id, email FROM customers ORDER BY 2'), 'masked-expression');
    assert.equal(decide(recommended, 'SELECT id, email FROM customers GROUP BY 1, 2 ORDER BY 1').action, 'deny');
  });

  it('also with denyMaskedExpressions alone (no profile)', () => {
    const e = engine('masking:\n  denyMaskedExpressions: true\n  columns: [{ column: customers.email, strategy: hash }]\n');
    for (const q of leaks.slice(0, 20)) if (!q.includes('ssn') && !q.includes('card_number')) denied(decide(e, q), 'masked-expression', q);
  });

  it('plain reads keep working and keep their masks', () => {
    for (const q of [
      'SELECT * FROM customers',
      'SELECT id, email, ssn FROM customers WHERE id = 1 ORDER BY id',
      'SELECT c.email AS contact, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id',
      'SELECT c.* FROM customers c',
      'SELECT email FROM (SELECT email, id FROM customers) s',
      'WITH x AS (SELECT email FROM customers) SELECT email FROM x',
      'DECLARE cur CURSOR WITH HOLD FOR SELECT * FROM customers',
      'FETCH 10 FROM cur',
      'SELECT lower(email) FROM newsletter', // no mask on that table
      'SELECT id, email FROM customers ORDER BY 1',
      'SELECT id, count(*) FROM customers GROUP BY 1',
    ]) {
      const d = decide(recommended, q);
      assert.equal(d.action, 'allow', `${q}: ${JSON.stringify(d)}`);
      if (d.action === 'allow') assert.ok(d.mask.columns.some((m) => m.column === 'public.customers.email'));
    }
  });
});

describe('copies and renames', () => {
  for (const q of [
    'CREATE TABLE copy AS SELECT * FROM customers',
    'CREATE TABLE copy AS SELECT email FROM customers',
    'CREATE TABLE copy AS TABLE customers',
    'SELECT * INTO copy FROM customers',
    'SELECT email INTO TEMP copy FROM customers',
    'CREATE VIEW v AS SELECT * FROM customers',
    'CREATE VIEW v AS SELECT lower(email) AS e FROM customers',
    'CREATE MATERIALIZED VIEW v AS SELECT ssn FROM customers',
    'INSERT INTO orders (note) SELECT email FROM customers',
    'INSERT INTO archive SELECT * FROM customers WHERE id = 1',
    'UPDATE orders SET note = c.ssn FROM customers c WHERE c.id = orders.customer_id',
    'CREATE TABLE copy AS EXECUTE p',
  ]) {
    it(`denies ${q}`, () => denied(decide(recommended, q), 'masked-expression', q));
  }
  for (const q of [
    'ALTER TABLE customers RENAME TO people',
    'ALTER TABLE customers RENAME COLUMN email TO contact',
    'ALTER TABLE public.customers RENAME email TO contact',
    'ALTER TABLE IF EXISTS customers RENAME TO people',
    'ALTER TABLE customers SET SCHEMA archive',
    'ALTER SCHEMA public RENAME TO old',
    'ALTER VIEW customers RENAME TO c2',
  ]) {
    it(`masked-rename denies ${q}, under any policy with masks`, () => {
      denied(decide(recommended, q), 'masked-rename', q);
      denied(decide(engine('masking:\n  columns: [{ column: customers.email, strategy: hash }]\n'), q), 'masked-rename', q);
    });
  }
  it('matches masked tables by name, whatever schema the query names (search_path may differ)', () => {
    const e = engine('masking:\n  denyMaskedExpressions: true\n  columns: [{ column: app.customers.email, strategy: hash }]\n');
    denied(decide(e, 'SELECT lower(email) FROM customers'), 'masked-expression');
    denied(decide(e, 'ALTER TABLE customers RENAME TO c2'), 'masked-rename');
    denied(decide(e, 'COPY (SELECT email FROM customers) TO STDOUT'), 'masked-copy-query');
    denied(decide(e, 'ALTER SCHEMA app RENAME TO app2'), 'masked-rename');
    assert.equal(decide(e, 'ALTER SCHEMA public RENAME TO p2').action, 'allow');
  });

  it('renames of tables without masks are not the mask rule\'s business', () => {
    assert.equal(decide(engine('masking:\n  columns: [{ column: customers.email, strategy: hash }]\n'), 'ALTER TABLE orders RENAME TO o2').action, 'allow');
  });
});

describe('statements that return rows get read limits', () => {
  for (const q of ['FETCH ALL FROM c', 'FETCH FORWARD 1000 c', 'EXECUTE p', 'EXECUTE p(1, 2)', 'DECLARE c CURSOR FOR SELECT id FROM orders']) {
    it(`${q} is a read with the read rule's limits`, () => {
      const d = decide(recommended, q);
      assert.equal(d.action, 'allow', JSON.stringify(d));
      if (d.action === 'allow') {
        assert.equal(d.limits.maxRowsPerStatement, 50);
        assert.equal(d.limits.rowsRule, 'agent-reads');
        assert.equal(d.limits.maxStatementMs, 30_000);
        assert.equal(d.limits.timeRule, 'agent-reads');
      }
    });
  }
  it('a PREPARE that needs review is refused: EXECUTE could repeat one approval forever', () => {
    denied(decide(recommended, 'PREPARE w AS UPDATE orders SET a = 1 WHERE id = $1'), 'prepare-needs-review');
    denied(decide(recommended, 'PREPARE w AS SELECT wipe()'), 'prepare-needs-review');
    denied(decide(recommended, 'PREPARE w AS DELETE FROM orders'), 'block-unbounded-writes');
    assert.equal(decide(recommended, 'PREPARE r AS SELECT id FROM orders WHERE id = $1').action, 'allow');
  });
  it('MOVE returns no rows and stays a utility statement', () => assert.equal(one('MOVE ALL IN c').kind, 'utility'));
  it('EXECUTE names its prepared statement, so the session can apply a protocol-level statement\'s decision', () => {
    assert.equal(one('EXECUTE "Q1"(1)').sql.executeName, 'Q1');
    assert.equal(one('CREATE TABLE x AS EXECUTE q2').sql.executeName, 'q2');
    assert.equal(one('SELECT 1').sql.executeName, undefined);
  });
});

describe('limits.maxStatementTime', () => {
  it('the shortest applicable limit wins and names its rule', () => {
    const e = engine(`
policy:
  rules:
    - { name: all, match: {}, action: allow, limits: { maxStatementTime: 2m } }
    - { name: agents, match: { groups: [agents] }, action: allow, limits: { maxStatementTime: 1500ms, maxRowsPerStatement: 10 } }
`);
    const d = decide(e, 'SELECT pg_sleep(1e6)');
    assert.equal(d.action, 'allow');
    if (d.action === 'allow') assert.deepEqual(d.limits, { maxStatementMs: 1500, timeRule: 'agents', maxRowsPerStatement: 10, rowsRule: 'agents' });
    const human = decide(e, 'SELECT 1', { name: 'dana', groups: [] });
    assert.equal(human.action === 'allow' && human.limits.maxStatementMs, 120_000);
  });
  it('is a duration; anything else is a config error naming the rule', () => {
    assert.throws(() => engine('policy:\n  rules:\n    - { name: x, action: allow, limits: { maxStatementTime: forever } }\n'), /maxStatementTime|duration/);
    assert.throws(() => engine('policy:\n  rules:\n    - { name: x, action: allow, limits: { maxStatementTime: 0s } }\n'), PolicyConfigError);
  });
});

describe('the recommended profile', () => {
  it('turns on every built-in and the masked-expression check', () => {
    denied(decide(recommended, 'DROP TABLE orders'), 'block-destructive-ddl');
    denied(decide(recommended, 'SET ROLE postgres'), 'block-role-changes');
    denied(decide(recommended, "SELECT pg_read_file('/etc/passwd')"), 'block-server-file-access');
    const d = decide(recommended, 'SELECT * FROM customers');
    assert.equal(d.action === 'allow' && d.mask.denyMaskedExpressions, true);
  });

  it('each rule can be replaced by a configured rule of the same name (e.g. review instead of deny)', () => {
    const e = engine(`
policy:
  profile: recommended
  rules:
    - name: recommended-no-exclusive-locks
      match: { lockModes: [] }
      unless: { groups: [dba] }
      action: review
      review: { approvers: [dba] }
`.replace('match: { lockModes: [] }', 'match: { statements: [LockStmt] }'));
    const d = decide(e, 'LOCK TABLE orders');
    assert.equal(d.action, 'review');
    assert.equal(d.action === 'review' && d.rule, 'recommended-no-exclusive-locks');
    assert.equal(decide(e, 'LOCK TABLE orders', { name: 'dana', groups: ['dba'] }).action, 'allow');
    // The other profile rules still apply.
    denied(decide(e, 'DO $$ BEGIN NULL; END $$'), 'recommended-no-dynamic-code');
  });

  it('engine rule names stay reserved', () => {
    assert.throws(() => engine('policy:\n  rules:\n    - { name: client-encoding, action: allow }\n'), /reserved/);
    assert.throws(() => engine('policy:\n  rules:\n    - { name: masked-rename, action: allow }\n'), /reserved/);
  });
});

describe('readOnly connections', () => {
  const { config } = parseConfig(`auth:
  signingKey: { env: AIRLOCK_TEST_KEY }
connections:
  - { name: prod, type: postgres, host: db, database: app, user: ro, readOnly: true }
  - { name: staging, type: postgres, host: db, database: app, user: rw }
`);
  const e = new PolicyEngine(config.policy, config.masking, config.connections);
  const on = (q: string, connection: string) =>
    e.decideAll(sqlOperations(q, { protocol: 'postgres', identity: agent, connection: { name: connection, clientAddress: '', sessionId: 's' } })).decision;

  for (const q of [
    'UPDATE orders SET a = 1 WHERE id = 1',
    'SELECT wipe()',
    'CREATE TABLE t (a int)',
    'COPY t FROM STDIN',
    "DO $$ BEGIN NULL; END $$",
    'SET default_transaction_read_only = off',
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    'SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE',
    'BEGIN READ WRITE',
    'RESET ALL',
  ]) {
    it(`denies ${q} on a readOnly connection (and not because of other rules elsewhere)`, () => {
      const d = on(q, 'prod');
      assert.equal(d.action, 'deny', q);
      if (q !== 'RESET ALL') denied(d, 'read-only-connection', q);
      if (!q.includes('RESET') && !q.includes('READ WRITE') && !q.includes('read_only')) assert.equal(on(q, 'staging').action, 'allow', q);
    });
  }
  it('lets reads, transactions and session statements through', () => {
    for (const q of ['SELECT * FROM orders', 'BEGIN READ ONLY', 'COMMIT', 'SET search_path = app', 'FETCH 10 FROM c', 'SHOW work_mem']) {
      assert.equal(on(q, 'prod').action, 'allow', q);
    }
  });
});

