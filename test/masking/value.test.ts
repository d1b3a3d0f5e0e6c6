import { test } from 'node:test';
import assert from 'node:assert/strict';
import { detectorMask } from '../../gateway/masking/detectors.ts';
import { Hasher } from '../../gateway/masking/strategies.ts';
import { maskSpans, maskWhole, type DetectorRules } from '../../gateway/masking/value.ts';

const hasher = new Hasher('test-key');
const rules = (strategy: DetectorRules['strategy']): DetectorRules => ({ mask: detectorMask(Object.keys(strategy) as never), strategy });

test('column rule on text: the strategy applies to the whole value', () => {
  assert.equal(maskWhole('redact', 'alice@example.com', 'text', hasher), '[redacted]');
  assert.equal(maskWhole('hash', 'alice@example.com', 'text', hasher), hasher.hash('alice@example.com'));
  assert.equal(maskWhole('null', 'x', 'text', hasher), null);
});

test('column rule on a non-text type is NULL whatever the strategy', () => {
  for (const cls of ['number', 'other', 'container'] as const) {
    for (const s of ['redact', 'partial', 'hash'] as const) assert.equal(maskWhole(s, '42', cls, hasher), null);
  }
});

test('column rule on json: the masked value stays valid JSON (a JSON string)', () => {
  const v = maskWhole('redact', '{"email":"a@b.co"}', 'json', hasher)!;
  assert.equal(JSON.parse(v), '[redacted]');
  assert.equal(JSON.parse(maskWhole('partial', '"4242424242424242"', 'jsonb', hasher)!), '"************4242"');
});

test('detectors replace only the spans, each with its own strategy', () => {
  const r = maskSpans('mail alice@example.com, card 4242 4242 4242 4242.', 'text', rules({ email: 'redact', card: 'partial' }), hasher);
  assert.equal(r.value, 'mail [redacted:email], card **** **** **** 4242.');
  assert.deepEqual(r.hits.sort(), ['card', 'email']);
});

test('detectors: nothing found means unchanged (undefined)', () => {
  assert.deepEqual(maskSpans('nothing to see, order 1234567890', 'text', rules({ email: 'redact', card: 'redact' }), hasher), { value: undefined, hits: [] });
});

test('detectors: a null strategy nulls the whole value', () => {
  assert.equal(maskSpans('ssn 123-45-6789 here', 'text', rules({ ssn: 'null' }), hasher).value, null);
});

test('detectors: a hit inside a number or other non-text type nulls it', () => {
  assert.equal(maskSpans('4242424242424242', 'number', rules({ card: 'partial' }), hasher).value, null);
  assert.equal(maskSpans('4242424242424242', 'other', rules({ card: 'redact' }), hasher).value, null);
});

test('detectors in json: inside strings in place, outside strings quoted, result always valid JSON', () => {
  const r = maskSpans('{"to": "Alice <alice@example.com>", "card": 4242424242424242, "n": 1}', 'json', rules({ email: 'redact', card: 'hash' }), hasher);
  const parsed = JSON.parse(r.value!);
  assert.equal(parsed.to, 'Alice <[redacted:email]>');
  assert.equal(parsed.card, hasher.hash('4242424242424242'));
  assert.equal(parsed.n, 1);
});

test('detectors in json: escaped quotes before a span do not confuse the string tracking', () => {
  const r = maskSpans('{"a": "say \\"hi\\" to bob@example.com"}', 'jsonb', rules({ email: 'partial' }), hasher);
  assert.equal(JSON.parse(r.value!).a, 'say "hi" to ***@******e.com');
});

test('detectors in json: partial on a span holding JSON escapes falls back to the redact token', () => {
  const key = '-----BEGIN ' + 'PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END ' + 'PRIVATE KEY-----';
  const r = maskSpans(`{"k": "${key}"}`, 'json', rules({ secret: 'partial' }), hasher);
  assert.deepEqual(JSON.parse(r.value!), { k: '[redacted:secret]' });
});

test('detectors in json: a replacement that would break the document nulls the value', () => {
  // A private key with no END line is masked to the end of the value, across the closing quote.
  const r = maskSpans('{"k": "-----BEGIN ' + 'PRIVATE KEY-----abc", "x": 1}', 'json', rules({ secret: 'redact' }), hasher);
  assert.equal(r.value, null);
  assert.deepEqual(r.hits, ['secret']);
});
