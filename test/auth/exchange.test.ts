// RFC 8693 token exchange at POST /oauth/token: Kubernetes service-account and GitHub Actions OIDC
// JWTs signed by test keys, served from a local JWKS (URL) or a JWKS file; every refusal is an
// RFC 6749 error object with a clear description.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair, createLocalJWKSet, jwtVerify, type CryptoKey } from 'jose';
import { parseConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { AuthEndpoints } from '../../gateway/auth/endpoints.ts';
import { AuthStateStore } from '../../gateway/auth/revocation.ts';
import { generateSigningKey } from '../../gateway/auth/keys.ts';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { verifyToken } from '../../gateway/auth/tokens.ts';

const dir = mkdtempSync(join(tmpdir(), 'airlock-exchange-'));
const K8S_ISS = 'https://kubernetes.default.svc.cluster.local';
const GH_ISS = 'https://token.actions.githubusercontent.com';
let k8sKey: CryptoKey;
let ghKey: CryptoKey;
let strangerKey: CryptoKey;
let jwksServer: http.Server;
let airlock: http.Server;
let airlockUrl: string;
let loaded: LoadedConfig;
let state: AuthStateStore;

before(async () => {
  const k8sPair = await generateKeyPair('RS256');
  k8sKey = k8sPair.privateKey;
  const ghPair = await generateKeyPair('RS256');
  ghKey = ghPair.privateKey;
  strangerKey = (await generateKeyPair('RS256')).privateKey;
  // Kubernetes: the cluster's /openid/v1/jwks copied into a file.
  writeFileSync(join(dir, 'k8s-jwks.json'), JSON.stringify({ keys: [{ ...(await exportJWK(k8sPair.publicKey)), kid: 'k8s-1', alg: 'RS256', use: 'sig' }] }));
  // GitHub: a JWKS URL.
  const ghJwks = JSON.stringify({ keys: [{ ...(await exportJWK(ghPair.publicKey)), kid: 'gh-1', alg: 'RS256', use: 'sig' }] });
  jwksServer = http.createServer((req, res) => {
    res.writeHead(req.url === '/.well-known/jwks' ? 200 : 404, { 'content-type': 'application/json' });
    res.end(req.url === '/.well-known/jwks' ? ghJwks : '{}');
  });
  await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  const jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/.well-known/jwks`;
  writeFileSync(join(dir, 'airlock.pem'), generateSigningKey('EdDSA').privateKey);
  loaded = parseConfig(
    `listen: {}
identities:
  - { name: deploy-bot, groups: [deployers] }
auth:
  keys: [{ id: a1, privateKey: { file: airlock.pem } }]
  exchange:
    ttl: 5m
    issuers:
      - { name: prod-cluster, issuer: ${K8S_ISS}, jwksFile: k8s-jwks.json, audience: airlock }
      - { name: github, issuer: ${GH_ISS}, jwksUrl: ${jwksUrl}, audience: [https://airlock.example.com] }
    agents:
      - { identity: report-bot, owner: alice, issuer: prod-cluster, subject: "system:serviceaccount:reports:report-bot", groups: [agents, readers] }
      - { identity: deploy-bot, owner: bob, issuer: github, subject: "repo:acme/app:ref:refs/heads/main", claims: { repository: acme/app, workflow_ref: ["acme/app/.github/workflows/deploy.yml@refs/heads/main"] } }
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  state = AuthStateStore.open(join(dir, 'auth.db'));
  const endpoints = new AuthEndpoints(loaded, state);
  airlock = http.createServer((req, res) => {
    void endpoints.handle(req, res).then((done) => {
      if (!done) res.writeHead(404).end();
    });
  });
  await new Promise<void>((r) => airlock.listen(0, '127.0.0.1', r));
  airlockUrl = `http://127.0.0.1:${(airlock.address() as AddressInfo).port}`;
});

after(() => {
  airlock?.close();
  jwksServer?.close();
  state?.close();
});

function k8sToken(over: Record<string, unknown> = {}, opts: { key?: CryptoKey; exp?: number; iss?: string; aud?: string } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ 'kubernetes.io': { namespace: 'reports', serviceaccount: { name: 'report-bot' } }, ...over })
    .setProtectedHeader({ alg: 'RS256', kid: 'k8s-1' })
    .setIssuer(opts.iss ?? K8S_ISS)
    .setAudience(opts.aud ?? 'airlock')
    .setSubject('system:serviceaccount:reports:report-bot')
    .setIssuedAt(now - 10)
    .setExpirationTime(opts.exp ?? now + 600)
    .setJti(crypto.randomUUID())
    .sign(opts.key ?? k8sKey);
}

function ghToken(claims: Record<string, unknown> = {}) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ repository: 'acme/app', ref: 'refs/heads/main', workflow_ref: 'acme/app/.github/workflows/deploy.yml@refs/heads/main', ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: 'gh-1' })
    .setIssuer(GH_ISS)
    .setAudience('https://airlock.example.com')
    .setSubject('repo:acme/app:ref:refs/heads/main')
    .setIssuedAt(now)
    .setExpirationTime(now + 300)
    .setJti(crypto.randomUUID())
    .sign(ghKey);
}

