// The COPY masker's fast path (round 3): detector columns are quick-checked on their raw bytes
// while the line is split, and only fields that may hold a match are decoded. Compared here with a
// full scan written independently of it: every field decoded (text escapes, csv quotes), every
// enabled detector run on every value (findSpans with no quick check at all), column rules applied
// to the decoded value, then encoded back. Over many generated lines, in text and csv with several
// delimiters, quotes and escapes, NULLs, non-ASCII, and encodings PostgreSQL itself does not write
// (octal/hex escapes, needless backslashes), the masker must give the same bytes, so a fast path
// that skipped a value that has to be masked fails here. Socket-free (in-memory catalog).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { createMaskerFactory, type CopyMasker, type CopyOptions } from '../../gateway/postgres/row-masker.ts';
import { WriteBatch } from '../../gateway/postgres/frames.ts';
import { decodeCopyField, decodeCsvField, encodeCopyField, encodeCsvField, splitCsvRow, type CsvDialect } from '../../gateway/masking/copy-text.ts';
import { detectorMask } from '../../gateway/masking/detectors.ts';
import { Hasher } from '../../gateway/masking/strategies.ts';
import { maskSpans, maskWhole, type DetectorRules } from '../../gateway/masking/value.ts';
import type { DetectorName, MaskPlan, MaskStrategy } from '../../gateway/policy/decision.ts';
import { rng } from '../support/random.ts';

const HASH_KEY = 'copy-fast-path';
const hasher = new Hasher(HASH_KEY);

// people(id int, name text, email text, note text, doc jsonb)
const COLUMNS: Array<[string, number]> = [['id', 23], ['name', 25], ['email', 25], ['note', 25], ['doc', 3802]];
const connect = async (): Promise<pg.Client> =>
  ({
    query: async ({ text, values }: { text: string; values: unknown[] }) => {
      if (text.includes('to_regclass')) return { rows: [{ oid: values[0] === 'app.people' ? '500' : null }] };
      if (text.includes('pg_attribute')) {
        if (!(values[0] as unknown[]).map(Number).includes(500)) return { rows: [] };
        return { rows: COLUMNS.map(([attname, typid], k) => ({ relid: '500', attnum: k + 1, nspname: 'app', relname: 'people', relkind: 'r', attname, typid: String(typid), ancestors: null })) };
      }
      return { rows: [] };
    },
    on: () => undefined,
    end: async () => undefined,
  }) as unknown as pg.Client;

const ALL: DetectorName[] = ['email', 'card', 'ssn', 'phone', 'iban', 'secret'];


// Values as binary strings (UTF-8 bytes as latin1 chars), like the masker's.
const u = (s: string) => Buffer.from(s, 'utf8').toString('latin1');
const SENSITIVE = [
  'alice@example.com', 'bob.o\'neil+tag@mail.example.org', u('jürgen@exämple.de'), '4242 4242 4242 4242', '4111-1111-1111-1111', '4012888888881881',
  '123-45-6789', '078 05 1120', '(415) 555-2671', '415.555.2671', '+1 415 555 2671', '+44 20 7946 0958', '+1(234)-(567)-(890)',
  'DE89 3704 0044 0532 0130 00', 'GB82WEST12345698765432', 'AKIAIOSFODNN7EXAMPLE', 'ghp_0123456789abcdefghijABCDEFGHIJ012345',
  'xoxb-2yqoJ528Zb', 'sk_live_abcdefghij12', 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln',
  '-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----',
];
const FILLER = ['hello', 'world', 'x', '', ' ', '-', '12', '2026-12-02', 'a,b', 'say "hi"', "it's", 'back\\slash', 'tab\there', 'new\nline', 'cr\rhere', '\\N', 'NULL', u('é'), u('日本語'), u('🙂'), '@', '+', 'AK', 'eyJ', '---', '|', ';', 'J', '\b\f\v', '\x7f', '"', '""', '\\\\'];

