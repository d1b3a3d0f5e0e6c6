// A local stand-in for Microsoft Teams' side of the Bot Framework: the Bot Connector REST API the
// bot calls (v3 conversations: create, send/reply, update, members), the AAD token endpoint the
// bot gets its own token from (client credentials), and the OpenID metadata + JWKS the bot
// validates incoming activities against. It also plays the channel: it POSTs activities
// (installation, card clicks) to the bot's /api/messages with an RS256 JWT signed by its key, the
// way Teams does. Everything is recorded so tests can assert on what Teams would have shown.
import { X509Certificate, randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startLocalServer, type LocalServer } from './local-server.ts';
import { SignJWT, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, type CryptoKey, type JWK } from 'jose';

export interface FakeConnectorCall {
  method: string;
  path: string;
  /** Decoded conversation id and activity id from the path, when there are any. */
  conversationId?: string;
  activityId?: string;
  body?: unknown;
  authorization?: string;
  /** Status sent, or undefined when the call was left hanging on purpose. */
  status?: number;
}

/** A message the bot posted (top-level thread root or a reply in a thread). */
export interface FakeTeamsMessage {
  id: string;
  /** Channel id, without `;messageid=`. */
  channelId: string;
  /** Root message id of the thread; equals `id` for a thread root. */
  threadId: string;
  activity: Record<string, unknown>;
  edits: number;
}

export interface FakeTeamsUser {
  /** Teams user id (29:…). */
  id: string;
  aadObjectId: string;
  name: string;
  email?: string;
  userPrincipalName?: string;
  /** 'user' (default) or 'guest' (a member from another tenant). */
  userRole?: 'user' | 'guest';
  /** Home tenant; default the fake's tenant. */
  tenantId?: string;
}

export type FakeConnectorFault = { kind: 'http'; status: number } | { kind: 'rate-limit'; retryAfterSeconds: number } | { kind: 'hang' };

interface PendingFault {
  fault: FakeConnectorFault;
  remaining: number;
  match?: (method: string, path: string) => boolean;
}

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function newKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(publicKey);
  return { kid, privateKey, jwk: { ...jwk, kid, use: 'sig', alg: 'RS256' } };
}

export class FakeBotConnector {
  readonly calls: FakeConnectorCall[] = [];
  readonly messages: FakeTeamsMessage[] = [];
  readonly tokenRequests: Array<{ tenant: string; clientId: string; scope: string; ok: boolean; method: 'secret' | 'certificate' }> = [];
  /** Certificates registered on the app registration (the bot may authenticate with any of them). */
  private readonly certificates: X509Certificate[] = [];
  private readonly users = new Map<string, FakeTeamsUser>();
  private readonly channels = new Set<string>();
  private readonly issuedTokens = new Set<string>();
  private readonly faults: PendingFault[] = [];
  private readonly events = new EventEmitter();
  private seq = 1_700_000_000_000;

  /** Issuer of the channel's tokens (what Teams uses: https://api.botframework.com). */
  readonly issuer = 'https://api.botframework.com';
  readonly tenantId: string;

  private constructor(
    private readonly server: LocalServer,
    readonly port: number,
    private readonly key: SigningKey,
    /** A key the bot does not know, with the same kid: for forged tokens. */
    private readonly forgeryKey: SigningKey,
    readonly appId: string,
    readonly appPassword: string | undefined,
    tenantId: string,
  ) {
    this.tenantId = tenantId;
  }

  /** Base URL of the Bot Connector (the `serviceUrl` of activities). */
  get serviceUrl(): string {
    return `http://127.0.0.1:${this.port}/`;
  }

  get openIdMetadataUrl(): string {
    return `http://127.0.0.1:${this.port}/v1/.well-known/openidconfiguration`;
  }

  /** Authority for the bot's token (multi-tenant bots use the botframework.com tenant). */
  loginUrl(tenant = 'botframework.com'): string {
    return `http://127.0.0.1:${this.port}/${tenant}`;
  }

