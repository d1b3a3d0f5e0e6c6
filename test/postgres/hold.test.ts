// Held (review) statements in the session machinery: the client is told it waits, only its
// session is parked (its pipeline queued behind the held statement, in order), and the
// outcome is enforced. The approval backend is a manual Approver so each test decides when
// and how a request is answered; the Temporal approver is tested with the workflows.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { approvalBindingKey } from '../../gateway/config/keys.ts';
import { auditDigestKey } from '../../gateway/recording/open.ts';
import { receiptBody } from '../../gateway/recording/receipt.ts';
import { parameterDigest } from '../../gateway/recording/redact.ts';
import { ManualApprover, type Pending } from '../support/manual-approver.ts';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { WireClient, cancelRequest, sendRaw, serialize } from '../support/pgwire.ts';

const approver = new ManualApprover('#db-approvals');
let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    approver,
    setup: `CREATE TABLE accounts (id int PRIMARY KEY, owner text);`,
    config: () => ({
      policy: {
        default: 'allow',
        rules: [
          { name: 'approve-deletes', match: { statements: ['DeleteStmt'] }, action: 'review', reason: 'deletes need a second pair of eyes', review: { approvers: ['dba'], timeout: '10m' } },
          {
            name: 'approve-updates-in-tx',
            match: { statements: ['UpdateStmt'] },
            action: 'review',
            reason: 'updates need review, even inside transactions',
            review: { approvers: ['dba'], timeout: '10m', holdInTransaction: true },
          },
        ],
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
    assert.deepEqual(notices, [
      `approval required: request ${held.id} created, posting to #db-approvals`,
      `approval required: request ${held.id} posted to #db-approvals, waiting up to 10 minutes`,
    ]);
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

test('rejected: AL001 naming who and why; the session stays usable', async () => {
  const c = await h.client();
  try {
    const running = c.query('DELETE FROM accounts WHERE id = 2');
    const held = await approver.next();
    held.resolve({ outcome: 'rejected', requestId: held.id, by: 'bob', reason: 'too risky' });
    await assert.rejects(running, (e: pg.DatabaseError) => e.code === 'AL001' && e.message === 'Airlock: approval rejected by bob: too risky');
    assert.equal((await c.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3);
  } finally {
    await c.end();
  }
});

test('expired, unavailable and cancelled outcomes carry distinct SQLSTATEs and say so', async () => {
  const c = await h.client();
  try {
    let running = c.query('DELETE FROM accounts');
    let held = await approver.next();
    held.resolve({ outcome: 'expired', requestId: held.id, reason: 'nobody answered within 10m' });
    await assert.rejects(running, (e: pg.DatabaseError) => e.code === 'AL002' && new RegExp(`approval request ${held.id} expired: nobody answered within 10m`).test(e.message));
    running = c.query('DELETE FROM accounts');
    held = await approver.next();
    held.resolve({ outcome: 'failed', requestId: held.id, reason: 'Temporal is unreachable' });
    await assert.rejects(running, (e: pg.DatabaseError) => e.code === 'AL003' && /approval could not be obtained \(rule approve-deletes\): Temporal is unreachable/.test(e.message));
    running = c.query('DELETE FROM accounts');
    held = await approver.next();
    held.resolve({ outcome: 'cancelled', requestId: held.id, reason: 'the approval covered another session' });
    await assert.rejects(running, (e: pg.DatabaseError) => e.code === 'AL005' && /was cancelled: the approval covered another session/.test(e.message));
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

test('extended protocol: an approval covers the statement AND its parameter values; new values are held again', async () => {
  const c = await h.client();
  try {
    const running = c.query({ name: 'del', text: 'DELETE FROM accounts WHERE id = $1', values: [1] });
    const held = await approver.next();
    assert.deepEqual(held.req.binding?.parameters, ['$1 = "1"'], 'the approver sees the exact values');
    approve(held);
    assert.equal((await running).rowCount, 1);
    // Same prepared statement, other value: a new request, nothing runs before it is decided.
    const again = c.query({ name: 'del', text: 'DELETE FROM accounts WHERE id = $1', values: [2] });
    const second = await approver.next();
    assert.deepEqual(second.req.binding?.parameters, ['$1 = "2"']);
    assert.notEqual(second.req.binding?.digest, held.req.binding?.digest, 'other values bind to another request');
    assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 2, 'id 2 not deleted before its approval');
    second.resolve({ outcome: 'rejected', requestId: second.id, by: 'bob', reason: 'not that one' });
    await assert.rejects(again, (e: pg.DatabaseError) => e.code === 'AL001');
    // And the same values again: approve-once means a new request too.
    const third = c.query({ name: 'del', text: 'DELETE FROM accounts WHERE id = $1', values: [1] });
    const t = await approver.next();
    assert.equal(t.req.binding?.digest, held.req.binding?.digest, 'same statement and values: same binding');
    approve(t);
    assert.equal((await third).rowCount, 0);
  } finally {
    await c.end();
  }
});

test('an array parameter approved for one id cannot delete others: the approval is bound to the array value', async () => {
  const c = await h.client();
  try {
    const one = c.query('DELETE FROM accounts WHERE id = ANY($1::int[])', [[1]]);
    const held = await approver.next();
    assert.deepEqual(held.req.binding?.parameters, ['$1 = "{\\"1\\"}"']);
    approve(held);
    assert.equal((await one).rowCount, 1);
    const all = c.query('DELETE FROM accounts WHERE id = ANY($1::int[])', [[2, 3]]);
    const next = await approver.next();
    assert.match(String(next.req.binding?.parameters), /2.*3/);
    next.resolve({ outcome: 'rejected', requestId: next.id, by: 'bob', reason: 'no bulk deletes' });
    await assert.rejects(all, (e: pg.DatabaseError) => e.code === 'AL001');
    assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 2);
  } finally {
    await c.end();
  }
});

test('parameter values shown to approvers have PII detectors applied; the audit keeps that form and a digest', async () => {
  const c = await h.client();
  try {
    const running = c.query("DELETE FROM accounts WHERE owner = $1 AND id > $2", ['ann.lee@example.com', 0]);
    const held = await approver.next();
    assert.deepEqual(held.req.binding?.parameters, ['$1 = "[redacted:email]"', '$2 = "0"']);
    assert.match(held.req.binding?.digest ?? '', /^[0-9a-f]{64}$/);
    approve(held);
    await running;
  } finally {
    await c.end();
  }
  const sessions = h.store.listSessions({ limit: 1 });
  const detail = h.store.getSession(sessions[0].id);
  const op = detail?.operations.find((o) => o.text.startsWith('DELETE FROM accounts WHERE owner'));
  assert.ok(op, 'the held DELETE is recorded');
  const binding = op.classification.binding as { parameters: string[]; digest: string };
  assert.deepEqual(binding.parameters, ['$1 = "[redacted:email]"', '$2 = "0"']);
  assert.ok(!JSON.stringify(detail).includes('ann.lee@example.com'), 'the raw value is not in the audit store');
  // An auditor holding the digest key can confirm the exact values; the receipt carries the digest.
  const key = auditDigestKey(h.loaded) ?? approvalBindingKey(h.loaded);
  assert.equal(op.classification.parameterDigest, parameterDigest(key, ['ann.lee@example.com', '0']));
  assert.notEqual(op.classification.parameterDigest, parameterDigest(key, ['ann.lee@example.com', '1']));
  const requestId = op.approval?.requestId;
  assert.ok(requestId);
  const receipt = receiptBody(h.store, requestId);
  assert.equal(receipt.operations.find((o) => o.text.startsWith('DELETE FROM accounts WHERE owner'))?.parametersDigest, op.classification.parameterDigest);
});

test('a CancelRequest (Ctrl-C) cancels the held statement: 57014, the request is cancelled, nothing runs later', async () => {
  const c = await h.client();
  try {
    const running = c.query('DELETE FROM accounts WHERE id = 3');
    const held = await approver.next();
    const key = c as unknown as { processID: number; secretKey: number };
    await sendRaw(h.gateway.port, cancelRequest(key.processID, key.secretKey));
    await assert.rejects(running, (e: pg.DatabaseError) => e.code === '57014' && /canceling statement due to user request: Airlock cancelled the held statement/.test(e.message));
    assert.ok(approver.aborted.includes(held.id), 'the approval request was cancelled');
    assert.match(approver.abortReasons.at(-1) ?? '', /cancelled by the client/);
    // A late approval changes nothing, and the session is still usable.
    approve(held);
    assert.equal((await c.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3);
  } finally {
    await c.end();
  }
});

test('a statement needing review inside an open transaction is refused (AL004) unless its rule opts in; the transaction is then told', async () => {
  const c = await h.client();
  try {
    await c.query('BEGIN');
    await c.query('SELECT * FROM accounts WHERE id = 1 FOR UPDATE');
    await assert.rejects(c.query('DELETE FROM accounts WHERE id = 1'), (e: pg.DatabaseError) => e.code === 'AL004' && /inside an open transaction would keep the transaction's locks/.test(e.message));
    assert.equal(approver.pending.length, 0, 'nothing was posted');
    await c.query('ROLLBACK');
    // A rule with holdInTransaction: true holds it, and the approver is told the transaction is open.
    await c.query('BEGIN');
    const running = c.query("UPDATE accounts SET owner = 'zed' WHERE id = 1");
    const held = await approver.next();
    assert.match(String(held.req.binding?.details), /held inside a transaction open since \d{4}-/);
    approve(held);
    assert.equal((await running).rowCount, 1);
    await c.query('COMMIT');
  } finally {
    await c.end();
  }
});

test('extended-protocol pipelines: statements already executed before the held one count as an open transaction', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    const out = await w.roundtrip([
      serialize.parse({ text: "SELECT * FROM accounts WHERE id = 2 FOR UPDATE" }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.parse({ text: 'DELETE FROM accounts WHERE id = 2' }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.sync(),
    ]);
    const err = out.find((m) => m.name === 'error') as unknown as { code: string } | undefined;
    assert.equal(err?.code, 'AL004');
    assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3);
  } finally {
    w.end();
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

test('SQL EXECUTE of a statement prepared through the protocol cannot skip its hold', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    // Parse alone runs nothing (the review happens at Bind, with the values).
    let out = await w.roundtrip([serialize.parse({ name: 'del_one', text: 'DELETE FROM accounts WHERE id = $1', types: [23] }), serialize.sync()]);
    assert.deepEqual(out.map((m) => m.name), ['parseComplete', 'readyForQuery']);
    out = await w.roundtrip([serialize.query('EXECUTE del_one(1)')]);
    const err = out.find((m) => m.name === 'error') as unknown as { code: string; message: string } | undefined;
    assert.equal(err?.code, '42501');
    assert.match(err?.message ?? '', /EXECUTE of prepared statement "del_one" would bypass its approval/);
    assert.equal(approver.pending.length, 0);
    assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3);
  } finally {
    w.end();
  }
});