function value(r: () => number): string {
  let v = '';
  const parts = Math.floor(r() * 5);
  for (let k = 0; k < parts; k++) {
    const pool = r() < 0.3 ? SENSITIVE : FILLER;
    v += pool[Math.floor(r() * pool.length)];
    if (r() < 0.5) v += r() < 0.5 ? ' ' : FILLER[Math.floor(r() * FILLER.length)];
  }
  return v;
}

interface Dialect { name: string; options: CopyOptions; csv: boolean; delimiter: string; nullString: string; quote: string; escape: string }
const dialect = (name: string, options: CopyOptions): Dialect => {
  const csv = options.format === 'csv';
  const quote = options.quote ?? '"';
  return { name, options, csv, delimiter: options.delimiter ?? (csv ? ',' : '\t'), nullString: options.nullString ?? (csv ? '' : '\\N'), quote, escape: options.escape ?? quote };
};
const DIALECTS: Dialect[] = [
  dialect('text', {}),
  dialect('text, DELIMITER space', { delimiter: ' ' }),
  dialect('text, DELIMITER -', { delimiter: '-' }),
  dialect('text, DELIMITER J', { delimiter: 'J' }),
  dialect('text, DELIMITER @', { delimiter: '@' }),
  dialect('text, DELIMITER |, NULL empty', { delimiter: '|', nullString: '' }),
  dialect('csv', { format: 'csv' }),
  dialect('csv, DELIMITER ;, QUOTE \', ESCAPE \\', { format: 'csv', delimiter: ';', quote: "'", escape: '\\' }),
  dialect('csv, DELIMITER space, NULL \\N', { format: 'csv', delimiter: ' ', nullString: '\\N' }),
  dialect('csv, DELIMITER -', { format: 'csv', delimiter: '-' }),
];

/** A text-format field as PostgreSQL writes it, or (odd) with octal, hex and needless escapes. */
function encodeText(v: string, d: Dialect, r: () => number, odd: boolean): string {
  if (!odd) return encodeCopyField(v, d.delimiter);
  let out = '';
  for (const ch of v) {
    const x = r();
    if (ch === '\\' || ch === d.delimiter || ch === '\n' || ch === '\r' || ch === '\t') out += encodeCopyField(ch, d.delimiter);
    else if (x < 0.1) out += `\\${ch.charCodeAt(0).toString(8).padStart(3, '0')}`;
    else if (x < 0.2) out += `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`;
    else if (x < 0.25 && !/[0-7xbfnrtv]/.test(ch)) out += `\\${ch}`;
    else out += ch;
  }
  return out;
}

/** A csv field: quoted when it has to be (or at random), quotes escaped. */
function encodeCsv(v: string, d: Dialect, r: () => number): string {
  const cd: CsvDialect = { delimiter: d.delimiter.charCodeAt(0), quote: d.quote.charCodeAt(0), escape: d.escape.charCodeAt(0) };
  const must = v === d.nullString || v.includes(d.delimiter) || v.includes(d.quote) || v.includes('\n') || v.includes('\r') || (v.length > 0 && v[0] === d.quote) || (d.escape !== d.quote && v.includes(d.escape));
  return must || r() < 0.3 ? encodeCsvField(v, cd) : v;
}

function line(values: Array<string | null>, d: Dialect, r: () => number): Buffer {
  const odd = r() < 0.3;
  const fields = values.map((v) => (v === null ? d.nullString : d.csv ? encodeCsv(v, d, r) : encodeText(v, d, r, odd)));
  return Buffer.from(`${fields.join(d.delimiter)}${r() < 0.9 ? '\n' : ''}`, 'latin1');
}

interface Column { rule?: MaskStrategy; detect: boolean; cls: 'text' | 'jsonb' }

