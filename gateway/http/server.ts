// The HTTP and Kubernetes gateway: one listener, connections routed by path prefix.
//
//   https://airlock:8443/<connection>/<path...>   ->   <upstream url><path...>
//
// `<connection>` names an `http.services[]` entry or an `http.clusters[]` entry (names share one
// space). Host-based routing is not offered: a path prefix works with every client (kubectl
// accepts a server URL with a path) and needs no wildcard DNS or certificates.
//
// Per request: authenticate the Airlock token (401), normalize the path (400 on anything
// ambiguous, see normalize.ts), check the connection's allow list (403), buffer the body up to
// http.maxBodyBytes (413), classify (Kubernetes: verb/resource/namespace ...), decide, then:
//   deny    403 {"error":"denied","rule":...,"reason":...}
//   review  the request is held open (see HOLDING below), then forwarded or refused
//   allow / mask  forwarded with the client's Authorization replaced by the upstream credential;
//           the response is masked per the decision (response.ts).
// Every request is recorded in the Store: one session per client connection and identity.
//
// HOLDING: the client's request stays open while people decide, up to http.maxHold (default 55 s,
// under the usual 60 s proxy/client timeouts). Approved: forwarded as usual (the response carries
// `x-airlock-approval: <request id>`). Rejected or expired: 403 with rule, reason and request id.
// If maxHold passes first, the client gets `503` with `Retry-After` and
// {"error":"approval pending","requestId":...,"deadline":...}; the request stays open for
// approvers, and once approved the same request sent again runs at once (the approval is a
// grant for the rule's grantTtl). A client that disconnects while held cancels the request.
import type { GatewayMetrics } from '../observability/metrics.ts';
import type { Tracer } from '@opentelemetry/api';
import { randomUUID } from 'node:crypto';
import { contextFromHeaders, type RequestContext } from '../enforce/context.ts';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { HOLD_PARKED, type Approver, type HoldPosted } from '../approvals/approver.ts';
import { approvalBindingKey, maskHashKey } from '../config/keys.ts';
import { bindOperation } from '../enforce/binding.ts';
import { HTTP_STATUS, type Refusal } from '../enforce/refusal.ts';
import { EnforcementSession, type HoldResult } from '../enforce/session.ts';
import { tokenSettings } from '../auth/settings.ts';
import { TokenError, verifyToken, type TokenSettings, type VerifiedToken } from '../auth/tokens.ts';
import type { AuthEndpoints } from '../auth/endpoints.ts';
import { configPath, parseDuration, type LoadedConfig } from '../config/load.ts';
import type { HttpConfig } from '../config/schema.ts';
import { log as rootLog, type Logger } from '../log.ts';
import { Hasher } from '../masking/strategies.ts';
import type { Decision } from '../policy/decision.ts';
import { elevationHeader, rolePolicies, type ElevationRegistry, type ElevationSource } from '../elevation/registry.ts';
import { PolicyEngine } from '../policy/engine.ts';
import type { Matcher } from '../policy/match.ts';
import type { HttpFacts, Identity, Operation } from '../policy/operation.ts';
import type { OperationRecord, Store } from '../recording/store.ts';
import { boolParam, classifyKubernetes, describeKubernetes } from '../kubernetes/classify.ts';
import { kubernetesRules } from '../kubernetes/rules.ts';
import { canonicalBody, requestBinding, type RequestBinding } from './binding.ts';
import { compileBodyRules, isKubernetesTable, kubernetesMaskedAccept, methodOverrideParam, serviceMaskedAccept } from './fail-closed.ts';
import { identityHeaderWithheld } from './headers.ts';
import type { JsonMasker } from './json-mask.ts';
import { normalizePath, splitTarget } from './normalize.ts';
import { forwardHeaders, sendUpstream, upstreamPath } from './forward.ts';
import { ResponseMaskers } from './maskers.ts';
import { relayResponse, sendJson } from './response.ts';
import { resolveUpstreams, type Upstream } from './upstreams.ts';
import { refuseUpgrade, relayWebSocket, type WsRelayResult } from './websocket.ts';
import { websocketFrameMasker, type FrameMasker } from './ws-mask.ts';
import { EventRateLimiter } from '../net/rate-limit.ts';
import { listenerLimits, refuseOverLimit, type ListenerLimits } from './limits.ts';

export interface HttpGatewayOptions {
  loaded: LoadedConfig;
  store: Store;
  approver: Approver;
  /** Key of the `hash` masking strategy; defaults as in app.ts maskHashKey (same hashes as PostgreSQL). */
  hashKey?: string;
  /** Override http.listen (tests: port 0). */
  host?: string;
  port?: number;
  logger?: Logger;
  /** Prometheus metrics, counted in the enforcement seam. */
  metrics?: GatewayMetrics;
  /** OpenTelemetry tracer (observability.tracing); none = tracing off. */
  tracer?: Tracer;
  /** Airlock's own /.well-known/jwks.json and /oauth/token, answered before any connection route. */
  auth?: AuthEndpoints;
  /** Just-in-time elevation windows (gateway/elevation/), decided here with this listener's rules. */
  elevations?: ElevationRegistry;
}

export interface HttpGateway {
  host: string;
  port: number;
  /** http(s)://host:port of the listener. */
  url: string;
  close(): Promise<void>;
}

const TOKEN_CACHE_MAX = 10_000;
const EMPTY = Buffer.alloc(0);

interface SessionState {
  enforce: EnforcementSession;
  toClient: number;
  fromClient: number;
  /** The operations' connection context: the same for every request of the session. */
  connection: Operation['connection'];
  /** The operations' identity, rebuilt only when the verified token (and so the identity) changes. */
  opIdentity?: { of: Identity; value: Identity };
}

