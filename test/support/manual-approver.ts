// A small real Approver for the proxies' tests: requests wait until the test decides them, as a
// person in the approval channel would. (The Temporal-backed approver has its own tests.)
import type { Approver, HeldResult, HoldOutcome, HoldPosted, HoldRequest, HoldRequested } from '../../gateway/approvals/approver.ts';

export interface Pending {
  id: string;
  req: HoldRequest;
  resolve(o: HoldOutcome): void;
}

export class ManualApprover implements Approver {
  constructor(private readonly channel = '#approvals') {}

  pending: Pending[] = [];
  aborted: string[] = [];
  abortReasons: string[] = [];
  reports: HeldResult[] = [];
  ended: Array<[string, string[]]> = [];
  private n = 0;
  private waiters: Array<(p: Pending) => void> = [];

  async hold(req: HoldRequest, onPosted: (p: HoldPosted) => void, signal: AbortSignal, onRequested?: (p: HoldRequested) => void): Promise<HoldOutcome> {
    const id = `REQ-${++this.n}`;
    return new Promise((resolve) => {
      const p: Pending = { id, req, resolve };
      signal.addEventListener('abort', () => {
        this.aborted.push(id);
        this.abortReasons.push(signal.reason instanceof Error ? signal.reason.message : String(signal.reason));
        resolve({ outcome: 'cancelled', requestId: id, reason: 'client went away' });
      });
      onRequested?.({ requestId: id, channel: this.channel, reattached: false });
      onPosted({ requestId: id, channel: this.channel, deadline: new Date(Date.now() + req.review.timeoutMs), reattached: false });
      const w = this.waiters.shift();
      if (w) w(p);
      else this.pending.push(p);
    });
  }

  /** The next request posted (already or in the future). */
  next(): Promise<Pending> {
    const p = this.pending.shift();
    if (p) return Promise.resolve(p);
    return new Promise((r) => this.waiters.push(r));
  }

  async reportResult(r: HeldResult): Promise<void> {
    this.reports.push(r);
  }

  async sessionEnded(sessionId: string, requestIds: string[]): Promise<void> {
    this.ended.push([sessionId, requestIds]);
  }
}