/** The full scan: decode every field, run every enabled detector, encode what changed. */
function fullScan(buf: Buffer, d: Dialect, cols: Column[], rules: DetectorRules): { out: Buffer; hits: Set<string> } {
  let end = buf.length;
  if (end > 0 && buf[end - 1] === 0x0a) end--;
  if (end > 0 && buf[end - 1] === 0x0d) end--;
  const cd: CsvDialect = { delimiter: d.delimiter.charCodeAt(0), quote: d.quote.charCodeAt(0), escape: d.escape.charCodeAt(0) };
  let raw: Array<{ start: number; end: number; quoted: boolean }>;
  if (d.csv) raw = splitCsvRow(buf, 0, end, cd);
  else {
    raw = [];
    let s = 0;
    let i = 0;
    for (;;) {
      if (i >= end || buf[i] === cd.delimiter) {
        raw.push({ start: s, end: i, quoted: false });
        if (i >= end) break;
        s = ++i;
      } else i += buf[i] === 0x5c && i + 1 < end ? 2 : 1;
    }
  }
  assert.equal(raw.length, cols.length, 'generated line splits into its columns');
  const hits = new Set<string>();
  let out = '';
  let pos = 0;
  for (let c = 0; c < cols.length; c++) {
    const f = raw[c];
    const col = cols[c];
    const text = buf.toString('latin1', f.start, f.end);
    if ((!f.quoted || !d.csv) && text === d.nullString) continue;
    if (!col.rule && !col.detect) continue;
    const v = d.csv ? decodeCsvField(buf, f, cd) : decodeCopyField(buf, f.start, f.end);
    let masked: string | null | undefined;
    if (col.rule) {
      hits.add(`app.people.${COLUMNS[c][0]}`);
      masked = maskWhole(col.rule, v, col.cls, hasher);
    } else {
      const res = maskSpans(v, col.cls, rules, hasher, rules.mask); // every enabled detector, no quick check
      for (const h of res.hits) hits.add(`${h}:${COLUMNS[c][0]}`);
      masked = res.value;
    }
    if (masked === undefined) continue;
    out += buf.toString('latin1', pos, f.start) + (masked === null ? d.nullString : d.csv ? encodeCsvField(masked, cd) : encodeCopyField(masked, d.delimiter));
    pos = f.end;
  }
  out += buf.toString('latin1', pos);
  return { out: Buffer.from(out, 'latin1'), hits };
}

const frame = (l: Buffer) => {
  const f = Buffer.alloc(5 + l.length);
  f[0] = 0x64;
  f.writeInt32BE(4 + l.length, 1);
  l.copy(f, 5);
  return f;
};

interface Setup { name: string; ruleOn?: MaskStrategy; detectors: DetectorName[] }
const SETUPS: Setup[] = [
  { name: 'all detectors, email column redact', ruleOn: 'redact', detectors: ALL },
  { name: 'email detector only, email column partial', ruleOn: 'partial', detectors: ['email'] },
  { name: 'card+ssn+phone, email column hash', ruleOn: 'hash', detectors: ['card', 'ssn', 'phone'] },
  { name: 'secret+iban, no column rule', detectors: ['secret', 'iban'] },
  { name: 'all detectors, no column rule', detectors: ALL },
];

async function check(masker: CopyMasker, byFrame: CopyMasker, d: Dialect, cols: Column[], rules: DetectorRules, r: () => number, lines: number, label: string) {
  let changed = 0;
  const want = new Set<string>();
  for (let k = 0; k < lines; k++) {
    const values = cols.map(() => (r() < 0.1 ? null : value(r)));
    const l = line(values, d, r);
    const full = fullScan(l, d, cols, rules);
    for (const h of full.hits) want.add(h);
    const got = masker.maskLine(l);
    if (!got.equals(full.out)) {
      assert.fail(`${label}: line ${k} ${JSON.stringify(l.toString('latin1'))}\n  masker:    ${JSON.stringify(got.toString('latin1'))}\n  full scan: ${JSON.stringify(full.out.toString('latin1'))}`);
    }
    if (got === l) assert.ok(full.out.equals(l));
    else changed++;
    const f = frame(l);
    const wantFrame = got === l ? f : frame(got);
    if (k % 2 === 0) {
      const gotFrame = byFrame.maskFrame(f);
      assert.ok(gotFrame.equals(wantFrame), `${label}: maskFrame of line ${k}`);
      if (got === l) assert.equal(gotFrame, f, 'unchanged: the same Buffer');
    } else {
      // maskFrameRegion on the message inside a larger buffer (the session's socket chunk).
      const chunk = Buffer.concat([Buffer.from('d\0\0\0\x05\n'), f, Buffer.from('d\0\0\0\x06\\x')]);
      const n = byFrame.maskFrameRegion(chunk, 6, 6 + f.length);
      if (got === l) assert.equal(n, -1, `${label}: unchanged line ${k} gives -1`);
      else assert.ok(byFrame.regionBuffer.subarray(byFrame.regionStart, byFrame.regionStart + n).equals(wantFrame), `${label}: maskFrameRegion of line ${k}`);
    }
  }
  assert.ok(changed > lines / 10, `${label}: the generator must produce values to mask (${changed} of ${lines} lines changed)`);
  assert.deepEqual([...masker.maskedColumns].sort(), [...want].sort(), `${label}: maskedColumns`);
}

