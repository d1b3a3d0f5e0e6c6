// One MCP session: an SDK Server whose every tools/call becomes an Operation decided, held,
// recorded and reported by ONE EnforcementSession (gateway/enforce/). Native tools reach Airlock's
// own protocol listeners with a token minted for the caller (so PostgreSQL classification, masking,
// limits and holds are exactly the native ones); proxied upstream MCP tools are decided here, per
// tool and per argument pattern, held bound to a digest of the exact arguments, and masked.
import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createHash } from 'node:crypto';
import pg from 'pg';
import ssh2 from 'ssh2';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { CallToolRequestSchema, ListToolsRequestSchema, type CallToolResult, type Tool } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { bindOperation } from '../enforce/binding.ts';
import { MCP_RETRYABLE, POSTGRES_SQLSTATE, SSH_EXIT_STATUS, type Refusal, type RefusalKind } from '../enforce/refusal.ts';
import { EnforcementSession, type ApprovalRecord, type EnforcementDeps } from '../enforce/session.ts';
import { redactDetected } from '../masking/redact-text.ts';
import { cleanReason, contextComment, reasonHeader } from '../enforce/context.ts';
import type { Decision } from '../policy/decision.ts';
import type { Identity, Operation } from '../policy/operation.ts';
import { canonicalJson, toolFingerprint, toolOperation } from './operation.ts';
import { PendingCalls, type InFlight } from './pending.ts';

export interface McpUpstream {
  name: string;
  url: string;
  token?: string;
}

export interface McpGatewayDeps {
  enforcement: EnforcementDeps;
  bindingKey: string;
  upstreams: McpUpstream[];
  /** Airlock's own PostgreSQL listener and the connections reachable through it. */
  postgres?: { host: string; port: number; connections: string[] };
  /** Airlock's own SSH listener, pinned by its host key fingerprint (`SHA256:...`), and its targets. */
  ssh?: { host: string; port: number; hostKeyFingerprint: string; targets: string[] };
  /** Airlock's own HTTP/Kubernetes listener (base URL, its certificate when TLS) and what it fronts. */
  http?: { url: string; ca?: string; services: string[]; clusters: string[] };
  /** A short-lived Airlock token for the caller, expiring no later than `notAfter` (the caller's own token). */
  mint: (identity: Identity, notAfter?: Date) => Promise<string>;
  /** Longest a held call keeps its client waiting before answering `pending`. */
  maxHoldMs: number;
  pending: PendingCalls;
  logger: Logger;
}

export interface McpCaller {
  identity: Identity;
  tokenExpiresAt?: Date;
  clientAddress: string;
}

type Notify = (message: string, requestId?: string) => void;

const PURPOSE_PROPERTIES = {
  reason: { type: 'string', description: 'Why you need this; shown to the approver and recorded' },
  ticket: { type: 'string', description: 'Ticket or incident id this work belongs to; shown to the approver and recorded' },
} as const;

const SQLSTATE_KIND = new Map<string, RefusalKind>(Object.entries(POSTGRES_SQLSTATE).map(([k, v]) => [v, k as RefusalKind]));

function text(t: string): CallToolResult['content'] {
  return [{ type: 'text', text: t }];
}

/** A refusal as an MCP tool error: the kind in `error`, whether retrying can help, the request. */
export function toolError(r: Refusal): CallToolResult {
  return {
    isError: true,
    content: text(r.hint ? `${r.message} (${r.hint})` : r.message),
    structuredContent: { error: r.kind, retryable: MCP_RETRYABLE[r.kind], ...(r.rule ? { rule: r.rule } : {}), ...(r.requestId ? { requestId: r.requestId } : {}) },
  };
}

function purpose(args: Record<string, unknown>): { reason?: string; ticket?: string; details: string[] } {
  const reason = typeof args.reason === 'string' && args.reason.trim() ? args.reason.trim().slice(0, 1000) : undefined;
  const ticket = typeof args.ticket === 'string' && args.ticket.trim() ? args.ticket.trim().slice(0, 200) : undefined;
  // Approvers' lines: one line each (a line break would forge lines of Airlock's), PII redacted, cut.
  const shown = { reason: cleanReason(reason), ticket: cleanReason(ticket) };
  const details = [...(shown.reason ? [`reason (stated by the caller): ${shown.reason}`] : []), ...(shown.ticket ? [`ticket: ${shown.ticket}`] : [])];
  return { reason, ticket, details };
}

