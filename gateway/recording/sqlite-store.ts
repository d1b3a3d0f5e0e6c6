// The embedded audit store: one SQLite file (better-sqlite3) shared by the gateway, which writes,
// and the CLI (`airlock sessions`), which reads, possibly at the same time. WAL lets readers and
// the writer proceed concurrently; busy_timeout absorbs the short write locks between processes.
//
// Writes sit on the proxies' hot path and the Store interface is synchronous, so a write never
// throws: a failed write is logged, counted and retried in order (later writes queue behind it so
// an endSession never overtakes its startSession). Opening and migrating, on the other hand, fail
// loudly with StoreOpenError: a gateway that cannot record must not start.
//
// Durability is a policy (audit.onFailure). 'closed' (default): a record that cannot be written is
// kept and retried until it is written; while records wait longer than maxPendingMs, more than
// maxPending wait, or the last failure was not a lock (disk full, I/O error), health() is not ok and
// assertWritable() throws AuditUnavailableError so the enforcement seam refuses new sessions and
// operations. 'open': the same health, but writable() stays true and the oldest records are dropped
// past maxPending.
//
// Tamper evidence (chain.ts): each write appends a hash-chained journal entry in the same
// transaction as the projection row; the chain head is signed every checkpointEvery entries or
// checkpointIntervalMs, and on close. Free text is redacted (redact.ts) before it is kept.
import Database from 'better-sqlite3';
import type { KeyObject } from 'node:crypto';
import { appendFileSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { log } from '../log.ts';
import type { DecisionAction } from '../policy/decision.ts';
import { entryHash, entryText, GENESIS_HASH, makeCheckpoint, type Checkpoint, type EntryKind } from './chain.ts';
import { redactedJson, redactForAudit, safeJson, wellFormed } from './redact.ts';
import { elevationRow, toElevation, type ElevationRow } from './elevation-rows.ts';
import { assertAuditWritable, auditHealth, type AuditEvent, type ElevationRecord, type AuditFailurePolicy, type AuditHealth, type OperationRecord, type SessionFilter, type SessionRecord, type SessionStart, type Store } from './store.ts';
import { verifyAuditDb, type VerifyReport } from './verify.ts';
import { idpIdentityData, registrationEvent, toIdpIdentity, type IdpIdentity, type IdpIdentityRow } from './identity-registry.ts';
import { DEFAULT_INSTANCE_LEASE_MS, instanceIdentity, peerIsDead, type InstanceIdentity, type InstanceRow, type OrphanClaim } from './instances.ts';

/** A session plus counts of what happened in it, for listings. */
export interface SessionSummary extends SessionRecord {
  operationCount: number;
  /** Operations the policy denied. */
  deniedCount: number;
  /** Operations held for human approval (whatever the outcome). */
  reviewCount: number;
  /** Operations whose results had values masked. */
  maskedCount: number;
  /** Operations that ended in an error (limit hit, cancel, upstream error). */
  errorCount: number;
}

export interface StoreStats {
  /** Writes committed since open. */
  writes: number;
  /** Write attempts that failed (each retry counts). */
  failures: number;
  /** Writes waiting for a retry. */
  pending: number;
  /** Writes given up on (queue overflow, persistent non-transient error, close with a backlog). */
  dropped: number;
  lastError?: string;
}

/** prune() refused: the chain does not verify, and pruning would hide the evidence. */
export class PruneRefusedError extends Error {
  constructor(readonly report: VerifyReport) {
    super(`the audit chain does not verify (${report.problems[0]?.record}: ${report.problems[0]?.message}); refusing to prune: run \`airlock audit verify\` and investigate first`);
    this.name = 'PruneRefusedError';
  }
}

export interface PruneResult {
  sessions: number;
  operations: number;
  audit: number;
  /** Chain entries removed (the chain now starts after entry `base`). */
  entries: number;
  base: number;
}

export interface SqliteStoreOptions {
  /** How long one statement waits for another process's write lock. Default 2000 ms: long enough
   * for a CLI or second gateway to finish a write, short enough not to stall the event loop long. */
  busyTimeoutMs?: number;
  /** Records waiting for a retry beyond which the store is unhealthy (and, open policy, drops the
   * oldest). Default 10000. Closed policy keeps up to twice as many before dropping anything. */
  maxPending?: number;
  /** Oldest unwritten record age beyond which the store is unhealthy. Default 5000 ms. */
  maxPendingMs?: number;
  /** audit.onFailure; default 'closed'. */
  onFailure?: AuditFailurePolicy;
  /** Ed25519 key that signs chain checkpoints; without it no periodic checkpoints are made. */
  signingKey?: KeyObject;
  /** Sign the chain head after this many new entries. Default 1000. */
  checkpointEvery?: number;
  /** ... or after this long with new entries. Default 60000 ms. */
  checkpointIntervalMs?: number;
  /** Append every checkpoint (one JSON line) to this file, outside the store. */
  anchorFile?: string;
  /** SQLite max_page_count: a hard cap on the file size (SQLite answers SQLITE_FULL beyond it). */
  maxPageCount?: number;
  /** Open an existing file for reading only (an auditor's CLI without write access). No
   * migrations run; the file must already be at this Airlock's schema version. */
  readonly?: boolean;
  /** The gateway instance this process is (stamped on every session it starts); default: the process' own (instances.ts). */
  instance?: InstanceIdentity;
  /** A peer instance not seen for this long is dead (gateway.instanceLease). Default 30 s. */
  instanceLeaseMs?: number;
}

/** Opening or migrating the store failed: the message names the file and what to do. */
export class StoreOpenError extends Error {
  constructor(
    message: string,
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'StoreOpenError';
  }
}

/** Longest operation text kept; bulk INSERTs of megabytes would otherwise bloat the audit file. */
export const MAX_TEXT_CHARS = 1_000_000;
const FLUSH_INTERVAL_MS = 25;
const BATCH_MAX = 500;

// Append-only: migration N brings the file from user_version N to N+1. Never edit a shipped one.
const MIGRATIONS: string[] = [
  `
  CREATE TABLE sessions (
    id                TEXT PRIMARY KEY,
    protocol          TEXT NOT NULL,
    identity          TEXT NOT NULL,
    groups            TEXT NOT NULL,            -- JSON array
    connection        TEXT NOT NULL,
    client_address    TEXT NOT NULL,
    started_at        INTEGER NOT NULL,         -- ms since epoch
    ended_at          INTEGER,
    end_reason        TEXT,
    bytes_to_client   INTEGER NOT NULL DEFAULT 0,
    bytes_from_client INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX sessions_started ON sessions (started_at DESC);
  CREATE INDEX sessions_identity ON sessions (identity, started_at DESC);
  CREATE INDEX sessions_connection ON sessions (connection, started_at DESC);

  -- No foreign key to sessions on purpose: an operation recorded out of order is kept, not lost.
  CREATE TABLE operations (
    session_id     TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    at             INTEGER NOT NULL,
    text           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    classification TEXT NOT NULL,               -- JSON object
    decision       TEXT NOT NULL,
    rule           TEXT,
    reason         TEXT,
    rows           INTEGER,
    bytes          INTEGER,
    masked_columns TEXT NOT NULL,               -- JSON array
    error          TEXT,
    duration_ms    REAL,
    approval       TEXT,                        -- JSON object
    PRIMARY KEY (session_id, seq)
  ) WITHOUT ROWID;
  CREATE INDEX operations_decision ON operations (decision, at);

  CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    actor   TEXT,
    detail  TEXT NOT NULL                       -- JSON object
  );
  CREATE INDEX audit_subject ON audit (subject, at, id);
  CREATE INDEX audit_at ON audit (at, id);
  `,
  // The hash chain (chain.ts). entity: 's:<session id>' (session and operation entries), 'a:<audit
  // id>', '' (prune); item: the operation seq. entity/item only index the entries for prune; the
  // verifier trusts nothing but `entry` and `hash`.
  `
  CREATE TABLE journal (
    seq    INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    entity TEXT NOT NULL,
    item   INTEGER,
    entry  TEXT NOT NULL,
    hash   TEXT NOT NULL
  );
  CREATE INDEX journal_entity ON journal (entity, item, seq);
  CREATE TABLE checkpoints (
    seq    INTEGER NOT NULL,
    base   INTEGER NOT NULL,      -- 1: a prune's checkpoint, the chain starts after seq
    at     TEXT NOT NULL,
    hash   TEXT NOT NULL,
    key_id TEXT NOT NULL,
    sig    TEXT NOT NULL,
    PRIMARY KEY (seq, base)
  ) WITHOUT ROWID;
  `,
  // Just-in-time elevation windows (gateway/elevation/); not part of the chain: their start, use,
  // end and revocation are audit events, which are.
  `
  CREATE TABLE IF NOT EXISTS elevations (
    id            TEXT PRIMARY KEY,
    identity      TEXT NOT NULL,
    owner         TEXT,
    role          TEXT NOT NULL,
    connection    TEXT NOT NULL,
    reason        TEXT NOT NULL,
    approvers     TEXT NOT NULL,             -- JSON array
    break_glass   INTEGER NOT NULL,
    starts_at     INTEGER NOT NULL,
    until         INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoked_by    TEXT,
    revoke_reason TEXT
  );
  CREATE INDEX IF NOT EXISTS elevations_identity ON elevations (identity, until);
  CREATE INDEX IF NOT EXISTS elevations_until ON elevations (until);
  `,
  // The identity registry (identity-registry.ts): who the IdP last vouched for, by (issuer, sub).
  // Not part of the chain: each registration is also an `identity.registered` audit event.
  // IF NOT EXISTS: a file re-migrated from an older version number (e.g. restored) may already have it.
  `
  CREATE TABLE IF NOT EXISTS idp_identities (
    issuer         TEXT NOT NULL,
    subject        TEXT NOT NULL,
    identity       TEXT NOT NULL,
    email          TEXT NOT NULL,          -- lower-cased, '' when none
    email_verified INTEGER NOT NULL,
    groups         TEXT NOT NULL,          -- JSON array
    verified_at    INTEGER NOT NULL,       -- ms since epoch
    via            TEXT NOT NULL,
    PRIMARY KEY (issuer, subject)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS idp_identities_email ON idp_identities (email);
  CREATE INDEX IF NOT EXISTS idp_identities_identity ON idp_identities (identity);
  `,
  // Which gateway instance owns each session, and the instances' leases (instances.ts): crash
  // reconciliation ends only sessions of instances that are certainly gone. Additive.
  `
  ALTER TABLE sessions ADD COLUMN instance TEXT;
  CREATE INDEX sessions_open_instance ON sessions (instance) WHERE ended_at IS NULL;
  CREATE TABLE gateway_instances (
    id         TEXT PRIMARY KEY,
    boot       TEXT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
  );
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export interface SessionRow {
  id: string;
  protocol: string;
  identity: string;
  groups: string;
  connection: string;
  client_address: string;
  started_at: number;
  ended_at: number | null;
  end_reason: string | null;
  bytes_to_client: number;
  bytes_from_client: number;
  /** Gateway instance that started the session (absent before schema version 3). */
  instance?: string | null;
}

export interface SummaryRow extends SessionRow {
  op_count: number;
  denied_count: number;
  review_count: number;
  masked_count: number;
  error_count: number;
}

export interface OperationRow {
  session_id: string;
  seq: number;
  at: number;
  text: string;
  kind: string;
  classification: string;
  decision: string;
  rule: string | null;
  reason: string | null;
  rows: number | null;
  bytes: number | null;
  masked_columns: string;
  error: string | null;
  duration_ms: number | null;
  approval: string | null;
}

export interface AuditRow {
  id: number;
  at: number;
  kind: string;
  subject: string;
  actor: string | null;
  detail: string;
}

interface PendingWrite {
  what: string;
  run: () => void;
  attempts: number;
  /** When the record was handed to the store (ms), for the lag bound. */
  queuedAt: number;
}

const SESSION_COLUMNS = `s.id, s.protocol, s.identity, s.groups, s.connection, s.client_address, s.started_at,
  s.ended_at, s.end_reason, s.bytes_to_client, s.bytes_from_client, s.instance`;

// Correlated subqueries run only for the rows a LIMIT keeps, each over the (session_id, seq) key.
const SUMMARY_SELECT = `SELECT ${SESSION_COLUMNS},
  (SELECT count(*) FROM operations o WHERE o.session_id = s.id) AS op_count,
  (SELECT count(*) FROM operations o WHERE o.session_id = s.id AND o.decision = 'deny') AS denied_count,
  (SELECT count(*) FROM operations o WHERE o.session_id = s.id AND o.decision = 'review') AS review_count,
  (SELECT count(*) FROM operations o WHERE o.session_id = s.id AND o.masked_columns <> '[]') AS masked_count,
  (SELECT count(*) FROM operations o WHERE o.session_id = s.id AND o.error IS NOT NULL) AS error_count
  FROM sessions s`;

export class SqliteStore implements Store {
  private readonly pending: PendingWrite[] = [];
  /**
   * Writes waiting for the next group commit. A commit costs far more than a row, so the proxy's
   * hot path only queues; commits happen every FLUSH_INTERVAL_MS, at BATCH_MAX records, before any
   * read, and on close. A crash loses at most that interval of audit records.
   */
  private batch: PendingWrite[] = [];
  private flushScheduled = false;
  private flushTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private checkpointTimer: NodeJS.Timeout | undefined;
  private retryDelayMs = 100;
  private closed = false;
  private readonly counters = { writes: 0, failures: 0, dropped: 0, lastError: undefined as string | undefined };
  /** The last failure was something a retry of the same moment cannot fix (disk full, I/O error). */
  private hardFailure = false;
  private readonly maxPending: number;
  private readonly maxPendingMs: number;
  private readonly policy: AuditFailurePolicy;
  private readonly signingKey: KeyObject | undefined;
  private readonly checkpointEvery: number;
  private readonly anchorFile: string | undefined;
  private readonly readonly: boolean;
  private entriesSinceCheckpoint = 0;
  /** Inside a group commit's transaction: append() carries the chain head in batchHead. */
  private inBatch = false;
  private batchHead: { seq: number; hash: string } | undefined;
  private lastCheckpointSeq = -1;
  /** The gateway instance sessions are stamped with. */
  readonly instance: InstanceIdentity;
  private readonly instanceLeaseMs: number;
  private leaseTimer: NodeJS.Timeout | undefined;

  private readonly insertSession: Database.Statement;
  private readonly updateSessionEnd: Database.Statement;
  private readonly upsertOperation: Database.Statement;
  private readonly insertAudit: Database.Statement;
  private readonly selectSessions: Database.Statement;
  private readonly selectSession: Database.Statement;
  private readonly selectOperations: Database.Statement;
  private readonly selectAuditAll: Database.Statement;
  private readonly selectAuditBySubject: Database.Statement;
  private readonly selectIdsByPrefix: Database.Statement;
  private readonly upsertIdpIdentity: Database.Statement;
  private readonly selectIdpByEmail: Database.Statement;
  private readonly selectIdpByIdentity: Database.Statement;
  private readonly selectHead: Database.Statement | undefined;
  private readonly selectBase: Database.Statement | undefined;
  private readonly insertEntry: Database.Statement | undefined;
  private readonly insertCheckpoint: Database.Statement | undefined;

  private constructor(
    private readonly db: Database.Database,
    readonly path: string,
    opts: SqliteStoreOptions,
  ) {
    this.maxPending = Math.max(1, opts.maxPending ?? 10_000);
    this.maxPendingMs = Math.max(0, opts.maxPendingMs ?? 5000);
    this.policy = opts.onFailure ?? 'closed';
    this.signingKey = opts.signingKey;
    this.checkpointEvery = Math.max(1, opts.checkpointEvery ?? 1000);
    this.anchorFile = opts.anchorFile;
    this.readonly = opts.readonly ?? false;
    this.instance = opts.instance ?? instanceIdentity();
    this.instanceLeaseMs = Math.max(1, opts.instanceLeaseMs ?? DEFAULT_INSTANCE_LEASE_MS);
    // A repeated start (a reconnect reusing its id) keeps the first record rather than failing.
    this.insertSession = db.prepare(`INSERT INTO sessions
      (id, protocol, identity, groups, connection, client_address, started_at, instance)
      VALUES (@id, @protocol, @identity, @groups, @connection, @clientAddress, @startedAt, @instance)
      ON CONFLICT (id) DO NOTHING`);
    this.updateSessionEnd = db.prepare(`UPDATE sessions
      SET ended_at = @endedAt, end_reason = @reason, bytes_to_client = @toClient, bytes_from_client = @fromClient
      WHERE id = @id`);
    // Recording the same (session, seq) again replaces it: a held operation can be written when it
    // is held and again with its outcome (each version is its own chain entry).
    this.upsertOperation = db.prepare(`INSERT INTO operations
      (session_id, seq, at, text, kind, classification, decision, rule, reason, rows, bytes,
       masked_columns, error, duration_ms, approval)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (session_id, seq) DO UPDATE SET
        at = excluded.at, text = excluded.text, kind = excluded.kind, classification = excluded.classification,
        decision = excluded.decision, rule = excluded.rule, reason = excluded.reason, rows = excluded.rows,
        bytes = excluded.bytes, masked_columns = excluded.masked_columns, error = excluded.error,
        duration_ms = excluded.duration_ms, approval = excluded.approval`);
    this.insertAudit = db.prepare(`INSERT INTO audit (at, kind, subject, actor, detail)
      VALUES (@at, @kind, @subject, @actor, @detail)`);
    this.selectSessions = db.prepare(`${SUMMARY_SELECT}
      WHERE (@identity IS NULL OR s.identity = @identity) AND (@connection IS NULL OR s.connection = @connection)
      ORDER BY s.started_at DESC, s.rowid DESC
      LIMIT @limit`);
    this.selectSession = db.prepare(`${SUMMARY_SELECT} WHERE s.id = ?`);
    this.selectOperations = db.prepare(`SELECT * FROM operations WHERE session_id = ? ORDER BY seq`);
    this.selectAuditAll = db.prepare(`SELECT * FROM audit ORDER BY at, id`);
    this.selectAuditBySubject = db.prepare(`SELECT * FROM audit WHERE subject = ? ORDER BY at, id`);
    this.upsertIdpIdentity = db.prepare(`INSERT INTO idp_identities
      (issuer, subject, identity, email, email_verified, groups, verified_at, via)
      VALUES (@issuer, @subject, @identity, @email, @emailVerified, @groups, @verifiedAt, @via)
      ON CONFLICT (issuer, subject) DO UPDATE SET identity = excluded.identity, email = excluded.email,
        email_verified = excluded.email_verified, groups = excluded.groups, verified_at = excluded.verified_at, via = excluded.via
      WHERE excluded.verified_at >= idp_identities.verified_at`);
    this.selectIdpByEmail = db.prepare(`SELECT * FROM idp_identities WHERE email = ? AND email <> '' ORDER BY verified_at DESC`);
    this.selectIdpByIdentity = db.prepare(`SELECT * FROM idp_identities WHERE identity = ? ORDER BY verified_at DESC`);
    this.selectIdsByPrefix = db.prepare(`SELECT id FROM sessions
      WHERE substr(id, 1, length(@prefix)) = @prefix ORDER BY started_at DESC LIMIT @limit`);
    if (!this.readonly) {
      this.selectHead = db.prepare(`SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1`);
      this.selectBase = db.prepare(`SELECT seq, hash FROM checkpoints WHERE base = 1 ORDER BY seq DESC LIMIT 1`);
      this.insertEntry = db.prepare(`INSERT INTO journal (seq, at, kind, entity, item, entry, hash) VALUES (?, ?, ?, ?, ?, ?, ?)`);
      this.insertCheckpoint = db.prepare(`INSERT INTO checkpoints (seq, base, at, hash, key_id, sig)
        VALUES (@seq, @base, @at, @hash, @keyId, @sig) ON CONFLICT DO NOTHING`);
      if (this.signingKey) {
        const every = Math.max(10, opts.checkpointIntervalMs ?? 60_000);
        this.checkpointTimer = setInterval(() => this.checkpointSafely(), every);
        this.checkpointTimer.unref();
      }
    }
  }

  /**
   * Opens (creating if needed) the store at `path`, or `:memory:`. Creates parent directories
   * (mode 0700; the file itself 0600: statements can carry sensitive literals), enables WAL and
   * runs pending migrations. Throws StoreOpenError with the path and cause on any failure.
   */
  static open(path: string, opts: SqliteStoreOptions = {}): SqliteStore {
    const memory = path === ':memory:';
    const full = memory ? path : resolve(path);
    const timeout = Math.max(0, Math.floor(opts.busyTimeoutMs ?? 2000));
    let db: Database.Database | undefined;
    try {
      if (opts.readonly) {
        // better-sqlite3's `timeout` is SQLite's busy_timeout.
        db = new Database(full, { readonly: true, fileMustExist: true, timeout });
        checkReadonlyVersion(db, full);
      } else {
        if (!memory) {
          try {
            mkdirSync(dirname(full), { recursive: true, mode: 0o700 });
          } catch (e) {
            throw new StoreOpenError(`cannot create the directory for the audit store ${full}: ${errorText(e)}`, full, { cause: e });
          }
          try {
            // SQLite gives the -wal and -shm files the database file's permissions.
            closeSync(openSync(full, 'a', 0o600));
          } catch (e) {
            throw new StoreOpenError(`cannot create or open the audit store ${full}: ${errorText(e)}`, full, { cause: e });
          }
        }
        const conn = new Database(full, { timeout });
        db = conn;
        // Switching a new file to WAL can get SQLITE_BUSY without waiting when another process
        // opens it at the same moment (SQLite refuses to wait where waiting could deadlock), so
        // startup retries for a while instead of failing.
        retryWhileBusy(Math.max(timeout, 1000), () => {
          if (!memory) {
            const mode = String(conn.pragma('journal_mode = WAL', { simple: true }));
            if (mode.toLowerCase() !== 'wal') throw new Error(`could not switch to WAL journal mode (got ${mode})`);
          }
          // NORMAL in WAL mode survives process crashes; only an OS crash can lose the last commits,
          // and it keeps each write to microseconds instead of an fsync on the proxy's hot path.
          conn.pragma('synchronous = NORMAL');
          migrate(conn, full);
        });
        if (opts.maxPageCount !== undefined) conn.pragma(`max_page_count = ${Math.max(1, Math.floor(opts.maxPageCount))}`);
      }
      const store = new SqliteStore(db, full, opts);
      log.debug({ path: full, schemaVersion: SCHEMA_VERSION, readonly: opts.readonly ?? false }, 'audit store opened');
      return store;
    } catch (e) {
      try {
        db?.close();
      } catch {
        // already failing; the original error is the useful one
      }
      if (e instanceof StoreOpenError) throw e;
      throw new StoreOpenError(`cannot open the audit store ${full}: ${errorText(e)}`, full, { cause: e });
    }
  }

  /** The schema version of the open file. */
  schemaVersion(): number {
    return Number(this.db.pragma('user_version', { simple: true }));
  }

  /** The underlying connection, for the verifier and the CLI (read-only use). */
  get database(): Database.Database {
    return this.db;
  }

  startSession(s: SessionStart): void {
    const data = sessionStartData(s, this.instance.id);
    this.write(`start session ${s.id}`, () => {
      this.insertSession.run(data);
      this.append('session.start', `s:${data.id}`, null, data.startedAt, data);
    });
  }

  endSession(id: string, endedAt: Date, reason: string, bytes: { toClient: number; fromClient: number }): void {
    const data = sessionEndData(id, endedAt, reason, bytes);
    this.write(`end session ${id}`, () => {
      const r = this.updateSessionEnd.run(data);
      if (r.changes === 0) log.warn({ sessionId: id }, 'audit store: ended a session that was never started');
      this.append('session.end', `s:${data.id}`, null, data.endedAt, data);
    });
  }

  recordOperation(op: OperationRecord): void {
    let data: OperationData;
    try {
      data = operationData(op);
    } catch (e) {
      this.fail(`record operation ${op?.sessionId}#${op?.seq}`, e, true);
      return;
    }
    this.write(`record operation ${data.sessionId}#${data.seq}`, () => {
      // Positional binding: named parameters from an object cost ~3 us more per record.
      const d = data;
      this.upsertOperation.run(d.sessionId, d.seq, d.at, d.text, d.kind, d.classification, d.decision, d.rule, d.reason, d.rows, d.bytes, d.maskedColumns, d.error, d.durationMs, d.approval);
      this.append('operation', `s:${data.sessionId}`, data.seq, data.at, data);
    });
  }

  recordAudit(e: AuditEvent): void {
    const params = auditData(e);
    this.write(`audit ${e.kind} ${e.subject}`, () => {
      const id = Number(this.insertAudit.run(params).lastInsertRowid);
      this.append('audit', `a:${id}`, null, params.at, { id, ...params });
    });
  }

  /** Appends one chain entry after the current head; runs inside the caller's transaction. */
  private append(kind: EntryKind, entity: string, item: number | null, at: number, data: Record<string, unknown>): void {
    const head = this.batchHead ?? this.head();
    const seq = head.seq + 1;
    const text = entryText(seq, kind, at, data);
    const hash = entryHash(head.hash, text);
    this.insertEntry?.run(seq, at, kind, entity, item, text, hash);
    // Within one group commit the head is the entry just inserted: no SELECT per record.
    if (this.inBatch) this.batchHead = { seq, hash };
  }

  /** The last chain entry, or the prune checkpoint the chain continues from, or genesis. */
  private head(): { seq: number; hash: string } {
    const h = this.selectHead?.get() as { seq: number; hash: string } | undefined;
    if (h) return h;
    const b = this.selectBase?.get() as { seq: number; hash: string } | undefined;
    return b ?? { seq: 0, hash: GENESIS_HASH };
  }

  /** Newest first, with operation counts. Reads throw: they serve the CLI, which reports them. */
  listSessions(f: SessionFilter = {}): SessionSummary[] {
    this.flush();
    if (f.limit !== undefined && !(Number.isInteger(f.limit) && f.limit >= 0)) throw new RangeError(`session list limit must be a non-negative integer, got ${f.limit}`);
    const limit = f.limit ?? -1;
    const rows = this.selectSessions.all({ identity: f.identity ?? null, connection: f.connection ?? null, limit }) as SummaryRow[];
    return rows.map(toSummary);
  }

  /** Sessions with no end recorded (crash reconciliation at startup: reconcile.ts). */
  openSessionIds(): string[] {
    this.flush();
    return (this.db.prepare(`SELECT id FROM sessions WHERE ended_at IS NULL ORDER BY started_at`).all() as { id: string }[]).map((r) => r.id);
  }

  /**
   * Registers this instance (its lease row) and claims, in one write transaction, the instances that
   * are certainly gone (instances.ts): their rows are removed and their sessions still open are
   * returned for reconcile.ts to end. Sessions recorded before instance ids (no owner) count as
   * orphans here, as they did before: a SQLite file is one host's. Call at startup, before serving.
   */
  claimOrphanedSessions(): OrphanClaim {
    this.flush();
    const self = this.instance;
    return this.db.transaction((): OrphanClaim => {
      const now = Date.now();
      const dead = (this.db.prepare(`SELECT * FROM gateway_instances`).all() as InstanceRow[]).filter((r) => peerIsDead(r, self, this.instanceLeaseMs, now)).map((r) => r.id);
      const del = this.db.prepare(`DELETE FROM gateway_instances WHERE id = ?`);
      for (const id of dead) del.run(id);
      this.upsertInstance(now);
      const owners = [...new Set([self.id, ...dead])];
      const sessions = (
        this.db.prepare(`SELECT id FROM sessions WHERE ended_at IS NULL AND (instance IS NULL OR instance IN (SELECT value FROM json_each(?))) ORDER BY started_at`).all(JSON.stringify(owners)) as { id: string }[]
      ).map((r) => r.id);
      return { deadInstances: dead, sessions };
    }).immediate();
  }

  private upsertInstance(now: number): void {
    const s = this.instance;
    this.db
      .prepare(`INSERT INTO gateway_instances (id, boot, host, pid, started_at, last_seen) VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET boot = excluded.boot, host = excluded.host, pid = excluded.pid, started_at = excluded.started_at, last_seen = excluded.last_seen`)
      .run(s.id, s.boot, s.host, s.pid, s.startedAt, now);
  }

  /** Keeps this instance's lease fresh (every lease/3) until close; close marks it gone. */
  startInstanceLease(): void {
    if (this.leaseTimer || this.readonly || this.closed) return;
    const beat = () => {
      try {
        this.upsertInstance(Date.now());
      } catch (e) {
        log.warn({ path: this.path, err: errorText(e) }, 'audit store: could not renew this gateway instance\'s lease');
      }
    };
    beat();
    this.leaseTimer = setInterval(beat, Math.max(10, Math.floor(this.instanceLeaseMs / 3)));
    this.leaseTimer.unref();
  }

  /** Live gateway instances sharing this store (lease fresh), for operators and tests. */
  instances(): InstanceRow[] {
    return this.db.prepare(`SELECT * FROM gateway_instances ORDER BY id`).all() as InstanceRow[];
  }

  getSession(id: string): { session: SessionSummary; operations: OperationRecord[] } | undefined {
    this.flush();
    // One read transaction, so the session and its operations are a consistent snapshot.
    return this.db.transaction(() => {
      const row = this.selectSession.get(id) as SummaryRow | undefined;
      if (!row) return undefined;
      const ops = this.selectOperations.all(id) as OperationRow[];
      return { session: toSummary(row), operations: ops.map(toOperation) };
    })();
  }

  /** Chronological. Without a subject, every event. */
  listAudit(subject?: string): AuditEvent[] {
    this.flush();
    const rows = (subject === undefined ? this.selectAuditAll.all() : this.selectAuditBySubject.all(subject)) as AuditRow[];
    return rows.map(toAudit);
  }

  /** Session ids starting with `prefix`, newest first (at most `limit`): lets the CLI accept short ids. */
  /** Written at once (sign-ins are rare and the approver lookup right after must see it). */
  recordIdpIdentity(e: IdpIdentity): void {
    if (this.readonly) throw new Error(`the audit store ${this.path} is open read-only: cannot register identities`);
    this.upsertIdpIdentity.run(idpIdentityData(e));
    this.recordAudit(registrationEvent(e));
  }

  findIdpIdentities(q: { email: string } | { identity: string }): IdpIdentity[] {
    const rows = 'email' in q ? this.selectIdpByEmail.all(q.email.trim().toLowerCase()) : this.selectIdpByIdentity.all(q.identity);
    return (rows as IdpIdentityRow[]).map(toIdpIdentity);
  }

  findSessionIds(prefix: string, limit = 10): string[] {
    this.flush();
    if (prefix === '') return [];
    return (this.selectIdsByPrefix.all({ prefix, limit }) as { id: string }[]).map((r) => r.id);
  }

  putElevation(e: ElevationRecord): void {
    if (this.readonly) throw new Error(`the audit store ${this.path} is open read-only`);
    this.db
      .prepare(`INSERT INTO elevations (id, identity, owner, role, connection, reason, approvers, break_glass, starts_at, until)
        VALUES (@id, @identity, @owner, @role, @connection, @reason, @approvers, @breakGlass, @startsAt, @until)
        ON CONFLICT (id) DO NOTHING`)
      .run(elevationRow(e));
  }

  revokeElevation(id: string, at: Date, by: string, reason: string): boolean {
    if (this.readonly) throw new Error(`the audit store ${this.path} is open read-only`);
    const r = this.db
      .prepare(`UPDATE elevations SET revoked_at = @at, revoked_by = @by, revoke_reason = @reason WHERE id = @id AND revoked_at IS NULL AND until > @at`)
      .run({ id, at: at.getTime(), by, reason: redactForAudit(reason) });
    return r.changes > 0;
  }

  getElevation(id: string): ElevationRecord | undefined {
    const row = this.db.prepare(`SELECT * FROM elevations WHERE id = ?`).get(id) as ElevationRow | undefined;
    return row ? toElevation(row) : undefined;
  }

  listElevations(f: { identity?: string; activeAt?: Date; limit?: number } = {}): ElevationRecord[] {
    const rows = this.db
      .prepare(`SELECT * FROM elevations WHERE (@identity IS NULL OR identity = @identity)
        AND (@at IS NULL OR (starts_at <= @at AND until > @at AND revoked_at IS NULL)) ORDER BY starts_at DESC LIMIT @limit`)
      .all({ identity: f.identity ?? null, at: f.activeAt ? f.activeAt.getTime() : null, limit: f.limit ?? 1000 }) as ElevationRow[];
    return rows.map(toElevation);
  }

  /** Checks the chain, the checkpoints and the tables (verify.ts). */
  verify(opts: Parameters<typeof verifyAuditDb>[1] = {}): VerifyReport {
    this.flush();
    return this.db.transaction(() => verifyAuditDb(this.db, opts))();
  }

  /**
   * Retention: deletes sessions that ended (or, never ended, were last active) before `before` with their
   * operations, operations of unknown sessions and audit events older than `before`, and the chain
   * entries up to the newest entry of anything deleted (`base`). Retained records that had entries
   * at or before `base` are re-recorded as snapshot entries first, a `prune` entry records what was
   * done, and a checkpoint for `base` (signed when the store has the key) lets verification start
   * there. Refuses (PruneRefusedError) when the chain does not verify: pruning must not launder
   * tampering into a fresh signature. Throws on failure: it is an operator's command.
   */
  prune(before: Date, opts: Parameters<typeof verifyAuditDb>[1] = {}): PruneResult {
    this.flush();
    if (!validDate(before)) throw new RangeError('prune needs a valid cutoff date');
    if (this.readonly) throw new Error('the audit store is open read-only');
    const cutoff = before.getTime();
    // Verify in a read snapshot, without the write lock: gateways keep writing meanwhile.
    const report = this.db.transaction(() => verifyAuditDb(this.db, opts))();
    if (!report.ok) throw new PruneRefusedError(report);
    const result = this.db.transaction((): PruneResult => {
      const db = this.db;
      // What was verified is still the chain (entries since then are appended by writers).
      if (report.entries > 0 && (db.prepare(`SELECT hash FROM journal WHERE seq = ?`).get(report.lastSeq) as { hash: string } | undefined)?.hash !== report.lastHash) {
        throw new Error('the audit chain changed under prune (another prune?); run it again');
      }
      db.exec(`DROP TABLE IF EXISTS temp.prune_sessions; DROP TABLE IF EXISTS temp.prune_ops; DROP TABLE IF EXISTS temp.prune_audit;
        CREATE TEMP TABLE prune_sessions (entity TEXT PRIMARY KEY, id TEXT NOT NULL);
        CREATE TEMP TABLE prune_ops (session_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (session_id, seq));
        CREATE TEMP TABLE prune_audit (entity TEXT PRIMARY KEY, id INTEGER NOT NULL);`);
      // A session goes once its last activity (its end; never ended: its newest operation or its
      // start) is older than the cutoff, so a long-running session is never cut in half.
      db.prepare(`INSERT INTO temp.prune_sessions SELECT 's:' || id, id FROM sessions s
        WHERE coalesce(ended_at, max(started_at, coalesce((SELECT max(at) FROM operations o WHERE o.session_id = s.id), started_at))) < ?`).run(cutoff);
      db.prepare(`INSERT INTO temp.prune_ops SELECT session_id, seq FROM operations
        WHERE session_id IN (SELECT id FROM temp.prune_sessions) OR (at < ? AND session_id NOT IN (SELECT id FROM sessions))`).run(cutoff);
      db.prepare(`INSERT INTO temp.prune_audit SELECT 'a:' || id, id FROM audit WHERE at < ?`).run(cutoff);
      const counts = db.prepare(`SELECT (SELECT count(*) FROM temp.prune_sessions) AS s, (SELECT count(*) FROM temp.prune_ops) AS o, (SELECT count(*) FROM temp.prune_audit) AS a`).get() as { s: number; o: number; a: number };
      // The newest entry of anything deleted: everything up to it goes.
      const base = Number(
        (
          db.prepare(`SELECT max(seq) AS m FROM journal WHERE entity IN (SELECT entity FROM temp.prune_sessions)
            OR entity IN (SELECT entity FROM temp.prune_audit)
            OR (item IS NOT NULL AND EXISTS (SELECT 1 FROM temp.prune_ops p WHERE p.session_id = substr(journal.entity, 3) AND p.seq = journal.item))`).get() as { m: number | null }
        ).m ?? 0,
      );
      const first = this.firstSeq();
      if (base < first) {
        db.exec(`DROP TABLE temp.prune_sessions; DROP TABLE temp.prune_ops; DROP TABLE temp.prune_audit;`);
        return { sessions: 0, operations: 0, audit: 0, entries: 0, base: first - 1 };
      }
      const now = Date.now();
      // Snapshots of retained records whose state depends on entries about to go.
      const keptSessions = db.prepare(`SELECT s.* FROM sessions s WHERE 's:' || s.id NOT IN (SELECT entity FROM temp.prune_sessions)
        AND EXISTS (SELECT 1 FROM journal j WHERE j.entity = 's:' || s.id AND j.item IS NULL AND j.seq <= ?)`).all(base) as SessionRow[];
      for (const r of keptSessions) {
        this.append('session.snapshot', `s:${r.id}`, null, now, {
          id: r.id, protocol: r.protocol, identity: r.identity, groups: r.groups, connection: r.connection, clientAddress: r.client_address,
          startedAt: r.started_at, endedAt: r.ended_at, endReason: r.end_reason, toClient: r.bytes_to_client, fromClient: r.bytes_from_client,
          ...(r.instance ? { instance: r.instance } : {}),
        });
      }
      const keptOps = db.prepare(`SELECT o.* FROM operations o WHERE NOT EXISTS (SELECT 1 FROM temp.prune_ops p WHERE p.session_id = o.session_id AND p.seq = o.seq)
        AND (SELECT max(j.seq) FROM journal j WHERE j.entity = 's:' || o.session_id AND j.item = o.seq) <= ?`).all(base) as OperationRow[];
      for (const r of keptOps) this.append('operation', `s:${r.session_id}`, r.seq, r.at, rowToOperationData(r));
      const keptAudit = db.prepare(`SELECT a.* FROM audit a WHERE a.id NOT IN (SELECT id FROM temp.prune_audit)
        AND EXISTS (SELECT 1 FROM journal j WHERE j.entity = 'a:' || a.id AND j.seq <= ?)`).all(base) as AuditRow[];
      for (const r of keptAudit) this.append('audit', `a:${r.id}`, null, r.at, { id: r.id, at: r.at, kind: r.kind, subject: r.subject, actor: r.actor, detail: r.detail });
      this.append('prune', '', null, now, { before: cutoff, base, sessions: counts.s, operations: counts.o, audit: counts.a });

      const baseHash = (db.prepare(`SELECT hash FROM journal WHERE seq = ?`).get(base) as { hash: string } | undefined)?.hash;
      if (!baseHash) throw new Error(`chain entry #${base} is missing`);
      db.prepare(`DELETE FROM operations WHERE EXISTS (SELECT 1 FROM temp.prune_ops p WHERE p.session_id = operations.session_id AND p.seq = operations.seq)`).run();
      db.prepare(`DELETE FROM sessions WHERE id IN (SELECT id FROM temp.prune_sessions)`).run();
      db.prepare(`DELETE FROM audit WHERE id IN (SELECT id FROM temp.prune_audit)`).run();
      const entries = db.prepare(`DELETE FROM journal WHERE seq <= ?`).run(base).changes;
      db.prepare(`DELETE FROM checkpoints WHERE seq <= ?`).run(base);
      const cp = makeCheckpoint(base, baseHash, new Date(now), this.signingKey, true);
      this.insertCheckpoint?.run(checkpointParams(cp));
      this.anchor(cp);
      db.exec(`DROP TABLE temp.prune_sessions; DROP TABLE temp.prune_ops; DROP TABLE temp.prune_audit;`);
      return { sessions: counts.s, operations: counts.o, audit: counts.a, entries, base };
    }).immediate();
    this.checkpoint();
    return result;
  }

  private firstSeq(): number {
    const r = this.db.prepare(`SELECT min(seq) AS m FROM journal`).get() as { m: number | null };
    return r.m ?? this.head().seq + 1;
  }

  /**
   * Signs the chain head into the checkpoints table and the anchor file, unless it is already
   * covered. Returns the checkpoint, or undefined when there is nothing new (or no key).
   */
  checkpoint(): Checkpoint | undefined {
    if (this.closed || this.readonly || !this.signingKey) return undefined;
    const head = this.selectHead?.get() as { seq: number; hash: string } | undefined;
    if (!head || head.seq === this.lastCheckpointSeq) return undefined;
    if (this.db.prepare(`SELECT 1 FROM checkpoints WHERE seq = ? AND base = 0`).get(head.seq)) {
      this.lastCheckpointSeq = head.seq;
      return undefined;
    }
    const cp = makeCheckpoint(head.seq, head.hash, new Date(), this.signingKey);
    this.insertCheckpoint?.run(checkpointParams(cp));
    this.lastCheckpointSeq = head.seq;
    this.entriesSinceCheckpoint = 0;
    this.anchor(cp);
    return cp;
  }

  private checkpointSafely(): void {
    try {
      this.checkpoint();
    } catch (e) {
      // The next commit or tick tries again; entries stay chained meanwhile.
      log.warn({ path: this.path, err: errorText(e) }, 'audit store: signing a checkpoint failed, will retry');
    }
  }

  private anchor(cp: Checkpoint): void {
    if (!this.anchorFile) return;
    try {
      appendFileSync(this.anchorFile, JSON.stringify(cp) + '\n', { mode: 0o600 });
    } catch (e) {
      log.error({ path: this.path, anchor: this.anchorFile, seq: cp.seq, err: errorText(e) }, 'audit store: appending a checkpoint to the anchor file failed');
    }
  }

  private committed(n: number): void {
    this.counters.writes += n;
    if (!this.signingKey) return;
    this.entriesSinceCheckpoint += n;
    if (this.entriesSinceCheckpoint >= this.checkpointEvery) this.checkpointSafely();
  }

  stats(): StoreStats {
    return { writes: this.counters.writes, failures: this.counters.failures, pending: this.pending.length, dropped: this.counters.dropped, lastError: this.counters.lastError };
  }

  health(): AuditHealth {
    const pending = this.pending.length;
    const oldestQueuedAt = pending > 0 ? this.pending[0].queuedAt : 0;
    const { policy, closed, readonly, hardFailure, maxPending, maxPendingMs } = this;
    return auditHealth({ policy, pending, oldestQueuedAt, dropped: this.counters.dropped, lastError: this.counters.lastError, closed, readonly, hardFailure, maxPending, maxPendingMs });
  }

  writable(): boolean {
    // Per statement on the proxy's hot path: with nothing waiting for a retry the verdict is a
    // flag check (auditHealth can only fail on closed/readonly then); otherwise the full check.
    if (this.policy === 'open') return true;
    if (this.pending.length === 0 && this.maxPending > 0 && !this.closed && !this.readonly) return true;
    return this.health().ok;
  }

  assertWritable(): void {
    assertAuditWritable(this.policy, () => this.health());
  }

  /** Resolves true once every accepted record is written, false after `timeoutMs` (shutdown). */
  async whenDrained(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    this.flush();
    while (this.pending.length > 0 && !this.closed) {
      if (Date.now() >= deadline) return false;
      this.drain();
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.pending.length === 0;
  }

  /** Flushes what can be flushed, signs the head, then closes. Idempotent. */
  close(): void {
    if (this.closed) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    this.checkpointTimer = undefined;
    if (this.leaseTimer) {
      clearInterval(this.leaseTimer);
      this.leaseTimer = undefined;
      // A planned stop: peers may reconcile whatever this instance leaves open without waiting.
      try {
        this.db.prepare(`UPDATE gateway_instances SET last_seen = 0 WHERE id = ? AND boot = ?`).run(this.instance.id, this.instance.boot);
      } catch (e) {
        log.warn({ path: this.path, err: errorText(e) }, 'audit store: could not release this gateway instance\'s lease');
      }
    }
    this.flush();
    this.drain();
    if (this.pending.length > 0) {
      this.counters.dropped += this.pending.length;
      log.error({ path: this.path, lost: this.pending.length, lastError: this.counters.lastError }, 'audit store closed with unwritten records');
      this.pending.length = 0;
    }
    this.checkpointSafely();
    this.closed = true;
    try {
      this.db.close();
    } catch (e) {
      log.error({ path: this.path, err: errorText(e) }, 'audit store: close failed');
    }
  }

  private write(what: string, run: () => void): void {
    if (this.closed) {
      this.counters.dropped++;
      log.error({ path: this.path, what }, 'audit store: write after close dropped');
      return;
    }
    this.batch.push({ what, run, attempts: 0, queuedAt: Date.now() });
    if (this.batch.length >= BATCH_MAX) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      this.flushTimer = setTimeout(() => this.flush(), FLUSH_INTERVAL_MS);
      this.flushTimer.unref();
    }
  }

  /** Commits the batched writes in one transaction; on failure, replays them one by one. */
  flush(): void {
    this.flushScheduled = false;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const items = this.batch;
    if (items.length === 0 || this.closed) return;
    this.batch = [];
    if (this.pending.length === 0) {
      try {
        this.db.transaction(() => {
          // The head is read once (inside the write transaction), then carried from entry to entry.
          this.inBatch = true;
          this.batchHead = undefined;
          try {
            for (const w of items) w.run();
          } finally {
            this.inBatch = false;
            this.batchHead = undefined;
          }
        })();
        this.hardFailure = false;
        this.committed(items.length);
        return;
      } catch {
        // Rolled back as a whole: one bad record must not sink the others.
      }
    }
    for (const w of items) this.writeNow(w);
  }

  private writeNow(w: PendingWrite): void {
    // Keep order: while something waits for a retry, new writes wait behind it.
    if (this.pending.length > 0) {
      this.enqueue(w);
      this.drain();
      return;
    }
    try {
      this.db.transaction(w.run)();
      this.hardFailure = false;
      this.committed(1);
    } catch (e) {
      w.attempts = 1;
      if (!this.fail(w.what, e, isPermanent(e))) this.enqueue(w);
    }
  }

  /** Counts and logs a failure; returns true when the write is given up for good. */
  private fail(what: string, e: unknown, permanent: boolean): boolean {
    this.counters.failures++;
    this.counters.lastError = `${what}: ${errorText(e)}`;
    if (!permanent) this.hardFailure = !isTransient(e);
    if (permanent) {
      this.counters.dropped++;
      log.error({ path: this.path, what, err: errorText(e) }, 'audit store: write failed and was dropped');
    } else {
      log.warn({ path: this.path, what, err: errorText(e) }, 'audit store: write failed, will retry');
    }
    return permanent;
  }

  private enqueue(w: PendingWrite): void {
    // Open policy: bounded memory beats completeness. Closed policy: keep records (traffic is being
    // refused meanwhile, so only operations already running add more), up to a hard memory bound.
    const cap = this.policy === 'open' ? this.maxPending : this.maxPending * 2;
    if (this.pending.length >= cap) {
      const lost = this.policy === 'open' ? this.pending.shift() : w;
      this.counters.dropped++;
      log.error({ path: this.path, what: lost?.what, pending: this.pending.length }, 'audit store: retry queue full, record dropped');
      if (lost === w) return;
    }
    this.pending.push(w);
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.closed) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.drain();
    }, this.retryDelayMs);
    this.retryTimer.unref();
  }

  private drain(): void {
    while (this.pending.length > 0) {
      const head = this.pending[0];
      try {
        this.db.transaction(head.run)();
        this.pending.shift();
        this.retryDelayMs = 100;
        this.hardFailure = false;
        this.committed(1);
      } catch (e) {
        head.attempts++;
        // Closed policy never gives up on a record a retry can fix (locks, disk full, I/O errors);
        // open policy gives disk full or I/O errors a bounded number of tries.
        const permanent = isPermanent(e) || (this.policy === 'open' && !isTransient(e) && head.attempts >= 20);
        if (this.fail(head.what, e, permanent)) {
          this.pending.shift();
          continue;
        }
        this.retryDelayMs = Math.min(this.retryDelayMs * 2, 1000);
        this.scheduleRetry();
        return;
      }
    }
  }
}

