// The read-only auditor console: a small web app (static HTML/JS/CSS, no build step) and a JSON
// API over the audit store. `airlock console` runs it alone; `airlock gateway` starts it too when
// `console.enabled`.
//
// Access: an Airlock token (`airlock token -i NAME -g auditors`), verified like any other token
// (auth/tokens.ts), whose groups must include one of `console.groups`. The browser keeps it in
// sessionStorage and sends it as a Bearer header. With console.auth.oidc, auditors may instead sign
// in at the IdP (oidc-login.ts): a sealed SameSite=Strict session cookie, never sent cross-site.
// Nothing unmasked is served: the store holds redacted text only, terminal recordings hold what
// the client saw (masked), and the page renders every value with textContent.
import { createReadStream, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tokenSettings } from '../auth/settings.ts';
import { TokenError, verifyToken, type TokenSettings } from '../auth/tokens.ts';
import { configPath, parseDuration, resolveSecret, type LoadedConfig } from '../config/load.ts';
import { log } from '../log.ts';
import { auditSigningKey } from '../recording/open.ts';
import type { IdentityRegistry } from '../recording/identity-registry.ts';
import { ConsoleOidc } from './oidc-login.ts';
import { approvalRequests, listSessions, recordingFor, sessionTimeline, verifyStatus, type ConsoleStore, type SessionQuery } from './data.ts';

export interface ConsoleOptions {
  store: ConsoleStore;
  tokens: TokenSettings;
  /** A token must carry one of these groups. */
  groups: string[];
  /** Directories terminal recordings may be served from. */
  recordingRoots: string[];
  /** Checks checkpoint signatures in the verify status. */
  publicKey?: KeyObject;
  /** SQLite file holding the local approval channel's posts (pending requests); normally the store's. */
  localChannelDb?: string;
  /** console.auth.oidc: auditors sign in at the IdP (session cookie) besides the token login. */
  oidc?: ConsoleOidc;
}

export interface RunningConsole {
  host: string;
  port: number;
  url: string;
  close(): Promise<void>;
}

const STATIC_DIR = join(dirname(fileURLToPath(import.meta.url)), 'static');
const PLAYER_DIR = join(dirname(createRequire(import.meta.url).resolve('asciinema-player')), 'bundle');

