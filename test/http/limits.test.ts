// Resource limits of the HTTP/Kubernetes listener (http.listen): connections beyond
// maxClientConnections get 503 with Retry-After, slow headers are cut at clientLoginTimeout and a
// trickling body at requestTimeout (408), a request held for approval is not cut by either, a
// 50 MB body is refused with 413 before it is sent or buffered, websocket messages are capped at
// maxMessageBytes (1009) and a slow websocket reader pauses the other side (maxBufferedBytes).
// Every limit reached is counted in /metrics. Real curl, real sockets, a local upstream.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket, WebSocketServer } from 'ws';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { parseConfig } from '../../gateway/config/load.ts';
import { startHttpGateway, type HttpGateway } from '../../gateway/http/server.ts';
import { GatewayMetrics } from '../../gateway/observability/metrics.ts';
import { startAdminServer, type AdminServer } from '../../gateway/observability/admin-server.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { ManualApprover } from '../support/manual-approver.ts';
import { makePki } from '../support/fake-kube-apiserver.ts';
import { log } from '../../gateway/log.ts';

const MAX_CONNECTIONS = 4;
let dir: string;
let upstream: http.Server;
let wss: WebSocketServer;
let gw: HttpGateway;
let store: SqliteStore;
let admin: AdminServer;
let token: string;
const metrics = new GatewayMetrics();
const approver = new ManualApprover();
/** Bytes the upstream websocket managed to hand to its socket, per flood. */
let flooded = 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-http-limits-'));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  upstream = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, path: req.url }));
    });
  });
  wss = new WebSocketServer({ server: upstream, maxPayload: 256 * 1024 * 1024 });
  wss.on('connection', (ws, req) => {
    ws.on('error', () => undefined);
    if (req.url?.includes('/flood')) {
      // Sends as fast as its own socket takes it, up to 256 MiB: how far it gets shows whether the gateway reads on without a reader behind it.
      const chunk = randomBytes(64 * 1024);
      flooded = 0;
      const pump = () => {
        while (ws.readyState === WebSocket.OPEN && ws.bufferedAmount < 256 * 1024 && flooded < 256 * 1024 * 1024) {
          ws.send(chunk);
          flooded += chunk.length;
        }
        if (ws.readyState === WebSocket.OPEN && flooded < 256 * 1024 * 1024) setTimeout(pump, 5);
      };
      pump();
      return;
    }
    if (req.url?.includes('/big')) return ws.send(randomBytes(2 * 1024 * 1024));
    ws.on('message', (m, binary) => ws.send(m, { binary }));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const upUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  const loaded = parseConfig(
    `
auth: { signingKey: { file: signing.key } }
policy:
  rules:
    - name: review-deploys
      match: { connections: [svc], methods: [POST], paths: ['/deploy'] }
      action: review
      reason: deploys need a second pair of eyes
      review: { approvers: [ops], timeout: 5m }
http:
  listen:
    host: 127.0.0.1
    port: 0
    maxClientConnections: ${MAX_CONNECTIONS}
    clientLoginTimeout: 1s
    requestTimeout: 2s
    maxMessageBytes: 1048576
    maxBufferedBytes: 1048576
  maxHold: 10s
  maxBodyBytes: 1048576
  services:
    - { name: svc, url: "${upUrl}" }
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  store = SqliteStore.open(join(dir, 'airlock.db'));
  gw = await startHttpGateway({ loaded, store, approver, port: 0, metrics });
  admin = await startAdminServer({ host: '127.0.0.1', port: 0, metrics, targets: { store, upstreams: [] }, logger: log });
  token = await mintToken(tokenSettings(loaded), { name: 'agent-x', groups: ['agents'] });
});

after(async () => {
  await admin?.close();
  await gw?.close();
  store?.close();
  for (const c of wss?.clients ?? []) c.terminate();
  await new Promise((r) => upstream?.close(r));
  upstream?.closeAllConnections();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A metric's value as the admin listener's /metrics shows it. */
async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${admin.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
  return line ? Number(line.split(' ').pop()) : 0;
}

function curl(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn('curl', ['-sS', ...args]);
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => resolve({ code, out, err }));
  });
}

/** A raw connection; `text()` is everything it received until it closed. */
function raw(): Promise<{ socket: Socket; received: () => string; closed: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(gw.port, '127.0.0.1');
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
    socket.on('error', () => undefined);
    const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now())));
    socket.once('connect', () => resolve({ socket, received: () => got, closed }));
    socket.once('error', reject);
  });
}

test('a connection beyond maxClientConnections is answered 503 with Retry-After; the open ones keep working', async () => {
  const open = await Promise.all(Array.from({ length: MAX_CONNECTIONS }, () => raw()));
  try {
    const extra = await raw();
    await extra.closed;
    assert.match(extra.received(), /^HTTP\/1\.1 503 /);
    assert.match(extra.received(), /\r\nretry-after: 1\r\n/i);
    assert.match(extra.received(), /at most 4 connections \(http\.listen\.maxClientConnections\)/);
    // An existing connection is still served.
    const first = open[0];
    first.socket.write(`GET /svc/still HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\n\r\n`);
    for (let i = 0; i < 100 && !/\r\n\r\n\{.*\}/s.test(first.received()); i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(first.received(), /^HTTP\/1\.1 200 /);
    assert.match(first.received(), /"path":"\/still"/);
    assert.ok((await metric('airlock_limits_hit_total', { protocol: 'http', limit: 'maxClientConnections' })) >= 1);
  } finally {
    for (const c of open) c.socket.destroy();
    await Promise.all(open.map((c) => c.closed));
  }
  const r = await curl(['-o', '/dev/null', '-w', '%{http_code}', '-H', `authorization: Bearer ${token}`, `${gw.url}/svc/again`]);
  assert.equal(r.out, '200');
});

test('headers sent slowly (slowloris) are cut at clientLoginTimeout with 408', async () => {
  const c = await raw();
  const started = Date.now();
  c.socket.write('GET /svc/slow HTTP/1.1\r\nhost: x\r\n');
  const drip = setInterval(() => !c.socket.destroyed && c.socket.write('x-drip: 1\r\n'), 200);
  try {
    const at = await c.closed;
    assert.ok(at - started < 4_000, `cut only after ${at - started} ms`);
    assert.ok(at - started >= 900, `cut after ${at - started} ms, before the timeout`);
    assert.match(c.received(), /^HTTP\/1\.1 408 /);
  } finally {
    clearInterval(drip);
  }
  assert.ok((await metric('airlock_limits_hit_total', { protocol: 'http', limit: 'clientLoginTimeout' })) >= 1);
  assert.ok(store.listAudit().some((e) => e.kind === 'http.refused' && e.detail.refusal === 'clientLoginTimeout'));
});

test('a body trickling in is cut at requestTimeout with 408', async () => {
  const c = await raw();
  const started = Date.now();
  c.socket.write(`POST /svc/upload HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n`);
  const drip = setInterval(() => !c.socket.destroyed && c.socket.write('0123456789'), 200);
  try {
    const at = await c.closed;
    assert.ok(at - started < 5_000, `cut only after ${at - started} ms`);
    assert.match(c.received(), /^HTTP\/1\.1 408 /);
  } finally {
    clearInterval(drip);
  }
  assert.ok((await metric('airlock_limits_hit_total', { protocol: 'http', limit: 'requestTimeout' })) >= 1);
});

test('a request held for approval longer than requestTimeout is not cut by it', async () => {
  const pending = curl(['-o', '-', '-w', '\n%{http_code}', '-X', 'POST', '-H', `authorization: Bearer ${token}`, '-H', 'content-type: application/json', '--data', '{"app":"web"}', `${gw.url}/svc/deploy`]);
  const p = await approver.next();
  await new Promise((r) => setTimeout(r, 3_000)); // past requestTimeout (2s) and clientLoginTimeout (1s)
  p.resolve({ outcome: 'approved', requestId: p.id, approvers: ['olga'], viaGrant: false });
  const r = await pending;
  assert.match(r.out, /\n200$/, r.err);
  assert.match(r.out, /"path":"\/deploy"/);
});

test('a 50 MB body is refused with 413 before it is sent, and without the gateway buffering it', async () => {
  const file = join(dir, 'big.bin');
  const fd = openSync(file, 'w');
  const mb = Buffer.alloc(1024 * 1024, 0x61);
  for (let i = 0; i < 50; i++) writeSync(fd, mb);
  closeSync(fd);
  const rssBefore = process.memoryUsage().rss;
  // curl asks `Expect: 100-continue` for a large body: the 413 comes before any of it is sent.
  const r = await curl(['-o', '/dev/null', '-w', '%{http_code} %{size_upload}', '-H', `authorization: Bearer ${token}`, '-H', 'content-type: application/octet-stream', '-H', 'expect: 100-continue', '--data-binary', `@${file}`, `${gw.url}/svc/upload`]);
  const [status, uploaded] = r.out.split(' ');
  assert.equal(status, '413', r.err);
  assert.ok(Number(uploaded) < 1024 * 1024, `the client sent ${uploaded} bytes of a body refused up front`);
  // Without Expect and without a length (chunked): read up to the cap, then refused.
  const chunked = await curl(['-o', '/dev/null', '-w', '%{http_code}', '-H', `authorization: Bearer ${token}`, '-H', 'content-type: application/octet-stream', '-H', 'expect:', '-H', 'transfer-encoding: chunked', '--data-binary', `@${file}`, `${gw.url}/svc/upload`]);
  assert.equal(chunked.out, '413', chunked.err);
  const grown = process.memoryUsage().rss - rssBefore;
  assert.ok(grown < 40 * 1024 * 1024, `RSS grew by ${Math.round(grown / 1024 / 1024)} MiB`);
  assert.ok((await metric('airlock_limits_hit_total', { protocol: 'http', limit: 'maxBodyBytes' })) >= 2);
});

test('a websocket message larger than maxMessageBytes closes the connection with 1009, either way', async () => {
  const open = (path: string) =>
    new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${gw.port}/svc/${path}`, { headers: { authorization: `Bearer ${token}` }, maxPayload: 64 * 1024 * 1024 });
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
  const before = await metric('airlock_limits_hit_total', { protocol: 'http', limit: 'maxMessageBytes' });
  const echo = await open('echo');
  const echoed = new Promise<string>((r) => echo.once('message', (m) => r(m.toString())));
  echo.send('small');
  assert.equal(await echoed, 'small');
  const code = new Promise<number>((r) => echo.once('close', (c) => r(c)));
  echo.send(randomBytes(2 * 1024 * 1024));
  assert.equal(await code, 1009);
  const big = await open('big');
  big.on("message", () => assert.fail("a message over the limit was relayed"));
  assert.equal(await new Promise<number>((r) => big.once('close', (c) => r(c))), 1009);
  assert.ok((await metric('airlock_limits_hit_total', { protocol: 'http', limit: 'maxMessageBytes' })) >= before + 2);
});

