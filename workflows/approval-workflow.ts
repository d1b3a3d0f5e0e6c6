// The approval workflow (deterministic workflow code: no I/O, no Node APIs; chat and audit happen
// in activities). One run per request; the workflow id is derived from the exact operation (see
// gateway/approvals/temporal-approver.ts), so a restarted gateway re-attaches to the same run.
//
// Life of a run:
// 1. Gateways join it (signal `join`, one per held operation, carrying a unique hold id) and leave
//    it (signal `leave`); the request is cancelled only when the last waiting hold leaves.
// 2. Post the request to every channel (retried until the final deadline; nothing posted by then =
//    `failed`), wait for decisions (validated Updates), escalate at each step, expire at the
//    deadline. Rejected, expired, cancelled and failed runs complete at once.
// 3. Approved: the approval releases held operations through the `claim` Update, which the
//    workflow serialises, so two gateways can never both take the last use. By default an
//    approval releases ONE operation, for a hold that was waiting when it was given (approve
//    once); other waiting holds get `final` ("the approval covered another session"). When the
//    approvers chose a grant (DecisionArgs.grant: for a time, capped by the rule's grantTtl, and
//    optionally N runs) later holds of the same operation claim further uses while it lasts.
//    Every release is audited; grant uses are also posted to the thread.
// 4. The run stays open while a grant lasts or a released operation's result is still to be
//    reported (signal `result`, kept in this run's history and result), at most `resultWaitMs`.
//    A later hold that this approval cannot release supersedes the spent run: it closes, and the
//    gateway starts a fresh run under the same workflow id, which asks people again.
// 5. Waiter leases: a hold joins with a lease its gateway renews (signal `renew`); a hold whose
//    lease lapsed is gone (its gateway crashed: no `leave` was ever sent). When the last one goes,
//    a pending request ends `abandoned` at once, so approvers never approve a statement nothing
//    holds. Runs started before leases existed (no `patched` marker) keep the old behaviour.
// The chat follow-ups (message update, audit of the outcome, thread replies) run in abandoned
// child workflows, so a slow or failing chat never delays a held client.
import {
  ApplicationFailure,
  CancellationScope,
  allHandlersFinished,
  ParentClosePolicy,
  condition,
  isCancellation,
  patched,
  proxyActivities,
  setHandler,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { ApprovalActivities } from './activities.ts';
import type { AccessActivities } from './access-activities.ts';
import {
  cancelSignal,
  claimUpdate,
  decideUpdate,
  joinSignal,
  leaveSignal,
  progressQuery,
  renewSignal,
  resultSignal,
  reviewProofId,
  reviewUpdate,
  stateQuery,
  type ApprovalInput,
  type ApprovalOutcome,
  type ApprovalResult,
  type ApprovalView,
  type CancelArgs,
  type ChannelRef,
  type ClaimResult,
  type DecideArgs,
  type EffectiveGrant,
  type Release,
  type ReportedResult,
  type ReviewResult,
  type FollowUpInput,
  type FollowUpResult,
  type FollowUpStep,
} from './definitions.ts';
import { APPROVERS, OUTCOME, REJECTER } from './search-attributes.ts';
import { decisionRefusal, grantRefusal, structuralRefusal } from './decision-rules.ts';
import type { GrantChoice } from '../bots/channel.ts';

const RETRY: ActivityOptions['retry'] = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' };

/** Activities whose retries are bounded by the request's final deadline (posting, escalating). */
function untilDeadline(deadline: number) {
  const left = Math.max(1000, deadline - Date.now());
  return proxyActivities<ApprovalActivities>({ startToCloseTimeout: Math.min(30_000, left), scheduleToCloseTimeout: left, retry: RETRY });
}

/** Chat follow-ups after the decision: retried for an hour, then given up (and audited). */
const followUpActivities = proxyActivities<ApprovalActivities>({ startToCloseTimeout: '60s', scheduleToCloseTimeout: '1h', retry: RETRY });
const quickActivities = proxyActivities<ApprovalActivities>({ startToCloseTimeout: '10s', scheduleToCloseTimeout: '10m', retry: RETRY });
/**
 * Audit events of the run's own lifecycle (outcome, releases, reviews): written before the run
 * completes, so an auditor who sees it closed sees its whole story. Bounded to a minute: with the
 * store unreachable longer, the event goes to a follow-up child (an hour of retries) instead.
 */
const lifecycleAuditActivities = proxyActivities<ApprovalActivities>({ startToCloseTimeout: '10s', scheduleToCloseTimeout: '60s', retry: RETRY });
/** Decision verification and its audit: someone is waiting on the Update, so give up within a minute. */
const decisionActivities = proxyActivities<ApprovalActivities>({ startToCloseTimeout: '10s', scheduleToCloseTimeout: '60s', retry: RETRY });
/** Access requests (request kind `access`): the worker checks and opens elevation windows. */
const accessActivities = proxyActivities<AccessActivities>({ startToCloseTimeout: '10s', scheduleToCloseTimeout: '10m', retry: RETRY });

function errorMessage(err: unknown): string {
  // ActivityFailure -> (TimeoutFailure ->) ApplicationFailure: the activity's own message says
  // what failed where ("post request via slack: ..."); deeper causes only repeat part of it.
  let e: unknown = err;
  while (e instanceof Error) {
    if (e instanceof ApplicationFailure || !(e.cause instanceof Error)) return e.message;
    e = e.cause;
  }
  return String(e);
}

function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** An approved run answers claims this long after the decision while a hold that waited for it has not claimed yet. */
const CLAIM_WINDOW_MS = 60_000;
/** A hold that needs a new request waits at most this long for the last release's result report before superseding the run. */
const SUPERSEDE_WAIT_MS = 5_000;
/** Releases per run: bounds the run's history (Temporal allows 2000 Updates per run); then a new request. */
const MAX_RELEASES = 1000;
const DEFAULT_RESULT_WAIT_MS = 15 * 60_000;
const MAX_REPORT_CHARS = 4000;
/** How long an approve-once approval waits for the retry of a parked hold (a client told to send it again). */
const PARKED_CLAIM_WINDOW_MS = 10 * 60_000;
/** `closedBecause` of a request cancelled because every waiting hold left (a hold that joined just then starts afresh). */
const CLOSED_BY_WAITERS = 'every waiting hold left';
/** Workflow versioning: runs with this marker honour waiter leases (older histories replay without). */
export const WAITER_LEASES_PATCH = 'airlock-waiter-leases';
/** Runs with this marker write their audit events themselves before completing (older histories replay with them in follow-up children). */
export const AUDIT_IN_RUN_PATCH = 'airlock-audit-in-run';
/** Bounds on a lease a gateway asks for. */
const MIN_LEASE_MS = 500;
const MAX_LEASE_MS = 60 * 60_000;

/**
 * The grant an approval carries: only when EVERY approver chose one (the smallest time and run count
 * win), capped by the rule's grantTtl. Anything else, including a malformed choice, approves once.
 */
function grantOf(choices: readonly (GrantChoice | undefined)[], grantTtlMs: number, decidedAt: number): EffectiveGrant | undefined {
  if (!(grantTtlMs > 0) || choices.length === 0) return undefined;
  let forMs = Infinity;
  let runs: number | undefined;
  for (const c of choices) {
    if (!c || typeof c.forMs !== 'number' || !Number.isFinite(c.forMs) || c.forMs <= 0) return undefined;
    forMs = Math.min(forMs, c.forMs);
    if (c.runs !== undefined && c.runs !== null) {
      if (typeof c.runs !== 'number' || !Number.isInteger(c.runs) || c.runs < 1) return undefined;
      runs = runs === undefined ? c.runs : Math.min(runs, c.runs);
    }
  }
  forMs = Math.min(forMs, grantTtlMs);
  return { forMs, ...(runs !== undefined ? { runs } : {}), until: new Date(decidedAt + forMs).toISOString() };
}

function cut(s: unknown, max = MAX_REPORT_CHARS): string | undefined {
  if (typeof s !== 'string') return undefined;
  return s.length > max ? `${s.slice(0, max)}...` : s;
}

export async function approvalWorkflow(input: ApprovalInput): Promise<ApprovalResult> {
  const startedAt = Date.now();
  const deadline = startedAt + input.timeoutMs;
  const waiterLeases = patched(WAITER_LEASES_PATCH);
  const auditInRun = patched(AUDIT_IN_RUN_PATCH);
  const resultWaitMs = input.resultWaitMs ?? DEFAULT_RESULT_WAIT_MS;
  const op = input.operation;
  const view: ApprovalView = {
    requestId: input.requestId,
    protocol: op.protocol,
    identity: op.identity,
    owner: op.owner,
    connection: op.connection,
    text: op.text,
    rule: op.rule,
    reason: op.reason,
    deadline: new Date(deadline).toISOString(),
    approverGroups: input.approverGroups,
    quorum: Math.max(1, input.quorum),
    status: 'pending',
    decidedBy: [],
    escalated: false,
    ...(input.channel ? { channel: input.channel } : {}),
    ...(op.parameters ? { parameters: [...op.parameters] } : {}),
    ...(op.details ? { details: [...op.details] } : {}),
    ...(op.preview ? { preview: op.preview } : {}),
    waiting: 0,
    grantTtlMs: input.grantTtlMs ?? 0,
  };
  const approvals: string[] = [];
  const refs: ChannelRef[] = [];
  const postErrors = new Map<string, string>();
  let postedAt: number | undefined;
  let rejected: { by: string; reason: string } | undefined;
  let cancelled: CancelArgs | undefined;
  const snapshot = (): ApprovalView => ({ ...view, decidedBy: [...view.decidedBy], approverGroups: [...view.approverGroups] });
  const decided = () => view.status !== 'pending' || cancelled !== undefined || abandoned !== undefined;

  // Lifecycle state: who waits, what the approval released, what those operations did.
  const waiters = new Map<string, { sessionId?: string; leaseMs?: number; leaseUntil?: number }>();
  /** Set when the last waiting hold's lease lapsed while the request was pending. */
  let abandoned: string | undefined;
  /** Bumped when a leased hold joins: the pending loop re-plans its wake-up for the new lease. */
  let leaseEpoch = 0;
  let everJoined = 0;
  let parked = 0; // holds whose client was told to send the operation again
  let cancelledByWaiters = false;
  const grantChoices: (GrantChoice | undefined)[] = [];
  let grant: EffectiveGrant | undefined;
  let grantUntil = 0;
  let decidedAtMs = 0;
  let atDecision: string[] = [];
  const releases: Release[] = [];
  const results: ReportedResult[] = [];
  let lastReleaseAt = 0;
  let superseded: string | undefined;
  let version = 0; // bumped on every state change the lifecycle loop waits for
  const background: Promise<unknown>[] = [];

  /** Starts an abandoned child for `steps` (close() waits until it has started, not for its work). */
  const startFollowUp = (id: string, steps: FollowUpStep[]): Promise<unknown> => {
    const info = workflowInfo();
    return startChild(approvalFollowUpWorkflow, {
      workflowId: `${info.workflowId}:${id}:${info.runId}`,
      parentClosePolicy: ParentClosePolicy.ABANDON,
      args: [{ requestId: input.requestId, refs: [...refs], steps }],
    }).catch(() => undefined);
  };
  /**
   * Chat work in an abandoned child, so a slow chat never holds this run (or a client) up. Audit
   * events are written by this run (close() waits for them): an auditor reading the store once the
   * run is closed must find every event of it, which a child finishing later did not guarantee.
   */
  const followUp = (tag: string, steps: FollowUpStep[]) => {
    if (!auditInRun) {
      background.push(startFollowUp(tag, steps));
      return;
    }
    const chat = steps.filter((s) => s.type !== 'audit');
    steps.forEach((s, i) => {
      if (s.type !== 'audit') return;
      // Not cancellable: a run cancelled through Temporal still records what happened before.
      background.push(
        CancellationScope.nonCancellable(() => lifecycleAuditActivities.audit(input.requestId, s.kind, s.detail, s.actor).catch(() => startFollowUp(`${tag}-audit-${i}`, [s]))),
      );
    });
    if (chat.length > 0) background.push(startFollowUp(tag, chat));
  };

  // Keep chat messages in step with partial progress (1/2 approvals, escalation, waiting count); best effort.
  const refreshMessages = () => {
    const v = snapshot();
    for (const r of refs) void untilDeadline(deadline).updateMessage(r, v).catch(() => undefined);
  };

  /** When the earliest waiter lease lapses (Infinity: none). */
  const nextLeaseEnd = (): number => {
    let t = Infinity;
    for (const w of waiters.values()) if (w.leaseUntil !== undefined && w.leaseUntil < t) t = w.leaseUntil;
    return t;
  };
  /** Holds whose lease lapsed are gone; when they were the last ones, a pending request is abandoned. */
  const sweepLeases = () => {
    const now = Date.now();
    let gone = 0;
    for (const [id, w] of waiters) {
      if (w.leaseUntil !== undefined && w.leaseUntil <= now) {
        waiters.delete(id);
        gone++;
      }
    }
    if (gone === 0) return;
    view.waiting = waiters.size;
    version++;
    if (view.status !== 'pending' || cancelled || abandoned) return;
    if (waiters.size === 0 && parked === 0) {
      abandoned = `the gateway holding the operation stopped renewing its lease (crashed or lost contact); nothing is waiting for a decision, so nothing would run`;
    } else refreshMessages();
  };

  /** What a claim by `holdId` gets now; with `take`, the claim happens (release recorded, or run superseded). */
  const answer = (holdId: string, sessionId: string | undefined, take: boolean): ClaimResult => {
    // Approved by an Update in this very activation, not yet announced (grant, waiters at decision): not yet.
    if (view.status === 'pending' || (view.status === 'approved' && decidedAtMs === 0)) return { kind: 'pending' };
    if (view.status !== 'approved') return { kind: 'final', reason: `request ${input.requestId} was ${view.status}${view.decisionReason ? `: ${view.decisionReason}` : ''}` };
    const released = (r: Release): ClaimResult => ({
      kind: 'released',
      release: r,
      approvers: [...approvals],
      ...(grant ? { grant: { ...grant } } : {}),
      refs: [...refs],
    });
    const prior = releases.find((r) => r.holdId === holdId);
    if (prior) return released(prior); // the same claim again (a retried Update): same answer
    const now = Date.now();
    const wasWaiting = atDecision.includes(holdId);
    const release = (viaGrant = !wasWaiting): ClaimResult => {
      const sid = sessionId ?? waiters.get(holdId)?.sessionId;
      const r: Release = { holdId, ...(sid ? { sessionId: sid } : {}), use: releases.length + 1, at: new Date(now).toISOString(), viaGrant };
      if (!take) return released(r);
      releases.push(r);
      lastReleaseAt = now;
      waiters.delete(holdId);
      view.uses = releases.length;
      view.waiting = waiters.size;
      version++;
      const of = grant?.runs ? ` of ${grant.runs}` : '';
      const detail = { holdId, sessionId: r.sessionId, use: r.use, runs: grant?.runs, until: grant?.until, viaGrant: r.viaGrant, identity: op.identity, connection: op.connection, rule: op.rule, digest: op.digest };
      const steps: FollowUpStep[] = [{ type: 'audit', kind: grant ? 'approval.grant-used' : 'approval.released', detail }];
      if (grant) steps.push({ type: 'reply', text: `Run ${r.use}${of} released by the grant (valid until ${grant.until})${r.sessionId ? ` for session ${r.sessionId}` : ''}.` });
      if (refs.length > 0) steps.push({ type: 'update', view: snapshot() }); // the message shows the uses so far
      followUp(`release-${r.use}`, steps);
      return released(r);
    };
    const newRequest = (why: string): ClaimResult => {
      // Let the last released operation report its result into this run first (briefly).
      if (results.length < releases.length && now < lastReleaseAt + SUPERSEDE_WAIT_MS) return { kind: 'wait', reason: 'the previous run of this operation has not reported its result yet' };
      if (take && !superseded) {
        superseded = why;
        version++;
      }
      return { kind: 'new-request', reason: why };
    };
    if (grant) {
      const runsLeft = grant.runs === undefined || releases.length < grant.runs;
      if (now < grantUntil && runsLeft && releases.length < MAX_RELEASES && !superseded) return release();
      const why = now >= grantUntil ? `the grant ended at ${grant.until}` : runsLeft ? `the grant reached ${MAX_RELEASES} runs` : `the grant's ${grant.runs} runs are used up`;
      if (wasWaiting) {
        if (take && waiters.delete(holdId)) {
          view.waiting = waiters.size;
          version++;
        }
        return { kind: 'final', reason: `request ${input.requestId} was approved as a grant, but ${why} before this session's turn; run the operation again to ask for a new approval` };
      }
      return newRequest(why);
    }
    if (releases.length === 0 && wasWaiting && waiters.has(holdId) && !superseded) return release();
    if (releases.length > 0 && wasWaiting) {
      if (take && waiters.delete(holdId)) {
        view.waiting = waiters.size;
        version++;
      }
      const other = releases[0].sessionId ? `session ${releases[0].sessionId}` : 'another waiting session';
      return { kind: 'final', reason: `request ${input.requestId} was approved once, and that approval released ${other}; run the operation again to ask for a new approval` };
    }
    // Nobody waiting took it, but a parked client was told to send the operation again: this is that retry.
    if (releases.length === 0 && parked > 0 && !atDecision.some((h) => waiters.has(h)) && now < decidedAtMs + PARKED_CLAIM_WINDOW_MS && !superseded) return release(false);
    if (releases.length === 0 && atDecision.some((h) => waiters.has(h)) && now < decidedAtMs + CLAIM_WINDOW_MS && !superseded) {
      return { kind: 'wait', reason: 'the approval is still to be taken by a session that was waiting for it' };
    }
    return newRequest(releases.length > 0 ? 'the approval released its one run' : 'the approval was not taken by a waiting session');
  };

  setHandler(stateQuery, snapshot);
  setHandler(progressQuery, (holdId?: string) => ({
    view: snapshot(),
    posted: refs.length > 0,
    postedTo: refs.map((r) => r.kind),
    postErrors: [...postErrors.values()],
    refs: [...refs],
    ...(typeof holdId === 'string' && holdId ? { next: answer(holdId, undefined, false).kind } : {}),
  }));
  setHandler(cancelSignal, (c) => {
    if (view.status === 'pending' && !cancelled) cancelled = { reason: c.reason || 'cancelled', by: c.by };
  });
  setHandler(joinSignal, (j) => {
    if (!j || typeof j.holdId !== 'string' || !j.holdId || waiters.has(j.holdId) || releases.some((r) => r.holdId === j.holdId)) return;
    // Every waiter had left, but the run has not closed yet: the new waiter keeps the request alive.
    if (cancelledByWaiters && view.status === 'pending') {
      cancelled = undefined;
      cancelledByWaiters = false;
    }
    if (abandoned && view.status === 'pending' && !closing) abandoned = undefined;
    const leaseMs = waiterLeases && typeof j.leaseMs === 'number' && Number.isFinite(j.leaseMs) ? Math.min(MAX_LEASE_MS, Math.max(MIN_LEASE_MS, j.leaseMs)) : undefined;
    waiters.set(j.holdId, {
      ...(typeof j.sessionId === 'string' ? { sessionId: j.sessionId } : {}),
      ...(leaseMs !== undefined ? { leaseMs, leaseUntil: Date.now() + leaseMs } : {}),
    });
    if (leaseMs !== undefined) leaseEpoch++;
    everJoined++;
    view.waiting = waiters.size;
    version++;
    if (view.status === 'pending' && everJoined > 1) refreshMessages();
  });
  setHandler(renewSignal, (r) => {
    if (!waiterLeases || !r || !Array.isArray(r.holdIds)) return;
    const now = Date.now();
    for (const id of r.holdIds) {
      const w = typeof id === 'string' ? waiters.get(id) : undefined;
      if (w?.leaseMs !== undefined) w.leaseUntil = now + w.leaseMs;
    }
  });
  setHandler(leaveSignal, (l) => {
    if (!l || !waiters.delete(l.holdId)) return;
    if (l.park === true) parked++;
    view.waiting = waiters.size;
    version++;
    if (view.status !== 'pending' || cancelled) return;
    if (waiters.size === 0 && parked === 0) {
      // Only the last waiting client cancels the request; the others keep it alive.
      const reason = (typeof l.reason === 'string' && l.reason.trim()) || 'cancelled by the client';
      cancelled = { reason: everJoined > 1 ? `${reason} (all ${everJoined} waiting clients left)` : reason, by: l.by };
      cancelledByWaiters = true;
    } else refreshMessages();
  });
  setHandler(
    claimUpdate,
    (c) => answer(c.holdId, typeof c.sessionId === 'string' ? c.sessionId : undefined, true),
    {
      validator: (c) => {
        if (!c || typeof c.holdId !== 'string' || !c.holdId) throw ApplicationFailure.create({ message: 'a claim needs a hold id', type: 'BadClaim', nonRetryable: true });
      },
    },
  );
  setHandler(resultSignal, (r) => {
    if (!r || typeof r.summary !== 'string' || results.length >= MAX_RELEASES) return;
    const rep: ReportedResult = { summary: cut(r.summary) ?? '', at: new Date().toISOString() };
    if (typeof r.sessionId === 'string') rep.sessionId = r.sessionId;
    if (typeof r.tag === 'string') rep.tag = cut(r.tag, 200);
    if (typeof r.rows === 'number' && Number.isFinite(r.rows)) rep.rows = r.rows;
    if (typeof r.error === 'string') rep.error = cut(r.error);
    if (r.grant && typeof r.grant.use === 'number') rep.grant = { use: r.grant.use, ...(typeof r.grant.runs === 'number' ? { runs: r.grant.runs } : {}), until: String(r.grant.until) };
    results.push(rep);
    version++;
    followUp(`result-${results.length}`, [
      { type: 'audit', kind: 'approval.result', detail: { ...rep, identity: op.identity, connection: op.connection, rule: op.rule } },
      { type: 'reply', text: rep.summary },
    ]);
  });
  // Decisions: the validator refuses only malformed or late Updates; everything else reaches the
  // handler, which verifies the proof of origin and resolves the approver in an activity, applies
  // the rules to that verified identity, and audits the attempt either way. Handlers run one at a
  // time (a queue), so two decisions interleaving across the activity await cannot both count
  // against the same state (quorum, distinct approvers, a reject racing an approval).
  const usedNonces = new Set<string>();
  /** Verified groups of each approval, in order (for requireEach). */
  const approverGroupsSeen: string[][] = [];
  let decisionQueue: Promise<unknown> = Promise.resolve();
  /** Set once the run is closing (outcome known): decisions still in flight no longer count. */
  let closing: ApprovalOutcome | undefined;
  const closedReason = (): string | undefined => {
    if (closing) return `request ${input.requestId} is no longer pending (${closing})`;
    if (cancelled) return `request ${input.requestId} is no longer pending (cancelled)`;
    if (view.status === 'pending' && Date.now() >= deadline) return `request ${input.requestId} is no longer pending (expired)`;
    return undefined;
  };
  const runStart = workflowInfo().runStartTime.getTime();
  const refusal = (message: string) => ApplicationFailure.create({ message, type: 'DecisionRefused', nonRetryable: true });

  const decideOne = async (d: DecideArgs): Promise<ApprovalView> => {
    const claimed = { approver: d.approver, approverGroups: Array.isArray(d.approverGroups) ? d.approverGroups : [], via: d.via, decision: d.decision, reason: d.reason, grant: d.grant };
    const refuse = async (error: string, verified?: { approver: string; groups: string[]; via: string }): Promise<never> => {
      await decisionActivities
        .audit(input.requestId, 'approval.decision-refused', { ...claimed, error, verified: verified ?? null, via: verified?.via ?? 'unverified' }, verified?.approver ?? `unverified:${String(d.approver)}`)
        .catch(() => undefined);
      throw refusal(error);
    };
    const nonce = d.proof && typeof d.proof === 'object' ? d.proof.nonce : undefined;
    if (typeof nonce === 'string' && usedNonces.has(nonce)) return refuse('replayed decision proof: this signed decision was already submitted');
    const v = await decisionActivities.verifyDecision(input.requestId, d, runStart);
    if (!v.ok) return refuse(v.error);
    // The request may have closed (expired, cancelled) while the proof was being verified.
    const closed = closedReason();
    if (closed) return refuse(closed);
    if (usedNonces.has(v.nonce)) return refuse('replayed decision proof: this signed decision was already submitted');
    usedNonces.add(v.nonce);
    const who = { approver: v.approver, groups: v.groups, via: v.via };
    // Break-glass: the requester's own approval, with a written justification, counts at once when
    // the worker's config allows that identity to break glass. Every other decision follows the rules.
    const breakGlass = input.access?.breakGlass === true && d.decision === 'approve' && v.approver.trim().toLowerCase() === op.identity.trim().toLowerCase();
    const why = breakGlass
      ? !(typeof d.reason === 'string' && d.reason.trim())
        ? 'break-glass needs a written justification'
        : ((await accessActivities.breakGlassRefusal(v.approver).catch((err: unknown) => `break-glass eligibility could not be checked: ${errorMessage(err)}`)) ?? undefined)
      : (decisionRefusal(view, approvals, { approver: v.approver, groups: v.groups, decision: d.decision, reason: d.reason }) ?? grantRefusal(view, d));
    if (why) return refuse(why, who);
    if (breakGlass && view.status === 'pending' && !closing) {
      approvals.push(v.approver);
      view.decidedBy = [...approvals];
      view.status = 'approved';
      view.decidedAt = new Date().toISOString();
      view.decisionReason = `break-glass: ${d.reason!.trim()}`;
    } else if (d.decision === 'approve') {
      approvals.push(v.approver);
      approverGroupsSeen.push(v.groups);
      // The effective grant (every approver chose one; the narrowest) is settled at the decision (grantOf).
      grantChoices.push(d.grant);
      view.decidedBy = [...approvals];
      // Quorum counts distinct approvers; when several rules combined, each rule's groups must be
      // represented too (the strictest combination, not the loosest union).
      const eachCovered = (input.requireEach ?? []).every((entry) => approverGroupsSeen.some((gs) => gs.some((g) => entry.includes(g))));
      if (approvals.length >= view.quorum && eachCovered) {
        view.status = 'approved';
        view.decidedAt = new Date().toISOString();
      }
    } else {
      rejected = { by: v.approver, reason: (d.reason ?? '').trim() };
      view.status = 'rejected';
      view.decidedBy = [...approvals, v.approver];
      view.decidedAt = new Date().toISOString();
      view.decisionReason = rejected.reason;
      upsertSearchAttributes([{ key: REJECTER, value: v.approver }]);
    }
    upsertSearchAttributes([{ key: APPROVERS, value: [...approvals] }]);
    if (view.status === 'pending') refreshMessages();
    await decisionActivities
      .audit(
        input.requestId,
        'approval.decision',
        { decision: d.decision, via: v.via, source: v.source, channelUser: v.channelUser, groups: v.groups, claimedGroups: claimed.approverGroups, reason: d.reason, grant: d.grant, status: view.status, approvers: view.decidedBy, quorum: view.quorum },
        v.approver,
      )
      .catch(() => undefined);
    return snapshot();
  };

  setHandler(
    decideUpdate,
    (d) => {
      const run = decisionQueue.then(() => decideOne(d));
      decisionQueue = run.catch(() => undefined);
      return run;
    },
    {
      validator: (d) => {
        const why = structuralRefusal(view, d) ?? closedReason();
        if (why) throw ApplicationFailure.create({ message: why, type: 'ApprovalRefused', nonRetryable: true });
      },
    },
  );

  /** The decision is known: settle the view, make it searchable, update the chat and audit it. */
  const announce = (outcome: ApprovalOutcome, reason?: string) => {
    // Decisions still being verified no longer count (closedReason); they are refused and audited.
    closing = outcome;
    const decidedAt = view.decidedAt ?? new Date().toISOString();
    if (view.status === 'pending') {
      // `failed` has no status of its own in the chat view: nobody may act on it any more.
      view.status = outcome === 'approved' ? 'approved' : outcome === 'failed' ? 'rejected' : outcome;
      view.decidedAt = decidedAt;
      view.decisionReason = reason;
    }
    decidedAtMs = Date.now();
    if (outcome === 'approved') {
      grant = grantOf(grantChoices, input.grantTtlMs ?? 0, decidedAtMs);
      if (grant) {
        grantUntil = decidedAtMs + grant.forMs;
        view.grant = { forMs: grant.forMs, ...(grant.runs !== undefined ? { runs: grant.runs } : {}) };
      }
      atDecision = [...waiters.keys()];
      view.uses = 0;
    }
    upsertSearchAttributes([
      { key: OUTCOME, value: outcome },
      { key: APPROVERS, value: [...approvals] },
      ...(rejected ? [{ key: REJECTER, value: rejected.by }] : []),
    ]);
    const steps: FollowUpStep[] = [
      {
        type: 'audit',
        kind: 'approval.outcome',
        actor: rejected?.by ?? cancelled?.by,
        detail: {
          outcome,
          approvers: [...approvals],
          rejectedBy: rejected?.by,
          reason,
          identity: op.identity,
          connection: op.connection,
          rule: op.rule,
          sessionId: op.sessionId,
          waiting: waiters.size,
          ...(grant ? { grant } : {}),
        },
      },
    ];
    if (refs.length > 0) steps.push({ type: 'update', view: snapshot() });
    followUp('outcome', steps);
  };

  const result = (outcome: ApprovalOutcome, reason?: string, closedBecause?: string): ApprovalResult => ({
    requestId: input.requestId,
    outcome,
    approvers: [...approvals],
    rejectedBy: rejected?.by,
    reason,
    decidedAt: view.decidedAt ?? new Date().toISOString(),
    refs: [...refs],
    ...(grant ? { grant: { ...grant } } : {}),
    waitersAtDecision: [...atDecision],
    releases: [...releases],
    results: [...results],
    ...(closedBecause ? { closedBecause } : {}),
  });

  /** Completes the run once every follow-up child has started (and no handler is mid-way). */
  const close = async (r: ApprovalResult): Promise<ApprovalResult> => {
    // Decisions still being verified are answered (refused as closed, and audited) before the run
    // completes: an Update must never be left without its answer.
    closing ??= r.outcome;
    await condition(allHandlersFinished);
    await Promise.all(background);
    return r;
  };

  const finish = async (outcome: ApprovalOutcome, reason?: string): Promise<ApprovalResult> => {
    announce(outcome, reason);
    return await close(result(outcome, reason));
  };

  /** Approved: serve claims and collect result reports until nothing more can be released or reported. */
  const serveApproval = async (): Promise<string> => {
    for (;;) {
      if (superseded) return `superseded by a new request (${superseded})`;
      const now = Date.now();
      const releasable = grant
        ? now < grantUntil && (grant.runs === undefined || releases.length < grant.runs) && releases.length < MAX_RELEASES
        : releases.length === 0 &&
          ((atDecision.some((h) => waiters.has(h)) && now < decidedAtMs + CLAIM_WINDOW_MS) || (parked > 0 && now < decidedAtMs + PARKED_CLAIM_WINDOW_MS));
      const reportsDue = results.length < releases.length && now < lastReleaseAt + resultWaitMs;
      if (!releasable && !reportsDue) {
        const missing = releases.length - Math.min(results.length, releases.length);
        const released = `released ${releases.length} run${releases.length === 1 ? '' : 's'}`;
        const why = grant
          ? now >= grantUntil
            ? `the grant ended at ${grant.until}`
            : `the grant's runs are used up`
          : releases.length > 0
            ? 'approved once'
            : atDecision.length > 0
              ? 'no waiting session took the approval'
              : 'nobody was waiting when it was approved';
        return `${why}; ${released}${missing > 0 ? `, ${missing} result${missing === 1 ? '' : 's'} not reported within ${formatMs(resultWaitMs)}` : ''}`;
      }
      // Also wake when a waiting claim's answer changes (end of the supersede wait), so that the
      // workflow clock the progress query reads moves on: queries do not advance workflow time.
      const supersedeAt = lastReleaseAt + SUPERSEDE_WAIT_MS;
      const wakeAt = Math.min(
        releasable ? (grant ? grantUntil : decidedAtMs + (atDecision.some((h) => waiters.has(h)) ? CLAIM_WINDOW_MS : PARKED_CLAIM_WINDOW_MS)) : Infinity,
        reportsDue ? lastReleaseAt + resultWaitMs : Infinity,
        reportsDue && supersedeAt > now ? supersedeAt : Infinity,
        // A waiting hold whose gateway is gone will never claim: do not keep the approval for it.
        releasable && !grant ? nextLeaseEnd() : Infinity,
      );
      const seen = version;
      if (!(await condition(() => version !== seen, Math.max(1, wakeAt - now)))) sweepLeases();
    }
  };

  // Access requests: once approved, the worker opens the elevation window, the thread hears of it,
  // and the run stays open until the window ends (and, for break-glass, until a review is recorded).
  let reviewed: ReviewResult | undefined;
  let windowOpen = false;
  setHandler(
    reviewUpdate,
    async (d) => {
      const v = await decisionActivities.verifyDecision(reviewProofId(input.requestId), d, runStart);
      const refuseReview = async (error: string): Promise<never> => {
        await decisionActivities.audit(input.requestId, 'elevation.review-refused', { error, reviewer: v.ok ? v.approver : `unverified:${String(d.approver)}` }).catch(() => undefined);
        throw refusal(error);
      };
      if (!v.ok) return refuseReview(v.error);
      if (reviewed) return refuseReview(`request ${input.requestId} was already reviewed by ${reviewed.reviewedBy}`);
      const reviewer = v.approver.trim().toLowerCase();
      if (reviewer === op.identity.trim().toLowerCase() || (op.owner && reviewer === op.owner.trim().toLowerCase())) return refuseReview(`${v.approver} broke the glass (or owns the identity that did) and cannot review it`);
      if (!v.groups.some((g) => view.approverGroups.includes(g))) return refuseReview(`${v.approver} is not in an approver group for this request (needs one of: ${view.approverGroups.join(', ')})`);
      const notes = typeof d.reason === 'string' ? d.reason.trim() : '';
      if (!notes) return refuseReview('a review needs notes');
      reviewed = { requestId: input.requestId, reviewedBy: v.approver, notes: cut(notes) ?? '', at: new Date().toISOString() };
      followUp('reviewed', [
        { type: 'audit', kind: 'elevation.reviewed', actor: v.approver, detail: { notes: reviewed.notes, via: v.via, identity: op.identity, connection: op.connection } },
        { type: 'reply', text: `Post-incident review recorded by ${v.approver}: ${reviewed.notes}` },
      ]);
      return reviewed;
    },
    {
      validator: (d) => {
        if (!input.access?.breakGlass) throw ApplicationFailure.create({ message: `request ${input.requestId} is not a break-glass elevation; only those take a post-incident review`, type: 'ApprovalRefused', nonRetryable: true });
        if (!d || typeof d !== 'object' || typeof d.approver !== 'string') throw ApplicationFailure.create({ message: 'a review must name its reviewer', type: 'ApprovalRefused', nonRetryable: true });
        if (!windowOpen) throw ApplicationFailure.create({ message: `request ${input.requestId} has no break-glass window to review yet`, type: 'ApprovalRefused', nonRetryable: true });
        if (reviewed) throw ApplicationFailure.create({ message: `request ${input.requestId} was already reviewed by ${reviewed.reviewedBy}`, type: 'ApprovalRefused', nonRetryable: true });
      },
    },
  );

  const serveAccess = async (a: NonNullable<ApprovalInput['access']>): Promise<string> => {
    const bg = a.breakGlass === true;
    const opened = await accessActivities
      .activateElevation(input.requestId, { identity: op.identity, ...(op.owner ? { owner: op.owner } : {}), role: a.role, connection: op.connection, forMs: a.forMs, reason: op.reason, approvers: [...approvals], breakGlass: bg })
      .catch((err: unknown) => ({ ok: false as const, error: errorMessage(err) }));
    if (!opened.ok) {
      followUp('access-refused', [{ type: 'reply', text: `Approved, but no elevation window was opened: ${opened.error}` }]);
      return `approved, but no elevation window was opened: ${opened.error}`;
    }
    windowOpen = true;
    // Break-glass is never silent: the request is in the channel (posted now if the self-approval
    // overtook the post) and the approver groups are mentioned at once.
    if (bg && refs.length === 0) {
      const kinds = input.channels && input.channels.length > 0 ? input.channels : await quickActivities.listChannels().catch(() => []);
      for (const kind of kinds) {
        const r = await followUpActivities.postRequest(kind, snapshot()).catch(() => undefined);
        if (r) refs.push(r);
      }
    }
    const mention = [...view.approverGroups, ...(a.mention ?? [])];
    const started = bg
      ? `BREAK-GLASS: ${op.identity} self-approved role ${a.role} on ${op.connection} until ${opened.until} (elevation ${input.requestId}). Justification: ${op.reason}. A post-incident review is required: \`airlock approvals review ${input.requestId} --as NAME --notes "..."\``
      : `Access granted: ${op.identity} has role ${a.role} on ${op.connection} until ${opened.until} (elevation ${input.requestId}); revoke with \`airlock request revoke ${input.requestId}\``;
    followUp('access-started', [{ type: 'reply', text: started }]);
    const notify = () => {
      for (const r of refs) void followUpActivities.escalate(r, snapshot(), { mention }).catch(() => undefined);
    };
    if (bg) notify();
    const windowEnds = (async () => {
      await condition(() => false, Math.max(1, Date.parse(opened.until) - Date.now()));
      const ended = await accessActivities.elevationEnded(input.requestId).catch(() => null);
      const how = ended?.how === 'revoked' ? `revoked${ended.by ? ` by ${ended.by}` : ''}${ended.reason ? `: ${ended.reason}` : ''}` : 'expired';
      followUp('access-ended', [{ type: 'reply', text: `Elevation ${input.requestId} (role ${a.role} on ${op.connection}) ended at ${opened.until} (${how}).` }]);
      return how;
    })();
    const reviewDone = (async () => {
      if (!bg) return undefined;
      const every = Math.max(1000, a.reviewEscalationMs ?? 4 * 3_600_000);
      for (;;) {
        if (await condition(() => reviewed !== undefined, every)) return reviewed;
        // Nobody has reviewed it yet: remind (and audit) on every tick until someone does.
        view.escalated = true;
        followUp(`review-escalated-${Date.now()}`, [
          { type: 'audit', kind: 'elevation.review-escalated', detail: { identity: op.identity, connection: op.connection, mention } },
          { type: 'reply', text: `Break-glass elevation ${input.requestId} by ${op.identity} still has no post-incident review.` },
        ]);
        notify();
      }
    })();
    const [how, review] = await Promise.all([windowEnds, reviewDone]);
    await condition(allHandlersFinished);
    return `elevation window ${how}${review ? `; reviewed by ${review.reviewedBy}` : ''}`;
  };

  try {
    // 1. Post everywhere, in parallel; visible once any channel has it.
    const kinds = input.channels && input.channels.length > 0 ? input.channels : await quickActivities.listChannels();
    if (kinds.length === 0) return await finish('failed', 'no approval channel is configured on the worker (Slack, Teams or the local channel)');
    let settled = 0;
    if (!decided()) {
      for (const kind of kinds) {
        untilDeadline(deadline)
          .postRequest(kind, snapshot())
          .then(
            (r) => {
              refs.push(r);
              postedAt ??= Date.now();
              postErrors.delete(kind);
              // Posted after a decision or a partial approval: bring the message up to date.
              if (view.status !== 'pending' || view.decidedBy.length > 0 || cancelled) void followUpActivities.updateMessage(r, snapshot()).catch(() => undefined);
            },
            (err: unknown) => {
              postErrors.set(kind, errorMessage(err));
            },
          )
          .finally(() => settled++);
      }
      await condition(() => refs.length > 0 || settled === kinds.length || decided(), Math.max(1, deadline - Date.now()));
    }
    if (!decided() && refs.length === 0) {
      const why = [...postErrors.values()].join('; ') || 'no channel answered in time';
      return await finish('failed', `could not post the approval request by the deadline (${why}); failing closed`);
    }

    // 2. Wait for a decision, escalating at each step, until the final deadline.
    const steps = [...input.escalation].sort((a, b) => a.afterMs - b.afterMs);
    let next = 0;
    const base = postedAt ?? startedAt;
    while (!decided()) {
      const now = Date.now();
      if (now >= deadline) break;
      const step = steps[next];
      const stepAt = step ? base + step.afterMs : Infinity;
      if (step && stepAt >= deadline) next = steps.length; // would fire at or after expiry: pointless
      const wakeAt = Math.min(step && stepAt < deadline ? stepAt : Infinity, deadline, nextLeaseEnd());
      // Runs without leases (older histories) never bump leaseEpoch: the same commands as before.
      const epoch = leaseEpoch;
      if ((await condition(() => decided() || leaseEpoch !== epoch, Math.max(1, wakeAt - now))) && decided()) break;
      sweepLeases();
      if (abandoned) break;
      if (step && stepAt < deadline && Date.now() >= stepAt) {
        next++;
        view.escalated = true;
        const v = snapshot();
        const notice = { mention: step.mention, channel: step.channel };
        for (const r of refs) void untilDeadline(deadline).escalate(r, v, notice).catch(() => undefined);
      }
    }

    if (abandoned && !cancelled && view.status === 'pending') return await finish('abandoned', abandoned);
    if (cancelled && view.status === 'pending') {
      if (!cancelledByWaiters) return await finish('cancelled', cancelled.reason);
      announce('cancelled', cancelled.reason);
      return await close(result('cancelled', cancelled.reason, CLOSED_BY_WAITERS));
    }
    if (view.status === 'approved') {
      announce('approved');
      if (input.access) return await close(result('approved', undefined, await serveAccess(input.access)));
      const closedBecause = await serveApproval();
      await condition(allHandlersFinished);
      followUp('closed', [
        {
          type: 'audit',
          kind: 'approval.closed',
          detail: { closedBecause, releases: releases.length, results: results.length, ...(grant ? { grant } : {}), identity: op.identity, connection: op.connection, rule: op.rule },
        },
      ]);
      return await close(result('approved', undefined, closedBecause));
    }
    if (view.status === 'rejected' && rejected) return await finish('rejected', rejected.reason);
    const progress = approvals.length > 0 ? ` (${approvals.length}/${view.quorum} approvals: ${approvals.join(', ')})` : '';
    const esc = view.escalated ? ', after escalation' : '';
    return await finish('expired', `no decision within ${formatMs(input.timeoutMs)}${esc}${progress}`);
  } catch (err) {
    if (!isCancellation(err)) throw err;
    // Cancelled through Temporal (e.g. `temporal workflow cancel`): still close the request cleanly.
    if (view.status === 'approved' && decidedAtMs > 0) {
      superseded ??= 'the run was cancelled through Temporal';
      return await CancellationScope.nonCancellable(() => close(result('approved', undefined, 'cancelled through Temporal after the approval')));
    }
    cancelled ??= { reason: 'the request was cancelled' };
    return await CancellationScope.nonCancellable(() => finish('cancelled', cancelled!.reason));
  }
}

/** Chat and audit work after an outcome (and the gateway's later thread posts), each retried. */
export async function approvalFollowUpWorkflow(input: FollowUpInput): Promise<FollowUpResult> {
  const failures: string[] = [];
  for (const step of input.steps) {
    if (step.type === 'audit') {
      await followUpActivities.audit(input.requestId, step.kind, step.detail, step.actor).catch((err: unknown) => {
        failures.push(`audit: ${errorMessage(err)}`);
      });
      continue;
    }
    await Promise.all(
      input.refs.map(async (r) => {
        try {
          if (step.type === 'update') await followUpActivities.updateMessage(r, step.view);
          else if (step.type === 'reply') await followUpActivities.reply(r, input.requestId, step.text);
          else await followUpActivities.attachLog(r, input.requestId, step.filename, step.content);
        } catch (err) {
          failures.push(`${step.type} via ${r.kind}: ${errorMessage(err)}`);
        }
      }),
    );
  }
  if (failures.length > 0) await followUpActivities.audit(input.requestId, 'approval.chat-failed', { failures }).catch(() => undefined);
  return { failures };
}
