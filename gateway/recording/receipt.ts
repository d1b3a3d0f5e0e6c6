// Approval receipts: one signed JSON document per decided approval request, tying together what
// was asked (the operation as stored: redacted text, parameters digest, connection, identity), who
// decided and how (approvers, times, channel), what ran afterwards (command tag, rows, errors as
// reported to the approval workflow and recorded as `approval.result`), and a digest of the log of
// every session the request held an operation in. Signed with the audit key (audit.signingKey,
// Ed25519) over canonical JSON, so the public key alone verifies it, away from the store.
import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { canonicalJson, keyId } from './chain.ts';
import { auditToJson, sessionDetailToJson, type AuditJson } from './format.ts';
import type { AuditEvent, OperationRecord, SessionRecord } from './store.ts';

export const RECEIPT_TYPE = 'airlock.approval.receipt';

export interface ReceiptStore {
  listSessions(f?: { limit?: number }): (SessionRecord & { reviewCount: number })[];
  getSession(id: string): { session: SessionRecord; operations: OperationRecord[] } | undefined;
  listAudit(subject?: string): AuditEvent[];
}

export interface ReceiptBody {
  v: 1;
  type: typeof RECEIPT_TYPE;
  requestId: string;
  issuedAt: string;
  /** Each operation held for the request (a grant can cover several). */
  operations: {
    sessionId: string;
    seq: number;
    at: string;
    protocol: string;
    identity: string;
    groups: string[];
    connection: string;
    /** The operation text as stored (redacted: literals that looked sensitive are replaced). */
    text: string;
    /** sha256 of `text`, so a receipt can be matched against a copy of the store. */
    textDigest: string;
    /** Keyed digest of the exact parameter values when the gateway recorded one, else null. */
    parametersDigest: string | null;
    rule: string | null;
    decision: string;
    outcome: string;
    approvers: string[];
    /** What the gateway recorded when the operation ran (or was refused). */
    ran: { rows: number | null; error: string | null; durationMs: number | null };
  }[];
  decision: {
    outcome: string;
    approvers: string[];
    rejectedBy: string | null;
    reason: string | null;
    decidedAt: string | null;
    /** Every decision attempt, valid or refused: who, when, through which channel. */
    attempts: { at: string | null; kind: string; actor: string | null; decision: string | null; via: string | null }[];
  };
  /** What the approval workflow was told ran (approval.result events). */
  results: { at: string | null; sessionId: string | null; tag: string | null; rows: number | null; error: string | null; summary: string | null }[];
  /** sha256 of the canonical JSON of each held session's log (sessions show --json, without audit). */
  sessionLogDigests: Record<string, string>;
  /** sha256 of the canonical JSON of the request's audit events as stored. */
  auditDigest: string;
}

export interface Receipt {
  receipt: ReceiptBody;
  signature: { alg: 'Ed25519'; keyId: string; sig: string };
}

export class ReceiptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReceiptError';
  }
}

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** The request's held operations, newest sessions first in the scan, returned in time order. */
function heldOperations(store: ReceiptStore, requestId: string): { session: SessionRecord; op: OperationRecord; all: { session: SessionRecord; operations: OperationRecord[] } }[] {
  const out: { session: SessionRecord; op: OperationRecord; all: { session: SessionRecord; operations: OperationRecord[] } }[] = [];
  for (const s of store.listSessions({ limit: 100_000 })) {
    if (s.reviewCount === 0) continue;
    const d = store.getSession(s.id);
    if (!d) continue;
    for (const op of d.operations) if (op.approval?.requestId === requestId) out.push({ session: d.session, op, all: d });
  }
  return out.sort((a, b) => a.op.at.getTime() - b.op.at.getTime());
}

