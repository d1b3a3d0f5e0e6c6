// The approval workflow on a real Temporal dev server, with the real worker, activities, SQLite
// store and local channel: decisions are validated Updates, every attempt is audited.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { LocalChannel } from '../../bots/local/local-channel.ts';
import { cancelSignal, stateQuery, type ApprovalResult } from '../../workflows/definitions.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { startApproval } from '../../workflows/start.ts';
import { runWorker } from '../../workflows/worker.ts';
import { approvalInput, configFor, eventually, startHarness, type Harness } from './harness.ts';

let h: Harness;
before(async () => {
  h = await startHarness();
});
after(async () => {
  await h?.close();
});

/** Starts a request and waits until the local channel shows it (the post activity ran). */
async function request(overrides: Parameters<typeof approvalInput>[0] = {}) {
  const input = approvalInput(overrides);
  const handle = await startApproval(h.temporal.client, h.taskQueue, input);
  await eventually(() => h.local.get(input.requestId), 10_000, 'the request to be posted');
  return { input, handle, id: input.requestId };
}

function decide(requestId: string, approver: string, decision: 'approve' | 'reject', reason?: string) {
  const groups: Record<string, string[]> = { alice: ['dba', 'engineers'], bob: ['dba'], dave: ['dba'], carol: ['dba'], mallory: ['engineers'], erin: ['oncall'] };
  return submitDecision(h.temporal.client, h.store, { requestId, approver, approverGroups: groups[approver] ?? [], decision, reason, via: 'test' });
}

