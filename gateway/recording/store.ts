// Airlock's audit store: sessions and every operation in them. An interface so PostgreSQL can
// back it at scale; SQLite (better-sqlite3) is the embedded default. Values that were masked are
// never written unmasked: recorders only ever see operation text and counts, never result rows.
import type { DecisionAction } from '../policy/decision.ts';

export interface SessionStart {
  id: string;
  protocol: string;
  identity: string;
  groups: string[];
  connection: string;
  clientAddress: string;
  startedAt: Date;
}

export interface SessionRecord extends SessionStart {
  endedAt?: Date;
  /** Why the session ended: client terminate, error text, upstream closed ... */
  endReason?: string;
  bytesToClient: number;
  bytesFromClient: number;
}

export interface OperationRecord {
  sessionId: string;
  /** Monotonic per session, starting at 1. */
  seq: number;
  at: Date;
  text: string;
  kind: string;
  /** Tables, statement types, COPY direction etc. as JSON-able data. */
  classification: Record<string, unknown>;
  decision: DecisionAction;
  rule?: string;
  reason?: string;
  rows?: number;
  bytes?: number;
  /** `schema.table.column` or `detector:email@column` entries that were masked in the result. */
  maskedColumns: string[];
  /** Limit events, cancel, upstream errors. */
  error?: string;
  durationMs?: number;
  /** Approval request id and who approved/rejected, when the operation was held. */
  approval?: { requestId: string; outcome: string; approvers: string[]; reason?: string };
}

export interface AuditEvent {
  at: Date;
  kind: string;
  /** Approval request id, session id, or similar subject of the event. */
  subject: string;
  actor?: string;
  detail: Record<string, unknown>;
}

export interface SessionFilter {
  identity?: string;
  connection?: string;
  limit?: number;
}

export interface Store {
  startSession(s: SessionStart): void;
  endSession(id: string, endedAt: Date, reason: string, bytes: { toClient: number; fromClient: number }): void;
  recordOperation(op: OperationRecord): void;
  /** Approval attempts (valid or not), grants, escalations: audit that outlives Temporal retention. */
  recordAudit(e: AuditEvent): void;
  listSessions(f?: SessionFilter): SessionRecord[];
  getSession(id: string): { session: SessionRecord; operations: OperationRecord[] } | undefined;
  /** Session ids starting with `prefix`, newest first: the CLI accepts the short ids it prints. */
  findSessionIds(prefix: string, limit?: number): string[];
  listAudit(subject?: string): AuditEvent[];
  close(): void;
}
