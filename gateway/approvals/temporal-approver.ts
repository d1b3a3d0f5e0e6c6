// The gateway's Approver backed by the Temporal approval workflow (workflows/).
//
// Request ids are deterministic: `airlock-` + a hash of (protocol, identity, owner, connection,
// binding digest). The binding's digest covers the exact operation (statement text AND bound
// parameter values, the whole HTTP request, the command line), so other values are another
// request. Without a binding (a proxy that does not build one yet) the digest is a SHA-256 of the
// statement text (trimmed, trailing semicolons dropped).
//
// Each hold joins the request's open run with a unique hold id (signal-with-start: atomic start or
// join, no worker needed), so a gateway that restarts, or several gateways and sessions holding
// the same operation, share one request. A hold that goes away leaves (signal); the request is
// cancelled only when the last one leaves. Once approved, each hold claims its release through the
// `claim` Update, which the workflow serialises: approve-once releases exactly one waiting hold;
// a grant the approver chose releases later holds too, each use numbered and audited. When the
// open run cannot release this hold (its one run is used, its grant ended) the run is superseded
// and a fresh run under the same workflow id asks people again.
//
// Every Temporal call is bounded (startTimeoutMs), so an unreachable Temporal turns into a prompt
// `failed` outcome (fail closed); a request no worker posts within `postTimeoutMs` fails closed too.
import { createHash, randomUUID } from 'node:crypto';
import { SpanKind, SpanStatusCode, type Attributes, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { WorkflowFailedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { log } from '../log.ts';
import type { Operation } from '../policy/operation.ts';
import { formatSessionLog } from '../recording/format.ts';
import type { AuditEvent, Store } from '../recording/store.ts';
import type { approvalFollowUpWorkflow, approvalWorkflow } from '../../workflows/approval-workflow.ts';
import {
  FOLLOW_UP_WORKFLOW,
  claimUpdate,
  leaveSignal,
  progressQuery,
  resultSignal,
  type ApprovalInput,
  type ApprovalResult,
  type ChannelRef,
  type ClaimResult,
  type FollowUpStep,
  type ResultReport,
} from '../../workflows/definitions.ts';
import { joinApproval } from '../../workflows/start.ts';
import { parentFromTraceparent } from '../observability/tracing.ts';
import { verifyApprovalRun } from '../../workflows/run-check.ts';
import { HOLD_PARKED, type Approver, type GrantUse, type HeldResult, type HoldOutcome, type HoldPosted, type HoldRequest, type HoldRequested, type OperationBinding } from './approver.ts';

export interface TemporalApproverOptions {
  client: Client;
  taskQueue: string;
  store: Store;
  /** Where approvers are asked, for the client notice: "#db-approvals", "the local channel (airlock approvals list)". */
  channelsDescription: string;
  /** Bound on each Temporal call (describe, start/join, query, claim). Default 5 s. */
  startTimeoutMs?: number;
  /** A request nobody could see within this long (no worker, every chat failing) fails closed. Default 30 s. */
  postTimeoutMs?: number;
  /** OpenTelemetry tracer: the Temporal calls a hold makes become children of the hold's span. */
  tracer?: Tracer;
}

/** Session logs larger than this are cut (Temporal payloads are limited to a few MB). */
const MAX_LOG_BYTES = 1_000_000;
/** Message refs / released runs kept in memory for thread replies and result reports. */
const MAX_REMEMBERED = 10_000;
/** Fresh runs one hold may start when each open run turns out spent (racing gateways): then fail closed. */
const MAX_RUNS_PER_HOLD = 4;

/** The binding a hold covers: the seam's, or (proxies not yet on the seam) the statement text alone. */
export function bindingOf(op: Operation, binding?: OperationBinding): OperationBinding {
  if (binding) return binding;
  const text = op.text.trim().replace(/[;\s]+$/, '');
  return { text: op.text, digest: createHash('sha256').update(text).digest('hex') };
}

/** The deterministic request (workflow) id of an exact operation. */
export function approvalRequestId(op: Operation, binding?: OperationBinding): string {
  const b = bindingOf(op, binding);
  const key = JSON.stringify([op.protocol, op.identity.name, op.identity.owner ?? '', op.connection.name, b.digest]);
  return `airlock-${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}

function messageOf(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error && !e.message) e = e.cause;
  const m = e instanceof Error ? e.message : String(e);
  const cause = e instanceof Error && e.cause instanceof Error && e.cause.message !== m ? `: ${e.cause.message}` : '';
  return m + cause;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export class TemporalApprover implements Approver {
  private readonly client: Client;
  private readonly taskQueue: string;
  private readonly store: Store;
  private readonly channelsDescription: string;
  private readonly startTimeoutMs: number;
  private readonly postTimeoutMs: number;
  private readonly refs = new Map<string, ChannelRef[]>();
  /** requestId (and requestId/sessionId) -> the run that released it, for result reports. */
  private readonly releasedRuns = new Map<string, string>();
  private readonly tracer: Tracer | undefined;

  constructor(opts: TemporalApproverOptions) {
    this.tracer = opts.tracer;
    this.client = opts.client;
    this.taskQueue = opts.taskQueue;
    this.store = opts.store;
    this.channelsDescription = opts.channelsDescription;
    this.startTimeoutMs = opts.startTimeoutMs ?? 5000;
    this.postTimeoutMs = opts.postTimeoutMs ?? 30_000;
  }

  private audit(kind: string, subject: string, detail: Record<string, unknown>, actor?: string): void {
    const e: AuditEvent = { at: new Date(), kind, subject, actor, detail };
    this.store.recordAudit(e);
  }

  private bounded<T>(fn: () => Promise<T>, ms = this.startTimeoutMs): Promise<T> {
    return this.track(this.client.withDeadline(Date.now() + ms, fn));
  }

  /** `fn` inside a client span named for the workflow call (when tracing and the hold has a trace). */
  private traced<T>(parent: Context | undefined, name: string, attributes: Attributes, fn: (span?: Span) => Promise<T>): Promise<T> {
    if (!this.tracer || !parent) return fn();
    const span = this.tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, parent);
    return fn(span).then(
      (v) => {
        span.end();
        return v;
      },
      (err: unknown) => {
        // The error's class only: Temporal messages may quote workflow input.
        span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.name : 'error' });
        span.end();
        throw err;
      },
    );
  }

  private readonly inflight = new Set<Promise<unknown>>();

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    const drop = () => this.inflight.delete(p);
    p.then(drop, drop);
    return p;
  }

  /**
   * Waits (at most `maxMs`) for Temporal calls still in flight. Close the connection only after
   * this: the SDK's retry interceptor retries on a timer and throws, uncaught, into a closed channel.
   */
  async drain(maxMs = 8000): Promise<void> {
    const deadline = Date.now() + maxMs;
    while (this.inflight.size > 0 && Date.now() < deadline) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.allSettled([...this.inflight]), new Promise((r) => (timer = setTimeout(r, deadline - Date.now())))]);
      clearTimeout(timer);
    }
  }

  private remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key);
    map.set(key, value);
    if (map.size > MAX_REMEMBERED) map.delete(map.keys().next().value as string);
  }

  async hold(req: HoldRequest, onPosted: (p: HoldPosted) => void, signal: AbortSignal, onRequested?: (p: HoldRequested) => void): Promise<HoldOutcome> {
    const op = req.operation;
    const binding = bindingOf(op, req.binding);
    const requestId = approvalRequestId(op, binding);
    const sessionId = op.connection.sessionId || undefined;
    const holdId = `${sessionId ?? 'hold'}:${randomUUID()}`;
    const subject = { sessionId: op.connection.sessionId, identity: op.identity.name, connection: op.connection.name, rule: req.rule };
    const failed = (reason: string): HoldOutcome => {
      this.audit('approval.failed', requestId, { ...subject, reason });
      return { outcome: 'failed', requestId, reason };
    };
    if (signal.aborted) return { outcome: 'cancelled', requestId, reason: 'cancelled by the client before the request was made' };
    const parent = this.tracer && req.traceparent ? parentFromTraceparent(req.traceparent) : undefined;
    const spanAttrs = { 'airlock.approval.request_id': requestId, 'temporal.workflow_id': requestId };

    const input: ApprovalInput = {
      requestId,
      operation: {
        protocol: op.protocol,
        connection: op.connection.name,
        identity: op.identity.name,
        owner: op.identity.owner,
        groups: op.identity.groups,
        text: binding.text,
        ...(binding.parameters ? { parameters: binding.parameters } : {}),
        ...(binding.details ? { details: binding.details } : {}),
        ...(binding.preview ? { preview: binding.preview } : {}),
        digest: binding.digest,
        kind: op.kind,
        tables: op.tables,
        rule: req.rule,
        reason: req.reason,
        sessionId: op.connection.sessionId,
      },
      approverGroups: req.review.approvers,
      quorum: req.review.quorum,
      timeoutMs: req.review.timeoutMs,
      escalation: req.review.escalation.map((s) => ({ afterMs: s.afterMs, mention: s.mention, channel: s.channel })),
      ...(req.review.channel ? { channel: req.review.channel } : {}),
      grantTtlMs: req.review.grantTtlMs,
      ...(req.review.requireEach && req.review.requireEach.length > 1 ? { requireEach: req.review.requireEach } : {}),
    };
    const channel = req.review.channel ? `Slack ${req.review.channel}` : this.channelsDescription;
    const heldAt = Date.now();
    let posted = false;
    const tellPosted = (deadline: Date, reattached: boolean) => {
      if (posted) return;
      posted = true;
      try {
        onPosted({ requestId, channel, deadline, reattached });
      } catch (err) {
        log.warn({ err, requestId }, 'onPosted callback threw');
      }
    };

    for (let attempt = 0; attempt < MAX_RUNS_PER_HOLD; attempt++) {
      let runId: string;
      let reattached = false;
      try {
        const existing = await this.traced(parent, 'temporal describe approval', spanAttrs, () =>
          this.bounded(async () => {
            try {
              return await this.client.workflow.getHandle(requestId).describe();
            } catch (err) {
              if (err instanceof WorkflowNotFoundError) return undefined;
              throw err;
            }
          }),
        );
        // The request's run keeps the trace it belongs to (memo `traceparent`), for whoever reads its history.
        const memo = req.traceparent ? { traceparent: req.traceparent } : undefined;
        const joined = await this.traced(parent, 'temporal signalWithStart approval', spanAttrs, async (span) => {
          const j = await this.bounded(() => joinApproval(this.client, this.taskQueue, input, { holdId, ...(sessionId ? { sessionId } : {}) }, memo));
          span?.setAttribute('temporal.run_id', j.signaledRunId);
          return j;
        });
        runId = joined.signaledRunId;
        reattached = existing?.status.name === 'RUNNING' && existing.runId === runId;
        // A run someone else started under this id must be the request Airlock would have started.
        const forged = await this.bounded(() => verifyApprovalRun(this.client, this.taskQueue, input, runId));
        if (forged) {
          this.audit('approval.run-mismatch', requestId, { ...subject, holdId, runId, reason: forged });
          return failed(`approval request ${requestId} exists in Temporal but was not started for this operation (${forged}); failing closed. Someone who can start workflows in Temporal created it: protect Temporal with mTLS or API keys`);
        }
      } catch (err) {
        let why = messageOf(err);
        if (/search attribute/i.test(why)) why += ' (Airlock search attributes are not registered: start `airlock worker`, which registers them, or create them with `temporal operator search-attribute create`)';
        return failed(`approval required by rule ${req.rule}, but the approval service (Temporal) is unreachable or refused the request: ${why}; failing closed`);
      }
      this.audit('approval.requested', requestId, {
        ...subject,
        holdId,
        runId,
        text: binding.text,
        ...(binding.parameters ? { parameters: binding.parameters } : {}),
        ...(binding.details ? { details: binding.details } : {}),
        ...(binding.preview ? { preview: binding.preview } : {}),
        digest: binding.digest,
        reattached,
        approvers: req.review.approvers,
        quorum: req.review.quorum,
        timeoutMs: req.review.timeoutMs,
        grantTtlMs: req.review.grantTtlMs,
      });
      try {
        onRequested?.({ requestId, channel, reattached });
      } catch (err) {
        log.warn({ err, requestId }, 'onRequested callback threw');
      }
      const o = await this.follow({ req, requestId, runId, holdId, sessionId, reattached, heldAt, signal, failed, tellPosted, isPosted: () => posted, parent });
      if (o !== 'new-request') return o;
      this.audit('approval.superseded', requestId, { ...subject, holdId, runId, reason: 'the open run could not release this hold; asking again' });
    }
    return failed(`approval request ${requestId} kept being superseded by other holds of the same operation; failing closed`);
  }

  /** Follows one run for one hold until it is released, refused, cancelled, or must ask again. */
  private follow(h: {
    req: HoldRequest;
    requestId: string;
    runId: string;
    holdId: string;
    sessionId?: string;
    reattached: boolean;
    heldAt: number;
    signal: AbortSignal;
    failed: (reason: string) => HoldOutcome;
    tellPosted: (deadline: Date, reattached: boolean) => void;
    isPosted: () => boolean;
    /** The hold's trace context, when traced. */
    parent?: Context;
  }): Promise<HoldOutcome | 'new-request'> {
    const { req, requestId, runId, holdId, signal } = h;
    const handle = this.client.workflow.getHandle<typeof approvalWorkflow>(requestId, runId);
    return new Promise<HoldOutcome | 'new-request'>((resolve) => {
      let done = false;
      let answered = false; // a worker answered a query: the run is being processed
      let seenStatus: string | undefined;
      let postErrors: string[] = [];
      let claiming = false;
      let lastWaitClaim = Date.now();
      const timers: NodeJS.Timeout[] = [];
      // Ends this hold's long poll on the run's result once the hold is settled (the run may stay open for a grant).
      const stop = new AbortController();
      const finish = (o: HoldOutcome | 'new-request') => {
        if (done) return;
        done = true;
        stop.abort();
        for (const t of timers) clearTimeout(t);
        signal.removeEventListener('abort', onAbort);
        resolve(o);
      };
      const callAttrs = { 'airlock.approval.request_id': requestId, 'temporal.workflow_id': requestId, 'temporal.run_id': runId };
      const leave = (reason: string, park = false) =>
        this.traced(h.parent, 'temporal signal leave', callAttrs, () => this.bounded(() => handle.signal(leaveSignal, { holdId, reason, by: req.operation.identity.name, ...(park ? { park } : {}) }))).catch((err: unknown) => {
          log.warn({ err: messageOf(err), requestId }, 'could not leave the approval request');
        });

      const released = (c: Extract<ClaimResult, { kind: 'released' }>) => {
        this.remember(this.refs, requestId, c.refs);
        this.remember(this.releasedRuns, requestId, runId);
        if (h.sessionId) this.remember(this.releasedRuns, `${requestId}/${h.sessionId}`, runId);
        // The client learns it was held (and where) before it learns the outcome.
        if (!c.release.viaGrant) h.tellPosted(new Date(h.heldAt + req.review.timeoutMs), h.reattached);
        const grant: GrantUse | undefined = c.grant ? { use: c.release.use, ...(c.grant.runs !== undefined ? { runs: c.grant.runs } : {}), until: c.grant.until } : undefined;
        finish({ outcome: 'approved', requestId, approvers: c.approvers, viaGrant: c.release.viaGrant, ...(grant ? { grant } : {}) });
      };

      /** Takes (or learns it cannot take) a release; any error leaves it to the next poll or the result. */
      const claim = async () => {
        if (claiming || done) return;
        claiming = true;
        try {
          const c = await this.traced(h.parent, 'temporal update claim', callAttrs, async (span) => {
            const r = await this.bounded(() => handle.executeUpdate(claimUpdate, { args: [{ holdId, ...(h.sessionId ? { sessionId: h.sessionId } : {}) }] }));
            span?.setAttribute('airlock.claim.result', r.kind);
            return r;
          });
          if (done) return;
          if (c.kind === 'released') released(c);
          else if (c.kind === 'final') {
            this.audit('approval.not-released', requestId, { holdId, sessionId: h.sessionId, reason: c.reason });
            finish({ outcome: 'cancelled', requestId, reason: c.reason });
          } else if (c.kind === 'new-request') {
            // The spent run closes now (superseded); wait for that, then start a fresh one.
            await this.bounded(() => handle.result(), 15_000).catch(() => undefined);
            finish('new-request');
          }
        } catch (err) {
          log.debug({ err: messageOf(err), requestId }, 'claim failed; will retry');
        } finally {
          claiming = false;
        }
      };

      this.track(this.client.withAbortSignal(stop.signal, () => handle.result())).then(
        (r) => {
          if (done) return;
          this.remember(this.refs, requestId, r.refs);
          if (r.outcome === 'approved') {
            const mine = r.releases?.find((x) => x.holdId === holdId);
            if (mine) return void released({ kind: 'released', release: mine, approvers: r.approvers, ...(r.grant ? { grant: r.grant } : {}), refs: r.refs });
            if (r.waitersAtDecision?.includes(holdId)) {
              const other = r.releases?.[0];
              const why = other
                ? `request ${requestId} was approved${r.grant ? ' as a grant' : ' once'}, and the approval released ${other.sessionId ? `session ${other.sessionId}` : 'another waiting session'}; run the operation again to ask for a new approval`
                : `request ${requestId} was approved, but the approval closed (${r.closedBecause ?? 'unknown'}) before this session took it; run the operation again`;
              this.audit('approval.not-released', requestId, { holdId, sessionId: h.sessionId, reason: why });
              return void finish({ outcome: 'cancelled', requestId, reason: why });
            }
            return void finish('new-request'); // joined a spent run just as it closed
          }
          // Every other waiter left just as this hold joined: this hold did not leave, so ask afresh.
          if (r.outcome === 'cancelled' && r.closedBecause === 'every waiting hold left') return void finish('new-request');
          if (r.refs.length > 0) h.tellPosted(new Date(h.heldAt + req.review.timeoutMs), h.reattached);
          finish(this.toOutcome(r));
        },
        (err: unknown) => {
          if (done) return;
          const why = err instanceof WorkflowFailedError ? `${err.message}${err.cause ? `: ${err.cause.message}` : ''}` : messageOf(err);
          finish(h.failed(`approval request ${requestId} did not complete: ${why} (is \`airlock worker\` running on task queue ${this.taskQueue}?); failing closed`));
        },
      );

      // Follow the run: tell the client once people can see it; claim once it is decided.
      void (async () => {
        let wait = 50;
        const started = Date.now();
        while (!done) {
          try {
            const p = await this.bounded(() => handle.query(progressQuery, holdId));
            answered = true;
            seenStatus = p.view.status;
            postErrors = p.postErrors;
            if (done) return;
            if (p.view.status === 'pending' && p.posted) h.tellPosted(new Date(p.view.deadline), h.reattached);
            // `wait` is re-checked by a real claim now and then: the query sees the workflow's clock as of its last activity.
            if (p.view.status === 'approved' && p.next && p.next !== 'pending' && (p.next !== 'wait' || Date.now() - lastWaitClaim > 1000)) {
              if (p.next === 'wait') lastWaitClaim = Date.now();
              await claim();
            }
          } catch {
            // Worker busy or briefly unreachable: keep asking until the outcome or the post timeout.
          }
          await sleep(wait);
          wait = Math.min(Date.now() - started < 30_000 ? 250 : 500, wait * 2);
        }
      })();

      // Nobody can see the request (no worker polling the task queue, every chat failing): fail
      // closed after postTimeoutMs rather than at the deadline.
      const unposted = setTimeout(() => {
        if (done || h.isPosted() || (seenStatus !== undefined && seenStatus !== 'pending')) return;
        const why = !answered
          ? `no approval worker answered within ${this.postTimeoutMs} ms (is \`airlock worker\` running on task queue ${this.taskQueue}?)`
          : `it could not be posted to any approval channel within ${this.postTimeoutMs} ms${postErrors.length > 0 ? ` (${postErrors.join('; ')})` : ''}`;
        void leave(`never posted: ${why}`);
        finish(h.failed(`approval request ${requestId} was not visible to any approver: ${why}; failing closed`));
      }, this.postTimeoutMs);
      unposted.unref();
      timers.push(unposted);

      const onAbort = () => {
        if (done) return;
        const park = signal.reason === HOLD_PARKED;
        const reason = park ? 'the client was told to send the operation again' : 'cancelled by the client';
        void leave(reason, park);
        this.audit(park ? 'approval.parked' : 'approval.left', requestId, { holdId, sessionId: h.sessionId, reason });
        finish({ outcome: 'cancelled', requestId, reason });
      };
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort(); // aborted while the request was being started
    });
  }

  private toOutcome(r: ApprovalResult): HoldOutcome {
    switch (r.outcome) {
      case 'approved':
        return { outcome: 'approved', requestId: r.requestId, approvers: r.approvers, viaGrant: false };
      case 'rejected':
        return { outcome: 'rejected', requestId: r.requestId, by: r.rejectedBy ?? 'an approver', reason: r.reason ?? 'no reason given' };
      case 'expired':
        return { outcome: 'expired', requestId: r.requestId, reason: r.reason ?? 'no decision before the deadline' };
      case 'cancelled':
        return { outcome: 'cancelled', requestId: r.requestId, reason: r.reason ?? 'cancelled' };
      default:
        return { outcome: 'failed', requestId: r.requestId, reason: r.reason ?? 'the approval request failed' };
    }
  }

  /** Where a request was posted: remembered from its release or outcome, else read from its latest run. */
  private async refsFor(requestId: string): Promise<ChannelRef[]> {
    const known = this.refs.get(requestId);
    if (known) return known;
    const d = await this.bounded(() => this.client.workflow.getHandle(requestId).describe());
    let refs: ChannelRef[] = [];
    if (d.status.name === 'COMPLETED') refs = ((await this.bounded(() => this.client.workflow.getHandle(requestId, d.runId).result())) as ApprovalResult).refs;
    else if (d.status.name === 'RUNNING') refs = (await this.bounded(() => this.client.workflow.getHandle(requestId, d.runId).query(progressQuery))).refs ?? [];
    this.remember(this.refs, requestId, refs);
    return refs;
  }

  /** Posts to the request's thread through the follow-up workflow (retried activities). */
  private async followUp(requestId: string, what: string, steps: FollowUpStep[]): Promise<void> {
    try {
      const refs = await this.refsFor(requestId);
      if (refs.length === 0) return;
      await this.bounded(() =>
        this.client.workflow.start<typeof approvalFollowUpWorkflow>(FOLLOW_UP_WORKFLOW, {
          workflowId: `${requestId}:${what}:${randomUUID()}`,
          taskQueue: this.taskQueue,
          args: [{ requestId, refs, steps }],
          workflowExecutionTimeout: '2h',
        }),
      );
    } catch (err) {
      log.warn({ err: messageOf(err), requestId }, `could not send the ${what} to the approval thread`);
      this.audit('approval.chat-failed', requestId, { what, error: messageOf(err) });
    }
  }

  /**
   * Sends what the released operation did to the approval run that released it (signal `result`):
   * it lands in that run's history and result, its audit and its thread. When that run has closed
   * (result window over, superseded) or is unknown here (gateway restarted), the report is audited
   * here and posted to the thread through a follow-up workflow instead.
   */
  async reportResult(r: HeldResult): Promise<void> {
    if (!r.requestId) return;
    const report: ResultReport = {
      summary: r.summary,
      ...(r.sessionId ? { sessionId: r.sessionId } : {}),
      ...(r.tag !== undefined ? { tag: r.tag } : {}),
      ...(r.rows !== undefined ? { rows: r.rows } : {}),
      ...(r.error !== undefined ? { error: r.error } : {}),
      ...(r.grant ? { grant: r.grant } : {}),
    };
    const runId = (r.sessionId ? this.releasedRuns.get(`${r.requestId}/${r.sessionId}`) : undefined) ?? this.releasedRuns.get(r.requestId);
    if (runId) {
      try {
        await this.bounded(() => this.client.workflow.getHandle(r.requestId, runId).signal(resultSignal, report));
        return;
      } catch (err) {
        log.debug({ err: messageOf(err), requestId: r.requestId }, 'the releasing run is closed; reporting the result outside it');
      }
    }
    this.audit('approval.result', r.requestId, { ...report, runId, outsideRun: true });
    await this.followUp(r.requestId, 'result', [{ type: 'reply', text: r.summary }]);
  }

  async sessionEnded(sessionId: string, requestIds: string[]): Promise<void> {
    const ids = [...new Set(requestIds.filter(Boolean))];
    if (ids.length === 0) return;
    const detail = this.store.getSession(sessionId);
    let content = detail
      ? formatSessionLog(detail, ids.flatMap((id) => this.store.listAudit(id)))
      : `Airlock session ${sessionId}: no recording found in the store.\n`;
    if (Buffer.byteLength(content) > MAX_LOG_BYTES) {
      content = Buffer.from(content).subarray(0, MAX_LOG_BYTES).toString('utf8') + `\n[truncated at ${MAX_LOG_BYTES} bytes: see \`airlock sessions show ${sessionId}\`]\n`;
    }
    const filename = `airlock-session-${sessionId}.log`;
    await Promise.all(ids.map((id) => this.followUp(id, 'session-log', [{ type: 'attachLog', filename, content }])));
  }
}