interface Prepared {
  identity: Identity;
  up: Upstream;
  session: SessionState;
  body: Buffer;
  op: Operation;
  encodedRest: string;
  query: string;
  method: string;
  /** What an approval of this request binds to (see binding.ts). */
  binding: RequestBinding;
  /** The agent's X-Airlock-Reason / X-Airlock-Ticket / traceparent, shown to approvers. */
  context?: RequestContext;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: Record<string, unknown>,
    readonly headers: Record<string, string> = {},
  ) {
    super(String(body.reason ?? body.error));
  }
}

const K8S_REASONS: Record<number, string> = { 400: 'BadRequest', 401: 'Unauthorized', 403: 'Forbidden', 404: 'NotFound', 413: 'RequestEntityTooLarge', 415: 'UnsupportedMediaType', 500: 'InternalError', 502: 'ServiceUnavailable', 503: 'ServiceUnavailable' };

/**
 * Kubernetes clients expect errors as a Status object; kubectl prints its message. Airlock's own
 * fields (error, rule, reason, requestId...) go in `details` so tools can still read them.
 */
function kubernetesStatus(status: number, body: Record<string, unknown>): Record<string, unknown> {
  const rule = body.rule ? ` (rule ${String(body.rule)})` : '';
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: `airlock: ${String(body.error)}${rule}: ${String(body.reason ?? '')}`,
    reason: K8S_REASONS[status] ?? 'Unknown',
    code: status,
    details: { causes: Object.entries(body).map(([field, v]) => ({ field, message: typeof v === 'string' ? v : JSON.stringify(v) })) },
  };
}

function bearer(req: http.IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1] : undefined;
}

/** Client headers never forwarded: Airlock's credential replaces theirs; `expect`: the body is already buffered. */
function withheldAlways(h: string): boolean {
  return h === 'authorization' || h === 'proxy-authorization' || h === 'expect';
}

/** Header names are lower-case (as Node parses them). */
function withheldPlain(trust: ReadonlySet<string>): (h: string) => boolean {
  return (h) => withheldAlways(h) || identityHeaderWithheld(h, trust);
}

/** While masking: also no Range (a partial document cannot be masked) and no Accept-Charset (masking reads UTF-8; maskFormat refuses others anyway). */
function withheldMasking(trust: ReadonlySet<string>): (h: string) => boolean {
  return (h) => withheldAlways(h) || h === 'range' || h === 'if-range' || h === 'accept-charset' || identityHeaderWithheld(h, trust);
}

/** Whether the declared body exceeds the limit (checked before anything of it is read). */
function bodyTooLarge(req: http.IncomingMessage, limit: number): boolean {
  const declared = Number(req.headers['content-length'] ?? 0);
  return Number.isFinite(declared) && declared > limit;
}

export class HttpGatewayCore {
  readonly #loaded: LoadedConfig;
  readonly #cfg: HttpConfig;
  readonly #store: Store;
  readonly #metrics: GatewayMetrics | undefined;
  readonly #tracer: Tracer | undefined;
  readonly #approver: Approver;
  readonly #log: Logger;
  readonly #tokens: TokenSettings;
  readonly #engine: PolicyEngine;
  readonly #elevations: ElevationSource | undefined;
  readonly #maskers: ResponseMaskers;
  readonly #bodyRules: Array<{ name: string; applies: Matcher }>;
  readonly #bindingKey: string;
  readonly #upstreams: Map<string, Upstream>;
  readonly #maxHoldMs: number;
  readonly #recordings: string;
  readonly #tokenCache = new Map<string, VerifiedToken>();
  readonly #sessions = new WeakMap<Socket, Map<string, SessionState>>();
  /** Open sessions, so close() can end them before the store goes away. */
  readonly #live = new Set<SessionState>();
  /** Requests with `Expect: 100-continue`, answered once the body is wanted (#readBody). */
  readonly #continues = new WeakMap<http.IncomingMessage, http.ServerResponse>();
  readonly #limits: ListenerLimits;

  /** Handles a request whose client waits for `100 Continue` before sending its body. */
  async handleExpectContinue(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.#continues.set(req, res);
    return this.handle(req, res);
  }

  constructor(o: HttpGatewayOptions) {
    const cfg = o.loaded.config.http;
    if (!cfg) throw new Error(`${o.loaded.file}: no http: block`);
    this.#loaded = o.loaded;
    this.#cfg = cfg;
    this.#store = o.store;
    this.#metrics = o.metrics;
    this.#tracer = o.tracer;
    this.#approver = o.approver;
    this.#log = (o.logger ?? rootLog).child({ component: 'http-gateway' });
    this.#tokens = tokenSettings(o.loaded);
    const k8sRules = kubernetesRules(cfg.kubernetesRules);
    const policy = o.loaded.config.policy;
    this.#engine = new PolicyEngine({ ...policy, rules: [...k8sRules, ...policy.rules] }, o.loaded.config.masking);
    this.#elevations = o.elevations?.withPolicies(rolePolicies(o.loaded.config, { rules: k8sRules }));
    this.#bodyRules = compileBodyRules(policy.rules);
    this.#maskers = new ResponseMaskers([...k8sRules, ...policy.rules], new Hasher(o.hashKey ?? maskHashKey(o.loaded)));
    this.#bindingKey = approvalBindingKey(o.loaded);
    this.#upstreams = resolveUpstreams(o.loaded);
    this.#maxHoldMs = parseDuration(cfg.maxHold);
    this.#recordings = configPath(o.loaded, cfg.recordings);
    this.#limits = listenerLimits(cfg);
  }

