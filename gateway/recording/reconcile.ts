// Startup reconciliation after a crash: a gateway that died (SIGKILL, OOM, power) left sessions
// "open" and operations held for approval that will never run. At the next start they are
// closed in the record, through the ordinary store calls, so the hash chain simply gains the
// missing end events: sessions end with reason `gateway crashed`, and every hold that was in
// flight (an `hold.started` audit event without an operation carrying its request id) is
// recorded as an operation that did not run, plus a `hold.abandoned` audit event.
//
// Only sessions of gateway instances that are certainly gone are touched (instances.ts): this
// instance's own id (an earlier incarnation), peers whose lease lapsed, peers on this host whose
// process is gone. Live peers sharing the store (PostgreSQL) keep their sessions. The store claims
// the dead instances atomically, so two gateways starting at once never both close the same session.
import type { OrphanClaim } from './instances.ts';
import type { AuditEvent, OperationRecord, Store } from './store.ts';

export const CRASH_REASON = 'gateway crashed';

/** Audit kind the enforcement seam writes when a hold has a request id (reconciliation input). */
export const HOLD_STARTED = 'hold.started';

export interface ReconcileResult {
  sessions: string[];
  holds: { sessionId: string; requestId: string }[];
  /** Gateway instances found dead (their lease rows are gone now). */
  instances: string[];
}

export type ReconcilableStore = Store & {
  /** Registers this instance and claims the dead ones with their open sessions (one transaction). */
  claimOrphanedSessions(): OrphanClaim;
  /** Keeps this instance's lease fresh until the store closes. */
  startInstanceLease(): void;
};

export function canReconcile(store: Store): store is ReconcilableStore {
  return typeof (store as Partial<ReconcilableStore>).claimOrphanedSessions === 'function';
}

export function reconcileCrashed(store: ReconcilableStore, at = new Date()): ReconcileResult {
  const claim = store.claimOrphanedSessions();
  return { ...reconcileSessions(store, claim.sessions, CRASH_REASON, at), instances: claim.deadInstances };
}

/**
 * Closes the given sessions in the record the same way (held operations recorded as not executed,
 * the session ended with `reason`); those already ended are skipped. The cluster primary calls it
 * for the sessions of a worker that died (reason `worker crashed`).
 */
export function reconcileSessions(store: Store, ids: Iterable<string>, reason: string, at = new Date()): ReconcileResult {
  const result: ReconcileResult = { sessions: [], holds: [], instances: [] };
  for (const id of ids) {
    const detail = store.getSession(id);
    if (!detail || detail.session.endedAt) continue;
    const settled = new Set(detail.operations.map((o) => o.approval?.requestId).filter((r): r is string => !!r));
    let seq = detail.operations.reduce((m, o) => Math.max(m, o.seq), 0);
    const started = store.listAudit(id).filter((e: AuditEvent) => e.kind === HOLD_STARTED);
    for (const e of started) {
      const requestId = typeof e.detail.requestId === 'string' ? e.detail.requestId : '';
      if (!requestId || settled.has(requestId)) continue;
      settled.add(requestId);
      const op: OperationRecord = {
        sessionId: id,
        seq: ++seq,
        at,
        text: typeof e.detail.text === 'string' ? e.detail.text : '',
        kind: typeof e.detail.kind === 'string' ? e.detail.kind : 'held',
        classification: {},
        decision: 'review',
        rule: typeof e.detail.rule === 'string' ? e.detail.rule : undefined,
        maskedColumns: [],
        error: `not executed: ${reason === CRASH_REASON ? 'the gateway crashed' : `the session ended (${reason})`} while the operation was held for approval`,
        approval: { requestId, outcome: 'abandoned', approvers: [], reason },
      };
      store.recordOperation(op);
      store.recordAudit({ at, kind: 'hold.abandoned', subject: requestId, detail: { sessionId: id, reason } });
      result.holds.push({ sessionId: id, requestId });
    }
    store.endSession(id, at, reason, { toClient: 0, fromClient: 0 });
    result.sessions.push(id);
  }
  return result;
}
