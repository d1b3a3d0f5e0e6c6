import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { statementShape } from '../../../gateway/policy/sql/shape.ts';
import { classifySql, initSqlParser } from '../../../gateway/policy/sql/classify.ts';

before(() => initSqlParser());

test('literal values are replaced, identifiers and structure kept', () => {
  assert.equal(statementShape('SELECT abalance FROM pgbench_accounts WHERE aid = 17;'), 'SELECT abalance FROM pgbench_accounts WHERE aid = ?');
  assert.equal(statementShape("UPDATE t1 SET name = 'O''Brien', x = -1.5e3 WHERE id = .5"), "UPDATE t1 SET name = '?', x = -? WHERE id = ?");
  assert.equal(statementShape('SELECT "we""ird 1" FROM "T2" LIMIT 10'), 'SELECT "we""ird 1" FROM "T2" LIMIT ?');
});

test('anything a small lexer could misread has no shape and goes to the real parser', () => {
  for (const q of [
    'SELECT 1; DROP TABLE t',
    'SELECT 1 -- comment',
    'SELECT /* x */ 1',
    'SELECT $$a$$',
    "SELECT E'a\\'; DROP TABLE t; --'",
    "SELECT U&'d\\0061t'",
    "SELECT 'unterminated",
    'SELECT 123abc',
    'SELECT $1',
  ]) {
    assert.equal(statementShape(q), undefined, q);
  }
});

test('a classification served by shape is the one a fresh parse gives, with the real text', () => {
  const first = classifySql('SELECT c.email FROM customers c WHERE c.id = 1 AND c.name = \'ann\'');
  const second = classifySql('SELECT c.email FROM customers c WHERE c.id = 2 AND c.name = \'bob\'');
  assert.equal(second[0].text, "SELECT c.email FROM customers c WHERE c.id = 2 AND c.name = 'bob'");
  assert.deepEqual({ ...second[0], text: '' }, { ...first[0], text: '' });
  const del = classifySql('DELETE FROM orders WHERE id = 7');
  const del2 = classifySql('DELETE FROM orders WHERE 1 = 1');
  assert.equal(del[0].sql.hasWhere, true);
  assert.equal(del2[0].sql.hasWhere, false, 'a WHERE without a column reference is a different shape');
});

test('statements whose meaning depends on a literal are never shared by shape', () => {
  const a = classifySql("SELECT query_to_xml('select 1', true, true, '')");
  const b = classifySql("SELECT query_to_xml('select * from secrets', true, true, '')");
  assert.deepEqual(a[0].tables, []);
  assert.deepEqual(b[0].tables, ['public.secrets']);
});
