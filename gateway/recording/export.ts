// Audit export for SIEMs: the hash-chained journal (chain.ts) read in order, each entry as one
// JSON line (`jsonl`: Airlock's own shape) or as an OCSF event (`ocsf`: Authentication for session
// start/end, Datastore Activity for PostgreSQL operations, API Activity for HTTP/SSH/Kubernetes
// operations and approval events). The journal's seq is the export position: strictly increasing,
// so a consumer that remembers the last seq it stored resumes without gaps (at least once).
// Only what the store holds is exported, and the store holds redacted text only.
import Database from 'better-sqlite3';

export type ExportFormat = 'jsonl' | 'ocsf';

export interface JournalRecord {
  seq: number;
  kind: string;
  /** ms since epoch */
  at: number;
  data: Record<string, unknown>;
}

/** A read-only view of a store file's journal (a separate connection: never blocks the writer). */
export class JournalReader {
  private readonly db: Database.Database;
  private readonly page: Database.Statement;
  private readonly head: Database.Statement;
  private readonly session: Database.Statement;
  private readonly nextAt: Database.Statement;
  private readonly protocols = new Map<string, string>();

  constructor(path: string) {
    this.db = new Database(path, { readonly: true, fileMustExist: true });
    this.db.pragma('busy_timeout = 2000');
    this.page = this.db.prepare('SELECT seq, kind, at, entry FROM journal WHERE seq > ? AND at >= ? ORDER BY seq LIMIT ?');
    this.head = this.db.prepare('SELECT max(seq) AS seq FROM journal');
    this.session = this.db.prepare('SELECT protocol FROM sessions WHERE id = ?');
    this.nextAt = this.db.prepare('SELECT at FROM journal WHERE seq > ? ORDER BY seq LIMIT 1');
  }

  /** Entries after `afterSeq` (and at or after `since`), oldest first, at most `limit`. */
  read(afterSeq: number, limit: number, since = 0): JournalRecord[] {
    const rows = this.page.all(afterSeq, since, limit) as { seq: number; kind: string; at: number; entry: string }[];
    return rows.map((r) => {
      const e = JSON.parse(r.entry) as { data?: Record<string, unknown> };
      return { seq: r.seq, kind: r.kind, at: r.at, data: expand(e.data ?? {}) };
    });
  }

  /** When (epoch ms) the first entry after `afterSeq` was recorded; undefined when there is none. */
  firstAtAfter(afterSeq: number): number | undefined {
    return (this.nextAt.get(afterSeq) as { at: number } | undefined)?.at;
  }

  headSeq(): number {
    return (this.head.get() as { seq: number | null }).seq ?? 0;
  }

  /** The protocol of a session (for the OCSF class of its operations). */
  protocolOf(sessionId: string): string {
    let p = this.protocols.get(sessionId);
    if (p === undefined) {
      p = (this.session.get(sessionId) as { protocol: string } | undefined)?.protocol ?? '';
      if (this.protocols.size > 10_000) this.protocols.clear();
      this.protocols.set(sessionId, p);
    }
    return p;
  }

  close(): void {
    this.db.close();
  }
}

// Rows keep JSON columns as text (groups, classification, detail ...): export them as values.
const JSON_FIELDS = ['groups', 'classification', 'maskedColumns', 'approval', 'detail'];
function expand(data: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...data };
  for (const k of JSON_FIELDS) {
    if (typeof out[k] === 'string') {
      try {
        out[k] = JSON.parse(out[k] as string);
      } catch {
        // kept as text
      }
    }
  }
  return out;
}

/** One record in Airlock's own export shape (`--format jsonl`): the journal position, the entry
 * kind, its time, and the record as the chain holds it. */
export function toJsonl(r: JournalRecord): Record<string, unknown> {
  return { seq: r.seq, type: r.kind, time: new Date(r.at).toISOString(), record: r.data };
}

const OCSF_VERSION = '1.3.0';
const PRODUCT = { name: 'Airlock', vendor_name: 'Airlock', feature: { name: 'audit' } };

/** OCSF classes used (class_uid): Authentication 3002, API Activity 6003, Datastore Activity 6005. */
export const OCSF_CLASSES = { authentication: 3002, apiActivity: 6003, datastoreActivity: 6005 } as const;

