// Who may decide an approval request: the rules the workflow's Update validator enforces. Pure
// and deterministic (it runs inside workflow code), and shared with anything that must give the
// same answers.
import type { ApprovalView } from '../bots/channel.ts';
import type { DecideArgs } from './definitions.ts';

function same(a: string, b: string): boolean {
  return a.trim().toLowerCase() === b.trim().toLowerCase();
}

/** Why a decision is refused, or undefined when it is acceptable. `approvals`: distinct approvers so far. */
export function decisionRefusal(view: ApprovalView, approvals: readonly string[], d: DecideArgs): string | undefined {
  const who = typeof d.approver === 'string' ? d.approver.trim() : '';
  if (!who) return 'an approver name is required';
  if (view.status !== 'pending') {
    const by = view.decidedBy.length > 0 ? ` by ${view.decidedBy.join(', ')}` : '';
    return `request ${view.requestId} is no longer pending (${view.status}${by})`;
  }
  if (d.decision !== 'approve' && d.decision !== 'reject') return `decision must be approve or reject, not ${String(d.decision)}`;
  if (same(who, view.identity)) return `${who} requested this operation and cannot ${d.decision} it (no self-approval)`;
  if (view.owner && same(who, view.owner)) return `${who} owns the requesting agent ${view.identity} and cannot ${d.decision} its requests`;
  const groups = Array.isArray(d.approverGroups) ? d.approverGroups : [];
  if (!groups.some((g) => view.approverGroups.includes(g))) {
    return `${who} is not in an approver group for this request (needs one of: ${view.approverGroups.join(', ')}; ${who} is in: ${groups.join(', ') || 'no groups'})`;
  }
  if (d.decision === 'approve' && approvals.some((a) => same(a, who))) {
    return `${who} already approved; quorum needs ${view.quorum} distinct approvers (${approvals.length}/${view.quorum} so far)`;
  }
  if (d.decision === 'reject' && !(typeof d.reason === 'string' && d.reason.trim())) return 'a rejection needs a reason';
  return undefined;
}
