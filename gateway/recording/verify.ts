// Offline verification of the audit store (`airlock audit verify`): the hash chain links, signed
// checkpoints (in the store and in an external anchor file) match it, and the projection tables
// (sessions, operations, audit) are exactly what replaying the chain produces. Every problem names
// the record (session id, operation session#seq, audit event id) and the chain entry.
//
// Works on a read-only handle of the file or a copy; needs only the public key.
import { createHash, type KeyObject } from 'node:crypto';
import type Database from 'better-sqlite3';
import { checkpointSignedBy, entryHash, GENESIS_HASH, canonicalJson, type Checkpoint } from './chain.ts';

export type ProblemKind = 'changed' | 'removed' | 'inserted' | 'signature' | 'unsigned';

export interface Problem {
  kind: ProblemKind;
  /** Chain entry the problem is at (or nearest to); undefined for rows with no entry at all. */
  seq?: number;
  /** The record, e.g. `operation 3f2a9c1e#2`, `session 3f2a9c1e`, `audit event 17`, `chain entry #57`. */
  record: string;
  message: string;
}

export interface VerifyOptions {
  /** Check checkpoint signatures with this key; without it signatures are not checked. */
  publicKey?: KeyObject;
  /** Verify what was recorded since the last signed checkpoint at or before this time. */
  from?: Date;
  /** Checkpoints kept outside the store (the anchor file), oldest first. */
  anchored?: Checkpoint[];
}

export interface VerifyReport {
  ok: boolean;
  /** Sorted by chain position; problems[0] is the first record that was changed, removed or inserted. */
  problems: Problem[];
  firstSeq: number;
  lastSeq: number;
  /** Stored hash of entry lastSeq ('' when the chain is empty). */
  lastHash: string;
  entries: number;
  /** Checkpoints whose signature was checked and is valid. */
  signedCheckpoints: number;
  checkpoints: number;
  /** Entries after the last checkpoint (not yet covered by a signature). */
  unsignedTail: number;
  notes: string[];
}

interface CheckpointRow {
  seq: number;
  base: number;
  at: string;
  hash: string;
  key_id: string;
  sig: string;
}

interface JournalRow {
  seq: number;
  kind: string;
  entity: string;
  item: number | null;
  entry: string;
  hash: string;
}

interface Tracked {
  seq: number;
  digest: string;
}

interface SessionState {
  seq: number;
  data: Record<string, unknown>;
  /** Only the end is known (verification started after the session's start). */
  partial: boolean;
}

const SESSION_END_FIELDS = ['endedAt', 'endReason', 'toClient', 'fromClient'];

export function checkpointFromRow(r: CheckpointRow): Checkpoint {
  return { v: 1, type: 'airlock.audit.checkpoint', seq: r.seq, hash: r.hash, at: r.at, keyId: r.key_id, base: r.base === 1, sig: r.sig };
}

/** Column values of a row, keyed as in chain entries (see chain.ts). */
export function sessionRowData(r: Record<string, unknown>): Record<string, unknown> {
  return {
    id: r.id,
    protocol: r.protocol,
    identity: r.identity,
    groups: r.groups,
    connection: r.connection,
    clientAddress: r.client_address,
    startedAt: r.started_at,
    endedAt: r.ended_at ?? null,
    endReason: r.end_reason ?? null,
    toClient: r.bytes_to_client,
    fromClient: r.bytes_from_client,
    // Absent before schema version 3 and in entries written before it: compared as null then.
    ...(r.instance ? { instance: r.instance } : {}),
  };
}

export function operationRowData(r: Record<string, unknown>): Record<string, unknown> {
  return {
    sessionId: r.session_id,
    seq: r.seq,
    at: r.at,
    text: r.text,
    kind: r.kind,
    classification: r.classification,
    decision: r.decision,
    rule: r.rule ?? null,
    reason: r.reason ?? null,
    rows: r.rows ?? null,
    bytes: r.bytes ?? null,
    maskedColumns: r.masked_columns,
    error: r.error ?? null,
    durationMs: r.duration_ms ?? null,
    approval: r.approval ?? null,
  };
}

