import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeCopyField, encodeCopyField } from '../../gateway/masking/copy-text.ts';

const dec = (s: string) => {
  const b = Buffer.from(s, 'latin1');
  return decodeCopyField(b, 0, b.length);
};

test('decode: COPY text escapes', () => {
  assert.equal(dec('plain'), 'plain');
  assert.equal(dec('a\\tb\\nc\\\\d\\re'), 'a\tb\nc\\d\re');
  assert.equal(dec('\\b\\f\\v'), '\b\f\v');
  assert.equal(dec('\\101\\x42\\x4a'), 'ABJ');
  assert.equal(dec('\\N'), 'N'); // the NULL marker is handled by the caller, not here
  assert.equal(dec('trailing\\'), 'trailing\\');
});

test('encode: round-trips through decode and escapes the delimiter', () => {
  for (const v of ['x', 'tab\there', 'line\nbreak\r', 'back\\slash', '\b\f\v', 'é'.repeat(3)]) {
    assert.equal(dec(encodeCopyField(v)), v);
  }
  assert.equal(encodeCopyField('a|b', '|'), 'a\\|b');
  assert.equal(encodeCopyField('a\tb'), 'a\\tb');
});
