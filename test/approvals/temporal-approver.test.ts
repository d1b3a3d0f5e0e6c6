// The gateway's TemporalApprover against a real Temporal dev server and the real worker, local
// channel and SQLite store: deterministic re-attach, grants, cancel on disconnect, fail closed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Client, Connection } from '@temporalio/client';
import type { HoldPosted, HoldRequest } from '../../gateway/approvals/approver.ts';
import { TemporalApprover, approvalRequestId } from '../../gateway/approvals/temporal-approver.ts';
import type { Operation } from '../../gateway/policy/operation.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { freePort } from '../support/net.ts';
import { eventually, startHarness, type Harness } from '../workflows/harness.ts';

let h: Harness;
let approver: TemporalApprover;
before(async () => {
  h = await startHarness();
  approver = new TemporalApprover({ client: h.temporal.client, taskQueue: h.taskQueue, store: h.store, channelsDescription: 'the local channel' });
});
after(async () => {
  await h?.close();
});

let sessions = 0;
function holdRequest(text: string, review: Partial<HoldRequest['review']> = {}, identity = 'agent-x'): HoldRequest {
  const operation: Operation = {
    protocol: 'postgres',
    identity: { name: identity, groups: ['agents'], owner: 'carol' },
    connection: { name: 'prod', clientAddress: '127.0.0.1:5555', sessionId: `sess-${++sessions}` },
    kind: 'write',
    text,
    tables: ['public.customers'],
    functions: [],
  };
  return {
    operation,
    rule: 'review-prod-writes',
    reason: 'writes on prod need a DBA',
    review: { approvers: ['dba'], quorum: 1, timeoutMs: 60_000, escalation: [], grantTtlMs: 60_000, ...review },
  };
}

function postCount(requestId: string): number {
  const got = h.local.get(requestId);
  return got ? got.thread.filter((m) => m.kind === 'posted').length : 0;
}

function approve(requestId: string, approver = 'bob') {
  return submitDecision(h.temporal.client, h.store, { requestId, approver, approverGroups: ['dba'], decision: 'approve', via: 'test' });
}