// The rows (and chain entries) both stores write: built in one place so a session start, end or
// audit event hashes the same whichever store recorded it.

/** The sessions row of a session start, stamped with the recording gateway instance. */
export function sessionStartData(s: SessionStart, instance: string) {
  return {
    id: str(s.id),
    protocol: str(s.protocol),
    identity: str(s.identity),
    groups: safeJson(s.groups ?? []),
    connection: str(s.connection),
    clientAddress: str(s.clientAddress),
    startedAt: epochMs(s.startedAt),
    instance,
  };
}

/** A session's end: the reason redacted, byte counts whole numbers. */
export function sessionEndData(id: string, endedAt: Date, reason: string, bytes: { toClient: number; fromClient: number }) {
  return { id: str(id), endedAt: epochMs(endedAt), reason: redactForAudit(str(reason)), toClient: intOrZero(bytes?.toClient), fromClient: intOrZero(bytes?.fromClient) };
}

/** An audit event's row: the detail redacted (identities kept) and stored as JSON text. */
export function auditData(e: AuditEvent) {
  return { at: epochMs(e.at), kind: str(e.kind), subject: str(e.subject), actor: e.actor === undefined || e.actor === null ? null : str(e.actor), detail: redactedJson(e.detail ?? {}) };
}

export type OperationData = ReturnType<typeof operationData>;

