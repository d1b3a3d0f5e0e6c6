// JSON masking by field path and detector.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FieldPathError, JsonMasker, parseFieldPath } from '../../gateway/http/json-mask.ts';
import { Hasher } from '../../gateway/masking/strategies.ts';
import { SECRET_FIELD_PATHS } from '../../gateway/kubernetes/rules.ts';

const hasher = new Hasher('test-key');

test('field paths: dots, wildcards, quoted keys, indexes; malformed paths are errors', () => {
  assert.deepEqual(parseFieldPath('a.b.*'), ['a', 'b', '*']);
  assert.deepEqual(parseFieldPath('metadata.annotations["kubectl.kubernetes.io/x"]'), ['metadata', 'annotations', 'kubectl.kubernetes.io/x']);
  assert.deepEqual(parseFieldPath('items[0].email'), ['items', '0', 'email']);
  assert.deepEqual(parseFieldPath('items[*].email'), ['items', '*', 'email']);
  for (const bad of ['a..b', '', 'a[', 'a["x"]b', '.a']) assert.throws(() => parseFieldPath(bad), FieldPathError, bad);
});

test('arrays are transparent; objects under a masked path keep their shape; numbers become tokens', () => {
  const m = new JsonMasker({ fields: [{ path: 'items.secret', strategy: 'redact', rule: 'r' }, { path: 'items.pin', strategy: 'hash', rule: 'r' }], detectors: [] }, hasher);
  const { value, masked } = m.mask({ items: [{ secret: { a: 'x', b: [1, true] }, pin: 1234, keep: 'k' }, { secret: null, keep: 'z' }] });
  assert.deepEqual(value, { items: [{ secret: { a: '[redacted]', b: ['[redacted]', '[redacted]'] }, pin: hasher.hash('1234'), keep: 'k' }, { secret: null, keep: 'z' }] });
  assert.deepEqual(masked.sort(), ['items[0].pin', 'items[0].secret']);
});

test('detectors mask spans inside any string value; null strategy nulls the value', () => {
  const m = new JsonMasker({ fields: [], detectors: [{ detector: 'email', strategy: 'redact', rule: 'r' }, { detector: 'card', strategy: 'null', rule: 'r' }] }, hasher);
  const { value, masked } = m.mask({ a: 'mail ann@example.com now', b: ['4242 4242 4242 4242'], c: 42, d: 'nothing' });
  assert.deepEqual(value, { a: 'mail [redacted:email] now', b: [null], c: 42, d: 'nothing' });
  assert.deepEqual(masked.sort(), ['detector:card@b[0]', 'detector:email@a']);
});

test('base64 fields are decoded, masked and re-encoded', () => {
  const m = new JsonMasker({ fields: [{ path: 'data.*', strategy: 'partial', rule: 'r', encoding: 'base64' }], detectors: [] }, hasher);
  const { value } = m.mask({ data: { card: Buffer.from('4242424242424242').toString('base64') } }) as { value: { data: { card: string } } };
  assert.equal(Buffer.from(value.data.card, 'base64').toString(), '************4242');
});

test('the Kubernetes secret paths cover a Secret, a list, a watch event and the last-applied annotation', () => {
  const m = new JsonMasker({ fields: SECRET_FIELD_PATHS.map((path) => ({ path, strategy: 'redact' as const, rule: 'k' })), detectors: [] }, hasher);
  const secret = () => ({ kind: 'Secret', metadata: { name: 's', annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"data":{"p":"aHVudGVyMg=="}}' } }, data: { p: 'aHVudGVyMg==' }, stringData: { q: 'plain' } });
  for (const doc of [secret(), { kind: 'SecretList', items: [secret(), secret()] }, { type: 'ADDED', object: secret() }]) {
    const out = JSON.stringify(m.mask(doc).value);
    assert.ok(!out.includes('aHVudGVyMg==') && !out.includes('plain'), out);
  }
});

test('documents nested deeper than the limit are refused before any walk (no stack overflow)', async () => {
  const { JsonDepthError, MAX_JSON_DEPTH } = await import('../../gateway/http/json-mask.ts');
  const m = new JsonMasker({ fields: [{ path: 'a', strategy: 'redact', rule: 'r' }], detectors: [{ detector: 'email', strategy: 'redact', rule: 'r' }] }, hasher);
  const doc = JSON.parse('['.repeat(5000) + '"ann@example.com"' + ']'.repeat(5000));
  assert.throws(() => m.mask(doc), JsonDepthError);
  const ok = JSON.parse('['.repeat(MAX_JSON_DEPTH) + '"ann@example.com"' + ']'.repeat(MAX_JSON_DEPTH));
  assert.match(JSON.stringify(m.mask(ok).value), /\[redacted:email\]/);
});

test('detectors mask numbers (cards as JSON numbers, also beyond exact integers) and object keys', () => {
  const m = new JsonMasker({ fields: [], detectors: [{ detector: 'email', strategy: 'redact', rule: 'r' }, { detector: 'card', strategy: 'hash', rule: 'r' }] }, hasher);
  const { value, masked } = m.mask(JSON.parse('{"c":4242424242424242,"big":4111111111111111111,"n":1234567890123,"keys":{"ann@example.com":{"bo@example.org":1},"x@example.com":2,"plain":3}}'));
  assert.deepEqual(value, {
    c: hasher.hash('4242424242424242'),
    // The value JSON.parse gives the literal (beyond exact integers), which is what gets masked.
    // biome-ignore lint/correctness/noPrecisionLoss: the precision loss is the case under test
    big: hasher.hash(BigInt(4111111111111111111).toString()),
    n: 1234567890123,
    keys: { '[redacted:email]': { '[redacted:email]': 1 }, '[redacted:email]#2': 2, plain: 3 },
  });
  assert.ok(masked.includes('detector:card@c') && masked.includes('detector:email@keys.<key>'), JSON.stringify(masked));
});
