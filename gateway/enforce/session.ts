// The enforcement seam: what every protocol's session does with an operation once its proxy has
// translated the wire traffic into one. Decide (fail closed), hold for approval (notices,
// re-attach, cancel, outcome), record (sequence, errors, results, grant uses), session start/end
// and token expiry live here, once; proxies only translate to and from their protocol.
//
//   proxy bytes -> Operation -> EnforcementSession.decide / hold / record -> Refusal | go ahead
//
// A new protocol gets these guarantees by creating an EnforcementSession per client session (see
// gateway/enforce/README.md); nothing here knows about bytes, sockets or chat.
import type { Tracer } from '@opentelemetry/api';
import type { Logger } from 'pino';
import type { Approver, GrantUse, HoldOutcome, HoldPosted, HoldRequested, OperationBinding } from '../approvals/approver.ts';
import type { Decision } from '../policy/decision.ts';
import type { Identity, Operation, Protocol } from '../policy/operation.ts';
import type { OperationRecord, Store } from '../recording/store.ts';
import type { Refusal } from './refusal.ts';
import type { GatewayMetrics, OperationCounts } from '../observability/metrics.ts';
import { HOLD_STARTED } from '../recording/reconcile.ts';
import { ActivitySummary, contextDetails, mergeContext, type RequestContext } from './context.ts';
import { SessionTraces, type HoldTrace } from './trace.ts';
import { elevationNotice, type ElevationSource } from '../elevation/registry.ts';

/** The policy as the seam uses it (PolicyEngine satisfies it). */
export interface PolicyDecider {
  decideAll(ops: Operation[]): { decision: Decision; operation: Operation };
}

/** Revoked identities and token ids as every replica sees them (gateway/auth/revocation.ts). */
export interface RevocationSource {
  revoked(identity: string, tokenId?: string): { reason: string; by: string } | undefined;
  onChange(fn: () => void): () => void;
}

export interface EnforcementDeps {
  policy: PolicyDecider;
  approver: Approver;
  store: Store;
  logger: Logger;
  /** Prometheus metrics; every protocol is counted here, in one place. */
  metrics?: GatewayMetrics;
  /** When set, a revocation of the session's identity or token ends it like token expiry does. */
  revocations?: RevocationSource;
  /** OpenTelemetry tracer (observability.tracing); absent = tracing off, nothing allocated for it. */
  tracer?: Tracer;
  /** Just-in-time elevation windows (gateway/elevation/): during one, the role's policy decides. */
  elevations?: ElevationSource;
}

export interface SessionInfo {
  id: string;
  protocol: Protocol;
  identity: Identity;
  connection: string;
  clientAddress: string;
  tokenExpiresAt?: Date;
  /** jti of the token the session logged in with (revocable by id). */
  tokenId?: string;
}

export type ReviewDecision = Extract<Decision, { action: 'review' }>;
export type ApprovalRecord = NonNullable<OperationRecord['approval']>;

/** Statements whose effect runs later in the session (EXECUTE, FETCH): see `decide` under an elevation. */
const DEFERRED = new Set(['PrepareStmt', 'DeclareCursorStmt']);
const RANK: Record<Decision['action'], number> = { allow: 0, mask: 1, review: 2, deny: 3 };

/** A line for the held client: the proxy sends it as a NoticeResponse, stderr line or header. */
export interface HoldNotice {
  stage: 'requested' | 'posted' | 'grant';
  message: string;
  detail?: string;
}

export interface HoldOptions {
  operation: Operation;
  decision: ReviewDecision;
  binding: OperationBinding;
  notify: (n: HoldNotice) => void;
  /** Aborted when the client cancels the operation or goes away. */
  signal: AbortSignal;
  /** Since when the client's transaction is open, when one is (locks would be held while waiting). */
  transactionSince?: Date;
  /** The reason/ticket/trace stated with this operation (a leading SQL comment, a header); merged over the session's. */
  context?: RequestContext;
}

export type HoldResult =
  | { approved: true; approval: ApprovalRecord; grant?: GrantUse }
  | { approved: false; approval?: ApprovalRecord; refusal: Refusal };