/** The operations row for a record: free text redacted, capped, JSON columns as text. */
export function operationData(op: OperationRecord) {
  return {
    sessionId: str(op.sessionId),
    seq: Number.isSafeInteger(op.seq) ? op.seq : Number.isFinite(Number(op.seq)) ? Math.floor(Number(op.seq)) : 0,
    at: epochMs(op.at),
    text: capText(op.text ?? ''),
    kind: str(op.kind),
    classification: redactedJson(op.classification ?? {}),
    decision: str(op.decision),
    rule: op.rule === undefined || op.rule === null ? null : wellFormed(String(op.rule)),
    reason: op.reason === undefined || op.reason === null ? null : redactForAudit(String(op.reason)),
    rows: numOrNull(op.rows),
    bytes: numOrNull(op.bytes),
    maskedColumns: safeJson(op.maskedColumns ?? []),
    error: op.error === undefined || op.error === null ? null : redactForAudit(String(op.error)),
    durationMs: numOrNull(op.durationMs),
    // Approvers are identities (kept); the reason is typed by a person (redacted).
    approval: op.approval ? safeJson({ ...op.approval, reason: op.approval.reason === undefined ? undefined : redactForAudit(String(op.approval.reason)) }) : null,
  };
}

function rowToOperationData(r: OperationRow): Record<string, unknown> {
  return {
    sessionId: r.session_id, seq: r.seq, at: r.at, text: r.text, kind: r.kind, classification: r.classification, decision: r.decision,
    rule: r.rule, reason: r.reason, rows: r.rows, bytes: r.bytes, maskedColumns: r.masked_columns, error: r.error, durationMs: r.duration_ms, approval: r.approval,
  };
}

