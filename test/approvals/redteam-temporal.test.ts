// Red team, approvals: someone who can reach Temporal (no mTLS/API key) but holds no decision
// key. Decisions need a signed proof (test/workflows/decision-proof.test.ts); here the attacker
// instead starts the approval run itself under the request id the held client was shown, so the
// gateway joins it (USE_EXISTING) and follows what the attacker chose: what the approver reads, the
// quorum, the approver groups, the grant length, or a task queue whose worker answers anything.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { type HoldRequest } from '../../gateway/approvals/approver.ts';
import { TemporalApprover, approvalRequestId } from '../../gateway/approvals/temporal-approver.ts';
import type { Operation } from '../../gateway/policy/operation.ts';
import { submitDecision } from '../../workflows/decide.ts';
import type { ApprovalInput } from '../../workflows/definitions.ts';
import { runInputMismatch } from '../../workflows/run-check.ts';
import { startApproval } from '../../workflows/start.ts';
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
function holdRequest(text: string, review: Partial<HoldRequest['review']> = {}): HoldRequest {
  const operation: Operation = {
    protocol: 'postgres',
    identity: { name: 'agent-x', groups: ['agents'], owner: 'carol' },
    connection: { name: 'prod', clientAddress: '127.0.0.1:5555', sessionId: `rt-${++sessions}` },
    kind: 'write',
    text,
    tables: ['public.customers'],
    functions: [],
  };
  return { operation, rule: 'review-prod-writes', reason: 'writes on prod need a DBA', review: { approvers: ['dba'], quorum: 2, timeoutMs: 60_000, escalation: [], grantTtlMs: 0, ...review } };
}

/** The input an attacker starts under the real request id: the real workflow, a harmless text, one approver, a day-long grant. */
function forgedInput(requestId: string): ApprovalInput {
  return {
    requestId,
    operation: { protocol: 'postgres', connection: 'prod', identity: 'agent-x', owner: 'carol', groups: ['agents'], text: 'SELECT 1', kind: 'read', tables: [], rule: 'review-prod-writes', reason: 'routine check' },
    approverGroups: ['dba', 'engineers'],
    quorum: 1,
    timeoutMs: 60_000,
    escalation: [],
    grantTtlMs: 86_400_000,
  };
}

describe('approval runs started by someone else under a request id', () => {
  test('a forged run of the real workflow (harmless text, quorum 1, day-long grants) is not followed: the hold fails closed and is audited', async () => {
    const req = holdRequest('DELETE FROM customers WHERE id > 0');
    const id = approvalRequestId(req.operation);
    await startApproval(h.temporal.client, h.taskQueue, forgedInput(id));
    const outcome = approver.hold(req, () => undefined, new AbortController().signal);
    // One DBA approves what they were shown ("SELECT 1"), with a grant: before the fix this released the DELETE.
    await eventually(() => h.local.get(id), 10_000, 'the forged request is posted');
    const approved = await submitDecision(h.temporal.client, h.store, h.sign({ requestId: id, approver: 'bob', approverGroups: ['dba'], decision: 'approve', via: 'test', grant: { forMs: 3_600_000 } })).catch((e: Error) => ({ ok: false, error: e.message }));
    void approved;
    const o = await outcome;
    assert.equal(o.outcome, 'failed', JSON.stringify(o));
    assert.match(o.outcome === 'failed' ? o.reason : '', /not started for this operation \(its operation text differs\)/);
    assert.ok(h.store.listAudit(id).some((e) => e.kind === 'approval.run-mismatch'));
    await h.temporal.client.workflow.getHandle(id).terminate('test cleanup');
  });

  test('a run on another task queue (whose worker could answer claim with "released") is not followed', async () => {
    const req = holdRequest('DELETE FROM customers WHERE id > 1');
    const id = approvalRequestId(req.operation);
    // The exact input the gateway would send, so only the task queue differs.
    const real: ApprovalInput = { ...forgedInput(id), operation: { ...forgedInput(id).operation, text: req.operation.text, kind: 'write', tables: ['public.customers'], reason: req.reason }, approverGroups: ['dba'], quorum: 2, grantTtlMs: 0 };
    await startApproval(h.temporal.client, 'attacker-queue', real);
    const started = Date.now();
    const o = await approver.hold(req, () => undefined, new AbortController().signal);
    assert.equal(o.outcome, 'failed', JSON.stringify(o));
    assert.match(o.outcome === 'failed' ? o.reason : '', /task queue attacker-queue/);
    assert.ok(Date.now() - started < 30_000, 'refused at once, not after the deadline');
    await h.temporal.client.workflow.getHandle(id).terminate('test cleanup');
  });

  test('a run another gateway started for the same operation is joined (same input, other session)', async () => {
    const a = holdRequest('UPDATE customers SET tier = 2 WHERE id = 3', { quorum: 1 });
    const b = holdRequest('UPDATE customers SET tier = 2 WHERE id = 3', { quorum: 1 });
    const posted: boolean[] = [];
    const first = approver.hold(a, (p) => posted.push(p.reattached), new AbortController().signal);
    await eventually(() => posted.length === 1, 10_000, 'first posted');
    const second = approver.hold(b, (p) => posted.push(p.reattached), new AbortController().signal);
    await eventually(() => posted.length === 2, 10_000, 'second joined');
    assert.deepEqual(posted, [false, true]);
    const id = approvalRequestId(a.operation);
    await submitDecision(h.temporal.client, h.store, h.sign({ requestId: id, approver: 'bob', approverGroups: ['dba'], decision: 'approve', via: 'test' }));
    const outcomes = (await Promise.all([first, second])).map((o) => o.outcome).sort();
    assert.deepEqual(outcomes, ['approved', 'cancelled']);
  });

  test('runInputMismatch: only an input as strict as the hold’s own stands for it', () => {
    const want: ApprovalInput = { ...forgedInput('airlock-x'), operation: { ...forgedInput('airlock-x').operation, text: 'DELETE FROM t WHERE id = 1', digest: 'd1' }, approverGroups: ['dba'], quorum: 2, grantTtlMs: 0 };
    assert.equal(runInputMismatch(want, { ...want, operation: { ...want.operation, sessionId: 'other', details: ['transaction open since 10:00'] } }), undefined);
    assert.equal(runInputMismatch(want, { ...want, quorum: 3, timeoutMs: 1000 }), undefined, 'stricter is fine');
    assert.match(runInputMismatch(want, { ...want, quorum: 1 }) ?? '', /quorum/);
    assert.match(runInputMismatch(want, { ...want, approverGroups: ['dba', 'engineers'] }) ?? '', /approver groups/);
    assert.match(runInputMismatch(want, { ...want, grantTtlMs: 1 }) ?? '', /longer grants/);
    assert.match(runInputMismatch(want, { ...want, operation: { ...want.operation, digest: 'd2' } }) ?? '', /digest/);
    assert.match(runInputMismatch(want, { ...want, operation: { ...want.operation, parameters: ['1'] } }) ?? '', /parameters/);
    assert.match(runInputMismatch(want, { ...want, channel: '#elsewhere' }) ?? '', /channels/);
    assert.match(runInputMismatch(want, undefined) ?? '', /not an approval request/);
  });
});