  /** Everything `teams.botFramework` needs to point the bot at this fake. */
  get endpoints(): { openIdMetadataUrl: string; tokenIssuer: string; loginUrl: string; oauthScope: string } {
    return { openIdMetadataUrl: this.openIdMetadataUrl, tokenIssuer: this.issuer, loginUrl: this.loginUrl(), oauthScope: 'https://api.botframework.com' };
  }

  /**
   * Without `appId` the Bot Connector accepts calls without a token (a bot without auth); with one,
   * every v3 call needs a token from the token endpoint (client secret `appPassword`, or a
   * certificate registered with addCertificate).
   */
  static async start(opts: { appId?: string; appPassword?: string; tenantId?: string } = {}): Promise<FakeBotConnector> {
    let fake: FakeBotConnector | undefined;
    const server = await startLocalServer((req, res) => fake!.handle(req, res));
    const kid = `fake-${randomBytes(4).toString('hex')}`;
    fake = new FakeBotConnector(server, server.port, await newKey(kid), await newKey(kid), opts.appId ?? '', opts.appPassword, opts.tenantId ?? '72f988bf-0000-4000-8000-000000000001');
    return fake;
  }

  stop(): Promise<void> {
    return this.server.stop();
  }

  /** Registers a certificate credential on the app (PEM), as in the Azure portal. */
  addCertificate(certPem: string): void {
    this.certificates.push(new X509Certificate(certPem));
  }

  /** A team channel the bot is a member of; returns its conversation id. */
  addChannel(id = `19:${randomBytes(8).toString('hex')}@thread.tacv2`): string {
    this.channels.add(id);
    return id;
  }

  addUser(u: Omit<FakeTeamsUser, 'id' | 'aadObjectId'> & { id?: string; aadObjectId?: string }): FakeTeamsUser {
    const user: FakeTeamsUser = { id: u.id ?? `29:${randomBytes(12).toString('base64url')}`, aadObjectId: u.aadObjectId ?? randomUUID(), ...u } as FakeTeamsUser;
    this.users.set(user.id, user);
    return user;
  }

  /** The next `count` Bot Connector calls (matching `match`, or any) fail the given way. */
  failNext(count: number, fault: FakeConnectorFault, match?: (method: string, path: string) => boolean): void {
    this.faults.push({ fault, remaining: count, match });
  }

  callsTo(method: string, pathPrefix = '/v3/'): FakeConnectorCall[] {
    return this.calls.filter((c) => c.method === method && c.path.startsWith(pathPrefix));
  }

  /** Thread roots and replies for one thread, oldest first. */
  thread(rootId: string): FakeTeamsMessage[] {
    return this.messages.filter((m) => m.threadId === rootId);
  }

  message(id: string): FakeTeamsMessage | undefined {
    return this.messages.find((m) => m.id === id);
  }

