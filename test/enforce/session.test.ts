// The enforcement seam on its own, without sockets: what every protocol gets from it. A real
// policy engine, a real SQLite store and the manual approver (a person deciding in the test).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { parseConfig } from '../../gateway/config/load.ts';
import { bindOperation } from '../../gateway/enforce/binding.ts';
import { EnforcementSession, type HoldNotice, type PolicyDecider } from '../../gateway/enforce/session.ts';
import { PolicyEngine } from '../../gateway/policy/engine.ts';
import type { Operation } from '../../gateway/policy/operation.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { ManualApprover } from '../support/manual-approver.ts';

const dir = mkdtempSync(join(tmpdir(), 'airlock-enforce-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const logger = pino({ level: 'silent' });

const loaded = parseConfig(
  `auth: { signingKey: { env: UNUSED } }
policy:
  default: allow
  rules:
    - { name: review-deletes, match: { kinds: [write] }, action: review, reason: writes need a DBA, review: { approvers: [dba], timeout: 10m, grantTtl: 10m } }
    - { name: no-drops, match: { kinds: [ddl] }, action: deny, reason: no DDL }
`,
  'inline.yaml',
  dir,
);
const engine = new PolicyEngine(loaded.config.policy, loaded.config.masking);

function session(opts: { policy?: PolicyDecider; store?: SqliteStore; approver?: ManualApprover } = {}) {
  const store = opts.store ?? SqliteStore.open(join(dir, `${Math.random().toString(36).slice(2)}.db`));
  const approver = opts.approver ?? new ManualApprover('#ops');
  const s = new EnforcementSession({ policy: opts.policy ?? engine, approver, store, logger }, { id: `s-${Math.random().toString(36).slice(2)}`, protocol: 'postgres', identity: { name: 'agent-1', groups: ['agents'], owner: 'alice' }, connection: 'prod', clientAddress: '127.0.0.1:1' });
  return { s, store, approver };
}

function op(s: EnforcementSession, kind: Operation['kind'], text: string): Operation {
  return { protocol: 'postgres', identity: s.info.identity, connection: { name: 'prod', clientAddress: '127.0.0.1:1', sessionId: s.id }, kind, text, tables: ['public.t'], functions: [] };
}

test('a policy engine that throws denies (fail closed), naming the failure', () => {
  const broken: PolicyDecider = {
    decideAll() {
      throw new Error('rule table corrupted');
    },
  };
  const { s } = session({ policy: broken });
  s.start();
  const { decision } = s.decide([op(s, 'read', 'SELECT 1')]);
  assert.equal(decision.action, 'deny');
  assert.match(decision.action === 'deny' ? decision.reason : '', /policy evaluation failed: rule table corrupted/);
});

test('denials become typed refusals (42501-style "denied")', () => {
  const { s } = session();
  s.start();
  const { decision } = s.decide([op(s, 'ddl', 'DROP TABLE t')]);
  assert.equal(decision.action, 'deny');
  if (decision.action !== 'deny') return;
  assert.deepEqual({ kind: s.denial(decision).kind, rule: s.denial(decision).rule }, { kind: 'denied', rule: 'no-drops' });
});

test('a hold inside an open transaction is refused before anything is posted, unless the rule opts in', async () => {
  const { s, approver } = session();
  s.start();
  const o = op(s, 'write', 'DELETE FROM t WHERE id = 1');
  const { decision } = s.decide([o]);
  assert.equal(decision.action, 'review');
  if (decision.action !== 'review') return;
  const h = await s.hold({ operation: o, decision, binding: bindOperation(o, 'k'), notify: () => undefined, signal: new AbortController().signal, transactionSince: new Date() });
  assert.equal(h.approved, false);
  assert.equal(h.approved ? '' : h.refusal.kind, 'in-transaction');
  assert.equal(approver.pending.length, 0);
});

test('a hold tells the client when the request is created and when it is posted; a grant use is announced', async () => {
  const { s, approver } = session();
  s.start();
  const o = op(s, 'write', 'DELETE FROM t WHERE id = 2');
  const { decision } = s.decide([o]);
  if (decision.action !== 'review') throw new Error('expected review');
  const notices: HoldNotice[] = [];
  const held = s.hold({ operation: o, decision, binding: bindOperation(o, 'k'), notify: (n) => notices.push(n), signal: new AbortController().signal });
  const p = await approver.next();
  p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['bob'], viaGrant: true, grant: { use: 2, runs: 3, until: '2026-12-02T08:00:00.000Z' } });
  const h = await held;
  assert.equal(h.approved, true);
  assert.deepEqual(notices.map((n) => n.stage), ['requested', 'posted', 'grant']);
  assert.match(notices[2].message, /running under reusable approval REQ-\d+ \(use 2 of 3, valid until 2026-12-02T08:00:00.000Z\) by bob/);
  assert.equal(h.approved ? h.approval.outcome : '', 'approved (grant)');
});

test('results are reported for approved runs only, each one (grant uses included)', async () => {
  const { s, approver } = session();
  s.start();
  s.reportResult({ requestId: 'R1', outcome: 'approved', approvers: ['bob'] }, { summary: 'DELETE 1', tag: 'DELETE 1', rows: 1 });
  s.reportResult({ requestId: 'R1', outcome: 'approved (grant)', approvers: ['bob'] }, { summary: 'DELETE 1', tag: 'DELETE 1', rows: 1 });
  s.reportResult({ requestId: 'R2', outcome: 'rejected', approvers: ['bob'] }, { summary: 'not run' });
  s.reportResult(undefined, { summary: 'no approval' });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(approver.reports.map((r) => [r.requestId, r.sessionId === s.id, r.tag]), [
    ['R1', true, 'DELETE 1'],
    ['R1', true, 'DELETE 1'],
  ]);
});

test('no audit trail, no access: a store that cannot record refuses the session start and every new operation', () => {
  const store = SqliteStore.open(join(dir, 'full.db'));
  const { s } = session({ store });
  s.start();
  store.close(); // a closed store cannot persist anything: unhealthy
  const { decision } = s.decide([op(s, 'read', 'SELECT 1')]);
  assert.equal(decision.action, 'deny');
  if (decision.action === 'deny') assert.equal(s.denial(decision).kind, 'audit-unavailable');
  assert.throws(() => session({ store }).s.start(), /audit/i);
});