/** Files the console serves, by URL path; nothing else on disk is reachable. */
const ASSETS: Record<string, { file: string; type: string }> = {
  '/': { file: join(STATIC_DIR, 'index.html'), type: 'text/html; charset=utf-8' },
  '/app.js': { file: join(STATIC_DIR, 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: join(STATIC_DIR, 'app.css'), type: 'text/css; charset=utf-8' },
  '/player/asciinema-player.min.js': { file: join(PLAYER_DIR, 'asciinema-player.min.js'), type: 'text/javascript; charset=utf-8' },
  '/player/asciinema-player.css': { file: join(PLAYER_DIR, 'asciinema-player.css'), type: 'text/css; charset=utf-8' },
};

const SECURITY_HEADERS: Record<string, string> = {
  // The player compiles its terminal emulator from WebAssembly and sets inline styles on cells.
  'content-security-policy': "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

/** The console's settings from the config (`console`, `auth`, recordings directories, `audit.signingKey`). */
export function consoleOptions(loaded: LoadedConfig, store: ConsoleStore): ConsoleOptions {
  const c = loaded.config;
  const roots = [resolve(dirname(configPath(loaded, c.store.sqlite)), 'recordings')];
  if (c.ssh?.recordings) roots.push(configPath(loaded, c.ssh.recordings));
  if (c.http) roots.push(configPath(loaded, c.http.recordings));
  const signer = auditSigningKey(loaded);
  return {
    store,
    tokens: tokenSettings(loaded),
    groups: c.console?.groups ?? ['auditors'],
    recordingRoots: roots,
    publicKey: signer ? createPublicKey(signer) : undefined,
    localChannelDb: configPath(loaded, c.store.sqlite),
    oidc: consoleOidcFromConfig(loaded, isRegistry(store) ? store : undefined),
  };
}

function isRegistry(s: unknown): s is IdentityRegistry {
  return typeof (s as Partial<IdentityRegistry>).recordIdpIdentity === 'function';
}

/** console.auth.oidc as settings; the registry (a writable audit store) remembers the sign-ins. */
export function consoleOidcFromConfig(loaded: LoadedConfig, registry?: IdentityRegistry): ConsoleOidc | undefined {
  const o = loaded.config.console?.auth?.oidc;
  if (!o) return undefined;
  const human = loaded.config.auth.exchange?.issuers.find((i) => i.kind === 'human' && i.issuer.replace(/\/+$/, '') === o.issuer.replace(/\/+$/, ''));
  return new ConsoleOidc(
    {
      issuer: o.issuer,
      clientId: o.clientId,
      ...(o.clientSecret ? { clientSecret: resolveSecret(o.clientSecret, loaded.baseDir, 'console.auth.oidc.clientSecret') } : {}),
      redirectUrl: o.redirectUrl,
      group: o.group,
      groupsClaim: o.groupsClaim,
      scopes: o.scopes,
      cookieKey: resolveSecret(o.cookieKey, loaded.baseDir, 'console.auth.oidc.cookieKey'),
      sessionTtlMs: parseDuration(o.sessionTtl),
      identityClaim: human?.usernameClaim ?? 'email',
    },
    registry,
  );
}

export function consoleHandler(o: ConsoleOptions): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    handle(o, req, res).catch((err: unknown) => {
      log.error({ err }, 'console request failed');
      if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  };
}

async function handle(o: ConsoleOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
  const url = new URL(req.url ?? '/', 'http://console.invalid');
  if (o.oidc && (await o.oidc.handle(req, res, url))) return;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('allow', 'GET, HEAD');
    return sendJson(res, 405, { error: 'the console is read-only' });
  }
  const asset = ASSETS[url.pathname];
  if (asset) return sendFile(res, asset.file, asset.type, 'no-cache');
  if (!url.pathname.startsWith('/api/')) return sendJson(res, 404, { error: 'not found' });

  const who = await authenticate(o, req);
  if ('error' in who) return sendJson(res, who.status, { error: who.error, ...(o.oidc ? { login: '/login' } : {}) });
  res.setHeader('cache-control', 'no-store');

  const parts = url.pathname.split('/').slice(2).map((p) => decodeURIComponent(p));
  const q = url.searchParams;
  if (parts[0] === 'me' && parts.length === 1) return sendJson(res, 200, { identity: who.name, groups: who.groups, expiresAt: who.expiresAt.toISOString() });
  if (parts[0] === 'sessions' && parts.length === 1) {
    const query: SessionQuery = {
      identity: q.get('identity') || undefined,
      connection: q.get('connection') || undefined,
      protocol: q.get('protocol') || undefined,
      decision: q.get('decision') || undefined,
      approval: q.get('approval') || undefined,
      since: dateParam(q.get('since')),
      until: dateParam(q.get('until')),
      limit: q.get('limit') ? Number(q.get('limit')) || undefined : undefined,
    };
    return sendJson(res, 200, { sessions: listSessions(o.store, query) });
  }
  if (parts[0] === 'sessions' && parts.length === 2) {
    const t = sessionTimeline(o.store, parts[1], o.recordingRoots);
    return t ? sendJson(res, 200, t) : sendJson(res, 404, { error: 'no such session' });
  }
  if (parts[0] === 'sessions' && parts.length === 4 && parts[2] === 'recordings' && /^\d+$/.test(parts[3])) {
    const file = recordingFor(o.store, parts[1], Number(parts[3]), o.recordingRoots);
    if (!file) return sendJson(res, 404, { error: 'no recording for this operation' });
    return sendFile(res, file, 'application/x-asciicast; charset=utf-8', 'no-store');
  }
  if (parts[0] === 'approvals' && parts.length === 1) return sendJson(res, 200, { requests: approvalRequests(o.store, q.get('status') ?? undefined, o.localChannelDb) });
  if (parts[0] === 'verify' && parts.length === 1) return sendJson(res, 200, verifyStatus(o.store, o.publicKey));
  return sendJson(res, 404, { error: 'not found' });
}

type Who = { name: string; groups: string[]; expiresAt: Date } | { status: number; error: string };

async function authenticate(o: ConsoleOptions, req: IncomingMessage): Promise<Who> {
  const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (!m && o.oidc) {
    // The IdP sign-in's session cookie (SameSite=Strict, sealed; see oidc-login.ts).
    const s = o.oidc.session(req);
    if (s?.ok) return { name: s.session.name, groups: s.session.groups, expiresAt: new Date(s.session.exp) };
    return { status: 401, error: s ? s.error : 'log in with your identity provider, or with an Airlock token' };
  }
  if (!m) return { status: 401, error: 'log in with an Airlock token (airlock token -i NAME -g auditors)' };
  try {
    const id = await verifyToken(o.tokens, m[1]);
    if (!id.groups.some((g) => o.groups.includes(g))) {
      return { status: 403, error: `${id.name} is not in a console group (${o.groups.join(', ')})` };
    }
    return { name: id.name, groups: id.groups, expiresAt: id.expiresAt };
  } catch (e) {
    if (e instanceof TokenError) return { status: 401, error: e.message };
    throw e;
  }
}

function dateParam(v: string | null): Date | undefined {
  if (!v) return undefined;
  const d = new Date(v);
  return Number.isFinite(d.getTime()) ? d : undefined;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function sendFile(res: ServerResponse, file: string, type: string, cache: string): void {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return sendJson(res, 404, { error: 'not found' });
  }
  res.writeHead(200, { 'content-type': type, 'content-length': size, 'cache-control': cache });
  if (res.req.method === 'HEAD') return void res.end();
  createReadStream(file).on('error', () => res.destroy()).pipe(res);
}

/** Serves the console on host:port (port 0: any free port). */
export async function startConsole(o: ConsoleOptions, host = '127.0.0.1', port = 0): Promise<RunningConsole> {
  const server: Server = createServer(consoleHandler(o));
  server.headersTimeout = 20_000;
  server.requestTimeout = 60_000;
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => ok());
  });
  const addr = server.address() as AddressInfo;
  const shown = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  return {
    host: addr.address,
    port: addr.port,
    url: `http://${shown}:${addr.port}/`,
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}

// Kept so a missing static file is found at startup, not on an auditor's first click.
export function assertConsoleAssets(): void {
  for (const a of Object.values(ASSETS)) readFileSync(a.file);
}
