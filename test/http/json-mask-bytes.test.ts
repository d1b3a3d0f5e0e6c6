// The byte-level field masker (JsonMasker.maskBytes) against the parse path (JSON.parse, mask,
// JSON.stringify) over many generated bodies, including odd JSON: duplicate keys, escapes in keys
// and values (\u0040 in an email, \u0065mail as a key), deep nesting, huge and odd numbers, BOM,
// invalid UTF-8 and non-JSON. Whenever maskBytes answers, its output must mean what the parse path
// sends (and list the same masked locations); whenever the parse path refuses a body, maskBytes
// must not answer (the caller then parses and refuses).
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { test } from 'node:test';
import { JsonMasker, MAX_JSON_DEPTH, type FieldMask } from '../../gateway/http/json-mask.ts';
import { Hasher } from '../../gateway/masking/strategies.ts';
import { rng } from '../support/random.ts';

const hasher = new Hasher('test-key');


const KEYS = ['users', 'email', 'name', 'id', 'a', 'b', '0', '1', '10', '2', 'items', 'data', '__proto__', 'é', 'kubectl.kubernetes.io/x', '*', '$', 'e\u0301', '😀', ''];
const STRINGS = ['ann@example.com', 'x', '', 'caf\u00e9', 'quote " and \\ backslash', 'line\nbreak', '\u0000ctl', '😀 emoji', 'aGVsbG8gd29ybGQ=', '4242 4242 4242 4242', '\ud800 lone', '[redacted]'];
const NUMBERS = ['0', '-0', '1', '42', '-7', '3.14', '1.0', '1e3', '1E+2', '2.5e-3', '12345678901234567890', '4111111111111111111', '1e400', '-1e400', '0.1'];
const SEGS = ['users', 'email', 'name', 'id', 'a', 'b', '0', '1', '10', '*', 'items', 'data', '__proto__', 'é', 'kubectl.kubernetes.io/x', '😀', 'e\u0301', '$'];
const STRATEGIES = ['redact', 'partial', 'hash', 'null'] as const;

interface Gen {
  text: string;
  dups: boolean;
}

/** A random JSON text with random whitespace, escapes, number spellings and (sometimes) duplicate keys. */
function genDoc(r: () => number, allowDups: boolean): Gen {
  let dups = false;
  const ws = () => (r() < 0.8 ? '' : [' ', '\n', '\t', '\r\n  '][Math.floor(r() * 4)]);
  const str = (s: string): string => {
    // JSON.stringify, then some characters spelled as \u escapes (or \/).
    let out = JSON.stringify(s);
    if (r() < 0.3) {
      out = out.replace(/[@a-z./]/g, (c) => (r() < 0.5 ? (c === '/' && r() < 0.5 ? '\\/' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) : c));
      if (r() < 0.3) out = out.replace(/\\u00([0-9a-f]{2})/g, (_m, h: string) => `\\u00${h.toUpperCase()}`);
    }
    return out;
  };
  const value = (depth: number): string => {
    const x = r();
    if (depth > 6 || x < 0.45) {
      const y = r();
      if (y < 0.5) return str(STRINGS[Math.floor(r() * STRINGS.length)]);
      if (y < 0.8) return NUMBERS[Math.floor(r() * NUMBERS.length)];
      return ['true', 'false', 'null'][Math.floor(r() * 3)];
    }
    if (x < 0.75) {
      const n = Math.floor(r() * 5);
      const keys: string[] = [];
      for (let i = 0; i < n; i++) keys.push(KEYS[Math.floor(r() * KEYS.length)]);
      const uniq = allowDups ? keys : [...new Set(keys)];
      if (new Set(uniq).size !== uniq.length) dups = true;
      return `{${ws()}${uniq.map((k) => `${str(k)}${ws()}:${ws()}${value(depth + 1)}`).join(`${ws()},${ws()}`)}${ws()}}`;
    }
    const n = Math.floor(r() * 5);
    return `[${ws()}${Array.from({ length: n }, () => value(depth + 1)).join(`${ws()},${ws()}`)}${ws()}]`;
  };
  const text = `${ws()}${value(0)}${ws()}`;
  return { text, dups };
}

