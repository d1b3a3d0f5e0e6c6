// Request smuggling through body framing: the upstream must read exactly the body Airlock decided
// on, whatever framing the client used. A chunked DELETE used to reach the upstream as
// `content-length: 0` followed by its body, which the upstream's keep-alive connection then parsed
// as a NEXT request that no rule ever saw (here a denied `GET /admin`).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FailClosedApprover } from '../../gateway/approvals/approver.ts';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { parseConfig } from '../../gateway/config/load.ts';
import { startHttpGateway, type HttpGateway } from '../../gateway/http/server.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';

let dir: string;
let upstream: http.Server;
let store: SqliteStore;
let gw: HttpGateway;
let token: string;
const seen: Array<{ method: string; url: string; body: string }> = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-framing-'));
  upstream = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method!, url: req.url!, body: Buffer.concat(chunks).toString() });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  const loaded = parseConfig(
    `
auth: { signingKey: { file: signing.key } }
policy:
  rules:
    - name: no-admin
      match: { connections: [svc], paths: ['/admin'] }
      action: deny
http:
  listen: { host: 127.0.0.1, port: 0 }
  services:
    - { name: svc, url: "http://127.0.0.1:${(upstream.address() as AddressInfo).port}" }
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  store = SqliteStore.open(join(dir, 'airlock.db'));
  gw = await startHttpGateway({ loaded, store, approver: new FailClosedApprover() });
  token = await mintToken(tokenSettings(loaded), { name: 'agent', groups: [] });
});

after(async () => {
  await gw?.close();
  store?.close();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Sends raw request bytes and resolves with the first response's status line. */
function raw(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(gw.port, gw.host);
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.includes('\r\n\r\n')) {
        s.destroy();
        resolve(got.slice(0, got.indexOf('\r\n')));
      }
    });
    s.on('error', reject);
    s.write(bytes);
  });
}

const smuggled = 'GET /admin HTTP/1.1\r\nhost: up\r\n\r\n';
const chunk = (s: string) => `${Buffer.byteLength(s).toString(16)}\r\n${s}\r\n0\r\n\r\n`;

test('a chunked body is forwarded as exactly that body; the request inside it is never run', async () => {
  for (const method of ['DELETE', 'OPTIONS', 'POST', 'GET']) {
    seen.length = 0;
    const status = await raw(`${method} /svc/things HTTP/1.1\r\nhost: airlock\r\nauthorization: Bearer ${token}\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n${chunk(smuggled)}`);
    assert.equal(status, 'HTTP/1.1 200 OK', method);
    // A request parsed out of the body would arrive right after the first one.
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(seen, [{ method, url: '/things', body: smuggled }], method);
  }
  assert.equal((await raw(`GET /svc/admin HTTP/1.1\r\nhost: airlock\r\nauthorization: Bearer ${token}\r\n\r\n`)).split(' ')[1], '403', 'the smuggled request is one the rules deny');
});
