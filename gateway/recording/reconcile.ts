// Startup reconciliation after a crash: a gateway that died (SIGKILL, OOM, power) left sessions
// "open" and operations held for approval that will never run. At the next start they are
// closed in the record, through the ordinary store calls, so the hash chain simply gains the
// missing end events: sessions end with reason `gateway crashed`, and every hold that was in
// flight (an `hold.started` audit event without an operation carrying its request id) is
// recorded as an operation that did not run, plus a `hold.abandoned` audit event.
//
// Only for a store this gateway owns alone: with a store shared by several live gateways
// (PostgreSQL store), their sessions would be closed too; such stores need an owner column.
import type { AuditEvent, OperationRecord, Store } from './store.ts';

export const CRASH_REASON = 'gateway crashed';

/** Audit kind the enforcement seam writes when a hold has a request id (reconciliation input). */
export const HOLD_STARTED = 'hold.started';

export interface ReconcileResult {
  sessions: string[];
  holds: { sessionId: string; requestId: string }[];
}

export type ReconcilableStore = Store & { openSessionIds(): string[] };

export function canReconcile(store: Store): store is ReconcilableStore {
  return typeof (store as Partial<ReconcilableStore>).openSessionIds === 'function';
}

export function reconcileCrashed(store: ReconcilableStore, at = new Date()): ReconcileResult {
  return reconcileSessions(store, store.openSessionIds(), CRASH_REASON, at);
}

/**
 * Closes the given sessions in the record the same way (held operations recorded as not executed,
 * the session ended with `reason`); those already ended are skipped. The cluster primary calls it
 * for the sessions of a worker that died (reason `worker crashed`).
 */
export function reconcileSessions(store: Store, ids: Iterable<string>, reason: string, at = new Date()): ReconcileResult {
  const result: ReconcileResult = { sessions: [], holds: [] };
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
