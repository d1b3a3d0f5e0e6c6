// A REAL OpenID provider for tests (npm oidc-provider, started locally on loopback): authorization
// code + PKCE, refresh tokens, group claims in the ID token, the provider's own login and consent
// pages (devInteractions). `browse()` walks those pages like a user with an HTTP client.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';

export interface IdpAccount {
  email: string;
  email_verified: boolean;
  groups: string[];
}

export interface IdpClient {
  client_id: string;
  client_secret?: string;
  redirect_uris: string[];
  token_endpoint_auth_method?: string;
  application_type?: string;
  grant_types?: string[];
  response_types?: string[];
}

export interface TestIdp {
  issuer: string;
  accounts: Record<string, IdpAccount>;
  close(): Promise<void>;
}

async function freeLoopbackPort(): Promise<number> {
  return new Promise<number>((r) => {
    const s = http.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => r(p));
    });
  });
}

/** Starts the provider; `accounts` may be changed later (claims are read at each sign-in). */
export async function startIdp(accounts: Record<string, IdpAccount>, clients: IdpClient[]): Promise<TestIdp> {
  const port = await freeLoopbackPort();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: clients.map((c) => ({ grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], ...c })),
    findAccount: (_ctx, id) => (accounts[id] ? { accountId: id, claims: () => ({ sub: id, ...accounts[id] }) } : undefined),
    claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
    scopes: ['openid', 'email', 'groups', 'offline_access'],
    features: { devInteractions: { enabled: true }, revocation: { enabled: true } },
    // ID tokens carry the claims themselves (Airlock reads groups and email from the ID token).
    conformIdTokenClaims: false,
    ttl: { IdToken: 600, AccessToken: 600, RefreshToken: 3600, Interaction: 600, Session: 3600, Grant: 3600 },
  });
  const server = http.createServer(provider.callback());
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    issuer,
    accounts,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A minimal browser: cookies, redirects, and posting each form with its hidden inputs plus `fill`. */
export async function browse(start: string, fill: Record<string, string>, stopAt?: (u: URL) => boolean): Promise<{ url: URL; body: string }> {
  const jar = new Map<string, string>();
  let url = new URL(start);
  let init: { method: string; body?: URLSearchParams } = { method: 'GET' };
  for (let i = 0; i < 30; i++) {
    if (stopAt?.(url)) return { url, body: '' };
    const res = await fetch(url, {
      method: init.method,
      redirect: 'manual',
      headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '), ...(init.body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}) },
      ...(init.body ? { body: init.body } : {}),
    });
    for (const c of res.headers.getSetCookie()) {
      const [kv] = c.split(';');
      const eq = kv.indexOf('=');
      jar.set(kv.slice(0, eq).trim(), kv.slice(eq + 1));
    }
    if (res.status >= 300 && res.status < 400) {
      url = new URL(res.headers.get('location')!, url);
      init = { method: 'GET' };
      continue;
    }
    const body = await res.text();
    const form = /<form[^>]*action="([^"]*)"[^>]*method="post"[^>]*>([\s\S]*?)<\/form>/i.exec(body) ?? /<form[^>]*method="post"[^>]*action="([^"]*)"[^>]*>([\s\S]*?)<\/form>/i.exec(body);
    if (!form) return { url, body };
    const params = new URLSearchParams();
    for (const m of form[2].matchAll(/<input([^>]*)>/gi)) {
      const name = /name="([^"]*)"/.exec(m[1])?.[1];
      if (!name) continue;
      const value = /value="([^"]*)"/.exec(m[1])?.[1];
      params.set(name, fill[name] ?? value ?? '');
    }
    url = new URL(form[1].replace(/&amp;/g, '&'), url);
    init = { method: 'POST', body: params };
  }
  throw new Error('too many steps in the browser');
}
