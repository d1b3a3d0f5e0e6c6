// review.preview: hold-commit. The held write runs on the agent's own connection inside a
// transaction Airlock opened; approvers see the real result (rows, masked sample, locks held);
// approve commits, reject / expiry / maxLockHold roll back. Verified directly on the database.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { ManualApprover, type Pending } from '../support/manual-approver.ts';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { WireClient, serialize } from '../support/pgwire.ts';

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
      CREATE TABLE intx (id int PRIMARY KEY, v text);
      CREATE SEQUENCE hc_seq;`,
    config: () => ({
      masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.hc.secret', strategy: 'redact' }, { column: 'public.hc_log.secret', strategy: 'redact' }] },
      policy: {
        default: 'allow',
        rules: [
          { name: 'hold-hc', match: { tables: ['public.hc', 'public.hc_log'], kinds: ['write'] }, action: 'review', reason: 'writes to hc', review: { approvers: ['dba'], timeout: '10m', preview: 'hold-commit' } },
          { name: 'hold-intx', match: { tables: ['public.intx'], kinds: ['write'] }, action: 'review', reason: 'writes to intx', review: { approvers: ['dba'], timeout: '10m', preview: 'hold-commit', holdInTransaction: true } },
          { name: 'hold-quick', match: { tables: ['public.quick'], kinds: ['write'] }, action: 'review', reason: 'writes to quick', review: { approvers: ['dba'], timeout: '10m', preview: 'hold-commit', maxLockHold: '1s' } },
        ],
      },
    }),
  });
});

beforeEach(async () => {
  await h.pg.query(`TRUNCATE hc, hc_log, quick;
    INSERT INTO hc SELECT g, 'o' || g, '${SECRET}' || g FROM generate_series(1, 10) g;
    INSERT INTO quick VALUES (1, 'a');
    TRUNCATE intx; INSERT INTO intx SELECT g, 'v' || g FROM generate_series(1, 5) g;`);
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

// ---------------------------------------------------------------- parameterized statements

test('parameterized (extended protocol): approve commits exactly the bound values; the sample is masked', async () => {
  const c = await h.client();
  try {
    const running = c.query('UPDATE hc SET owner = $1 WHERE id <= $2', ['bound', 4]).catch((e: Error) => e);
    const p = await approver.next();
    const pv = p.req.binding!.preview!;
    assert.equal(pv.kind, 'hold-commit', pv.summary);
    assert.equal(pv.rows, 4);
    assert.match(pv.summary, /^ran in a transaction Airlock holds open: UPDATE 4/);
    assert.deepEqual(pv.sample?.[0], ['id', 'owner', 'secret']);
    assert.ok(pv.sample?.slice(1).every((r) => r[1] === 'bound'), JSON.stringify(pv.sample));
    assert.ok(!JSON.stringify(pv.sample).includes(SECRET));
    assert.deepEqual(p.req.binding?.parameters, ['$1 = "bound"', '$2 = "4"']);
    assert.deepEqual(await rows("SELECT count(*)::int AS n FROM hc WHERE owner = 'bound'"), [{ n: 0 }], 'not visible before approval');
    p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['carol'], viaGrant: false });
    const r = (await running) as { rowCount: number; command: string };
    assert.equal(r.command, 'UPDATE');
    assert.equal(r.rowCount, 4);
    assert.deepEqual(await rows("SELECT count(*)::int AS n FROM hc WHERE owner = 'bound'"), [{ n: 4 }]);
    // The session is idle and the protocol state intact: the next extended and simple queries work.
    assert.equal((await c.query('SELECT $1::int + 1 AS n', [41])).rows[0].n, 42);
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
  } finally {
    await c.end();
  }
});

test('parameterized: reject and expiry roll back; a named prepared statement keeps working across holds', async () => {
  const c = await h.client();
  try {
    const del = { name: 'del_hc', text: 'DELETE FROM hc WHERE id > $1' };
    const first = c.query({ ...del, values: [8] }).catch((e: Error) => e);
    const p1 = await approver.next();
    assert.equal(p1.req.binding!.preview!.kind, 'hold-commit');
    assert.equal(p1.req.binding!.preview!.rows, 2);
    p1.resolve({ outcome: 'rejected', requestId: p1.id, by: 'carol', reason: 'no' });
    const e1 = (await first) as Error & { code?: string };
    assert.equal(e1.code, 'AL001');
    assert.match(e1.message, /rolled back/);
    assert.deepEqual(await rows('SELECT count(*)::int AS n FROM hc'), [{ n: 10 }]);
    // The same prepared statement, other values: held again, expiry rolls back.
    const second = c.query({ ...del, values: [5] }).catch((e: Error) => e);
    const p2 = await approver.next();
    assert.equal(p2.req.binding!.preview!.rows, 5);
    p2.resolve({ outcome: 'expired', requestId: p2.id, reason: 'nobody decided' });
    assert.equal(((await second) as Error & { code?: string }).code, 'AL002');
    // And approved the third time, through the same named statement.
    const third = c.query({ ...del, values: [9] }).catch((e: Error) => e);
    const p3 = await approver.next();
    p3.resolve({ outcome: 'approved', requestId: p3.id, approvers: ['carol'], viaGrant: false });
    assert.equal(((await third) as { rowCount: number }).rowCount, 1);
    assert.deepEqual(await rows('SELECT count(*)::int AS n FROM hc'), [{ n: 9 }]);
    assert.equal((await c.query('SELECT count(*)::int AS n FROM hc')).rows[0].n, 9);
  } finally {
    await c.end();
  }
});

test('parameterized INSERT ... SELECT with a binary parameter: exact rows, masked sample, committed', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    const four = Buffer.alloc(4);
    four.writeInt32BE(4);
    // Parse with a declared int4 parameter, bound in binary format.
    const done = w.roundtrip([
      serialize.parse({ text: 'INSERT INTO hc_log SELECT * FROM hc WHERE id <= $1', types: [23] }),
      serialize.bind({ values: [four], valueMapper: (v: unknown) => v as Buffer }),
      serialize.describe({ type: 'P' }),
      serialize.execute({}),
      serialize.sync(),
    ]);
    const p = await approver.next();
    const pv = p.req.binding!.preview!;
    assert.equal(pv.kind, 'hold-commit', pv.summary);
    assert.equal(pv.rows, 4);
    assert.ok(!JSON.stringify(pv.sample).includes(SECRET));
    p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['carol'], viaGrant: false });
    const ms = await done;
    assert.deepEqual(
      ms.filter((m) => m.name !== 'notice').map((m) => m.name),
      ['parseComplete', 'bindComplete', 'noData', 'commandComplete', 'readyForQuery'],
    );
    assert.equal(ms.find((m) => m.name === 'commandComplete')?.text, 'INSERT 0 4');
    assert.equal(ms.at(-1)?.status, 'I');
    assert.deepEqual(await rows('SELECT count(*)::int AS n FROM hc_log'), [{ n: 4 }]);
  } finally {
    w.end();
  }
});

test('parameterized, red team: the committed portal runs once, answers a Flush, and is gone after Sync', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    w.send(serialize.parse({ name: 'bump', text: "UPDATE hc SET owner = owner || '+' WHERE id = $1" }), serialize.bind({ portal: 'p1', statement: 'bump', values: ['2'] }), serialize.execute({ portal: 'p1' }), serialize.flush());
    const p = await approver.next();
    assert.equal(p.req.binding!.preview!.kind, 'hold-commit');
    p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['carol'], viaGrant: false });
    // No Sync yet: the Flush alone brings the outcome.
    await w.until((m) => m.name === 'commandComplete');
    // Executing the same portal again is refused: the approved values ran once.
    const again = await w.roundtrip([serialize.execute({ portal: 'p1' }), serialize.sync()]);
    assert.ok(again.some((m) => m.name === 'error' && /already ran/.test(String(m.message))), JSON.stringify(again.map((m) => m.name)));
    assert.deepEqual(await rows('SELECT owner FROM hc WHERE id = 2'), [{ owner: 'o2+' }]);
    // After Sync the portal is gone, as on the server.
    const later = await w.roundtrip([serialize.execute({ portal: 'p1' }), serialize.sync()]);
    assert.ok(later.some((m) => m.name === 'error'), JSON.stringify(later.map((m) => m.name)));
    assert.deepEqual(await rows('SELECT owner FROM hc WHERE id = 2'), [{ owner: 'o2+' }]);
    // The named statement still works (held again, rejected: rolled back).
    const third = w.roundtrip([serialize.bind({ statement: 'bump', values: ['3'] }), serialize.execute({}), serialize.sync()]);
    const p2 = await approver.next();
    p2.resolve({ outcome: 'rejected', requestId: p2.id, by: 'carol', reason: 'no' });
    const ms = await third;
    assert.ok(ms.some((m) => m.name === 'error' && m.code === 'AL001'));
    assert.equal(ms.at(-1)?.status, 'I');
    assert.deepEqual(await rows('SELECT owner FROM hc WHERE id = 3'), [{ owner: 'o3' }]);
  } finally {
    w.end();
  }
});

test('parameterized, a failed Parse ahead of the held Bind: nothing runs, the client sees the Parse error once', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    // The statement parses for Airlock (libpg-query) but fails on the server (no such column).
    const ms = await w.roundtrip([serialize.parse({ text: 'UPDATE hc SET nosuch = $1 WHERE id = 1' }), serialize.bind({ values: ['x'] }), serialize.execute({}), serialize.sync()]);
    assert.deepEqual(ms.filter((m) => m.name !== 'notice').map((m) => m.name), ['error', 'readyForQuery']);
    assert.equal(ms.at(-1)?.status, 'I');
    assert.equal((await w.roundtrip([serialize.query('SELECT 1')])).some((m) => m.name === 'dataRow'), true);
  } finally {
    w.end();
  }
});

// ---------------------------------------------------------------- inside the client's transaction

test('inside a transaction (review.holdInTransaction): runs under a savepoint; approve keeps it in the client transaction, whose COMMIT is the client\'s', async () => {
  const d = await h.client();
  try {
    await d.query('BEGIN');
    await d.query("SET LOCAL statement_timeout = '123s'");
    const running = d.query("UPDATE intx SET v = 'held' WHERE id <= 2").catch((e: Error) => e);
    const p = await approver.next();
    const pv = p.req.binding!.preview!;
    assert.equal(pv.kind, 'hold-commit', pv.summary);
    assert.equal(pv.rows, 2);
    assert.match(pv.summary, /inside the client's transaction/);
    assert.ok(p.req.binding!.details!.some((x) => /held inside a transaction open since/.test(x)), String(p.req.binding!.details));
    p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['carol'], viaGrant: false });
    const r = (await running) as { rowCount: number };
    assert.equal(r.rowCount, 2);
    // Still the client's open transaction: its own settings unchanged, nothing visible outside yet.
    assert.equal((await d.query('SHOW statement_timeout')).rows[0].statement_timeout, '123s');
    assert.deepEqual(await rows("SELECT count(*)::int AS n FROM intx WHERE v = 'held'"), [{ n: 0 }]);
    await d.query('COMMIT');
    assert.deepEqual(await rows("SELECT count(*)::int AS n FROM intx WHERE v = 'held'"), [{ n: 2 }]);
  } finally {
    await d.end();
  }
});

test('inside a transaction: reject rolls back to the savepoint and fails the client transaction, as an error would', async () => {
  const d = await h.client();
  try {
    await d.query('BEGIN');
    await d.query('SELECT count(*) FROM intx');
    const running = d.query('DELETE FROM intx WHERE id > 3').catch((e: Error) => e);
    const p = await approver.next();
    assert.equal(p.req.binding!.preview!.kind, 'hold-commit', p.req.binding!.preview!.summary);
    assert.equal(p.req.binding!.preview!.rows, 2);
    p.resolve({ outcome: 'rejected', requestId: p.id, by: 'carol', reason: 'no' });
    const e = (await running) as Error & { code?: string };
    assert.equal(e.code, 'AL001');
    await assert.rejects(d.query('SELECT 1'), (x: Error & { code?: string }) => x.code === '25P02');
    await d.query('ROLLBACK');
    assert.deepEqual(await rows('SELECT count(*)::int AS n FROM intx'), [{ n: 5 }]);
    assert.equal((await d.query('SELECT 1 AS one')).rows[0].one, 1);
  } finally {
    await d.end();
  }
});
