// The canonical body rules match, and the request binding an approval is tied to.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import { canonicalBody, canonicalQuery, requestBinding, SUMMARY_BODY_LIMIT } from '../../gateway/http/binding.ts';
import { classifyKubernetes } from '../../gateway/kubernetes/classify.ts';

const b = (s: string) => Buffer.from(s);

test('canonical bodies: JSON re-serialized, YAML parsed, forms decoded; the rest is opaque', () => {
  assert.deepEqual(canonicalBody(b('{ "a" : "\\u0058BT" }'), 'application/json'), { kind: 'json', text: '{"a":"XBT"}', value: { a: 'XBT' } });
  assert.equal(canonicalBody(b('{"a":"\\u0058"}'), undefined).text, '{"a":"X"}', 'JSON without a content type is still JSON');
  assert.equal(canonicalBody(b('a: "\\x58BT"\nb: [1, 2]'), 'application/apply-patch+yaml').text, '{"a":"XBT","b":[1,2]}');
  assert.equal(canonicalBody(b('a=%58BT&b=c+d'), 'application/x-www-form-urlencoded').text, 'a=XBT&b=c d');
  assert.equal(canonicalBody(b('hello'), 'text/plain').kind, 'text');
  assert.equal(canonicalBody(gzipSync('{"a":1}'), 'application/json', 'gzip').kind, 'opaque');
  assert.equal(canonicalBody(Buffer.from([0x6b, 0x38, 0x73, 0]), 'application/vnd.kubernetes.protobuf').kind, 'opaque');
  assert.equal(canonicalBody(Buffer.from([0xff, 0xfe]), undefined).kind, 'opaque', 'not UTF-8');
  assert.equal(canonicalBody(b('a: [x'), 'application/yaml').kind, 'opaque');
  assert.equal(canonicalBody(b('['.repeat(5000) + ']'.repeat(5000)), 'application/json').kind, 'opaque', 'too deep to re-serialize');
  assert.ok(canonicalBody(b('{"a":'), 'application/json').invalidJson !== undefined);
});

test('the binding digest covers method, path, canonical query and the whole body', () => {
  const base = { method: 'DELETE', path: '/api/v1/namespaces/prod/pods/w', query: 'dryRun=All&gracePeriodSeconds=0', body: b('{"propagationPolicy":"Foreground"}'), contentType: 'application/json', connection: 'prod' };
  const a = requestBinding(base);
  assert.equal(a.digest, requestBinding({ ...base, query: 'gracePeriodSeconds=0&dryRun=All' }).digest, 'parameter order does not matter');
  assert.equal(a.digest, requestBinding({ ...base, query: 'dryRun=%41ll&gracePeriodSeconds=0' }).digest, 'nor escapes of the same value');
  for (const other of [{ query: 'gracePeriodSeconds=0' }, { body: b('{"propagationPolicy":"Orphan"}') }, { method: 'GET' }, { path: '/api/v1/namespaces/prod/pods/x' }, { connection: 'staging' }]) {
    assert.notEqual(requestBinding({ ...base, ...other }).digest, a.digest, JSON.stringify(other));
  }
  assert.equal(a.canonicalQuery, 'dryRun=All&gracePeriodSeconds=0');
  assert.match(a.bodySha256, /^[0-9a-f]{64}$/);
  assert.equal(canonicalQuery('b=2&a=1&b=1'), 'a=1&b=2&b=1', 'values of one name keep their order');
});

test('the summary shows the operation with its query and the body; a long body is cut explicitly, never silently', () => {
  const k = classifyKubernetes('PATCH', '/api/v1/namespaces/prod/configmaps/c', 'dryRun=All');
  const small = requestBinding({ method: 'PATCH', path: '/api/v1/namespaces/prod/configmaps/c', query: 'dryRun=All', body: b('{"data":{"k":"v"}}'), contentType: 'application/merge-patch+json', kubernetes: k });
  assert.equal(small.summary, 'patch configmaps/c -n prod ?dryRun=All\n{"data":{"k":"v"}}');
  const big = JSON.stringify({ data: { k: 'x'.repeat(SUMMARY_BODY_LIMIT * 2), tail: 'rm -rf /' } });
  const r = requestBinding({ method: 'POST', path: '/v1/x', query: '', body: b(big), contentType: 'application/json' });
  assert.match(r.summary, /\[body cut for display: 4096 of \d+ characters shown; the approval covers the whole \d+-byte body, sha256 [0-9a-f]{64}\]$/);
  assert.ok(r.summary.includes(r.bodySha256));
});