function minutesLeft(deadline: Date): string {
  const m = Math.max(1, Math.round((deadline.getTime() - Date.now()) / 60_000));
  return `${m} minute${m === 1 ? '' : 's'}`;
}

/** The refusal for a hold that did not end in approval. */
export function holdRefusal(o: Exclude<HoldOutcome, { outcome: 'approved' }>, rule: string): Refusal {
  const base = { rule, requestId: o.requestId || undefined };
  switch (o.outcome) {
    case 'rejected':
      return { ...base, kind: 'rejected', message: `Airlock: approval rejected by ${o.by}: ${o.reason}`, hint: 'a person rejected this exact operation; change it or ask the approver' };
    case 'expired':
      return { ...base, kind: 'expired', message: `Airlock: approval request ${o.requestId} expired: ${o.reason}`, hint: 'nobody decided in time; send the operation again to ask again' };
    case 'cancelled':
      return { ...base, kind: 'cancelled', message: `Airlock: approval request ${o.requestId} was cancelled: ${o.reason}` };
    case 'failed':
      return { ...base, kind: 'unavailable', message: `Airlock: approval could not be obtained (rule ${rule}): ${o.reason}`, hint: 'the approval service is unavailable, so Airlock failed closed; try again later' };
  }
}

/** The record with its session id and sequence number, set on the object itself (same keys, same order as a spread copy). */
function stamped(r: Omit<OperationRecord, 'sessionId' | 'seq'>, sessionId: string, seq: number): OperationRecord {
  const full = r as OperationRecord;
  full.sessionId = sessionId;
  full.seq = seq;
  return full;
}

export class EnforcementSession {
  readonly info: SessionInfo;
  private seq = 0;
  private ended = false;
  private readonly requestIds = new Set<string>();
  private expiryTimer: NodeJS.Timeout | undefined;
  /** Approval requests this session is waiting on now (a draining gateway names them to the client). */
  private readonly holdingRequests = new Set<string>();
  private started = false;
  private unwatchRevocation: (() => void) | undefined;
  /** What the session did so far (by kind, tables), shown to approvers of a later hold. */
  private readonly activity = new ActivitySummary();
  private sessionContext: RequestContext | undefined;
  private readonly traces: SessionTraces | undefined;
  /** This protocol's operation counts (metrics), bound once: one increment per decision. */
  private readonly opCounts: OperationCounts | undefined;

  constructor(
    private readonly deps: EnforcementDeps,
    info: SessionInfo,
  ) {
    this.info = info;
    this.traces = deps.tracer ? new SessionTraces(deps.tracer, info.id) : undefined;
    this.opCounts = deps.metrics?.operationCounts(info.protocol);
  }

  get id(): string {
    return this.info.id;
  }

  /** The reason/ticket/trace stated for the whole session (application_name, SSH env). */
  setContext(ctx: RequestContext | undefined): void {
    this.sessionContext = ctx;
  }

  /** True when operations get trace spans (observability.tracing on): proxies parse trace context only then. */
  get traced(): boolean {
    return this.traces !== undefined;
  }

  /** The one-line summary of what this session did so far. */
  activityLine(): string {
    return this.activity.line();
  }

  /** Records the session start. Throws when the audit trail cannot record it: no audit trail, no access. */
  start(): void {
    const { id, protocol, identity, connection, clientAddress } = this.info;
    this.deps.store.assertWritable();
    this.deps.store.startSession({ id, protocol, identity: identity.name, groups: identity.groups, connection, clientAddress, startedAt: new Date() });
    this.started = true;
    this.deps.metrics?.sessionsTotal.inc({ protocol });
    this.deps.metrics?.sessionsActive.inc({ protocol });
  }

  /** Approval requests this session's held operations wait on now. */
  heldRequests(): string[] {
    return [...this.holdingRequests];
  }