function checkpointParams(cp: Checkpoint): Record<string, unknown> {
  return { seq: cp.seq, base: cp.base ? 1 : 0, at: cp.at, hash: cp.hash, keyId: cp.keyId, sig: cp.sig };
}

/** Runs `fn`, retrying on SQLITE_BUSY/LOCKED until `ms` have passed. Startup only: it sleeps synchronously. */
function retryWhileBusy(ms: number, fn: () => void): void {
  const deadline = Date.now() + ms;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      fn();
      return;
    } catch (e) {
      const cause = e instanceof StoreOpenError ? e.cause : e;
      if (!isTransient(cause) || Date.now() >= deadline) throw e;
      Atomics.wait(sleeper, 0, 0, 5 + Math.floor(Math.random() * 20));
    }
  }
}

function checkReadonlyVersion(db: Database.Database, path: string): void {
  const v = Number(db.pragma('user_version', { simple: true }));
  if (v > SCHEMA_VERSION) {
    throw new StoreOpenError(`the audit store ${path} has schema version ${v}, newer than this Airlock understands (${SCHEMA_VERSION}); upgrade Airlock`, path);
  }
  if (v < SCHEMA_VERSION) {
    throw new StoreOpenError(`the audit store ${path} has schema version ${v}, older than this Airlock's ${SCHEMA_VERSION}; open it read-write once (start the gateway) to migrate it`, path);
  }
}

