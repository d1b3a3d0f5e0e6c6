// What an approval is bound to: every byte that can change what runs, under a key; what the
// approver reads: the same operation with PII detectors applied.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bindOperation, type BoundParameter } from '../../gateway/enforce/binding.ts';
import type { Operation } from '../../gateway/policy/operation.ts';

const op = (text: string, protocol: Operation['protocol'] = 'postgres'): Operation => ({
  protocol,
  identity: { name: 'agent-1', groups: [] },
  connection: { name: 'prod', clientAddress: '10.0.0.1:5000', sessionId: 's1' },
  kind: 'write',
  text,
  tables: ['public.accounts'],
  functions: [],
});
const txt = (s: string): BoundParameter => ({ value: Buffer.from(s), binary: false });

test('the digest covers text, each parameter value, its format and NULL-ness, and the body', () => {
  const base = bindOperation(op('DELETE FROM accounts WHERE id = $1'), 'k', { parameters: [txt('1')] });
  const variants = [
    bindOperation(op('DELETE FROM accounts WHERE id = $1'), 'k', { parameters: [txt('2')] }),
    bindOperation(op('DELETE FROM accounts WHERE id = $1'), 'k', { parameters: [{ value: Buffer.from('1'), binary: true }] }),
    bindOperation(op('DELETE FROM accounts WHERE id = $1'), 'k', { parameters: [{ value: null, binary: false }] }),
    bindOperation(op('DELETE FROM accounts WHERE id = $1'), 'k', { parameters: [txt('1'), txt('')] }),
    bindOperation(op('DELETE FROM accounts WHERE id = $1 '), 'k', { parameters: [txt('1')] }),
    bindOperation(op('DELETE FROM accounts WHERE id = $1', 'ssh'), 'k', { parameters: [txt('1')] }),
    bindOperation(op('DELETE FROM accounts WHERE id = $1'), 'other key', { parameters: [txt('1')] }),
    bindOperation(op('DELETE FROM accounts WHERE id = $1'), 'k', { parameters: [txt('1')], body: Buffer.from('x') }),
  ];
  for (const v of variants) assert.notEqual(v.digest, base.digest);
  assert.equal(bindOperation(op('DELETE FROM accounts WHERE id = $1'), 'k', { parameters: [txt('1')] }).digest, base.digest, 'deterministic');
  // Length-prefixed fields: moving bytes between two parameters is a different operation.
  assert.notEqual(bindOperation(op('q'), 'k', { parameters: [txt('ab'), txt('c')] }).digest, bindOperation(op('q'), 'k', { parameters: [txt('a'), txt('bc')] }).digest);
});

test('approvers read parameters with detectors applied, long values cut (the digest still covers all of it)', () => {
  const b = bindOperation(op("UPDATE accounts SET owner = $1, note = $2 WHERE card = '4111 1111 1111 1111'"), 'k', {
    parameters: [txt('ann.lee@example.com'), txt('x'.repeat(500)), { value: null, binary: false }, { value: Buffer.from([1, 2, 3]), binary: true }],
  });
  assert.equal(b.parameters?.[0], '$1 = "[redacted:email]"');
  assert.match(b.parameters?.[1] ?? '', /^\$2 = "x{200}\.\.\. \(500 bytes\)"$/);
  assert.equal(b.parameters?.[2], '$3 = NULL');
  assert.match(b.parameters?.[3] ?? '', /^\$4 = <binary, 3 bytes, sha256 [0-9a-f]{12}>$/);
  assert.doesNotMatch(b.text, /4111/, 'literals in the text are redacted too');
  assert.ok(b.details?.some((d) => d === 'session s1 from 10.0.0.1:5000'));
  assert.ok(b.details?.some((d) => d === 'tables: public.accounts'));
});