  /**
   * Calls `onExpired` when the session's token expires (never, without an expiry), or as soon as a
   * revocation of its identity or token id is seen (within auth.revocationPoll on every replica).
   */
  onTokenExpiry(onExpired: () => void): void {
    clearTimeout(this.expiryTimer);
    this.unwatchRevocation?.();
    const rev = this.deps.revocations;
    if (rev) {
      this.unwatchRevocation = rev.onChange(() => {
        if (this.revocation) onExpired();
      });
      if (this.revocation) queueMicrotask(onExpired);
    }
    const at = this.info.tokenExpiresAt;
    if (!at) return;
    this.expiryTimer = setTimeout(onExpired, Math.min(Math.max(0, at.getTime() - Date.now()), 2 ** 31 - 1));
    this.expiryTimer.unref();
  }

  /** The revocation that ends this session, if any. */
  get revocation(): { reason: string; by: string } | undefined {
    return this.deps.revocations?.revoked(this.info.identity.name, this.info.tokenId);
  }

  /** True once the token expired or was revoked: no new operation may start. */
  get tokenExpired(): boolean {
    if (this.revocation) return true;
    const at = this.info.tokenExpiresAt;
    return at !== undefined && Date.now() >= at.getTime();
  }

  /**
   * Whether a new operation may start as far as the audit trail is concerned: with
   * `audit.onFailure: closed` (the default) and a store that cannot persist records within its
   * bound, new operations are refused; operations already running finish and are recorded.
   */
  auditRefusal(): Refusal | undefined {
    if (this.deps.store.writable()) return undefined;
    const h = this.deps.store.health();
    return {
      kind: 'audit-unavailable',
      message: `Airlock: the audit trail cannot record operations right now (${h.reason ?? 'store unhealthy'}), so nothing new runs: no audit trail, no access`,
      hint: 'try again later; operators: see `airlock audit status` and the gateway log',
    };
  }

  /** The refusal for an operation started after the token expired. */
  tokenRefusal(): Refusal {
    const r = this.revocation;
    if (r) return { kind: 'revoked', message: `Airlock: access of ${this.info.identity.name} was revoked by ${r.by}: ${r.reason}`, hint: 'ask the identity\'s owner or an Airlock operator' };
    return { kind: 'token-expired', message: 'Airlock: the token this session logged in with has expired; reconnect with a fresh token (`airlock token`)' };
  }

  /**
   * The decision on the operations of one client request (a query string may hold several
   * statements: the most restrictive wins). Any failure of the policy layer denies. `context`: what
   * the client stated with this operation (an HTTP request's headers), for its trace span only.
   */
  decide(ops: Operation[], context?: RequestContext): { decision: Decision; operation: Operation | undefined } {
    const r = this.decideInner(ops);
    if (this.traces) {
      const op = r.operation ?? ops[0];
      if (op) this.traces.decided(op, r.decision, this.sessionContext, context);
    }
    return r;
  }

  private decideInner(ops: Operation[]): { decision: Decision; operation: Operation | undefined } {
    const revoked = this.revocation;
    if (revoked) return { decision: { action: 'deny', rule: 'revoked', reason: `access of ${this.info.identity.name} was revoked by ${revoked.by}: ${revoked.reason}` }, operation: ops[0] };
    const audit = this.auditRefusal();
    if (audit) return { decision: { action: 'deny', rule: 'audit-unavailable', reason: audit.message.replace(/^Airlock: /, '') }, operation: ops[0] };
    if (ops.length === 0) return { decision: { action: 'allow', mask: { columns: [], detectors: [], denyMaskedExpressions: false }, limits: {} }, operation: undefined };
    try {
      // Re-evaluated per operation: a window that ended or was revoked no longer applies to the next one.
      const elevated = this.deps.elevations?.forOperation(this.info.identity.name, this.info.connection);
      if (elevated) {
        const r = elevated.policy.decideAll(ops);
        let decision: Decision = { ...r.decision, elevation: elevated.tag };
        // SQL PREPARE / DECLARE CURSOR run later (EXECUTE, FETCH are decided as reads), possibly after
        // the window: they run under it only when the normal rules would let them run too.
        if (decision.action !== 'deny' && ops.some((o) => DEFERRED.has(o.sql?.statementTypes[0] ?? ''))) {
          const normal = this.deps.policy.decideAll(ops).decision;
          if (RANK[normal.action] > RANK[decision.action]) {
            decision = { action: 'deny', rule: 'elevation-deferred', reason: `this statement would keep the elevated rights of role ${elevated.tag.role} beyond its window (it runs later, through EXECUTE or FETCH); send the statement itself`, elevation: elevated.tag };
          }
        }
        if (this.opCounts) this.opCounts[decision.action]++;
        this.auditElevationUse(decision, r.operation);
        return { decision, operation: r.operation };
      }
      const r = this.deps.policy.decideAll(ops);
      if (this.opCounts) this.opCounts[r.decision.action]++;
      return r;
    } catch (err) {
      this.deps.logger.error({ err, session: this.id }, 'policy evaluation failed; denying');
      return { decision: { action: 'deny', rule: 'airlock-internal', reason: `policy evaluation failed: ${(err as Error).message}` }, operation: ops[0] };
    }
  }

