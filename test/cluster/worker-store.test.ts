// A gateway worker's audit store (gateway/cluster/worker-store.ts) enforces the fail-closed policy
// on its own view: records the primary has not acknowledged within audit.maxPendingMs, a primary
// that reports the store unhealthy, or a lost IPC channel all refuse new work (AuditUnavailableError);
// `audit.onFailure: open` keeps serving. Batches carry the calls in the order they were made.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkerStore } from '../../gateway/cluster/worker-store.ts';
import type { ToPrimary } from '../../gateway/cluster/protocol.ts';
import { AuditUnavailableError, type AuditHealth } from '../../gateway/recording/store.ts';

const healthy: AuditHealth = { ok: true, policy: 'closed', pending: 0, lagMs: 0, dropped: 0 };

function pipe() {
  const sent: Extract<ToPrimary, { t: 'airlock:audit' }>[] = [];
  let connected = true;
  return {
    sent,
    disconnect: () => (connected = false),
    channel: {
      send: (m: ToPrimary) => {
        if (m.t === 'airlock:audit') sent.push(m);
      },
      connected: () => connected,
    },
  };
}

const reader = () => {
  throw new Error('no reads in this test');
};

const tick = () => new Promise((r) => setImmediate(r));

test('records go to the primary in one batch per turn, in call order; acknowledged, nothing is pending', async () => {
  const p = pipe();
  const s = new WorkerStore(p.channel, { policy: 'closed', maxPending: 100, maxPendingMs: 1000, openReader: reader });
  s.startSession({ id: 's1', protocol: 'postgres', identity: 'a', groups: [], connection: 'app', clientAddress: 'x', startedAt: new Date(0) });
  s.recordAudit({ at: new Date(1), kind: 'k', subject: 's1', detail: {} });
  s.endSession('s1', new Date(2), 'done', { toClient: 1, fromClient: 2 });
  assert.equal(p.sent.length, 0, 'nothing is sent before the turn ends');
  assert.equal(s.health().pending, 3);
  await tick();
  assert.equal(p.sent.length, 1);
  assert.deepEqual(p.sent[0].calls.map((c) => c.k), ['start', 'audit', 'end']);
  s.acknowledged(p.sent[0].n, healthy);
  assert.equal(s.health().pending, 0);
  assert.equal(await s.whenDrained(10), true);
});

test('unacknowledged records older than maxPendingMs refuse new work until the primary acknowledges them', async () => {
  const p = pipe();
  const s = new WorkerStore(p.channel, { policy: 'closed', maxPending: 100, maxPendingMs: 50, openReader: reader });
  s.recordAudit({ at: new Date(), kind: 'k', subject: 'x', detail: {} });
  await tick();
  assert.equal(s.writable(), true);
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(s.writable(), false);
  assert.throws(() => s.assertWritable(), (e: Error) => e instanceof AuditUnavailableError && /acknowledged by the gateway primary/.test(e.message));
  s.acknowledged(p.sent[0].n, healthy);
  assert.equal(s.writable(), true);
});

test('the primary reporting an unhealthy store refuses new work here, with its reason', () => {
  const s = new WorkerStore(pipe().channel, { policy: 'closed', maxPending: 100, maxPendingMs: 1000, openReader: reader });
  s.primaryHealth({ ok: false, reason: 'audit records cannot be written: disk full', policy: 'closed', pending: 7, lagMs: 900, dropped: 0 });
  assert.throws(() => s.assertWritable(), /disk full/);
  assert.equal(s.health().pending, 7);
  s.primaryHealth(healthy);
  assert.doesNotThrow(() => s.assertWritable());
});

test('a lost IPC channel refuses new work for good; onFailure: open keeps serving', async () => {
  const p = pipe();
  const s = new WorkerStore(p.channel, { policy: 'closed', maxPending: 100, maxPendingMs: 1000, openReader: reader });
  p.disconnect();
  s.disconnected();
  assert.throws(() => s.assertWritable(), /primary process \(the audit writer\) is unreachable/);
  s.recordAudit({ at: new Date(), kind: 'k', subject: 'x', detail: {} });
  await tick();
  assert.equal(p.sent.length, 0);
  assert.equal(await s.whenDrained(10), false, 'a record could not be sent');
  assert.equal(s.health().dropped, 1);
  const open = new WorkerStore(p.channel, { policy: 'open', maxPending: 100, maxPendingMs: 1000, openReader: reader });
  assert.equal(open.health().ok, false);
  assert.equal(open.writable(), true);
});
