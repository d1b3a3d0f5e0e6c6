// The HTTP gateway with curl against a local upstream: the Airlock token is replaced by the
// service's credential, denies are 403 with the rule, path tricks cannot slip past rules, JSON
// responses are masked with a correct length (also when the upstream compresses), held requests
// wait for the real Temporal approval workflow, websockets are proxied and recorded.
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
import { TemporalApprover } from '../../gateway/approvals/temporal-approver.ts';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { parseConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { startHttpGateway, type HttpGateway } from '../../gateway/http/server.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { eventually, startHarness, type Harness } from '../workflows/harness.ts';

const AGENT = { name: 'agent-x', groups: ['agents'], owner: 'carol' };
const USERS = {
  users: [
    { id: 1, name: 'Ann Lee', email: 'ann.lee@example.com', ssn: '123-45-6789', card: '4242 4242 4242 4242', note: 'call ann at ann.lee@example.com' },
    { id: 2, name: 'Bo Chen', email: 'bo@example.org', ssn: '987-65-4321', card: '5555 5555 5555 4444', note: 'ünïcödé stays' },
  ],
  total: 2,
};

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

let h: Harness;
let gw: HttpGateway;
let upstream: http.Server;
let dir: string;
let loaded: LoadedConfig;
let token: string;
const seen: Seen[] = [];
const wsFrames: string[] = [];

function startUpstream(): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const u = new URL(req.url ?? '/', 'http://x');
      if (u.pathname.endsWith('/users')) {
        let out: Buffer = Buffer.from(JSON.stringify(USERS));
        const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/json; charset=utf-8', etag: '"v1"' };
        const enc = u.searchParams.get('enc');
        if (enc === 'gzip') out = zlib.gzipSync(out);
        if (enc === 'br') out = zlib.brotliCompressSync(out);
        if (enc) headers['content-encoding'] = enc;
        headers['content-length'] = out.length;
        res.writeHead(200, headers);
        return res.end(out);
      }
      if (u.pathname.endsWith('/notes.txt')) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        return res.end('contact ann.lee@example.com for access\n');
      }
      if (u.pathname.endsWith('/events')) {
        // A JSON event stream: the second event comes later, on the same response.
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(JSON.stringify({ type: 'ADDED', who: 'ann.lee@example.com' }) + '\n');
        setTimeout(() => res.end(JSON.stringify({ type: 'MODIFIED', who: 'bo@example.org', n: 2 }) + '\n'), 400);
        return;
      }
      if (u.pathname.endsWith('/logo.png')) {
        res.writeHead(200, { 'content-type': 'image/png' });
        return res.end(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x40, 0x40]));
      }
      const text = JSON.stringify({ ok: true, method: req.method, path: u.pathname, body: body || undefined });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  server.on('upgrade', (req, socket, head) => {
    seen.push({ method: 'GET', url: req.url ?? '', headers: req.headers, body: '' });
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (d, binary) => {
        wsFrames.push(d.toString());
        ws.send(binary ? d : `echo: ${d.toString()}`);
      });
    });
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