test('table COPY: the fast path gives exactly what the full scan gives (text and csv dialects, rules and detectors)', async () => {
  const factory = createMaskerFactory({ connect, hashKey: HASH_KEY });
  try {
    let seed = 1;
    for (const s of SETUPS) {
      const plan: MaskPlan = {
        columns: s.ruleOn ? [{ column: 'app.people.email', strategy: s.ruleOn, rule: 'r' }] : [],
        detectors: s.detectors.map((detector, k) => ({ detector, strategy: (['redact', 'partial', 'hash'] as const)[k % 3], rule: 'r' })),
        denyMaskedExpressions: false,
      };
      const strategy: DetectorRules['strategy'] = {};
      for (const x of plan.detectors) strategy[x.detector] = x.strategy;
      const rules: DetectorRules = { mask: detectorMask(s.detectors), strategy };
      const cols: Column[] = COLUMNS.map(([name, typ]) => ({
        rule: name === 'email' ? s.ruleOn : undefined,
        detect: typ !== 23 && !(name === 'email' && s.ruleOn),
        cls: typ === 3802 ? 'jsonb' : 'text',
      }));
      for (const d of DIALECTS) {
        // jsonb values would have to be JSON: keep doc NULL-or-text by using plain text in it only when valid.
        const r = rng(seed++);
        const masker = (await factory.forCopy(plan, 'app.people', ['id', 'name', 'email', 'note'], d.options))!;
        const byFrame = (await factory.forCopy(plan, 'app.people', ['id', 'name', 'email', 'note'], d.options))!;
        await check(masker, byFrame, d, cols.slice(0, 4), rules, r, 1500, `${s.name}; ${d.name}`);
      }
    }
  } finally {
    await factory.close();
  }
});

test('COPY (query): detectors on every column, fast path equals the full scan', async () => {
  const factory = createMaskerFactory({ connect: () => Promise.reject(new Error('no catalog for COPY (query)')), hashKey: HASH_KEY });
  try {
    let seed = 1000;
    for (const detectors of [ALL, ['email'] as DetectorName[], ['card', 'phone'] as DetectorName[]]) {
      const plan: MaskPlan = { columns: [], detectors: detectors.map((detector) => ({ detector, strategy: 'redact', rule: 'r' })), denyMaskedExpressions: false };
      const rules: DetectorRules = { mask: detectorMask(detectors), strategy: Object.fromEntries(detectors.map((x) => [x, 'redact'])) };
      for (const d of DIALECTS) {
        const r = rng(seed++);
        const masker = (await factory.forCopy(plan, undefined, undefined, d.options))!;
        const byFrame = (await factory.forCopy(plan, undefined, undefined, d.options))!;
        const cols: Column[] = [0, 1, 2].map(() => ({ detect: true, cls: 'text' }));
        // maskedColumns of a COPY (query) are named column1..N; map the full scan's names to them.
        const renamed: CopyMasker = {
          maskLine: (l) => masker.maskLine(l),
          maskFrame: (f) => masker.maskFrame(f),
          maskFrameRegion: (b, start, end) => masker.maskFrameRegion(b, start, end),
          get regionBuffer() {
            return masker.regionBuffer;
          },
          get regionStart() {
            return masker.regionStart;
          },
          get maskedColumns() {
            return new Set([...masker.maskedColumns].map((h) => h.replace(/:column(\d)$/, (_, n) => `:${COLUMNS[Number(n) - 1][0]}`)));
          },
        };
        await check(renamed, byFrame, d, cols, rules, r, 1500, `COPY (query) ${detectors.join('+')}; ${d.name}`);
      }
    }
  } finally {
    await factory.close();
  }
});

