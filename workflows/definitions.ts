// The approval workflow's contract: input, result, the `decide` Update, queries and signals.
// Shared by workflow code (sandboxed, deterministic), the worker, the gateway and the CLIs, so it
// imports nothing but Temporal's definition helpers and types.
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ApprovalPreview, ApprovalView, DecisionArgs, EscalationNotice, GrantChoice, MessageRef } from '../bots/channel.ts';

export const APPROVAL_WORKFLOW = 'approvalWorkflow';
export const FOLLOW_UP_WORKFLOW = 'approvalFollowUpWorkflow';

/** What is being asked about; a copy of the operation, trimmed to what people need to decide. */
export interface OperationSummary {
  protocol: string;
  connection: string;
  identity: string;
  /** Human owner of the requesting agent: may not approve its requests. */
  owner?: string;
  groups: string[];
  /** What the approver reads (OperationBinding.text). */
  text: string;
  /** Bound parameter values as shown (PII detectors applied). */
  parameters?: string[];
  /** Further lines for the approver (body summary, tables, open transaction). */
  details?: string[];
  /** Keyed digest of the exact operation: the request id derives from it, the audit keeps it. */
  digest?: string;
  /** The held write's effect (review.preview), shown with the request. */
  preview?: ApprovalPreview;
  kind: string;
  tables: string[];
  rule: string;
  reason: string;
  /** Gateway session that holds the operation, for the audit trail. */
  sessionId?: string;
}

export interface EscalationStepInput {
  /** Delay from the request being posted. */
  afterMs: number;
  mention: string[];
  channel?: string;
}

export interface ApprovalInput {
  requestId: string;
  operation: OperationSummary;
  approverGroups: string[];
  quorum: number;
  timeoutMs: number;
  escalation: EscalationStepInput[];
  /** Channel kinds to post to ('slack', 'teams', 'local'); every channel the worker has when omitted. */
  channels?: string[];
  /** The rule's own Slack channel (`review.channel`), instead of `slack.channel`. */
  channel?: string;
  /** Longest reusable grant an approver may choose (the rule's grantTtl); 0/absent: approve once only. */
  grantTtlMs?: number;
  /** How long an approved run stays open for the held operations' result reports. Default 15 min. */
  resultWaitMs?: number;
  /**
   * Several review rules matched: one entry per rule, its approver groups. Approval needs, for
   * every entry, an approver (by the worker's own group resolution) in one of its groups.
   */
  requireEach?: string[][];
  /** Request kind `access` (gateway/elevation/): time-boxed elevated access, not an operation. */
  access?: AccessRequest;
}

/** What an access request asks for; the worker re-checks all of it against its own config when opening the window. */
export interface AccessRequest {
  role: string;
  /** Requested window length; capped by the role's (or breakGlass') maxDuration on the worker. */
  forMs: number;
  /** Self-approved by the requester at once (config `breakGlass`); the run stays open until a post-incident review. */
  breakGlass?: boolean;
  /** Break-glass: remind the approver groups this often until the review is recorded. */
  reviewEscalationMs?: number;
  /** Break-glass: also mentioned at the start and at every reminder. */
  mention?: string[];
}

/** A recorded post-incident review of a break-glass elevation (Update `review`). */
export interface ReviewResult {
  requestId: string;
  reviewedBy: string;
  notes: string;
  /** ISO time. */
  at: string;
}

/** A posted message: which channel kind holds it, and that channel's reference to it. */
export interface ChannelRef {
  kind: string;
  ref: MessageRef;
}

export type ApprovalOutcome = 'approved' | 'rejected' | 'expired' | 'cancelled' | 'failed';

export interface ApprovalResult {
  requestId: string;
  outcome: ApprovalOutcome;
  /** Distinct approvers (for rejected/expired: those who had approved so far). */
  approvers: string[];
  rejectedBy?: string;
  /** Rejection reason, expiry/cancel/failure explanation. */
  reason?: string;
  /** ISO timestamp. */
  decidedAt: string;
  /** Where the request was posted, so the gateway can reply in the thread later. */
  refs: ChannelRef[];
  /** Approved only: the reusable grant the approvers chose (absent: approve once). */
  grant?: EffectiveGrant;
  /** Holds (gateway waiters) that were waiting when the request was decided. */
  waitersAtDecision?: string[];
  /** Held operations this approval released, in order (use 1, 2, ...). */
  releases?: Release[];
  /** What the released operations did, as the gateways reported it. */
  results?: ReportedResult[];
  /** Why an approved run closed: grant ended, released and reported, superseded by a new request. */
  closedBecause?: string;
}

