// Red team of review.preview: hold-commit for parameterized statements and inside client
// transactions: protocol orders a hostile client can send around the held Bind, cancels and
// hang-ups at each phase, Airlock's internal names. Every outcome is checked on the database.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { ManualApprover } from '../support/manual-approver.ts';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { WireClient, cancelRequest, sendRaw, serialize, type Message } from '../support/pgwire.ts';

const approver = new ManualApprover('#db-approvals');
let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    approver,
    setup: "CREATE TABLE rt (id int PRIMARY KEY, v text); CREATE TABLE rs (id int, secret text); CREATE TABLE rq (id int PRIMARY KEY, v text); INSERT INTO rq VALUES (1, 'a'); INSERT INTO rs VALUES (1, 'Zebra-Quokka-Secret');",
    config: () => ({
      masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.rs.secret', strategy: 'redact' }] },
      policy: {
        default: 'allow',
        rules: [
          { name: 'hold-rq', match: { tables: ['public.rq'], kinds: ['write'] }, action: 'review', reason: 'writes to rq', review: { approvers: ['dba'], timeout: '10m', preview: 'hold-commit', holdInTransaction: true, maxLockHold: '1s' } },
          { name: 'hold-rt', match: { tables: ['public.rt'], kinds: ['write'] }, action: 'review', reason: 'writes to rt', review: { approvers: ['dba'], timeout: '10m', preview: 'hold-commit', holdInTransaction: true } },
        ],
      },
    }),
  });
});

beforeEach(async () => {
  await h.pg.query("TRUNCATE rt; INSERT INTO rt SELECT g, 'v' || g FROM generate_series(1, 5) g;");
});

after(async () => {
  await h?.close();
});

async function v(id: number): Promise<string> {
  return (await h.pg.query(`SELECT v FROM rt WHERE id = ${id}`)).rows[0].v as string;
}

async function wire(): Promise<WireClient> {
  return WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
}

const names = (ms: Message[]) => ms.filter((m) => m.name !== 'notice').map((m) => m.name);
const approve = (requestId: string) => ({ outcome: 'approved' as const, requestId, approvers: ['carol'], viaGrant: false });

/** No backend of the gateway's is left inside a transaction (idle in transaction). */
async function noOpenTransaction(): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const r = await h.pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()");
    if (r.rows[0].n === 0) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.fail('a transaction was left open on the database');
}

test('a Describe of the statement between the held Bind and its Execute: the client is told the write committed, not an error', async () => {
  const w = await wire();
  try {
    const done = w.roundtrip([
      serialize.parse({ name: 's1', text: 'UPDATE rt SET v = $1 WHERE id = 1' }),
      serialize.bind({ portal: 'p1', statement: 's1', values: ['x'] }),
      serialize.describe({ type: 'S', name: 's1' }),
      serialize.execute({ portal: 'p1' }),
      serialize.sync(),
    ]);
    const p = await approver.next();
    assert.equal(p.req.binding!.preview!.kind, 'hold-commit');
    p.resolve(approve(p.id));
    const ms = await done;
    assert.equal(await v(1), 'x', 'committed once');
    assert.deepEqual(names(ms), ['parseComplete', 'bindComplete', 'parameterDescription', 'noData', 'commandComplete', 'readyForQuery']);
    assert.equal(ms.find((m) => m.name === 'commandComplete')?.text, 'UPDATE 1');
    assert.equal(ms.at(-1)?.status, 'I');
  } finally {
    w.end();
  }
});

test('a failing message between the held Bind and its Execute: the Execute is skipped as the server would, the write stays committed once', async () => {
  const w = await wire();
  try {
    const done = w.roundtrip([
      serialize.parse({ name: 's2', text: 'UPDATE rt SET v = $1 WHERE id = 2' }),
      serialize.bind({ portal: 'p2', statement: 's2', values: ['y'] }),
      serialize.describe({ type: 'S', name: 'no_such_statement' }),
      serialize.execute({ portal: 'p2' }),
      serialize.sync(),
    ]);
    const p = await approver.next();
    p.resolve(approve(p.id));
    const ms = await done;
    assert.deepEqual(names(ms), ['parseComplete', 'bindComplete', 'error', 'readyForQuery']);
    assert.equal(await v(2), 'y');
    assert.equal((await w.roundtrip([serialize.query('SELECT 1')])).some((m) => m.name === 'dataRow'), true);
  } finally {
    w.end();
  }
});

test("Airlock's internal statement and portal names are not the client's to use", async () => {
  const w = await wire();
  try {
    const ms = await w.roundtrip([serialize.parse({ name: 'airlock.hc.00000000', text: 'SELECT 1' }), serialize.sync()]);
    assert.ok(ms.some((m) => m.name === 'error' && /airlock\.hc\./.test(String(m.message))), JSON.stringify(names(ms)));
    const ms2 = await w.roundtrip([serialize.parse({ name: 'ok1', text: 'SELECT 1' }), serialize.bind({ portal: 'airlock.hc.x', statement: 'ok1' }), serialize.execute({ portal: 'airlock.hc.x' }), serialize.sync()]);
    assert.ok(ms2.some((m) => m.name === 'error'), JSON.stringify(names(ms2)));
    assert.ok(!ms2.some((m) => m.name === 'dataRow'));
  } finally {
    w.end();
  }
});

