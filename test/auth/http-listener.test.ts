// The whole gateway (app.ts) with an HTTP listener: Airlock's JWKS and token endpoint are served on
// it, an exchanged token reaches a service, HS256 tokens are refused once keys are configured, and a
// revocation turns the next request into 401 {"error":"revoked"}.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, createLocalJWKSet, jwtVerify, type CryptoKey } from 'jose';
import { parseConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { startGateway, type RunningGateway } from '../../gateway/app.ts';
import { FailClosedApprover } from '../../gateway/approvals/approver.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { AuthStateStore } from '../../gateway/auth/revocation.ts';
import { generateSigningKey } from '../../gateway/auth/keys.ts';

const ISS = 'https://kubernetes.default.svc.cluster.local';
const dir = mkdtempSync(join(tmpdir(), 'airlock-authhttp-'));
let upstream: http.Server;
let gw: RunningGateway;
let url: string;
let loaded: LoadedConfig;
let k8sKey: CryptoKey;
let store: SqliteStore;

before(async () => {
  upstream = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const pair = await generateKeyPair('ES256');
  k8sKey = pair.privateKey;
  writeFileSync(join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'c1', alg: 'ES256' }] }));
  writeFileSync(join(dir, 'k1.pem'), generateSigningKey('EdDSA').privateKey);
  writeFileSync(join(dir, 'hs.key'), 's'.repeat(48));
  loaded = parseConfig(
    `listen: {}
auth:
  signingKey: { file: hs.key }
  keys: [{ id: k1, privateKey: { file: k1.pem } }]
  revocationPoll: 500ms
  exchange:
    issuers: [{ name: cluster, issuer: "${ISS}", jwksFile: jwks.json, audience: airlock }]
    agents: [{ identity: report-bot, owner: alice, issuer: cluster, subject: "system:serviceaccount:reports:report-bot", groups: [agents] }]
policy: { default: allow, rules: [] }
http:
  listen: { host: 127.0.0.1, port: 0 }
  services: [{ name: api, url: "http://127.0.0.1:${(upstream.address() as AddressInfo).port}" }]
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  store = SqliteStore.open(':memory:');
  gw = await startGateway(loaded, { store, approver: new FailClosedApprover() });
  const l = gw.listeners.find((x) => x.protocol === 'http')!;
  url = `http://${l.host}:${l.port}`;
});

after(async () => {
  await gw?.close();
  store?.close();
  upstream?.close();
});

async function saToken(): Promise<string> {
  return new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'c1' }).setIssuer(ISS).setAudience('airlock').setSubject('system:serviceaccount:reports:report-bot')
    .setIssuedAt().setExpirationTime('10m').setJti(crypto.randomUUID()).sign(k8sKey);
}

test('JWKS and token exchange on the HTTP listener; the exchanged token reaches the service; revocation gives 401', async () => {
  const jwks = (await (await fetch(`${url}/.well-known/jwks.json`)).json()) as { keys: Array<{ kid: string }> };
  assert.deepEqual(jwks.keys.map((k) => k.kid), ['k1']);
  const ex = await fetch(`${url}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: await saToken(), subject_token_type: 'urn:ietf:params:oauth:token-type:jwt' }),
  });
  const { access_token: token } = (await ex.json()) as { access_token: string };
  assert.equal(ex.status, 200);
  await jwtVerify(token, createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]), { issuer: 'airlock', audience: 'airlock' });
  const ok = await fetch(`${url}/api/hello`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(ok.status, 200);
  await ok.text();

  // HS256 (the shared secret) is not accepted once asymmetric keys are configured.
  const hs = await new SignJWT({ groups: ['agents'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('report-bot').setIssuer('airlock').setAudience('airlock')
    .setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode('s'.repeat(48)));
  const refused = await fetch(`${url}/api/hello`, { headers: { authorization: `Bearer ${hs}` } });
  assert.equal(refused.status, 401);
  assert.match(await refused.text(), /HS256 tokens are not accepted/);

  const cli = AuthStateStore.open(join(dir, '.airlock', 'auth.db'));
  cli.revoke('identity', 'report-bot', 'INC-9', 'carol');
  cli.close();
  let last: Response | undefined;
  for (let i = 0; i < 50; i++) {
    last = await fetch(`${url}/api/hello`, { headers: { authorization: `Bearer ${token}` } });
    if (last.status === 401) break;
    await last.text();
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(last!.status, 401);
  const body = (await last!.json()) as { error: string; reason: string };
  assert.equal(body.error, 'revoked');
  assert.match(body.reason, /revoked by carol: INC-9/);
});