/** A grant as it applies: the approvers' choice capped by the rule's grantTtl, with its end time. */
export interface EffectiveGrant extends GrantChoice {
  /** ISO time the grant ends. */
  until: string;
}

/** One waiting gateway session joining a request (signal `join`). */
export interface JoinArgs {
  /** Unique per hold (session id + random): the same session holding the same operation twice is two holds. */
  holdId: string;
  sessionId?: string;
}

/** A waiting session leaving (signal `leave`): the request is cancelled only when the last one leaves. */
export interface LeaveArgs {
  holdId: string;
  reason: string;
  by?: string;
  /** The client was told to send the operation again: keep the request, and keep an approve-once approval for that retry. */
  park?: boolean;
}

export interface ClaimArgs {
  holdId: string;
  sessionId?: string;
}

/** One held operation released by an approval. */
export interface Release {
  holdId: string;
  sessionId?: string;
  /** 1-based. */
  use: number;
  /** ISO time. */
  at: string;
  /** Released by the grant to a hold that was not waiting when the approval was given. */
  viaGrant: boolean;
}

/**
 * The answer to a `claim`, decided atomically by the workflow:
 * - released: run the operation (use n; `grant` when the approval is a reusable grant);
 * - pending: not decided yet; wait;
 * - wait: decided, but ask again shortly (the approve-once run is still to be claimed by a session
 *   that was waiting, or the last release's result is still to be reported);
 * - final: this hold was waiting but the approval does not cover it (approve-once released another
 *   session, or the grant ran out); tell the client why;
 * - new-request: this approval cannot release this hold; the run closes (superseded) so a fresh
 *   run under the same id asks people again.
 */
export type ClaimResult =
  | { kind: 'released'; release: Release; approvers: string[]; grant?: EffectiveGrant & { runs?: number }; refs: ChannelRef[] }
  | { kind: 'pending' }
  | { kind: 'wait'; reason: string }
  | { kind: 'final'; reason: string }
  | { kind: 'new-request'; reason: string };

/** The gateway's report of what a released operation did (signal `result`). */
export interface ResultReport {
  sessionId?: string;
  summary: string;
  tag?: string;
  rows?: number;
  error?: string;
  /** The grant use that released it, when a grant did. */
  grant?: { use: number; runs?: number; until: string };
}

export interface ReportedResult extends ResultReport {
  /** ISO time the report arrived. */
  at: string;
}

export type DecideArgs = DecisionArgs;

export interface CancelArgs {
  reason: string;
  by?: string;
}

/** For the gateway: whether people can see the request yet. */
export interface ApprovalProgress {
  view: ApprovalView;
  /** For the hold asked about: what a `claim` would answer now (without claiming). */
  next?: ClaimResult['kind'];
  /** Where the request was posted. */
  refs?: ChannelRef[];
  posted: boolean;
  /** Channel kinds the request is visible in. */
  postedTo: string[];
  /** Why posting failed so far (the last error per channel), while it is being retried. */
  postErrors: string[];
}

export type FollowUpStep =
  | { type: 'update'; view: ApprovalView }
  | { type: 'reply'; text: string }
  | { type: 'attachLog'; filename: string; content: string }
  | { type: 'audit'; kind: string; actor?: string; detail: Record<string, unknown> };

export interface FollowUpInput {
  requestId: string;
  refs: ChannelRef[];
  steps: FollowUpStep[];
}

export interface FollowUpResult {
  /** Steps that failed after all retries, as `kind: error`. */
  failures: string[];
}

export type { ApprovalView, EscalationNotice, MessageRef };

export const decideUpdate = defineUpdate<ApprovalView, [DecideArgs]>('decide');
export const stateQuery = defineQuery<ApprovalView>('state');
/** Optional argument: a hold id, to learn what a claim by that hold would get. */
export const progressQuery = defineQuery<ApprovalProgress, [string?]>('progress');
/** Operator/Temporal-side cancel: cancels a pending request whoever waits on it. */
export const cancelSignal = defineSignal<[CancelArgs]>('cancel');
export const joinSignal = defineSignal<[JoinArgs]>('join');
export const leaveSignal = defineSignal<[LeaveArgs]>('leave');
export const resultSignal = defineSignal<[ResultReport]>('result');
/** Takes one release of an approval, atomically (two gateways cannot both take the last use). */
export const claimUpdate = defineUpdate<ClaimResult, [ClaimArgs]>('claim');
/** Records the post-incident review of a break-glass elevation: a signed decision (`approve`, notes as reason) over `<requestId>:review`. */
export const reviewUpdate = defineUpdate<ReviewResult, [DecideArgs]>('review');
/** The request id a review's proof is signed over, so a decision's proof can never count as a review. */
export function reviewProofId(requestId: string): string {
  return `${requestId}:review`;
}
