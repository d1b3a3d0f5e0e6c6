// When a rule masks a response, only what can be masked passes (curl against a local upstream):
// formats Airlock cannot mask are refused naming the rule, JSON without a content type is masked,
// Range cannot cut a document below a field path, websocket messages are masked and a plain GET
// with upgrade headers does not relay its unmasked body, numbers and object keys are detected.
// Paths are matched case-insensitively (per service), bodies in canonical form, and the headers
// upstreams trust for identity or method never come from the client.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import zlib from 'node:zlib';
import { WebSocket, WebSocketServer } from 'ws';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { parseConfig } from '../../gateway/config/load.ts';
import { startHttpGateway, type HttpGateway } from '../../gateway/http/server.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { ManualApprover } from '../support/manual-approver.ts';

const USERS = { users: [{ id: 1, ssn: '123-45-6789', email: 'ann.lee@example.com' }, { id: 2, ssn: '987-65-4321', email: 'bo@example.org' }] };
const USERS_TEXT = JSON.stringify(USERS);
const CSV = 'id,ssn,email\n1,123-45-6789,ann.lee@example.com\n';

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

let dir: string;
let upstream: http.Server;
let gw: HttpGateway;
let store: SqliteStore;
let token: string;
const seen: Seen[] = [];

function startUpstream(): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() });
      const u = new URL(req.url ?? '/', 'http://x');
      const p = u.pathname;
      const send = (type: string | undefined, body: string, status = 200, extra: http.OutgoingHttpHeaders = {}) => {
        res.writeHead(status, { ...(type ? { 'content-type': type } : {}), 'content-length': Buffer.byteLength(body), ...extra });
        res.end(body);
      };
      const cb = u.searchParams.get('callback');
      if (cb) return send('application/javascript', `${cb}(${USERS_TEXT});`);
      if (p.endsWith('/users.csv')) return send('text/csv', CSV);
      if (p.endsWith('/users.xml')) return send('application/xml', '<users><user><ssn>123-45-6789</ssn><email>ann.lee@example.com</email></user></users>');
      if (p.endsWith('/users.html')) return send('text/html', '<p>ann.lee@example.com 123-45-6789</p>');
      if (p.endsWith('/users.js')) return send('application/javascript', USERS_TEXT);
      if (p.endsWith('/users.raw')) return send(undefined, USERS_TEXT);
      if (p.endsWith('/created')) return send('application/json', '{"ok":true}', 201, { location: '/users/ann.lee@example.com', 'x-owner': 'bo@example.org' });
      if (p.endsWith('/partial')) return send('application/json', '{"id":1,"ssn":"123-45-6789"}', 206, { 'content-range': 'bytes 10-37/99' });
      if (p.endsWith('/notes')) return send('text/plain', 'ping ann.lee@example.com\n');
      // The same text in an encoding that is not ASCII-compatible (an upstream honouring Accept-Charset, or a UTF-16 file).
      const wide = /\/notes-(utf-16le|utf-16be|utf-32)$/.exec(p);
      if (wide) {
        const text = 'ping ann.lee@example.com\n';
        const le = Buffer.from(text, 'utf16le');
        const bytes = wide[1] === 'utf-16le' ? le : wide[1] === 'utf-16be' ? Buffer.from(le).swap16() : Buffer.concat([...text].map((ch) => { const b = Buffer.alloc(4); b.writeUInt32BE(ch.codePointAt(0) ?? 0); return b; }));
        res.writeHead(200, { 'content-type': `text/plain; charset=${wide[1]}`, 'content-length': bytes.length });
        return res.end(bytes);
      }
      if (p.endsWith('/notes-bom')) {
        const bytes = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('ping ann.lee@example.com\n', 'utf16le')]);
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': bytes.length });
        return res.end(bytes);
      }
      if (p.endsWith('/jsonwide')) {
        const bytes = Buffer.from('{"who":"ann.lee@example.com"}', 'utf16le');
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-16le', 'content-length': bytes.length });
        return res.end(bytes);
      }
      if (p.endsWith('/cards')) return send('application/json', '{"card":4242424242424242,"big":4111111111111111111,"byEmail":{"ann.lee@example.com":1,"bo@example.org":2},"n":42}');
      if (p.endsWith('/users')) {
        // Honours Range like a static file server would.
        const range = /^bytes=(\d+)-(\d+)$/.exec(String(req.headers.range ?? ''));
        if (range) {
          const [s, e] = [Number(range[1]), Number(range[2])];
          return send('application/json', USERS_TEXT.slice(s, e + 1), 206, { 'content-range': `bytes ${s}-${e}/${USERS_TEXT.length}` });
        }
        return send('application/json', USERS_TEXT);
      }
      send('application/json', JSON.stringify({ ok: true, method: req.method, path: p }));
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    seen.push({ method: 'GET', url: req.url ?? '', headers: req.headers, body: '' });
    if (req.url?.endsWith('/users')) {
      // Not a websocket endpoint: the GET is served as usual, upgrade headers or not.
      socket.end(`HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(USERS_TEXT)}\r\nconnection: close\r\n\r\n${USERS_TEXT}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(JSON.stringify({ who: 'ann.lee@example.com', users: USERS.users }));
      ws.send('plain ann.lee@example.com');
      setTimeout(() => ws.close(1000), 100);
    });
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

before(async () => {
  upstream = await startUpstream();
  const upUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  dir = mkdtempSync(join(tmpdir(), 'airlock-failclosed-'));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  const loaded = parseConfig(
    `
auth: { signingKey: { file: signing.key } }
identities: [{ name: agent-x, groups: [agents] }]
policy:
  rules:
    - name: no-admin
      match: { paths: ['/admin', '/admin/*'] }
      action: deny
      reason: the admin API is off limits
    - name: no-bitcoin
      match: { methods: [POST], text: ['"currency":"XBT"', 'currency=XBT'] }
      action: deny
      reason: crypto payments are not allowed
    - name: mask-people
      match: { connections: [svc] }
      action: mask
      mask:
        fields: [{ path: users.ssn, strategy: redact }]
        detectors: [{ detector: email, strategy: redact }, { detector: card, strategy: redact }]
    - name: mask-notes
      match: { connections: [notes] }
      action: mask
      mask: { detectors: [{ detector: email, strategy: redact }] }
http:
  listen: { host: 127.0.0.1, port: 0 }
  services:
    - { name: svc, url: "${upUrl}/api" }
    - { name: notes, url: "${upUrl}/api" }
    - { name: strict, url: "${upUrl}/api", caseSensitivePaths: true }
    - { name: plain, url: "${upUrl}/api" }
    - { name: trusting, url: "${upUrl}/api", trustHeaders: [x-forwarded-user] }
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  store = SqliteStore.open(join(dir, 'airlock.db'));
  gw = await startHttpGateway({ loaded, store, approver: new ManualApprover(), port: 0 });
  token = await mintToken(tokenSettings(loaded), { name: 'agent-x', groups: ['agents'] });
});