export function auditRowData(r: Record<string, unknown>): Record<string, unknown> {
  return { id: r.id, at: r.at, kind: r.kind, subject: r.subject, actor: r.actor ?? null, detail: r.detail };
}

function digest(data: Record<string, unknown>): string {
  return createHash('sha256').update(canonicalJson(data)).digest('base64');
}

function opKey(sessionId: unknown, seq: unknown): string {
  return `${String(sessionId)}\u0000${String(seq)}`;
}

function opName(sessionId: unknown, seq: unknown): string {
  return `operation ${String(sessionId)}#${String(seq)}`;
}

/** Fields whose values differ between the chain's version and the row. */
function differingFields(expected: Record<string, unknown>, actual: Record<string, unknown>, only?: string[]): string[] {
  const keys = only ?? [...new Set([...Object.keys(expected), ...Object.keys(actual)])];
  return keys.filter((k) => canonicalJson(expected[k] ?? null) !== canonicalJson(actual[k] ?? null));
}

export function verifyAuditDb(db: Database.Database, opts: VerifyOptions = {}): VerifyReport {
  const problems: Problem[] = [];
  const notes: string[] = [];
  const cpRows = db.prepare('SELECT seq, base, at, hash, key_id, sig FROM checkpoints ORDER BY seq, base').all() as CheckpointRow[];
  const stored = cpRows.map(checkpointFromRow);
  const bases = stored.filter((c) => c.base);
  const base = bases.length ? bases[bases.length - 1] : undefined;
  const pub = opts.publicKey;
  const signedOk = (c: Checkpoint) => (pub ? checkpointSignedBy(c, pub) : false);

  // Where the check starts, and the hash the first checked entry must link to.
  let start = base ? base.seq + 1 : 1;
  let prevHash = base ? base.hash : GENESIS_HASH;
  let partial = false;
  if (base && pub && !signedOk(base)) {
    problems.push({ kind: 'signature', seq: base.seq, record: `prune checkpoint #${base.seq}`, message: `the checkpoint the chain starts from (entries up to #${base.seq} were pruned) is not signed by the given key: a prefix of the chain may have been removed` });
  }
  if (opts.from) {
    const fromIso = opts.from.toISOString();
    const candidates = stored.filter((c) => !c.base && c.seq >= start - 1 && c.at <= fromIso && (!pub || signedOk(c)));
    const cp = candidates[candidates.length - 1];
    if (cp) {
      start = cp.seq + 1;
      prevHash = cp.hash;
      partial = true;
      notes.push(`verified from checkpoint #${cp.seq} (${cp.at}), the last ${pub ? 'signed ' : ''}checkpoint at or before ${fromIso}`);
    } else notes.push(`no checkpoint at or before ${fromIso}: verified from the start of the chain`);
  }

  // Hashes at the checkpointed positions, as recomputed from the content.
  const wanted = new Set<number>([...stored, ...(opts.anchored ?? [])].map((c) => c.seq));
  const hashAt = new Map<number, string>();
  const sessions = new Map<string, SessionState>();
  const ops = new Map<string, Tracked>();
  const audits = new Map<string, Tracked>();

  let expected = start;
  let firstSeq = 0;
  let lastSeq = start - 1;
  let entries = 0;
  let lastHash = '';
  const iter = db.prepare('SELECT seq, kind, entity, item, entry, hash FROM journal WHERE seq >= ? ORDER BY seq').iterate(start) as IterableIterator<JournalRow>;
  for (const row of iter) {
    entries++;
    if (firstSeq === 0) firstSeq = row.seq;
    const gap = row.seq !== expected;
    if (gap) {
      problems.push({ kind: 'removed', seq: expected, record: `chain entries #${expected}..#${row.seq - 1}`, message: `chain entries #${expected} to #${row.seq - 1} were removed` });
    }
    let entry: { seq?: unknown; kind?: unknown; at?: unknown; data?: Record<string, unknown> } = {};
    try {
      entry = JSON.parse(row.entry) as typeof entry;
    } catch {
      // reported below as a hash mismatch
    }
    if (entry.seq !== row.seq) {
      problems.push({ kind: 'inserted', seq: row.seq, record: `chain entry #${row.seq}`, message: `chain entry at position #${row.seq} says it is #${String(entry.seq)}: entries were inserted or removed before it` });
    } else if (!gap && entryHash(prevHash, row.entry) !== row.hash) {
      problems.push({ kind: 'changed', seq: row.seq, record: `chain entry #${row.seq}${describeEntry(entry)}`, message: `chain entry #${row.seq} was changed or inserted: its hash does not match its content and the entry before it` });
    }
    // The unhashed index columns steer prune: they must agree with the entry.
    const idx = indexOf(entry);
    if (idx && (row.kind !== entry.kind || row.entity !== idx.entity || row.item !== idx.item)) {
      problems.push({ kind: 'changed', seq: row.seq, record: `chain entry #${row.seq}${describeEntry(entry)}`, message: `the index columns of chain entry #${row.seq} (kind, entity, item) were changed` });
    }
    // Continue from the stored hash, so one change is reported once and not at every later entry;
    // a chain recomputed after a change is caught by the signed checkpoints instead.
    prevHash = row.hash;
    if (wanted.has(row.seq)) hashAt.set(row.seq, row.hash);
    lastSeq = row.seq;
    lastHash = row.hash;
    expected = row.seq + 1;
    replay(entry, row.seq, partial, sessions, ops, audits);
  }
  // Checkpoints in the store and outside it must match the chain.
  let signed = 0;
  const checkCp = (c: Checkpoint, where: string) => {
    if (c.seq < start - 1 || (c.base && c === base)) return;
    if (pub) {
      if (checkpointSignedBy(c, pub)) signed++;
      else problems.push({ kind: 'signature', seq: c.seq, record: `${where} checkpoint #${c.seq}`, message: `${where} checkpoint #${c.seq} (${c.at}) is not signed by the given key` });
    }
    if (c.seq > lastSeq) {
      problems.push({ kind: 'removed', seq: lastSeq + 1, record: `chain entries after #${lastSeq}`, message: `${where} checkpoint #${c.seq} (${c.at}) covers entries the store no longer has: entries #${lastSeq + 1} to #${c.seq} were removed` });
      return;
    }
    const h = c.seq === start - 1 ? undefined : hashAt.get(c.seq);
    if (h !== undefined && h !== c.hash) {
      problems.push({ kind: 'changed', seq: c.seq, record: `chain up to #${c.seq}`, message: `the chain up to entry #${c.seq} no longer matches the ${where} checkpoint signed at ${c.at}: entries at or before #${c.seq} were changed and the chain recomputed` });
    }
  };
  for (const c of stored) checkCp(c, 'stored');
  const anchored = opts.anchored ?? [];
  for (const c of anchored) {
    if (base && c.seq < base.seq) continue;
    checkCp(c, 'anchored');
  }
  if (!pub) notes.push('signatures not checked: give --public-key (or configure audit.signingKey)');
  const covered = Math.max(0, ...stored.filter((c) => !c.base).map((c) => c.seq), ...anchored.map((c) => c.seq));
  const unsignedTail = Math.max(0, lastSeq - Math.max(covered, start - 1));

  compareProjection(db, problems, sessions, ops, audits, partial ? opts.from : undefined);

  problems.sort((a, b) => (a.seq ?? Number.MAX_SAFE_INTEGER) - (b.seq ?? Number.MAX_SAFE_INTEGER));
  return { ok: problems.length === 0, problems, firstSeq, lastSeq, lastHash, entries, signedCheckpoints: signed, checkpoints: stored.length + anchored.length, unsignedTail, notes };
}

