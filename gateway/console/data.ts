// What the auditor console shows, read from the audit store: filtered session lists, a session's
// timeline, approval requests with their audit history, the chain's verify status, and the
// terminal recordings operations point at. Pure reads; nothing here writes to the store.
//
// Everything served comes from the store, which only ever holds redacted text (recording/redact.ts)
// and masked terminal output; the browser renders it with textContent only.
import { existsSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, relative, resolve } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { auditToJson, sessionDetailToJson, sessionToJson, type AuditJson, type SessionDetailJson, type SessionJson } from '../recording/format.ts';
import type { SessionSummary } from '../recording/sqlite-store.ts';
import type { AuditEvent, OperationRecord, SessionRecord } from '../recording/store.ts';
import type { VerifyReport } from '../recording/verify.ts';
import { redactForAudit } from '../recording/redact.ts';
import Database from 'better-sqlite3';

/** The store reads the console needs (SqliteStore implements them). */
export interface ConsoleStore {
  listSessions(f?: { identity?: string; connection?: string; limit?: number }): SessionSummary[];
  getSession(id: string): { session: SessionSummary; operations: OperationRecord[] } | undefined;
  listAudit(subject?: string): AuditEvent[];
  verify(opts?: { publicKey?: KeyObject }): VerifyReport;
}

export interface SessionQuery {
  identity?: string;
  connection?: string;
  protocol?: string;
  /** deny | review | mask | error: sessions with at least one such operation. */
  decision?: string;
  since?: Date;
  until?: Date;
  /** An approval request id (or a prefix of one) some operation of the session was held for. */
  approval?: string;
  limit?: number;
}

/** Sessions scanned per query before the filters that need more than the sessions table. */
const SCAN_LIMIT = 5000;
export const DEFAULT_LIST_LIMIT = 200;

export function listSessions(store: ConsoleStore, q: SessionQuery): SessionJson[] {
  const limit = Math.min(Math.max(q.limit ?? DEFAULT_LIST_LIMIT, 1), 1000);
  const out: SessionJson[] = [];
  for (const s of store.listSessions({ identity: q.identity || undefined, connection: q.connection || undefined, limit: SCAN_LIMIT })) {
    if (q.protocol && s.protocol !== q.protocol) continue;
    if (q.since && s.startedAt < q.since) continue;
    if (q.until && s.startedAt > q.until) continue;
    if (q.decision && !hasDecision(s, q.decision)) continue;
    if (q.approval) {
      const d = store.getSession(s.id);
      if (!d?.operations.some((op) => op.approval?.requestId.startsWith(q.approval as string))) continue;
    }
    out.push(sessionToJson(s));
    if (out.length >= limit) break;
  }
  return out;
}

function hasDecision(s: SessionSummary, decision: string): boolean {
  switch (decision) {
    case 'deny':
      return s.deniedCount > 0;
    case 'review':
      return s.reviewCount > 0;
    case 'mask':
      return s.maskedCount > 0;
    case 'error':
      return s.errorCount > 0;
    default:
      return true;
  }
}

export interface TimelineJson extends SessionDetailJson {
  /** Operation seqs whose terminal recording can be played (GET .../recordings/:seq). */
  recordings: number[];
}

/** A session with every operation and the audit history of each approval request in it. */
export function sessionTimeline(store: ConsoleStore, id: string, recordingRoots: string[]): TimelineJson | undefined {
  const d = store.getSession(id);
  if (!d) return undefined;
  const requests = [...new Set(d.operations.flatMap((op) => (op.approval ? [op.approval.requestId] : [])))];
  const audit = requests.flatMap((r) => store.listAudit(r));
  const json = sessionDetailToJson(d, audit);
  // The recording's path on the gateway host is not the auditor's business; whether it plays is.
  for (const op of json.operations) {
    const c = op.classification as Record<string, unknown>;
    if (typeof c.recording === 'string') c.recording = recordingFile(c.recording, recordingRoots) ? 'available' : 'missing';
  }
  const recordings = d.operations.filter((op) => recordingPath(op, recordingRoots)).map((op) => op.seq);
  return { ...json, recordings };
}

/** The asciicast file of operation `seq` of session `id`, only when it lies inside a recordings directory. */
export function recordingFor(store: ConsoleStore, id: string, seq: number, recordingRoots: string[]): string | undefined {
  const op = store.getSession(id)?.operations.find((o) => o.seq === seq);
  return op ? recordingPath(op, recordingRoots) : undefined;
}

function recordingPath(op: OperationRecord, roots: string[]): string | undefined {
  const p = op.classification?.recording;
  return typeof p === 'string' ? recordingFile(p, roots) : undefined;
}

/** `p` resolved through symlinks, if it is a regular .cast file under one of `roots`. */
function recordingFile(p: string, roots: string[]): string | undefined {
  if (!isAbsolute(p) || !p.endsWith('.cast') || !existsSync(p)) return undefined;
  let real: string;
  try {
    real = realpathSync(p);
    if (!statSync(real).isFile()) return undefined;
  } catch {
    return undefined;
  }
  for (const root of roots) {
    let r: string;
    try {
      r = realpathSync(resolve(root));
    } catch {
      continue;
    }
    const rel = relative(r, real);
    if (rel && !rel.startsWith('..') && !isAbsolute(rel)) return real;
  }
  return undefined;
}

export interface ApprovalRequestJson {
  requestId: string;
  /** pending until an outcome (approval.outcome / approval.closed) is recorded. */
  status: string;
  firstAt: string | null;
  lastAt: string | null;
  /** Sessions and operations held for it. */
  operations: { sessionId: string; seq: number; identity: string; connection: string; text: string; decision: string; rule: string | null; outcome: string; approvers: string[] }[];
  history: AuditJson[];
  /** As posted in the local approval channel (text redacted like the store's), while pending. */
  posted?: { identity: string; connection: string; protocol: string; text: string; rule: string; reason: string; deadline: string; approverGroups: string[]; decidedBy: string[] };
}

