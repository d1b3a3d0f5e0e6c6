// The approval workflow's contract: input, result, the `decide` Update, queries and signals.
// Shared by workflow code (sandboxed, deterministic), the worker, the gateway and the CLIs, so it
// imports nothing but Temporal's definition helpers and types.
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { ApprovalView, DecisionArgs, EscalationNotice, MessageRef } from '../bots/channel.ts';

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
  text: string;
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
}

export type DecideArgs = DecisionArgs;

export interface CancelArgs {
  reason: string;
  by?: string;
}

/** For the gateway: whether people can see the request yet. */
export interface ApprovalProgress {
  view: ApprovalView;
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
export const progressQuery = defineQuery<ApprovalProgress>('progress');
export const cancelSignal = defineSignal<[CancelArgs]>('cancel');
