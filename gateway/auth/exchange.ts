// OAuth 2.0 Token Exchange (RFC 8693) at Airlock: a workload presents a JWT its platform already
// issues (Kubernetes service-account token, GitHub Actions OIDC token, an IdP's ID token for humans)
// and gets a short-lived Airlock token. The subject token must come from a configured issuer (exact
// `iss`), verify against that issuer's JWKS with an allowed algorithm, be for an accepted audience,
// unexpired, and (replay: once) carry a jti never exchanged before. Agent issuers map (sub + exact
// claims) to a configured agent identity with its owner; human issuers take the identity from a
// claim and the groups from the group claim. Refusals are RFC 6749 error objects.
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify, errors, decodeJwt, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { configPath, parseDuration, type LoadedConfig } from '../config/load.ts';
import type { Identity } from '../policy/operation.ts';
import type { AuthStateStore } from './revocation.ts';
import type { IdentityRegistry } from '../recording/identity-registry.ts';
import { configuredIdentity, tokenSettings } from './settings.ts';
import { mintToken, type TokenSettings } from './tokens.ts';

export const GRANT_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';
export const TOKEN_TYPE_ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
export const TOKEN_TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';

/** An RFC 6749 §5.2 error: `error` code, human `error_description`, HTTP status. */
export class OAuthError extends Error {
  constructor(
    readonly error: 'invalid_request' | 'invalid_grant' | 'unsupported_grant_type' | 'invalid_target' | 'invalid_client' | 'server_error',
    readonly description: string,
    readonly status = 400,
  ) {
    super(description);
    this.name = 'OAuthError';
  }
  body(): { error: string; error_description: string } {
    return { error: this.error, error_description: this.description };
  }
}

type AuthConfig = LoadedConfig['config']['auth'];
type IssuerConfig = NonNullable<AuthConfig['exchange']>['issuers'][number];
type AgentConfig = NonNullable<AuthConfig['exchange']>['agents'][number];

interface Issuer {
  cfg: IssuerConfig;
  keys: JWTVerifyGetKey;
  audiences: string[];
  toleranceS: number;
}

export interface ExchangeResult {
  access_token: string;
  issued_token_type: typeof TOKEN_TYPE_ACCESS_TOKEN;
  token_type: 'Bearer';
  expires_in: number;
}

export class TokenExchange {
  readonly #issuers = new Map<string, Issuer>();
  readonly #agents: AgentConfig[];
  readonly #ttlMs: number;
  readonly #tokens: TokenSettings;
  readonly #state: AuthStateStore;
  readonly #loaded: LoadedConfig;
  readonly #registry: IdentityRegistry | undefined;

