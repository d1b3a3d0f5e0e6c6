// Held (review) statements in the session machinery: the client is told it waits, only its
// session is parked (its pipeline queued behind the held statement, in order), and the
// outcome is enforced. The approval backend is a manual Approver so each test decides when
// and how a request is answered; the Temporal approver is tested with the workflows.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { ManualApprover, type Pending } from '../support/manual-approver.ts';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { WireClient, serialize } from '../support/pgwire.ts';

const approver = new ManualApprover('#db-approvals');
let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    approver,
    setup: `CREATE TABLE accounts (id int PRIMARY KEY, owner text);`,
    config: () => ({
      policy: {
        default: 'allow',
        rules: [{ name: 'approve-deletes', match: { statements: ['DeleteStmt'] }, action: 'review', reason: 'deletes need a second pair of eyes', review: { approvers: ['dba'], timeout: '10m' } }],
      },
    }),
  });
});

beforeEach(async () => {
  await h.pg.query("TRUNCATE accounts; INSERT INTO accounts VALUES (1, 'ann'), (2, 'bob'), (3, 'cat')");
});

after(async () => {
  await h?.close();
});

function approve(p: Pending): void {
  p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['carol'], viaGrant: false });
}

test('approved: the client gets a notice while waiting, then the statement runs and its result is reported', async () => {
  const c = await h.client();
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  try {
    const running = c.query('DELETE FROM accounts WHERE id = 1');
    const held = await approver.next();
    assert.equal(held.req.rule, 'approve-deletes');
    assert.equal(held.req.operation.identity.name, 'alice');
    assert.equal(held.req.operation.text, 'DELETE FROM accounts WHERE id = 1');
    for (let i = 0; i < 50 && notices.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(notices, [`approval required: request ${held.id} posted to #db-approvals, waiting up to 10 minutes`]);
    assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3, 'nothing ran before approval');
    approve(held);
    const r = await running;
    assert.equal(r.rowCount, 1);
    await new Promise((res) => setTimeout(res, 50));
    const report = approver.reports.find((x) => x.requestId === held.id);
    assert.ok(report, 'result reported to the approval thread');
    assert.match(report.summary, /^completed \(DELETE 1\): 0 rows, 0 bytes returned in [\d.]+ ms$/);
  } finally {
    await c.end();
  }
  await new Promise((res) => setTimeout(res, 100));
  assert.ok(approver.ended.some(([, ids]) => ids.length === 1), JSON.stringify(approver.ended));
});

test('rejected: 42501 naming who and why; the session stays usable', async () => {
  const c = await h.client();
  try {
    const running = c.query('DELETE FROM accounts WHERE id = 2');
    const held = await approver.next();
    held.resolve({ outcome: 'rejected', requestId: held.id, by: 'bob', reason: 'too risky' });
    await assert.rejects(running, (e: pg.DatabaseError) => e.code === '42501' && e.message === 'Airlock: approval rejected by bob: too risky');
    assert.equal((await c.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3);
  } finally {
    await c.end();
  }
});

test('expired and failed outcomes are errors that say so', async () => {
  const c = await h.client();
  try {
    let running = c.query('DELETE FROM accounts');
    let held = await approver.next();
    held.resolve({ outcome: 'expired', requestId: held.id, reason: 'nobody answered within 10m' });
    await assert.rejects(running, new RegExp(`approval request ${held.id} expired: nobody answered within 10m`));
    running = c.query('DELETE FROM accounts');
    held = await approver.next();
    held.resolve({ outcome: 'failed', requestId: held.id, reason: 'Temporal is unreachable' });
    await assert.rejects(running, /approval could not be obtained \(rule approve-deletes\): Temporal is unreachable/);
  } finally {
    await c.end();
  }
});

test('a pipeline behind a held statement waits for it, in order, and other sessions are not blocked', async () => {
  const c = new pg.Client({ host: h.gateway.host, port: h.gateway.port, user: 'alice', password: await h.token('alice'), database: 'app', pipeline: true } as pg.ClientConfig);
  await c.connect();
  const other = await h.client();
  try {
    const del = c.query('DELETE FROM accounts WHERE id = 3');
    const count = c.query('SELECT count(*)::int AS n FROM accounts');
    const held = await approver.next();
    // While held: another session works normally.
    assert.equal((await other.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3);
    approve(held);
    assert.equal((await del).rowCount, 1);
    assert.equal((await count).rows[0].n, 2, 'the queued SELECT ran after the approved DELETE');
  } finally {
    await c.end();
    await other.end();
  }
});

test('extended protocol: a held Parse is approved once and its executions use the decision', async () => {
  const c = await h.client();
  try {
    const running = c.query({ name: 'del', text: 'DELETE FROM accounts WHERE id = $1', values: [1] });
    const held = await approver.next();
    approve(held);
    assert.equal((await running).rowCount, 1);
    const again = await c.query({ name: 'del', text: 'DELETE FROM accounts WHERE id = $1', values: [2] });
    assert.equal(again.rowCount, 1, 'the prepared statement runs again without a new request');
  } finally {
    await c.end();
  }
});

test('client disconnect while held aborts the approval request', async () => {
  const c = await h.client();
  c.on('error', () => {});
  const running = c.query('DELETE FROM accounts WHERE id = 1').catch(() => undefined);
  const held = await approver.next();
  (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
  await running;
  for (let i = 0; i < 50 && !approver.aborted.includes(held.id); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(approver.aborted.includes(held.id), 'the hold signal was aborted');
  assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3);
});

test('a client that hangs up with more statements queued behind the held one is noticed too', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  w.send(serialize.query('DELETE FROM accounts WHERE id = 2'), serialize.query('SELECT 1'), serialize.query('SELECT 2'));
  const held = await approver.next();
  w.socket.end();
  for (let i = 0; i < 50 && !approver.aborted.includes(held.id); i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(approver.aborted.includes(held.id), 'the hold signal was aborted');
  assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3);
});