function genFields(r: () => number): FieldMask[] {
  const n = 1 + Math.floor(r() * 3);
  const out: FieldMask[] = [];
  for (let i = 0; i < n; i++) {
    const len = 1 + Math.floor(r() * 3);
    const segs = Array.from({ length: len }, () => SEGS[Math.floor(r() * SEGS.length)]);
    const path = segs.map((s) => (s === '*' ? '[*]' : /^\d+$/.test(s) ? `[${s}]` : `[${JSON.stringify(s)}]`)).join('');
    out.push({ path, strategy: STRATEGIES[Math.floor(r() * STRATEGIES.length)], rule: 'r', ...(r() < 0.15 ? { encoding: 'base64' as const } : {}) });
  }
  return out;
}

/** The parse path's answer: masked text and locations, or 'refused'. */
function parsePath(m: JsonMasker, buf: Buffer): { value: unknown; masked: string[] } | 'refused' {
  try {
    const r = m.mask(JSON.parse(buf.toString('utf8')));
    return { value: JSON.parse(JSON.stringify(r.value)), masked: r.masked };
  } catch {
    return 'refused';
  }
}

/** What a client reads: parsed, with numbers as JSON.stringify writes them (-0 -> 0, 1e400 -> null). */
function meaning(buf: Buffer): unknown {
  return JSON.parse(JSON.stringify(JSON.parse(buf.toString('utf8'))));
}

function check(m: JsonMasker, buf: Buffer, dups: boolean, label: string): 'fast' | 'fallback' {
  const fast = m.maskBytes(buf);
  const slow = parsePath(m, buf);
  if (fast === undefined) return 'fallback';
  assert.ok(isUtf8(buf), `${label}: answered on invalid UTF-8`);
  assert.notEqual(slow, 'refused', `${label}: answered a body the parse path refuses: ${buf.toString('utf8').slice(0, 300)}`);
  if (slow === 'refused') return 'fast';
  assert.deepStrictEqual(meaning(fast.value), slow.value, `${label}: ${buf.toString('utf8').slice(0, 300)}\n-> ${fast.value.toString('utf8').slice(0, 300)}`);
  if (slow.masked.length < 200) {
    if (dups) for (const x of slow.masked) assert.ok(fast.masked.includes(x), `${label}: ${x} not listed`);
    else assert.deepStrictEqual([...fast.masked].sort(), [...slow.masked].sort(), `${label}: masked locations differ`);
  }
  return 'fast';
}

test('maskBytes means what the parse path sends, over generated documents and field sets', () => {
  const r = rng(16);
  let fast = 0;
  let total = 0;
  for (let i = 0; i < 6000; i++) {
    const fields = genFields(r);
    const m = new JsonMasker({ fields, detectors: [] }, hasher);
    const { text, dups } = genDoc(r, r() < 0.3);
    const label = `case ${i} ${JSON.stringify(fields.map((f) => `${f.path}:${f.strategy}${f.encoding ? ':b64' : ''}`))}`;
    total++;
    if (check(m, Buffer.from(text, 'utf8'), dups, label) === 'fast') fast++;
  }
  // Not vacuous: generated documents are strict JSON, so the byte path answers nearly all of them.
  assert.ok(fast > total * 0.9, `byte path answered only ${fast} of ${total}`);
});

