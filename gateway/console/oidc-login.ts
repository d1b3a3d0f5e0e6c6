// Auditors sign in to the console at the company's identity provider (console.auth.oidc):
// authorization code + PKCE + nonce with openid-client.
//   GET  /login     a fresh state, nonce and PKCE verifier, sealed into a short-lived cookie scoped
//                   to /callback; redirect to the IdP.
//   GET  /callback  openid-client checks state (CSRF), PKCE and the ID token (signature, issuer,
//                   audience, nonce); the group claim must carry console.auth.oidc.group (else 403);
//                   the session cookie is set.
//   POST /logout    forgets the session (also on this replica's deny list until it expires).
// The session is a cookie sealed with AES-256-GCM under a key derived from console.auth.oidc.cookieKey
// (so it can be neither read nor forged), HttpOnly, SameSite=Strict (never sent on a cross-site
// request, so no other site can make the browser read the API), Secure when the console's public
// URL is https, and it lasts console.auth.oidc.sessionTtl with no renewal. The transaction cookie
// is SameSite=Lax: the IdP's redirect back is a cross-site top-level navigation.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import * as oidc from 'openid-client';
import { log } from '../log.ts';
import type { IdentityRegistry } from '../recording/identity-registry.ts';

export const SESSION_COOKIE = 'airlock_console';
export const TX_COOKIE = 'airlock_console_tx';
const TX_TTL_MS = 10 * 60_000;

export interface ConsoleOidcSettings {
  issuer: string;
  clientId: string;
  clientSecret?: string;
  /** The console's public callback URL, as registered at the IdP. */
  redirectUrl: string;
  group: string;
  groupsClaim: string;
  scopes: string;
  /** Secret the cookie keys are derived from. */
  cookieKey: string;
  sessionTtlMs: number;
  /** Claim naming the Airlock identity in the registry (the exchange issuer's usernameClaim; default email). */
  identityClaim?: string;
}

/** What a console session cookie carries. */
export interface ConsoleSession {
  sid: string;
  iss: string;
  sub: string;
  /** Shown as the auditor's name: the email, else the subject. */
  name: string;
  groups: string[];
  /** ms since epoch. */
  exp: number;
}

interface LoginTx {
  verifier: string;
  state: string;
  nonce: string;
  exp: number;
}

type Purpose = 'session' | 'tx';

/** Sealed cookie values: AES-256-GCM, the purpose bound as associated data. */
export class CookieSealer {
  readonly #key: Buffer;

  constructor(secret: string) {
    if (secret.length < 32) throw new Error('console.auth.oidc.cookieKey must be at least 32 characters');
    this.#key = Buffer.from(hkdfSync('sha256', secret, 'airlock-console', 'cookie seal v1', 32));
  }

  seal(purpose: Purpose, value: object): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.#key, iv);
    c.setAAD(Buffer.from(purpose));
    const body = Buffer.concat([c.update(JSON.stringify(value), 'utf8'), c.final()]);
    return Buffer.concat([iv, body, c.getAuthTag()]).toString('base64url');
  }

  open<T>(purpose: Purpose, text: string | undefined): T | undefined {
    if (!text || text.length > 8192) return undefined;
    try {
      const raw = Buffer.from(text, 'base64url');
      if (raw.length < 12 + 16 + 2) return undefined;
      const d = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, 12));
      d.setAAD(Buffer.from(purpose));
      d.setAuthTag(raw.subarray(raw.length - 16));
      const plain = Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]);
      return JSON.parse(plain.toString('utf8')) as T;
    } catch {
      return undefined; // forged, damaged, or sealed with another key
    }
  }
}

export function readCookie(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  let found: string | undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() !== name) continue;
    // Two cookies of one name (e.g. one planted for a parent path): trust neither.
    if (found !== undefined) return undefined;
    found = part.slice(eq + 1).trim();
  }
  return found;
}

function isLoopback(u: URL): boolean {
  return u.hostname === '127.0.0.1' || u.hostname === 'localhost' || u.hostname === '[::1]';
}

