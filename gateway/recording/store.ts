// Airlock's audit store: sessions and every operation in them. An interface so PostgreSQL can
// back it at scale; SQLite (better-sqlite3) is the embedded default. Values that were masked are
// never written unmasked: recorders only ever see operation text and counts, never result rows.
import type { DecisionAction } from '../policy/decision.ts';
import type { IdentityRegistry } from './identity-registry.ts';

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
  /** The gateway instance (gateway.instanceId) that served the session; absent in records from before instance ids. */
  instance?: string;
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

/**
 * A just-in-time elevation window (gateway/elevation/): approved (or break-glass self-approved)
 * access to a role on one connection until `until`. Written at once, not queued: every gateway
 * replica reading the store sees it; ended early by `revokedAt`.
 */
export interface ElevationRecord {
  /** The access request's id (its approval workflow id); operations decided under it record it. */
  id: string;
  identity: string;
  owner?: string;
  role: string;
  connection: string;
  /** Why it was asked for (detector-redacted before storing). */
  reason: string;
  approvers: string[];
  breakGlass: boolean;
  startsAt: Date;
  until: Date;
  revokedAt?: Date;
  revokedBy?: string;
  revokeReason?: string;
}

export interface SessionFilter {
  identity?: string;
  connection?: string;
  limit?: number;
}

/** What happens to traffic when the audit trail cannot keep up (config `audit.onFailure`). */
export type AuditFailurePolicy = 'closed' | 'open';

/** The audit trail's state, as the enforcement seam and /readyz see it. Cheap to compute. */
export interface AuditHealth {
  /** Records are being persisted within the configured bounds. */
  ok: boolean;
  /** Why not, for logs and refusal messages (never contains record content). */
  reason?: string;
  /** `audit.onFailure`; with 'open', `writable()` stays true while `ok` is false. */
  policy: AuditFailurePolicy;
  /** Records accepted but not yet persisted (waiting for a retry). */
  pending: number;
  /** Age of the oldest record not yet persisted, ms (0 when none). */
  lagMs: number;
  /** Records given up on since open (only when the record itself is unacceptable, or in open mode). */
  dropped: number;
  lastError?: string;
}

/** What a store knows about its write queue; `auditHealth` turns it into the one health verdict. */
export interface AuditQueueState {
  policy: AuditFailurePolicy;
  pending: number;
  /** When the oldest record still waiting was accepted (ms epoch); ignored when nothing waits. */
  oldestQueuedAt: number;
  dropped: number;
  lastError?: string;
  closed: boolean;
  readonly?: boolean;
  /** A write failed in a way a retry cannot fix by waiting (disk full, I/O error, database down). */
  hardFailure: boolean;
  maxPending: number;
  maxPendingMs: number;
}

/** The audit trail's health from a store's queue state: the same bounds for every backend. */
export function auditHealth(q: AuditQueueState): AuditHealth {
  const lagMs = q.pending > 0 ? Math.max(0, Date.now() - q.oldestQueuedAt) : 0;
  const base = { policy: q.policy, pending: q.pending, lagMs, dropped: q.dropped, lastError: q.lastError };
  let reason: string | undefined;
  if (q.closed) reason = 'the audit store is closed';
  else if (q.readonly) reason = 'the audit store is open read-only';
  else if (q.pending >= q.maxPending) reason = `${q.pending} audit records wait to be written (bound ${q.maxPending})`;
  else if (q.pending > 0 && q.hardFailure) reason = `audit records cannot be written: ${q.lastError ?? 'write failed'}`;
  else if (q.pending > 0 && lagMs >= q.maxPendingMs) reason = `audit records have waited ${lagMs} ms to be written (bound ${q.maxPendingMs} ms)${q.lastError ? `: ${q.lastError}` : ''}`;
  return reason ? { ok: false, reason, ...base } : { ok: true, ...base };
}

/**
 * The health of a store that hands its records to a writer elsewhere (the audit writer thread, the
 * cluster primary): `local` is auditHealth over its own records not yet acknowledged, merged with
 * what the writers last reported. `gone`: why the writer cannot be reached, when it cannot;
 * `waitingFor` names what local records wait for in the refusal reason.
 */
