// Humans and IdP-issued agent tokens against a REAL OpenID provider (npm oidc-provider, started
// locally): authorization code + PKCE through the loopback redirect, driven by an HTTP client that
// follows redirects and posts the provider's login and consent forms; the device grant approved by
// posting the provider's device forms; client credentials. The IdP's tokens are exchanged at Airlock's
// /oauth/token; groups come from the IdP's group claim.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, statSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';
import { parseConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { AuthEndpoints } from '../../gateway/auth/endpoints.ts';
import { AuthStateStore } from '../../gateway/auth/revocation.ts';
import { generateSigningKey } from '../../gateway/auth/keys.ts';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { verifyToken } from '../../gateway/auth/tokens.ts';
import { credentialsPath, freshCredential, login, logout } from '../../gateway/auth/login.ts';
import { browse } from '../support/oidc-idp.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'airlock-oidc-'));
const ACCOUNTS: Record<string, { email: string; groups: string[]; email_verified: boolean }> = {
  alice: { email: 'alice@example.com', groups: ['dba', 'approvers'], email_verified: true },
  mallory: { email: 'mallory@example.com', groups: ['dba'], email_verified: false },
};
let idp: http.Server;
let issuer: string;
let airlock: http.Server;
let airlockUrl: string;
let loaded: LoadedConfig;
let state: AuthStateStore;

before(async () => {
  process.env.XDG_CONFIG_HOME = join(dir, 'xdg');
  const port = await new Promise<number>((r) => {
    const s = http.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => r(p));
    });
  });
  issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [
      { client_id: 'airlock-cli', application_type: 'native', token_endpoint_auth_method: 'none', redirect_uris: ['http://127.0.0.1/callback'], grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'], response_types: ['code'] },
      { client_id: 'ci-agent', client_secret: 'ci-agent-secret-ci-agent-secret-0123456789', grant_types: ['client_credentials'], response_types: [], redirect_uris: [] },
    ],
    findAccount: (_ctx, id) => (ACCOUNTS[id] ? { accountId: id, claims: () => ({ sub: id, ...ACCOUNTS[id] }) } : undefined),
    claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
    scopes: ['openid', 'email', 'groups', 'offline_access', 'airlock'],
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      clientCredentials: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'urn:airlock',
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ audience: 'airlock', scope: 'airlock', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
      },
    },
    // ID tokens carry the claims themselves (the exchange reads groups and email from the ID token).
    conformIdTokenClaims: false,
    ttl: { IdToken: 600, AccessToken: 600, RefreshToken: 3600, DeviceCode: 600, Interaction: 600, Session: 3600, Grant: 3600 },
  });
  idp = http.createServer(provider.callback());
  await new Promise<void>((r) => idp.listen(port, '127.0.0.1', r));

  writeFileSync(join(dir, 'airlock.pem'), generateSigningKey('ES256').privateKey);
  loaded = parseConfig(
    `listen: {}
identities:
  - { name: ci-bot, groups: [agents] }
auth:
  keys: [{ id: a1, privateKey: { file: airlock.pem } }]
  exchange:
    ttl: 10m
    issuers:
      - { name: corp-idp, issuer: "${issuer}", jwksUrl: "${issuer}/jwks", audience: [airlock-cli, airlock], kind: human, replay: allow, algorithms: [RS256] }
    agents:
      - { identity: ci-bot, owner: alice, issuer: corp-idp, subject: ci-agent, claims: { client_id: ci-agent } }
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  state = AuthStateStore.open(join(dir, 'auth.db'));
  const endpoints = new AuthEndpoints(loaded, state);
  airlock = http.createServer((req, res) => void endpoints.handle(req, res).then((done) => done || res.writeHead(404).end()));
  await new Promise<void>((r) => airlock.listen(0, '127.0.0.1', r));
  airlockUrl = `http://127.0.0.1:${(airlock.address() as AddressInfo).port}`;
});

after(() => {
  idp?.close();
  airlock?.close();
  state?.close();
  idp?.closeAllConnections();
});