function migrate(db: Database.Database, path: string): void {
  const current = () => Number(db.pragma('user_version', { simple: true }));
  if (current() > SCHEMA_VERSION) {
    throw new StoreOpenError(
      `the audit store ${path} has schema version ${current()}, newer than this Airlock understands (${SCHEMA_VERSION}); upgrade Airlock or point store.sqlite at another file`,
      path,
    );
  }
  if (current() === SCHEMA_VERSION) return;
  // IMMEDIATE takes the write lock first, so two processes opening a new file at once migrate
  // one after the other; the second re-reads the version inside the lock and finds nothing to do.
  db.transaction(() => {
    for (let v = current(); v < SCHEMA_VERSION; v++) {
      try {
        db.exec(MIGRATIONS[v]);
      } catch (e) {
        throw new StoreOpenError(`migrating the audit store ${path} from schema version ${v} to ${v + 1} failed: ${errorText(e)}`, path, { cause: e });
      }
      db.pragma(`user_version = ${v + 1}`);
      // A store from before the chain: its rows become the chain's first entries (snapshots), so
      // verification covers them from now on (not what happened to them before).
      if (v + 1 === 2) chainExisting(db);
    }
  }).immediate();
  log.info({ path, schemaVersion: SCHEMA_VERSION }, 'audit store schema up to date');
}