describe('TemporalApprover', () => {
  test('request ids are deterministic per identity, connection and exact statement', () => {
    const a = holdRequest('DELETE FROM customers WHERE id = 1').operation;
    const b = { ...holdRequest('  DELETE FROM customers WHERE id = 1 ; ').operation, connection: { ...a.connection, sessionId: 'other' } };
    const c = holdRequest('DELETE FROM customers WHERE id = 2').operation;
    assert.equal(approvalRequestId(a), approvalRequestId(b));
    assert.notEqual(approvalRequestId(a), approvalRequestId(c));
    assert.notEqual(approvalRequestId(a), approvalRequestId({ ...a, identity: { ...a.identity, name: 'agent-y' } }));
    assert.match(approvalRequestId(a), /^airlock-[0-9a-f]{16}$/);
  });

  test('a second hold of the same operation re-attaches to the pending request (one workflow, one post); an approval then grants retries', async () => {
    const req = holdRequest('DELETE FROM customers WHERE id = 10');
    const posted: HoldPosted[] = [];
    const first = approver.hold(req, (p) => posted.push(p), new AbortController().signal);
    await eventually(() => posted.length === 1, 10_000, 'first onPosted');
    assert.equal(posted[0].reattached, false);
    assert.equal(posted[0].channel, 'the local channel');
    assert.ok(posted[0].deadline.getTime() > Date.now() + 50_000, 'deadline about 60 s ahead');

    // Same operation while pending, from a second gateway process (its own Temporal connection).
    const connection = await Connection.connect({ address: h.temporal.address });
    const gateway2 = new TemporalApprover({ client: new Client({ connection }), taskQueue: h.taskQueue, store: h.store, channelsDescription: 'the local channel' });
    const second = gateway2.hold(holdRequest('DELETE FROM customers WHERE id = 10'), (p) => posted.push(p), new AbortController().signal);
    await eventually(() => posted.length === 2, 10_000, 'second onPosted');
    assert.equal(posted[1].reattached, true);
    assert.equal(posted[1].requestId, posted[0].requestId);
    assert.equal(postCount(posted[0].requestId), 1);
    const runs = await eventually(async () => {
      const ids: string[] = [];
      for await (const w of h.temporal.client.workflow.list({ query: `WorkflowId = "${posted[0].requestId}"` })) ids.push(w.runId);
      return ids.length > 0 ? ids : undefined;
    }, 10_000, 'visibility');
    assert.equal(runs.length, 1, 'one workflow run');

    const d = await approve(posted[0].requestId);
    assert.equal(d.ok, true);
    const [o1, o2] = await Promise.all([first, second]);
    assert.deepEqual(o1, { outcome: 'approved', requestId: posted[0].requestId, approvers: ['bob'], viaGrant: false });
    assert.deepEqual(o2, o1);
    await connection.close();

    // A retry within the grant TTL runs without a new request.
    const retried = await approver.hold(holdRequest('DELETE FROM customers WHERE id = 10'), () => assert.fail('a grant posts nothing'), new AbortController().signal);
    assert.deepEqual(retried, { outcome: 'approved', requestId: posted[0].requestId, approvers: ['bob'], viaGrant: true });
    assert.equal(postCount(posted[0].requestId), 1);
    assert.ok(h.store.listAudit(posted[0].requestId).some((e) => e.kind === 'approval.grant-used'));
  });

  test('concurrent holds of a new operation start one request between them', async () => {
    const ids: string[] = [];
    const holds = [1, 2, 3].map(() => approver.hold(holdRequest('DELETE FROM customers WHERE id = 11'), (p) => ids.push(p.requestId), new AbortController().signal));
    await eventually(() => ids.length === 3, 10_000, 'all three told they wait');
    assert.equal(new Set(ids).size, 1);
    assert.equal(postCount(ids[0]), 1);
    await approve(ids[0]);
    for (const o of await Promise.all(holds)) assert.equal(o.outcome, 'approved');
  });

  test('an approval past its grant TTL, or a rejection, does not block a fresh request', async () => {
    const req = holdRequest('UPDATE customers SET tier = 1 WHERE id = 7', { grantTtlMs: 1 });
    let id = '';
    const first = approver.hold(req, (p) => (id = p.requestId), new AbortController().signal);
    await eventually(() => id !== '', 10_000, 'posted');
    assert.equal((await submitDecision(h.temporal.client, h.store, { requestId: id, approver: 'bob', approverGroups: ['dba'], decision: 'reject', reason: 'not now', via: 'test' })).ok, true);
    assert.deepEqual(await first, { outcome: 'rejected', requestId: id, by: 'bob', reason: 'not now' });

    let again: HoldPosted | undefined;
    const second = approver.hold(req, (p) => (again = p), new AbortController().signal);
    await eventually(() => again, 10_000, 'second request posted');
    assert.equal(again?.requestId, id);
    assert.equal(again?.reattached, false);
    assert.equal(h.local.get(id)?.request.view.status, 'pending');
    await approve(id);
    assert.equal((await second).outcome, 'approved');

    // grantTtlMs 1: the approval does not carry over to a third try.
    let third: HoldPosted | undefined;
    const p3 = approver.hold(req, (p) => (third = p), new AbortController().signal);
    await eventually(() => third, 10_000, 'third request posted');
    assert.equal(third?.reattached, false);
    await approve(id, 'dave');
    const o3 = await p3;
    assert.equal(o3.outcome === 'approved' && o3.viaGrant, false);
  });

  test('aborting the hold (client gone) cancels the request and updates the message', async () => {
    const ac = new AbortController();
    let id = '';
    const held = approver.hold(holdRequest('DELETE FROM customers WHERE id = 20'), (p) => (id = p.requestId), ac.signal);
    await eventually(() => id !== '', 10_000, 'posted');
    ac.abort();
    const o = await held;
    assert.equal(o.outcome, 'cancelled');
    assert.match(o.outcome === 'cancelled' ? o.reason : '', /client disconnected/);
    await eventually(() => h.local.get(id)?.request.view.status === 'cancelled', 10_000, 'cancelled message');
  });

  test('expiry comes back as an expired outcome', async () => {
    const o = await approver.hold(holdRequest('DELETE FROM customers WHERE id = 30', { timeoutMs: 1500 }), () => undefined, new AbortController().signal);
    assert.equal(o.outcome, 'expired');
    assert.match(o.outcome === 'expired' ? o.reason : '', /no decision within 1500ms/);
  });

  test('the held result and the session log go to the request thread', async () => {
    const req = holdRequest('DELETE FROM customers WHERE id = 40');
    const sid = req.operation.connection.sessionId;
    h.store.startSession({ id: sid, protocol: 'postgres', identity: 'agent-x', groups: ['agents'], connection: 'prod', clientAddress: '127.0.0.1:5555', startedAt: new Date() });
    let id = '';
    const held = approver.hold(req, (p) => (id = p.requestId), new AbortController().signal);
    await eventually(() => id !== '', 10_000, 'posted');
    await approve(id);
    assert.equal((await held).outcome, 'approved');
    h.store.recordOperation({
      sessionId: sid,
      seq: 1,
      at: new Date(),
      text: req.operation.text,
      kind: 'write',
      classification: {},
      decision: 'review',
      rule: req.rule,
      rows: 1,
      maskedColumns: [],
      durationMs: 3,
      approval: { requestId: id, outcome: 'approved', approvers: ['bob'] },
    });
    await approver.reportResult({ requestId: id, summary: 'DELETE 1 (3 ms)' });
    await approver.sessionEnded(sid, [id]);
    const thread = await eventually(() => {
      const t = h.local.get(id)?.thread ?? [];
      return t.some((m) => m.kind === 'reply') && t.some((m) => m.kind === 'log') ? t : undefined;
    }, 15_000, 'reply and log in the thread');
    assert.equal(thread.find((m) => m.kind === 'reply')?.text, 'DELETE 1 (3 ms)');
    const logMsg = thread.find((m) => m.kind === 'log');
    assert.equal(logMsg?.filename, `airlock-session-${sid}.log`);
    assert.match(logMsg?.content ?? '', /DELETE FROM customers WHERE id = 40/);
  });

  test('Temporal unreachable: the hold fails closed quickly with a clear reason', async () => {
    const port = await freePort(); // nothing listens there
    const client = new Client({ connection: Connection.lazy({ address: `127.0.0.1:${port}` }), namespace: 'default' });
    const down = new TemporalApprover({ client, taskQueue: 'nowhere', store: h.store, channelsDescription: 'local', startTimeoutMs: 1500 });
    const t0 = Date.now();
    const o = await down.hold(holdRequest('DROP TABLE customers'), () => assert.fail('nothing can be posted'), new AbortController().signal);
    const took = Date.now() - t0;
    assert.equal(o.outcome, 'failed');
    assert.match(o.outcome === 'failed' ? o.reason : '', /approval required by rule review-prod-writes, but the approval service \(Temporal\) is unreachable.*failing closed/);
    assert.ok(took < 5000, `took ${took} ms`);
    assert.ok(h.store.listAudit(o.requestId).some((e) => e.kind === 'approval.failed'));
    await client.connection.close();
  });

  test('shutting down while calls to an unreachable Temporal are still retrying is clean (drain, then close)', async () => {
    const port = await freePort();
    const client = new Client({ connection: Connection.lazy({ address: `127.0.0.1:${port}` }), namespace: 'default' });
    const down = new TemporalApprover({ client, taskQueue: 'nowhere', store: h.store, channelsDescription: 'local', startTimeoutMs: 1500 });
    // The session-end log goes out in the background when a session closes; the gateway may be stopping at that moment.
    const sent = down.sessionEnded('no-such-session', ['airlock-0000000000000000']);
    await new Promise((r) => setTimeout(r, 200));
    await down.drain();
    await client.connection.close();
    await sent;
    // Closing under a pending SDK retry used to throw "Channel has been shut down" from a timer.
    await new Promise((r) => setTimeout(r, 2500));
  });
});