test('values split by escapes are still found: a card with DELIMITER space, a JWT with DELIMITER J, an octal @', async () => {
  const factory = createMaskerFactory({ connect: () => Promise.reject(new Error('no catalog for COPY (query)')), hashKey: HASH_KEY });
  try {
    const plan: MaskPlan = { columns: [], detectors: ALL.map((detector) => ({ detector, strategy: 'redact', rule: 'r' })), denyMaskedExpressions: false };
    const cases: Array<[CopyOptions, string]> = [
      [{ delimiter: ' ' }, '1 card\\ 4242\\ 4242\\ 4242\\ 4242\n'], // what PostgreSQL writes for "card 4242 4242 4242 4242"
      [{ delimiter: ' ' }, '1 ssn\\ 123\\ 45\\ 6789\n'],
      [{ delimiter: '-' }, '1-4111\\-1111\\-1111\\-1111\n'],
      [{ delimiter: 'J' }, `1J${encodeCopyField('token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln', 'J')}\n`], // every J escaped
      [{}, '1\tmail alice\\100example.com\n'], // octal escape for '@'
      [{}, '1\tmail alice\\x40example.com\n'], // hex escape for '@'
      [{ format: 'csv', quote: '-', escape: '\\' }, '1,-4111\\-1111\\-1111\\-1111-\n'], // QUOTE '-': the card's dashes escaped
    ];
    for (const [options, text] of cases) {
      const masker = (await factory.forCopy(plan, undefined, undefined, options))!;
      const l = Buffer.from(text, 'latin1');
      const out = masker.maskLine(l).toString('latin1');
      assert.notEqual(out, text, `${JSON.stringify(options)} ${JSON.stringify(text)} must be masked`);
      assert.match(out, /redacted/, `${JSON.stringify(options)} ${JSON.stringify(text)} -> ${JSON.stringify(out)}`);
    }
  } finally {
    await factory.close();
  }
});

test('csv HEADER: the first message is relayed as it is by every entry point, the rows after it are masked', async () => {
  const factory = createMaskerFactory({ connect, hashKey: HASH_KEY });
  try {
    const plan: MaskPlan = { columns: [], detectors: [{ detector: 'email', strategy: 'redact', rule: 'r' }], denyMaskedExpressions: false };
    const header = frame(Buffer.from('id,name\n'));
    const row = frame(Buffer.from('1,mail a@example.com\n'));
    const masked = frame(Buffer.from('1,"mail [redacted:email]"\n'));
    for (const entry of ['line', 'frame', 'region'] as const) {
      const m = (await factory.forCopy(plan, 'app.people', ['id', 'name'], { format: 'csv', header: true }))!;
      const run = (f: Buffer): Buffer => {
        if (entry === 'line') {
          const l = f.subarray(5);
          const out = m.maskLine(l);
          return out === l ? f : frame(out);
        }
        if (entry === 'frame') return m.maskFrame(f);
        const n = m.maskFrameRegion(f, 0, f.length);
        return n < 0 ? f : m.regionBuffer.subarray(m.regionStart, m.regionStart + n);
      };
      assert.equal(run(header), header, `${entry}: header`);
      assert.equal(run(row).toString(), masked.toString(), `${entry}: row`);
      assert.equal(run(header).toString(), frame(Buffer.from('id,name\n')).toString(), `${entry}: a later line like the header is a row (nothing to mask)`);
    }
  } finally {
    await factory.close();
  }
});

