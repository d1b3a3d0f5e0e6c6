// The human side of OIDC: `airlock login` signs in at the company's identity provider with
// openid-client (authorization code + PKCE through a loopback redirect, RFC 8252; or the device
// authorization grant, RFC 8628), exchanges the ID token at Airlock's /oauth/token (RFC 8693) for a
// short-lived Airlock token, and caches both the Airlock token and the IdP refresh token in
// $XDG_CONFIG_HOME/airlock/credentials.json (mode 0600). Later commands refresh the Airlock token
// while the IdP session allows (refresh token still accepted); when it does not, they say to log in.
import http from 'node:http';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import { decodeJwt } from 'jose';
import { GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ID_TOKEN } from './exchange.ts';

export interface Credential {
  issuer: string;
  clientId: string;
  airlockUrl: string;
  identity: string;
  groups: string[];
  /** The Airlock token and when it expires (ms since epoch). */
  token: string;
  expiresAt: number;
  refreshToken?: string;
}

export interface LoginOptions {
  issuer: string;
  clientId: string;
  airlockUrl: string;
  scopes: string;
  device: boolean;
  /** Where instructions go (URL to open, user code). */
  prompt: (message: string) => void;
  /** Called with the authorization URL (tests drive the browser side with it). */
  onAuthorizationUrl?: (url: string) => void;
}

export class LoginError extends Error {
  override name = 'LoginError';
}

export function credentialsPath(): string {
  const base = process.env.XDG_CONFIG_HOME && process.env.XDG_CONFIG_HOME.startsWith('/') ? process.env.XDG_CONFIG_HOME : join(homedir(), '.config');
  return join(base, 'airlock', 'credentials.json');
}

function save(c: Credential): void {
  const p = credentialsPath();
  mkdirSync(join(p, '..'), { recursive: true, mode: 0o700 });
  writeFileSync(p, JSON.stringify(c, null, 2) + '\n', { mode: 0o600 });
  chmodSync(p, 0o600); // an existing file keeps its mode on write
}

export function loadCredential(): Credential | undefined {
  try {
    return JSON.parse(readFileSync(credentialsPath(), 'utf8')) as Credential;
  } catch {
    return undefined;
  }
}

function isLoopback(u: URL): boolean {
  return u.hostname === '127.0.0.1' || u.hostname === 'localhost' || u.hostname === '[::1]';
}

async function discover(issuer: string, clientId: string): Promise<oidc.Configuration> {
  const u = new URL(issuer);
  // Plain http only for an IdP on this machine (local development, tests).
  const options = u.protocol === 'http:' && isLoopback(u) ? { execute: [oidc.allowInsecureRequests] } : undefined;
  if (u.protocol !== 'https:' && !options) throw new LoginError(`the issuer must be https (got ${issuer})`);
  return oidc.discovery(u, clientId, undefined, oidc.None(), options);
}

/** Exchanges an IdP ID token at Airlock for an Airlock token. */
async function exchangeAtAirlock(airlockUrl: string, idToken: string): Promise<{ token: string; expiresAt: number; identity: string; groups: string[] }> {
  const res = await fetch(new URL('/oauth/token', airlockUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: GRANT_TOKEN_EXCHANGE, subject_token: idToken, subject_token_type: TOKEN_TYPE_ID_TOKEN }),
  });
  const body = (await res.json().catch(() => ({}))) as { access_token?: string; expires_in?: number; error?: string; error_description?: string };
  if (!res.ok || !body.access_token) throw new LoginError(`Airlock refused the sign-in: ${body.error ?? res.status}${body.error_description ? `: ${body.error_description}` : ''}`);
  const claims = decodeJwt(body.access_token);
  return {
    token: body.access_token,
    expiresAt: Date.now() + (body.expires_in ?? 0) * 1000,
    identity: String(claims.sub),
    groups: Array.isArray(claims.groups) ? claims.groups.map(String) : [],
  };
}