/** One record as an OCSF event (`--format ocsf`); `protocolOf` gives an operation's session protocol. */
export function toOcsf(r: JournalRecord, protocolOf: (sessionId: string) => string): Record<string, unknown> {
  const d = r.data;
  const metadata = { version: OCSF_VERSION, product: PRODUCT, uid: `airlock-journal-${r.seq}`, sequence: r.seq, log_name: 'airlock.audit', original_time: new Date(r.at).toISOString() };
  const base = { time: r.at, metadata, severity_id: 1, severity: 'Informational' };
  if (r.kind === 'session.start' || r.kind === 'session.end' || r.kind === 'session.snapshot') {
    const logon = r.kind !== 'session.end';
    const activity_id = logon ? 1 : 2;
    return {
      ...base,
      category_uid: 3,
      category_name: 'Identity & Access Management',
      class_uid: OCSF_CLASSES.authentication,
      class_name: 'Authentication',
      activity_id,
      activity_name: logon ? 'Logon' : 'Logoff',
      type_uid: OCSF_CLASSES.authentication * 100 + activity_id,
      status_id: 1,
      status: 'Success',
      session: { uid: d.id },
      ...(logon ? { actor: { user: { name: d.identity, groups: groupList(d.groups) } }, user: { name: d.identity }, src_endpoint: endpoint(d.clientAddress), dst_endpoint: { svc_name: d.connection }, auth_protocol: d.protocol } : {}),
      ...(!logon ? { message: d.reason } : {}),
      unmapped: { airlock: { kind: r.kind, ...d } },
    };
  }
  if (r.kind === 'operation') {
    const protocol = protocolOf(String(d.sessionId));
    const denied = d.decision === 'deny';
    const failed = denied || (typeof d.error === 'string' && d.error !== '');
    const common = {
      ...base,
      severity_id: denied ? 3 : 1,
      severity: denied ? 'Medium' : 'Informational',
      category_uid: 6,
      category_name: 'Application Activity',
      status_id: failed ? 2 : 1,
      status: failed ? 'Failure' : 'Success',
      status_detail: d.error ?? d.reason ?? undefined,
      disposition_id: denied ? 2 : 1,
      disposition: denied ? 'Blocked' : 'Allowed',
      session: { uid: d.sessionId },
      firewall_rule: d.rule ? { name: d.rule } : undefined,
      unmapped: { airlock: { kind: r.kind, protocol, ...d } },
    };
    if (protocol === 'postgres') {
      const activity_id = 4; // Query
      return {
        ...common,
        class_uid: OCSF_CLASSES.datastoreActivity,
        class_name: 'Datastore Activity',
        activity_id,
        activity_name: 'Query',
        type_uid: OCSF_CLASSES.datastoreActivity * 100 + activity_id,
        query_info: { query_string: d.text },
        database: { type_id: 99, type: 'PostgreSQL' },
      };
    }
    const activity_id = 99;
    return {
      ...common,
      class_uid: OCSF_CLASSES.apiActivity,
      class_name: 'API Activity',
      activity_id,
      activity_name: 'Other',
      type_uid: OCSF_CLASSES.apiActivity * 100 + activity_id,
      api: { operation: d.text, service: { name: protocol || 'unknown' } },
    };
  }
  // Audit events (approval decisions, outcomes, results, grants) and prunes.
  const activity_id = 99;
  return {
    ...base,
    category_uid: 6,
    category_name: 'Application Activity',
    class_uid: OCSF_CLASSES.apiActivity,
    class_name: 'API Activity',
    activity_id,
    activity_name: 'Other',
    type_uid: OCSF_CLASSES.apiActivity * 100 + activity_id,
    status_id: 1,
    status: 'Success',
    actor: d.actor ? { user: { name: d.actor } } : undefined,
    api: { operation: d.kind ?? r.kind, request: { uid: d.subject } },
    unmapped: { airlock: { kind: r.kind, ...d } },
  };
}

function groupList(g: unknown): { name: string }[] {
  return Array.isArray(g) ? g.filter((x): x is string => typeof x === 'string').map((name) => ({ name })) : [];
}

function endpoint(addr: unknown): Record<string, unknown> | undefined {
  if (typeof addr !== 'string') return undefined;
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(addr);
  return m ? { ip: m[1], port: Number(m[2]) } : { ip: addr };
}

export function formatRecord(r: JournalRecord, format: ExportFormat, reader: Pick<JournalReader, 'protocolOf'>): string {
  return JSON.stringify(format === 'ocsf' ? toOcsf(r, (id) => reader.protocolOf(id)) : toJsonl(r));
}