test('maskBytes never answers a body the parse path refuses or cannot read as it is (BOM, bad UTF-8, not JSON, too deep)', () => {
  const r = rng(1616);
  const m = new JsonMasker({ fields: [{ path: 'users.email', strategy: 'redact', rule: 'r' }, { path: 'a.*', strategy: 'hash', rule: 'r' }], detectors: [] }, hasher);
  const base = '{"users":[{"email":"ann@example.com","id":1,"ok":true}],"a":{"b":"x"}}';
  const mutants: Buffer[] = [
    Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(base)]),
    Buffer.from(base.replace('ann', 'a\u0000n')),
    Buffer.concat([Buffer.from('{"users":[{"em'), Buffer.from([0xc1, 0xa1]), Buffer.from('il":"ann@example.com"}]}')]), // overlong 'a'
    Buffer.concat([Buffer.from('{"users":[{"email":"'), Buffer.from([0xff, 0xfe]), Buffer.from('ann@example.com"}]}')]),
    Buffer.concat([Buffer.from('{"users":[{"email":"ann'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}]}')]), // CESU surrogate
    Buffer.from(base.replace(']', ',]')),
    Buffer.from(base.replace('}', ',}')),
    Buffer.from(base.replace(/"/g, "'")),
    Buffer.from(`${base}x`),
    Buffer.from(`${base}${base}`),
    Buffer.from(base.replace('1', '01')),
    Buffer.from(base.replace('1', '+1')),
    Buffer.from(base.replace('1', '.5')),
    Buffer.from(base.replace('1', '1.')),
    Buffer.from(base.replace('1', 'NaN')),
    Buffer.from(base.replace('1', 'Infinity')),
    Buffer.from(base.replace('1', '0x10')),
    Buffer.from(base.replace('ann', 'a\\xnn')),
    Buffer.from(base.replace('ann', 'a\\u00gnn')),
    Buffer.from(base.replace('ann', 'a\\u00')),
    Buffer.from(base.replace('true', 'tru')),
    Buffer.from(`\u00a0${base}`), // NBSP is not JSON whitespace
    Buffer.from(`\u2028${base}`),
    Buffer.from(`${base}\f`),
    Buffer.from(`{"users":${'['.repeat(MAX_JSON_DEPTH)}{"email":"ann@example.com"}${']'.repeat(MAX_JSON_DEPTH)}}`),
    Buffer.from(`${'['.repeat(100000)}`),
    Buffer.from(''),
    Buffer.from(' '),
  ];
  for (const b of mutants) assert.equal(m.maskBytes(b), undefined, b.toString('utf8').slice(0, 120));
  // Random cuts and byte flips of generated documents.
  let n = 0;
  for (let i = 0; i < 4000; i++) {
    const { text, dups } = genDoc(r, true);
    const buf = Buffer.from(text, 'utf8');
    if (buf.length === 0) continue;
    const cut = Math.floor(r() * buf.length);
    const mutated = r() < 0.5 ? buf.subarray(0, cut) : Buffer.concat([buf.subarray(0, cut), Buffer.from([Math.floor(r() * 256)]), buf.subarray(cut + 1)]);
    if (check(m, mutated, dups, `mutant ${i}`) === 'fast') n++;
  }
  assert.ok(n > 0);
  // Exactly at the depth limit: answered (and masked) as the parse path does.
  const deep = Buffer.from(`{"users":${'['.repeat(MAX_JSON_DEPTH - 2)}{"email":"ann@example.com"}${']'.repeat(MAX_JSON_DEPTH - 2)}}`);
  assert.equal(check(m, deep, false, 'at the limit'), 'fast');
  assert.ok(!m.maskBytes(deep)!.value.toString().includes('ann@'));
});

test('every occurrence of a covered key is masked: duplicates, escaped key spellings, arrays of arrays', () => {
  const m = new JsonMasker({ fields: [{ path: 'users.email', strategy: 'redact', rule: 'r' }, { path: 'users.card', strategy: 'partial', rule: 'r' }], detectors: [] }, hasher);
  const docs = [
    '{"users":[{"email":"SECRET1","email":"SECRET2"}]}',
    '{"users":{"email":"SECRET1"},"users":{"email":"SECRET2"}}',
    '{"users":[{"email":"SECRET1"}],"users":5}',
    '{"users":[{"\\u0065mail":"SECRET1","em\\u0061il":"SECRET2","email":"x"}]}',
    '{"\\u0075sers":[[{"email":"SECRET1"}],[[{"email":{"deep":["SECRET2",{"k":"SECRET3"}]}}]]]}',
    '{"users":[{"email":"SECRET\\u0040example.com","card":"4242424242424242"}]}',
    '{"users":[{"email":12345678901234567890,"card":4242424242424242}]}',
    '{"users":[{"email":"\\u0053ECRET1"}]}',
    '{"users":[{"email":true},{"email":"SECRET1"},{"email":null}]}',
  ];
  for (const d of docs) {
    const out = m.maskBytes(Buffer.from(d));
    assert.ok(out, d);
    const text = out.value.toString('utf8');
    // Every string literal, decoded, and every number: no secret, whichever duplicate a client keeps.
    for (const lit of text.match(/"(?:[^"\\]|\\.)*"/g) ?? []) assert.ok(!(JSON.parse(lit) as string).includes('SECRET'), `${d} -> ${text}`);
    assert.ok(!/12345678901234567890|4242424242424242/.test(text), `${d} -> ${text}`);
  }
  assert.deepEqual(m.maskBytes(Buffer.from(docs[0]))!.masked, ['users[0].email']);
  const one = new JsonMasker({ fields: [{ path: 'users.email', strategy: 'redact', rule: 'r' }], detectors: [] }, hasher);
  assert.deepEqual(one.maskBytes(Buffer.from(docs[0]))!.masked, ['users[0].email'], 'a location is listed once');
});

