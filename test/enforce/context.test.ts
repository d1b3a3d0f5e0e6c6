// Where agents state why (and link their trace), and what approvers get from it.
import { before, describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModule, parseSync } from 'libpg-query';
import { ActivitySummary, cleanReason, contextComment, contextFromApplicationName, contextFromEnv, contextFromHeaders, contextFromSql, reasonHeader, validTraceparent } from '../../gateway/enforce/context.ts';

const TP = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

test('a leading SQL comment (block or line, after other comments) carries reason, ticket and traceparent', () => {
  assert.deepEqual(contextFromSql(`/* airlock: reason="fix \\"dupes\\"" ticket=INC-123 traceparent=${TP} */ DELETE FROM t`), { reason: 'fix "dupes"', ticket: 'INC-123', traceparent: TP, source: 'sql comment' });
  assert.deepEqual(contextFromSql(`-- hello\n  -- airlock: reason='nightly'\nUPDATE t SET a = 1`), { reason: 'nightly', source: 'sql comment' });
  assert.equal(contextFromSql(`UPDATE t SET a = '/* airlock: reason="x" */'`), undefined, 'only a leading comment counts');
  assert.equal(contextFromSql('/* unterminated airlock: reason="x"'), undefined);
});

test('reasons are one line, PII-redacted and cut; tickets and traceparents are validated', () => {
  const c = contextFromSql(`/* airlock: reason="call 555-867-5309 or mail eve@example.com\nnow" ticket="bad ticket!" traceparent=00-00000000000000000000000000000000-b7ad6b7169203331-01 */ SELECT 1`);
  assert.ok(c?.reason && !c.reason.includes('eve@example.com') && !c.reason.includes('\n'), c?.reason);
  assert.equal(c?.ticket, undefined);
  assert.equal(c?.traceparent, undefined);
  assert.equal(contextFromSql(`/* airlock: reason="${'x'.repeat(1000)}" */ SELECT 1`)?.reason?.length, 303);
  assert.equal(validTraceparent(TP.toUpperCase()), TP);
  assert.equal(validTraceparent('ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'), undefined);
});

test('application_name: key=value pairs or a bare traceparent; a plain program name is not a reason', () => {
  assert.deepEqual(contextFromApplicationName('airlock: reason="nightly fix"'), { reason: 'nightly fix', source: 'application_name' });
  assert.deepEqual(contextFromApplicationName(TP), { traceparent: TP, source: 'application_name' });
  assert.equal(contextFromApplicationName('psql'), undefined);
});

test('headers and SSH env', () => {
  const h: Record<string, string> = { 'x-airlock-reason': 'refund', traceparent: TP };
  assert.deepEqual(contextFromHeaders((n) => h[n]), { reason: 'refund', traceparent: TP, source: 'http header' });
  assert.deepEqual(contextFromEnv(new Map([['AIRLOCK_REASON', 'deploy'], ['AIRLOCK_TICKET', 'CHG-1']])), { reason: 'deploy', ticket: 'CHG-1', source: 'ssh env' });
  assert.equal(contextFromHeaders(() => undefined), undefined);
});

test('the activity line counts by kind, refusals apart, and names tables once (bounded)', () => {
  const a = new ActivitySummary();
  assert.equal(a.line(), 'before this: nothing else in this session');
  a.note('read', ['public.a'], 'allow');
  a.note('read', ['public.a', 'public.b'], 'mask');
  a.note('write', ['public.c'], 'review');
  a.note('write', ['public.x'], 'deny');
  assert.equal(a.line(), 'before this: 2 read, 1 write; 1 refused; tables public.a, public.b, public.c');
  for (let i = 0; i < 30; i++) a.note('read', [`public.t${i}`], 'allow');
  assert.match(a.line(), /and 13 more$/);
});

describe('contextComment: a caller states the agent reason without changing the statement', () => {
  before(() => loadModule());
  const hostile = [
    'plain reason',
    'ends the comment */ DROP TABLE t; /*',
    'nests /* a comment */ */ DELETE FROM t --',
    'quote " and backslash \\ and \\" escape',
    "line\nbreak */\r\nDROP TABLE t",
    '*/*/*/ /*/*/',
    'réparation — 修复',
  ];
  for (const reason of hostile) {
    it(`keeps ${JSON.stringify(reason)} inside the comment`, () => {
      const text = `${contextComment({ reason, ticket: 'INC-1' })}UPDATE t SET a = 1 WHERE id = $1`;
      const stmts = (parseSync(text) as { stmts: Array<{ stmt: Record<string, unknown> }> }).stmts;
      assert.equal(stmts.length, 1, text);
      assert.deepEqual(Object.keys(stmts[0].stmt), ['UpdateStmt']);
      const ctx = contextFromSql(text);
      assert.equal(ctx?.ticket, 'INC-1');
      assert.equal(ctx?.reason, cleanReason(reason.replace(/\*\//g, '* /').replace(/\/\*/g, '/ *')));
    });
  }
  it('says nothing when there is nothing to say, and drops an invalid ticket', () => {
    assert.equal(contextComment({}), '');
    assert.equal(contextComment({ ticket: 'bad ticket; DROP' }), '');
  });
});

describe('reasonHeader: any reason survives an HTTP header', () => {
  it('is the text itself when printable ASCII, else RFC 8187 encoded and decoded by contextFromHeaders', () => {
    assert.equal(reasonHeader('release 7'), 'release 7');
    const v = reasonHeader('réparation 修复');
    assert.match(v, /^UTF-8''[\x21-\x7e]+$/);
    assert.equal(contextFromHeaders((n) => (n === 'x-airlock-reason' ? v : undefined))?.reason, 'réparation 修复');
    assert.equal(contextFromHeaders((n) => (n === 'x-airlock-reason' ? "UTF-8''%E0%A4%A" : undefined))?.reason, "UTF-8''%E0%A4%A");
  });
});