export function handedOverHealth(local: AuditHealth, writers: readonly (AuditHealth | undefined)[], o: { dropped: number; gone?: string; waitingFor: string }): AuditHealth {
  let pending = local.pending;
  let lagMs = local.lagMs;
  let dropped = o.dropped;
  let lastError: string | undefined;
  for (const w of writers) {
    if (!w) continue;
    pending += w.pending;
    lagMs = Math.max(lagMs, w.lagMs);
    dropped += w.dropped;
    lastError ??= w.lastError;
  }
  const merged: AuditHealth = { ok: true, policy: local.policy, pending, lagMs, dropped, ...(lastError ? { lastError } : {}) };
  if (o.gone) return { ...merged, ok: false, reason: o.gone };
  if (!local.ok) return { ...merged, ok: false, reason: local.reason?.replace('to be written', `to be ${o.waitingFor}`) };
  for (const w of writers) if (w && !w.ok) return { ...merged, ok: false, reason: w.reason };
  return merged;
}

/** Throws AuditUnavailableError when the policy is fail-closed and the trail is unhealthy. */
export function assertAuditWritable(policy: AuditFailurePolicy, health: () => AuditHealth): void {
  if (policy === 'open') return;
  const h = health();
  if (!h.ok) throw new AuditUnavailableError(h);
}

/**
 * Thrown by `Store.assertWritable()` when the policy is fail-closed and the audit trail is unhealthy:
 * the seam refuses the new session or operation and maps this to the protocol (SQLSTATE 53100 for
 * PostgreSQL, HTTP 503 with Retry-After, an SSH channel/auth failure message).
 */
export class AuditUnavailableError extends Error {
  readonly code = 'AIRLOCK_AUDIT_UNAVAILABLE';
  /** PostgreSQL `disk_full`, the closest standard class for "cannot record". */
  readonly sqlstate = '53100';
  readonly httpStatus = 503;
  readonly retryAfterSeconds = 5;
  constructor(readonly health: AuditHealth) {
    super(`Airlock cannot record to its audit trail right now (${health.reason ?? 'audit store unhealthy'}); no audit trail, no access: try again later`);
    this.name = 'AuditUnavailableError';
  }
}

/**
 * Also the identity registry (identity-registry.ts): who the IdP last vouched for.
 * Writes may be taken later (a writer thread, the cluster primary): a caller never changes a record
 * (or anything it references) after handing it to the store.
 */
export interface Store extends IdentityRegistry {
  startSession(s: SessionStart): void;
  endSession(id: string, endedAt: Date, reason: string, bytes: { toClient: number; fromClient: number }): void;
  recordOperation(op: OperationRecord): void;
  /** Approval attempts (valid or not), grants, escalations: audit that outlives Temporal retention. */
  recordAudit(e: AuditEvent): void;
  listSessions(f?: SessionFilter): SessionRecord[];
  getSession(id: string): { session: SessionRecord; operations: OperationRecord[] } | undefined;
  listAudit(subject?: string): AuditEvent[];
  /** Session ids starting with `prefix`, newest first, at most `limit` (short ids from `sessions list`). */
  findSessionIds(prefix: string, limit?: number): string[];
  /** Records an elevation window at once (not queued); throws when it cannot be written. */
  putElevation(e: ElevationRecord): void;
  /** Ends an elevation early; false when there is no such elevation or it had already ended. */
  revokeElevation(id: string, at: Date, by: string, reason: string): boolean;
  getElevation(id: string): ElevationRecord | undefined;
  /** Newest first; `activeAt`: only windows open at that time and not revoked. */
  listElevations(f?: { identity?: string; activeAt?: Date; limit?: number }): ElevationRecord[];
  /** The audit trail's state (see AuditHealth). */
  health(): AuditHealth;
  /** False when new sessions and operations must be refused: fail-closed policy and unhealthy. */
  writable(): boolean;
  /** Throws AuditUnavailableError when `writable()` is false. Call before admitting a new session or
   * operation (after authentication, before forwarding anything upstream). */
  assertWritable(): void;
  close(): void;
}
