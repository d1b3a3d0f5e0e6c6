// In-memory approval requests for the chat apps' tests: the same refusal rules as the workflow's
// Update validator (workflows/decision-rules.ts), without a Temporal server, so the Slack and
// Teams sides are exercised against the answers they get in production.
import type { ApprovalView, DecisionRequest, DecisionResult } from '../../bots/channel.ts';
import { decisionRefusal } from '../../workflows/decision-rules.ts';

export class MemoryApprovals {
  readonly requests = new Map<string, ApprovalView>();
  readonly attempts: DecisionRequest[] = [];
  failWith?: Error;

  add(over: Partial<ApprovalView> & { requestId: string; identity: string }): ApprovalView {
    const v: ApprovalView = {
      protocol: 'postgres',
      connection: 'prod-db',
      text: 'DELETE FROM invoices WHERE id = 7',
      rule: 'review-deletes',
      reason: 'deletes on production are reviewed',
      deadline: new Date(Date.now() + 15 * 60_000).toISOString(),
      approverGroups: ['dba'],
      quorum: 1,
      status: 'pending',
      decidedBy: [],
      escalated: false,
      ...over,
    };
    this.requests.set(v.requestId, v);
    return v;
  }

  /** The current state, as the workflow's `state` query answers. */
  lookup = async (requestId: string): Promise<ApprovalView | undefined> => {
    const v = this.requests.get(requestId);
    return v && structuredClone(v);
  };

  decide = async (d: DecisionRequest): Promise<DecisionResult> => {
    this.attempts.push(d);
    if (this.failWith) throw this.failWith;
    const v = this.requests.get(d.requestId);
    if (!v) return { ok: false, error: `no approval request ${d.requestId}` };
    const why = decisionRefusal(v, v.status === 'pending' ? v.decidedBy : [], { ...d, groups: d.approverGroups });
    if (why) return { ok: false, error: why };
    if (d.decision === 'reject') {
      Object.assign(v, { status: 'rejected', decidedBy: [...v.decidedBy, d.approver], decidedAt: new Date().toISOString(), decisionReason: d.reason });
    } else {
      v.decidedBy = [...v.decidedBy, d.approver];
      if (v.decidedBy.length >= v.quorum) Object.assign(v, { status: 'approved', decidedAt: new Date().toISOString() });
    }
    return { ok: true, view: structuredClone(v) };
  };
}