/** Masks every string a tool result carries (text content and structured content) with the plan's detectors. */
function maskResult(r: CallToolResult, d: Decision): { result: CallToolResult; masked: boolean } {
  if (d.action === 'deny' || d.mask.detectors.length === 0) return { result: r, masked: false };
  let masked = false;
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') {
      const m = redactDetected(v);
      if (m !== v) masked = true;
      return m;
    }
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  // Every field, not only `text`: resources, annotations and _meta reach the agent too.
  return { result: walk(r) as CallToolResult, masked };
}

export class McpSession {
  readonly server: Server;
  readonly enforce: EnforcementSession;
  readonly #deps: McpGatewayDeps;
  readonly #caller: McpCaller;
  readonly #upstreams = new Map<string, Promise<Client>>();
  /** Proxied tool name -> fingerprint of what this session listed. */
  readonly #listed = new Map<string, string>();
  readonly #inflight = new Set<Promise<unknown>>();
  #closed = false;

  constructor(deps: McpGatewayDeps, caller: McpCaller, protocolName = 'airlock') {
    this.#deps = deps;
    this.#caller = caller;
    this.enforce = new EnforcementSession(deps.enforcement, {
      id: randomUUID(),
      protocol: 'mcp',
      identity: caller.identity,
      connection: 'mcp',
      clientAddress: caller.clientAddress,
      tokenExpiresAt: caller.tokenExpiresAt,
    });
    this.enforce.start();
    this.server = new Server({ name: protocolName, version: '1' }, { capabilities: { tools: { listChanged: true } } });
    this.server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: await this.#listTools() }));
    this.server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
      const progressToken = req.params._meta?.progressToken;
      let progress = 0;
      const sendProgress = (message: string) => {
        if (progressToken === undefined) return;
        progress += 1;
        void extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress, message } }).catch(() => undefined);
      };
      const args = (req.params.arguments ?? {}) as Record<string, unknown>;
      const p = this.#call(req.params.name, args, sendProgress, extra.signal);
      this.#inflight.add(p);
      try {
        return await p;
      } finally {
        this.#inflight.delete(p);
      }
    });
  }

  get #ctx() {
    return { identity: this.#caller.identity, sessionId: this.enforce.id, clientAddress: this.#caller.clientAddress };
  }

  async #upstream(name: string): Promise<Client> {
    let c = this.#upstreams.get(name);
    if (!c) {
      const u = this.#deps.upstreams.find((x) => x.name === name)!;
      c = (async () => {
        const client = new Client({ name: 'airlock-gateway', version: '1' });
        await client.connect(new StreamableHTTPClientTransport(new URL(u.url), u.token ? { requestInit: { headers: { authorization: `Bearer ${u.token}` } } } : undefined));
        return client;
      })();
      c.catch(() => this.#upstreams.delete(name));
      this.#upstreams.set(name, c);
    }
    return c;
  }

  async #upstreamTools(name: string): Promise<Tool[]> {
    const client = await this.#upstream(name);
    const tools: Tool[] = [];
    let cursor: string | undefined;
    do {
      const page = await client.listTools(cursor ? { cursor } : {});
      tools.push(...page.tools);
      cursor = page.nextCursor;
    } while (cursor && tools.length < 10_000);
    return tools;
  }

  #nativeTools(): Tool[] {
    const tools: Tool[] = [];
    const pgc = this.#deps.postgres;
    if (pgc && pgc.connections.length > 0) {
      tools.push({
        name: 'postgres_query',
        description: `Run one SQL statement on a PostgreSQL connection through Airlock (policy, masking, limits and approvals apply). Connections: ${pgc.connections.join(', ')}.`,
        inputSchema: {
          type: 'object',
          properties: {
            connection: { type: 'string', enum: pgc.connections },
            sql: { type: 'string', description: 'One SQL statement; use $1, $2 ... for parameters' },
            params: { type: 'array', items: { type: ['string', 'number', 'boolean', 'null'] } },
            ...PURPOSE_PROPERTIES,
          },
          required: ['connection', 'sql'],
        },
      });
    }
    const sc = this.#deps.ssh;
    if (sc && sc.targets.length > 0) {
      tools.push({
        name: 'ssh_exec',
        description: `Run one command on a host through Airlock (a simple command runs under policy; shell syntax and interpreters are held or denied as the SSH policy says). Targets: ${sc.targets.join(', ')}.`,
        inputSchema: { type: 'object', properties: { target: { type: 'string', enum: sc.targets }, command: { type: 'string' }, ...PURPOSE_PROPERTIES }, required: ['target', 'command'] },
      });
    }
    const hc = this.#deps.http;
    const httpSchema = (connections: string[], what: string): Tool['inputSchema'] => ({
      type: 'object',
      properties: {
        connection: { type: 'string', enum: connections },
        method: { type: 'string', description: 'GET, POST, PUT, PATCH, DELETE ...' },
        path: { type: 'string', description: `path below the ${what}, starting with /, with ?query if any` },
        headers: { type: 'object', additionalProperties: { type: 'string' } },
        body: { type: 'string' },
        ...PURPOSE_PROPERTIES,
      },
      required: ['connection', 'method', 'path'],
    });
    if (hc && hc.services.length > 0) tools.push({ name: 'http_request', description: `Send an HTTP request to a service through Airlock (policy, masking and approvals apply). Services: ${hc.services.join(', ')}.`, inputSchema: httpSchema(hc.services, 'service') });
    if (hc && hc.clusters.length > 0) tools.push({ name: 'kubernetes_request', description: `Call a Kubernetes API server through Airlock (policy, Secret masking and approvals apply), e.g. GET /api/v1/namespaces/default/pods. Clusters: ${hc.clusters.join(', ')}.`, inputSchema: httpSchema(hc.clusters, 'API server') });
    tools.push({
      name: 'airlock_wait',
      description: 'Keep waiting for a held call that answered `pending`: returns its result once approvers decide.',
      inputSchema: { type: 'object', properties: { request_id: { type: 'string' } }, required: ['request_id'] },
    });
    return tools;
  }

  async #listTools(): Promise<Tool[]> {
    const tools = this.#nativeTools();
    for (const u of this.#deps.upstreams) {
      let upstream: Tool[];
      try {
        upstream = await this.#upstreamTools(u.name);
      } catch (err) {
        this.#deps.logger.warn({ err, upstream: u.name }, 'MCP upstream could not be listed');
        continue;
      }
      for (const t of upstream) {
        const name = `${u.name}__${t.name}`;
        // Hidden when policy denies the tool whatever its arguments (a rule on the name alone).
        const { decision } = this.enforce.decide([toolOperation(this.#ctx, u.name, t.name, {})]);
        if (decision.action === 'deny') {
          this.#listed.delete(name);
          continue;
        }
        this.#listed.set(name, toolFingerprint(t));
        const props = (t.inputSchema.properties ?? {}) as Record<string, object>;
        const extra = Object.fromEntries(Object.entries(PURPOSE_PROPERTIES).filter(([k]) => !(k in props)));
        tools.push({ ...t, name, inputSchema: { ...t.inputSchema, properties: { ...props, ...extra } } });
      }
    }
    return tools;
  }

  async #call(name: string, args: Record<string, unknown>, progress: (m: string) => void, signal: AbortSignal): Promise<CallToolResult> {
    if (this.enforce.tokenExpired) return toolError(this.enforce.tokenRefusal());
    if (name === 'airlock_wait') return this.#wait(args, progress, signal);
    if (name === 'postgres_query' && this.#deps.postgres) return this.#postgres(args, progress, signal);
    if (name === 'ssh_exec' && this.#deps.ssh) return this.#ssh(args, progress, signal);
    if ((name === 'http_request' || name === 'kubernetes_request') && this.#deps.http) return this.#http(name, args, progress, signal);
    const sep = name.indexOf('__');
    const up = sep > 0 ? this.#deps.upstreams.find((u) => u.name === name.slice(0, sep)) : undefined;
    if (!up) return { isError: true, content: text(`Airlock: unknown tool ${JSON.stringify(name)}`) };
    return this.#proxied(up, name.slice(sep + 2), name, args, progress, signal);
  }

  /**
   * Runs `exec` for the client, answering `pending` (with the request id) when a hold outlives
   * maxHold; the run goes on in the gateway and `airlock_wait` attaches to it.
   */
  async #respond(exec: (notify: Notify, signal: AbortSignal) => Promise<CallToolResult>, progress: (m: string) => void, clientSignal: AbortSignal): Promise<CallToolResult> {
    const ac = new AbortController();
    const f: InFlight = { identity: this.#caller.identity.name, listeners: new Set([progress]), done: Promise.resolve({ content: [] }), finished: false };
    const notify: Notify = (message, requestId) => {
      f.lastNotice = message;
      if (requestId && !f.requestId) {
        f.requestId = requestId;
        this.#deps.pending.register(f);
      }
      for (const l of f.listeners) l(message);
    };
    const onCancel = () => ac.abort(new Error('the client cancelled the tool call'));
    clientSignal.addEventListener('abort', onCancel);
    f.done = exec(notify, ac.signal);
    // A call answered `pending` keeps running: the session ends (and is recorded as ended) after it.
    const running = f.done.catch(() => undefined);
    this.#inflight.add(running);
    void running.finally(() => this.#inflight.delete(running));
    if (f.requestId) this.#deps.pending.register(f);
    const waited = await waitFor(f, this.#deps.maxHoldMs);
    clientSignal.removeEventListener('abort', onCancel);
    f.listeners.delete(progress);
    return waited;
  }

  async #wait(args: Record<string, unknown>, progress: (m: string) => void, clientSignal: AbortSignal): Promise<CallToolResult> {
    const id = typeof args.request_id === 'string' ? args.request_id : '';
    const f = this.#deps.pending.find(id, this.#caller.identity.name);
    if (!f) return { isError: true, content: text(`Airlock: no held call ${JSON.stringify(id)} of yours is waiting here (finished over 10 minutes ago, or another gateway holds it): send the same call again to re-attach`) };
    f.listeners.add(progress);
    if (f.lastNotice && !f.finished) progress(f.lastNotice);
    try {
      return await Promise.race([waitFor(f, this.#deps.maxHoldMs), new Promise<CallToolResult>((r) => clientSignal.addEventListener('abort', () => r(pendingResult(f))))]);
    } finally {
      f.listeners.delete(progress);
    }
  }

  // ------------------------------------------------------------------ native: PostgreSQL

  async #postgres(args: Record<string, unknown>, progress: (m: string) => void, clientSignal: AbortSignal): Promise<CallToolResult> {
    const pgc = this.#deps.postgres!;
    const connection = typeof args.connection === 'string' ? args.connection : '';
    const sql = typeof args.sql === 'string' ? args.sql : '';
    const params = Array.isArray(args.params) ? args.params : [];
    if (!pgc.connections.includes(connection)) return { isError: true, content: text(`Airlock: unknown PostgreSQL connection ${JSON.stringify(connection)}; one of ${pgc.connections.join(', ')}`) };
    if (!sql) return { isError: true, content: text('Airlock: `sql` is required') };
    if (params.some((p) => p !== null && !['string', 'number', 'boolean'].includes(typeof p))) return { isError: true, content: text('Airlock: `params` are strings, numbers, booleans or null') };
    const why = purpose(args);
    // The tool call itself is an operation of this session (rules may deny a tool outright); what
    // the statement does is decided by the PostgreSQL session it runs in, as for psql.
    const op = toolOperation(this.#ctx, connection, 'postgres_query', { sql, params });
    const { decision } = this.enforce.decide([op]);
    if (decision.action === 'deny') return this.#refuse(op, decision, why);
    return this.#respond(
      async (notify, signal) => {
        const started = Date.now();
        const client = new pg.Client({
          host: pgc.host,
          port: pgc.port,
          database: connection,
          user: this.#caller.identity.name,
          password: await this.#deps.mint(this.#caller.identity, this.#caller.tokenExpiresAt),
          // The PostgreSQL session's own record names where it came from.
          application_name: `airlock-mcp ${this.enforce.id.slice(0, 8)}`,
        });
        client.on('notice', (n: { message?: string }) => {
          const m = /request (\S+)/.exec(n.message ?? '');
          notify(n.message ?? '', m?.[1]);
        });
        client.on('error', () => undefined);
        const onAbort = () => void client.end().catch(() => undefined);
        signal.addEventListener('abort', onAbort);
        try {
          await client.connect();
          // The caller's reason reaches the PostgreSQL session (and so any approver of a held
          // statement) the way psql users state one: a leading SQL comment.
          const r = await client.query({ text: contextComment(why) + sql, values: params as unknown[], rowMode: 'array' });
          const fields = r.fields.map((x) => x.name);
          const rows = r.rows as unknown[][];
          this.enforce.record({ at: new Date(), text: op.text, kind: op.kind, classification: { tool: 'postgres_query', connection, ...why.reason ? { reason: why.reason } : {}, ...why.ticket ? { ticket: why.ticket } : {} }, decision: decision.action, rule: decision.rule, rows: rows.length, maskedColumns: [], durationMs: Date.now() - started });
          return {
            content: text(JSON.stringify({ command: r.command, rowCount: r.rowCount, fields, rows })),
            structuredContent: { command: r.command, rowCount: r.rowCount, fields, rows },
          };
        } catch (err) {
          const e = err as Error & { code?: string };
          this.enforce.record({ at: new Date(), text: op.text, kind: op.kind, classification: { tool: 'postgres_query', connection, ...why.reason ? { reason: why.reason } : {}, ...why.ticket ? { ticket: why.ticket } : {} }, decision: decision.action, rule: decision.rule, maskedColumns: [], error: e.message, durationMs: Date.now() - started });
          const kind = e.code ? SQLSTATE_KIND.get(e.code) : undefined;
          const requestId = /request (\S+?)[\s:,]/.exec(e.message)?.[1];
          if (kind) return toolError({ kind, message: e.message, ...(requestId ? { requestId } : {}) });
          return { isError: true, content: text(`PostgreSQL error${e.code ? ` ${e.code}` : ''}: ${e.message}`) };
        } finally {
          signal.removeEventListener('abort', onAbort);
          await client.end().catch(() => undefined);
        }
      },
      progress,
      clientSignal,
    );
  }



  // ------------------------------------------------------------------ native: SSH

  /** Runs the command through Airlock's own SSH listener; its hold notices (stderr) become progress. */
  async #ssh(args: Record<string, unknown>, progress: (m: string) => void, clientSignal: AbortSignal): Promise<CallToolResult> {
    const sc = this.#deps.ssh!;
    const target = typeof args.target === 'string' ? args.target : '';
    const command = typeof args.command === 'string' ? args.command : '';
    if (!sc.targets.includes(target)) return { isError: true, content: text(`Airlock: unknown SSH target ${JSON.stringify(target)}; one of ${sc.targets.join(', ')}`) };
    if (!command.trim()) return { isError: true, content: text('Airlock: `command` is required') };
    const why = purpose(args);
    const op = toolOperation(this.#ctx, target, 'ssh_exec', { command });
    const { decision } = this.enforce.decide([op]);
    if (decision.action === 'deny') return this.#refuse(op, decision, why);
    const classification = { tool: 'ssh_exec', target, ...(why.reason ? { reason: why.reason } : {}), ...(why.ticket ? { ticket: why.ticket } : {}) };
    return this.#respond(
      async (notify, signal) => {
        const started = Date.now();
        const token = await this.#deps.mint(this.#caller.identity, this.#caller.tokenExpiresAt);
        try {
          const r = await sshExec(sc, `${this.#caller.identity.name}+${target}`, token, command, contextEnv(why), signal, (line) => {
            if (/approval required|re-attached|reusable approval/.test(line)) notify(line, /request (\S+)/.exec(line)?.[1]);
          });
          this.enforce.record({ at: new Date(started), text: op.text, kind: op.kind, classification: { ...classification, exitCode: r.code }, decision: decision.action, rule: decision.rule, bytes: r.stdout.length + r.stderr.length, maskedColumns: [], durationMs: Date.now() - started, ...(r.code !== 0 ? { error: `exit ${r.code}` } : {}) });
          const refusalKind = r.code !== null && /^airlock/im.test(r.stderr) ? (Object.entries(SSH_EXIT_STATUS).find(([, v]) => v === r.code)?.[0] as RefusalKind | undefined) : undefined;
          if (refusalKind) return toolError({ kind: refusalKind, message: r.stderr.trim().split('\n').filter((l) => /^airlock/i.test(l)).join('\n') || r.stderr.trim() });
          const out = { exitCode: r.code, stdout: r.stdout, stderr: r.stderr };
          return { ...(r.code !== 0 ? { isError: true } : {}), content: text(`exit ${r.code}\n${r.stdout}${r.stderr ? `\n--- stderr\n${r.stderr}` : ''}`), structuredContent: out };
        } catch (err) {
          const message = (err as Error).message;
          this.enforce.record({ at: new Date(started), text: op.text, kind: op.kind, classification, decision: decision.action, rule: decision.rule, maskedColumns: [], error: message, durationMs: Date.now() - started });
          return toolError({ kind: 'unavailable', message: `Airlock: the SSH gateway could not run it: ${message}` });
        }
      },
      progress,
      clientSignal,
    );
  }

  // ------------------------------------------------------------------ native: HTTP and Kubernetes

  /**
   * Sends the request through Airlock's own HTTP listener, as curl or kubectl would. A held request
   * answers 503 + Retry-After with its request id after http.maxHold; the same request is sent
   * again, which re-attaches to the same approval (HOLD_PARKED), until it is decided.
   */
  async #http(tool: 'http_request' | 'kubernetes_request', args: Record<string, unknown>, progress: (m: string) => void, clientSignal: AbortSignal): Promise<CallToolResult> {
    const hc = this.#deps.http!;
    const allowed = tool === 'http_request' ? hc.services : hc.clusters;
    const connection = typeof args.connection === 'string' ? args.connection : '';
    const method = typeof args.method === 'string' ? args.method.toUpperCase() : '';
    const path = typeof args.path === 'string' ? args.path : '';
    const body = typeof args.body === 'string' ? args.body : undefined;
    const headers: Record<string, string> = {};
    if (args.headers && typeof args.headers === 'object') {
      for (const [k, v] of Object.entries(args.headers as Record<string, unknown>)) if (typeof v === 'string') headers[k.toLowerCase()] = v;
    }
    if (!allowed.includes(connection)) return { isError: true, content: text(`Airlock: unknown connection ${JSON.stringify(connection)}; one of ${allowed.join(', ')}`) };
    if (!/^[A-Z]{1,16}$/.test(method)) return { isError: true, content: text('Airlock: `method` is an HTTP method such as GET') };
    if (!path.startsWith('/') || /[\r\n\s]/.test(path)) return { isError: true, content: text('Airlock: `path` starts with / and has no whitespace') };
    // The listener authenticates the caller by this header; framing headers are node's to set.
    for (const h of ['authorization', 'host', 'content-length', 'transfer-encoding', 'connection', 'upgrade']) delete headers[h];
    const why = purpose(args);
    const op = toolOperation(this.#ctx, connection, tool, { method, path, headers, ...(body !== undefined ? { body } : {}) });
    const { decision } = this.enforce.decide([op]);
    if (decision.action === 'deny') return this.#refuse(op, decision, why);
    const classification = { tool, connection, method, path, ...(why.reason ? { reason: why.reason } : {}), ...(why.ticket ? { ticket: why.ticket } : {}) };
    return this.#respond(
      async (notify, signal) => {
        const started = Date.now();
        const url = new URL(`${hc.url.replace(/\/$/, '')}/${connection}${path}`);
        try {
          for (;;) {
            const token = await this.#deps.mint(this.#caller.identity, this.#caller.tokenExpiresAt);
            const r = await send(url, method, { ...headers, ...contextHeaders(why), authorization: `Bearer ${token}` }, body, hc.ca, signal);
            const json = parseJson(r.body);
            const requestId = typeof json?.requestId === 'string' ? json.requestId : undefined;
            if (r.status === 503 && r.headers['retry-after'] && requestId && json?.error === 'approval pending') {
              notify(`approval required: request ${requestId} ${json.channel ? `posted to ${String(json.channel)}` : 'pending'}, waiting${typeof json.deadline === 'string' ? ` until ${json.deadline}` : ''}`, requestId);
              continue;
            }
            this.enforce.record({ at: new Date(started), text: op.text, kind: op.kind, classification: { ...classification, status: r.status }, decision: decision.action, rule: decision.rule, bytes: r.body.length, maskedColumns: [], durationMs: Date.now() - started, ...(r.status >= 400 ? { error: `HTTP ${r.status}` } : {}) });
            const kind = typeof json?.error === 'string' && json.error in MCP_RETRYABLE ? (json.error as RefusalKind) : undefined;
            if (kind && r.status >= 400) return toolError({ kind, message: `Airlock: ${typeof json?.reason === 'string' ? json.reason : kind}`, ...(typeof json?.rule === 'string' ? { rule: json.rule } : {}), ...(requestId ? { requestId } : {}) });
            const shown = { status: r.status, contentType: r.headers['content-type'] ?? '', body: r.body.toString('utf8') };
            return { ...(r.status >= 400 ? { isError: true } : {}), content: text(`HTTP ${r.status}\n${shown.body}`), structuredContent: shown };
          }
        } catch (err) {
          const message = (err as Error).message;
          this.enforce.record({ at: new Date(started), text: op.text, kind: op.kind, classification, decision: decision.action, rule: decision.rule, maskedColumns: [], error: message, durationMs: Date.now() - started });
          return toolError({ kind: 'unavailable', message: `Airlock: the HTTP gateway could not be reached: ${message}` });
        }
      },
      progress,
      clientSignal,
    );
  }

  // ------------------------------------------------------------------ proxied upstream tools

  async #proxied(up: McpUpstream, tool: string, fullName: string, rawArgs: Record<string, unknown>, progress: (m: string) => void, clientSignal: AbortSignal): Promise<CallToolResult> {
    const why = purpose(rawArgs);
    let current: Tool | undefined;
    try {
      current = (await this.#upstreamTools(up.name)).find((t) => t.name === tool);
    } catch (err) {
      return toolError({ kind: 'unavailable', message: `Airlock: upstream MCP server ${up.name} is unreachable: ${(err as Error).message}` });
    }
    const props = (current?.inputSchema.properties ?? {}) as Record<string, unknown>;
    // reason/ticket are Airlock's unless the upstream tool declares them itself.
    const args = Object.fromEntries(Object.entries(rawArgs).filter(([k]) => !(k in PURPOSE_PROPERTIES) || k in props));
    const op = toolOperation(this.#ctx, up.name, tool, args);
    const seen = this.#listed.get(fullName);
    if (!current || !seen || toolFingerprint(current) !== seen) {
      const refusal: Refusal = !seen
        ? { kind: 'denied', rule: 'mcp-tool-not-listed', message: `Airlock: tool ${fullName} was not listed in this session`, hint: 'call tools/list first' }
        : { kind: 'denied', rule: 'mcp-tool-changed', message: `Airlock: tool ${fullName} changed (description or input schema) since this session listed it; calls to it are refused until it is listed again`, hint: 'call tools/list again and review the new description' };
      if (seen) {
        this.#listed.delete(fullName);
        void this.server.sendToolListChanged().catch(() => undefined);
      }
      this.enforce.record({ at: new Date(), text: op.text, kind: op.kind, classification: { tool: fullName, ...why }, decision: 'deny', rule: refusal.rule, reason: refusal.message, maskedColumns: [] });
      return toolError(refusal);
    }
    const { decision } = this.enforce.decide([op]);
    if (decision.action === 'deny') return this.#refuse(op, decision, why);
    return this.#respond(
      async (notify, signal) => {
        let approval: ApprovalRecord | undefined;
        let grant;
        if (decision.action === 'review') {
          const binding = bindOperation(op, this.#deps.bindingKey, { body: Buffer.from(canonicalJson(args)), details: [`MCP tool ${tool} on ${up.name}`, ...why.details] });
          const held = await this.enforce.hold({ operation: op, decision, binding, signal, notify: (n) => notify(n.message, /request (\S+)/.exec(n.message)?.[1]) });
          if (!held.approved) {
            this.enforce.record({ at: new Date(), text: op.text, kind: op.kind, classification: { tool: fullName, ...why }, decision: 'review', rule: decision.rule, reason: held.refusal.message, maskedColumns: [], approval: held.approval });
            return toolError(held.refusal);
          }
          approval = held.approval;
          grant = held.grant;
        }
        const started = Date.now();
        try {
          const client = await this.#upstream(up.name);
          const raw = (await client.callTool({ name: tool, arguments: args })) as CallToolResult;
          const { result, masked } = maskResult(raw, decision);
          this.enforce.record({ at: new Date(), text: op.text, kind: op.kind, classification: { tool: fullName, ...why }, decision: decision.action, rule: decision.rule, maskedColumns: masked ? decision.mask.detectors.map((d) => `detector:${d.detector}`) : [], durationMs: Date.now() - started, approval, ...(raw.isError ? { error: 'tool error' } : {}) });
          this.enforce.reportResult(approval, { summary: `MCP tool ${fullName} ${raw.isError ? 'returned an error' : 'ran'}`, tag: raw.isError ? 'error' : 'ok', ...(grant ? { grant } : {}) });
          return result;
        } catch (err) {
          const message = (err as Error).message;
          this.enforce.record({ at: new Date(), text: op.text, kind: op.kind, classification: { tool: fullName, ...why }, decision: decision.action, rule: decision.rule, maskedColumns: [], error: message, durationMs: Date.now() - started, approval });
          this.enforce.reportResult(approval, { summary: `MCP tool ${fullName} failed`, error: message });
          return { isError: true, content: text(`upstream MCP server ${up.name}: ${redactDetected(message)}`) };
        }
      },
      progress,
      clientSignal,
    );
  }

  #refuse(op: Operation, decision: Extract<Decision, { action: 'deny' }>, why: { reason?: string; ticket?: string }): CallToolResult {
    this.enforce.record({ at: new Date(), text: op.text, kind: op.kind, classification: { ...why }, decision: 'deny', rule: decision.rule, reason: decision.reason, maskedColumns: [] });
    return toolError(this.enforce.denial(decision));
  }

  /** Ends the session once calls still running (held ones included) are done. */
  async close(reason = 'client closed'): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#inflight]);
    for (const c of this.#upstreams.values()) void c.then((x) => x.close()).catch(() => undefined);
    this.enforce.end(reason, { toClient: 0, fromClient: 0 });
  }
}

function pendingResult(f: InFlight): CallToolResult {
  const id = f.requestId ?? '';
  return {
    content: text(`Airlock: approval request ${id} is still waiting for approvers; call airlock_wait with request_id ${JSON.stringify(id)} to keep waiting (the call runs once, when approved)`),
    structuredContent: { status: 'pending', requestId: id },
  };
}

/** The call's result, or `pending` when it is held beyond `maxHoldMs` (only held calls answer pending). */
async function waitFor(f: InFlight, maxHoldMs: number): Promise<CallToolResult> {
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([f.done, new Promise<'timeout'>((res) => (timer = setTimeout(() => res('timeout'), maxHoldMs)))]);
    clearTimeout(timer);
    if (r !== 'timeout') return r;
    if (f.requestId) return pendingResult(f);
  }
}

/** Longest HTTP response body a tool returns (the listener masks before this). */
const MAX_HTTP_RESPONSE = 4 * 1024 * 1024;

function parseJson(b: Buffer): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(b.toString('utf8'));
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function send(url: URL, method: string, headers: Record<string, string>, body: string | undefined, ca: string | undefined, signal: AbortSignal): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method, headers, signal, ...(ca ? { ca } : {}) }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_HTTP_RESPONSE) {
          res.destroy(new Error(`response larger than ${MAX_HTTP_RESPONSE} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on('error', reject);
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Longest stdout/stderr an ssh_exec returns (each). */
const MAX_SSH_OUTPUT = 1024 * 1024;

/** The caller's reason as SSH env requests (AIRLOCK_REASON / AIRLOCK_TICKET, accepted by Airlock's SSH listener). */
function contextEnv(why: { reason?: string; ticket?: string }): Record<string, string> {
  return { ...(why.reason ? { AIRLOCK_REASON: why.reason } : {}), ...(why.ticket ? { AIRLOCK_TICKET: why.ticket } : {}) };
}

/** The caller's reason as X-Airlock-Reason / X-Airlock-Ticket (Airlock's HTTP listener reads them; they replace the agent's own). */
function contextHeaders(why: { reason?: string; ticket?: string }): Record<string, string> {
  return { ...(why.reason ? { 'x-airlock-reason': reasonHeader(why.reason.replace(/[\r\n]+/g, ' ')) } : {}), ...(why.ticket ? { 'x-airlock-ticket': why.ticket.replace(/[^\x21-\x7e]/g, '') } : {}) };
}

function sshExec(
  sc: { host: string; port: number; hostKeyFingerprint: string },
  username: string,
  password: string,
  command: string,
  env: Record<string, string>,
  signal: AbortSignal,
  onStderrLine: (line: string) => void,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const conn = new ssh2.Client();
    let stdout = '';
    let stderr = '';
    let pending = '';
    const onAbort = () => conn.end();
    signal.addEventListener('abort', onAbort);
    const finish = (f: () => void) => {
      signal.removeEventListener('abort', onAbort);
      conn.end();
      f();
    };
    conn.on('error', (err) => finish(() => reject(err)));
    conn.on('ready', () => {
      conn.exec(command, { env }, (err, ch) => {
        if (err) return finish(() => reject(err));
        let code: number | null = null;
        ch.on('exit', (c: number | null) => (code = c));
        ch.on('data', (d: Buffer) => {
          if (stdout.length < MAX_SSH_OUTPUT) stdout += d.toString('utf8');
        });
        ch.stderr.on('data', (d: Buffer) => {
          const s = d.toString('utf8');
          if (stderr.length < MAX_SSH_OUTPUT) stderr += s;
          pending += s;
          let i: number;
          while ((i = pending.indexOf('\n')) >= 0) {
            onStderrLine(pending.slice(0, i).replace(/\r$/, ''));
            pending = pending.slice(i + 1);
          }
        });
        ch.on('close', () => finish(() => resolve({ code, stdout, stderr })));
      });
    });
    conn.connect({
      host: sc.host,
      port: sc.port,
      username,
      password,
      readyTimeout: 30_000,
      // Airlock's own listener, pinned: the token is never sent to anything else.
      hostVerifier: (key: Buffer) => `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}` === sc.hostKeyFingerprint,
    });
  });
}