test('the bench document: byte-identical to the parse path, nothing copied when nothing is covered', () => {
  const payload = JSON.stringify({ users: Array.from({ length: 10 }, (_, i) => ({ id: i, name: `user ${i}`, email: `user${i}@example.com`, plan: 'pro' })) });
  const m = new JsonMasker({ fields: [{ path: 'users.email', strategy: 'redact', rule: 'r' }], detectors: [] }, hasher);
  const fast = m.maskBytes(Buffer.from(payload))!;
  const slow = m.mask(JSON.parse(payload));
  assert.equal(fast.value.toString(), JSON.stringify(slow.value));
  assert.deepEqual(fast.masked, slow.masked);
  const none = new JsonMasker({ fields: [{ path: 'nothing', strategy: 'redact', rule: 'r' }], detectors: [] }, hasher);
  const buf = Buffer.from(payload);
  assert.equal(none.maskBytes(buf)!.value, buf);
  // Detectors read every string: the byte path does not answer, the parse path masks.
  const det = new JsonMasker({ fields: [{ path: 'users.name', strategy: 'redact', rule: 'r' }], detectors: [{ detector: 'email', strategy: 'redact', rule: 'r' }] }, hasher);
  assert.equal(det.maskBytes(buf), undefined);
});

test('relayed responses: every content-encoding and chunking masks as the parse path does, refusals stay refusals', async () => {
  const http = await import('node:http');
  const zlib = await import('node:zlib');
  const { relayResponse } = await import('../../gateway/http/response.ts');
  const m = new JsonMasker({ fields: [{ path: 'users.email', strategy: 'redact', rule: 'r' }, { path: 'users.card', strategy: 'partial', rule: 'r' }], detectors: [] }, hasher);
  const bodies = [
    '{"users":[{"email":"ann@example.com","card":"4242424242424242","id":1}]}',
    '{"users":[{"email":"ann\\u0040example.com","\\u0065mail":"bo@example.org"}],"users":[{"email":"cy@example.net"}]}',
    ` {"users" : [ {"email" : 12345678901234567890 , "card" : 4242424242424242 } ] }\n`,
    `{"users":${'['.repeat(200)}{"email":"deep@example.com"}${']'.repeat(200)}}`,
    '\ufeff{"users":[{"email":"bom@example.com"}]}',
    '{"users":[{"email":"trailing@example.com"},]}',
  ];
  const encodings: Array<[string, (b: Buffer) => Buffer]> = [
    ['', (b) => b],
    ['gzip', (b) => zlib.gzipSync(b)],
    ['deflate', (b) => zlib.deflateSync(b)],
    ['br', (b) => zlib.brotliCompressSync(b)],
  ];
  let current: { body: Buffer; enc: string; pieces: number } = { body: Buffer.alloc(0), enc: '', pieces: 1 };
  const upstream = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', ...(current.enc ? { 'content-encoding': current.enc } : {}) });
    // Chunked, in `pieces` writes (split inside escapes, keys and multi-byte characters).
    const b = current.body;
    const step = Math.max(1, Math.ceil(b.length / current.pieces));
    for (let i = 0; i < b.length; i += step) res.write(b.subarray(i, i + step));
    res.end();
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upPort = (upstream.address() as import('node:net').AddressInfo).port;
  const front = http.createServer((req, res) => {
    http.get({ host: '127.0.0.1', port: upPort, path: req.url }, (proxyRes) => void relayResponse(proxyRes, res, m, { maxBytes: 1 << 20, stream: false }));
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(front.address() as import('node:net').AddressInfo).port}/`;
  try {
    for (const text of bodies) {
      const raw = Buffer.from(text, 'utf8');
      const slow = parsePath(m, raw);
      for (const [enc, encode] of encodings) {
        for (const pieces of [1, 3, 17]) {
          current = { body: encode(raw), enc, pieces };
          const r = await fetch(url);
          const out = Buffer.from(await r.arrayBuffer());
          const label = `${JSON.stringify(text.slice(0, 60))} ${enc || 'identity'} x${pieces}`;
          if (slow === 'refused') {
            assert.equal(r.status, 502, label);
            assert.ok(!out.toString().includes('@example'), label);
            continue;
          }
          assert.equal(r.status, 200, label);
          assert.equal(r.headers.get('content-encoding'), null, label);
          assert.equal(Number(r.headers.get('content-length')), out.length, label);
          assert.deepStrictEqual(meaning(out), slow.value, label);
          assert.ok(!out.toString().includes('@example') && !out.toString().includes('\\u0040'), `${label}: ${out}`);
        }
      }
    }
  } finally {
    front.close();
    upstream.close();
    front.closeAllConnections();
    upstream.closeAllConnections();
  }
});