  waitForCall(pred: (c: FakeConnectorCall) => boolean, timeoutMs = 5000): Promise<FakeConnectorCall> {
    const found = this.calls.find((c) => c.status !== undefined && pred(c));
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.events.off('call', onCall);
        reject(new Error(`fake Bot Connector: no matching call within ${timeoutMs}ms; calls so far: ${this.calls.map((c) => `${c.method} ${c.path}`).join(', ')}`));
      }, timeoutMs);
      const onCall = (c: FakeConnectorCall): void => {
        if (!pred(c)) return;
        clearTimeout(timer);
        this.events.off('call', onCall);
        resolve(c);
      };
      this.events.on('call', onCall);
    });
  }

  // --- the channel's side: signed activities to the bot ---------------------------------------

  /** A channel token as Teams sends it (RS256, iss api.botframework.com, aud = app id, serviceurl claim). */
  async channelToken(opts: { forged?: boolean; audience?: string; serviceUrl?: string; expiresInSeconds?: number; issuer?: string } = {}): Promise<string> {
    const key = opts.forged ? this.forgeryKey : this.key;
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ serviceurl: opts.serviceUrl ?? this.serviceUrl })
      .setProtectedHeader({ alg: 'RS256', kid: key.kid, typ: 'JWT' })
      .setIssuer(opts.issuer ?? this.issuer)
      .setAudience(opts.audience ?? this.appId)
      .setIssuedAt(now - 5)
      .setNotBefore(now - 5)
      .setExpirationTime(now + (opts.expiresInSeconds ?? 3600))
      .sign(key.privateKey);
  }

  /**
   * POSTs an activity to the bot. `token`: undefined signs a valid channel token, null sends no
   * Authorization header, a string is sent as is.
   */
  async deliver(botUrl: string, activity: Record<string, unknown>, token?: string | null): Promise<{ status: number; body: unknown; text: string }> {
    const auth = token === undefined ? `Bearer ${await this.channelToken()}` : token === null ? undefined : `Bearer ${token}`;
    const res = await fetch(botUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) },
      body: JSON.stringify(activity),
    });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      // keep the text
    }
    return { status: res.status, body, text };
  }

  private baseActivity(conversationId: string, from: { id: string; aadObjectId?: string; name?: string } | undefined, teamId: string): Record<string, unknown> {
    const channelId = conversationId.split(';')[0];
    return {
      id: `f:${randomBytes(6).toString('hex')}`,
      channelId: 'msteams',
      serviceUrl: this.serviceUrl,
      timestamp: new Date().toISOString(),
      from: from ?? { id: `29:${randomBytes(6).toString('hex')}` },
      recipient: { id: `28:${this.appId || 'bot'}`, name: 'Airlock' },
      conversation: { id: conversationId, conversationType: 'channel', isGroup: true, tenantId: this.tenantId },
      channelData: { tenant: { id: this.tenantId }, team: { id: teamId, name: 'Ops' }, channel: { id: channelId, name: 'db-approvals' } },
    };
  }

  /** The conversationUpdate Teams sends when the bot is added to a team. */
  installActivity(channelId: string, teamId = channelId): Record<string, unknown> {
    return {
      ...this.baseActivity(channelId, { id: `29:installer`, name: 'Installer' }, teamId),
      type: 'conversationUpdate',
      membersAdded: [{ id: `28:${this.appId || 'bot'}` }],
      channelData: { tenant: { id: this.tenantId }, team: { id: teamId, name: 'Ops' }, channel: { id: channelId, name: 'db-approvals' }, eventType: 'teamMemberAdded' },
    };
  }

  /** The `adaptiveCard/action` invoke a click on an Action.Execute button sends. */
  invokeActivity(opts: { conversationId: string; replyToId: string; user: FakeTeamsUser; verb: string; data: Record<string, unknown>; tenantId?: string; teamId?: string }): Record<string, unknown> {
    const a = this.baseActivity(opts.conversationId, { id: opts.user.id, aadObjectId: opts.user.aadObjectId, name: opts.user.name }, opts.teamId ?? opts.conversationId.split(';')[0]);
    if (opts.tenantId) {
      (a.channelData as { tenant: { id: string } }).tenant.id = opts.tenantId;
      (a.conversation as { tenantId: string }).tenantId = opts.tenantId;
    }
    return { ...a, type: 'invoke', name: 'adaptiveCard/action', replyToId: opts.replyToId, value: { action: { type: 'Action.Execute', verb: opts.verb, data: opts.data }, trigger: 'manual' } };
  }

  /** The message an Action.Submit fallback button sends (older clients). */
  submitActivity(opts: { conversationId: string; replyToId: string; user: FakeTeamsUser; value: Record<string, unknown> }): Record<string, unknown> {
    const a = this.baseActivity(opts.conversationId, { id: opts.user.id, aadObjectId: opts.user.aadObjectId, name: opts.user.name }, opts.conversationId.split(';')[0]);
    return { ...a, type: 'message', replyToId: opts.replyToId, value: opts.value };
  }

  /** AAD's check of a certificate client assertion: x5t names a registered cert whose key signed it. */
  private async verifyAssertion(jwt: string, clientId: string, endpoint: string): Promise<boolean> {
    try {
      const { x5t, alg } = decodeProtectedHeader(jwt);
      const cert = this.certificates.find((c) => Buffer.from(c.fingerprint.replace(/:/g, ''), 'hex').toString('base64url') === x5t);
      if (!cert || alg !== 'RS256') return false;
      const { payload } = await jwtVerify(jwt, cert.publicKey, { issuer: clientId, subject: clientId, audience: endpoint, algorithms: ['RS256'] });
      return typeof payload.jti === 'string' && typeof payload.exp === 'number';
    } catch {
      return false;
    }
  }

  // --- the HTTP side ------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const path = url.pathname;
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const json = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers }).end(body === undefined ? '' : JSON.stringify(body));
    };

    if (req.method === 'GET' && path === '/v1/.well-known/openidconfiguration') {
      json(200, { issuer: this.issuer, jwks_uri: `http://127.0.0.1:${this.port}/v1/keys`, id_token_signing_alg_values_supported: ['RS256'], token_endpoint_auth_methods_supported: ['private_key_jwt'] });
      return;
    }
    if (req.method === 'GET' && path === '/v1/keys') {
      json(200, { keys: [{ ...this.key.jwk, endorsements: ['msteams'] }] });
      return;
    }
    const tokenPath = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(path);
    if (req.method === 'POST' && tokenPath) {
      const form = new URLSearchParams(raw);
      const clientId = form.get('client_id') ?? '';
      const assertion = form.get('client_assertion');
      let proven: boolean;
      if (assertion) {
        proven = form.get('client_assertion_type') === 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer' && (await this.verifyAssertion(assertion, clientId, `http://127.0.0.1:${this.port}${path}`));
      } else {
        proven = this.appPassword !== undefined && form.get('client_secret') === this.appPassword;
      }
      const ok = form.get('grant_type') === 'client_credentials' && clientId === this.appId && proven;
      this.tokenRequests.push({ tenant: decodeURIComponent(tokenPath[1]), clientId, scope: form.get('scope') ?? '', ok, method: assertion ? 'certificate' : 'secret' });
      if (!ok) {
        json(401, { error: 'invalid_client', error_description: 'AADSTS7000215: Invalid client secret provided.' });
        return;
      }
      const token = `fake-bot-token-${randomBytes(12).toString('hex')}`;
      this.issuedTokens.add(token);
      json(200, { token_type: 'Bearer', expires_in: 3599, ext_expires_in: 3599, access_token: token });
      return;
    }
    if (!path.startsWith('/v3/')) {
      json(404, { error: { code: 'NotFound', message: `no route ${req.method} ${path}` } });
      return;
    }

    const m = /^\/v3\/conversations(?:\/([^/]+)(?:\/(activities|members)(?:\/([^/]+))?)?)?$/.exec(path);
    const call: FakeConnectorCall = {
      method: req.method ?? 'GET',
      path,
      conversationId: m?.[1] ? decodeURIComponent(m[1]) : undefined,
      activityId: m?.[3] ? decodeURIComponent(m[3]) : undefined,
      body: raw ? (JSON.parse(raw) as unknown) : undefined,
      authorization: req.headers.authorization,
    };
    this.calls.push(call);
    const finish = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
      call.status = status;
      json(status, body, headers);
      this.events.emit('call', call);
    };

    const fault = this.faults.find((f) => f.remaining > 0 && (!f.match || f.match(call.method, path)));
    if (fault) {
      fault.remaining -= 1;
      if (fault.remaining === 0) this.faults.splice(this.faults.indexOf(fault), 1);
      if (fault.fault.kind === 'hang') return; // never answered; the socket is destroyed at stop()
      if (fault.fault.kind === 'rate-limit') {
        finish(429, { error: { code: 'TooManyRequests', message: 'rate limited' } }, { 'retry-after': String(fault.fault.retryAfterSeconds) });
        return;
      }
      finish(fault.fault.status, { error: { code: 'ServiceError', message: `injected HTTP ${fault.fault.status}` } });
      return;
    }

    if (this.appId) {
      const bearer = /^Bearer (.+)$/.exec(call.authorization ?? '')?.[1];
      if (!bearer || !this.issuedTokens.has(bearer)) {
        finish(401, { message: 'Authorization has been denied for this request.' });
        return;
      }
    }
    if (!m) {
      finish(404, { error: { code: 'NotFound', message: path } });
      return;
    }
    const [, convRaw, kind] = m;
    const body = (call.body ?? {}) as Record<string, unknown>;

    if (req.method === 'POST' && !convRaw) {
      const channel = ((body.channelData as { channel?: { id?: string } } | undefined)?.channel?.id ?? '').trim();
      if (!this.channels.has(channel)) {
        finish(404, { error: { code: 'ConversationNotFound', message: `channel ${channel || '(none)'} not found or the bot is not in its team` } });
        return;
      }
      const id = String(this.seq++);
      this.messages.push({ id, channelId: channel, threadId: id, activity: (body.activity ?? {}) as Record<string, unknown>, edits: 0 });
      finish(201, { id: `${channel};messageid=${id}`, activityId: id });
      return;
    }
    const conv = call.conversationId ?? '';
    const [channel, root] = (() => {
      const i = conv.indexOf(';messageid=');
      return i === -1 ? [conv, undefined] : [conv.slice(0, i), conv.slice(i + ';messageid='.length)];
    })();
    if (kind === 'members' && req.method === 'GET' && call.activityId) {
      const u = this.users.get(call.activityId) ?? [...this.users.values()].find((x) => x.aadObjectId === call.activityId);
      if (!u) {
        finish(404, { error: { code: 'MemberNotFoundInConversation', message: 'member not found' } });
        return;
      }
      finish(200, { id: u.id, name: u.name, aadObjectId: u.aadObjectId, email: u.email, userPrincipalName: u.userPrincipalName, tenantId: u.tenantId ?? this.tenantId, userRole: u.userRole ?? 'user' });
      return;
    }
    if (kind !== 'activities' || !this.channels.has(channel)) {
      finish(404, { error: { code: 'ConversationNotFound', message: `conversation ${conv} not found` } });
      return;
    }
    if (req.method === 'POST') {
      const thread = call.activityId ? (this.message(call.activityId)?.threadId ?? call.activityId) : root;
      if (thread !== undefined && !this.message(thread)) {
        finish(404, { error: { code: 'NotFound', message: `no message ${thread}` } });
        return;
      }
      const id = String(this.seq++);
      this.messages.push({ id, channelId: channel, threadId: thread ?? id, activity: body, edits: 0 });
      finish(201, { id });
      return;
    }
    if (req.method === 'PUT' && call.activityId) {
      const msg = this.message(call.activityId);
      if (!msg || msg.channelId !== channel) {
        finish(404, { error: { code: 'NotFound', message: `no message ${call.activityId}` } });
        return;
      }
      msg.activity = body;
      msg.edits += 1;
      finish(200, { id: msg.id });
      return;
    }
    finish(405, { error: { code: 'MethodNotAllowed', message: `${req.method} ${path}` } });
  }
}

/** The Adaptive Card in a posted activity, or undefined. */
export function cardOf(activity: Record<string, unknown> | undefined): Record<string, unknown> & { body: Array<Record<string, unknown>>; actions?: Array<Record<string, unknown>> } {
  const atts = (activity?.attachments ?? []) as Array<{ contentType?: string; content?: unknown }>;
  const card = atts.find((a) => a.contentType === 'application/vnd.microsoft.card.adaptive')?.content;
  if (!card) throw new Error(`no adaptive card in ${JSON.stringify(activity).slice(0, 300)}`);
  return card as Record<string, unknown> & { body: Array<Record<string, unknown>>; actions?: Array<Record<string, unknown>> };
}

/** All visible text of a card (TextBlocks, facts, code), for content assertions. */
export function cardText(card: { body: Array<Record<string, unknown>> }): string {
  const out: string[] = [];
  for (const el of card.body) {
    if (typeof el.text === 'string') out.push(el.text);
    if (typeof el.codeSnippet === 'string') out.push(el.codeSnippet);
    if (Array.isArray(el.facts)) for (const f of el.facts as Array<{ title: string; value: string }>) out.push(`${f.title}: ${f.value}`);
  }
  return out.join('\n');
}