test('CancelRequest while the held statement is still running (before the hold): no approval request is left open, nothing commits', async () => {
  const blocker = await h.pg.client();
  const w = await wire();
  try {
    await blocker.query('BEGIN');
    await blocker.query('SELECT * FROM rt WHERE id = 3 FOR UPDATE');
    const key = w.messages.find((m) => m.name === 'backendKeyData') as unknown as { processID: number; secretKey: number };
    const from = w.messages.length;
    w.send(serialize.parse({ text: 'UPDATE rt SET v = $1 WHERE id = 3' }), serialize.bind({ values: ['z'] }), serialize.execute({}), serialize.sync());
    // Wait until the held statement waits for the row lock on the session's own connection.
    for (let i = 0; i < 100; i++) {
      const r = await h.pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE rt SET v = $1 WHERE id = 3%'");
      if (r.rows[0].n > 0) break;
      await new Promise((res) => setTimeout(res, 50));
    }
    await sendRaw(h.gateway.port, cancelRequest(key.processID, key.secretKey));
    await blocker.query('ROLLBACK');
    // Answered without anyone deciding: the cancelled statement is not put before approvers.
    const ms = await w.until((m) => m.name === 'readyForQuery', 8000, from);
    assert.ok(ms.some((m) => m.name === 'error' && m.code === '57014'), JSON.stringify(names(ms)));
    assert.equal(approver.pending.length, 0, 'no approval request is waiting for a cancelled statement');
    assert.equal(await v(3), 'v3');
    await noOpenTransaction();
  } finally {
    w.end();
    await blocker.end();
  }
});

test('client hang-up mid-hold (parameterized): the request is withdrawn and the transaction rolled back on the database', async () => {
  const w = await wire();
  w.send(serialize.parse({ text: 'DELETE FROM rt WHERE id > $1' }), serialize.bind({ values: ['2'] }), serialize.execute({}), serialize.sync());
  const p = await approver.next();
  assert.equal(p.req.binding!.preview!.rows, 3);
  w.socket.destroy();
  for (let i = 0; i < 100 && !approver.aborted.includes(p.id); i++) await new Promise((res) => setTimeout(res, 50));
  assert.ok(approver.aborted.includes(p.id), 'the approval request was withdrawn');
  p.resolve(approve(p.id));
  await noOpenTransaction();
  assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM rt')).rows[0].n, 5);
  // No lock is left behind either.
  await h.pg.query("SET lock_timeout = '2s'; DELETE FROM rt WHERE id = 5; RESET lock_timeout");
});

test("inside a transaction: the client's own savepoint named like Airlock's cannot resurrect a rejected write", async () => {
  const c = await h.client();
  try {
    await c.query('BEGIN');
    await c.query('SAVEPOINT airlock_hold_commit');
    const running = c.query("UPDATE rt SET v = 'rejected' WHERE id = 4").catch((e: Error) => e);
    const p = await approver.next();
    assert.equal(p.req.binding!.preview!.kind, 'hold-commit', p.req.binding!.preview!.summary);
    p.resolve({ outcome: 'rejected', requestId: p.id, by: 'carol', reason: 'no' });
    assert.equal(((await running) as Error & { code?: string }).code, 'AL001');
    // The client recovers its failed transaction through its own savepoint and commits.
    await c.query('ROLLBACK TO SAVEPOINT airlock_hold_commit');
    await c.query('COMMIT');
    assert.equal(await v(4), 'v4');
    await noOpenTransaction();
  } finally {
    await c.end();
  }
});

test('an error of the held statement quoting a masked value reaches neither the client nor the audit (parameterized and simple)', async () => {
  const c = await h.client();
  try {
    for (const run of [
      () => c.query('UPDATE rt SET v = $1 WHERE id = (SELECT secret::int FROM rs WHERE id = 1)', ['w']),
      () => c.query("UPDATE rt SET v = 'w' WHERE id = (SELECT secret::int FROM rs WHERE id = 1)"),
    ]) {
      const e = (await run().catch((x: Error) => x)) as Error & { code?: string };
      assert.equal(e.code, '22P02', e.message);
      assert.ok(!e.message.includes('Zebra'), e.message);
    }
    const audit = JSON.stringify(h.store.listSessions().map((x) => h.store.getSession(x.id)));
    assert.ok(audit.includes('22P02') || audit.includes('invalid input syntax'), 'the failure is recorded');
    assert.ok(!audit.includes('Zebra'), 'the masked value is not in the audit store');
    assert.equal(await v(1), 'v1');
    await noOpenTransaction();
  } finally {
    await c.end();
  }
});

