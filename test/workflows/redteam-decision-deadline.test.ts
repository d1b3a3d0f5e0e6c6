// Red team of decision deadlines: `notAfter` is part of the signed proof, so a relay of the
// Update (anyone who can reach Temporal) cannot strip or move it, and a far deadline does not
// lift maxAge. Checked on the verifier itself (checkProof), with controlled clocks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import type { DecisionRequest } from '../../bots/channel.ts';
import { checkProof, decisionSigner } from '../../workflows/decision-proof.ts';

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const keys = new Map([['cli' as const, publicKey]]);
const T0 = Date.UTC(2026, 0, 1);
const MAX_AGE = 5 * 60_000;
const request: DecisionRequest = { requestId: 'REQ-1', approver: 'carol', approverGroups: ['dba'], decision: 'approve', via: 'cli' };

function signed(deadlineMs = 20_000, signedAt = T0): DecisionRequest {
  return decisionSigner('cli', privateKey, () => signedAt, deadlineMs).sign(request, 'carol');
}

function check(d: DecisionRequest, now: number) {
  const { requestId, ...args } = d;
  return checkProof(keys, requestId, args, { now, maxAgeMs: MAX_AGE, notBefore: T0 - 60_000 });
}

test('the proof carries a deadline that counts: accepted before it, refused after it', () => {
  const d = signed();
  assert.equal(d.proof?.notAfter, T0 + 20_000);
  assert.equal(check(d, T0 + 19_000).ok, true);
  const late = check(d, T0 + 20_001);
  assert.ok(!late.ok && /after its deadline/.test(late.error), JSON.stringify(late));
});

test('stripping, moving or nulling notAfter breaks the signature', () => {
  const d = signed();
  const { notAfter: _gone, ...stripped } = d.proof!;
  for (const proof of [stripped, { ...d.proof!, notAfter: T0 + 3_600_000 }, { ...d.proof!, notAfter: T0 + 20_000.5 }]) {
    const r = check({ ...d, proof }, T0 + 25_000);
    assert.ok(!r.ok && /bad signature/.test(r.error), JSON.stringify(r));
  }
  for (const notAfter of [null, Number.POSITIVE_INFINITY, Number.NaN, '9999999999999']) {
    const r = check({ ...d, proof: { ...d.proof!, notAfter } as unknown as typeof d.proof }, T0 + 1000);
    assert.ok(!r.ok && /malformed/.test(r.error), JSON.stringify(r));
  }
});

test('a far-future deadline does not lift maxAge, and a proof dated ahead of the worker beyond the skew is refused', () => {
  const far = signed(365 * 24 * 3_600_000);
  assert.equal(check(far, T0 + MAX_AGE - 1).ok, true);
  const stale = check(far, T0 + MAX_AGE + 1);
  assert.ok(!stale.ok && /stale/.test(stale.error), JSON.stringify(stale));
  const ahead = check(signed(20_000, T0 + 31_000), T0);
  assert.ok(!ahead.ok && /future/.test(ahead.error), JSON.stringify(ahead));
});

test('the deadline is bound to the decision: it cannot be moved onto another request or verdict', () => {
  const d = signed();
  for (const other of [{ ...d, requestId: 'REQ-2' }, { ...d, decision: 'reject' as const }, { ...d, grant: { forMs: 60_000 } }]) {
    const r = check(other, T0 + 1000);
    assert.ok(!r.ok && /bad signature/.test(r.error), JSON.stringify(r));
  }
});
