// One audit store write as data: what a gateway worker sends the cluster primary and what the
// SQLite writer thread receives, so a record can cross a process or thread boundary (structured
// clone keeps Dates) and be applied to the one store that writes the chain.
import type { IdpIdentity } from './identity-registry.ts';
import type { AuditEvent, ElevationRecord, OperationRecord, SessionStart, Store } from './store.ts';

/** One audit store call, in the order the caller made them. */
export type AuditCall =
  | { k: 'start'; s: SessionStart }
  | { k: 'end'; id: string; at: Date; reason: string; bytes: { toClient: number; fromClient: number } }
  | { k: 'op'; op: OperationRecord }
  | { k: 'audit'; e: AuditEvent }
  /** An IdP sign-in (identity registry; its audit event is chained by the writer). */
  | { k: 'idp'; e: IdpIdentity }
  | { k: 'elevation'; e: ElevationRecord };

/** Applies one call to `store`. Store writes do not throw; the synchronous ones (idp, elevation) may. */
export function applyAuditCall(store: Store, c: AuditCall): void {
  switch (c.k) {
    case 'start':
      return store.startSession(c.s);
    case 'end':
      return store.endSession(c.id, c.at, c.reason, c.bytes);
    case 'op':
      return store.recordOperation(c.op);
    case 'idp':
      return store.recordIdpIdentity(c.e);
    case 'elevation':
      return store.putElevation(c.e);
    case 'audit':
      return store.recordAudit(c.e);
  }
}