  /** The notice for a client while an elevation window of its identity on this connection is open (session start). */
  elevationNotice(): string | undefined {
    const e = this.deps.elevations?.forOperation(this.info.identity.name, this.info.connection);
    return e ? elevationNotice(e.record) : undefined;
  }

  /** Whether elevation `id` still applies to this session's next operation. */
  elevationOpen(id: string): boolean {
    return this.deps.elevations?.forOperation(this.info.identity.name, this.info.connection)?.tag.id === id;
  }

  /** Nothing done under an elevation is silent: each use is an audit event of the elevation. */
  private auditElevationUse(d: Decision, op: Operation | undefined): void {
    if (!d.elevation) return;
    try {
      const text = op?.text ?? '';
      this.deps.store.recordAudit({
        at: new Date(),
        kind: 'elevation.used',
        subject: d.elevation.id,
        actor: this.info.identity.name,
        detail: {
          sessionId: this.id,
          protocol: this.info.protocol,
          connection: this.info.connection,
          role: d.elevation.role,
          breakGlass: d.elevation.breakGlass,
          decision: d.action,
          ...('rule' in d && d.rule ? { rule: d.rule } : {}),
          kind: op?.kind,
          text: text.length > 500 ? `${text.slice(0, 500)}...` : text,
        },
      });
    } catch (err) {
      this.deps.logger.error({ err, session: this.id }, 'recording an elevation use failed');
    }
  }

  /** The refusal for a deny decision. */
  denial(d: Extract<Decision, { action: 'deny' }>): Refusal {
    if (d.rule === 'audit-unavailable') return { kind: 'audit-unavailable', rule: d.rule, message: `Airlock: ${d.reason}`, hint: 'try again later' };
    return { kind: 'denied', rule: d.rule, message: `Airlock denied this statement: rule ${d.rule}: ${d.reason}` };
  }

  /**
   * Holds an operation until people decide. Never rejects. A hold inside an open transaction is
   * refused unless the rule allows it (the transaction's locks would be held for the whole wait).
   */
  async hold(o: HoldOptions): Promise<HoldResult> {
    const span = this.traces?.holdStarted(o.decision.rule, mergeContext(this.sessionContext, o.context));
    const m = this.deps.metrics;
    const protocol = this.info.protocol;
    if (!m && !span) return this.holdInner(o, undefined);
    const t0 = Date.now();
    m?.holdsPending.inc({ protocol });
    let r: HoldResult | undefined;
    try {
      r = await this.holdInner(o, span);
      const outcome = r.approved ? 'approved' : (r.approval?.outcome ?? r.refusal.kind);
      m?.approvalOutcomes.inc({ protocol, outcome });
      m?.holdSeconds.observe({ protocol, outcome }, (Date.now() - t0) / 1000);
      return r;
    } finally {
      m?.holdsPending.dec({ protocol });
      span?.end(r ? (r.approved ? 'approved' : (r.approval?.outcome ?? r.refusal.kind)) : 'failed', r?.approval?.requestId, r?.approved ? r.approval.outcome === 'approved (grant)' : undefined);
    }
  }