  /** `registry`: where human sign-ins are remembered (approvers.source: oidc reads them). */
  constructor(loaded: LoadedConfig, state: AuthStateStore, registry?: IdentityRegistry) {
    const ex = loaded.config.auth.exchange;
    this.#loaded = loaded;
    this.#registry = registry;
    this.#state = state;
    this.#tokens = tokenSettings(loaded);
    this.#agents = ex?.agents ?? [];
    this.#ttlMs = parseDuration(ex?.ttl ?? '5m');
    if (this.#ttlMs > this.#tokens.maxTtlMs) throw new Error(`auth.exchange.ttl exceeds auth.maxTtl`);
    for (const cfg of ex?.issuers ?? []) {
      const keys = cfg.jwksUrl
        ? createRemoteJWKSet(new URL(cfg.jwksUrl), { cooldownDuration: 30_000, cacheMaxAge: 600_000 })
        : createLocalJWKSet(JSON.parse(readFileSync(configPath(loaded, cfg.jwksFile!), 'utf8')) as Parameters<typeof createLocalJWKSet>[0]);
      this.#issuers.set(cfg.issuer, { cfg, keys, audiences: Array.isArray(cfg.audience) ? cfg.audience : [cfg.audience], toleranceS: parseDuration(cfg.clockTolerance) / 1000 });
    }
  }

  get enabled(): boolean {
    return this.#issuers.size > 0;
  }

  /** Handles the form parameters of a token request; throws OAuthError on refusal. */
  async exchange(params: URLSearchParams): Promise<ExchangeResult> {
    const grant = params.get('grant_type');
    if (grant !== GRANT_TOKEN_EXCHANGE) throw new OAuthError('unsupported_grant_type', `only ${GRANT_TOKEN_EXCHANGE} is supported here`);
    for (const p of ['grant_type', 'subject_token', 'subject_token_type', 'audience', 'requested_token_type', 'resource', 'scope']) {
      if (params.getAll(p).length > 1) throw new OAuthError('invalid_request', `parameter ${p} appears more than once`);
    }
    const subjectToken = params.get('subject_token');
    if (!subjectToken) throw new OAuthError('invalid_request', 'subject_token is required');
    const type = params.get('subject_token_type');
    if (type !== TOKEN_TYPE_JWT && type !== TOKEN_TYPE_ID_TOKEN) throw new OAuthError('invalid_request', `subject_token_type must be ${TOKEN_TYPE_JWT} or ${TOKEN_TYPE_ID_TOKEN}`);
    if (params.has('actor_token')) throw new OAuthError('invalid_request', 'actor_token is not supported');
    const requested = params.get('requested_token_type');
    if (requested !== null && requested !== TOKEN_TYPE_ACCESS_TOKEN && requested !== TOKEN_TYPE_JWT) throw new OAuthError('invalid_request', `requested_token_type must be ${TOKEN_TYPE_ACCESS_TOKEN}`);
    const aud = params.get('audience');
    if (aud !== null && aud !== this.#tokens.audience) throw new OAuthError('invalid_target', `this Airlock issues tokens for audience ${JSON.stringify(this.#tokens.audience)} only`);

    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(subjectToken);
    } catch {
      throw new OAuthError('invalid_grant', 'subject_token is not a JWT');
    }
    const issuer = typeof unverified.iss === 'string' ? this.#issuers.get(unverified.iss) : undefined;
    if (!issuer) throw new OAuthError('invalid_grant', `subject_token issuer ${JSON.stringify(unverified.iss ?? null)} is not trusted by this Airlock`);
    const payload = await this.#verify(issuer, subjectToken);
    const identity = this.#map(issuer, payload);
    const revoked = this.#state.revoked(identity.name, typeof payload.jti === 'string' ? `${issuer.cfg.issuer}#${payload.jti}` : undefined);
    if (revoked) throw new OAuthError('invalid_grant', `identity ${identity.name} is revoked: ${revoked.reason}`);
    if (issuer.cfg.replay === 'once') {
      if (typeof payload.jti !== 'string' || payload.jti === '') throw new OAuthError('invalid_grant', 'subject_token has no jti; this issuer requires one-time tokens');
      if (!this.#state.claimOnce(issuer.cfg.issuer, payload.jti, (payload.exp as number) * 1000 + issuer.toleranceS * 1000)) {
        throw new OAuthError('invalid_grant', 'subject_token was already exchanged (replay refused); request a fresh token from your platform');
      }
    }
    // Never outlive the subject token.
    const ttlMs = Math.min(this.#ttlMs, (payload.exp as number) * 1000 - Date.now());
    if (ttlMs < 1000) throw new OAuthError('invalid_grant', 'subject_token expires too soon');
    // People only: a subject mapped to an agent (e.g. an IdP client-credentials token) never becomes an approver.
    const agent = this.#agents.some((a) => a.issuer === issuer.cfg.name && a.subject === payload.sub && claimsMatch(a.claims, payload));
    if (issuer.cfg.kind === 'human' && !agent && this.#registry) this.#register(issuer, payload, identity);
    const token = await mintToken(this.#tokens, identity, ttlMs, { via: { iss: issuer.cfg.issuer, sub: payload.sub as string }, amr: issuer.cfg.kind === 'human' ? 'oidc' : 'token-exchange' });
    return { access_token: token, issued_token_type: TOKEN_TYPE_ACCESS_TOKEN, token_type: 'Bearer', expires_in: Math.floor(ttlMs / 1000) };
  }

  /**
   * Remembers who the IdP vouched for (identity-registry.ts), so a chat click can be matched to this
   * person by verified email. T is the ID token's iat (when the IdP asserted the claims). A failing
   * registry refuses the sign-in: an approver who signed in must find themselves registered.
   */
  #register(issuer: Issuer, p: JWTPayload, identity: Identity): void {
    const email = typeof p.email === 'string' ? p.email : '';
    if (!email || !this.#registry) return;
    const iat = typeof p.iat === 'number' ? p.iat * 1000 : Date.now();
    const entry = { issuer: issuer.cfg.issuer, subject: String(p.sub), identity: identity.name, email, emailVerified: p.email_verified === true, groups: identity.groups, verifiedAt: new Date(Math.min(iat, Date.now())), via: 'login' };
    try {
      this.#registry.recordIdpIdentity(entry);
    } catch (err) {
      throw new OAuthError('server_error', `the sign-in could not be recorded in the identity registry (${err instanceof Error ? err.message : String(err)})`, 503);
    }
  }

  async #verify(issuer: Issuer, token: string): Promise<JWTPayload> {
    try {
      const { payload } = await jwtVerify(token, issuer.keys, {
        issuer: issuer.cfg.issuer,
        audience: issuer.audiences,
        algorithms: issuer.cfg.algorithms,
        clockTolerance: issuer.toleranceS,
        requiredClaims: ['sub', 'exp'],
      });
      return payload;
    } catch (err) {
      if (err instanceof errors.JWTExpired) throw new OAuthError('invalid_grant', 'subject_token has expired');
      if (err instanceof errors.JWTClaimValidationFailed) {
        if (err.claim === 'aud') throw new OAuthError('invalid_grant', `subject_token audience is not accepted (expected ${issuer.audiences.join(' or ')})`);
        throw new OAuthError('invalid_grant', `subject_token claim ${err.claim} is invalid`);
      }
      if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid || (err instanceof Error && /fetch|ECONNREFUSED/i.test(err.message))) {
        throw new OAuthError('server_error', `the keys of issuer ${issuer.cfg.name} could not be fetched`, 503);
      }
      throw new OAuthError('invalid_grant', 'subject_token signature is invalid or made with an unknown key');
    }
  }

  #map(issuer: Issuer, p: JWTPayload): Identity {
    // Agent mappings first (e.g. an IdP client-credentials token whose sub is a client id), then,
    // for a human issuer, the identity claim and the group claim.
    const agent = this.#agents.find((a) => a.issuer === issuer.cfg.name && a.subject === p.sub && claimsMatch(a.claims, p));
    if (agent) {
      const known = configuredIdentity(this.#loaded, agent.identity);
      return { name: agent.identity, groups: agent.groups ?? known.groups, owner: agent.owner };
    }
    if (issuer.cfg.kind !== 'human') throw new OAuthError('invalid_grant', `subject ${JSON.stringify(p.sub)} of issuer ${issuer.cfg.name} is not mapped to an Airlock agent identity`);
    const name = p[issuer.cfg.usernameClaim];
    if (typeof name !== 'string' || name === '') throw new OAuthError('invalid_grant', `subject_token has no ${issuer.cfg.usernameClaim} claim (ask for the scope that releases it)`);
    if (issuer.cfg.usernameClaim === 'email' && p.email_verified !== true) throw new OAuthError('invalid_grant', 'the email of this identity is not verified at the identity provider');
    const g = p[issuer.cfg.groupsClaim];
    const groups = Array.isArray(g) ? g.filter((x): x is string => typeof x === 'string') : [];
    return { name, groups };
  }
}

function claimsMatch(want: Record<string, string | string[]>, p: JWTPayload): boolean {
  for (const [k, v] of Object.entries(want)) {
    const got = p[k];
    if (typeof got !== 'string') return false;
    if (Array.isArray(v) ? !v.includes(got) : v !== got) return false;
  }
  return true;
}
