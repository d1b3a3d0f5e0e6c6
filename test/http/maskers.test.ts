// Response maskers are built once per masking plan and shared: a cached masker must be exactly the
// one the request's own plan (applicable field rules, protocol, detectors) would build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RuleConfig } from '../../gateway/config/schema.ts';
import { ResponseMaskers } from '../../gateway/http/maskers.ts';
import { Hasher } from '../../gateway/masking/strategies.ts';
import type { DetectorMask } from '../../gateway/policy/decision.ts';
import type { Operation, Protocol } from '../../gateway/policy/operation.ts';

const hasher = new Hasher('test-key');

const rules = [
  { name: 'emails', match: { connections: ['crm'] }, action: 'mask', mask: { fields: [{ path: 'users.email', strategy: 'redact' }] } },
  { name: 'ops-phones', match: { connections: ['crm'], groups: ['ops'] }, action: 'mask', mask: { fields: [{ path: 'users.phone', strategy: 'hash' }] } },
  { name: 'not-admins', match: { connections: ['crm'] }, unless: { groups: ['admins'] }, action: 'mask', mask: { fields: [{ path: 'users.plan', strategy: 'redact' }] } },
  { name: 'secrets', match: { connections: ['k8s'] }, action: 'mask', mask: { fields: [{ path: 'data.*', strategy: 'redact' }] } },
  { name: 'blocked', match: { connections: ['crm'] }, action: 'deny', mask: { fields: [{ path: 'users.id', strategy: 'redact' }] } },
] as unknown as RuleConfig[];

function op(connection: string, groups: string[] = [], protocol: Protocol = 'http'): Operation {
  return {
    protocol,
    identity: { name: 'agent', groups },
    connection: { name: connection, clientAddress: '127.0.0.1:1', sessionId: 's' },
    kind: protocol === 'kubernetes' ? 'kubernetes' : 'http',
    text: 'GET /users',
    tables: [],
    functions: [],
    http: { method: 'GET', path: '/users', query: '', headers: {}, caseSensitivePaths: false },
  };
}

const doc = () => ({ users: [{ id: 1, email: 'ann@example.com', phone: '+1 555 0100', plan: 'pro', note: 'mail bob@example.com' }] });
const email: DetectorMask[] = [{ detector: 'email', strategy: 'redact', rule: 'detect-email' }];

function masked(m: ReturnType<ResponseMaskers['for']>): unknown {
  assert.ok(m, 'a masker');
  return m.mask(doc()).value;
}

test('the same plan shares one masker; nothing to mask gives none', () => {
  const maskers = new ResponseMaskers(rules, hasher);
  const a = maskers.for(op('crm'), []);
  assert.equal(maskers.for(op('crm'), []), a, 'same rules, same detectors: the cached masker');
  assert.equal(maskers.for(op('other'), []), undefined, 'no field rule and no detector applies');
  assert.equal(maskers.size, 1);
});

test('a cached masker is never served to a request whose applicable rules differ', () => {
  const maskers = new ResponseMaskers(rules, hasher);
  // Warm the cache with the plain plan, then ask for plans that differ by one rule each.
  assert.deepEqual(masked(maskers.for(op('crm'), [])), { users: [{ id: 1, email: '[redacted]', phone: '+1 555 0100', plan: '[redacted]', note: 'mail bob@example.com' }] });
  assert.deepEqual(masked(maskers.for(op('crm', ['ops']), [])), { users: [{ id: 1, email: '[redacted]', phone: hasher.hash('+1 555 0100'), plan: '[redacted]', note: 'mail bob@example.com' }] }, 'group ops adds the phone rule');
  assert.deepEqual(masked(maskers.for(op('crm', ['admins']), [])), { users: [{ id: 1, email: '[redacted]', phone: '+1 555 0100', plan: 'pro', note: 'mail bob@example.com' }] }, '`unless` takes the plan rule away');
  // And back: the first plan is still exactly the first plan.
  assert.deepEqual(masked(maskers.for(op('crm'), [])), { users: [{ id: 1, email: '[redacted]', phone: '+1 555 0100', plan: '[redacted]', note: 'mail bob@example.com' }] });
});

test('a cached masker is never served to a decision with other detectors', () => {
  const maskers = new ResponseMaskers(rules, hasher);
  assert.deepEqual(masked(maskers.for(op('crm', ['admins']), [])), { users: [{ id: 1, email: '[redacted]', phone: '+1 555 0100', plan: 'pro', note: 'mail bob@example.com' }] });
  assert.deepEqual(masked(maskers.for(op('crm', ['admins']), email)), { users: [{ id: 1, email: '[redacted]', phone: '+1 555 0100', plan: 'pro', note: 'mail [redacted:email]' }] });
  const hashed = maskers.for(op('crm', ['admins']), [{ detector: 'email', strategy: 'hash', rule: 'detect-email' }]);
  assert.notEqual(hashed, maskers.for(op('crm', ['admins']), email), 'another strategy is another masker');
  assert.deepEqual(maskers.for(op('other'), [{ detector: 'email', strategy: 'redact', rule: 'r2' }])?.rules, ['r2'], 'the rule named in refusals is the decision’s own');
  assert.deepEqual(maskers.for(op('other'), email)?.rules, ['detect-email']);
});

test('Kubernetes operations get the wrapper variants; HTTP operations with the same rules do not', () => {
  const maskers = new ResponseMaskers(rules, hasher);
  const list = { items: [{ data: { password: 'hunter2' } }] };
  const httpOp = { ...op('k8s'), protocol: 'http' as const };
  assert.deepEqual(maskers.for(httpOp, [])!.mask(structuredClone(list)).value, list, 'http: `data.*` is not applied inside a Kubernetes list');
  assert.deepEqual(maskers.for(op('k8s', [], 'kubernetes'), [])!.mask(structuredClone(list)).value, { items: [{ data: { password: '[redacted]' } }] });
  assert.deepEqual(maskers.for(httpOp, [])!.mask(structuredClone(list)).value, list, 'and the http plan is still its own');
});

test('deny rules never contribute field masks', () => {
  const maskers = new ResponseMaskers(rules, hasher);
  const v = masked(maskers.for(op('crm', ['admins']), [])) as { users: Array<{ id: unknown }> };
  assert.equal(v.users[0].id, 1);
});