function chainExisting(db: Database.Database): void {
  let seq = 0;
  let prev = GENESIS_HASH;
  const insert = db.prepare(`INSERT INTO journal (seq, at, kind, entity, item, entry, hash) VALUES (?, ?, ?, ?, ?, ?, ?)`);
  const add = (kind: EntryKind, entity: string, item: number | null, at: number, data: Record<string, unknown>) => {
    seq++;
    const text = entryText(seq, kind, at, data);
    prev = entryHash(prev, text);
    insert.run(seq, at, kind, entity, item, text, prev);
  };
  for (const r of db.prepare(`SELECT * FROM sessions ORDER BY started_at, rowid`).all() as SessionRow[]) {
    add('session.snapshot', `s:${r.id}`, null, r.started_at, {
      id: r.id, protocol: r.protocol, identity: r.identity, groups: r.groups, connection: r.connection, clientAddress: r.client_address,
      startedAt: r.started_at, endedAt: r.ended_at, endReason: r.end_reason, toClient: r.bytes_to_client, fromClient: r.bytes_from_client,
    });
  }
  for (const r of db.prepare(`SELECT * FROM operations ORDER BY at, session_id, seq`).all() as OperationRow[]) {
    add('operation', `s:${r.session_id}`, r.seq, r.at, rowToOperationData(r));
  }
  for (const r of db.prepare(`SELECT * FROM audit ORDER BY id`).all() as AuditRow[]) {
    add('audit', `a:${r.id}`, null, r.at, { id: r.id, at: r.at, kind: r.kind, subject: r.subject, actor: r.actor, detail: r.detail });
  }
}

