// The gateway's view of human approval. Proxies hold an operation, call `hold`, and forward or
// reject it on the outcome; how the request reaches people (Temporal + Slack/Teams/local) lives
// behind this interface, in workflows/ and bots/.
import type { Operation } from '../policy/operation.ts';
import type { ReviewSpec } from '../policy/decision.ts';
import type { ApprovalPreview } from '../../bots/channel.ts';

/**
 * Exactly what an approval covers. Two holds with equal (identity, owner, connection, protocol,
 * digest) are the same request; anything that differs (another parameter value, query string or
 * body byte) is a new request. Built by the enforcement seam (gateway/enforce/), never by a chat.
 */
export interface OperationBinding {
  /** What the approver reads: the statement, command line, or method + path?query. */
  text: string;
  /** Bound parameter values as shown to approvers (PII detectors applied, long values cut). */
  parameters?: string[];
  /** Further lines for the approver: body summary, open transaction, tables. */
  details?: string[];
  /** Keyed digest (hex) of the exact operation: text, raw parameter values, body bytes. */
  digest: string;
  /** What the held write would change (review.preview); not part of the digest. */
  preview?: ApprovalPreview;
}

export interface HoldRequest {
  operation: Operation;
  rule: string;
  reason: string;
  review: ReviewSpec;
  /** Absent only while a proxy still builds holds itself; the enforcement seam always sets it. */
  binding?: OperationBinding;
  /** W3C traceparent the request is part of (the hold's span, else the client's), kept on the workflow. */
  traceparent?: string;
}

/** A run released by a reusable grant the approver chose ("approve for 10 minutes" / "N runs"). */
export interface GrantUse {
  /** 1-based use number of this approval. */
  use: number;
  /** Runs the approver allowed in all, when bounded by count. */
  runs?: number;
  /** ISO time the grant ends. */
  until: string;
}

export interface HoldPosted {
  requestId: string;
  /** Where people were asked, for the client notice ("#db-approvals", "local channel"). */
  channel: string;
  deadline: Date;
  /** True when an existing request (same identity, connection, statement) was re-attached. */
  reattached: boolean;
}

/** The request exists (or was re-attached) but may not be visible to people yet. */
export interface HoldRequested {
  requestId: string;
  channel: string;
  reattached: boolean;
}

export type HoldOutcome =
  | { outcome: 'approved'; requestId: string; approvers: string[]; viaGrant: boolean; grant?: GrantUse }
  | { outcome: 'rejected'; requestId: string; by: string; reason: string }
  | { outcome: 'expired'; requestId: string; reason: string }
  | { outcome: 'cancelled'; requestId: string; reason: string }
  /** The request could not be made or followed (Temporal down, chat unreachable): fail closed. */
  | { outcome: 'failed'; requestId: string; reason: string };

export interface HeldResult {
  requestId: string;
  /** What happened when the held operation ran: rows, duration, error, masked columns. */
  summary: string;
  sessionId?: string;
  /** Protocol result: PostgreSQL command tag, HTTP status, SSH exit status. */
  tag?: string;
  rows?: number;
  error?: string;
  /** Set when the run was released by a reusable grant. */
  grant?: GrantUse;
}

/**
 * Abort reason (`controller.abort(HOLD_PARKED)`) for a hold whose client was answered "still
 * pending, send it again" (HTTP maxHold -> 503 + Retry-After). The hold stops waiting but does not
 * cancel the request, and an approve-once approval is kept for the client's retry of the same
 * exact operation (for up to 10 minutes after the decision). Any other abort reason is the client
 * going away: the hold leaves, and the request is cancelled when it was the last one waiting.
 */
export const HOLD_PARKED = 'airlock:hold-parked';

export interface Approver {
  /**
   * Asks for approval and resolves when decided. `onPosted` fires once the request is visible to
   * approvers (so the proxy can tell the client it is waiting). Aborting `signal` (client gone)
   * cancels the request. Never rejects: failures come back as outcome `failed`.
   */
  hold(req: HoldRequest, onPosted: (p: HoldPosted) => void, signal: AbortSignal, onRequested?: (p: HoldRequested) => void): Promise<HoldOutcome>;
  /** Reports the held operation's result to the approval thread. Best effort. */
  reportResult(r: HeldResult): Promise<void>;
  /** Attaches the session log to every approval thread the session opened. Best effort. */
  sessionEnded(sessionId: string, requestIds: string[]): Promise<void>;
}

/** Used when no approval backend is configured: every review fails closed, with a clear reason. */
export class FailClosedApprover implements Approver {
  constructor(private readonly why = 'no approval backend is configured (set `temporal:` in the config and run `airlock worker`)') {}
  async hold(req: HoldRequest): Promise<HoldOutcome> {
    return { outcome: 'failed', requestId: '', reason: `approval required by rule ${req.rule}, but ${this.why}` };
  }
  async reportResult(): Promise<void> {}
  async sessionEnded(): Promise<void> {}
}
