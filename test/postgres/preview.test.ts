// Approvers see what a held write would change (review.preview) and why the agent wants it:
// explain (planner estimate, nothing runs), dry-run (exact rows and a masked sample, rolled back;
// irreversible effects fall back to explain), and the agent's reason from a leading SQL comment
// or application_name, with its owner and what the session did before, in the request and audit.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { ManualApprover, type Pending } from '../support/manual-approver.ts';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';

const approver = new ManualApprover('#db-approvals');
let h: GatewayHarness;

const SECRET = 'hunter2-topsecret';

before(async () => {
  h = await startGateway({
    approver,
    setup: `
      CREATE TABLE ex (id int PRIMARY KEY, owner text, secret text);
      CREATE TABLE dr (id int PRIMARY KEY, owner text, secret text);
      CREATE TABLE dr_log (id int, owner text, secret text);
      CREATE TABLE seq_t (id serial PRIMARY KEY, v text);
      CREATE SEQUENCE side_seq;
      CREATE TABLE side_log (v text);
      CREATE FUNCTION sneaky(v text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN INSERT INTO side_log VALUES (v); RETURN v; END $$;`,
    config: () => ({
      masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.dr.secret', strategy: 'redact' }, { column: 'public.dr_log.secret', strategy: 'redact' }] },
      identities: [
        { name: 'alice', groups: ['dba'] },
        { name: 'agent-1', groups: ['agents'], owner: 'alice' },
      ],
      policy: {
        default: 'allow',
        rules: [
          { name: 'explain-ex', match: { tables: ['public.ex'], kinds: ['write'] }, action: 'review', reason: 'writes to ex', review: { approvers: ['dba'], timeout: '10m', preview: 'explain' } },
          { name: 'dry-dr', match: { tables: ['public.dr', 'public.dr_log', 'public.seq_t'], kinds: ['write'] }, action: 'review', reason: 'writes to dr', review: { approvers: ['dba'], timeout: '10m', preview: 'dry-run' } },
        ],
      },
    }),
  });
});

beforeEach(async () => {
  await h.pg.query(`TRUNCATE ex, dr, dr_log, seq_t;
    INSERT INTO ex SELECT g, 'o' || g, '${SECRET}' || g FROM generate_series(1, 50) g;
    INSERT INTO dr SELECT g, 'o' || g, '${SECRET}' || g FROM generate_series(1, 10) g;`);
});

after(async () => {
  await h?.close();
});

function reject(p: Pending): void {
  p.resolve({ outcome: 'rejected', requestId: p.id, by: 'carol', reason: 'just looking' });
}

/** Runs `sql` (with `values`) as `user`, returns the held request and rejects it. */
async function held(sql: string, values?: unknown[], o: { user?: string; application_name?: string } = {}): Promise<Pending> {
  const c = await h.client(o);
  try {
    const running = c.query(sql, values).catch((e: Error) => e);
    const p = await approver.next();
    reject(p);
    const r = await running;
    assert.ok(r instanceof Error && /rejected/.test(r.message), String(r));
    return p;
  } finally {
    await c.end();
  }
}

async function table(name: string): Promise<string> {
  return JSON.stringify((await h.pg.query(`SELECT * FROM ${name} ORDER BY id`)).rows);
}

