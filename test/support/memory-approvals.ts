// In-memory approval requests for the chat apps' tests: the same refusal rules as the workflow's
// Update validator (workflows/decision-rules.ts), without a Temporal server, so the Slack and
// Teams sides are exercised against the answers they get in production.
// With `keys`, a decision counts only with a valid proof of origin, as on the worker.
import type { KeyObject } from 'node:crypto';
import type { ApprovalView, DecisionRequest, DecisionResult, DecisionSource } from '../../bots/channel.ts';
import { checkProof } from '../../workflows/decision-proof.ts';
import { decisionRefusal } from '../../workflows/decision-rules.ts';

/** A decision without its proof (which is random per signature), for comparisons. */
export function withoutProof(d: DecisionRequest | undefined): Omit<DecisionRequest, 'proof'> | undefined {
  if (!d) return undefined;
  const { proof: _proof, ...rest } = d;
  return rest;
}

export class MemoryApprovals {
  readonly requests = new Map<string, ApprovalView>();
  readonly attempts: DecisionRequest[] = [];
  failWith?: Error;

  constructor(private readonly keys?: ReadonlyMap<DecisionSource, KeyObject>) {}

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
    if (this.keys) {
      const p = checkProof(this.keys, d.requestId, d, { now: Date.now(), maxAgeMs: 60_000, notBefore: 0 });
      if (!p.ok) return { ok: false, error: p.error };
    }
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
