// Waiter leases in the approval workflow, on a real Temporal dev server with the real worker, store
// and local channel: a hold whose gateway stops renewing its lease is gone; when the last one goes a
// pending request ends `abandoned`, the approvers' message says so, and approving it is refused
// with a clear message. Runs with leases replay deterministically.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from '@temporalio/worker';
import { joinSignal, leaveSignal, renewSignal, stateQuery, type ApprovalResult } from '../../workflows/definitions.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { startApproval } from '../../workflows/start.ts';
import { workflowBundle } from '../../workflows/worker.ts';
import { approvalInput, eventually, startHarness, type Harness } from './harness.ts';

let h: Harness;
before(async () => {
  h = await startHarness();
});
after(async () => {
  await h?.close();
});

const LEASE_MS = 1500;

async function request() {
  const input = approvalInput();
  const handle = await startApproval(h.temporal.client, h.taskQueue, input);
  await eventually(() => h.local.get(input.requestId), 10_000, 'the request to be posted');
  return { handle, id: input.requestId };
}

function approve(requestId: string) {
  return submitDecision(h.temporal.client, h.store, h.sign({ requestId, approver: 'bob', approverGroups: ['dba'], decision: 'approve', via: 'test' }));
}

describe('waiter leases', () => {
  test('a hold whose lease lapses is gone; when the last one goes the request ends abandoned, the message says so, and approving is refused', async () => {
    const { handle, id } = await request();
    await handle.signal(joinSignal, { holdId: 'kept', sessionId: 's-1', leaseMs: LEASE_MS });
    await handle.signal(joinSignal, { holdId: 'crashed', sessionId: 's-2', leaseMs: LEASE_MS });
    // One gateway keeps renewing; the other died without a word.
    const renewing = setInterval(() => void handle.signal(renewSignal, { holdIds: ['kept'] }).catch(() => undefined), LEASE_MS / 4);
    try {
      await eventually(async () => (await handle.query(stateQuery)).waiting === 1, 15_000, 'the crashed hold to be dropped');
      await new Promise((r) => setTimeout(r, LEASE_MS));
      const v = await handle.query(stateQuery);
      assert.equal(v.status, 'pending', 'a hold still waits: the request stays open');
      assert.equal(v.waiting, 1);
    } finally {
      clearInterval(renewing);
    }
    const stoppedAt = Date.now();
    const result: ApprovalResult = await handle.result();
    assert.equal(result.outcome, 'abandoned');
    assert.match(result.reason ?? '', /stopped renewing its lease/);
    // Bounded: the lease plus scheduling, not the request's 60 s deadline.
    assert.ok(Date.now() - stoppedAt < 30_000, `abandoned ${Date.now() - stoppedAt} ms after the last renewal`);

    const shown = await eventually(() => (h.local.get(id)?.request.view.status === 'abandoned' ? h.local.get(id) : undefined), 10_000, 'the message to show abandoned');
    assert.match(shown.request.view.decisionReason ?? '', /stopped renewing/);
    const r = await approve(id);
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.error, new RegExp(`request ${id} was abandoned: .*Approving it would run nothing`));
    const outcome = await eventually(() => h.store.listAudit(id).find((e) => e.kind === 'approval.outcome'), 10_000, 'the audited outcome');
    assert.equal(outcome.detail.outcome, 'abandoned');

    // The lease timers are workflow timers: the history replays without non-determinism.
    const history = await handle.fetchHistory();
    await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, id);
  });

  test('a parked hold (its gateway drained and told the client to re-attach) keeps the request open past the lease', async () => {
    const { handle } = await request();
    await handle.signal(joinSignal, { holdId: 'drained', leaseMs: LEASE_MS });
    await handle.signal(leaveSignal, { holdId: 'drained', reason: 'the client was told to send the operation again', park: true });
    await new Promise((r) => setTimeout(r, LEASE_MS * 2));
    const v = await handle.query(stateQuery);
    assert.equal(v.status, 'pending');
    // The client re-attaches (a fresh leased hold) and the request is approved for it.
    await handle.signal(joinSignal, { holdId: 'reattached', leaseMs: 60_000 });
    const r = await approve(v.requestId);
    assert.equal(r.ok, true);
  });

  test('holds that joined without a lease (gateways from before leases) never lapse', async () => {
    const { handle } = await request();
    await handle.signal(joinSignal, { holdId: 'old-gateway' });
    await handle.signal(joinSignal, { holdId: 'leased', leaseMs: LEASE_MS });
    await eventually(async () => (await handle.query(stateQuery)).waiting === 1, 15_000, 'the leased hold to lapse');
    assert.equal((await handle.query(stateQuery)).status, 'pending');
    await handle.terminate('test done');
  });
});