/** Requests the local approval channel (its tables in the store file) shows as pending; none when
 * the file has no such table. Read-only; free text goes through the audit redaction. */
export function localPending(dbPath: string): { requestId: string; postedAt: number; posted: NonNullable<ApprovalRequestJson['posted']> }[] {
  let db: Database.Database | undefined;
  try {
    db = new Database(dbPath, { readonly: true, fileMustExist: true });
    const has = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'local_approvals'").get();
    if (!has) return [];
    const rows = db.prepare("SELECT request_id, view, posted_at FROM local_approvals WHERE status = 'pending' ORDER BY posted_at DESC LIMIT 500").all() as { request_id: string; view: string; posted_at: number }[];
    return rows.flatMap((r) => {
      let v: Record<string, unknown>;
      try {
        v = JSON.parse(r.view) as Record<string, unknown>;
      } catch {
        return [];
      }
      const text = (k: string) => redactForAudit(typeof v[k] === 'string' ? (v[k] as string) : '');
      const list = (k: string) => (Array.isArray(v[k]) ? (v[k] as unknown[]).filter((x): x is string => typeof x === 'string') : []);
      return [{ requestId: r.request_id, postedAt: r.posted_at, posted: { identity: text('identity'), connection: text('connection'), protocol: text('protocol'), text: text('text'), rule: text('rule'), reason: text('reason'), deadline: text('deadline'), approverGroups: list('approverGroups'), decidedBy: list('decidedBy') } }];
    });
  } catch {
    return [];
  } finally {
    db?.close();
  }
}

/** Every approval request known to the store (audit events and held operations), newest first. */
export function approvalRequests(store: ConsoleStore, status?: string, localChannelDb?: string): ApprovalRequestJson[] {
  const byId = new Map<string, ApprovalRequestJson>();
  const get = (id: string): ApprovalRequestJson => {
    let r = byId.get(id);
    if (!r) {
      r = { requestId: id, status: 'pending', firstAt: null, lastAt: null, operations: [], history: [] };
      byId.set(id, r);
    }
    return r;
  };
  for (const e of store.listAudit()) {
    if (!e.kind.startsWith('approval.') && !e.kind.startsWith('grant.')) continue;
    const r = get(e.subject);
    const j = auditToJson(e);
    r.history.push(j);
    r.firstAt ??= j.at;
    r.lastAt = j.at;
    if (e.kind === 'approval.outcome') r.status = typeof e.detail.outcome === 'string' ? e.detail.outcome : 'decided';
    else if (e.kind === 'approval.closed' && r.status === 'pending') r.status = 'closed';
  }
  for (const s of store.listSessions({ limit: SCAN_LIMIT })) {
    if (s.reviewCount === 0) continue;
    const d = store.getSession(s.id);
    for (const op of d?.operations ?? []) {
      if (!op.approval) continue;
      const r = get(op.approval.requestId);
      r.operations.push(opRef(d!.session, op));
      if (op.approval.outcome && op.approval.outcome !== 'pending' && r.status === 'pending') r.status = op.approval.outcome;
      const at = op.at.toISOString();
      if (!r.firstAt || at < r.firstAt) r.firstAt = at;
      if (!r.lastAt || at > r.lastAt) r.lastAt = at;
    }
  }
  if (localChannelDb) {
    for (const p of localPending(localChannelDb)) {
      const known = byId.get(p.requestId);
      // The store's outcome wins over a channel post not updated yet.
      if (known && known.status !== 'pending') continue;
      const r = get(p.requestId);
      r.posted = p.posted;
      const at = new Date(p.postedAt).toISOString();
      if (!r.firstAt || at < r.firstAt) r.firstAt = at;
      if (!r.lastAt || at > r.lastAt) r.lastAt = at;
    }
  }
  let all = [...byId.values()];
  if (status === 'pending') all = all.filter((r) => r.status === 'pending');
  else if (status === 'decided') all = all.filter((r) => r.status !== 'pending');
  return all.sort((a, b) => (b.lastAt ?? '').localeCompare(a.lastAt ?? ''));
}

function opRef(s: SessionRecord, op: OperationRecord): ApprovalRequestJson['operations'][number] {
  const a = op.approval as NonNullable<OperationRecord['approval']>;
  return { sessionId: s.id, seq: op.seq, identity: s.identity, connection: s.connection, text: op.text, decision: op.decision, rule: op.rule ?? null, outcome: a.outcome, approvers: [...a.approvers] };
}

export interface VerifyStatusJson {
  ok: boolean;
  checkedAt: string;
  entries: number;
  lastSeq: number;
  lastHash: string;
  checkpoints: number;
  signedCheckpoints: number;
  unsignedTail: number;
  signaturesChecked: boolean;
  problems: VerifyReport['problems'];
  notes: string[];
}

export function verifyStatus(store: ConsoleStore, publicKey: KeyObject | undefined): VerifyStatusJson {
  const r = store.verify({ publicKey });
  return {
    ok: r.ok,
    checkedAt: new Date().toISOString(),
    entries: r.entries,
    lastSeq: r.lastSeq,
    lastHash: r.lastHash,
    checkpoints: r.checkpoints,
    signedCheckpoints: r.signedCheckpoints,
    unsignedTail: r.unsignedTail,
    signaturesChecked: publicKey !== undefined,
    problems: r.problems,
    notes: r.notes,
  };
}
