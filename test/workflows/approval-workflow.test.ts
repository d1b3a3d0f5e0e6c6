// The approval workflow on a real Temporal dev server, with the real worker, activities, SQLite
// store and local channel: decisions are validated Updates, every attempt is audited.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from '@temporalio/worker';
import { join } from 'node:path';
import { LocalChannel } from '../../bots/local/local-channel.ts';
import { cancelSignal, claimUpdate, joinSignal, leaveSignal, resultSignal, stateQuery, type ApprovalResult, type ClaimResult } from '../../workflows/definitions.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { startApproval } from '../../workflows/start.ts';
import { runWorker, workflowBundle } from '../../workflows/worker.ts';
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

function decide(requestId: string, approver: string, decision: 'approve' | 'reject', reason?: string, grant?: { forMs: number; runs?: number }) {
  const groups: Record<string, string[]> = { alice: ['dba', 'engineers'], bob: ['dba'], dave: ['dba'], carol: ['dba'], mallory: ['engineers'], erin: ['oncall'] };
  return submitDecision(h.temporal.client, h.store, h.sign({ requestId, approver, approverGroups: groups[approver] ?? [], decision, reason, via: 'test', ...(grant ? { grant } : {}) }));
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

  test('once the run has completed, its own audit events are in the store: an auditor needs no wait', async () => {
    // Approved (the outcome, then the close once nothing is left to release) and rejected: each
    // read at once after the result, as an auditor's query right after the run closed would.
    const approved = await request();
    assert.equal((await decide(approved.id, 'bob', 'approve')).ok, true);
    assert.equal((await approved.handle.result()).outcome, 'approved');
    const kinds = h.store.listAudit(approved.id).map((e) => e.kind);
    assert.ok(kinds.includes('approval.outcome'), `approval.outcome missing at completion: ${kinds.join(', ')}`);
    assert.ok(kinds.includes('approval.closed'), `approval.closed missing at completion: ${kinds.join(', ')}`);

    const rejected = await request();
    assert.equal((await decide(rejected.id, 'bob', 'reject', 'not during the freeze')).ok, true);
    assert.equal((await rejected.handle.result()).outcome, 'rejected');
    const outcome = h.store.listAudit(rejected.id).find((e) => e.kind === 'approval.outcome');
    assert.equal(outcome?.detail.outcome, 'rejected');
    assert.equal(outcome?.actor, 'bob');

    // Written by the run itself now: the history replays deterministically with the same bundle.
    await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, await approved.handle.fetchHistory(), approved.id);
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

  test('when several review rules combined, an approver from each rule\'s groups is needed (not any one of the union)', async () => {
    const { id, handle } = await request({ approverGroups: ['dba', 'oncall'], quorum: 1, requireEach: [['dba'], ['oncall']] });
    assert.equal((await decide(id, 'bob', 'approve')).ok, true);
    assert.equal((await handle.query(stateQuery)).status, 'pending', 'a dba alone does not cover the on-call rule');
    assert.equal((await decide(id, 'erin', 'approve')).ok, true);
    const result: ApprovalResult = await handle.result();
    assert.equal(result.outcome, 'approved');
    assert.deepEqual(result.approvers, ['bob', 'erin']);
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
  test('search attributes also find requests by rejecter, rule and protocol', async () => {
    const { id, handle } = await request({ identity: 'erin' });
    await decide(id, 'dave', 'reject', 'not today');
    await handle.result();
    const found = await eventually(async () => {
      const ids: string[] = [];
      for await (const w of h.temporal.client.workflow.list({ query: `AirlockRejecter = "dave" AND AirlockRule = "review-prod-writes" AND AirlockProtocol = "postgres" AND AirlockOutcome = "rejected"` })) ids.push(w.workflowId);
      return ids.includes(id) ? ids : undefined;
    }, 10_000, 'visibility');
    assert.ok(found.includes(id));
  });

  test('approve once: of two holds waiting, concurrent claims release exactly one; the other is told the approval covered another session', async () => {
    const { id, handle } = await request();
    await handle.signal(joinSignal, { holdId: 'h-a', sessionId: 's-a' });
    await handle.signal(joinSignal, { holdId: 'h-b', sessionId: 's-b' });
    await eventually(async () => (await handle.query(stateQuery)).waiting === 2, 10_000, 'two waiting');
    assert.equal((await decide(id, 'bob', 'approve')).ok, true);
    const claims = await eventually(async () => {
      const [a, b] = await Promise.all(['h-a', 'h-b'].map((holdId) => handle.executeUpdate(claimUpdate, { args: [{ holdId }] })));
      return a.kind === 'pending' || b.kind === 'pending' ? undefined : [a, b];
    }, 10_000, 'claims answered');
    const released = claims.filter((c): c is Extract<ClaimResult, { kind: 'released' }> => c.kind === 'released');
    assert.equal(released.length, 1);
    assert.equal(released[0].release.use, 1);
    assert.equal(released[0].grant, undefined);
    const other = claims.find((c) => c.kind !== 'released');
    assert.equal(other?.kind, 'final');
    assert.match(other?.kind === 'final' ? other.reason : '', /approved once, and that approval released session s-[ab]/);

    // The released operation reports; the run records it and closes.
    await handle.signal(resultSignal, { summary: 'DELETE 1', sessionId: released[0].release.sessionId, tag: 'DELETE 1', rows: 1 });
    const result: ApprovalResult = await handle.result();
    assert.equal(result.releases?.length, 1);
    assert.deepEqual(result.waitersAtDecision?.sort(), ['h-a', 'h-b']);
    assert.equal(result.results?.[0].rows, 1);
    assert.match(result.closedBecause ?? '', /^approved once; released 1 run$/);
    await eventually(() => h.store.listAudit(id).some((e) => e.kind === 'approval.released'), 10_000, 'release audited');
    const closed = await eventually(() => h.store.listAudit(id).find((e) => e.kind === 'approval.closed'), 10_000, 'closure audited');
    assert.deepEqual({ releases: closed.detail.releases, results: closed.detail.results }, { releases: 1, results: 1 });
  });

  test('a grant of 2 runs: three concurrent later claims, exactly two released (uses 1 and 2)', async () => {
    const { id, handle } = await request({ grantTtlMs: 60_000 });
    assert.equal((await decide(id, 'bob', 'approve', undefined, { forMs: 30_000, runs: 2 })).ok, true);
    await eventually(async () => (await handle.query(stateQuery)).grant?.runs === 2, 10_000, 'grant in the view');
    for (const holdId of ['g-1', 'g-2', 'g-3']) await handle.signal(joinSignal, { holdId });
    const claims = await Promise.all(['g-1', 'g-2', 'g-3'].map((holdId) => handle.executeUpdate(claimUpdate, { args: [{ holdId }] })));
    const uses = claims.flatMap((c) => (c.kind === 'released' ? [c.release.use] : [])).sort();
    assert.deepEqual(uses, [1, 2]);
    for (const c of claims) if (c.kind === 'released') assert.deepEqual({ runs: c.grant?.runs, forMs: c.grant?.forMs, viaGrant: c.release.viaGrant }, { runs: 2, forMs: 30_000, viaGrant: true });
    assert.notEqual(claims.find((c) => c.kind !== 'released')?.kind, undefined);
    const thread = await eventually(() => {
      const t = (h.local.get(id)?.thread ?? []).filter((m) => m.kind === 'reply');
      return t.length === 2 ? t : undefined;
    }, 10_000, 'two grant uses posted to the thread');
    assert.deepEqual(thread.map((m) => m.text.replace(/ \(valid until .*\)/, '')).sort(), ['Run 1 of 2 released by the grant.', 'Run 2 of 2 released by the grant.']);
    await handle.cancel();
  });

  test('a grant needs every approver to choose one, and the rule to allow grants; otherwise it approves once', async () => {
    const noGrants = await request({ grantTtlMs: 0 });
    const refused = await decide(noGrants.id, 'bob', 'approve', undefined, { forMs: 30_000 });
    assert.equal(refused.ok, false, 'a rule without grantTtl allows approve-once only');
    assert.match(refused.ok ? '' : refused.error, /approve-once only/);
    assert.equal((await decide(noGrants.id, 'bob', 'approve')).ok, true);
    assert.equal((await noGrants.handle.result()).grant, undefined);

    const quorum = await request({ quorum: 2, grantTtlMs: 60_000 });
    await decide(quorum.id, 'bob', 'approve', undefined, { forMs: 30_000 });
    await decide(quorum.id, 'dave', 'approve');
    assert.equal((await quorum.handle.result()).grant, undefined);

    const both = await request({ quorum: 2, grantTtlMs: 60_000 });
    await decide(both.id, 'bob', 'approve', undefined, { forMs: 30_000, runs: 5 });
    // Longer than the rule's grantTtl is refused outright (the approver is told), not silently capped.
    const tooLong = await decide(both.id, 'dave', 'approve', undefined, { forMs: 90_000, runs: 3 });
    assert.equal(tooLong.ok, false);
    await decide(both.id, 'dave', 'approve', undefined, { forMs: 60_000, runs: 3 });
    const g = await eventually(async () => (await both.handle.query(stateQuery)).grant, 10_000, 'grant');
    assert.deepEqual(g, { forMs: 30_000, runs: 3 });
    await both.handle.cancel();
  });
  test('waiters are counted: a hold joining right after the last one left keeps the request alive; leaving for good cancels it', async () => {
    // Signals sent before any worker runs the request arrive in one batch: join A, leave A, join B.
    const queue = `${h.taskQueue}-late`;
    const input = approvalInput();
    const handle = await startApproval(h.temporal.client, queue, input);
    await handle.signal(joinSignal, { holdId: 'h-a', sessionId: 's-a' });
    await handle.signal(leaveSignal, { holdId: 'h-a', reason: 'cancelled by the client' });
    await handle.signal(joinSignal, { holdId: 'h-b', sessionId: 's-b' });
    const worker = await runWorker({ loaded: configFor(h.dir, h.temporal.address, queue), store: h.store, channels: [h.local], connection: h.temporal.native });
    try {
      await eventually(() => h.local.get(input.requestId), 10_000, 'posted');
      const state = await handle.query(stateQuery);
      assert.equal(state.status, 'pending');
      assert.equal(state.waiting, 1);
      await handle.signal(leaveSignal, { holdId: 'h-b', reason: 'cancelled by the client' });
      const result: ApprovalResult = await handle.result();
      assert.equal(result.outcome, 'cancelled');
      assert.equal(result.reason, 'cancelled by the client (all 2 waiting clients left)');
      assert.equal(result.closedBecause, 'every waiting hold left');
    } finally {
      await worker.shutdown();
    }
  });
});
