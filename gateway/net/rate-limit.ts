// Bounds how often one kind of event is logged or audited. Unauthenticated clients control how
// many refusals happen, so each refusal cannot be allowed to write its own log line and audit row:
// the first `perWindow` events of each window pass, the rest are counted, and the next event
// after the window closes reports how many were suppressed.
export interface RateLimitVerdict {
  /** Record this event. */
  pass: boolean;
  /** Events suppressed since the last one that passed (report them with this one). */
  suppressed: number;
}

export class EventRateLimiter {
  private windowStart = 0;
  private inWindow = 0;
  private suppressedCount = 0;

  constructor(
    private readonly perWindow: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  take(): RateLimitVerdict {
    const t = this.now();
    if (t - this.windowStart >= this.windowMs) {
      this.windowStart = t;
      this.inWindow = 0;
    }
    if (this.inWindow < this.perWindow) {
      this.inWindow++;
      const suppressed = this.suppressedCount;
      this.suppressedCount = 0;
      return { pass: true, suppressed };
    }
    this.suppressedCount++;
    return { pass: false, suppressed: 0 };
  }

  /** Events suppressed and not yet reported. */
  get pending(): number {
    return this.suppressedCount;
  }
}
