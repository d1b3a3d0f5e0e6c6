// Elevation windows on the HTTP listener, with curl: a request a deny rule refuses goes through while
// the identity's window for a role that lifts that rule is open, every response during the window
// carries `x-airlock-elevation`, the record names the elevation, and a revocation ends it at once.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FailClosedApprover } from '../../gateway/approvals/approver.ts';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { parseConfig } from '../../gateway/config/load.ts';
import { ElevationRegistry, rolePolicies } from '../../gateway/elevation/registry.ts';
import { startHttpGateway, type HttpGateway } from '../../gateway/http/server.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';

let dir: string;
let upstream: http.Server;
let gw: HttpGateway;
let store: SqliteStore;
let registry: ElevationRegistry;
let token: string;
const deleted: string[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-elevation-http-'));
  upstream = http.createServer((req, res) => {
    if (req.method === 'DELETE') deleted.push(req.url ?? '');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  const loaded = parseConfig(
    `
auth: { signingKey: { file: signing.key } }
identities: [{ name: erin, groups: [engineers] }]
policy:
  rules:
    - { name: no-deletes, match: { connections: [api], methods: [DELETE] }, action: deny, reason: deletes need elevated access }
roles:
  deleter: { connections: [api], lift: [no-deletes], approvers: [dba] }
http:
  listen: { host: 127.0.0.1, port: 0 }
  services: [{ name: api, url: "http://127.0.0.1:${(upstream.address() as AddressInfo).port}" }]
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  store = SqliteStore.open(join(dir, 'airlock.db'));
  registry = new ElevationRegistry(store, rolePolicies(loaded.config));
  registry.startPolling(50);
  gw = await startHttpGateway({ loaded, store, approver: new FailClosedApprover(), elevations: registry, port: 0 });
  token = await mintToken(tokenSettings(loaded), { name: 'erin', groups: ['engineers'] });
});

after(async () => {
  registry?.close();
  await gw?.close();
  upstream?.closeAllConnections();
  await new Promise((r) => upstream?.close(r));
  store?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function curlDelete(path: string): Promise<{ status: number; headers: Record<string, string>; body: string }> {
  return new Promise((resolve) => {
    const c = spawn('curl', ['-sS', '-D', '-', '-X', 'DELETE', '-H', `Authorization: Bearer ${token}`, `${gw.url}${path}`]);
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('close', () => {
      const [head, body = ''] = out.split('\r\n\r\n');
      const lines = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
      resolve({ status: Number(lines[0].split(' ')[1]), headers, body });
    });
  });
}

test('a window lifts the deny rule for its identity, every response names it, a revocation ends it at once', async () => {
  const before = await curlDelete('/api/items/1');
  assert.equal(before.status, 403);
  assert.match(before.body, /no-deletes/);
  assert.equal(before.headers['x-airlock-elevation'], undefined);

  const until = new Date(Date.now() + 60_000);
  store.putElevation({ id: 'airlock-access-0000000000000001', identity: 'erin', role: 'deleter', connection: 'api', reason: 'INC-7', approvers: ['bob'], breakGlass: false, startsAt: new Date(Date.now() - 10), until });
  registry.refresh();
  const during = await curlDelete('/api/items/2');
  assert.equal(during.status, 200, during.body);
  assert.equal(during.headers['x-airlock-elevation'], `airlock-access-0000000000000001; role=deleter; until=${until.toISOString()}`);
  assert.deepEqual(deleted, ['/items/2']);

  assert.equal(store.revokeElevation('airlock-access-0000000000000001', new Date(), 'bob', 'done'), true);
  const afterIt = await curlDelete('/api/items/3');
  assert.equal(afterIt.status, 403);
  assert.equal(afterIt.headers['x-airlock-elevation'], undefined);
  assert.deepEqual(deleted, ['/items/2']);

  const ops = store.listSessions({ identity: 'erin' }).flatMap((s) => store.getSession(s.id)?.operations ?? []);
  assert.deepEqual(ops.map((o) => [o.decision, o.classification.elevation ?? null]), [['deny', null], ['allow', 'airlock-access-0000000000000001'], ['deny', null]]);
  assert.equal(store.listAudit('airlock-access-0000000000000001').filter((e) => e.kind === 'elevation.used').length, 1);
});
