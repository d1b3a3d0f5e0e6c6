import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyStrategy, Hasher, partialMask, redactToken, strongest } from '../../gateway/masking/strategies.ts';

const bin = (s: string) => Buffer.from(s, 'utf8').toString('latin1');
const utf8 = (s: string) => Buffer.from(s, 'latin1').toString('utf8');

test('hash: deterministic for one key, different across keys and values, h: + 16 hex', () => {
  const a = new Hasher('key-one');
  const b = new Hasher('key-two');
  const h = a.hash('alice@example.com');
  assert.match(h, /^h:[0-9a-f]{16}$/);
  assert.equal(a.hash('alice@example.com'), h);
  assert.equal(new Hasher('key-one').hash('alice@example.com'), h);
  assert.notEqual(b.hash('alice@example.com'), h);
  assert.notEqual(a.hash('alice@example.org'), h);
});

test('hash: keyed HMAC-SHA256 over the value bytes (not a plain digest)', async () => {
  const { createHash, createHmac } = await import('node:crypto');
  const v = bin('josé@example.com');
  const expected = createHmac('sha256', 'k').update(Buffer.from('josé@example.com', 'utf8')).digest('hex').slice(0, 16);
  assert.equal(new Hasher('k').hash(v), 'h:' + expected);
  assert.notEqual(new Hasher('k').hash(v), 'h:' + createHash('sha256').update('josé@example.com').digest('hex').slice(0, 16));
});

test('hash: an empty key is refused', () => {
  assert.throws(() => new Hasher(''), /hashKey must be a non-empty secret/);
});

test('partial: keeps the last 4 letters/digits and every separator', () => {
  assert.equal(partialMask('4242424242424242'), '************4242');
  assert.equal(partialMask('4242-4242-4242-4242'), '****-****-****-4242');
  assert.equal(partialMask('123-45-6789'), '***-**-6789');
  assert.equal(partialMask('(415) 555-2671'), '(***) ***-2671');
  assert.equal(partialMask('alice@example.com'), '*****@******e.com');
});

test('partial: short values are masked entirely', () => {
  assert.equal(partialMask('1234567'), '*******');
  assert.equal(partialMask('Bob'), '***');
  assert.equal(partialMask(''), '');
});

test('partial: a multi-byte UTF-8 character is one letter, kept or masked whole', () => {
  assert.equal(utf8(partialMask(bin('Zoë Müller-Lüdenscheidt'))), '*** ******-********eidt');
  assert.equal(utf8(partialMask(bin('José García'))), '**** **rcía');
});

test('applyStrategy: redact tokens, null, and the strongest of two strategies', () => {
  const h = new Hasher('k');
  assert.equal(applyStrategy('redact', 'secret', h), '[redacted]');
  assert.equal(applyStrategy('redact', 'a@b.co', h, 'email'), '[redacted:email]');
  assert.equal(redactToken('card'), '[redacted:card]');
  assert.equal(applyStrategy('null', 'x', h), null);
  assert.equal(applyStrategy('hash', 'x', h), h.hash('x'));
  assert.equal(applyStrategy('partial', '4242424242424242', h), '************4242');
  assert.equal(strongest('partial', 'hash'), 'hash');
  assert.equal(strongest('redact', 'hash'), 'redact');
  assert.equal(strongest('redact', 'null'), 'null');
});
