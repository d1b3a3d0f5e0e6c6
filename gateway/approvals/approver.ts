// The gateway's view of human approval. Proxies hold an operation, call `hold`, and forward or
// reject it on the outcome; how the request reaches people (Temporal + Slack/Teams/local) lives
// behind this interface, in workflows/ and bots/.
import type { Operation } from '../policy/operation.ts';
import type { ReviewSpec } from '../policy/decision.ts';

export interface HoldRequest {
  operation: Operation;
  rule: string;
  reason: string;
  review: ReviewSpec;
}

export interface HoldPosted {
  requestId: string;
  /** Where people were asked, for the client notice ("#db-approvals", "local channel"). */
  channel: string;
  deadline: Date;
  /** True when an existing request (same identity, connection, statement) was re-attached. */
  reattached: boolean;
}

export type HoldOutcome =
  | { outcome: 'approved'; requestId: string; approvers: string[]; viaGrant: boolean }
  | { outcome: 'rejected'; requestId: string; by: string; reason: string }
  | { outcome: 'expired'; requestId: string; reason: string }
  | { outcome: 'cancelled'; requestId: string; reason: string }
  /** The request could not be made or followed (Temporal down, chat unreachable): fail closed. */
  | { outcome: 'failed'; requestId: string; reason: string };

export interface HeldResult {
  requestId: string;
  /** What happened when the held operation ran: rows, duration, error, masked columns. */
  summary: string;
}

export interface Approver {
  /**
   * Asks for approval and resolves when decided. `onPosted` fires once the request is visible to
   * approvers (so the proxy can tell the client it is waiting). Aborting `signal` (client gone)
   * cancels the request. Never rejects: failures come back as outcome `failed`.
   */
  hold(req: HoldRequest, onPosted: (p: HoldPosted) => void, signal: AbortSignal): Promise<HoldOutcome>;
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