describe('approval workflow', () => {
  test('posts the request, and one approval from an approver group member approves it (quorum 1)', async () => {
    const { id, handle } = await request();
    const posted = h.local.get(id);
    assert.equal(posted?.request.view.status, 'pending');
    assert.equal(posted?.request.view.identity, 'alice');
    assert.equal(posted?.request.view.text, 'DELETE FROM customers WHERE id = 42');

    const r = await decide(id, 'bob', 'approve');
    assert.equal(r.ok, true);
    assert.equal(r.ok && r.view.status, 'approved');

    const result: ApprovalResult = await handle.result();
    assert.equal(result.outcome, 'approved');
    assert.deepEqual(result.approvers, ['bob']);
    assert.deepEqual(result.refs.map((x) => x.kind), ['local']);

    // The chat message is updated after the decision, and the whole story is in the audit store.
    const updated = await eventually(() => (h.local.get(id)?.request.view.status === 'approved' ? h.local.get(id) : undefined), 10_000, 'message update');
    assert.deepEqual(updated.request.view.decidedBy, ['bob']);
    const kinds = await eventually(() => {
      const k = h.store.listAudit(id).map((e) => e.kind);
      return k.includes('approval.outcome') ? k : undefined;
    });
    assert.ok(kinds.includes('approval.posted'));
    assert.ok(kinds.includes('approval.decision'));
    const outcome = h.store.listAudit(id).find((e) => e.kind === 'approval.outcome');
    assert.equal(outcome?.detail.outcome, 'approved');
  });

  test('a rejection needs a reason; one reject rejects the request with who and why', async () => {
    const { id, handle } = await request();
    const noReason = await decide(id, 'bob', 'reject');
    assert.deepEqual(noReason, { ok: false, error: 'a rejection needs a reason' });

    const r = await decide(id, 'bob', 'reject', 'use a soft delete');
    assert.equal(r.ok, true);
    const result: ApprovalResult = await handle.result();
    assert.equal(result.outcome, 'rejected');
    assert.equal(result.rejectedBy, 'bob');
    assert.equal(result.reason, 'use a soft delete');

    const late = await decide(id, 'dave', 'approve');
    assert.equal(late.ok, false);
    assert.match(late.ok ? '' : late.error, /no longer pending \(rejected by bob\)/);
  });

  test('the requester cannot approve their own request, and the refused attempt is audited', async () => {
    const { id, handle } = await request({ identity: 'alice' });
    const r = await decide(id, 'alice', 'approve');
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.error, /alice requested this operation and cannot approve it/);

    const refused = h.store.listAudit(id).filter((e) => e.kind === 'approval.decision-refused');
    assert.equal(refused.length, 1);
    assert.equal(refused[0].actor, 'alice');
    assert.match(String(refused[0].detail.error), /cannot approve/);
    const state = await handle.query(stateQuery);
    assert.equal(state.status, 'pending');
    assert.deepEqual(state.decidedBy, []);
    await handle.signal(cancelSignal, { reason: 'test done' });
  });

  test('the human owner of the requesting agent cannot approve its requests', async () => {
    const { id, handle } = await request({ identity: 'agent-x', owner: 'carol' });
    const r = await decide(id, 'carol', 'approve');
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.error, /carol owns the requesting agent agent-x/);
    assert.equal((await handle.query(stateQuery)).status, 'pending');
    await handle.signal(cancelSignal, { reason: 'test done' });
  });

  test('someone outside the approver groups is refused', async () => {
    const { id, handle } = await request();
    const r = await decide(id, 'mallory', 'approve');
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.error, /mallory is not in an approver group for this request \(needs one of: dba; mallory is in: engineers\)/);
    const r2 = await decide(id, 'mallory', 'reject', 'no');
    assert.equal(r2.ok, false);
    assert.equal(h.store.listAudit(id).filter((e) => e.kind === 'approval.decision-refused').length, 2);
    await handle.signal(cancelSignal, { reason: 'test done' });
  });

  test('a quorum of two needs two distinct approvers: the same approver twice counts once', async () => {
    const { id, handle } = await request({ quorum: 2 });
    const first = await decide(id, 'bob', 'approve');
    assert.equal(first.ok && first.view.status, 'pending');
    assert.deepEqual(first.ok && first.view.decidedBy, ['bob']);

    const again = await decide(id, 'bob', 'approve');
    assert.equal(again.ok, false);
    assert.match(again.ok ? '' : again.error, /bob already approved; quorum needs 2 distinct approvers \(1\/2 so far\)/);
    assert.equal((await handle.query(stateQuery)).status, 'pending');

    const second = await decide(id, 'dave', 'approve');
    assert.equal(second.ok && second.view.status, 'approved');
    const result: ApprovalResult = await handle.result();
    assert.equal(result.outcome, 'approved');
    assert.deepEqual(result.approvers, ['bob', 'dave']);
  });

  test('escalates at each step, then expires at the deadline (a rejection)', async () => {
    const { id, handle } = await request({ timeoutMs: 3000, escalation: [{ afterMs: 1000, mention: ['oncall'], channel: '#oncall' }] });
    const result: ApprovalResult = await handle.result();
    assert.equal(result.outcome, 'expired');
    assert.match(result.reason ?? '', /no decision within 3s, after escalation/);

    const thread = h.local.get(id)?.thread ?? [];
    const esc = thread.find((m) => m.kind === 'escalated');
    assert.ok(esc, 'an escalation message in the thread');
    assert.match(esc.text, /@oncall in #oncall/);
    const escalatedAudit = h.store.listAudit(id).find((e) => e.kind === 'approval.escalated');
    assert.deepEqual(escalatedAudit?.detail.mention, ['oncall']);
    const final = await eventually(() => (h.local.get(id)?.request.view.status === 'expired' ? h.local.get(id) : undefined), 10_000, 'expired message');
    assert.equal(final.request.view.escalated, true);

    const late = await decide(id, 'bob', 'approve');
    assert.equal(late.ok, false);
  });

  test('a cancel signal (client gone) cancels the request and updates the message', async () => {
    const { id, handle } = await request();
    await handle.signal(cancelSignal, { reason: 'client disconnected' });
    const result: ApprovalResult = await handle.result();
    assert.equal(result.outcome, 'cancelled');
    assert.equal(result.reason, 'client disconnected');
    await eventually(() => h.local.get(id)?.request.view.status === 'cancelled', 10_000, 'cancelled message');
    const r = await decide(id, 'bob', 'approve');
    assert.match(r.ok ? '' : r.error, /no longer pending \(cancelled\)/);
  });

  test('a Temporal cancellation request also ends as cancelled, with the message updated', async () => {
    const { id, handle } = await request();
    await handle.cancel();
    const result: ApprovalResult = await handle.result();
    assert.equal(result.outcome, 'cancelled');
    await eventually(() => h.local.get(id)?.request.view.status === 'cancelled', 10_000, 'cancelled message');
  });

  test('a request that cannot be posted anywhere fails closed', async () => {
    // This worker has only the local channel: posting to Slack fails permanently, at once.
    const input = approvalInput({ channels: ['slack'] });
    const handle = await startApproval(h.temporal.client, h.taskQueue, input);
    const result: ApprovalResult = await handle.result();
    assert.equal(result.outcome, 'failed');
    assert.match(result.reason ?? '', /could not post the approval request.*no slack approval channel is configured on this worker.*failing closed/);
    assert.deepEqual(result.refs, []);
  });

  test('a channel that keeps failing is retried with backoff until the deadline, then the request fails closed', async () => {
    // A second worker whose local channel's database is gone: every post attempt fails (retryably).
    const broken = LocalChannel.open(join(h.dir, 'broken.db'));
    broken.close();
    const loaded = configFor(h.dir, h.temporal.address, `${h.taskQueue}-broken`);
    const worker = await runWorker({ loaded, store: h.store, channels: [broken], connection: h.temporal.native });
    try {
      const input = approvalInput({ timeoutMs: 3500 });
      const t0 = Date.now();
      const result: ApprovalResult = await (await startApproval(h.temporal.client, `${h.taskQueue}-broken`, input)).result();
      assert.equal(result.outcome, 'failed');
      assert.match(result.reason ?? '', /could not post the approval request by the deadline \(post request via local: The database connection is not open\); failing closed/);
      assert.ok(Date.now() - t0 >= 3000, 'kept trying until the deadline');
      const attempts = h.store.listAudit(input.requestId).filter((e) => e.kind === 'approval.chat-error');
      assert.ok(attempts.length >= 2, `retried (${attempts.length} attempts)`);
      assert.equal(attempts[0].detail.retryable, true);
      assert.match(String(attempts[0].detail.error), /post request via local: .*not open/);
    } finally {
      await worker.shutdown();
    }
  });

  test('search attributes let auditors find requests by requester, connection, outcome and approvers', async () => {
    const { id, handle } = await request({ identity: 'erin' });
    await decide(id, 'dave', 'approve');
    await handle.result();
    const found = await eventually(async () => {
      const ids: string[] = [];
      for await (const w of h.temporal.client.workflow.list({ query: `AirlockRequester = "erin" AND AirlockConnection = "prod" AND AirlockOutcome = "approved" AND AirlockApprovers = "dave"` })) ids.push(w.workflowId);
      return ids.length > 0 ? ids : undefined;
    }, 10_000, 'visibility');
    assert.deepEqual(found, [id]);
  });
});
