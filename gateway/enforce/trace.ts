// Spans of the enforcement seam: one per decided operation (a child of the client's traceparent
// when it sent one), and one per hold (a child of its operation's span). Only created when
// tracing is on (EnforcementDeps.tracer); the seam allocates nothing for traces otherwise.
//
// What a span may carry: who (Airlock's own identity name), where (connection, protocol), what
// kind, the decision and its rule, the tables (detectors applied, as in the audit store), the SQL
// fingerprint (constants stripped by libpg-query) and the approval request id and outcome. Never
// the statement text, a command line, a path or query string, a parameter, a reason or ticket
// typed by someone, or any row value:
// collectors are read by more people than the data, and none of this is masked there.
import { SpanKind, SpanStatusCode, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import type { Decision } from '../policy/decision.ts';
import type { Operation } from '../policy/operation.ts';
import { parentFromTraceparent, traceparentOf, under } from '../observability/tracing.ts';
import { redactForAudit } from '../recording/redact.ts';
import { mergeContext, type RequestContext } from './context.ts';

/** Review spans waiting for their hold; beyond this the oldest is ended (a Parse never bound). */
const MAX_OPEN_REVIEWS = 32;

export interface HoldTrace {
  /** The hold span's traceparent (for the approval workflow), when sampled. */
  readonly traceparent: string | undefined;
  end(outcome: string, requestId: string | undefined, viaGrant?: boolean): void;
}

function operationAttributes(sessionId: string, op: Operation, d: Decision, ctx: RequestContext | undefined): Attributes {
  const a: Attributes = {
    'airlock.session.id': sessionId,
    'airlock.protocol': op.protocol,
    'airlock.connection': op.connection.name,
    'airlock.identity': op.identity.name,
    'airlock.operation.kind': op.kind,
    'airlock.decision': d.action,
  };
  if (d.rule) a['airlock.rule'] = d.rule;
  // Quoted identifiers are client text too: the audit's redaction applies, as in the store.
  if (op.tables.length > 0) a['airlock.tables'] = op.tables.slice(0, 20).map(redactForAudit);
  if (op.sql) {
    a['db.system.name'] = 'postgresql';
    if (op.sql.fingerprint) a['airlock.sql.fingerprint'] = op.sql.fingerprint;
    if (op.sql.statementTypes.length > 0) a['airlock.sql.statement_types'] = op.sql.statementTypes.slice(0, 20);
  }
  if (op.http) a['http.request.method'] = op.http.method;
  if (d.action !== 'deny' && d.mask.columns.length > 0) a['airlock.masked_columns'] = d.mask.columns.length;
  if (ctx?.traceparent && ctx.source) a['airlock.trace.source'] = ctx.source;
  return a;
}

/** One session's operation and hold spans. */
export class SessionTraces {
  private readonly reviews: { rule: string; span: Span }[] = [];

  constructor(
    private readonly tracer: Tracer,
    private readonly sessionId: string,
  ) {}

  /**
   * The span of one decided operation. Its parent is the client's traceparent: the operation's own
   * (a leading SQL comment, an HTTP header) over the session's (application_name, SSH env).
   * Review decisions stay open until their hold ends; the others end now.
   */
  decided(op: Operation, d: Decision, session: RequestContext | undefined, own: RequestContext | undefined): void {
    const ctx = mergeContext(session, own);
    const span = this.tracer.startSpan(`airlock ${op.protocol} ${op.kind}`, { kind: SpanKind.SERVER, attributes: operationAttributes(this.sessionId, op, d, ctx) }, parentFromTraceparent(ctx?.traceparent));
    if (d.action === 'deny') span.setStatus({ code: SpanStatusCode.ERROR, message: `denied by rule ${d.rule}` });
    if (d.action !== 'review') return span.end();
    this.reviews.push({ rule: d.rule, span });
    if (this.reviews.length > MAX_OPEN_REVIEWS) this.reviews.shift()?.span.end();
  }

  /** The span of a hold: a child of the oldest open review span of the same rule (else of the client's trace). */
  holdStarted(rule: string, ctx: RequestContext | undefined): HoldTrace {
    const i = this.reviews.findIndex((r) => r.rule === rule);
    const op = i >= 0 ? this.reviews.splice(i, 1)[0].span : undefined;
    const t0 = Date.now();
    const span = this.tracer.startSpan('airlock hold', { kind: SpanKind.INTERNAL, attributes: { 'airlock.session.id': this.sessionId, 'airlock.rule': rule } }, op ? under(op) : parentFromTraceparent(ctx?.traceparent));
    return {
      traceparent: traceparentOf(span),
      end: (outcome, requestId, viaGrant) => {
        const a: Attributes = { 'airlock.approval.outcome': outcome, 'airlock.hold.wait_ms': Date.now() - t0 };
        if (requestId) a['airlock.approval.request_id'] = requestId;
        if (viaGrant) a['airlock.approval.via_grant'] = true;
        span.setAttributes(a);
        if (outcome === 'failed' || outcome === 'unavailable') span.setStatus({ code: SpanStatusCode.ERROR, message: 'approval unavailable: failed closed' });
        span.end();
        if (op) {
          op.setAttributes({ 'airlock.approval.outcome': outcome, ...(requestId ? { 'airlock.approval.request_id': requestId } : {}) });
          op.end();
        }
      },
    };
  }

  /** Ends review spans whose hold never came (the session ended first). */
  end(): void {
    for (const r of this.reviews.splice(0)) r.span.end();
  }
}