after(async () => {
  await gw?.close();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
  store?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface CurlResult {
  status: number;
  headers: Record<string, string>;
  body: string;
}

function curl(path: string, args: string[] = []): Promise<CurlResult> {
  return new Promise((resolve) => {
    const c = spawn('curl', ['-sS', '--path-as-is', '-D', '-', '-H', `Authorization: Bearer ${token}`, ...args, `${gw.url}${path}`]);
    const chunks: Buffer[] = [];
    c.stdout.on('data', (d: Buffer) => chunks.push(d));
    c.on('close', () => {
      const raw = Buffer.concat(chunks);
      const split = raw.indexOf('\r\n\r\n');
      const head = raw.subarray(0, split).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ status: Number(head[0]?.split(' ')[1]), headers, body: raw.subarray(split + 4).toString('utf8') });
    });
  });
}

const leaks = (body: string) => body.includes('123-45-6789') || body.includes('ann.lee@') || body.includes('bo@example');

describe('masked responses fail closed', () => {
  test('formats that cannot be masked are refused with 502 naming the rule: csv, xml, html, JSONP, javascript', async () => {
    for (const p of ['/svc/users.csv', '/svc/users.xml', '/svc/users.html', '/svc/users?callback=steal', '/svc/users.js']) {
      const r = await curl(p, ['-H', 'Accept: text/csv, application/xml, */*']);
      assert.equal(seen[seen.length - 1].headers.accept, 'application/json', 'only what can be masked is asked for');
      assert.equal(r.status, 502, `${p}: ${r.status} ${r.body}`);
      const body = JSON.parse(r.body) as { error: string; rule: string; reason: string };
      assert.equal(body.error, 'unmaskable response', p);
      assert.equal(body.rule, 'mask-people', p);
      assert.ok(!leaks(r.body), p);
    }
    // Detectors alone can mask plain text; with field masks, text that is not JSON is refused too.
    const notes = await curl('/notes/notes');
    assert.equal(notes.status, 200);
    assert.equal(notes.body, 'ping [redacted:email]\n');
    assert.equal((await curl('/svc/notes')).status, 502);
  });

  // Red team: detectors read text as UTF-8; UTF-16/32 text passed them and the client decoded the raw value.
  test('text or JSON in a charset that is not UTF-8 (or ASCII) is refused, not masked as if it were UTF-8', async () => {
    for (const cs of ['utf-16le', 'utf-16be', 'utf-32']) {
      const r = await curl(`/notes/notes-${cs}`, ['-H', `Accept-Charset: ${cs}`]);
      assert.equal(r.status, 502, `${cs}: ${r.status}`);
      assert.equal((JSON.parse(r.body) as { error: string }).error, 'unmaskable response');
      assert.equal(seen[seen.length - 1].headers['accept-charset'], undefined, 'Accept-Charset is not passed on when a mask applies');
    }
    const bom = await curl('/notes/notes-bom');
    assert.equal(bom.status, 502, 'UTF-16 behind a BOM, without a charset');
    const j = await curl('/svc/jsonwide');
    assert.notEqual(j.status, 200);
    assert.ok(!leaks(j.body.replace(/\0/g, '')));
    const plain = await curl('/notes/notes', ['-H', 'Accept-Charset: utf-16le']);
    assert.equal(plain.body, 'ping [redacted:email]\n');
  });

  test('JSON served without a content type is parsed and masked', async () => {
    const r = await curl('/svc/users.raw');
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers['content-type'], 'application/json');
    const doc = JSON.parse(r.body) as typeof USERS;
    assert.equal(doc.users[0].ssn, '[redacted]');
    assert.equal(doc.users[0].email, '[redacted:email]');
  });

  test('Range and If-Range are stripped: a byte range cannot cut a document below its field paths', async () => {
    const start = USERS_TEXT.indexOf('{"id":1');
    const end = USERS_TEXT.indexOf('}', start);
    const r = await curl('/svc/users', ['-H', `Range: bytes=${start}-${end}`, '-H', 'If-Range: "x"']);
    assert.equal(r.status, 200, r.body);
    assert.ok(!leaks(r.body), r.body);
    const up = seen.filter((s) => s.url === '/api/users').pop()!;
    assert.equal(up.headers.range, undefined);
    assert.equal(up.headers['if-range'], undefined);
    // An upstream that answers partially anyway is refused: a fragment has another root.
    const partial = await curl('/svc/partial');
    assert.equal(partial.status, 502, partial.body);
    assert.ok(!leaks(partial.body));
    // Without a mask, Range is the client's business.
    const plain = await curl('/plain/users', ['-H', 'Range: bytes=0-9']);
    assert.equal(plain.status, 206);
  });

  test('response headers get the detectors too, also without a body (HEAD)', async () => {
    for (const args of [[], ['-I']]) {
      const r = await curl('/svc/created', args);
      assert.equal(r.headers.location, '/users/[redacted:email]', JSON.stringify(args));
      assert.equal(r.headers['x-owner'], '[redacted:email]');
    }
  });

  test('detectors cover numbers (a card as a JSON number) and object keys (an email as a key)', async () => {
    const r = await curl('/svc/cards');
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body), { card: '[redacted:card]', big: '[redacted:card]', byEmail: { '[redacted:email]': 1, '[redacted:email]#2': 2 }, n: 42 });
  });

  test('websocket messages are masked; a plain GET with upgrade headers does not relay its unmasked body', async () => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/svc/live`, { headers: { authorization: `Bearer ${token}` } });
    const got = await new Promise<string[]>((resolve, reject) => {
      const out: string[] = [];
      ws.on('message', (d) => out.push(d.toString()));
      ws.once('close', () => resolve(out));
      ws.once('error', reject);
    });
    assert.equal(got.length, 1, 'the non-JSON message closed the connection instead of passing');
    assert.deepEqual(JSON.parse(got[0]), { who: '[redacted:email]', users: [{ id: 1, ssn: '[redacted]', email: '[redacted:email]' }, { id: 2, ssn: '[redacted]', email: '[redacted:email]' }] });

    const r = await curl('/svc/users', ['-H', 'Connection: Upgrade', '-H', 'Upgrade: websocket', '-H', 'Sec-WebSocket-Version: 13', '-H', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']);
    assert.equal(r.status, 502, r.body);
    assert.ok(!leaks(r.body), r.body);
  });
});

describe('paths, bodies and headers are decided as the upstream will act on them', () => {
  test('rule paths match case-insensitively and through %-escapes of letters, unless the service is case-sensitive', async () => {
    const before = seen.length;
    for (const p of ['/plain/ADMIN/users', '/plain/Admin', '/plain/%41DMIN/users', '/plain/%61dmin/users']) {
      const r = await curl(p);
      assert.equal(r.status, 403, `${p}: ${r.status} ${r.body}`);
      assert.equal(JSON.parse(r.body).rule, 'no-admin');
    }
    assert.equal(seen.length, before, 'nothing reached the upstream');
    assert.equal((await curl('/strict/admin/users')).status, 403);
    const strict = await curl('/strict/ADMIN/users');
    assert.equal(strict.status, 200, 'a case-sensitive service routes /ADMIN elsewhere, as its rules say');
  });

  test('body rules match the canonical body: JSON escapes, YAML and form encodings cannot hide a token', async () => {
    const bodies: Array<[string, string]> = [
      ['application/json', '{"currency":"\\u0058BT"}'],
      ['application/json', '{ "currency" :\n "XBT" }'],
      ['application/merge-patch+json', '{"currency":"X\\u0042T"}'],
      ['', '{"currency":"\\u0058BT"}'],
      ['text/plain', '{"currency":"\\u0058BT"}'],
      ['application/yaml', 'currency: "\\x58BT"'],
      ['application/x-www-form-urlencoded', 'currency=%58BT'],
    ];
    const before = seen.length;
    for (const [ct, body] of bodies) {
      const r = await curl('/plain/pay', ['-X', 'POST', '-H', `content-type: ${ct}`, '--data-binary', body]);
      assert.equal(r.status, 403, `${ct} ${body}: ${r.status} ${r.body}`);
      assert.equal(JSON.parse(r.body).rule, 'no-bitcoin');
    }
    assert.equal(seen.length, before);
  });

  test('a body a body rule cannot read (compressed, protobuf, broken YAML) is refused with 415', async () => {
    const gz = join(dir, 'body.gz');
    writeFileSync(gz, zlib.gzipSync('{"currency":"XBT"}'));
    const pb = join(dir, 'body.pb');
    writeFileSync(pb, Buffer.from([0x6b, 0x38, 0x73, 0x00, 0x0a, 0x03, 0x58, 0x42, 0x54, 0xff]));
    const cases: string[][] = [
      ['-H', 'content-type: application/json', '-H', 'content-encoding: gzip', '--data-binary', `@${gz}`],
      ['-H', 'content-type: application/vnd.kubernetes.protobuf', '--data-binary', `@${pb}`],
      ['-H', 'content-type: application/yaml', '--data-binary', 'a: [unclosed'],
    ];
    for (const args of cases) {
      const r = await curl('/plain/pay', ['-X', 'POST', ...args]);
      assert.equal(r.status, 415, `${args.join(' ')}: ${r.body}`);
      assert.equal(JSON.parse(r.body).rule, 'no-bitcoin');
    }
    const fine = await curl('/plain/pay', ['-X', 'POST', '-H', 'content-type: application/json', '--data', '{"currency":"EUR"}']);
    assert.equal(fine.status, 200);
  });

  test('identity and method-override headers are stripped unless the service trusts them; _method parameters are refused', async () => {
    const spoof = ['X-Forwarded-User: admin', 'X-Remote-User: admin', 'X-Remote-Group: system:masters', 'X-Forwarded-Email: boss@example.com', 'X-HTTP-Method-Override: DELETE', 'X-Method-Override: DELETE', 'X-HTTP-Method: DELETE', 'X-Forwarded-For: 10.0.0.1', 'X-Auth-Request-User: admin'];
    const args = spoof.flatMap((h) => ['-H', h]);
    const r = await curl('/plain/whoami', args);
    assert.equal(r.status, 200, r.body);
    const up = seen.filter((s) => s.url === '/api/whoami').pop()!;
    for (const h of ['x-forwarded-user', 'x-remote-user', 'x-remote-group', 'x-forwarded-email', 'x-http-method-override', 'x-method-override', 'x-http-method', 'x-forwarded-for', 'x-auth-request-user']) {
      assert.equal(up.headers[h], undefined, h);
    }
    const before = seen.length;
    for (const args2 of [['-X', 'POST', '--data', '_method=DELETE'], ['-X', 'POST', '-H', 'content-type: application/json', '--data', '{"_method":"DELETE"}']]) {
      const o = await curl('/plain/users/7', args2);
      assert.equal(o.status, 400, o.body);
      assert.match(JSON.parse(o.body).reason, /_method/);
    }
    assert.equal((await curl('/plain/users/7?_method=DELETE', ['-X', 'POST'])).status, 400);
    assert.equal(seen.length, before, 'method overrides in parameters never reach the upstream');
    await curl('/trusting/whoami', args);
    const t = seen.filter((s) => s.url === '/api/whoami').pop()!;
    assert.equal(t.headers['x-forwarded-user'], 'admin', 'opted in');
    assert.equal(t.headers['x-http-method-override'], undefined);
  });
});