async function authorizationCode(config: oidc.Configuration, o: LoginOptions): Promise<oidc.TokenEndpointResponse> {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  let server: http.Server | undefined;
  try {
    const callback = new Promise<URL>((resolve, reject) => {
      server = http.createServer((req, res) => {
        const url = new URL(req.url ?? '/', `http://127.0.0.1:${(server!.address() as AddressInfo).port}`);
        if (url.pathname !== '/callback') {
          res.writeHead(404).end();
          return;
        }
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('Airlock: signed in. You can close this window.\n');
        resolve(url);
      });
      server.on('error', reject);
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const redirectUri = `http://127.0.0.1:${(server!.address() as AddressInfo).port}/callback`;
    const url = oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: o.scopes,
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      ...(o.scopes.split(' ').includes('offline_access') ? { prompt: 'consent' } : {}),
    });
    o.prompt(`Open this URL in your browser to sign in:\n  ${url.href}`);
    o.onAuthorizationUrl?.(url.href);
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new LoginError('sign-in timed out after 5 minutes')), 300_000).unref());
    const got = await Promise.race([callback, timeout]);
    return await oidc.authorizationCodeGrant(config, got, { pkceCodeVerifier: verifier, expectedState: state });
  } finally {
    server?.close();
  }
}

async function deviceCode(config: oidc.Configuration, o: LoginOptions): Promise<oidc.TokenEndpointResponse> {
  const d = await oidc.initiateDeviceAuthorization(config, { scope: o.scopes });
  o.prompt(`To sign in, open ${d.verification_uri} and enter the code ${d.user_code}${d.verification_uri_complete ? `\n  (or open ${d.verification_uri_complete})` : ''}`);
  return oidc.pollDeviceAuthorizationGrant(config, d);
}

export async function login(o: LoginOptions): Promise<Credential> {
  const config = await discover(o.issuer, o.clientId);
  const tokens = o.device ? await deviceCode(config, o) : await authorizationCode(config, o);
  if (!tokens.id_token) throw new LoginError('the identity provider returned no ID token (is the openid scope allowed?)');
  const a = await exchangeAtAirlock(o.airlockUrl, tokens.id_token);
  const cred: Credential = { issuer: o.issuer, clientId: o.clientId, airlockUrl: o.airlockUrl, ...a, ...(tokens.refresh_token ? { refreshToken: tokens.refresh_token } : {}) };
  save(cred);
  return cred;
}

/** The cached credential, refreshed through the IdP when the Airlock token has (almost) expired. */
export async function freshCredential(minValidityMs = 60_000): Promise<Credential> {
  const c = loadCredential();
  if (!c) throw new LoginError('not logged in; run `airlock login`');
  if (c.expiresAt - Date.now() > minValidityMs) return c;
  if (!c.refreshToken) throw new LoginError('the Airlock credential expired and the identity provider gave no refresh token; run `airlock login`');
  let tokens: oidc.TokenEndpointResponse;
  try {
    tokens = await oidc.refreshTokenGrant(await discover(c.issuer, c.clientId), c.refreshToken);
  } catch (err) {
    throw new LoginError(`the identity provider session ended (${(err as Error).message}); run \`airlock login\``);
  }
  if (!tokens.id_token) throw new LoginError('the identity provider returned no ID token on refresh; run `airlock login`');
  const a = await exchangeAtAirlock(c.airlockUrl, tokens.id_token);
  const next: Credential = { ...c, ...a, refreshToken: tokens.refresh_token ?? c.refreshToken };
  save(next);
  return next;
}

/** Removes the cached credential, revoking the refresh token at the IdP when it supports it. */
export async function logout(): Promise<boolean> {
  const c = loadCredential();
  if (!c) return false;
  if (c.refreshToken) {
    try {
      await oidc.tokenRevocation(await discover(c.issuer, c.clientId), c.refreshToken);
    } catch {
      // the IdP may not support revocation, or be unreachable: the local credential goes anyway
    }
  }
  rmSync(credentialsPath(), { force: true });
  return true;
}
