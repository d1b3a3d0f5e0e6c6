// review.preview: hold-commit. The held write runs on the agent's own connection inside a
// transaction Airlock opened; approvers see the real result (rows, masked sample, locks held);
// approve commits, reject / expiry / maxLockHold roll back. Verified directly on the database.
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
      CREATE TABLE hc (id int PRIMARY KEY, owner text, secret text);
      CREATE TABLE hc_log (id int, owner text, secret text);
      CREATE TABLE quick (id int PRIMARY KEY, v text);
      CREATE SEQUENCE hc_seq;`,
    config: () => ({
      masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.hc.secret', strategy: 'redact' }, { column: 'public.hc_log.secret', strategy: 'redact' }] },
      policy: {
        default: 'allow',
        rules: [
          { name: 'hold-hc', match: { tables: ['public.hc', 'public.hc_log'], kinds: ['write'] }, action: 'review', reason: 'writes to hc', review: { approvers: ['dba'], timeout: '10m', preview: 'hold-commit' } },
          { name: 'hold-quick', match: { tables: ['public.quick'], kinds: ['write'] }, action: 'review', reason: 'writes to quick', review: { approvers: ['dba'], timeout: '10m', preview: 'hold-commit', maxLockHold: '1s' } },
        ],
      },
    }),
  });
});

beforeEach(async () => {
  await h.pg.query(`TRUNCATE hc, hc_log, quick;
    INSERT INTO hc SELECT g, 'o' || g, '${SECRET}' || g FROM generate_series(1, 10) g;
    INSERT INTO quick VALUES (1, 'a');`);
});

after(async () => {
  await h?.close();
});

async function rows(sql: string): Promise<unknown[]> {
  return (await h.pg.query(sql)).rows;
}

async function start(sql: string): Promise<{ result: Promise<unknown>; p: Pending; end: () => Promise<void> }> {
  const c = await h.client();
  const result = c.query(sql).then(
    (r) => r,
    (e: Error) => e,
  );
  const p = await approver.next();
  return { result, p, end: () => c.end() };
}

test('approve commits: the approver saw the real count and a masked sample; the client gets the commit outcome', async () => {
  const { result, p, end } = await start("UPDATE hc SET owner = 'renamed' WHERE id <= 3");
  try {
    const pv = p.req.binding!.preview!;
    assert.equal(pv.kind, 'hold-commit');
    assert.equal(pv.rows, 3);
    assert.match(pv.summary, /^ran in a transaction Airlock holds open: UPDATE 3; its locks are held since /);
    assert.deepEqual(pv.sample?.[0], ['id', 'owner', 'secret']);
    assert.equal(pv.sample?.length, 4);
    assert.ok(!JSON.stringify(pv.sample).includes(SECRET));
    assert.ok(p.req.binding!.details!.some((d) => d.startsWith('locks held:')));
    // Not visible outside the held transaction yet.
    assert.deepEqual(await rows("SELECT count(*)::int AS n FROM hc WHERE owner = 'renamed'"), [{ n: 0 }]);
    p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['carol'], viaGrant: false });
    const r = (await result) as { rowCount: number; command: string };
    assert.equal(r.command, 'UPDATE');
    assert.equal(r.rowCount, 3);
    assert.deepEqual(await rows("SELECT count(*)::int AS n FROM hc WHERE owner = 'renamed'"), [{ n: 3 }]);
  } finally {
    await end();
  }
});

test('reject rolls back DELETE and INSERT ... SELECT; the session stays usable and idle', async () => {
  const c = await h.client();
  try {
    for (const [sql, count] of [['DELETE FROM hc WHERE id > 7', 3], ['INSERT INTO hc_log SELECT * FROM hc WHERE id < 5', 4]] as const) {
      const running = c.query(sql).catch((e: Error) => e);
      const p = await approver.next();
      assert.equal(p.req.binding!.preview!.rows, count);
      assert.equal(p.req.binding!.preview!.sample?.length, count + 1);
      assert.ok(!JSON.stringify(p.req.binding!.preview!.sample).includes(SECRET));
      p.resolve({ outcome: 'rejected', requestId: p.id, by: 'carol', reason: 'no' });
      const e = (await running) as Error & { code?: string };
      assert.equal(e.code, 'AL001');
      assert.match(e.message, /rolled back/);
    }
    assert.deepEqual(await rows('SELECT count(*)::int AS n FROM hc'), [{ n: 10 }]);
    assert.deepEqual(await rows('SELECT count(*)::int AS n FROM hc_log'), [{ n: 0 }]);
    // The connection is back to idle and usable; no transaction leaked.
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
    await c.query('BEGIN');
    await c.query('ROLLBACK');
  } finally {
    await c.end();
  }
});

test('a statement whose effects a rollback cannot undo is not run before approval: held the ordinary way, with a dry-run preview that says why', async () => {
  const { result, p, end } = await start("UPDATE hc SET owner = nextval('hc_seq')::text WHERE id = 1");
  try {
    const pv = p.req.binding!.preview!;
    assert.match(pv.summary, /^hold-commit not available here \(it calls nextval, whose effects a rollback may not undo\); no dry run/);
    assert.deepEqual(await rows('SELECT is_called FROM hc_seq'), [{ is_called: false }], 'nothing ran');
    p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['carol'], viaGrant: false });
    assert.equal(((await result) as { rowCount: number }).rowCount, 1);
    assert.deepEqual(await rows('SELECT owner FROM hc WHERE id = 1'), [{ owner: '1' }]);
  } finally {
    await end();
  }
});

test('expiry rolls back', async () => {
  const { result, p, end } = await start("UPDATE hc SET owner = 'late' WHERE id = 1");
  try {
    p.resolve({ outcome: 'expired', requestId: p.id, reason: 'nobody decided' });
    const e = (await result) as Error & { code?: string };
    assert.equal(e.code, 'AL002');
    assert.deepEqual(await rows('SELECT owner FROM hc WHERE id = 1'), [{ owner: 'o1' }]);
  } finally {
    await end();
  }
});

test('maxLockHold: without a decision in time the request is withdrawn and the statement rolled back', async () => {
  const { result, p, end } = await start("UPDATE quick SET v = 'b' WHERE id = 1");
  try {
    assert.match(p.req.binding!.preview!.summary, /at most 1 s, then rolled back/);
    const e = (await result) as Error & { code?: string };
    assert.equal(e.code, 'AL001');
    assert.match(e.message, /maxLockHold/);
    assert.ok(approver.aborted.includes(p.id), 'the approval request was cancelled');
    assert.deepEqual(await rows('SELECT v FROM quick WHERE id = 1'), [{ v: 'a' }]);
    // The row lock is gone: another writer is not blocked.
    await h.pg.query("UPDATE quick SET v = 'c' WHERE id = 1");
  } finally {
    await end();
  }
});