function page(res: ServerResponse, status: number, title: string, text: string, extra: Record<string, string | string[]> = {}): void {
  const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title><link rel="stylesheet" href="/app.css"></head><body><main><h2 id="auth-title">${esc(title)}</h2><p id="auth-message">${esc(text)}</p><p><a href="/">Back to the console</a></p></main></body></html>`;
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html), 'cache-control': 'no-store', ...extra });
  res.end(html);
}

export type SessionCheck = { ok: true; session: ConsoleSession } | { ok: false; error: string };

export class ConsoleOidc {
  readonly #s: ConsoleOidcSettings;
  readonly #sealer: CookieSealer;
  readonly #registry: IdentityRegistry | undefined;
  readonly #secure: boolean;
  readonly #callbackPath: string;
  /** Logged-out session ids until they would have expired anyway (this replica). */
  readonly #revoked = new Map<string, number>();
  #config: Promise<oidc.Configuration> | undefined;

  constructor(settings: ConsoleOidcSettings, registry?: IdentityRegistry) {
    this.#s = settings;
    this.#sealer = new CookieSealer(settings.cookieKey);
    this.#registry = registry;
    const redirect = new URL(settings.redirectUrl);
    this.#secure = redirect.protocol === 'https:';
    this.#callbackPath = redirect.pathname;
    if (!this.#secure && !isLoopback(redirect)) log.warn({ redirectUrl: settings.redirectUrl }, 'console.auth.oidc.redirectUrl is plain http: the session cookie cannot be marked Secure; serve the console behind TLS');
    const issuer = new URL(settings.issuer);
    if (issuer.protocol !== 'https:' && !(issuer.protocol === 'http:' && isLoopback(issuer))) throw new Error(`console.auth.oidc.issuer must be https (got ${settings.issuer})`);
  }

  get sealer(): CookieSealer {
    return this.#sealer;
  }

  /** Discovery on first use (the console starts while the IdP is down); a failure is retried next time. */
  #discover(): Promise<oidc.Configuration> {
    if (!this.#config) {
      const u = new URL(this.#s.issuer);
      const options = u.protocol === 'http:' ? { execute: [oidc.allowInsecureRequests] } : undefined;
      const auth = this.#s.clientSecret ? oidc.ClientSecretPost(this.#s.clientSecret) : oidc.None();
      this.#config = oidc.discovery(u, this.#s.clientId, undefined, auth, options).catch((err: unknown) => {
        this.#config = undefined;
        throw err;
      });
    }
    return this.#config;
  }

  #cookie(name: string, value: string, path: string, sameSite: 'Strict' | 'Lax', maxAgeS: number): string {
    return `${name}=${value}; Path=${path}; Max-Age=${maxAgeS}; HttpOnly; SameSite=${sameSite}${this.#secure ? '; Secure' : ''}`;
  }

  /** True when the request was one of the login routes (and has been answered). */
  async handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> {
    if (url.pathname === '/login' && req.method === 'GET') {
      await this.#login(res);
      return true;
    }
    if (url.pathname === this.#callbackPath && req.method === 'GET') {
      await this.#callback(req, res, url);
      return true;
    }
    if (url.pathname === '/logout' && req.method === 'POST') {
      const s = this.#sealer.open<ConsoleSession>('session', readCookie(req, SESSION_COOKIE));
      if (s?.sid) this.#revoked.set(s.sid, s.exp);
      res.writeHead(204, { 'set-cookie': this.#cookie(SESSION_COOKIE, '', '/', 'Strict', 0), 'cache-control': 'no-store' }).end();
      return true;
    }
    return false;
  }

  async #login(res: ServerResponse): Promise<void> {
    let config: oidc.Configuration;
    try {
      config = await this.#discover();
    } catch (err) {
      log.warn({ err, issuer: this.#s.issuer }, 'console login: the identity provider is unreachable');
      return page(res, 503, 'Sign-in unavailable', 'The identity provider could not be reached; try again shortly.');
    }
    const tx: LoginTx = { verifier: oidc.randomPKCECodeVerifier(), state: oidc.randomState(), nonce: oidc.randomNonce(), exp: Date.now() + TX_TTL_MS };
    const target = oidc.buildAuthorizationUrl(config, {
      redirect_uri: this.#s.redirectUrl,
      scope: this.#s.scopes,
      code_challenge: await oidc.calculatePKCECodeChallenge(tx.verifier),
      code_challenge_method: 'S256',
      state: tx.state,
      nonce: tx.nonce,
    });
    res.writeHead(302, {
      location: target.href,
      'set-cookie': this.#cookie(TX_COOKIE, this.#sealer.seal('tx', tx), this.#callbackPath, 'Lax', TX_TTL_MS / 1000),
      'cache-control': 'no-store',
    });
    res.end();
  }

  async #callback(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const clearTx = this.#cookie(TX_COOKIE, '', this.#callbackPath, 'Lax', 0);
    const tx = this.#sealer.open<LoginTx>('tx', readCookie(req, TX_COOKIE));
    if (!tx || typeof tx.exp !== 'number' || tx.exp < Date.now()) {
      return page(res, 400, 'Sign-in refused', 'This sign-in was not started here or took too long; start again from the console.', { 'set-cookie': clearTx });
    }
    // The URL the IdP redirected to, rebuilt from configuration (never from the Host header).
    const current = new URL(this.#s.redirectUrl);
    current.search = url.search;
    let claims: oidc.IDToken;
    let accessToken: string;
    let config: oidc.Configuration;
    try {
      config = await this.#discover();
      const tokens = await oidc.authorizationCodeGrant(config, current, { pkceCodeVerifier: tx.verifier, expectedState: tx.state, expectedNonce: tx.nonce, idTokenExpected: true });
      const c = tokens.claims();
      if (!c) throw new Error('no ID token');
      claims = c;
      accessToken = tokens.access_token;
    } catch (err) {
      log.info({ err: err instanceof Error ? err.message : String(err) }, 'console login refused at the callback');
      return page(res, 400, 'Sign-in refused', `The sign-in could not be verified (${err instanceof Error ? err.message : String(err)}); start again from the console.`, { 'set-cookie': clearTx });
    }
    let groupsRaw = claims[this.#s.groupsClaim];
    if (groupsRaw === undefined) {
      // Some IdPs release groups only at the userinfo endpoint.
      try {
        groupsRaw = (await oidc.fetchUserInfo(config, accessToken, claims.sub))[this.#s.groupsClaim];
      } catch {
        groupsRaw = undefined;
      }
    }
    const groups = Array.isArray(groupsRaw) ? groupsRaw.filter((g): g is string => typeof g === 'string') : typeof groupsRaw === 'string' ? [groupsRaw] : [];
    const email = typeof claims.email === 'string' ? claims.email : '';
    const name = email && claims.email_verified === true ? email : claims.sub;
    this.#register(claims, email, groups);
    if (!groups.includes(this.#s.group)) {
      log.info({ sub: claims.sub, group: this.#s.group }, 'console login refused: not in the console group');
      return page(res, 403, 'Not allowed', `${name} is not in the group ${this.#s.group} that may read the audit console.`, { 'set-cookie': clearTx });
    }
    const session: ConsoleSession = { sid: randomUUID(), iss: claims.iss, sub: claims.sub, name, groups, exp: Date.now() + this.#s.sessionTtlMs };
    res.writeHead(302, {
      location: '/',
      'set-cookie': [clearTx, this.#cookie(SESSION_COOKIE, this.#sealer.seal('session', session), '/', 'Strict', Math.floor(this.#s.sessionTtlMs / 1000))],
      'cache-control': 'no-store',
    });
    res.end();
    log.info({ sub: claims.sub, name }, 'auditor signed in to the console');
  }

  /** A console sign-in is a sign-in at the IdP: remembered for approvers.source oidc. */
  #register(claims: oidc.IDToken, email: string, groups: string[]): void {
    if (!this.#registry || !email) return;
    const claim = this.#s.identityClaim ?? 'email';
    const identity = claims[claim];
    if (typeof identity !== 'string' || !identity || (claim === 'email' && claims.email_verified !== true)) return;
    const iat = typeof claims.iat === 'number' ? claims.iat * 1000 : Date.now();
    try {
      this.#registry.recordIdpIdentity({
        issuer: claims.iss,
        subject: claims.sub,
        identity,
        email,
        emailVerified: claims.email_verified === true,
        groups,
        verifiedAt: new Date(Math.min(iat, Date.now())),
        via: 'console',
      });
    } catch (err) {
      log.warn({ err: err instanceof Error ? err.message : String(err) }, 'console login: could not record the identity in the registry');
    }
  }

  /** The session a request's cookie carries, if it is genuine, current and not logged out. */
  session(req: IncomingMessage): SessionCheck | undefined {
    const raw = readCookie(req, SESSION_COOKIE);
    if (raw === undefined) return undefined;
    const s = this.#sealer.open<ConsoleSession>('session', raw);
    if (!s || typeof s.exp !== 'number' || typeof s.sid !== 'string' || !Array.isArray(s.groups)) return { ok: false, error: 'the console session is not valid; log in again' };
    const now = Date.now();
    if (s.exp <= now) return { ok: false, error: 'the console session has expired; log in again' };
    for (const [sid, exp] of this.#revoked) if (exp <= now) this.#revoked.delete(sid);
    if (this.#revoked.has(s.sid)) return { ok: false, error: 'this console session was logged out; log in again' };
    if (!s.groups.includes(this.#s.group)) return { ok: false, error: `${s.name} is not in the console group ${this.#s.group}` };
    return { ok: true, session: s };
  }
}