function isTransient(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

/** Errors a retry cannot fix: the record itself is unacceptable (constraint, bad binding). */
function isPermanent(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  if (typeof code !== 'string') return true;
  return code.startsWith('SQLITE_CONSTRAINT') || code.startsWith('SQLITE_MISMATCH') || code.startsWith('SQLITE_RANGE') || code.startsWith('SQLITE_TOOBIG') || code.startsWith('SQLITE_READONLY');
}

function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
  }
  return String(e);
}

export function validDate(d: unknown): d is Date {
  return d instanceof Date && Number.isFinite(d.getTime());
}

export function epochMs(d: Date): number {
  const t = d instanceof Date ? d.getTime() : new Date(d as unknown as string).getTime();
  // A bad timestamp must not lose the record; "now" is the best available estimate.
  return Number.isFinite(t) ? t : Date.now();
}

/** A required text column never fails NOT NULL on a caller's slip: the record is worth more. */
export function str(v: unknown): string {
  return v === undefined || v === null ? '' : wellFormed(String(v));
}

function numOrNull(n: number | undefined): number | null {
  return typeof n === 'number' && Number.isFinite(n) ? n : null;
}

export function intOrZero(n: number | undefined): number {
  return typeof n === 'number' && Number.isFinite(n) ? Math.max(0, Math.floor(n)) : 0;
}

