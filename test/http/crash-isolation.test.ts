// No input from a client or an upstream can stop the gateway process: a JSON document nested
// thousands of levels deep (about 10 KB) on a masked path, as a response, a streamed event, a
// websocket message and a request body, is refused on its own request, and the same process's
// HTTP, PostgreSQL and SSH listeners keep serving (curl, a PostgreSQL SSLRequest, ssh-keyscan).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket, WebSocketServer } from 'ws';
import { startGateway, type RunningGateway } from '../../gateway/app.ts';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { parseConfig } from '../../gateway/config/load.ts';
import { ManualApprover } from '../support/manual-approver.ts';

const DEPTH = 5000;
const deep = () => '['.repeat(DEPTH) + '"ann@example.com"' + ']'.repeat(DEPTH);

let dir: string;
let upstream: http.Server;
let gw: RunningGateway;
let token: string;
let httpUrl: string;

function listener(protocol: string) {
  const l = gw.listeners.find((x) => x.protocol === protocol);
  assert.ok(l, `${protocol} listener`);
  return l;
}

function curl(path: string, args: string[] = []): Promise<{ code: number | null; status: number; body: string }> {
  return new Promise((resolve) => {
    const c = spawn('curl', ['-sS', '-o', '-', '-w', '\n%{http_code}', '-H', `Authorization: Bearer ${token}`, ...args, `${httpUrl}${path}`]);
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('close', (code) => {
      const nl = out.lastIndexOf('\n');
      resolve({ code, status: Number(out.slice(nl + 1)), body: out.slice(0, nl) });
    });
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-crash-'));
  upstream = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url?.endsWith('/deep')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(deep());
      }
      if (req.url?.endsWith('/deep-stream')) {
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write('{"ok":1}\n');
        return res.end(deep() + '\n');
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true,"who":"ann@example.com"}');
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  upstream.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => ws.send(deep())));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')], { stdio: 'ignore' });
  const loaded = parseConfig(
    `
auth: { signingKey: { file: signing.key } }
store: { sqlite: airlock.db }
listen: { postgres: { host: 127.0.0.1, port: 0 } }
identities: [{ name: agent-x, groups: [agents] }]
masking: { detectors: [{ detector: email, strategy: redact }] }
policy:
  rules:
    - name: no-bitcoin
      match: { connections: [svc], methods: [POST], text: ['XBT'] }
      action: deny
ssh:
  listen: { host: 127.0.0.1, port: 0 }
  hostKey: { file: host_key }
http:
  listen: { host: 127.0.0.1, port: 0 }
  services:
    - { name: svc, url: "http://127.0.0.1:${(upstream.address() as AddressInfo).port}" }
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  gw = await startGateway(loaded, { approver: new ManualApprover() });
  const h = listener('http');
  httpUrl = `http://${h.host}:${h.port}`;
  token = await mintToken(tokenSettings(loaded), { name: 'agent-x', groups: ['agents'] });
});

after(async () => {
  await gw?.close();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The PostgreSQL listener answers an SSLRequest with one byte, 'S' or 'N'. */
function postgresAnswers(): Promise<string> {
  const l = listener('postgres');
  return new Promise((resolve, reject) => {
    const s = net.connect(l.port, l.host);
    s.once('error', reject);
    s.once('connect', () => {
      const req = Buffer.alloc(8);
      req.writeInt32BE(8, 0);
      req.writeInt32BE(80877103, 4);
      s.write(req);
    });
    s.once('data', (d: Buffer) => {
      s.destroy();
      resolve(String.fromCharCode(d[0]));
    });
  });
}

describe('crash isolation', () => {
  test('a deeply nested document on every masked channel fails closed on its own request; all listeners keep serving', async () => {
    const r = await curl('/svc/deep');
    assert.equal(r.status, 502, r.body);
    assert.match(JSON.parse(r.body).reason, /nested deeper than \d+ levels/);
    assert.ok(!r.body.includes('ann@example.com'));

    const s = await curl('/svc/deep-stream');
    assert.ok(!s.body.includes('ann@example.com'), 'the stream was cut, never relayed unmasked');

    const ws = new WebSocket(`${httpUrl.replace('http', 'ws')}/svc/live`, { headers: { authorization: `Bearer ${token}` } });
    const close = await new Promise<{ code: number; got: string[] }>((resolve) => {
      const got: string[] = [];
      ws.on('message', (d) => got.push(d.toString()));
      ws.once('close', (code) => resolve({ code, got }));
      ws.once('error', () => undefined);
    });
    assert.equal(close.code, 1008, 'closed as a policy violation');
    assert.deepEqual(close.got, []);

    const b = await curl('/svc/pay', ['-H', 'content-type: application/json', '--data', deep()]);
    assert.equal(b.status, 415, b.body);
    assert.equal(JSON.parse(b.body).rule, 'no-bitcoin');

    // The same process still serves every protocol.
    const ok = await curl('/svc/ok');
    assert.equal(ok.status, 200);
    assert.deepEqual(JSON.parse(ok.body), { ok: true, who: '[redacted:email]' });
    assert.match(await postgresAnswers(), /^[SN]$/);
    const ssh = listener('ssh');
    // Async: the gateway runs in this process, so a blocking child would starve it.
    const scan = await new Promise<string>((resolve) => {
      const c = spawn('ssh-keyscan', ['-T', '10', '-p', String(ssh.port), ssh.host], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.on('close', () => resolve(out));
    });
    assert.match(scan, /ssh-ed25519 AAAA/);
  });
});