test('authorization code + PKCE via the loopback redirect: IdP groups become Airlock groups, cached 0600 under XDG_CONFIG_HOME', async () => {
  let driven: Promise<unknown> | undefined;
  const cred = await login({
    issuer, clientId: 'airlock-cli', airlockUrl, scopes: 'openid email groups offline_access', device: false, prompt: () => undefined,
    onAuthorizationUrl: (u) => {
      assert.match(u, /code_challenge_method=S256/);
      driven = browse(u, { login: 'alice', password: 'any' });
    },
  });
  await driven;
  assert.equal(cred.identity, 'alice@example.com');
  assert.deepEqual(cred.groups, ['dba', 'approvers']);
  assert.ok(cred.refreshToken, 'offline_access gives a refresh token');
  const id = await verifyToken(tokenSettings(loaded), cred.token);
  assert.equal(id.name, 'alice@example.com');
  assert.equal(credentialsPath(), join(dir, 'xdg', 'airlock', 'credentials.json'));
  assert.equal(statSync(credentialsPath()).mode & 0o777, 0o600);
  assert.equal(statSync(join(dir, 'xdg', 'airlock')).mode & 0o777, 0o700);

  // Refreshed through the IdP while its session allows: a new Airlock token, same identity.
  const refreshed = await freshCredential(Number.MAX_SAFE_INTEGER);
  assert.notEqual(refreshed.token, cred.token);
  assert.equal(refreshed.identity, 'alice@example.com');

  // The CLI reads the cache: whoami, psql --print.
  const env = { ...process.env, XDG_CONFIG_HOME: join(dir, 'xdg') };
  const who = await run(process.execPath, [bin, 'whoami', '--json'], { env });
  assert.deepEqual(JSON.parse(who.stdout).groups, ['dba', 'approvers']);
  const psql = await run(process.execPath, [bin, 'psql', 'app', '--print', '--port', '7432'], { env });
  assert.match(psql.stdout, /^PGPASSWORD=ey[\w.-]+ psql "host=127\.0\.0\.1 port=7432 dbname=app user=alice@example\.com"/);

  // logout revokes the refresh token at the IdP and removes the file; whoami then says to log in.
  assert.equal(await logout(), true);
  assert.equal(existsSync(credentialsPath()), false);
  await assert.rejects(run(process.execPath, [bin, 'whoami'], { env }), /not logged in; run `airlock login`/);
});

test('device authorization grant: the user code is approved by posting the provider\'s forms', async () => {
  let shown = '';
  let approval: Promise<unknown> | undefined;
  const cred = await login({
    issuer, clientId: 'airlock-cli', airlockUrl, scopes: 'openid email groups', device: true,
    prompt: (m) => {
      shown = m;
      const code = /enter the code (\S+)/.exec(m)![1];
      const verify = /open (\S+) and enter/.exec(m)![1];
      approval = browse(verify, { user_code: code, login: 'alice', password: 'any' });
    },
  });
  await approval;
  assert.match(shown, /enter the code/);
  assert.equal(cred.identity, 'alice@example.com');
  assert.deepEqual(cred.groups, ['dba', 'approvers']);
  assert.equal(JSON.parse(readFileSync(credentialsPath(), 'utf8')).identity, 'alice@example.com');
  await logout();
});

test('an unverified email is refused at Airlock with a clear error', async () => {
  let driven: Promise<unknown> | undefined;
  await assert.rejects(
    login({ issuer, clientId: 'airlock-cli', airlockUrl, scopes: 'openid email groups', device: false, prompt: () => undefined, onAuthorizationUrl: (u) => void (driven = browse(u, { login: 'mallory', password: 'x' })) }),
    /Airlock refused the sign-in: invalid_grant: the email of this identity is not verified/,
  );
  await driven;
});

test('client credentials: the IdP\'s JWT access token for a CI client is exchanged for the mapped agent with its owner', async () => {
  const res = await fetch(`${issuer}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('ci-agent:ci-agent-secret-ci-agent-secret-0123456789').toString('base64')}` },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'airlock', resource: 'urn:airlock' }),
  });
  const tok = (await res.json()) as { access_token: string };
  assert.equal(res.status, 200, JSON.stringify(tok));
  const ex = await fetch(`${airlockUrl}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: tok.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt' }),
  });
  const body = (await ex.json()) as { access_token: string };
  assert.equal(ex.status, 200, JSON.stringify(body));
  const id = await verifyToken(tokenSettings(loaded), body.access_token);
  assert.deepEqual({ name: id.name, groups: id.groups, owner: id.owner }, { name: 'ci-bot', groups: ['agents'], owner: 'alice' });
});
