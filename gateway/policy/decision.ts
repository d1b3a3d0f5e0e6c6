// What the policy engine answers. Proxies enforce it in their protocol's own words.

export type MaskStrategy = 'redact' | 'partial' | 'hash' | 'null';
export type DetectorName = 'email' | 'card' | 'ssn' | 'phone' | 'iban' | 'secret';

/** Mask one column wherever it appears, resolved by table OID + attribute number, not by name. */
export interface ColumnMask {
  /** `schema.table.column`, lower-case. */
  column: string;
  strategy: MaskStrategy;
  rule: string;
}

/** Mask values whose content looks like this, in any text column (catches derived expressions). */
export interface DetectorMask {
  detector: DetectorName;
  strategy: MaskStrategy;
  rule: string;
}

export interface MaskPlan {
  columns: ColumnMask[];
  detectors: DetectorMask[];
  /** Deny statements that read a masked column inside an expression (`lower(email)`), instead of relying on detectors. */
  denyMaskedExpressions: boolean;
}

export interface Limits {
  maxRowsPerStatement?: number;
  maxBytesPerSession?: number;
  /**
   * Longest the statement may run upstream, in milliseconds (rule `limits.maxStatementTime`). The
   * session cancels it (57014) and names `timeRule`.
   */
  maxStatementMs?: number;
  /** The rule that set each limit, so the error and the recording can name it. */
  rowsRule?: string;
  bytesRule?: string;
  /** The rule that set maxStatementMs. */
  timeRule?: string;
}

export interface EscalationStep {
  /** Delay from the request being posted. */
  afterMs: number;
  /** Groups (or identities) to mention at this step. */
  mention: string[];
  /** Chat channel for this step; defaults to the approval channel. */
  channel?: string;
}

export interface ReviewSpec {
  /** Groups whose members may approve. */
  approvers: string[];
  quorum: number;
  /** Final deadline, after which the request expires (a rejection). */
  timeoutMs: number;
  escalation: EscalationStep[];
  /** Chat channel to post the request to (Slack channel id / Teams channel). */
  channel?: string;
  /** Longest reusable grant an approver may choose for this rule (approvals release one run unless they choose a grant). */
  grantTtlMs: number;
  /** Whether a statement inside an open transaction may be held (its locks stay held while people decide). */
  holdInTransaction?: boolean;
  /** What approvers see of a held write's effect (PostgreSQL); absent: none. */
  preview?: 'explain' | 'dry-run' | 'hold-commit';
  /** hold-commit: longest the held transaction's locks may be kept. */
  maxLockHoldMs?: number;
  /**
   * Set when several review rules matched: one entry per rule, its approver groups. The approval
   * must include, for every entry, at least one approver in one of its groups (`approvers` is
   * their union, `quorum` the largest). Absent for a single rule.
   */
  requireEach?: string[][];
  /** Every review rule that matched, strictest combined (first is `Decision.rule`). */
  rules?: string[];
}

/** Set by the enforcement seam when an approved elevation window (gateway/elevation/) decided the operation. */
export interface ElevationTag {
  /** The elevation (= its access request) id, recorded with every operation it decided. */
  id: string;
  role: string;
  /** ISO time the window ends. */
  until: string;
  breakGlass: boolean;
}

export type Decision = (
  | { action: 'allow'; rule?: string; mask: MaskPlan; limits: Limits }
  | { action: 'mask'; rule: string; mask: MaskPlan; limits: Limits }
  | { action: 'deny'; rule: string; reason: string }
  | { action: 'review'; rule: string; reason: string; review: ReviewSpec; mask: MaskPlan; limits: Limits }
) & { elevation?: ElevationTag };

export type DecisionAction = Decision['action'];