test('explain: the planner estimate and top node for UPDATE, DELETE and INSERT ... SELECT, parameterized too; nothing runs', async () => {
  const before = await table('ex');
  const cases: Array<[string, unknown[] | undefined, RegExp]> = [
    ['UPDATE ex SET owner = owner || $1 WHERE id <= $2', ['x', 10], /planner estimate: about \d+ rows \(Update on ex/],
    ['DELETE FROM ex WHERE id > 25', undefined, /planner estimate: about \d+ rows \(Delete on ex/],
    ['INSERT INTO ex SELECT id + 100, owner, secret FROM ex WHERE id < $1', [5], /planner estimate: about \d+ rows \(Insert on ex/],
  ];
  for (const [sql, values, want] of cases) {
    const p = await held(sql, values);
    const pv = p.req.binding?.preview;
    assert.ok(pv, `preview for ${sql}`);
    assert.equal(pv.kind, 'explain');
    assert.match(pv.summary, want);
    assert.match(pv.summary, /nothing was run/);
    assert.equal(typeof pv.rows, 'number');
  }
  assert.equal(await table('ex'), before, 'explain never executes the statement');
});

test('dry-run: exact counts and a masked sample for UPDATE, DELETE and INSERT ... SELECT (parameterized), rolled back', async () => {
  const beforeDr = await table('dr');
  const u = (await held('UPDATE dr SET owner = $1 WHERE id <= $2', ['renamed', 3])).req.binding!.preview!;
  assert.equal(u.kind, 'dry-run');
  assert.equal(u.rows, 3);
  assert.match(u.summary, /^dry run: UPDATE 3, rolled back; sample of rows as written \(after\)$/);
  assert.deepEqual(u.sample?.[0], ['id', 'owner', 'secret']);
  assert.equal(u.sample?.length, 4);
  for (const row of u.sample!.slice(1)) {
    assert.equal(row[1], 'renamed');
    assert.ok(!row[2].includes(SECRET), `masked: ${row[2]}`);
  }

  const d = (await held('DELETE FROM dr WHERE id > 8')).req.binding!.preview!;
  assert.equal(d.rows, 2);
  assert.match(d.summary, /^dry run: DELETE 2, rolled back; sample of rows deleted \(before\)$/);
  assert.deepEqual(d.sample?.slice(1).map((r) => r[0]).sort(), ['10', '9']);
  assert.ok(!JSON.stringify(d.sample).includes(SECRET));

  const i = (await held('INSERT INTO dr_log SELECT * FROM dr WHERE id < $1', [6])).req.binding!.preview!;
  assert.equal(i.rows, 5);
  assert.match(i.summary, /^dry run: INSERT 5, rolled back/);
  assert.equal(i.sample?.length, 6);
  assert.ok(!JSON.stringify(i.sample).includes(SECRET));

  assert.equal(await table('dr'), beforeDr, 'the dry runs were rolled back');
  assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM dr_log')).rows[0].n, 0);
});

test('dry-run falls back to explain for a function a rollback cannot undo, and for sequence defaults', async () => {
  const p = (await held("UPDATE dr SET owner = nextval('side_seq')::text WHERE id = 1")).req.binding!.preview!;
  assert.equal(p.kind, 'explain');
  assert.match(p.summary, /^no dry run \(it calls .*nextval.*\); planner estimate/);
  assert.equal((await h.pg.query("SELECT last_value, is_called FROM side_seq")).rows[0].is_called, false, 'the sequence was never advanced');

  const s = (await held("INSERT INTO seq_t (v) VALUES ('a')")).req.binding!.preview!;
  assert.equal(s.kind, 'explain');
  assert.match(s.summary, /fills a column from a sequence/);
});

test('no preview at all when even planning could run a user-defined function (declared IMMUTABLE, it would be folded)', async () => {
  for (const sql of ["UPDATE ex SET owner = sneaky('x') WHERE id = 1", "UPDATE dr SET owner = sneaky('x') WHERE id = 1"]) {
    const p = (await held(sql)).req.binding!.preview!;
    assert.match(p.summary, /^no preview: it calls sneaky, which is not a PostgreSQL built-in, which even planning could run$/);
  }
  assert.deepEqual((await h.pg.query('SELECT count(*)::int AS n FROM side_log')).rows, [{ n: 0 }]);
});

test('the reason from a SQL comment and from application_name, with the owner and the session so far, reach the request and the audit', async () => {
  const c = await h.client({ user: 'agent-1' });
  try {
    await c.query('SELECT count(*) FROM ex');
    await c.query('SELECT * FROM dr WHERE id = 1');
    const running = c.query(`/* airlock: reason="clean up dupes for bob@example.com" ticket=INC-123 traceparent=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 */ DELETE FROM ex WHERE id = 1`).catch((e: Error) => e);
    const p = await approver.next();
    const details = p.req.binding!.details!;
    assert.ok(details.includes(`agent's reason: "clean up dupes for [redacted:email]" (sql comment)`), details.join('\n'));
    assert.ok(details.includes('ticket: INC-123'));
    assert.ok(details.includes("agent's owner: alice"));
    assert.ok(details.includes('trace: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'));
    assert.ok(details.some((d) => /^before this: 2 read; tables public\.ex, public\.dr$/.test(d)), details.join('\n'));
    reject(p);
    await running;
    const audit = h.store.listAudit(p.id).find((e) => e.kind === 'approval.context');
    assert.ok(audit, 'approval context audited');
    assert.deepEqual((audit.detail as { context: unknown }).context, { reason: 'clean up dupes for [redacted:email]', ticket: 'INC-123', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', source: 'sql comment' });
    assert.equal((audit.detail as { owner: string }).owner, 'alice');
    assert.ok(!JSON.stringify(h.store.listAudit()).includes('bob@example.com'));
  } finally {
    await c.end();
  }
  const q = await held('DELETE FROM ex WHERE id = 2', undefined, { application_name: 'airlock: reason="nightly fix"' });
  assert.ok(q.req.binding!.details!.includes(`agent's reason: "nightly fix" (application_name)`), q.req.binding!.details!.join('\n'));
  const audit = h.store.listAudit(q.id).find((e) => e.kind === 'approval.context');
  assert.ok(audit, 'the approval context is audited');
  assert.equal((audit.detail as { context: { reason: string } }).context.reason, 'nightly fix');
});