  private async holdInner(o: HoldOptions, span: HoldTrace | undefined): Promise<HoldResult> {
    const d = o.decision;
    if (o.transactionSince && !d.review.holdInTransaction) {
      return {
        approved: false,
        refusal: {
          kind: 'in-transaction',
          rule: d.rule,
          message: `Airlock: rule ${d.rule} requires approval, and holding this statement inside an open transaction would keep the transaction's locks for the whole approval (up to ${minutesLeft(new Date(Date.now() + d.review.timeoutMs))}); it was not run`,
          hint: 'run it outside a transaction block (or commit first), or ask for a rule with review.holdInTransaction: true',
        },
      };
    }
    // Why the agent asks, whose agent it is and what the session did before: shown, audited, never trusted.
    const context = mergeContext(this.sessionContext, o.context);
    const extra = contextDetails(context, this.info.identity.owner, this.activity.line());
    if (o.transactionSince) extra.push(`held inside a transaction open since ${o.transactionSince.toISOString()}: its locks are held while you decide`);
    const binding: OperationBinding = { ...o.binding, details: [...(o.binding.details ?? []), ...extra] };
    let heldId: string | undefined;
    const started = (requestId: string) => {
      if (heldId || !requestId) return;
      this.holdingRequests.add((heldId = requestId));
      // In the record before anything can crash: startup reconciliation (recording/reconcile.ts)
      // reports a hold that never finished.
      try {
        this.deps.store.recordAudit({ at: new Date(), kind: HOLD_STARTED, subject: this.id, detail: { requestId, rule: d.rule, kind: o.operation.kind, text: o.operation.text ?? '' } });
      } catch (err) {
        this.deps.logger.error({ err, session: this.id }, 'recording a hold start failed');
      }
    };
    const onRequested = (p: HoldRequested) => {
      started(p.requestId);
      // A re-attached request is announced once, when it is known to be visible (onPosted), or
      // as a grant use.
      if (o.signal.aborted || p.reattached) return;
      o.notify({ stage: 'requested', message: `approval required: request ${p.requestId} ${p.reattached ? 're-attached' : 'created'}, posting to ${p.channel}`, detail: `rule ${d.rule}: ${d.reason}` });
    };
    const onPosted = (p: HoldPosted) => {
      started(p.requestId);
      if (o.signal.aborted) return;
      o.notify({
        stage: 'posted',
        message: `approval required: request ${p.requestId} ${p.reattached ? 're-attached in' : 'posted to'} ${p.channel}, waiting up to ${minutesLeft(p.deadline)}`,
        detail: `rule ${d.rule}: ${d.reason}`,
      });
    };
    let outcome: HoldOutcome;
    try {
      // The workflow carries the hold span's traceparent (tracing on), else the client's own.
      const traceparent = span?.traceparent ?? context?.traceparent;
      outcome = await this.deps.approver.hold({ operation: o.operation, rule: d.rule, reason: d.reason, review: d.review, binding, ...(traceparent ? { traceparent } : {}) }, onPosted, o.signal, onRequested);
    } catch (err) {
      outcome = { outcome: 'failed', requestId: '', reason: (err as Error).message };
    } finally {
      if (heldId) this.holdingRequests.delete(heldId);
    }
    if (outcome.requestId) this.requestIds.add(outcome.requestId);
    this.auditContext(outcome, d.rule, context, binding);
    if (outcome.outcome === 'approved') {
      const approval: ApprovalRecord = { requestId: outcome.requestId, outcome: outcome.viaGrant ? 'approved (grant)' : 'approved', approvers: outcome.approvers };
      // Revoked while it waited: an approval does not outlive the identity's access.
      if (this.revocation) return { approved: false, approval, refusal: this.tokenRefusal() };
      if (outcome.viaGrant) {
        const g = outcome.grant;
        const uses = g ? `use ${g.use}${g.runs ? ` of ${g.runs}` : ''}, valid until ${g.until}` : 'a standing grant';
        o.notify({ stage: 'grant', message: `running under reusable approval ${outcome.requestId} (${uses}) by ${outcome.approvers.join(', ') || 'an approver'}`, detail: `rule ${d.rule}: ${d.reason}` });
      }
      return { approved: true, approval, ...(outcome.grant ? { grant: outcome.grant } : {}) };
    }
    const by = outcome.outcome === 'rejected' ? outcome.by : undefined;
    return {
      approved: false,
      approval: outcome.requestId ? { requestId: outcome.requestId, outcome: outcome.outcome, approvers: by ? [by] : [], reason: outcome.reason } : undefined,
      refusal: holdRefusal(outcome, d.rule),
    };
  }

