// Why an agent asks, and what it did before asking: the context an approver needs besides the
// operation itself. Agents state a reason (and a ticket and a W3C `traceparent` linking to their
// own trace) through whatever their client lets them set: a leading SQL comment, the startup
// application_name, an SSH env request (AIRLOCK_REASON / TRACEPARENT), HTTP headers. The reason
// is the agent's free text: PII detectors are applied before it reaches chat or the audit, and it
// is cut short. None of it changes a decision or a binding: it is shown, never trusted.
import { redactDetected } from '../masking/redact-text.ts';

/** Longest reason shown; the rest is cut (the reason is a label, not a document). */
const MAX_REASON_CHARS = 300;
const MAX_TICKET_CHARS = 64;

export interface RequestContext {
  /** The agent's reason, PII detectors applied, cut to MAX_REASON_CHARS. */
  reason?: string;
  ticket?: string;
  /** W3C traceparent (validated syntax) of the agent's trace. */
  traceparent?: string;
  /** Where it came from: 'sql comment', 'application_name', 'ssh env', 'http header'. */
  source?: string;
}

const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** A validated traceparent (lowercase), or undefined. All-zero ids are invalid per W3C. */
export function validTraceparent(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const t = v.trim().toLowerCase();
  if (!TRACEPARENT.test(t)) return undefined;
  const [version, trace, span] = t.split('-');
  if (version === 'ff' || /^0+$/.test(trace) || /^0+$/.test(span)) return undefined;
  return t;
}

/** The agent's reason as people may see it: single line, control characters gone, PII redacted, cut. */
export function cleanReason(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  // eslint-disable-next-line no-control-regex
  const oneLine = v.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').replace(/\s+/g, ' ').trim();
  if (!oneLine) return undefined;
  const red = redactDetected(oneLine);
  return red.length > MAX_REASON_CHARS ? `${red.slice(0, MAX_REASON_CHARS)}...` : red;
}

