// The gateway's Approver backed by the Temporal approval workflow (workflows/).
//
// Request ids are deterministic: `airlock-` + a hash of (protocol, identity, owner, connection,
// statement text). A gateway that restarts, or a client that retries, while the request is
// pending re-attaches to the same run (describe + start with USE_EXISTING) instead of posting
// twice. An approved run whose decision is younger than the rule's grant TTL is a grant: the
// retry runs at once. A rejected or expired run does not block a fresh request.
//
// The hash covers the exact statement text (trimmed, trailing semicolons dropped), not the
// constants-stripped fingerprint: an approval of `DELETE ... WHERE id = 42` must not also let
// `DELETE ... WHERE id = 43` through.
//
// Every Temporal call made before the request exists is bounded (startTimeoutMs), so an
// unreachable Temporal turns into a prompt `failed` outcome (fail closed), never a hang.
import { createHash, randomUUID } from 'node:crypto';
import { WorkflowFailedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { log } from '../log.ts';
import type { Operation } from '../policy/operation.ts';
import { formatSessionLog } from '../recording/format.ts';
import type { AuditEvent, Store } from '../recording/store.ts';
import type { approvalFollowUpWorkflow, approvalWorkflow } from '../../workflows/approval-workflow.ts';
import { FOLLOW_UP_WORKFLOW, cancelSignal, progressQuery, type ApprovalInput, type ApprovalResult, type ChannelRef, type FollowUpStep } from '../../workflows/definitions.ts';
import { startApproval } from '../../workflows/start.ts';
import { DetachHold, type Approver, type HeldResult, type HoldOutcome, type HoldPosted, type HoldRequest } from './approver.ts';

export interface TemporalApproverOptions {
  client: Client;
  taskQueue: string;
  store: Store;
  /** Where approvers are asked, for the client notice: "#db-approvals", "the local channel (airlock approvals list)". */
  channelsDescription: string;
  /** Bound on each Temporal call made before the request exists (describe, start). Default 5 s. */
  startTimeoutMs?: number;
  /** Extra wait past the deadline for a request nobody posted (no worker running). Default 30 s. */
  unpostedGraceMs?: number;
}

/** Session logs larger than this are cut (Temporal payloads are limited to a few MB). */
const MAX_LOG_BYTES = 1_000_000;
/** Message refs kept in memory for thread replies; older ones are looked up in Temporal. */
const MAX_REMEMBERED = 10_000;

/** The deterministic request (workflow) id of an operation. */
export function approvalRequestId(op: Operation): string {
  const text = op.text.trim().replace(/[;\s]+$/, '');
  const key = JSON.stringify([op.protocol, op.identity.name, op.identity.owner ?? '', op.connection.name, text]);
  return `airlock-${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}

function messageOf(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error && !e.message) e = e.cause;
  const m = e instanceof Error ? e.message : String(e);
  const cause = e instanceof Error && e.cause instanceof Error && e.cause.message !== m ? `: ${e.cause.message}` : '';
  return m + cause;
}

export class TemporalApprover implements Approver {
  private readonly client: Client;
  private readonly taskQueue: string;
  private readonly store: Store;
  private readonly channelsDescription: string;
  private readonly startTimeoutMs: number;
  private readonly unpostedGraceMs: number;
  private readonly refs = new Map<string, ChannelRef[]>();

  constructor(opts: TemporalApproverOptions) {
    this.client = opts.client;
    this.taskQueue = opts.taskQueue;
    this.store = opts.store;
    this.channelsDescription = opts.channelsDescription;
    this.startTimeoutMs = opts.startTimeoutMs ?? 5000;
    this.unpostedGraceMs = opts.unpostedGraceMs ?? 30_000;
  }

  private audit(kind: string, subject: string, detail: Record<string, unknown>, actor?: string): void {
    const e: AuditEvent = { at: new Date(), kind, subject, actor, detail };
    this.store.recordAudit(e);
  }

  private bounded<T>(fn: () => Promise<T>, ms = this.startTimeoutMs): Promise<T> {
    return this.track(this.client.withDeadline(Date.now() + ms, fn));
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

  private remember(requestId: string, refs: ChannelRef[]): void {
    this.refs.delete(requestId);
    this.refs.set(requestId, refs);
    if (this.refs.size > MAX_REMEMBERED) this.refs.delete(this.refs.keys().next().value as string);
  }

  async hold(req: HoldRequest, onPosted: (p: HoldPosted) => void, signal: AbortSignal): Promise<HoldOutcome> {
    const op = req.operation;
    const requestId = approvalRequestId(op);
    const subject = { sessionId: op.connection.sessionId, identity: op.identity.name, connection: op.connection.name, rule: req.rule };
    const failed = (reason: string): HoldOutcome => {
      this.audit('approval.failed', requestId, { ...subject, reason });
      return { outcome: 'failed', requestId, reason };
    };
    if (signal.aborted) return { outcome: 'cancelled', requestId, reason: 'the client disconnected before the request was made' };

    const input: ApprovalInput = {
      requestId,
      operation: {
        protocol: op.protocol,
        connection: op.connection.name,
        identity: op.identity.name,
        owner: op.identity.owner,
        groups: op.identity.groups,
        text: op.text,
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
    };

    let runId: string;
    let reattached = false;
    try {
      const existing = await this.bounded(async () => {
        try {
          return await this.client.workflow.getHandle(requestId).describe();
        } catch (err) {
          if (err instanceof WorkflowNotFoundError) return undefined;
          throw err;
        }
      });
      if (existing?.status.name === 'RUNNING') {
        reattached = true;
        runId = existing.runId;
      } else {
        if (existing?.status.name === 'COMPLETED') {
          const prev = (await this.bounded(() => this.client.workflow.getHandle(requestId, existing.runId).result())) as ApprovalResult;
          const age = Date.now() - Date.parse(prev.decidedAt);
          if (prev.outcome === 'approved' && age >= 0 && age < req.review.grantTtlMs) {
            this.remember(requestId, prev.refs);
            this.audit('approval.grant-used', requestId, { ...subject, approvers: prev.approvers, decidedAt: prev.decidedAt, grantTtlMs: req.review.grantTtlMs });
            return { outcome: 'approved', requestId, approvers: prev.approvers, viaGrant: true };
          }
        }
        const started = await this.bounded(() => startApproval(this.client, this.taskQueue, input));
        runId = started.firstExecutionRunId;
      }
    } catch (err) {
      let why = messageOf(err);
      if (/search attribute/i.test(why)) why += ' (Airlock search attributes are not registered: start `airlock worker`, which registers them, or create them with `temporal operator search-attribute create`)';
      return failed(`approval required by rule ${req.rule}, but the approval service (Temporal) is unreachable or refused the request: ${why}; failing closed`);
    }
    this.audit('approval.requested', requestId, { ...subject, text: op.text, reattached, approvers: req.review.approvers, quorum: req.review.quorum, timeoutMs: req.review.timeoutMs });

    const heldAt = Date.now();
    const handle = this.client.workflow.getHandle<typeof approvalWorkflow>(requestId, runId);
    return await new Promise<HoldOutcome>((resolve) => {
      let done = false;
      let posted = false;
      const timers: NodeJS.Timeout[] = [];
      const finish = (o: HoldOutcome) => {
        if (done) return;
        done = true;
        for (const t of timers) clearTimeout(t);
        signal.removeEventListener('abort', onAbort);
        resolve(o);
      };

      const channel = req.review.channel ? `Slack ${req.review.channel}` : this.channelsDescription;
      const tellPosted = (deadline: Date) => {
        if (posted) return;
        posted = true;
        try {
          onPosted({ requestId, channel, deadline, reattached });
        } catch (err) {
          log.warn({ err, requestId }, 'onPosted callback threw');
        }
      };

      this.track(handle.result()).then(
        (r) => {
          this.remember(requestId, r.refs);
          // Decided before the progress poll saw the post: the client still learns it was held, first.
          if (r.refs.length > 0) tellPosted(new Date(heldAt + req.review.timeoutMs));
          finish(this.toOutcome(r));
        },
        (err: unknown) => {
          const why = err instanceof WorkflowFailedError ? `${err.message}${err.cause ? `: ${err.cause.message}` : ''}` : messageOf(err);
          finish(failed(`approval request ${requestId} did not complete: ${why} (is \`airlock worker\` running on task queue ${this.taskQueue}?); failing closed`));
        },
      );

      // Tell the client once people can see the request.
      void (async () => {
        let wait = 50;
        while (!done && !posted) {
          try {
            const p = await this.bounded(() => handle.query(progressQuery), 5000);
            if (p.posted && !done) {
              tellPosted(new Date(p.view.deadline));
              return;
            }
          } catch {
            // Worker busy or briefly unreachable: keep asking until the outcome arrives.
          }
          await new Promise((r) => setTimeout(r, wait));
          wait = Math.min(1000, wait * 2);
        }
      })();

      // Nobody posted it by the deadline (no worker polling the task queue): fail closed now
      // rather than when Temporal's execution timeout finally closes the run.
      const unposted = setTimeout(() => {
        if (posted || done) return;
        void this.bounded(() => handle.signal(cancelSignal, { reason: 'never posted: no approval worker answered' })).catch(() => undefined);
        finish(failed(`approval request ${requestId} was never posted (is \`airlock worker\` running on task queue ${this.taskQueue}?); failing closed`));
      }, req.review.timeoutMs + this.unpostedGraceMs);
      unposted.unref();
      timers.push(unposted);

      const onAbort = () => {
        if (done) return;
        // Detached (HTTP answered 503 + Retry-After): stop waiting, leave the request open.
        if (signal.reason instanceof DetachHold) return finish({ outcome: 'cancelled', requestId, reason: signal.reason.message });
        const reason = signal.reason instanceof Error && signal.reason.message ? signal.reason.message : 'the client disconnected while the operation was held';
        void this.bounded(() => handle.signal(cancelSignal, { reason, by: op.identity.name })).catch((err: unknown) => {
          log.warn({ err: messageOf(err), requestId }, 'could not cancel the approval request');
        });
        // The workflow answers `cancelled` (and updates the chat) within moments; do not wait long for it.
        const t = setTimeout(() => finish({ outcome: 'cancelled', requestId, reason }), 10_000);
        t.unref();
        timers.push(t);
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

  /** Where a request was posted: remembered from its outcome, else read from its completed run. */
  private async refsFor(requestId: string): Promise<ChannelRef[]> {
    const known = this.refs.get(requestId);
    if (known) return known;
    const d = await this.bounded(() => this.client.workflow.getHandle(requestId).describe());
    if (d.status.name !== 'COMPLETED') return [];
    const r = (await this.bounded(() => this.client.workflow.getHandle(requestId, d.runId).result())) as ApprovalResult;
    this.remember(requestId, r.refs);
    return r.refs;
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

  async reportResult(r: HeldResult): Promise<void> {
    if (!r.requestId) return;
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
