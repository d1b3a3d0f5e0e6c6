// Bot Framework authentication, both directions.
//
// Incoming: botbuilder's own validation (ConfigurationBotFrameworkAuthentication: RS256 JWT from
// the channel, keys from the OpenID metadata document, issuer, audience = our app id, serviceUrl
// claim = the activity's serviceUrl). `StrictAuthentication` only makes sure that every token
// failure ends as 401: botbuilder lets jsonwebtoken's "invalid signature" escape as a 500.
//
// Outgoing: the bot's own access token, OAuth 2.0 client credentials against the AAD v2 token
// endpoint (`<authority>/oauth2/v2.0/token`, scope `https://api.botframework.com/.default`), the
// documented Bot Connector flow. Done here rather than through MSAL because MSAL insists on an
// https authority with instance discovery, which would make the flow impossible to exercise
// against a local Bot Connector; the request itself is the same.
import {
  AuthenticationConstants,
  AuthenticationError,
  BotFrameworkAuthentication,
  MicrosoftAppCredentials,
  ServiceClientCredentialsFactory,
  type AuthenticateRequestResult,
  type ClaimsIdentity,
  type ConnectorFactory,
  type ServiceClientCredentials,
  type UserTokenClient,
} from 'botframework-connector';
import { X509Certificate, createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import type { Activity } from 'botbuilder';
import { SignJWT } from 'jose';
import { readFileSync } from 'node:fs';
import type { AirlockConfig } from '../../gateway/config/schema.ts';
import { ConfigError, configPath, resolveSecret, type LoadedConfig } from '../../gateway/config/load.ts';
import { TeamsHttpError, parseRetryAfter } from './errors.ts';

export type TeamsConfig = NonNullable<AirlockConfig['teams']>;

export interface BotFrameworkEndpoints {
  /** OpenID metadata for tokens the channel sends us. */
  openIdMetadataUrl: string;
  /** `iss` of channel tokens. */
  tokenIssuer: string;
  /** Authority the bot gets its own tokens from. */
  loginUrl: string;
  /** Resource the bot's tokens are for (the Bot Connector). */
  oauthScope: string;
}

export function resolveEndpoints(t: Pick<TeamsConfig, 'appType' | 'tenantId' | 'botFramework'>): BotFrameworkEndpoints {
  const bf = t.botFramework ?? {};
  const tenant = t.appType === 'SingleTenant' ? t.tenantId : undefined;
  return {
    openIdMetadataUrl: bf.openIdMetadataUrl ?? AuthenticationConstants.ToBotFromChannelOpenIdMetadataUrl,
    tokenIssuer: bf.tokenIssuer ?? AuthenticationConstants.ToBotFromChannelTokenIssuer,
    loginUrl: bf.loginUrl ?? (tenant ? `${AuthenticationConstants.ToChannelFromBotLoginUrlPrefix}${tenant}` : AuthenticationConstants.ToChannelFromBotLoginUrl),
    oauthScope: bf.oauthScope ?? AuthenticationConstants.ToChannelFromBotOAuthScope,
  };
}

/** A certificate registered on the app: the bot proves itself with a signed client assertion. */
export interface CertificateCredential {
  certPem: string;
  keyPem: string;
}

/** The bot's own credential named by the `teams:` block: a secret, or a certificate + key (env/file references). */
export function resolveTeamsCredential(loaded: LoadedConfig): { appPassword?: string; certificate?: CertificateCredential } {
  const t = loaded.config.teams;
  if (!t) throw new ConfigError('teams is not configured (add a `teams:` block to the config)');
  if (t.certificate) {
    const file = configPath(loaded, t.certificate.cert);
    let certPem: string;
    try {
      certPem = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`teams.certificate.cert: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    return { certificate: { certPem, keyPem: resolveSecret(t.certificate.key, loaded.baseDir, 'teams.certificate.key') } };
  }
  return t.appPassword ? { appPassword: resolveSecret(t.appPassword, loaded.baseDir, 'teams.appPassword') } : {};
}

export interface BotTokenClientOptions {
  appId: string;
  /** Client secret; or `certificate`. */
  appPassword?: string;
  certificate?: CertificateCredential;
  loginUrl: string;
  oauthScope: string;
  timeoutMs?: number;
}

/** The bot's access token for the Bot Connector, cached until five minutes before it expires. */
export class BotTokenClient {
  private cached?: { token: string; expiresAt: number };
  private inflight?: Promise<string>;

  private readonly assertionKey?: { key: KeyObject; x5t: string };

  constructor(private readonly opts: BotTokenClientOptions) {
    if (!opts.appPassword && !opts.certificate) throw new Error('teams: the bot needs an app password or a certificate to get tokens');
    if (opts.certificate) {
      let cert: X509Certificate;
      let key: KeyObject;
      try {
        cert = new X509Certificate(opts.certificate.certPem);
        key = createPrivateKey(opts.certificate.keyPem);
      } catch (err) {
        throw new Error(`teams.certificate: not a usable PEM certificate and private key (${err instanceof Error ? err.message : String(err)})`);
      }
      if (!cert.checkPrivateKey(key)) throw new Error('teams.certificate: the private key does not belong to the certificate');
      // x5t: base64url of the SHA-1 thumbprint of the DER certificate, how AAD finds the registered cert.
      this.assertionKey = { key, x5t: Buffer.from(cert.fingerprint.replace(/:/g, ''), 'hex').toString('base64url') };
    }
  }

  get tokenEndpoint(): string {
    return `${this.opts.loginUrl.replace(/\/+$/, '')}/oauth2/v2.0/token`;
  }

  async token(): Promise<string> {
    if (this.cached && this.cached.expiresAt > Date.now()) return this.cached.token;
    // One request for concurrent callers; a failure is not cached.
    this.inflight ??= this.fetchToken().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  /** Forget the cached token (after the Bot Connector refused it). */
  invalidate(): void {
    this.cached = undefined;
  }

  private async fetchToken(): Promise<string> {
    const scope = this.opts.oauthScope.endsWith('/.default') ? this.opts.oauthScope : `${this.opts.oauthScope.replace(/\/+$/, '')}/.default`;
    const form = new URLSearchParams({ grant_type: 'client_credentials', client_id: this.opts.appId, scope });
    if (this.assertionKey) {
      form.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      form.set('client_assertion', await this.clientAssertion(this.assertionKey));
    } else {
      form.set('client_secret', this.opts.appPassword ?? '');
    }
    const res = await fetch(this.tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: form.toString(),
      signal: AbortSignal.timeout(this.opts.timeoutMs ?? 10_000),
    });
    const text = await res.text();
    if (!res.ok) {
      // AAD answers 400/401 with `invalid_client` for a wrong secret: surfaced as 401 so it is permanent.
      let code = '';
      try {
        code = String((JSON.parse(text) as { error?: unknown }).error ?? '');
      } catch {
        // not JSON: keep the status
      }
      const status = res.status === 400 && (code === 'invalid_client' || code === 'unauthorized_client') ? 401 : res.status;
      throw new TeamsHttpError(`token endpoint answered HTTP ${res.status}${code ? ` (${code})` : ''}`, status, code, parseRetryAfter(res.headers.get('retry-after')));
    }
    let body: { access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new TeamsHttpError('token endpoint answered with something that is not JSON', 502, text.slice(0, 200));
    }
    if (typeof body.access_token !== 'string' || !body.access_token) throw new TeamsHttpError('token endpoint answered without an access_token', 502, '');
    const ttl = Number(body.expires_in);
    const seconds = Number.isFinite(ttl) && ttl > 0 ? ttl : 3600;
    this.cached = { token: body.access_token, expiresAt: Date.now() + Math.max(0, seconds - 300) * 1000 };
    return body.access_token;
  }

  /** RFC 7523 client assertion as AAD expects it: aud = token endpoint, iss = sub = app id, short-lived. */
  private clientAssertion(k: { key: KeyObject; x5t: string }): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', x5t: k.x5t })
      .setIssuer(this.opts.appId)
      .setSubject(this.opts.appId)
      .setAudience(this.tokenEndpoint)
      .setJti(randomUUID())
      .setNotBefore(now - 30)
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(k.key);
  }
}

/** Credentials for botbuilder's ConnectorClient (used by the CloudAdapter for replies, updates, members). */
export class AirlockCredentialsFactory extends ServiceClientCredentialsFactory {
  constructor(
    private readonly appId: string,
    private readonly tokens: BotTokenClient | undefined,
  ) {
    super();
  }

  async isValidAppId(appId: string): Promise<boolean> {
    return appId === this.appId;
  }

  async isAuthenticationDisabled(): Promise<boolean> {
    return !this.appId;
  }

  async createCredentials(appId: string): Promise<ServiceClientCredentials> {
    if (!this.appId || !this.tokens) return MicrosoftAppCredentials.Empty;
    if (appId !== this.appId) throw new AuthenticationError(`credentials requested for app ${appId}, this bot is ${this.appId}`, 401);
    const tokens = this.tokens;
    return {
      signRequest: async (webResource) => {
        webResource.headers.set('authorization', `Bearer ${await tokens.token()}`);
        return webResource;
      },
    };
  }
}

const TOKEN_ERRORS = new Set(['JsonWebTokenError', 'TokenExpiredError', 'NotBeforeError']);

/** Delegates to botbuilder's validation; any token that fails verification is a 401, not a 500. */
export class StrictAuthentication extends BotFrameworkAuthentication {
  constructor(private readonly inner: BotFrameworkAuthentication) {
    super();
  }

  async authenticateRequest(activity: Activity, authHeader: string): Promise<AuthenticateRequestResult> {
    try {
      return await this.inner.authenticateRequest(activity, authHeader);
    } catch (err) {
      throw asAuthError(err);
    }
  }

  async authenticateStreamingRequest(authHeader: string, channelIdHeader: string): Promise<AuthenticateRequestResult> {
    try {
      return await this.inner.authenticateStreamingRequest(authHeader, channelIdHeader);
    } catch (err) {
      throw asAuthError(err);
    }
  }

  createConnectorFactory(claimsIdentity: ClaimsIdentity): ConnectorFactory {
    return this.inner.createConnectorFactory(claimsIdentity);
  }

  createUserTokenClient(claimsIdentity: ClaimsIdentity): Promise<UserTokenClient> {
    return this.inner.createUserTokenClient(claimsIdentity);
  }

  override getOriginatingAudience(): string {
    return this.inner.getOriginatingAudience();
  }

  override authenticateChannelRequest(authHeader: string): Promise<ClaimsIdentity> {
    return this.inner.authenticateChannelRequest(authHeader).catch((err: unknown) => {
      throw asAuthError(err);
    });
  }
}

function asAuthError(err: unknown): unknown {
  if (err instanceof AuthenticationError) return err;
  const name = (err as { name?: unknown } | undefined)?.name;
  if (typeof name === 'string' && TOKEN_ERRORS.has(name)) return new AuthenticationError(`Unauthorized: ${(err as Error).message}`, 401);
  return err;
}