  /** The audit's copy of what the approver was shown besides the operation: reason, owner, activity, preview. */
  private auditContext(outcome: HoldOutcome, rule: string, context: RequestContext | undefined, binding: OperationBinding): void {
    try {
      this.deps.store.recordAudit({
        at: new Date(),
        kind: 'approval.context',
        subject: outcome.requestId || this.id,
        actor: this.info.identity.name,
        detail: {
          sessionId: this.id,
          rule,
          outcome: outcome.outcome,
          ...(context ? { context } : {}),
          ...(this.info.identity.owner ? { owner: this.info.identity.owner } : {}),
          activity: this.activity.line(),
          ...(binding.preview ? { preview: binding.preview } : {}),
        },
      });
    } catch (err) {
      this.deps.logger.error({ err, session: this.id }, 'recording the approval context failed');
    }
  }

  private noteActivity(r: Omit<OperationRecord, 'sessionId' | 'seq'>): void {
    const tables = (r.classification as { tables?: unknown }).tables;
    // A held operation that was not approved did not run: it counts as refused.
    const refused = r.decision === 'deny' || (r.approval !== undefined && !r.approval.outcome.startsWith('approved'));
    this.activity.note(r.kind, Array.isArray(tables) ? (tables as string[]) : undefined, refused ? 'deny' : r.decision);
  }

  /**
   * Records one operation (the seam numbers them). Store failures are logged, never thrown. The
   * record becomes the store's: its session id and sequence number are set on it (no copy per
   * operation), so callers pass a fresh object and do not change it afterwards.
   */
  record(r: Omit<OperationRecord, 'sessionId' | 'seq'>): number {
    this.noteActivity(r);
    const seq = ++this.seq;
    try {
      this.deps.store.recordOperation(stamped(r, this.id, seq));
    } catch (err) {
      this.deps.logger.error({ err, session: this.id }, 'recording an operation failed');
    }
    return seq;
  }

  /** A sequence number reserved now for an operation recorded later (long-running channels). */
  reserveSeq(): number {
    return ++this.seq;
  }

  /** Records an operation under a reserved sequence number. */
  recordAt(seq: number, r: Omit<OperationRecord, 'sessionId' | 'seq'>): void {
    this.noteActivity(r);
    try {
      this.deps.store.recordOperation(stamped(r, this.id, seq));
    } catch (err) {
      this.deps.logger.error({ err, session: this.id }, 'recording an operation failed');
    }
  }

  /**
   * Reports what an approved operation did to its approval request (every run, grant uses
   * included, so the request's history says what each approval released).
   */
  reportResult(approval: ApprovalRecord | undefined, result: { summary: string; tag?: string; rows?: number; error?: string; grant?: GrantUse }): void {
    if (!approval || !approval.outcome.startsWith('approved') || !approval.requestId) return;
    void this.deps.approver
      .reportResult({ requestId: approval.requestId, sessionId: this.id, ...result })
      .catch((err: Error) => this.deps.logger.warn({ err, session: this.id }, 'approval result report failed'));
  }

  /** Ends the session (idempotent): records the end and attaches the session log to its requests. */
  end(reason: string, bytes: { toClient: number; fromClient: number }): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.expiryTimer);
    this.traces?.end();
    if (this.started) this.deps.metrics?.sessionsActive.dec({ protocol: this.info.protocol });
    this.unwatchRevocation?.();
    try {
      this.deps.store.endSession(this.id, new Date(), reason, bytes);
    } catch (err) {
      this.deps.logger.error({ err, session: this.id }, 'recording the session end failed');
    }
    if (this.requestIds.size > 0) {
      void this.deps.approver.sessionEnded(this.id, [...this.requestIds]).catch((err: Error) => this.deps.logger.warn({ err, session: this.id }, 'approval session-end report failed'));
    }
  }
}