/** Builds the receipt body; ReceiptError when the request is unknown or not decided yet. */
export function receiptBody(store: ReceiptStore, requestId: string, now = new Date()): ReceiptBody {
  const audit = store.listAudit(requestId);
  const held = heldOperations(store, requestId);
  if (audit.length === 0 && held.length === 0) throw new ReceiptError(`no approval request ${requestId} in the audit store`);
  const outcomeEvent = [...audit].reverse().find((e) => e.kind === 'approval.outcome');
  const opOutcome = held.find((h) => h.op.approval && h.op.approval.outcome !== 'pending')?.op.approval;
  const outcome = str(outcomeEvent?.detail.outcome) ?? opOutcome?.outcome;
  if (!outcome || outcome === 'pending') throw new ReceiptError(`approval request ${requestId} is not decided yet`);
  const approvers = Array.isArray(outcomeEvent?.detail.approvers) ? (outcomeEvent!.detail.approvers as unknown[]).filter((a): a is string => typeof a === 'string') : (opOutcome?.approvers ?? []);
  const auditJson: AuditJson[] = audit.map(auditToJson);
  const sessions = new Map(held.map((h) => [h.session.id, h.all]));
  return {
    v: 1,
    type: RECEIPT_TYPE,
    requestId,
    issuedAt: now.toISOString(),
    operations: held.map(({ session, op }) => ({
      sessionId: session.id,
      seq: op.seq,
      at: op.at.toISOString(),
      protocol: session.protocol,
      identity: session.identity,
      groups: [...session.groups],
      connection: session.connection,
      text: op.text,
      textDigest: sha256(op.text),
      parametersDigest: str(op.classification.parameterDigest),
      rule: op.rule ?? null,
      decision: op.decision,
      outcome: op.approval?.outcome ?? 'unknown',
      approvers: [...(op.approval?.approvers ?? [])],
      ran: { rows: op.rows ?? null, error: op.error ?? null, durationMs: op.durationMs ?? null },
    })),
    decision: {
      outcome,
      approvers,
      rejectedBy: str(outcomeEvent?.detail.rejectedBy),
      reason: str(outcomeEvent?.detail.reason) ?? opOutcome?.reason ?? null,
      decidedAt: outcomeEvent ? outcomeEvent.at.toISOString() : null,
      attempts: auditJson
        .filter((e) => e.kind.startsWith('approval.decision'))
        .map((e) => {
          const d = e.detail as Record<string, unknown>;
          return { at: e.at, kind: e.kind, actor: e.actor, decision: str(d.decision), via: str(d.via) };
        }),
    },
    results: auditJson
      .filter((e) => e.kind === 'approval.result')
      .map((e) => {
        const d = e.detail as Record<string, unknown>;
        return { at: str(d.at) ?? e.at, sessionId: str(d.sessionId), tag: str(d.tag), rows: num(d.rows), error: str(d.error), summary: str(d.summary) };
      }),
    sessionLogDigests: Object.fromEntries([...sessions].map(([id, d]) => [id, sha256(canonicalJson(sessionDetailToJson(d)))])),
    auditDigest: sha256(canonicalJson(auditJson)),
  };
}

export function signReceipt(body: ReceiptBody, key: KeyObject): Receipt {
  if (key.type !== 'private') throw new ReceiptError('signing a receipt needs the private audit key (audit.signingKey)');
  return { receipt: body, signature: { alg: 'Ed25519', keyId: keyId(key), sig: sign(null, Buffer.from(canonicalJson(body)), key).toString('base64') } };
}

export interface ReceiptCheck {
  ok: boolean;
  reason?: string;
  requestId?: string;
  keyId?: string;
}

/** Verifies a receipt document (parsed JSON or text) with the public key alone. */
export function verifyReceipt(doc: unknown, publicKey: KeyObject): ReceiptCheck {
  let r: unknown = doc;
  if (typeof doc === 'string') {
    try {
      r = JSON.parse(doc);
    } catch {
      return { ok: false, reason: 'not JSON' };
    }
  }
  if (!r || typeof r !== 'object') return { ok: false, reason: 'not a receipt' };
  const { receipt, signature } = r as Partial<Receipt>;
  if (!receipt || typeof receipt !== 'object' || receipt.type !== RECEIPT_TYPE || receipt.v !== 1) return { ok: false, reason: `not an ${RECEIPT_TYPE} v1 document` };
  if (!signature || signature.alg !== 'Ed25519' || typeof signature.sig !== 'string') return { ok: false, reason: 'no Ed25519 signature', requestId: receipt.requestId };
  const pub = publicKey.type === 'private' ? createPublicKey(publicKey) : publicKey;
  const id = keyId(pub);
  if (signature.keyId !== id) return { ok: false, reason: `signed by key ${String(signature.keyId)}, not by ${id}`, requestId: receipt.requestId, keyId: signature.keyId };
  let good = false;
  try {
    good = verify(null, Buffer.from(canonicalJson(receipt)), pub, Buffer.from(signature.sig, 'base64'));
  } catch {
    good = false;
  }
  return good ? { ok: true, requestId: receipt.requestId, keyId: id } : { ok: false, reason: 'the signature does not match the receipt: it was changed or signed by another key', requestId: receipt.requestId, keyId: id };
}
