// Crash reconciliation on a real SQLite store: open sessions are ended as `gateway crashed`, a
// hold that never finished becomes an operation that did not run, settled holds and ended
// sessions are left alone, and the hash chain still verifies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { CRASH_REASON, HOLD_STARTED, reconcileCrashed } from '../../gateway/recording/reconcile.ts';
import { verifyAuditDb } from '../../gateway/recording/verify.ts';

test('sessions and holds left by a crash are closed in the record, once', () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-reconcile-'));
  try {
    const store = SqliteStore.open(join(dir, 'a.db'));
    const start = (id: string) => store.startSession({ id, protocol: 'postgres', identity: 'alice', groups: [], connection: 'app', clientAddress: '127.0.0.1:1', startedAt: new Date() });
    start('open-1');
    start('open-2');
    start('done');
    store.endSession('done', new Date(), 'client disconnected', { toClient: 1, fromClient: 1 });
    store.recordOperation({ sessionId: 'open-1', seq: 1, at: new Date(), text: 'select 1', kind: 'select', classification: {}, decision: 'allow', maskedColumns: [] });
    // open-1: one hold settled (its operation carries the request id), one still in flight.
    store.recordAudit({ at: new Date(), kind: HOLD_STARTED, subject: 'open-1', detail: { requestId: 'REQ-settled', rule: 'r', kind: 'delete', text: 'delete from t where id = 1' } });
    store.recordOperation({ sessionId: 'open-1', seq: 2, at: new Date(), text: 'delete from t where id = 1', kind: 'delete', classification: {}, decision: 'review', maskedColumns: [], approval: { requestId: 'REQ-settled', outcome: 'approved', approvers: ['bob'] } });
    store.recordAudit({ at: new Date(), kind: HOLD_STARTED, subject: 'open-1', detail: { requestId: 'REQ-lost', rule: 'approve-deletes', kind: 'delete', text: 'delete from t where id = 2' } });

    const r = reconcileCrashed(store);
    assert.deepEqual(r.sessions.sort(), ['open-1', 'open-2']);
    assert.deepEqual(r.holds, [{ sessionId: 'open-1', requestId: 'REQ-lost' }]);
    const s1 = store.getSession('open-1')!;
    assert.equal(s1.session.endReason, CRASH_REASON);
    const lost = s1.operations.find((o) => o.approval?.requestId === 'REQ-lost')!;
    assert.equal(lost.seq, 3);
    assert.equal(lost.text, 'delete from t where id = 2');
    assert.match(lost.error ?? '', /not executed: the gateway crashed/);
    assert.equal(lost.approval?.outcome, 'abandoned');
    assert.ok(store.listAudit('REQ-lost').some((e) => e.kind === 'hold.abandoned'));
    assert.equal(store.getSession('done')!.session.endReason, 'client disconnected');
    assert.deepEqual(store.openSessionIds(), []);
    // A second start finds nothing to do.
    assert.deepEqual(reconcileCrashed(store), { sessions: [], holds: [], instances: [] });
    const v = verifyAuditDb(store.database);
    assert.equal(v.ok, true, JSON.stringify(v.problems));
    assert.ok(v.entries >= 9, `the end events were appended to the chain (${v.entries} entries)`);
    store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