test("a session that changed search_path: Airlock's statements run none of the agent's functions, and the held write does not run before approval", async () => {
  const c = await h.client();
  try {
    await c.query(`CREATE SCHEMA IF NOT EXISTS evil; CREATE TABLE IF NOT EXISTS evil.ran (n int);
      CREATE OR REPLACE FUNCTION evil.current_setting(text) RETURNS text LANGUAGE sql AS 'INSERT INTO evil.ran VALUES (1) RETURNING ''0''::text';
      CREATE TABLE IF NOT EXISTS evil.rt (id int PRIMARY KEY, v text); INSERT INTO evil.rt VALUES (5, 'evil') ON CONFLICT DO NOTHING`);
    // The rollback-safety check resolved public.rt; this session's search_path updates evil.rt.
    await c.query('SET search_path = evil, pg_catalog, public');
    const outside = (await c.query("UPDATE rt SET v = 'sp' WHERE id = 5").catch((e: Error) => e)) as Error & { code?: string };
    assert.equal(outside.code, '55000', outside.message);
    assert.match(outside.message, /search_path/);
    await c.query('BEGIN');
    const inside = (await c.query("UPDATE rt SET v = 'sp' WHERE id = 5").catch((e: Error) => e)) as Error & { code?: string };
    assert.equal(inside.code, '55000', inside.message);
    await c.query('ROLLBACK');
    assert.equal(approver.pending.length, 0);
    assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM evil.ran')).rows[0].n, 0, "Airlock's statement called the agent's function");
    assert.equal((await h.pg.query('SELECT v FROM evil.rt WHERE id = 5')).rows[0].v, 'evil');
    assert.equal(await v(5), 'v5');
    // Back to the default: held as usual.
    await c.query('RESET search_path');
    const running = c.query("UPDATE rt SET v = 'sp' WHERE id = 5").catch((e: Error) => e);
    const p = await approver.next();
    assert.equal(p.req.binding!.preview!.kind, 'hold-commit', p.req.binding!.preview!.summary);
    p.resolve(approve(p.id));
    assert.equal(((await running) as { rowCount: number }).rowCount, 1);
    assert.equal(await v(5), 'sp');
  } finally {
    await c.end();
    await h.pg.query('DROP SCHEMA IF EXISTS evil CASCADE');
  }
});

test("maxLockHold inside a client transaction: the held statement's locks are released and the transaction fails", async () => {
  const c = await h.client();
  try {
    await c.query('BEGIN');
    const running = c.query("UPDATE rq SET v = 'held' WHERE id = 1").catch((e: Error) => e);
    const p = await approver.next();
    assert.equal(p.req.binding!.preview!.kind, 'hold-commit', p.req.binding!.preview!.summary);
    const e = (await running) as Error & { code?: string };
    assert.equal(e.code, 'AL001');
    assert.match(e.message, /maxLockHold/);
    assert.ok(approver.aborted.includes(p.id));
    // The row lock is gone while the client's transaction is still open (failed).
    await h.pg.query("SET lock_timeout = '2s'; UPDATE rq SET v = 'other' WHERE id = 1; RESET lock_timeout");
    await assert.rejects(c.query('SELECT 1'), (x: Error & { code?: string }) => x.code === '25P02');
    await c.query('ROLLBACK');
    assert.equal((await h.pg.query('SELECT v FROM rq WHERE id = 1')).rows[0].v, 'other');
  } finally {
    await c.end();
  }
});

test('two held Binds in one pipeline: neither committed portal outlives the Sync', async () => {
  const w = await wire();
  try {
    const done = w.roundtrip([
      serialize.parse({ name: 's9', text: "UPDATE rt SET v = v || '+' || $1 WHERE id = 1" }),
      serialize.bind({ portal: 'pa', statement: 's9', values: ['a'] }),
      serialize.bind({ portal: 'pb', statement: 's9', values: ['b'] }),
      serialize.execute({ portal: 'pb' }),
      serialize.sync(),
    ]);
    for (let i = 0; i < 2; i++) {
      const p = await approver.next();
      p.resolve(approve(p.id));
    }
    await done;
    assert.equal(await v(1), 'v1+a+b');
    // After Sync the server has no portal pa: neither does Airlock (no made-up CommandComplete).
    const later = await w.roundtrip([serialize.execute({ portal: 'pa' }), serialize.sync()]);
    assert.deepEqual(names(later), ['error', 'readyForQuery']);
  } finally {
    w.end();
  }
});

test('a read executed ahead of the held Bind in the same pipeline: not run before approval (dry run instead), runs once on approval', async () => {
  const w = await wire();
  try {
    const done = w.roundtrip([
      serialize.parse({ text: 'SELECT count(*) FROM rt' }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.parse({ name: 'u1', text: 'UPDATE rt SET v = v || $1 WHERE id = 2' }),
      serialize.bind({ portal: 'pu', statement: 'u1', values: ['!'], binary: true }),
      serialize.execute({ portal: 'pu' }),
      serialize.sync(),
    ]);
    const p = await approver.next();
    assert.match(p.req.binding!.preview!.summary, /^hold-commit not available here/);
    assert.equal(await v(2), 'v2', 'nothing ran before approval');
    p.resolve(approve(p.id));
    const ms = await done;
    assert.equal(ms.filter((m) => m.name === 'commandComplete').map((m) => m.text).join(','), 'SELECT 1,UPDATE 1');
    assert.equal(await v(2), 'v2!');
  } finally {
    w.end();
  }
});