/** The journal's index columns for an entry, as the store writes them. */
function indexOf(e: { kind?: unknown; data?: Record<string, unknown> }): { entity: string; item: number | null } | undefined {
  const d = e.data;
  if (!d || typeof d !== 'object') return undefined;
  if (e.kind === 'operation') return { entity: `s:${String(d.sessionId)}`, item: Number(d.seq) };
  if (typeof e.kind === 'string' && e.kind.startsWith('session.')) return { entity: `s:${String(d.id)}`, item: null };
  if (e.kind === 'audit') return { entity: `a:${String(d.id)}`, item: null };
  if (e.kind === 'prune') return { entity: '', item: null };
  return undefined;
}

function describeEntry(e: { kind?: unknown; data?: Record<string, unknown> }): string {
  const d = e.data ?? {};
  if (e.kind === 'operation') return ` (${opName(d.sessionId, d.seq)})`;
  if (typeof e.kind === 'string' && e.kind.startsWith('session.')) return ` (session ${String(d.id)})`;
  if (e.kind === 'audit') return ` (audit event ${String(d.id)})`;
  return '';
}

/** Applies one entry to the replayed projection (the same semantics as the store's writes). */
function replay(
  entry: { kind?: unknown; data?: Record<string, unknown> },
  seq: number,
  partial: boolean,
  sessions: Map<string, SessionState>,
  ops: Map<string, Tracked>,
  audits: Map<string, Tracked>,
): void {
  const d = entry.data;
  if (!d || typeof d !== 'object') return;
  switch (entry.kind) {
    case 'session.start': {
      const id = String(d.id);
      const cur = sessions.get(id);
      if (cur && !cur.partial) return; // ON CONFLICT DO NOTHING
      sessions.set(id, { seq, partial: false, data: { ...d, endedAt: null, endReason: null, toClient: 0, fromClient: 0, ...(cur?.data ?? {}) } });
      return;
    }
    case 'session.end': {
      const id = String(d.id);
      const cur = sessions.get(id);
      const end = { endedAt: d.endedAt, endReason: d.reason, toClient: d.toClient, fromClient: d.fromClient };
      if (cur) sessions.set(id, { seq, partial: cur.partial, data: { ...cur.data, ...end } });
      else if (partial) sessions.set(id, { seq, partial: true, data: { id, ...end } });
      return;
    }
    case 'session.snapshot':
      sessions.set(String(d.id), { seq, partial: false, data: { ...d } });
      return;
    case 'operation':
      ops.set(opKey(d.sessionId, d.seq), { seq, digest: digest(d) });
      return;
    case 'audit':
      audits.set(String(d.id), { seq, digest: digest(d) });
      return;
    default:
      return;
  }
}

