// The approval workflow (deterministic workflow code: no I/O, no Node APIs; chat and audit happen
// in activities). One run per held operation; the workflow id is derived from the operation (see
// gateway/approvals/temporal-approver.ts), so a restarted gateway re-attaches to the same run.
//
// Life of a run: post the request to every channel (retried until the final deadline; nothing
// posted by then = `failed`, which the gateway treats as a rejection), wait for decisions
// (validated Updates), escalate at each step, expire at the deadline. The run completes as soon
// as the outcome is known, so the gateway learns it from the workflow result with no polling.
// The chat follow-up (message update, audit of the outcome) runs in an abandoned child workflow,
// so a slow or failing chat never delays the held client. Later thread posts (the held
// operation's result, the session log, possibly hours later) use the same follow-up workflow,
// started by the gateway with the message refs from the result.
import {
  ApplicationFailure,
  CancellationScope,
  allHandlersFinished,
  ParentClosePolicy,
  condition,
  isCancellation,
  proxyActivities,
  setHandler,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
  type ActivityOptions,
} from '@temporalio/workflow';
import type { ApprovalActivities } from './activities.ts';
import {
  cancelSignal,
  decideUpdate,
  progressQuery,
  stateQuery,
  type ApprovalInput,
  type ApprovalOutcome,
  type ApprovalResult,
  type ApprovalView,
  type CancelArgs,
  type ChannelRef,
  type DecideArgs,
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
/** Decision verification and its audit: someone is waiting on the Update, so give up within a minute. */
const decisionActivities = proxyActivities<ApprovalActivities>({ startToCloseTimeout: '10s', scheduleToCloseTimeout: '60s', retry: RETRY });

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

export async function approvalWorkflow(input: ApprovalInput): Promise<ApprovalResult> {
  const startedAt = Date.now();
  const deadline = startedAt + input.timeoutMs;
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
  };
  const approvals: string[] = [];
  const refs: ChannelRef[] = [];
  const postErrors = new Map<string, string>();
  let postedAt: number | undefined;
  let rejected: { by: string; reason: string } | undefined;
  let cancelled: CancelArgs | undefined;
  const snapshot = (): ApprovalView => ({ ...view, decidedBy: [...view.decidedBy], approverGroups: [...view.approverGroups] });
  const decided = () => view.status !== 'pending' || cancelled !== undefined;

  // Keep chat messages in step with partial progress (1/2 approvals, escalation); best effort.
  const refreshMessages = () => {
    const v = snapshot();
    for (const r of refs) void untilDeadline(deadline).updateMessage(r, v).catch(() => undefined);
  };

  setHandler(stateQuery, snapshot);
  setHandler(progressQuery, () => ({ view: snapshot(), posted: refs.length > 0, postedTo: refs.map((r) => r.kind), postErrors: [...postErrors.values()] }));
  setHandler(cancelSignal, (c) => {
    if (view.status === 'pending' && !cancelled) cancelled = { reason: c.reason || 'cancelled', by: c.by };
  });
  // Decisions: the validator refuses only malformed or late Updates; everything else reaches the
  // handler, which verifies the proof of origin and resolves the approver in an activity, applies
  // the rules to that verified identity, and audits the attempt either way. Handlers run one at a
  // time (a queue), so two decisions interleaving across the activity await cannot both count
  // against the same state (quorum, distinct approvers, a reject racing an approval).
  const usedNonces = new Set<string>();
  const grants: GrantChoice[] = [];
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
    const why = decisionRefusal(view, approvals, { approver: v.approver, groups: v.groups, decision: d.decision, reason: d.reason }) ?? grantRefusal(view, d);
    if (why) return refuse(why, who);
    if (d.decision === 'approve') {
      approvals.push(v.approver);
      if (d.grant) grants.push(d.grant);
      view.decidedBy = [...approvals];
      if (approvals.length >= view.quorum) {
        // Reuse only when every approver chose it, and then the narrowest of their choices.
        if (grants.length === approvals.length && grants.length > 0) {
          const runs = grants.map((g) => g.runs).filter((r): r is number => r !== undefined);
          view.grant = { forMs: Math.min(...grants.map((g) => g.forMs)), ...(runs.length > 0 ? { runs: Math.min(...runs) } : {}) };
        }
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

  const finish = async (outcome: ApprovalOutcome, reason?: string): Promise<ApprovalResult> => {
    // Decisions still being verified are answered (refused, and audited) before the run closes.
    closing = outcome;
    await condition(allHandlersFinished);
    const decidedAt = view.decidedAt ?? new Date().toISOString();
    if (view.status === 'pending') {
      // `failed` has no status of its own in the chat view: nobody may act on it any more.
      view.status = outcome === 'approved' ? 'approved' : outcome === 'failed' ? 'rejected' : outcome;
      view.decidedAt = decidedAt;
      view.decisionReason = reason;
    }
    const result: ApprovalResult = {
      requestId: input.requestId,
      outcome,
      approvers: [...approvals],
      rejectedBy: rejected?.by,
      reason,
      decidedAt,
      refs: [...refs],
    };
    upsertSearchAttributes([
      { key: OUTCOME, value: outcome },
      { key: APPROVERS, value: [...approvals] },
    ]);
    const steps: FollowUpStep[] = [
      {
        type: 'audit',
        kind: 'approval.outcome',
        actor: rejected?.by ?? cancelled?.by,
        detail: { outcome, approvers: result.approvers, rejectedBy: result.rejectedBy, reason, identity: op.identity, connection: op.connection, rule: op.rule, sessionId: op.sessionId },
      },
    ];
    if (refs.length > 0) steps.push({ type: 'update', view: snapshot() });
    const info = workflowInfo();
    await startChild(approvalFollowUpWorkflow, {
      workflowId: `${info.workflowId}:outcome:${info.runId}`,
      parentClosePolicy: ParentClosePolicy.ABANDON,
      args: [{ requestId: input.requestId, refs: [...refs], steps }],
    });
    return result;
  };

  try {
    // 1. Post everywhere, in parallel; visible once any channel has it.
    const kinds = input.channels && input.channels.length > 0 ? input.channels : await quickActivities.listChannels();
    if (kinds.length === 0) return await finish('failed', 'no approval channel is configured on the worker (Slack, Teams or the local channel)');
    let settled = 0;
    for (const kind of kinds) {
      untilDeadline(deadline)
        .postRequest(kind, snapshot())
        .then(
          (r) => {
            refs.push(r);
            postedAt ??= Date.now();
            postErrors.delete(kind);
            // Posted after a decision or a partial approval: bring the message up to date.
            if (view.status !== 'pending' || view.decidedBy.length > 0) void followUpActivities.updateMessage(r, snapshot()).catch(() => undefined);
          },
          (err: unknown) => {
            postErrors.set(kind, errorMessage(err));
          },
        )
        .finally(() => settled++);
    }
    await condition(() => refs.length > 0 || settled === kinds.length || decided(), Math.max(1, deadline - Date.now()));
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
      const wakeAt = Math.min(step && stepAt < deadline ? stepAt : Infinity, deadline);
      if (await condition(decided, Math.max(1, wakeAt - now))) break;
      if (step && stepAt < deadline && Date.now() >= stepAt) {
        next++;
        view.escalated = true;
        const v = snapshot();
        const notice = { mention: step.mention, channel: step.channel };
        for (const r of refs) void untilDeadline(deadline).escalate(r, v, notice).catch(() => undefined);
      }
    }

    if (cancelled && view.status === 'pending') return await finish('cancelled', cancelled.reason);
    if (view.status === 'approved') return await finish('approved');
    if (view.status === 'rejected' && rejected) return await finish('rejected', rejected.reason);
    const progress = approvals.length > 0 ? ` (${approvals.length}/${view.quorum} approvals: ${approvals.join(', ')})` : '';
    const esc = view.escalated ? ', after escalation' : '';
    return await finish('expired', `no decision within ${formatMs(input.timeoutMs)}${esc}${progress}`);
  } catch (err) {
    if (!isCancellation(err)) throw err;
    // Cancelled through Temporal (e.g. `temporal workflow cancel`): still close the request cleanly.
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
