// The enforcement seam and revocation, protocol-neutral: a revocation of the session's identity or
// token id fires the token-expiry path (every proxy ends the session there), blocks new operations
// and yields the `revoked` refusal (57P01 / HTTP 401 / SSH 126), seen within the poll interval.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EnforcementSession } from '../../gateway/enforce/session.ts';
import { HTTP_STATUS, POSTGRES_SQLSTATE, SSH_EXIT_STATUS } from '../../gateway/enforce/refusal.ts';
import { FailClosedApprover } from '../../gateway/approvals/approver.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { AuthStateStore } from '../../gateway/auth/revocation.ts';
import { log } from '../../gateway/log.ts';
import type { Operation } from '../../gateway/policy/operation.ts';

const allowAll = { decideAll: (ops: Operation[]) => ({ decision: { action: 'allow' as const, mask: { columns: [], detectors: [], denyMaskedExpressions: false }, limits: {} }, operation: ops[0] }) };

test('a revocation written by another process ends the session through onTokenExpiry and refuses new operations', async () => {
  const file = join(mkdtempSync(join(tmpdir(), 'airlock-rev-')), 'auth.db');
  const gateway = AuthStateStore.open(file);
  gateway.startPolling(100);
  const store = SqliteStore.open(':memory:');
  const mk = (tokenId: string) =>
    new EnforcementSession(
      { policy: allowAll, approver: new FailClosedApprover(), store, logger: log, revocations: gateway },
      { id: `s-${tokenId}`, protocol: 'http', identity: { name: 'agent-1', groups: [] }, connection: 'api', clientAddress: '127.0.0.1:1', tokenId, tokenExpiresAt: new Date(Date.now() + 600_000) },
    );
  const a = mk('jti-a');
  const b = mk('jti-b');
  a.start();
  b.start();
  const op = { text: 'GET /', kind: 'read' } as unknown as Operation;
  assert.equal(a.decide([op]).decision.action, 'allow');
  const fired = new Promise<void>((resolve) => a.onTokenExpiry(resolve));
  let bFired = false;
  b.onTokenExpiry(() => (bFired = true));
  const cli = AuthStateStore.open(file); // `airlock revoke` elsewhere
  cli.revoke('token', 'jti-a', 'leaked', 'carol');
  cli.close();
  const keepAlive = setInterval(() => undefined, 50); // the poll timer is unref'd, as in the gateway
  await fired;
  clearInterval(keepAlive);
  assert.equal(a.tokenExpired, true);
  const r = a.tokenRefusal();
  assert.equal(r.kind, 'revoked');
  assert.match(r.message, /revoked by carol: leaked/);
  assert.deepEqual([POSTGRES_SQLSTATE.revoked, HTTP_STATUS.revoked, SSH_EXIT_STATUS.revoked], ['57P01', 401, 126]);
  const d = a.decide([op]).decision;
  assert.equal(d.action, 'deny');
  assert.equal(d.action === 'deny' && d.rule, 'revoked');
  assert.equal(bFired, false, 'another token of the same identity is untouched');
  assert.equal(b.decide([op]).decision.action, 'allow');
  a.end('revoked', { toClient: 0, fromClient: 0 });
  b.end('done', { toClient: 0, fromClient: 0 });
  gateway.close();
  store.close();
});

test('an operation held for approval does not run when its identity is revoked before the approval arrives', async () => {
  const { ManualApprover } = await import('../support/manual-approver.ts');
  const state = AuthStateStore.open(':memory:');
  const store = SqliteStore.open(':memory:');
  const approver = new ManualApprover();
  const s = new EnforcementSession(
    { policy: allowAll, approver, store, logger: log, revocations: state },
    { id: 's-held', protocol: 'postgres', identity: { name: 'agent-1', groups: [] }, connection: 'prod', clientAddress: '127.0.0.1:1' },
  );
  s.start();
  const op = { text: 'DELETE FROM t', kind: 'write' } as unknown as Operation;
  const decision = { action: 'review' as const, rule: 'review-deletes', reason: 'deletes need a look', review: { approvers: ['dba'], timeoutMs: 60_000, holdInTransaction: false } } as unknown as Parameters<EnforcementSession['hold']>[0]['decision'];
  const held = s.hold({ operation: op, decision, binding: { digest: 'd' } as unknown as Parameters<EnforcementSession['hold']>[0]['binding'], notify: () => undefined, signal: new AbortController().signal });
  const pending = await approver.next();
  state.revoke('identity', 'agent-1', 'INC-12', 'carol');
  pending.resolve({ outcome: 'approved', requestId: pending.id, approvers: ['dave'] } as Parameters<typeof pending.resolve>[0]);
  const r = await held;
  assert.equal(r.approved, false);
  assert.equal(!r.approved && r.refusal.kind, 'revoked');
  s.end('done', { toClient: 0, fromClient: 0 });
  state.close();
  store.close();
});