function cleanTicket(v: string | undefined): string | undefined {
  if (!v) return undefined;
  const t = v.trim();
  return /^[A-Za-z0-9._:#/-]+$/.test(t) ? t.slice(0, MAX_TICKET_CHARS) : undefined;
}

/**
 * `key=value` pairs: `reason="why, with spaces" ticket=INC-123 traceparent=00-...`. Double-quoted
 * values may contain `\"`. Unknown keys are ignored.
 */
function parsePairs(body: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([^\s"']+))/g;
  for (let m = re.exec(body); m; m = re.exec(body)) {
    const key = m[1].toLowerCase();
    const raw = m[2] ?? m[3] ?? m[4] ?? '';
    if (!(key in out)) out[key] = raw.replace(/\\(.)/g, '$1');
  }
  return out;
}

function fromPairs(p: Record<string, string>, source: string): RequestContext | undefined {
  const ctx: RequestContext = { reason: cleanReason(p.reason), ticket: cleanTicket(p.ticket), traceparent: validTraceparent(p.traceparent) };
  return compact(ctx, source);
}

function compact(ctx: RequestContext, source: string): RequestContext | undefined {
  const out: RequestContext = {};
  if (ctx.reason) out.reason = ctx.reason;
  if (ctx.ticket) out.ticket = ctx.ticket;
  if (ctx.traceparent) out.traceparent = ctx.traceparent;
  if (Object.keys(out).length === 0) return undefined;
  out.source = source;
  return out;
}

/**
 * The context in a statement's leading comment: `/* airlock: reason="..." ticket=INC-123 *\/`
 * (whitespace and other comments may come first). Only a comment that starts the statement text
 * counts: a comment later in the text could be inside a string literal's look-alike.
 */
export function contextFromSql(text: string): RequestContext | undefined {
  let i = 0;
  const n = Math.min(text.length, 16_384);
  while (i < n) {
    while (i < n && /\s/.test(text[i])) i++;
    if (text.startsWith('--', i)) {
      const e = text.indexOf('\n', i);
      const line = text.slice(i + 2, e < 0 ? n : e);
      const m = /^\s*airlock\s*:(.*)$/i.exec(line);
      if (m) return fromPairs(parsePairs(m[1]), 'sql comment');
      if (e < 0) return undefined;
      i = e + 1;
      continue;
    }
    if (text.startsWith('/*', i)) {
      const e = text.indexOf('*/', i + 2);
      if (e < 0) return undefined;
      const body = text.slice(i + 2, e);
      const m = /^\s*airlock\s*:([\s\S]*)$/i.exec(body);
      if (m) return fromPairs(parsePairs(m[1]), 'sql comment');
      i = e + 2;
      continue;
    }
    return undefined;
  }
  return undefined;
}

/**
 * The context in a startup application_name: `airlock: reason="..."` / `reason=...`, or a bare
 * traceparent. Anything else is just a program name, not a reason.
 */
export function contextFromApplicationName(name: string | undefined): RequestContext | undefined {
  if (!name) return undefined;
  const tp = validTraceparent(name);
  if (tp) return { traceparent: tp, source: 'application_name' };
  const body = name.replace(/^\s*airlock\s*:/i, '');
  if (!/\b(reason|ticket|traceparent)\s*=/i.test(body)) return undefined;
  return fromPairs(parsePairs(body), 'application_name');
}

/**
 * A header value that may be an RFC 8187 ext-value (`UTF-8''r%C3%A9paration`): header fields are
 * Latin-1 on the wire, so a reason in any other script travels percent-encoded. Invalid
 * encodings are kept as sent (shown, never trusted).
 */
function headerText(v: string | undefined): string | undefined {
  const m = v === undefined ? null : /^utf-8''(.*)$/i.exec(v.trim());
  if (!m) return v;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return v;
  }
}

/** The context of an HTTP request: X-Airlock-Reason, X-Airlock-Ticket and traceparent headers. */
export function contextFromHeaders(get: (name: string) => string | undefined): RequestContext | undefined {
  return compact({ reason: cleanReason(headerText(get('x-airlock-reason'))), ticket: cleanTicket(get('x-airlock-ticket')), traceparent: validTraceparent(get('traceparent')) }, 'http header');
}

/** Lone surrogates (valid in an agent's JSON, not encodable as UTF-8) become U+FFFD. */
function wellFormedText(s: string): string {
  return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

/** X-Airlock-Reason's value for any reason text: RFC 8187 encoded unless it is printable ASCII. */
export function reasonHeader(reason: string): string {
  return /^[\x20-\x7e]*$/.test(reason) ? reason : `UTF-8''${encodeURIComponent(wellFormedText(reason))}`;
}

/**
 * A leading SQL comment stating `ctx` (what contextFromSql reads), for a caller that speaks for
 * an agent (the MCP server's postgres_query tool). The values cannot end or nest the comment
 * (no `*` or `/` next to each other survives, newlines become spaces) nor leave the quotes, so
 * the statement after it is exactly the agent's.
 */
export function contextComment(ctx: { reason?: string; ticket?: string; traceparent?: string }): string {
  // U+FFFD (or a lone surrogate, which becomes one on the wire) would make the PostgreSQL
  // listener refuse the whole statement as possibly mis-decoded: the reason loses it instead.
  const quote = (v: string) =>
    `"${wellFormedText(v)
      .replace(/\ufffd/g, '?')
      // eslint-disable-next-line no-control-regex
      .replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ')
      .replace(/\*\//g, '* /')
      .replace(/\/\*/g, '/ *')
      .replace(/[\\"]/g, (c) => `\\${c}`)}"`;
  const pairs = [
    ...(ctx.reason ? [`reason=${quote(ctx.reason)}`] : []),
    ...(ctx.ticket && cleanTicket(ctx.ticket) ? [`ticket=${cleanTicket(ctx.ticket)}`] : []),
    ...(validTraceparent(ctx.traceparent) ? [`traceparent=${validTraceparent(ctx.traceparent)}`] : []),
  ];
  return pairs.length ? `/* airlock: ${pairs.join(' ')} */ ` : '';
}

/** SSH env requests Airlock accepts for the context (every other name is refused, as before). */
export const CONTEXT_ENV_NAMES = new Set(['AIRLOCK_REASON', 'AIRLOCK_TICKET', 'TRACEPARENT']);

/** The context of SSH env requests (name -> value) restricted to CONTEXT_ENV_NAMES. */
export function contextFromEnv(env: ReadonlyMap<string, string> | Record<string, string>): RequestContext | undefined {
  const get = (k: string) => (env instanceof Map ? env.get(k) : (env as Record<string, string>)[k]);
  return compact({ reason: cleanReason(get('AIRLOCK_REASON')), ticket: cleanTicket(get('AIRLOCK_TICKET')), traceparent: validTraceparent(get('TRACEPARENT')) }, 'ssh env');
}

/** Per-operation context wins field by field over the session's. */
export function mergeContext(session: RequestContext | undefined, op: RequestContext | undefined): RequestContext | undefined {
  if (!session) return op;
  if (!op) return session;
  const merged: RequestContext = { ...session, ...op };
  merged.source = op.source && session.source && op.source !== session.source ? `${op.source}, ${session.source}` : (op.source ?? session.source);
  return merged;
}

/**
 * What the session did so far, counted as it is recorded: statements (or commands, requests) by
 * kind and the tables they touched. Bounded: at most MAX_TABLES distinct tables are named.
 */
const MAX_TABLES = 20;

export class ActivitySummary {
  private readonly kinds = new Map<string, number>();
  private readonly tables = new Set<string>();
  private moreTables = 0;
  private refused = 0;

  note(kind: string, tables: readonly string[] | undefined, decision: string): void {
    if (decision === 'deny') {
      this.refused++;
      return;
    }
    this.kinds.set(kind, (this.kinds.get(kind) ?? 0) + 1);
    for (const t of tables ?? []) {
      if (this.tables.has(t)) continue;
      if (this.tables.size < MAX_TABLES) this.tables.add(t);
      else this.moreTables++;
    }
  }

  /** One line: `before this: 3 read, 1 write; 1 refused; tables public.a, public.b`. */
  line(): string {
    if (this.kinds.size === 0 && this.refused === 0) return 'before this: nothing else in this session';
    const counts = [...this.kinds].map(([k, n]) => `${n} ${k}`).join(', ') || 'no statement ran';
    const refused = this.refused ? `; ${this.refused} refused` : '';
    const tables = this.tables.size ? `; tables ${[...this.tables].join(', ')}${this.moreTables ? ` and ${this.moreTables} more` : ''}` : '';
    return `before this: ${counts}${refused}${tables}`;
  }
}

/** The approver's lines for a context (after the operation's own details). */
export function contextDetails(ctx: RequestContext | undefined, owner: string | undefined, activity: string): string[] {
  const out: string[] = [];
  if (ctx?.reason) out.push(`agent's reason: "${ctx.reason}"${ctx.source ? ` (${ctx.source})` : ''}`);
  if (ctx?.ticket) out.push(`ticket: ${ctx.ticket}`);
  if (owner) out.push(`agent's owner: ${owner}`);
  out.push(activity);
  if (ctx?.traceparent) out.push(`trace: ${ctx.traceparent}`);
  return out;
}