/** Redacted (redact.ts), then cut at MAX_TEXT_CHARS. A little past the cut is redacted too, so a
 * value straddling it is recognised whole and never left half visible. */
function capText(text: string): string {
  if (text.length <= MAX_TEXT_CHARS) return redactForAudit(text);
  const kept = redactForAudit(text.slice(0, MAX_TEXT_CHARS + 256)).slice(0, MAX_TEXT_CHARS);
  return `${kept}\n… [airlock: ${text.length - MAX_TEXT_CHARS} more characters not recorded]`;
}

function parseJson<T>(text: string | null, fallback: T): T {
  if (text === null) return fallback;
  try {
    return JSON.parse(text) as T;
  } catch {
    return fallback;
  }
}

export function toSession(r: SessionRow): SessionRecord {
  const s: SessionRecord = {
    id: r.id,
    protocol: r.protocol,
    identity: r.identity,
    groups: parseJson<string[]>(r.groups, []),
    connection: r.connection,
    clientAddress: r.client_address,
    startedAt: new Date(r.started_at),
    bytesToClient: r.bytes_to_client,
    bytesFromClient: r.bytes_from_client,
  };
  if (r.ended_at !== null) s.endedAt = new Date(r.ended_at);
  if (r.end_reason !== null) s.endReason = r.end_reason;
  if (r.instance) s.instance = r.instance;
  return s;
}

export function toSummary(r: SummaryRow): SessionSummary {
  return {
    ...toSession(r),
    operationCount: r.op_count,
    deniedCount: r.denied_count,
    reviewCount: r.review_count,
    maskedCount: r.masked_count,
    errorCount: r.error_count,
  };
}

export function toOperation(r: OperationRow): OperationRecord {
  const op: OperationRecord = {
    sessionId: r.session_id,
    seq: r.seq,
    at: new Date(r.at),
    text: r.text,
    kind: r.kind,
    classification: parseJson<Record<string, unknown>>(r.classification, {}),
    decision: r.decision as DecisionAction,
    maskedColumns: parseJson<string[]>(r.masked_columns, []),
  };
  if (r.rule !== null) op.rule = r.rule;
  if (r.reason !== null) op.reason = r.reason;
  if (r.rows !== null) op.rows = r.rows;
  if (r.bytes !== null) op.bytes = r.bytes;
  if (r.error !== null) op.error = r.error;
  if (r.duration_ms !== null) op.durationMs = r.duration_ms;
  const approval = parseJson<OperationRecord['approval'] | null>(r.approval, null);
  if (approval) op.approval = approval;
  return op;
}

export function toAudit(r: AuditRow): AuditEvent {
  const e: AuditEvent = { at: new Date(r.at), kind: r.kind, subject: r.subject, detail: parseJson<Record<string, unknown>>(r.detail, {}) };
  if (r.actor !== null) e.actor = r.actor;
  return e;
}
