import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeCopyField, decodeCsvField, encodeCopyField, encodeCsvField, splitCsvRow, type CsvDialect } from '../../gateway/masking/copy-text.ts';

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

const CSV: CsvDialect = { delimiter: 0x2c, quote: 0x22, escape: 0x22 };

function csvValues(row: string, d: CsvDialect = CSV): Array<[string, boolean]> {
  const b = Buffer.from(row, 'latin1');
  return splitCsvRow(b, 0, b.length, d).map((f) => [decodeCsvField(b, f, d), f.quoted]);
}

test('csv: quoted and unquoted fields, doubled quotes, delimiters and newlines inside quotes', () => {
  assert.deepEqual(csvValues('1,"a ""q"", b",,""'), [['1', false], ['a "q", b', true], ['', false], ['', true]]);
  assert.deepEqual(csvValues('"line1\nline2",x'), [['line1\nline2', true], ['x', false]]);
  assert.deepEqual(csvValues('""""'), [['"', true]]);
});

test('csv: a distinct ESCAPE character', () => {
  const d: CsvDialect = { delimiter: 0x3b, quote: 0x22, escape: 0x5c };
  assert.deepEqual(csvValues('"a\\"b\\\\c";d', d), [['a"b\\c', true], ['d', false]]);
  assert.equal(encodeCsvField('a"b\\c', d), '"a\\"b\\\\c"');
});

test('csv: encode always quotes and round-trips', () => {
  for (const v of ['', 'plain', 'with,comma', 'with "quotes"', 'multi\nline', '"']) {
    const enc = encodeCsvField(v, CSV);
    assert.deepEqual(csvValues(enc), [[v, true]]);
  }
});

test('csv: an unterminated quote is an error, not a guess', () => {
  const b = Buffer.from('1,"open');
  assert.throws(() => splitCsvRow(b, 0, b.length, CSV), /unterminated quoted CSV field/);
});
