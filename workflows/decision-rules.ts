// Who may decide an approval request: the rules the workflow's `decide` Update enforces. Pure and
// deterministic (it runs inside workflow code). The structural checks run in the Update's
// validator; the rules about people run in its handler, on the identity and groups the worker
// verified and resolved from its own configuration (never on what the caller claimed).
import type { ApprovalView } from '../bots/channel.ts';
import type { DecideArgs } from './definitions.ts';

function same(a: string, b: string): boolean {
  return a.trim().toLowerCase() === b.trim().toLowerCase();
}

/** A decision after verification: who it is from, by the worker's own directory. */
export interface VerifiedDecision {
  approver: string;
  groups: readonly string[];
  decision: 'approve' | 'reject';
  reason?: string;
}

/**
 * Cheap checks for the Update validator: a shape the handler can work with, and a request still
 * open. Everything else (proof, identity, groups, quorum) is refused in the handler, where the
 * refusal can be audited.
 */
export function structuralRefusal(view: ApprovalView, d: DecideArgs): string | undefined {
  if (!d || typeof d !== 'object') return 'a decision must be an object';
  if (d.decision !== 'approve' && d.decision !== 'reject') return `decision must be approve or reject, not ${String(d.decision)}`;
  if (typeof d.approver !== 'string') return 'an approver name is required';
  if (d.reason !== undefined && typeof d.reason !== 'string') return 'the reason must be text';
  return notPending(view);
}

export function notPending(view: ApprovalView): string | undefined {
  if (view.status === 'pending') return undefined;
  const by = view.decidedBy.length > 0 ? ` by ${view.decidedBy.join(', ')}` : '';
  return `request ${view.requestId} is no longer pending (${view.status}${by})`;
}

/** Why a verified decision is refused, or undefined when it counts. `approvals`: distinct approvers so far. */
export function decisionRefusal(view: ApprovalView, approvals: readonly string[], d: VerifiedDecision): string | undefined {
  const who = d.approver.trim();
  if (!who) return 'an approver name is required';
  const closed = notPending(view);
  if (closed) return closed;
  if (same(who, view.identity)) return `${who} requested this operation and cannot ${d.decision} it (no self-approval)`;
  if (view.owner && same(who, view.owner)) return `${who} owns the requesting agent ${view.identity} and cannot ${d.decision} its requests`;
  if (!d.groups.some((g) => view.approverGroups.includes(g))) {
    return `${who} is not in an approver group for this request (needs one of: ${view.approverGroups.join(', ')}; ${who} is in: ${d.groups.join(', ') || 'no groups'})`;
  }
  if (d.decision === 'approve' && approvals.some((a) => same(a, who))) {
    return `${who} already approved; quorum needs ${view.quorum} distinct approvers (${approvals.length}/${view.quorum} so far)`;
  }
  if (d.decision === 'reject' && !(typeof d.reason === 'string' && d.reason.trim())) return 'a rejection needs a reason';
  return undefined;
}

/** Why a grant choice is refused: only on approvals, positive, within the rule's grantTtl. */
export function grantRefusal(view: ApprovalView, d: DecideArgs): string | undefined {
  const g = d.grant;
  if (g === undefined || g === null) return undefined;
  if (d.decision !== 'approve') return 'a grant can only come with an approval';
  if (typeof g !== 'object' || typeof g.forMs !== 'number' || !Number.isInteger(g.forMs) || g.forMs <= 0) return 'a grant needs a positive duration';
  if (g.runs !== undefined && (typeof g.runs !== 'number' || !Number.isInteger(g.runs) || g.runs <= 0)) return 'a grant run count must be a positive integer';
  const ttl = view.grantTtlMs ?? 0;
  if (ttl <= 0) return 'this rule allows approve-once only (no grantTtl)';
  if (g.forMs > ttl) return `a grant may last at most ${ttl} ms (the rule's grantTtl), not ${g.forMs} ms`;
  return undefined;
}