  /** Whether a request targets a Kubernetes cluster connection (errors then go out as Status objects). */
  #isKube(req: http.IncomingMessage): boolean {
    const m = /^\/([^/?]+)/.exec(req.url ?? '');
    return m !== null && this.#upstreams.get(m[1])?.kind === 'kubernetes';
  }

  #errorBody(req: http.IncomingMessage, err: HttpError): Record<string, unknown> {
    return this.#isKube(req) ? kubernetesStatus(err.status, err.body) : err.body;
  }

  // ---------------------------------------------------------------- authentication and sessions

  /** The caller's identity: synchronous for a cached token (no promise per request), a promise when it must be verified. */
  #identity(req: http.IncomingMessage): Identity | Promise<Identity> {
    const token = bearer(req);
    const challenge = { 'www-authenticate': 'Bearer realm="airlock"' };
    if (!token) throw new HttpError(401, { error: 'unauthorized', reason: 'missing Authorization: Bearer <airlock token>' }, challenge);
    const cached = this.#tokenCache.get(token);
    const revoked = cached && this.#tokens.revocations?.revoked(cached.name, cached.tokenId);
    if (revoked) {
      this.#tokenCache.delete(token);
      throw new HttpError(401, { error: 'revoked', reason: `token was revoked by ${revoked.by}: ${revoked.reason}` }, challenge);
    }
    if (cached && cached.expiresAt.getTime() > Date.now()) return cached;
    return this.#verify(token, challenge);
  }

  async #verify(token: string, challenge: Record<string, string>): Promise<Identity> {
    try {
      const id = await verifyToken(this.#tokens, token);
      if (this.#tokenCache.size >= TOKEN_CACHE_MAX) this.#tokenCache.delete(this.#tokenCache.keys().next().value as string);
      this.#tokenCache.set(token, id);
      return id;
    } catch (err) {
      this.#tokenCache.delete(token);
      const reason = err instanceof TokenError ? err.message : 'token could not be verified';
      throw new HttpError(401, { error: 'unauthorized', reason }, challenge);
    }
  }

  #session(req: http.IncomingMessage, identity: Identity, up: Upstream): SessionState {
    const socket = req.socket;
    let byKey = this.#sessions.get(socket);
    if (!byKey) {
      byKey = new Map();
      this.#sessions.set(socket, byKey);
      const all = byKey;
      socket.once('close', () => {
        for (const s of all.values()) this.#endSession(s);
      });
    }
    const key = `${identity.name}\0${up.name}`;
    let s = byKey.get(key);
    if (!s) {
      const clientAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
      const enforce = new EnforcementSession(
        { policy: this.#engine, approver: this.#approver, store: this.#store, logger: this.#log, metrics: this.#metrics, ...(this.#tracer ? { tracer: this.#tracer } : {}), ...(this.#tokens.revocations ? { revocations: this.#tokens.revocations } : {}), ...(this.#elevations ? { elevations: this.#elevations } : {}) },
        { id: randomUUID(), protocol: up.kind, identity, connection: up.name, clientAddress, ...('tokenId' in identity && typeof identity.tokenId === 'string' ? { tokenId: identity.tokenId } : {}) },
      );
      try {
        enforce.start();
      } catch (err) {
        this.#log.error({ err }, 'recording the session start failed; refusing the request');
        throw new HttpError(503, { error: 'audit-unavailable', reason: 'Airlock cannot record this session, so it is refused (see the gateway log)' });
      }
      s = { enforce, toClient: 0, fromClient: 0, connection: { name: up.name, clientAddress, sessionId: enforce.id } };
      byKey.set(key, s);
      this.#live.add(s);
    }
    return s;
  }

  #endSession(s: SessionState): void {
    if (!this.#live.delete(s)) return;
    s.enforce.end('client connection closed', { toClient: s.toClient, fromClient: s.fromClient });
  }

  // ---------------------------------------------------------------- request -> operation

  async #prepare(req: http.IncomingMessage, withBody: boolean): Promise<Prepared> {
    const url = req.url ?? '/';
    if (!url.startsWith('/')) throw new HttpError(400, { error: 'bad request', reason: 'only origin-form request targets (/path) are accepted' });
    const known = this.#identity(req);
    const identity = known instanceof Promise ? await known : known;
    const { path: rawPath, query } = splitTarget(url);
    const norm = normalizePath(rawPath);
    if (!norm.ok) throw new HttpError(400, { error: 'bad request', reason: norm.reason });
    const slash = norm.path.indexOf('/', 1);
    const connName = slash < 0 ? norm.path.slice(1) : norm.path.slice(1, slash);
    const up = this.#upstreams.get(connName);
    if (!up) throw new HttpError(404, { error: 'not found', reason: `no HTTP service or Kubernetes cluster named ${JSON.stringify(connName)}; request /<connection>/<path>` });
    const encSlash = norm.encoded.indexOf('/', 1);
    const encodedRest = encSlash < 0 ? '/' : norm.encoded.slice(encSlash);
    const path = slash < 0 ? '/' : norm.path.slice(slash);
    if (up.allow.identities.length + up.allow.groups.length > 0) {
      const ok = up.allow.identities.includes(identity.name) || identity.groups.some((g) => up.allow.groups.includes(g));
      if (!ok) throw new HttpError(403, { error: 'denied', rule: 'connection-allow', reason: `${identity.name} may not use connection ${up.name}` });
    }
    const session = this.#session(req, identity, up);
    const read = withBody ? this.#readBody(req) : EMPTY;
    const body = read instanceof Promise ? await read : read;
    session.fromClient += body.length;

    const method = (req.method ?? 'GET').toUpperCase();
    const headers: Record<string, string> = {};
    for (const h of up.ruleHeaders) {
      const v = req.headers[h];
      if (v !== undefined) headers[h] = Array.isArray(v) ? v.join(', ') : v;
    }
    const facts: HttpFacts = { method, path, query, headers, caseSensitivePaths: up.caseSensitivePaths };
    // Rules match the body's canonical form (JSON re-serialized, YAML parsed, form decoded), so
    // escapes and formatting cannot hide a token; the whole body is shown, never a silent prefix.
    const contentType = req.headers['content-type'];
    const contentEncoding = req.headers['content-encoding'];
    const cb = canonicalBody(body, contentType, contentEncoding);
    if (cb.invalidJson !== undefined) throw new HttpError(400, { error: 'bad request', reason: 'the request body is labelled JSON but does not parse' });
    if (cb.value !== undefined) facts.body = cb.value;

    // The verified identity object is cached with its token: its operation view is built once per token and session.
    let opIdentity = session.opIdentity?.of === identity ? session.opIdentity.value : undefined;
    if (!opIdentity) {
      opIdentity = { name: identity.name, groups: identity.groups, ...(identity.owner ? { owner: identity.owner } : {}) };
      session.opIdentity = { of: identity, value: opIdentity };
    }
    const op: Operation = {
      protocol: up.kind,
      identity: opIdentity,
      connection: session.connection,
      kind: up.kind,
      text: '',
      tables: [],
      functions: [],
      http: facts,
    };
    let line = `${method} ${path}${query ? `?${query}` : ''}`;
    if (up.kind === 'kubernetes') {
      op.kubernetes = classifyKubernetes(method, path, query);
      line = describeKubernetes(op.kubernetes, method, path, query);
    }
    op.text = cb.text ? `${line}\n${cb.text}` : line;
    if (up.kind === 'http' && methodOverrideParam(query, cb)) {
      // Rack, Laravel, Symfony and Express method-override read `_method` from the query or a
      // form/JSON body: a POST checked as POST would run as DELETE.
      throw new HttpError(400, { error: 'bad request', reason: 'a `_method` parameter (method override) is not accepted: send the real HTTP method' });
    }
    if (cb.kind === 'opaque') {
      const reader = this.#bodyRules.find((r) => r.applies(op));
      if (reader) {
        throw new HttpError(415, {
          error: 'unreadable body',
          rule: reader.name,
          reason: `rule ${reader.name} reads request bodies, and this one (${cb.text}) cannot be read; send JSON, YAML, form or plain text without content-encoding`,
        });
      }
    }
    // Only a held request needs its binding (a digest of the whole body): computed on first use.
    let binding: RequestBinding | undefined;
    const bind = (): RequestBinding =>
      (binding ??= requestBinding({
        method,
        path,
        query,
        body,
        connection: up.name,
        ...(contentType ? { contentType } : {}),
        ...(typeof contentEncoding === 'string' ? { contentEncoding } : {}),
        ...(op.kubernetes ? { kubernetes: op.kubernetes } : {}),
      }));
    const rh = req.headers;
    const context =
      rh['x-airlock-reason'] === undefined && rh['x-airlock-ticket'] === undefined && rh.traceparent === undefined
        ? undefined
        : contextFromHeaders((h) => {
            const v = rh[h];
            return Array.isArray(v) ? v.join(', ') : v;
          });
    return {
      identity,
      up,
      session,
      body,
      op,
      encodedRest,
      query,
      method,
      get binding() {
        return bind();
      },
      ...(context ? { context } : {}),
    };
  }

  #tooLarge(limit: number): HttpError {
    this.#metrics?.limitsHit.inc({ protocol: 'http', limit: 'maxBodyBytes' });
    // The rest of the body is not read: the connection closes after the answer.
    return new HttpError(413, { error: 'payload too large', reason: `request bodies are limited to ${limit} bytes (http.maxBodyBytes)` }, { connection: 'close' });
  }

  /** The whole request body (bounded); synchronous when the request is complete without one. */
  #readBody(req: http.IncomingMessage): Buffer | Promise<Buffer> {
    const limit = this.#cfg.maxBodyBytes;
    if (bodyTooLarge(req, limit)) return Promise.reject(this.#tooLarge(limit));
    // `Expect: 100-continue`: the client sends its body only now that it has authenticated and
    // named a connection it may use.
    this.#continues.get(req)?.writeContinue();
    this.#continues.delete(req);
    // Already complete with nothing buffered (a GET): no body to wait for. Resumed so 'end' still comes.
    if (req.complete && req.readableLength === 0 && !req.readableEnded) {
      req.resume();
      return EMPTY;
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const onData = (c: Buffer) => {
        size += c.length;
        if (size > limit) {
          req.off('data', onData);
          req.pause();
          reject(this.#tooLarge(limit));
        } else chunks.push(c);
      };
      req.on('data', onData);
      req.on('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
      req.on('error', reject);
    });
  }

  #masker(op: Operation, d: Decision): JsonMasker | undefined {
    if (d.action === 'deny') return undefined;
    return this.#maskers.for(op, d.mask.detectors);
  }

  /**
   * Upstream request headers: the client's minus its credentials, impersonation and the identity /
   * method-override headers upstreams trust (headers.ts; `withheld`), plus Airlock's (`add`). When
   * the response must be masked, only what can be masked is asked for: JSON (Kubernetes: `Accept:
   * application/json`, keeping `as=Table` only when no field mask applies, since Table cells cannot
   * be matched to field paths; detectors do cover cells and included objects), a whole body (no
   * Range) in an encoding Airlock decodes. The client's headers are not modified: what is withheld
   * is skipped when the upstream request is written (forward.ts).
   */
  #upstreamHeaders(up: Upstream, identity: Identity, masker: JsonMasker | undefined, req: http.IncomingMessage): { add: Record<string, string | string[]>; withheld: (name: string) => boolean } {
    const add: Record<string, string | string[]> = { ...up.authHeaders };
    const masking = masker !== undefined && !masker.empty;
    if (masking) add['accept-encoding'] = 'gzip, deflate, br';
    if (up.kind === 'kubernetes') {
      if (up.impersonate) {
        add['impersonate-user'] = identity.name;
        if (identity.groups.length > 0) add['impersonate-group'] = identity.groups;
      }
      if (masking) add.accept = kubernetesMaskedAccept(req.headers.accept, masker.hasFields);
    } else if (masking) add.accept = serviceMaskedAccept(req.headers.accept, masker.hasFields);
    return { add, withheld: masking ? withheldMasking(up.trustHeaders) : withheldPlain(up.trustHeaders) };
  }

  // ---------------------------------------------------------------- holding

  /**
   * Holds through the enforcement seam, bound to the exact request (method, path, query and a
   * digest of the whole body). Resolves to the result, or 'timeout' when maxHold passed first:
   * then the hold is parked (HOLD_PARKED) without cancelling, so the request stays open for approvers and the
   * same request sent again re-attaches to it.
   */
  async #hold(ctx: Prepared, d: Extract<Decision, { action: 'review' }>, gone: AbortSignal): Promise<{ result: HoldResult | 'timeout'; posted?: HoldPosted }> {
    let posted: HoldPosted | undefined;
    const ac = new AbortController();
    const onGone = () => ac.abort(new Error('the client went away while the request was held'));
    gone.addEventListener('abort', onGone);
    const binding = bindOperation(ctx.op, this.#bindingKey, { body: ctx.body, shownText: ctx.binding.summary });
    const decided = ctx.session.enforce.hold({
      operation: ctx.op,
      decision: d,
      binding,
      signal: ac.signal,
      ...(ctx.context ? { context: ctx.context } : {}),
      notify: (n) => {
        if (n.stage === 'posted') {
          const m = /request (\S+) (?:re-attached in|posted to) (.+), waiting up to/.exec(n.message);
          if (m) posted = { requestId: m[1], channel: m[2], deadline: new Date(Date.now() + d.review.timeoutMs), reattached: n.message.includes('re-attached') };
        }
      },
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), this.#maxHoldMs)));
    try {
      const result = await Promise.race([decided, timeout]);
      if (result === 'timeout') ac.abort(HOLD_PARKED);
      return { result, posted };
    } finally {
      clearTimeout(timer);
      gone.removeEventListener('abort', onGone);
    }
  }

  /**
   * Holds a reviewed request while its client stays connected (`emitter` closing aborts the hold
   * when `stillOpen()`). Returns what to record, the refusal to answer when it was not approved,
   * and whether the client went away.
   */
  async #review(
    ctx: Prepared,
    d: Extract<Decision, { action: 'review' }>,
    emitter: { once(e: 'close', f: () => void): unknown; off(e: 'close', f: () => void): unknown },
    stillOpen: () => boolean,
  ): Promise<{ approval: OperationRecord['approval']; refusal?: HttpError; gone: boolean }> {
    const gone = new AbortController();
    const onClose = () => stillOpen() && gone.abort();
    emitter.once('close', onClose);
    const { result, posted } = await this.#hold(ctx, d, gone.signal).finally(() => emitter.off('close', onClose));
    if (result === 'timeout') {
      const retry = Math.max(1, Math.round(Math.min(30_000, this.#maxHoldMs) / 1000));
      return {
        approval: posted ? { requestId: posted.requestId, outcome: 'pending', approvers: [] } : undefined,
        refusal: new HttpError(
          503,
          {
            error: 'approval pending',
            rule: d.rule,
            reason: `${d.reason}; still waiting for approval after ${Math.round(this.#maxHoldMs / 1000)}s. Send the same request again once it is approved`,
            ...(posted ? { requestId: posted.requestId, channel: posted.channel, deadline: posted.deadline.toISOString() } : {}),
          },
          { 'retry-after': String(retry) },
        ),
        gone: false,
      };
    }
    // A client that went away is answered by nobody; the caller records 499.
    if (result.approved || gone.signal.aborted) return { approval: result.approval, gone: gone.signal.aborted };
    return { approval: result.approval, refusal: this.#refusal(result.refusal), gone: false };
  }

  /** A deny decision: 403 `denied`, or 503 when the audit trail cannot record (no record, no access). */
  #denied(ctx: Prepared, d: Extract<Decision, { action: 'deny' }>): HttpError {
    const kind = ctx.session.enforce.denial(d).kind;
    return new HttpError(HTTP_STATUS[kind], { error: kind, rule: d.rule, reason: d.reason }, { ...(kind === 'audit-unavailable' ? { 'retry-after': '5' } : {}), ...(d.elevation ? { 'x-airlock-elevation': elevationHeader(d.elevation) } : {}) });
  }

  /** A refusal from the enforcement seam as an HTTP error (status by kind, JSON `error` = kind). */
  #refusal(r: Refusal): HttpError {
    return new HttpError(HTTP_STATUS[r.kind], { error: r.kind, ...(r.rule ? { rule: r.rule } : {}), reason: r.message.replace(/^Airlock: /, ''), ...(r.requestId ? { requestId: r.requestId } : {}) });
  }

  // ---------------------------------------------------------------- plain requests

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = Date.now();
    let ctx: Prepared | undefined;
    let decision: Decision | undefined;
    let approval: OperationRecord['approval'];
    // One record per request, built in one pass (it is the audit store's input on every request).
    const record = (status: number, extra?: Partial<OperationRecord>) => {
      if (!ctx) return;
      const http = ctx.op.http!;
      const classification: Record<string, unknown> = { http: { method: ctx.method, path: http.path, query: ctx.query, headers: http.headers }, status };
      if (ctx.op.kubernetes) classification.kubernetes = ctx.op.kubernetes;
      if (decision?.elevation) classification.elevation = decision.elevation.id;
      const rec: Omit<OperationRecord, 'sessionId' | 'seq'> = { at: new Date(started), text: ctx.op.text, kind: ctx.op.kind, classification, decision: decision?.action ?? 'deny', maskedColumns: [] };
      if (decision && 'rule' in decision && decision.rule) rec.rule = decision.rule;
      if (decision?.action === 'deny' || decision?.action === 'review') rec.reason = decision.reason;
      rec.durationMs = Date.now() - started;
      if (approval) rec.approval = approval;
      if (extra) Object.assign(rec, extra);
      ctx.session.toClient += rec.bytes ?? 0;
      ctx.session.enforce.record(rec);
    };
    try {
      ctx = await this.#prepare(req, true);
      const d = (decision = ctx.session.enforce.decide([ctx.op], ctx.context).decision);
      if (d.action === 'deny') throw this.#denied(ctx, d);
      const extraHeaders: Record<string, string> = {};
      // During an elevation window every response says so.
      if (d.elevation) extraHeaders['x-airlock-elevation'] = elevationHeader(d.elevation);
      if (d.action === 'review') {
        const held = await this.#review(ctx, d, res, () => !res.writableEnded);
        approval = held.approval;
        if (held.refusal) throw held.refusal;
        if (held.approval) extraHeaders['x-airlock-approval'] = held.approval.requestId;
        if (held.gone) return record(499, { error: 'client went away while held' });
      }
      const masker = this.#masker(ctx.op, d);
      const result = await this.#forward(req, res, ctx, masker, extraHeaders).catch((err: unknown) => {
        // Contained: this request fails, the listener and every other connection keep going.
        this.#log.error({ err }, 'HTTP gateway response relay failed');
        sendJson(res, 500, this.#errorBody(req, new HttpError(500, { error: 'internal error', reason: 'Airlock failed to relay the response; see the gateway log' })));
        return { status: 500, bytes: 0, masked: [] as string[], error: (err as Error).message };
      });
      record(result.status, result.error ? { bytes: result.bytes, maskedColumns: result.masked, error: result.error } : { bytes: result.bytes, maskedColumns: result.masked });
      if (approval) {
        ctx.session.enforce.reportResult(approval, {
          summary: `HTTP ${result.status}, ${result.bytes} bytes returned in ${Date.now() - started} ms${result.error ? `; ${result.error}` : ''}`,
          tag: `HTTP ${result.status}`,
          ...(result.error ? { error: result.error } : {}),
        });
      }
    } catch (err) {
      if (err instanceof HttpError) {
        if (err.status !== 499) sendJson(res, err.status, this.#errorBody(req, err), err.headers);
        record(err.status, { error: String(err.body.reason ?? err.body.error) });
      } else {
        this.#log.error({ err }, 'HTTP gateway request failed');
        sendJson(res, 500, { error: 'internal error', reason: 'Airlock failed to handle the request; see the gateway log' });
        record(500, { error: (err as Error).message });
      }
    }
  }

  #forward(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    ctx: { up: Upstream; identity: Identity; body: Buffer; encodedRest: string; query: string; op: Operation },
    masker: JsonMasker | undefined,
    extraHeaders: Record<string, string>,
  ): Promise<{ status: number; bytes: number; masked: string[]; error?: string }> {
    const { up } = ctx;
    const headers = this.#upstreamHeaders(up, ctx.identity, masker, req);
    const k = ctx.op.kubernetes;
    // Streams the client expects incrementally: watches and followed logs.
    const stream = k !== undefined && (k.verb === 'watch' || (k.subresource === 'log' && boolParam(new URLSearchParams(ctx.query), 'follow')));
    // Airlock's own error bodies: a Status object for Kubernetes clients, as they are otherwise.
    const errorBody = up.kind === 'kubernetes' ? kubernetesStatus : undefined;
    // Table cells cannot be matched to field paths: a Table while field masks apply (an API server
    // that ignored Accept: application/json) is refused rather than half masked.
    const refuseDocument =
      up.kind === 'kubernetes' && masker?.hasFields
        ? (doc: unknown) => (isKubernetesTable(doc) ? 'the API server answered a Table, whose cells field masks cannot cover' : undefined)
        : undefined;
    return new Promise((resolve, reject) => {
      const method = ctx.op.http!.method;
      const upstreamReq = sendUpstream(up.target, method, upstreamPath(up.target, ctx.encodedRest, ctx.query), forwardHeaders(req.headers, headers.add, up.target, method, ctx.body.length, headers.withheld), ctx.body);
      // The client went away before the response ended: the upstream request is abandoned too.
      res.once('close', () => {
        if (!res.writableFinished) upstreamReq.destroy();
      });
      upstreamReq.once('response', (proxyRes: http.IncomingMessage) => {
        relayResponse(proxyRes, res, masker, { maxBytes: this.#cfg.maxMaskedResponseBytes, stream, extraHeaders, ...(errorBody ? { errorBody } : {}), ...(refuseDocument ? { refuseDocument } : {}) }).then(resolve, reject);
      });
      upstreamReq.on('error', (err: NodeJS.ErrnoException) => {
        if (res.destroyed || req.socket.destroyed) {
          upstreamReq.destroy();
          resolve({ status: 499, bytes: 0, masked: [], error: 'client closed the connection before the response ended' });
          return;
        }
        const reason = `upstream ${up.name} unavailable: ${err.code ?? err.message}`;
        sendJson(res, 502, { error: 'bad gateway', reason });
        resolve({ status: 502, bytes: 0, masked: [], error: reason });
      });
    });
  }

  // ---------------------------------------------------------------- websocket upgrades

  async upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const started = Date.now();
    let ctx: Prepared | undefined;
    let decision: Decision | undefined;
    let approval: OperationRecord['approval'];
    let seq = 0;
    const record = (status: number, extra: Partial<OperationRecord> = {}, ws?: WsRelayResult) => {
      if (!ctx) return;
      ctx.session.toClient += ws?.bytes.toClient ?? 0;
      ctx.session.fromClient += ws?.bytes.fromClient ?? 0;
      const rec: Omit<OperationRecord, 'sessionId' | 'seq'> = {
        at: new Date(started),
        text: ctx.op.text,
        kind: ctx.op.kind,
        classification: {
          http: { method: ctx.method, path: ctx.op.http!.path, query: ctx.query, upgrade: 'websocket' },
          status,
          ...(ctx.op.kubernetes ? { kubernetes: ctx.op.kubernetes } : {}),
          ...(ws ? { websocket: { protocol: ws.protocol, frames: ws.frames, bytes: ws.bytes, ...(ws.status ? { status: ws.status } : {}) }, ...(ws.recording ? { recording: ws.recording } : {}) } : {}),
        },
        decision: decision?.action ?? 'deny',
        ...(decision && 'rule' in decision && decision.rule ? { rule: decision.rule } : {}),
        ...(decision?.action === 'deny' || decision?.action === 'review' ? { reason: decision.reason } : {}),
        maskedColumns: [],
        durationMs: Date.now() - started,
        ...(ws ? { bytes: ws.bytes.toClient } : {}),
        ...(approval ? { approval } : {}),
        ...extra,
      };
      if (seq) ctx.session.enforce.recordAt(seq, rec);
      else ctx.session.enforce.record(rec);
    };
    try {
      if (String(req.headers.upgrade ?? '').toLowerCase() !== 'websocket') {
        throw new HttpError(400, {
          error: 'bad request',
          reason: `upgrade to ${String(req.headers.upgrade)} is not supported: Airlock proxies and records websockets only (kubectl uses websockets, v5.channel.k8s.io, by default)`,
        });
      }
      ctx = await this.#prepare(req, false);
      const d = (decision = ctx.session.enforce.decide([ctx.op], ctx.context).decision);
      if (d.action === 'deny') throw this.#denied(ctx, d);
      // Refused before any hold: approvers are not asked for what could not be relayed.
      const masker = this.#masker(ctx.op, d);
      const k = ctx.op.kubernetes;
      let maskFrame: FrameMasker | undefined;
      if (masker && !masker.empty) {
        // Only what can be masked passes: port-forward carries raw bytes, and exec output has no fields.
        const unmaskable = k?.subresource === 'portforward' ? 'port-forward streams raw bytes' : (k?.subresource === 'exec' || k?.subresource === 'attach') && masker.hasFields ? 'field masks cannot apply to terminal output' : undefined;
        if (unmaskable) throw new HttpError(502, { error: 'unmaskable response', rule: masker.rules.join(', '), reason: `a mask applies to this request and ${unmaskable}, so the upgrade is refused` });
        maskFrame = websocketFrameMasker(masker);
      }
      if (d.action === 'review') {
        const held = await this.#review(ctx, d, socket, () => true);
        approval = held.approval;
        if (held.refusal) throw held.refusal;
        if (held.gone || socket.destroyed) return record(499, { error: 'client went away while held' });
      }
      const up = ctx.up;
      const headers = this.#upstreamHeaders(up, ctx.identity, masker, req);
      const upstreamHeaders: Record<string, string | string[]> = { ...headers.add };
      for (const h of ['origin', 'user-agent', 'x-stream-protocol-version']) {
        const v = req.headers[h];
        if (v !== undefined) upstreamHeaders[h] = v;
      }
      const base = new URL(up.url.href);
      base.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
      const upstreamUrl = `${base.origin}${base.pathname.replace(/\/+$/, '')}${ctx.encodedRest}${ctx.query ? `?${ctx.query}` : ''}`;
      const protocols = String(req.headers['sec-websocket-protocol'] ?? '')
        .split(',')
        .map((p) => p.trim())
        .filter((p) => p !== '');
      seq = ctx.session.enforce.reserveSeq();
      const cast =
        k && (k.subresource === 'exec' || k.subresource === 'attach')
          ? {
              path: join(this.#recordings, `${ctx.session.enforce.id}-${seq}.cast`),
              header: { width: 80, height: 24, title: `${ctx.identity.name}@${up.name}: ${ctx.op.text.split('\n')[0]}`, ...(k.command ? { command: k.command.join(' ') } : {}) },
            }
          : undefined;
      const ws = await relayWebSocket({
        req,
        socket,
        head,
        upstreamUrl,
        headers: upstreamHeaders,
        tls: up.tls,
        protocols,
        cast,
        ...(maskFrame ? { maskFrame } : {}),
        maxMessageBytes: this.#limits.maxMessageBytes,
        maxBufferedBytes: this.#limits.maxBufferedBytes,
        onLimit: (limit) => this.#metrics?.limitsHit.inc({ protocol: up.kind, limit }),
      });
      record(ws.refusedStatus ?? 101, { ...(ws.error ? { error: ws.error } : {}), ...(ws.masked ? { maskedColumns: ws.masked } : {}) }, ws);
      ctx.session.enforce.reportResult(approval, {
        summary: `websocket ${ws.protocol || 'refused'}: ${ws.frames.toClient} frames / ${ws.bytes.toClient} bytes out, ${ws.frames.fromClient} frames in${ws.recording ? `; recorded to ${ws.recording}` : ''}`,
        tag: `websocket ${ws.refusedStatus ?? 101}`,
      });
    } catch (err) {
      if (err instanceof HttpError) {
        if (err.status !== 499) refuseUpgrade(socket, err.status, this.#errorBody(req, err), err.headers);
        record(err.status, { error: String(err.body.reason ?? err.body.error) });
      } else {
        this.#log.error({ err }, 'HTTP gateway upgrade failed');
        refuseUpgrade(socket, 500, { error: 'internal error', reason: 'Airlock failed to handle the upgrade; see the gateway log' });
        record(500, { error: (err as Error).message });
      }
    }
  }

  close(): void {
    for (const s of [...this.#live]) this.#endSession(s);
    for (const up of this.#upstreams.values()) up.agent.destroy();
  }
}

/** Starts the HTTP/Kubernetes listener from `http:` in the config. */
export async function startHttpGateway(opts: HttpGatewayOptions): Promise<HttpGateway> {
  const core = new HttpGatewayCore(opts);
  const cfg = opts.loaded.config.http!;
  const tls = cfg.listen.tls;
  const log = (opts.logger ?? rootLog).child({ component: 'http-gateway' });
  // Every request and upgrade contains its own failure: it is answered 500 and logged, and nothing
  // a client or upstream sends can end the process (and with it the other protocols' listeners).
  const limits = listenerLimits(cfg);
  const metrics = opts.metrics;
  const sockets = new Set<Socket>();
  /** Connections beyond maxClientConnections: answered 503 and closed, never served. */
  const overLimit = new WeakSet<object>();
  // TLS: requests arrive on the TLSSocket, whose `_parent` is the TCP socket counted at 'connection'.
  const isOverLimit = (socket: object) => overLimit.has(socket) || overLimit.has((socket as { _parent?: object })._parent ?? socket);
  /** Sockets whose current request's headers arrived (a timeout then is requestTimeout, not clientLoginTimeout). */
  const inRequest = new WeakSet<object>();
  // Refusals before a session exists are caused by whoever can open a socket: logged and audited
  // at a bounded rate, the rest counted and reported with the next one that passes (as PostgreSQL).
  const refusalLimiter = new EventRateLimiter(20, 10_000);
  const refused = (reason: string, clientAddress: string, detail: Record<string, unknown>) => {
    metrics?.refusedConnections.inc({ protocol: 'http', reason });
    const v = refusalLimiter.take();
    if (!v.pass) return;
    const extra = v.suppressed ? { suppressedSinceLast: v.suppressed } : {};
    log.info({ clientAddress, refusal: reason, ...detail, ...extra }, 'http connection refused');
    try {
      opts.store.recordAudit({ at: new Date(), kind: 'http.refused', subject: clientAddress, detail: { clientAddress, refusal: reason, ...detail, ...extra } });
    } catch (err) {
      log.error({ err }, 'recording an audit event failed');
    }
  };
  const address = (s: { remoteAddress?: string; remotePort?: number }) => `${s.remoteAddress ?? '?'}:${s.remotePort ?? 0}`;
  const serveOverLimit = (req: http.IncomingMessage, res: http.ServerResponse): boolean => {
    if (!isOverLimit(req.socket)) return false;
    if (req.socket.writableEnded) return true; // plain HTTP: answered when it connected
    sendJson(res, 503, { error: 'too many connections', reason: `Airlock accepts at most ${limits.maxClientConnections} connections (http.listen.maxClientConnections); retry shortly` }, { 'retry-after': '1', connection: 'close' });
    return true;
  };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (serveOverLimit(req, res)) return;
    inRequest.add(req.socket);
    req.once('end', () => inRequest.delete(req.socket));
    (opts.auth ? opts.auth.handle(req, res) : Promise.resolve(false)).then((done) => (done ? undefined : core.handle(req, res))).catch((err: unknown) => {
      log.error({ err }, 'HTTP request handler failed');
      sendJson(res, 500, { error: 'internal error', reason: 'Airlock failed to handle the request; see the gateway log' });
    });
  };
  const serverOptions: http.ServerOptions = {
    // Slowloris: the request line and headers must arrive within clientLoginTimeout, the whole
    // request (body included) within requestTimeout. Neither applies once the request has been
    // received, so a request held for approval is not cut by them.
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    connectionsCheckingInterval: limits.checkIntervalMs,
    keepAliveTimeout: 65_000,
  };
  const server = tls
    ? https.createServer({ ...serverOptions, cert: readFileSync(configPath(opts.loaded, tls.cert)), key: readFileSync(configPath(opts.loaded, tls.key)) }, handler)
    : http.createServer(serverOptions, handler);
  server.keepAliveTimeout = 65_000;
  // A body announced with `Expect: 100-continue` that is too large is refused before the client sends it.
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (serveOverLimit(req, res)) return;
    if (bodyTooLarge(req, cfg.maxBodyBytes)) {
      metrics?.limitsHit.inc({ protocol: 'http', limit: 'maxBodyBytes' });
      sendJson(res, 413, { error: 'payload too large', reason: `request bodies are limited to ${cfg.maxBodyBytes} bytes (http.maxBodyBytes)` }, { connection: 'close' });
      return;
    }
    inRequest.add(req.socket);
    req.once('end', () => inRequest.delete(req.socket));
    (opts.auth ? opts.auth.handle(req, res) : Promise.resolve(false)).then((done) => (done ? undefined : core.handleExpectContinue(req, res))).catch((err: unknown) => {
      log.error({ err }, 'HTTP request handler failed');
      sendJson(res, 500, { error: 'internal error', reason: 'Airlock failed to handle the request; see the gateway log' });
    });
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    if (isOverLimit(req.socket)) {
      refuseUpgrade(socket, 503, { error: 'too many connections', reason: `Airlock accepts at most ${limits.maxClientConnections} connections (http.listen.maxClientConnections); retry shortly` }, { 'retry-after': '1' });
      return;
    }
    core.upgrade(req, socket, head).catch((err: unknown) => {
      log.error({ err }, 'HTTP upgrade handler failed');
      socket.destroy();
    });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (isOverLimit(socket)) return void socket.destroy();
    const clientAddress = address(socket as Socket);
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      // Slow headers (slowloris) or a body trickling in: 408, closed, counted.
      const limit = inRequest.has(socket) ? 'requestTimeout' : 'clientLoginTimeout';
      metrics?.limitsHit.inc({ protocol: 'http', limit });
      refused(limit, clientAddress, { timeoutMs: limit === 'requestTimeout' ? limits.requestTimeoutMs : limits.headersTimeoutMs });
      if (!socket.destroyed) socket.end('HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') refused('badRequest', clientAddress, { reason: err.code ?? err.message });
    if (!socket.destroyed) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
  });
  // Runs before the HTTP parser is attached (prepended), so a connection beyond the limit is
  // answered at once and never reaches a handler.
  server.prependListener('connection', (s: Socket) => {
    if (sockets.size >= limits.maxClientConnections) {
      overLimit.add(s);
      metrics?.limitsHit.inc({ protocol: 'http', limit: 'maxClientConnections' });
      refused('maxClientConnections', address(s), { limit: limits.maxClientConnections });
      refuseOverLimit(s, !tls, limits);
      return;
    }
    s.setNoDelay(true);
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const host = opts.host ?? cfg.listen.host;
  const port = opts.port ?? cfg.listen.port;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  return {
    host: addr.address,
    port: addr.port,
    url: `${tls ? 'https' : 'http'}://${addr.address.includes(':') ? `[${addr.address}]` : addr.address}:${addr.port}`,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      core.close();
    },
  };
}
