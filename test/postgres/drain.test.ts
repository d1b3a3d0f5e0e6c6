// Draining the PostgreSQL listener (what SIGTERM does): no new connections, an idle session is
// ended at once, a held client is told its approval request stays open and how to re-attach, and
// the hold was written to the audit trail when it started (for crash reconciliation).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { ManualApprover } from '../support/manual-approver.ts';
import { HOLD_STARTED } from '../../gateway/recording/reconcile.ts';
import { HOLD_PARKED } from '../../gateway/approvals/approver.ts';

const approver = new ManualApprover('#db-approvals');
let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    approver,
    setup: `CREATE TABLE IF NOT EXISTS drain_t (id int PRIMARY KEY); INSERT INTO drain_t VALUES (1) ON CONFLICT DO NOTHING;`,
    config: () => ({
      policy: {
        default: 'allow',
        rules: [{ name: 'approve-deletes', match: { statements: ['DeleteStmt'] }, action: 'review', reason: 'deletes need a second pair of eyes', review: { approvers: ['dba'], timeout: '10m' } }],
      },
    }),
  });
});

after(async () => {
  await h?.close();
});

test('a drain tells the held client which request stays open, ends idle sessions and refuses new ones', async () => {
  const idle = await h.client();
  const idleErrors: string[] = [];
  idle.on('error', (e) => idleErrors.push(e.message));
  const held = await h.client();
  const heldErrors: string[] = [];
  held.on('error', (e) => heldErrors.push(e.message));
  const del = held.query('delete from drain_t where id = 1').then(
    () => 'ran',
    (e: Error) => e.message,
  );
  const p = await approver.next();
  const started = h.store.listAudit().filter((e) => e.kind === HOLD_STARTED);
  assert.equal(started.length, 1);
  assert.equal(started[0].detail.requestId, p.id);
  assert.match(String(started[0].detail.text), /delete from drain_t/);

  await h.gateway.drain(10_000);
  // The hold is parked, not cancelled: its request stays open for the re-attach the client is told about.
  assert.deepEqual(approver.abortReasons, [HOLD_PARKED]);
  const outcome = await del;
  assert.notEqual(outcome, 'ran');
  const errs = [...heldErrors, outcome].join(' | ');
  assert.match(errs, new RegExp(`approval request ${p.id} stays open`));
  assert.match(errs, /re-attach/);
  await new Promise((r) => setTimeout(r, 200));
  assert.match(idleErrors.join(' | '), /shutting down/);
  assert.equal(h.gateway.sessions().size, 0);
  // The statement did not run.
  assert.equal((await h.pg.query('select count(*)::int as n from drain_t')).rows[0].n, 1);
  await Promise.all([idle.end().catch(() => {}), held.end().catch(() => {})]);
  await assert.rejects(h.client(), 'no new connections while draining');
});
