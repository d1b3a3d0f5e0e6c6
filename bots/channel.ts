// The chat side of an approval, as the approval workflow's activities see it. Slack, Teams and
// the offline local channel implement it; none of them decides anything: decisions go back to
// the workflow as validated Temporal Updates.

/** Everything a person needs to decide, plus the request's current state. JSON-serialisable. */
export interface ApprovalView {
  requestId: string;
  protocol: string;
  identity: string;
  /** Human who owns the requesting agent, when the identity is an agent. */
  owner?: string;
  connection: string;
  text: string;
  rule: string;
  reason: string;
  /** ISO timestamp of the final deadline. */
  deadline: string;
  approverGroups: string[];
  quorum: number;
  status: 'pending' | 'approved' | 'rejected' | 'expired' | 'cancelled';
  /** Distinct approvers so far (and the rejecter, when rejected). */
  decidedBy: string[];
  /** ISO timestamp of the final decision. */
  decidedAt?: string;
  decisionReason?: string;
  escalated: boolean;
  /** The Slack channel this request asks in, when its rule names one (`review.channel`); otherwise each chat's configured channel. */
  channel?: string;
  /** Bound parameter values as shown (PII detectors applied): the approval covers exactly these. */
  parameters?: string[];
  /** Further lines: tables, body summary, client address, open transaction. */
  details?: string[];
  /** Sessions waiting on this request. */
  waiting?: number;
  /** Longest reusable grant an approver may choose (the rule's grantTtl); 0 or absent: approve once only. */
  grantTtlMs?: number;
  /** The reusable grant chosen with the approval, if any (default: the approval releases one run). */
  grant?: GrantChoice;
  /** Runs released so far by this approval. */
  uses?: number;
  /** What the held write would change (review.preview): planner estimate, dry run or the held real result. */
  preview?: ApprovalPreview;
}

/** A held write's effect as shown to approvers; values in `sample` went through the masking layer. */
export interface ApprovalPreview {
  kind: 'explain' | 'dry-run' | 'hold-commit';
  /** One line: `dry run: UPDATE 3 (rolled back)`, `planner estimate: 120 rows (Seq Scan on accounts)`, or why a fallback happened. */
  summary: string;
  /** Rows affected (exact for dry-run/hold-commit, the planner's estimate for explain). */
  rows?: number;
  /** Header row first, then at most a few sample rows (masked). */
  sample?: string[][];
}

/** An approver's explicit choice to let the same exact operation run again without a new request. */
export interface GrantChoice {
  /** Reusable for this long (capped by the rule's grantTtl). */
  forMs: number;
  /** At most this many runs in all (absent: unbounded within forMs). */
  runs?: number;
}

/** Where a decision was signed: the component that authenticated the human. */
export type DecisionSource = 'slack' | 'teams' | 'cli';

/**
 * Proof of origin of a decision (workflows/decision-proof.ts): an Ed25519 signature by the source's
 * key over the request id, approver, channel user, decision, reason, grant, signedAt and nonce.
 */
export interface DecisionProof {
  source: DecisionSource;
  /** The authenticated account in that source: Slack user id, AAD object id, OS user for the CLI. */
  channelUser: string;
  /** Epoch milliseconds at signing. */
  signedAt: number;
  /** Random, unique per decision. */
  nonce: string;
  /**
   * Epoch milliseconds after which the decision must not count: its submitter stops waiting for
   * an answer then (a CLI or chat click with no worker running), so it may never apply later.
   */
  notAfter?: number;
  /** base64 Ed25519 signature of the canonical payload. */
  signature: string;
}

/** One person's decision on a request, as a chat app or the CLI submits it. */
export interface DecisionArgs {
  approver: string;
  /**
   * The groups the caller believes the approver has. Informational only: the worker resolves the
   * approver's groups from its own configuration and never trusts these (they are audited as claimed).
   */
  approverGroups: string[];
  decision: 'approve' | 'reject';
  reason?: string;
  /** Where the decision came from: 'cli', 'slack:U123', 'teams:<aad id>'. */
  via: string;
  /** Approve only: make the approval a reusable grant (default: approve once). */
  grant?: GrantChoice;
  /** Signed by the source that authenticated the approver; without a valid one the decision is refused. */
  proof?: DecisionProof;
}

export interface DecisionRequest extends DecisionArgs {
  requestId: string;
}

/** Accepted (with the request's new state) or refused (with the reason the approver is shown). */
export type DecisionResult = { ok: true; view: ApprovalView } | { ok: false; error: string };

/** How chat apps submit decisions (workflows/decide.ts `submitDecision` in production). */
export type Decide = (d: DecisionRequest) => Promise<DecisionResult>;

/** Title of a request in each state, the same in every chat. */
export const STATUS_TITLE: Record<ApprovalView['status'], string> = {
  pending: 'Approval required',
  approved: 'Approved',
  rejected: 'Rejected',
  expired: 'Expired',
  cancelled: 'Cancelled',
};

/** Where a request was posted (channel + message id), kept by the workflow for later updates. */
export type MessageRef = Record<string, string>;

export interface EscalationNotice {
  mention: string[];
  channel?: string;
}

export interface ApprovalChannel {
  readonly kind: string;
  post(view: ApprovalView): Promise<MessageRef>;
  update(ref: MessageRef, view: ApprovalView): Promise<void>;
  escalate(ref: MessageRef, view: ApprovalView, step: EscalationNotice): Promise<void>;
  /** A reply in the request's thread (the held operation's outcome). */
  reply(ref: MessageRef, text: string): Promise<void>;
  /** Attaches the session log to the thread (a file upload where the chat supports it). */
  attachLog(ref: MessageRef, filename: string, content: string): Promise<void>;
}