async function exchange(subjectToken: string, extra: Record<string, string> = {}) {
  const res = await fetch(`${airlockUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: subjectToken, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', ...extra }),
  });
  return { status: res.status, cache: res.headers.get('cache-control'), body: (await res.json()) as Record<string, unknown> };
}

test('a Kubernetes service-account token becomes a short-lived Airlock token for the mapped agent and owner', async () => {
  const r = await exchange(await k8sToken());
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.cache, 'no-store');
  assert.equal(r.body.token_type, 'Bearer');
  assert.equal(r.body.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token');
  assert.ok((r.body.expires_in as number) <= 300 && (r.body.expires_in as number) > 250);
  const id = await verifyToken(tokenSettings(loaded), r.body.access_token as string);
  assert.deepEqual({ name: id.name, groups: id.groups, owner: id.owner }, { name: 'report-bot', groups: ['agents', 'readers'], owner: 'alice' });
});

test('a GitHub Actions OIDC token maps by subject and exact claims; groups default to the identity\'s', async () => {
  const r = await exchange(await ghToken(), { audience: 'airlock' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  // Verifiable by any service with Airlock's JWKS.
  const jwksRes = await fetch(`${airlockUrl}/.well-known/jwks.json`);
  const { payload } = await jwtVerify(r.body.access_token as string, createLocalJWKSet((await jwksRes.json()) as Parameters<typeof createLocalJWKSet>[0]), { issuer: 'airlock', audience: 'airlock' });
  assert.equal(payload.sub, 'deploy-bot');
  assert.deepEqual(payload.groups, ['deployers']);
  assert.equal(payload.owner, 'bob');
  assert.deepEqual(payload.act, { iss: GH_ISS, sub: 'repo:acme/app:ref:refs/heads/main' });
});

test('refusals: wrong issuer, wrong audience, expired, unknown key, unknown subject, unmatched claim', async () => {
  const cases: Array<[string, Promise<string>, RegExp]> = [
    ['wrong issuer', k8sToken({}, { iss: 'https://evil.example.com' }), /issuer "https:\/\/evil.example.com" is not trusted/],
    ['wrong audience', k8sToken({}, { aud: 'vault' }), /audience is not accepted \(expected airlock\)/],
    ['expired', k8sToken({}, { exp: Math.floor(Date.now() / 1000) - 120 }), /has expired/],
    ['signed by a stranger', k8sToken({}, { key: strangerKey }), /signature is invalid/],
    ['unknown subject', new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'k8s-1' }).setIssuer(K8S_ISS).setAudience('airlock').setSubject('system:serviceaccount:default:default').setIssuedAt().setExpirationTime('5m').setJti('x1').sign(k8sKey), /not mapped to an Airlock agent identity/],
    ['another branch', ghToken({ workflow_ref: 'acme/app/.github/workflows/deploy.yml@refs/heads/evil' }), /not mapped/],
  ];
  for (const [what, tok, msg] of cases) {
    const r = await exchange(await tok);
    assert.equal(r.status, 400, what);
    assert.equal(r.body.error, 'invalid_grant', what);
    assert.match(r.body.error_description as string, msg, what);
  }
});

test('a subject token is exchanged once: a replay is refused, on any replica sharing the state file', async () => {
  const tok = await k8sToken();
  assert.equal((await exchange(tok)).status, 200);
  const again = await exchange(tok);
  assert.equal(again.status, 400);
  assert.match(again.body.error_description as string, /already exchanged \(replay refused\)/);
  // Another replica (its own endpoints and connection to the same file) refuses it too.
  const replica = new AuthEndpoints(loaded, AuthStateStore.open(join(dir, 'auth.db')));
  const res = await new Promise<{ status: number; body: string }>((resolve) => {
    const srv = http.createServer((req, out) => void replica.handle(req, out));
    srv.listen(0, '127.0.0.1', async () => {
      const r = await fetch(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/oauth/token`, {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: tok, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt' }),
      });
      resolve({ status: r.status, body: await r.text() });
      srv.close();
    });
  });
  assert.equal(res.status, 400);
  assert.match(res.body, /replay refused/);
  const noJti = await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'k8s-1' }).setIssuer(K8S_ISS).setAudience('airlock').setSubject('system:serviceaccount:reports:report-bot').setIssuedAt().setExpirationTime('5m').sign(k8sKey);
  assert.match((await exchange(noJti)).body.error_description as string, /no jti/);
});

test('a revoked agent identity gets no token', async () => {
  state.revoke('identity', 'report-bot', 'INC-42 leaked credentials', 'carol');
  try {
    const r = await exchange(await k8sToken());
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'invalid_grant');
    assert.match(r.body.error_description as string, /report-bot is revoked: INC-42 leaked credentials/);
  } finally {
    state.unrevoke('identity', 'report-bot');
  }
  assert.equal((await exchange(await k8sToken())).status, 200);
});

test('malformed requests get RFC 6749 errors', async () => {
  const post = async (body: string, type = 'application/x-www-form-urlencoded', method = 'POST') => {
    const r = await fetch(`${airlockUrl}/oauth/token`, { method, headers: { 'content-type': type }, ...(method === 'POST' ? { body } : {}) });
    return { status: r.status, body: (await r.json()) as { error: string; error_description: string } };
  };
  assert.equal((await post('grant_type=client_credentials')).body.error, 'unsupported_grant_type');
  assert.equal((await post('grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange')).body.error, 'invalid_request');
  assert.equal((await post('{"grant_type":"x"}', 'application/json')).body.error, 'invalid_request');
  const tok = await k8sToken();
  const dup = `grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=${tok}&subject_token=${tok}&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt`;
  assert.match((await post(dup)).body.error_description, /more than once/);
  assert.equal((await exchange(await k8sToken(), { audience: 'someone-else' })).body.error, 'invalid_target');
  assert.equal((await exchange('not.a.jwt')).body.error, 'invalid_grant');
  assert.equal((await post('', 'application/x-www-form-urlencoded', 'GET')).status, 405);
});