test('a malformed line still fails closed on the fast path (column count, unterminated csv quote)', async () => {
  const factory = createMaskerFactory({ connect, hashKey: HASH_KEY });
  try {
    const plan: MaskPlan = { columns: [], detectors: [{ detector: 'email', strategy: 'redact', rule: 'r' }], denyMaskedExpressions: false };
    const text = (await factory.forCopy(plan, 'app.people', ['id', 'name']))!;
    assert.throws(() => text.maskLine(Buffer.from('1\tno email here\textra\n')), /COPY line has 3 columns, expected 2/);
    assert.throws(() => text.maskLine(Buffer.from('1\n')), /COPY line has 1 columns, expected 2/);
    const csv = (await factory.forCopy(plan, 'app.people', ['id', 'name'], { format: 'csv' }))!;
    assert.throws(() => csv.maskLine(Buffer.from('1,"no end\n')), /unterminated quoted CSV field/);
    assert.throws(() => csv.maskFrame(Buffer.from('d\0\0\0\x09abc\n', 'latin1')), /not a complete CopyData message/);
    const good = Buffer.from('d\0\0\0\x08a,b\n', 'latin1');
    assert.equal(csv.maskFrameRegion(good, 0, good.length), -1);
    assert.throws(() => csv.maskFrameRegion(good, 0, good.length - 1), /not a complete CopyData message/);
    assert.throws(() => csv.maskFrameRegion(good, 1, good.length), /not a complete CopyData message/);
    assert.throws(() => csv.maskFrameRegion(good, 0, good.length + 1), /not a complete CopyData message/);
    assert.throws(() => text.maskFrameRegion(Buffer.from('d\0\0\0\x0a1\ta\tb\n', 'latin1'), 0, 11), /COPY line has 3 columns, expected 2/);
  } finally {
    await factory.close();
  }
});

test('maskFrameRegion into the write batch: a long COPY (many slabs, some rows larger than a slab region) comes out exactly as maskFrame gives it, and batches already taken never change', async () => {
  const factory = createMaskerFactory({ connect, hashKey: HASH_KEY });
  try {
    const plan: MaskPlan = {
      columns: [{ column: 'app.people.email', strategy: 'redact', rule: 'r' }],
      detectors: [{ detector: 'email', strategy: 'redact', rule: 'r' }],
      denyMaskedExpressions: false,
    };
    const byRegion = (await factory.forCopy(plan, 'app.people', ['id', 'name', 'email', 'note']))!;
    const byFrame = (await factory.forCopy(plan, 'app.people', ['id', 'name', 'email', 'note']))!;
    const frames: Buffer[] = [];
    for (let i = 0; i < 6000; i++) {
      const note = i % 500 === 0 ? `big ${'x'.repeat(9000)} mail me@example.com` : i % 7 === 0 ? `mail user${i}@example.com` : `plain ${i}`;
      frames.push(frame(Buffer.from(`${i}\tname ${i}\tuser${i}@example.com\t${note}\n`)));
    }
    const chunk = Buffer.concat(frames);
    const batch = new WriteBatch();
    const taken: Array<{ out: Buffer; copy: Buffer }> = [];
    let want: Buffer[] = [];
    let off = 0;
    for (let i = 0; i < frames.length; i++) {
      const end = off + frames[i].length;
      const n = byRegion.maskFrameRegion(chunk, off, end);
      if (n >= 0) batch.addRegion(byRegion.regionBuffer, byRegion.regionStart, n);
      else batch.add(chunk, off, end, false);
      want.push(byFrame.maskFrame(frames[i]));
      off = end;
      if (i % 97 === 96) {
        const out = batch.take()!;
        assert.ok(out.equals(Buffer.concat(want)), `batch ending at row ${i}`);
        taken.push({ out, copy: Buffer.from(out) });
        want = [];
      }
    }
    for (const t of taken) assert.ok(t.out.equals(t.copy), 'a batch already handed to the socket was overwritten');
  } finally {
    await factory.close();
  }
});