test('a websocket client that does not read pauses the upstream instead of growing the gateway (maxBufferedBytes)', async () => {
  const c = await raw();
  c.socket.write(
    `GET /svc/flood HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: ${randomBytes(16).toString('base64')}\r\n\r\n`,
  );
  for (let i = 0; i < 100 && !c.received().includes('\r\n\r\n'); i++) await new Promise((r) => setTimeout(r, 20));
  assert.match(c.received(), /^HTTP\/1\.1 101 /);
  c.socket.pause(); // never reads again
  await new Promise((r) => setTimeout(r, 2_000));
  try {
    assert.ok(flooded < 48 * 1024 * 1024, `the upstream got ${Math.round(flooded / 1024 / 1024)} MiB out while nobody read`);
    assert.ok((await metric('airlock_limits_hit_total', { protocol: 'http', limit: 'maxBufferedBytes' })) >= 1);
  } finally {
    c.socket.destroy();
  }
});

test('on a TLS listener a connection beyond maxClientConnections gets 503 on its first request', async () => {
  const pki = makePki('airlock-limits');
  const tlsDir = mkdtempSync(join(tmpdir(), 'airlock-http-limits-tls-'));
  writeFileSync(join(tlsDir, 'signing.key'), randomBytes(48).toString('base64'));
  const loaded = parseConfig(
    `
auth: { signingKey: { file: signing.key } }
http:
  listen: { host: 127.0.0.1, port: 0, tls: { cert: ${pki.certFile}, key: ${pki.keyFile} }, maxClientConnections: 1 }
  services:
    - { name: svc, url: "http://127.0.0.1:${(upstream.address() as AddressInfo).port}" }
`,
    join(tlsDir, 'airlock.yaml'),
    tlsDir,
  );
  const tlsStore = SqliteStore.open(join(tlsDir, 'airlock.db'));
  const tlsGw = await startHttpGateway({ loaded, store: tlsStore, approver, port: 0 });
  const tlsToken = await mintToken(tokenSettings(loaded), { name: 'agent-x', groups: ['agents'] });
  const get = (): Promise<{ status: number; retryAfter?: string; body: string }> =>
    new Promise((resolve, reject) => {
      const req = https.get(`${tlsGw.url}/svc/x`, { ca: pki.ca, agent: false, headers: { authorization: `Bearer ${tlsToken}` } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined, body }));
      });
      req.on('error', reject);
    });
  const holder = tlsConnect({ host: '127.0.0.1', port: tlsGw.port, ca: pki.ca, servername: 'localhost' });
  try {
    await new Promise<void>((r, j) => holder.once('secureConnect', () => r()).once('error', j));
    const r = await get();
    assert.equal(r.status, 503);
    assert.equal(r.retryAfter, '1');
    assert.match(r.body, /at most 1 connections/);
  } finally {
    holder.destroy();
    await tlsGw.close();
    tlsStore.close();
    rmSync(tlsDir, { recursive: true, force: true });
    rmSync(pki.dir, { recursive: true, force: true });
  }
});
