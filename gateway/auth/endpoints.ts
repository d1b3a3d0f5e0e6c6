// Airlock's own OAuth endpoints, served on the HTTP listener ahead of the /<connection>/ routes:
//   GET  /.well-known/jwks.json  the public keys of auth.keys (other replicas and services verify with it)
//   POST /oauth/token            RFC 8693 token exchange (exchange.ts)
// Both paths are reserved: a connection cannot be reached under them.
import type http from 'node:http';
import type { LoadedConfig } from '../config/load.ts';
import { log as rootLog, type Logger } from '../log.ts';
import { OAuthError, TokenExchange } from './exchange.ts';
import { publicJwks } from './keys.ts';
import type { AuthStateStore } from './revocation.ts';
import type { IdentityRegistry } from '../recording/identity-registry.ts';
import { keyRing } from './settings.ts';

export const JWKS_PATH = '/.well-known/jwks.json';
export const TOKEN_PATH = '/oauth/token';
const MAX_FORM_BYTES = 64 * 1024;

function send(res: http.ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra });
  res.end(text);
}

async function readForm(req: http.IncomingMessage): Promise<URLSearchParams> {
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') throw new OAuthError('invalid_request', 'the token request must be application/x-www-form-urlencoded');
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_FORM_BYTES) throw new OAuthError('invalid_request', 'the token request is too large');
    chunks.push(c);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

export class AuthEndpoints {
  readonly #loaded: LoadedConfig;
  readonly #exchange: TokenExchange;
  readonly #log: Logger;

  /** `registry`: the audit store, where human sign-ins are remembered for approvers.source oidc. */
  constructor(loaded: LoadedConfig, state: AuthStateStore, logger: Logger = rootLog, registry?: IdentityRegistry) {
    this.#loaded = loaded;
    this.#exchange = new TokenExchange(loaded, state, registry);
    this.#log = logger.child({ component: 'auth-endpoints' });
  }

  /** True when the request was one of these endpoints (and has been answered). */
  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean> {
    const path = (req.url ?? '').split('?')[0];
    if (path === JWKS_PATH) {
      if (req.method !== 'GET' && req.method !== 'HEAD') send(res, 405, { error: 'method not allowed' }, { allow: 'GET' });
      else send(res, 200, publicJwks(keyRing(this.#loaded)), { 'cache-control': 'public, max-age=60' });
      return true;
    }
    if (path !== TOKEN_PATH) return false;
    const noStore = { 'cache-control': 'no-store', pragma: 'no-cache' };
    try {
      if (req.method !== 'POST') throw new OAuthError('invalid_request', 'use POST', 405);
      if (!this.#exchange.enabled) throw new OAuthError('unsupported_grant_type', 'token exchange is not configured (auth.exchange.issuers)');
      const result = await this.#exchange.exchange(await readForm(req));
      send(res, 200, result, noStore);
      this.#log.info({ expiresIn: result.expires_in }, 'token exchanged');
    } catch (err) {
      const e = err instanceof OAuthError ? err : new OAuthError('server_error', 'the token request failed; see the gateway log', 500);
      if (!(err instanceof OAuthError)) this.#log.error({ err }, 'token exchange failed');
      else this.#log.info({ error: e.error, reason: e.description }, 'token exchange refused');
      send(res, e.status, e.body(), noStore);
    }
    return true;
  }
}