function entryData(db: Database.Database, seq: number): Record<string, unknown> {
  const row = db.prepare('SELECT entry FROM journal WHERE seq = ?').get(seq) as { entry: string } | undefined;
  try {
    return (JSON.parse(row?.entry ?? '{}') as { data?: Record<string, unknown> }).data ?? {};
  } catch {
    return {};
  }
}

function compareProjection(
  db: Database.Database,
  problems: Problem[],
  sessions: Map<string, SessionState>,
  ops: Map<string, Tracked>,
  audits: Map<string, Tracked>,
  from: Date | undefined,
): void {
  const since = from ? from.getTime() : undefined;
  const seen = new Set<string>();
  for (const r of db.prepare('SELECT * FROM sessions').iterate() as IterableIterator<Record<string, unknown>>) {
    const row = sessionRowData(r);
    const id = String(row.id);
    const st = sessions.get(id);
    if (!st) {
      if (since === undefined || Number(row.startedAt) >= since) {
        problems.push({ kind: 'inserted', record: `session ${id}`, message: `session ${id} is in the store but not in the chain (inserted)` });
      }
      continue;
    }
    seen.add(id);
    const diff = differingFields(st.data, row, st.partial ? SESSION_END_FIELDS : undefined);
    if (diff.length) problems.push({ kind: 'changed', seq: st.seq, record: `session ${id}`, message: `session ${id} was changed: ${diff.join(', ')} differ from chain entry #${st.seq}` });
  }
  for (const [id, st] of sessions) {
    if (!seen.has(id)) problems.push({ kind: 'removed', seq: st.seq, record: `session ${id}`, message: `session ${id} (chain entry #${st.seq}) was removed from the store` });
  }

  seen.clear();
  for (const r of db.prepare('SELECT * FROM operations').iterate() as IterableIterator<Record<string, unknown>>) {
    const row = operationRowData(r);
    const key = opKey(row.sessionId, row.seq);
    const st = ops.get(key);
    const name = opName(row.sessionId, row.seq);
    if (!st) {
      if (since === undefined || Number(row.at) >= since) problems.push({ kind: 'inserted', record: name, message: `${name} is in the store but not in the chain (inserted)` });
      continue;
    }
    seen.add(key);
    if (digest(row) !== st.digest) {
      const diff = differingFields(entryData(db, st.seq), row);
      problems.push({ kind: 'changed', seq: st.seq, record: name, message: `${name} was changed: ${diff.join(', ') || 'content'} differ from chain entry #${st.seq}` });
    }
  }
  for (const [key, st] of ops) {
    if (seen.has(key)) continue;
    const [sid, seq] = key.split('\u0000');
    const name = opName(sid, seq);
    problems.push({ kind: 'removed', seq: st.seq, record: name, message: `${name} (chain entry #${st.seq}) was removed from the store` });
  }

  seen.clear();
  for (const r of db.prepare('SELECT * FROM audit').iterate() as IterableIterator<Record<string, unknown>>) {
    const row = auditRowData(r);
    const id = String(row.id);
    const st = audits.get(id);
    const name = `audit event ${id} (${String(row.kind)} ${String(row.subject)})`;
    if (!st) {
      if (since === undefined || Number(row.at) >= since) problems.push({ kind: 'inserted', record: name, message: `${name} is in the store but not in the chain (inserted)` });
      continue;
    }
    seen.add(id);
    if (digest(row) !== st.digest) {
      const diff = differingFields(entryData(db, st.seq), row);
      problems.push({ kind: 'changed', seq: st.seq, record: name, message: `${name} was changed: ${diff.join(', ') || 'content'} differ from chain entry #${st.seq}` });
    }
  }
  for (const [id, st] of audits) {
    if (seen.has(id)) continue;
    const d = entryData(db, st.seq);
    const name = `audit event ${id} (${String(d.kind)} ${String(d.subject)})`;
    problems.push({ kind: 'removed', seq: st.seq, record: name, message: `${name} (chain entry #${st.seq}) was removed from the store` });
  }
}

/** One line per problem, the first one marked: what `airlock audit verify` prints. */
export function formatVerifyReport(r: VerifyReport): string {
  const lines: string[] = [];
  if (r.ok) {
    lines.push(`audit chain OK: ${r.entries} entries (#${r.firstSeq || 0}..#${r.lastSeq}), ${r.signedCheckpoints} of ${r.checkpoints} checkpoints verified by signature`);
  } else {
    const first = r.problems[0];
    lines.push(`audit chain FAILED: ${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}`);
    lines.push(`first: ${first.record}: ${first.message}`);
    for (const p of r.problems.slice(1, 50)) lines.push(`  ${p.record}: ${p.message}`);
    if (r.problems.length > 50) lines.push(`  … ${r.problems.length - 50} more`);
  }
  if (r.unsignedTail > 0) lines.push(`note: the last ${r.unsignedTail} entries are not yet covered by a signed checkpoint`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  return lines.join('\n') + '\n';
}
