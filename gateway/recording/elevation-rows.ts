// Elevation windows as table rows, the same for the SQLite and the PostgreSQL store.
import { redactForAudit } from './redact.ts';
import type { ElevationRecord } from './store.ts';

export interface ElevationRow {
  id: string;
  identity: string;
  owner: string | null;
  role: string;
  connection: string;
  reason: string;
  approvers: string;
  break_glass: number | boolean;
  starts_at: number | string;
  until: number | string;
  revoked_at: number | string | null;
  revoked_by: string | null;
  revoke_reason: string | null;
}

/** Named parameters of an INSERT; the reason (typed by people) is detector-redacted like all audit text. */
export function elevationRow(e: ElevationRecord) {
  return {
    id: e.id,
    identity: e.identity,
    owner: e.owner ?? null,
    role: e.role,
    connection: e.connection,
    reason: redactForAudit(e.reason),
    approvers: JSON.stringify(e.approvers),
    breakGlass: e.breakGlass ? 1 : 0,
    startsAt: e.startsAt.getTime(),
    until: e.until.getTime(),
  };
}

export function toElevation(r: ElevationRow): ElevationRecord {
  let approvers: string[] = [];
  try {
    const a: unknown = JSON.parse(r.approvers);
    if (Array.isArray(a)) approvers = a.map(String);
  } catch {
    // a damaged row still says who and until when; approvers stay empty
  }
  return {
    id: r.id,
    identity: r.identity,
    ...(r.owner ? { owner: r.owner } : {}),
    role: r.role,
    connection: r.connection,
    reason: r.reason,
    approvers,
    breakGlass: r.break_glass === 1 || r.break_glass === true,
    startsAt: new Date(Number(r.starts_at)),
    until: new Date(Number(r.until)),
    ...(r.revoked_at !== null ? { revokedAt: new Date(Number(r.revoked_at)) } : {}),
    ...(r.revoked_by ? { revokedBy: r.revoked_by } : {}),
    ...(r.revoke_reason ? { revokeReason: r.revoke_reason } : {}),
  };
}