before(async () => {
  h = await startHarness();
  upstream = await startUpstream();
  const upUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  dir = mkdtempSync(join(tmpdir(), 'airlock-http-'));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  writeFileSync(join(dir, 'billing.token'), 'upstream-secret-token');
  writeFileSync(join(dir, 'legacy.pass'), 'legacy-pass');
  writeFileSync(join(dir, 'keyed.key'), 'key-123');
  loaded = parseConfig(
    `
auth: { signingKey: { file: signing.key } }
identities:
  - { name: agent-x, groups: [agents], owner: carol }
policy:
  rules:
    - name: no-admin
      match: { connections: [billing], paths: ['/admin', '/admin/*'] }
      action: deny
      reason: the admin API is off limits
    - name: no-bitcoin
      match: { connections: [billing], methods: [POST], text: ['"currency"\\s*:\\s*"XBT"'] }
      action: deny
      reason: crypto payments are not allowed
    - name: mask-users
      match: { connections: [billing], paths: ['/v1/users'] }
      action: mask
      mask:
        fields: [{ path: users.ssn, strategy: redact }, { path: 'users[*].card', strategy: partial }]
        detectors: [{ detector: email, strategy: redact }]
    - name: mask-notes
      match: { connections: [billing], paths: ['/notes.txt', '/logo.png', '/events'] }
      action: mask
      mask: { detectors: [{ detector: email, strategy: redact }] }
    - name: review-payments
      match: { connections: [billing], methods: [POST], paths: ['/v1/payments'] }
      action: review
      reason: payments need a second pair of eyes
      review: { approvers: [dba], timeout: 5m }
http:
  listen: { host: 127.0.0.1, port: 0 }
  maxHold: 3s
  maxBodyBytes: 1024
  services:
    - { name: billing, url: "${upUrl}/api", auth: { type: bearer, token: { file: billing.token } } }
    - { name: legacy, url: "${upUrl}", auth: { type: basic, username: svc, password: { file: legacy.pass } } }
    - { name: keyed, url: "${upUrl}", auth: { type: header, name: X-Api-Key, value: { file: keyed.key } } }
    - { name: staff-only, url: "${upUrl}", allow: { groups: [staff] } }
    - { name: down, url: "http://127.0.0.1:1" } # nothing listens on port 1 (a "free" port could be taken by a parallel test)
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  const approver = new TemporalApprover({ client: h.temporal.client, taskQueue: h.taskQueue, store: h.store, channelsDescription: 'the local channel' });
  gw = await startHttpGateway({ loaded, store: h.store, approver, port: 0 });
  token = await mintToken(tokenSettings(loaded), AGENT);
});

after(async () => {
  await gw?.close();
  await new Promise((r) => upstream?.close(r));
  upstream?.closeAllConnections();
  await h?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface CurlResult {
  code: number | null;
  status: number;
  headers: Record<string, string>;
  body: string;
  bodyBytes: number;
}

/** curl -sS with the response headers dumped; `path` is sent as-is. */
function curl(path: string, args: string[] = [], auth: string | null = token): Promise<CurlResult> {
  return new Promise((resolve) => {
    const a = ['-sS', '--path-as-is', '-D', '-', ...(auth !== null ? ['-H', `Authorization: Bearer ${auth}`] : []), ...args, `${gw.url}${path}`];
    const c = spawn('curl', a);
    const chunks: Buffer[] = [];
    c.stdout.on('data', (d: Buffer) => chunks.push(d));
    c.on('close', (code) => {
      const raw = Buffer.concat(chunks);
      const split = raw.indexOf('\r\n\r\n');
      const head = raw.subarray(0, split).toString('latin1').split('\r\n');
      const body = raw.subarray(split + 4);
      const headers: Record<string, string> = {};
      for (const line of head.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ code, status: Number(head[0]?.split(' ')[1]), headers, body: body.toString('utf8'), bodyBytes: body.length });
    });
  });
}

function lastSeen(pathPart: string): Seen | undefined {
  return seen.filter((s) => s.url.includes(pathPart)).pop();
}

describe('HTTP gateway', () => {
  test('upgrades other than websocket (SPDY) are refused with a clear reason', async () => {
    const r = await curl('/billing/v1/exec', ['-H', 'Connection: Upgrade', '-H', 'Upgrade: SPDY/3.1']);
    assert.equal(r.status, 400);
    assert.match(JSON.parse(r.body).reason, /websockets only/);
  });

  test('the Airlock token is replaced by the upstream credential (bearer, basic, custom header) and never forwarded', async () => {
    const r = await curl('/billing/v1/ping?x=1');
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body), { ok: true, method: 'GET', path: '/api/v1/ping' });
    const s = lastSeen('/api/v1/ping?x=1')!;
    assert.equal(s.headers.authorization, 'Bearer upstream-secret-token');
    assert.ok(!JSON.stringify(s.headers).includes(token), 'the agent token never reaches the upstream');

    await curl('/legacy/basic-check');
    assert.equal(lastSeen('/basic-check')!.headers.authorization, `Basic ${Buffer.from('svc:legacy-pass').toString('base64')}`);
    await curl('/keyed/key-check');
    const k = lastSeen('/key-check')!;
    assert.equal(k.headers['x-api-key'], 'key-123');
    assert.equal(k.headers.authorization, undefined);
  });

  test('a missing, bad or expired token is 401 with a Bearer challenge; unknown connections 404; allow lists 403', async () => {
    const none = await curl('/billing/v1/ping', [], null);
    assert.equal(none.status, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="airlock"');
    assert.equal(JSON.parse(none.body).error, 'unauthorized');
    const bad = await curl('/billing/v1/ping', [], 'garbage.token.here');
    assert.equal(bad.status, 401);
    assert.match(JSON.parse(bad.body).reason, /not a valid Airlock token/);
    const expired = await mintToken(tokenSettings(loaded), AGENT, 1000);
    await new Promise((r) => setTimeout(r, 2100));
    const ex = await curl('/billing/v1/ping', [], expired);
    assert.equal(ex.status, 401);
    assert.match(JSON.parse(ex.body).reason, /expired/);
    assert.equal((await curl('/nope/x')).status, 404);
    const staff = await curl('/staff-only/x');
    assert.equal(staff.status, 403);
    assert.equal(JSON.parse(staff.body).rule, 'connection-allow');
    const down = await curl('/down/x');
    assert.equal(down.status, 502);
    assert.match(JSON.parse(down.body).reason, /upstream down unavailable: ECONNREFUSED/);
  });

  test('deny is 403 JSON naming the rule and reason, and nothing reaches the upstream', async () => {
    const before = seen.length;
    const r = await curl('/billing/admin/users/7', ['-X', 'DELETE']);
    assert.equal(r.status, 403);
    assert.deepEqual(JSON.parse(r.body), { error: 'denied', rule: 'no-admin', reason: 'the admin API is off limits' });
    const b = await curl('/billing/v1/payments', ['-H', 'content-type: application/json', '--data', '{"amount": 5, "currency": "XBT"}']);
    assert.equal(b.status, 403);
    assert.equal(JSON.parse(b.body).rule, 'no-bitcoin', 'JSON request bodies are visible to rules');
    assert.equal(seen.length, before);
  });

  test('path traversal and encoding tricks are refused or decided on the normalized path', async () => {
    const before = seen.length;
    for (const p of [
      '/billing/v1/../admin/users',
      '/billing/v1/%2e%2e/admin/users',
      '/billing/v1/.%2E/admin/users',
      '/billing/v1/%252e%252e/admin/users',
      '/billing/admin%2fusers',
      '/billing/v1/..\\admin/users',
      '/billing/admin;x=1/users',
      '/billing/./admin/users',
    ]) {
      const r = await curl(p);
      assert.equal(r.status, 400, `${p} -> ${r.status} ${r.body}`);
      assert.equal(JSON.parse(r.body).error, 'bad request');
    }
    for (const p of ['/billing//admin/users', '/billing/%61dmin/users', '/billing/admin', '/billing///admin//']) {
      const r = await curl(p);
      assert.equal(r.status, 403, `${p} -> ${r.status} ${r.body}`);
      assert.equal(JSON.parse(r.body).rule, 'no-admin');
    }
    assert.equal(seen.length, before, 'none of them reached the upstream');
  });

  test('JSON responses are masked by field path and detector, with a correct content-length, compressed or not', async () => {
    for (const enc of ['', 'gzip', 'br']) {
      const r = await curl(`/billing/v1/users${enc ? `?enc=${enc}` : ''}`, ['-H', 'Accept-Encoding: gzip, br']);
      assert.equal(r.status, 200, r.body);
      assert.equal(r.headers['content-encoding'], undefined, 'sent uncompressed after masking');
      assert.equal(r.headers.etag, undefined, 'the body changed, so its etag is dropped');
      assert.equal(Number(r.headers['content-length']), r.bodyBytes);
      const doc = JSON.parse(r.body) as typeof USERS;
      assert.equal(doc.users[0].ssn, '[redacted]');
      assert.equal(doc.users[0].card, '****-****-****-4242'.replace(/-/g, ' '));
      assert.equal(doc.users[0].email, '[redacted:email]');
      assert.equal(doc.users[0].note, 'call ann at [redacted:email]');
      assert.equal(doc.users[1].note, 'ünïcödé stays');
      assert.equal(doc.users[1].name, 'Bo Chen');
      assert.equal(doc.total, 2);
      assert.ok(!r.body.includes('123-45-6789') && !r.body.includes('ann.lee@'));
    }
    const t = await curl('/billing/notes.txt');
    assert.equal(t.body, 'contact [redacted:email] for access\n');
    assert.equal(Number(t.headers['content-length']), t.bodyBytes);
    const t0 = Date.now();
    const firstEvent = await new Promise<{ line: string; at: number; rest: Promise<string> }>((resolve) => {
      const c = spawn('curl', ['-sSN', '-H', `Authorization: Bearer ${token}`, `${gw.url}/billing/events`]);
      let out = '';
      let first = true;
      const rest = new Promise<string>((r) => c.on('close', () => r(out)));
      c.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (first && out.includes('\n')) {
          first = false;
          resolve({ line: out.split('\n')[0], at: Date.now(), rest });
        }
      });
    });
    assert.deepEqual(JSON.parse(firstEvent.line), { type: 'ADDED', who: '[redacted:email]' });
    const all = await firstEvent.rest;
    assert.ok(Date.now() - firstEvent.at >= 300 && firstEvent.at - t0 < 2000, 'events are masked one by one, not buffered');
    assert.deepEqual(all.trim().split('\n').map((l) => JSON.parse(l)), [{ type: 'ADDED', who: '[redacted:email]' }, { type: 'MODIFIED', who: '[redacted:email]', n: 2 }]);
    const png = await curl('/billing/logo.png');
    assert.equal(png.status, 502, 'a body that must be masked but cannot be (an image) is withheld');
    assert.equal(JSON.parse(png.body).error, 'unmaskable response');
    assert.equal(JSON.parse(png.body).rule, 'mask-notes');

    const rec = await eventually(() => {
      for (const s of h.store.listSessions({ connection: 'billing', limit: 100 })) {
        const op = h.store.getSession(s.id)?.operations.find((o) => o.text === 'GET /v1/users?enc=br');
        if (op) return op;
      }
      return undefined;
    }, 3000, 'recorded masked request');
    assert.equal(rec.decision, 'mask');
    assert.equal(rec.rule, 'mask-users');
    assert.ok(rec.maskedColumns.includes('users[0].ssn') && rec.maskedColumns.includes('detector:email@users[1].email'), JSON.stringify(rec.maskedColumns));
  });

  test('a held request waits for approval on the open connection, then runs', async () => {
    const before = seen.filter((s) => s.url.includes('/payments')).length;
    const running = curl('/billing/v1/payments', ['-H', 'content-type: application/json', '--data', '{"amount": 100, "to": "acme"}']);
    const view = await eventually(() => h.local.list().find((r) => r.view.text.includes('"to":"acme"'))?.view, 10_000, 'approval request');
    assert.equal(view.rule, 'review-payments');
    assert.match(view.text, /^POST \/v1\/payments\n\{"amount":100,"to":"acme"\}$/, 'the body as rules match it: canonical JSON');
    assert.equal(seen.filter((s) => s.url.includes('/payments')).length, before, 'held, not forwarded');
    const d = await submitDecision(h.temporal.client, h.store, h.sign({ requestId: view.requestId, approver: 'bob', approverGroups: ['dba'], decision: 'approve', via: 'test' }));
    assert.equal(d.ok, true);
    const r = await running;
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers['x-airlock-approval'], view.requestId);
    assert.equal(JSON.parse(r.body).body, '{"amount": 100, "to": "acme"}', 'the buffered body was forwarded intact');
  });

  test("the agent's X-Airlock-Reason and traceparent headers reach the approval request (PII redacted) and the audit", async () => {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const running = curl('/billing/v1/payments', ['-H', 'content-type: application/json', '-H', 'X-Airlock-Reason: refund for dave@example.com', '-H', 'X-Airlock-Ticket: INC-9', '-H', `traceparent: ${tp}`, '--data', '{"amount": 7, "to": "reasons"}']);
    const view = await eventually(() => h.local.list().find((r) => r.view.text.includes('"to":"reasons"'))?.view, 10_000, 'approval request');
    assert.ok(view.details?.includes(`agent's reason: "refund for [redacted:email]" (http header)`), JSON.stringify(view.details));
    assert.ok(view.details?.includes('ticket: INC-9'));
    assert.ok(view.details?.includes(`trace: ${tp}`));
    const d = await submitDecision(h.temporal.client, h.store, h.sign({ requestId: view.requestId, approver: 'bob', approverGroups: ['dba'], decision: 'reject', reason: 'no', via: 'test' }));
    assert.equal(d.ok, true);
    assert.equal((await running).status, 403);
    const ctx = await eventually(() => h.store.listAudit(view.requestId).find((e) => e.kind === 'approval.context'), 5000, 'context audited');
    assert.equal((ctx.detail as { context: { traceparent: string } }).context.traceparent, tp);
    assert.ok(!JSON.stringify(h.store.listAudit()).includes('dave@example.com'));
  });

  test('a hold longer than maxHold answers 503 + Retry-After; after approval the retry runs via the grant', async () => {
    const args = ['-H', 'content-type: application/json', '--data', '{"amount": 200, "to": "globex"}'];
    const t0 = Date.now();
    const first = await curl('/billing/v1/payments', args);
    assert.equal(first.status, 503, first.body);
    assert.ok(Date.now() - t0 >= 2900, 'held for maxHold');
    assert.ok(Number(first.headers['retry-after']) >= 1);
    const body = JSON.parse(first.body) as { error: string; requestId: string; deadline: string };
    assert.equal(body.error, 'approval pending');
    assert.match(body.requestId, /^airlock-/);
    const d = await submitDecision(h.temporal.client, h.store, h.sign({ requestId: body.requestId, approver: 'bob', approverGroups: ['dba'], decision: 'approve', via: 'test' }));
    assert.equal(d.ok, true);
    const retry = await curl('/billing/v1/payments', args);
    assert.equal(retry.status, 200, retry.body);
    assert.equal(retry.headers['x-airlock-approval'], body.requestId);
  });

  test('a client that gives up while held cancels the approval request', async () => {
    const r = await curl('/billing/v1/payments', ['--max-time', '1', '-H', 'content-type: application/json', '--data', '{"amount": 300, "to": "initech"}']);
    assert.notEqual(r.code, 0, 'curl timed out');
    const view = await eventually(() => h.local.list({ all: true }).find((x) => x.view.text.includes('initech'))?.view, 10_000, 'the request');
    await eventually(() => h.local.get(view.requestId)?.request.view.status === 'cancelled', 10_000, 'cancelled');
    assert.ok(!seen.some((s) => s.body.includes('initech')), 'never forwarded');
  });

  test('request bodies over maxBodyBytes are refused with 413', async () => {
    const r = await curl('/billing/v1/upload', ['-H', 'content-type: application/json', '--data', JSON.stringify({ blob: 'x'.repeat(2000) })]);
    assert.equal(r.status, 413);
  });

  test('websocket upgrades are proxied with the upstream credential and recorded (frames, sizes)', async () => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/billing/v1/stream`, { headers: { authorization: `Bearer ${token}` } });
    await new Promise((r, j) => (ws.once('open', r), ws.once('error', j)));
    const replies: string[] = [];
    ws.on('message', (d) => replies.push(d.toString()));
    ws.send('hello');
    ws.send('world!');
    await eventually(() => replies.length === 2, 5000, 'echoes');
    assert.deepEqual(replies, ['echo: hello', 'echo: world!']);
    ws.close();
    const up = lastSeen('/api/v1/stream')!;
    assert.equal(up.headers.authorization, 'Bearer upstream-secret-token');
    const rec = await eventually(() => {
      for (const s of h.store.listSessions({ connection: 'billing', limit: 100 })) {
        const op = h.store.getSession(s.id)?.operations.find((o) => o.text === 'GET /v1/stream');
        if (op) return op;
      }
      return undefined;
    }, 5000, 'websocket recorded');
    const cls = rec.classification as { websocket: { frames: { toClient: number; fromClient: number }; bytes: { toClient: number; fromClient: number } } };
    assert.deepEqual(cls.websocket.frames, { toClient: 2, fromClient: 2 });
    assert.deepEqual(cls.websocket.bytes, { toClient: 'echo: hello'.length + 'echo: world!'.length, fromClient: 11 });

    const denied = new WebSocket(`${gw.url.replace('http', 'ws')}/billing/admin/live`, { headers: { authorization: `Bearer ${token}` } });
    const status = await new Promise<number>((r) => denied.once('unexpected-response', (_q, res) => r(res.statusCode ?? 0)));
    assert.equal(status, 403);
  });
});
