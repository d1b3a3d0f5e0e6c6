// The audit store on PostgreSQL, for several gateways sharing one audit trail (config
// `store: { postgres: {...} }`). Same interface, tables, chain and durability policy as the SQLite
// store (sqlite-store.ts); what differs is where the I/O happens.
//
// node-postgres is asynchronous while the Store interface is synchronous. Writes therefore go to an
// ordered in-memory queue that one I/O thread (postgres-store-worker.ts) commits in batches over a
// single writer connection; the main thread only tracks which records are not yet committed, so
// health() is as cheap and as strict as SQLite's: unhealthy (and, fail-closed, assertWritable()
// throws) while the oldest record has waited maxPendingMs, more than maxPending wait, or the last
// failure was not transient (database down, disk full). Reads are synchronous too: the main thread
// posts the query to the I/O thread and blocks (Atomics.wait, bounded by readTimeoutMs) until the
// reply arrives, like better-sqlite3 blocks on the file. Reads serve the CLI and the approval
// notices, never the proxies' hot path; while the database is failing they fail fast instead.
// Each read first lets already queued writes commit (up to readWaitMs), so a reader sees what was
// recorded before it asked.
//
// Tamper evidence: the same journal and canonical entries (chain.ts); appends of all gateways are
// serialized by an advisory lock, so they form one chain. `verify()` copies the tables into an
// in-memory SQLite database and runs the very same verifier (verify.ts); `prune()` follows the
// SQLite store's retention semantics in one transaction under the same lock.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { receiveMessageOnPort, MessageChannel, Worker } from 'node:worker_threads';
import { log } from '../log.ts';
import { redactForAudit } from './redact.ts';
import {
  auditData,
  operationData,
  sessionEndData,
  sessionStartData,
  PruneRefusedError,
  SqliteStore,
  StoreOpenError,
  toAudit,
  toOperation,
  toSummary,
  validDate,
  type AuditRow,
  type PruneResult,
  type OperationRow,
  type SessionSummary,
  type StoreStats,
  type SummaryRow,
} from './sqlite-store.ts';
import type { Checkpoint } from './chain.ts';
import { elevationRow, toElevation, type ElevationRow } from './elevation-rows.ts';
import { assertAuditWritable, auditHealth, type AuditEvent, type ElevationRecord, type AuditFailurePolicy, type AuditHealth, type OperationRecord, type SessionFilter, type SessionStart, type Store } from './store.ts';
import { idpIdentityData, registrationEvent, toIdpIdentity, type IdpIdentity, type IdpIdentityRow } from './identity-registry.ts';
import type { SyncOp, SyncReply, ToMain, ToWorker, WorkerInit, WriteItem, WriteKind } from './postgres-store-protocol.ts';
import { verifyAuditDb, type VerifyOptions, type VerifyReport } from './verify.ts';
import { DEFAULT_INSTANCE_LEASE_MS, instanceIdentity, type InstanceIdentity, type InstanceRow, type OrphanClaim } from './instances.ts';

export interface PostgresConnectionOptions {
  host: string;
  port?: number;
  database: string;
  user: string;
  password?: string;
  /** false/undefined: plain; true: TLS with the system CAs; or a CA bundle and verification choice. */
  tls?: boolean | { ca?: string; rejectUnauthorized?: boolean };
}

export interface PostgresStoreOptions {
  maxPending?: number;
  maxPendingMs?: number;
  onFailure?: AuditFailurePolicy;
  signingKey?: KeyObject;
  checkpointEvery?: number;
  checkpointIntervalMs?: number;
  anchorFile?: string;
  /** Connecting and migrating at open; default 15000 ms. */
  connectTimeoutMs?: number;
  /** Longest a synchronous read blocks the caller; default 5000 ms (then reads fail fast for 5 s). */
  readTimeoutMs?: number;
  /** How long a read waits for queued writes to commit first; default 1000 ms. */
  readWaitMs?: number;
  /** How long close() waits for queued records; default 5000 ms. */
  closeTimeoutMs?: number;
  /** The gateway instance this process is (stamped on every session it starts); default: the process' own (instances.ts). */
  instance?: InstanceIdentity;
  /** A peer instance not seen for this long is dead (gateway.instanceLease). Default 30 s. */
  instanceLeaseMs?: number;
}

const FLUSH_INTERVAL_MS = 10;

export class PostgresStore implements Store {
  /** Records handed to the I/O thread and not yet committed: id -> when it was accepted. Map keeps insertion order. */
  private readonly pending = new Map<number, number>();
  private batch: WriteItem[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private nextId = 1;
  private nextCall = 1;
  private readsBlockedUntil = 0;
  private closed = false;
  private hardFailure = false;
  private readonly counters = { writes: 0, failures: 0, dropped: 0, lastError: undefined as string | undefined };
  private readonly policy: AuditFailurePolicy;
  private readonly maxPending: number;
  private readonly maxPendingMs: number;
  private readonly signal: Int32Array;
  private readonly replies: MessageChannel;
  private readonly worker: Worker;
  /** Where the store lives, for logs and errors (never the password). */
  readonly path: string;
  /** The gateway instance sessions are stamped with. */
  readonly instance: InstanceIdentity;
  private readonly instanceLeaseMs: number;
  private leaseTimer: NodeJS.Timeout | undefined;

  private constructor(
    conn: PostgresConnectionOptions,
    private readonly opts: PostgresStoreOptions,
  ) {
    this.policy = opts.onFailure ?? 'closed';
    this.maxPending = Math.max(1, opts.maxPending ?? 10_000);
    this.maxPendingMs = Math.max(0, opts.maxPendingMs ?? 5000);
    this.path = `postgres://${conn.user}@${conn.host}:${conn.port ?? 5432}/${conn.database}`;
    this.instance = opts.instance ?? instanceIdentity();
    this.instanceLeaseMs = Math.max(1, opts.instanceLeaseMs ?? DEFAULT_INSTANCE_LEASE_MS);
    const sab = new SharedArrayBuffer(4);
    this.signal = new Int32Array(sab);
    this.replies = new MessageChannel();
    const init: WorkerInit = {
      connection: { host: conn.host, port: conn.port ?? 5432, database: conn.database, user: conn.user, password: conn.password, ssl: sslConfig(conn.tls) },
      connectTimeoutMs: opts.connectTimeoutMs ?? 15_000,
      readWaitMs: opts.readWaitMs ?? 1000,
      checkpointEvery: Math.max(1, opts.checkpointEvery ?? 1000),
      checkpointIntervalMs: opts.checkpointIntervalMs ?? 60_000,
      anchorFile: opts.anchorFile,
      signingKeyPem: opts.signingKey?.export({ format: 'pem', type: 'pkcs8' }).toString(),
      signal: sab,
      replyPort: this.replies.port2,
    };
    // The thread runs TypeScript: its .mjs entry registers tsx (workers do not inherit the loader).
    this.worker = new Worker(new URL('./postgres-store-thread.mjs', import.meta.url), { workerData: init, transferList: [this.replies.port2] });
    this.worker.unref();
    this.worker.on('message', (m: ToMain) => this.onMessage(m));
    this.worker.on('error', (e) => {
      this.hardFailure = true;
      this.counters.lastError = `audit I/O thread failed: ${e.message}`;
      log.error({ store: this.path, err: e.message }, 'audit store: I/O thread failed');
    });
    this.worker.on('exit', (code) => {
      if (this.closed) return;
      this.hardFailure = true;
      this.counters.lastError = `audit I/O thread exited (${code})`;
      // Nothing will commit what is pending: health() reports it once it is due.
      if (this.pending.size === 0) this.pending.set(0, Date.now() - this.maxPendingMs);
    });
  }

  /** Connects, migrates (schema version table, under an advisory lock) and starts the writer.
   * Throws StoreOpenError naming the database when that fails: a gateway that cannot record must not start. */
  static open(conn: PostgresConnectionOptions, opts: PostgresStoreOptions = {}): PostgresStore {
    const store = new PostgresStore(conn, opts);
    try {
      store.call('open', [], (opts.connectTimeoutMs ?? 15_000) + 5000);
    } catch (e) {
      store.closed = true;
      void store.worker.terminate();
      throw new StoreOpenError(`cannot open the audit store ${store.path}: ${e instanceof Error ? e.message : String(e)}`, store.path, { cause: e });
    }
    log.debug({ store: store.path }, 'audit store opened');
    return store;
  }

  /** Blocks until the I/O thread answers `op` (or `timeoutMs` passes). */
  private call(op: SyncOp, args: unknown[], timeoutMs = this.opts.readTimeoutMs ?? 5000): unknown {
    if (this.closed) throw new Error('the audit store is closed');
    // A read blocks the event loop (every session of this gateway): while the database is known to
    // be failing, or a read just timed out, fail fast instead of stalling again.
    if (op !== 'open' && op !== 'close') {
      if (this.hardFailure && this.pending.size > 0) throw new Error(`the audit database is unavailable: ${this.counters.lastError ?? 'writes are failing'}`);
      if (Date.now() < this.readsBlockedUntil) throw new Error('the audit database did not answer the last read; not waiting again yet');
    }
    this.flush();
    const call = this.nextCall++;
    Atomics.store(this.signal, 0, 0);
    this.worker.postMessage({ t: 'sync', req: { call, op, args } } satisfies ToWorker);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) {
        this.readsBlockedUntil = Date.now() + 5000;
        throw new Error(`the audit database did not answer ${op} within ${timeoutMs} ms`);
      }
      Atomics.wait(this.signal, 0, 0, left);
      Atomics.store(this.signal, 0, 0);
      for (let m = receiveMessageOnPort(this.replies.port1); m; m = receiveMessageOnPort(this.replies.port1)) {
        const r = m.message as SyncReply;
        if (r.call !== call) continue; // a late answer to a call that timed out
        if (!r.ok) throw Object.assign(new Error(r.error), { code: r.code });
        return r.value;
      }
    }
  }

  private onMessage(m: ToMain): void {
    if (m.t === 'settled') {
      for (const id of m.ids) if (this.pending.delete(id)) this.counters.writes++;
      for (const id of m.dropped) if (this.pending.delete(id)) this.counters.dropped++;
      if (m.ids.length > 0) this.hardFailure = false;
    } else if (m.t === 'failure') {
      this.counters.failures++;
      this.counters.lastError = m.error;
      if (m.permanent) log.error({ store: this.path, err: m.error }, 'audit store: write failed and was dropped');
      else {
        this.hardFailure = !m.transient;
        log.warn({ store: this.path, err: m.error }, 'audit store: write failed, will retry');
      }
    } else if (m.t === 'log') {
      log[m.level]({ store: this.path, ...m.detail }, m.msg);
    }
  }

  private write(kind: WriteKind, what: string, data: Record<string, unknown>): void {
    if (this.closed) {
      this.counters.dropped++;
      log.error({ store: this.path, what }, 'audit store: write after close dropped');
      return;
    }
    // Open policy: bounded memory beats completeness (the oldest go). Closed policy: keep up to
    // twice the bound (traffic is refused meanwhile), then refuse the newest.
    const cap = this.policy === 'open' ? this.maxPending : this.maxPending * 2;
    if (this.pending.size >= cap) {
      if (this.policy === 'closed') {
        this.counters.dropped++;
        log.error({ store: this.path, what, pending: this.pending.size }, 'audit store: retry queue full, record dropped');
        return;
      }
      const oldest = this.pending.keys().next().value as number;
      this.pending.delete(oldest);
      this.counters.dropped++;
      this.worker.postMessage({ t: 'drop', ids: [oldest] } satisfies ToWorker);
      log.error({ store: this.path, what, pending: this.pending.size }, 'audit store: retry queue full, oldest record dropped');
    }
    const id = this.nextId++;
    this.pending.set(id, Date.now());
    this.batch.push({ id, what, kind, data: noNul(data) });
    if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flush(), FLUSH_INTERVAL_MS);
      this.flushTimer.unref();
    }
  }

  /** Hands the batched records to the I/O thread (one message per turn, not per record). */
  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.batch.length === 0) return;
    const items = this.batch;
    this.batch = [];
    this.worker.postMessage({ t: 'write', items } satisfies ToWorker);
  }

  startSession(s: SessionStart): void {
    const data = sessionStartData(s, this.instance.id);
    this.write('start', `start session ${s.id}`, data);
  }

  endSession(id: string, endedAt: Date, reason: string, bytes: { toClient: number; fromClient: number }): void {
    const data = sessionEndData(id, endedAt, reason, bytes);
    this.write('end', `end session ${id}`, data);
  }

  recordOperation(op: OperationRecord): void {
    let data: ReturnType<typeof operationData>;
    try {
      data = operationData(op);
    } catch (e) {
      this.counters.failures++;
      this.counters.dropped++;
      this.counters.lastError = `record operation ${op?.sessionId}#${op?.seq}: ${e instanceof Error ? e.message : String(e)}`;
      log.error({ store: this.path, err: this.counters.lastError }, 'audit store: write failed and was dropped');
      return;
    }
    this.write('operation', `record operation ${data.sessionId}#${data.seq}`, data);
  }

  recordAudit(e: AuditEvent): void {
    const data = auditData(e);
    this.write('audit', `audit ${e.kind} ${e.subject}`, data);
  }

  /** Newest first, with operation counts. Reads throw: they serve the CLI, which reports them. */
  listSessions(f: SessionFilter = {}): SessionSummary[] {
    if (f.limit !== undefined && !(Number.isInteger(f.limit) && f.limit >= 0)) throw new RangeError(`session list limit must be a non-negative integer, got ${f.limit}`);
    const rows = this.call('listSessions', [f.identity ?? null, f.connection ?? null, f.limit ?? null]) as SummaryRow[];
    return rows.map(toSummary);
  }

  getSession(id: string): { session: SessionSummary; operations: OperationRecord[] } | undefined {
    const r = this.call('getSession', [id]) as { session: SummaryRow; operations: OperationRow[] } | null;
    return r ? { session: toSummary(r.session), operations: r.operations.map(toOperation) } : undefined;
  }

  listAudit(subject?: string): AuditEvent[] {
    return (this.call('listAudit', [subject ?? null]) as AuditRow[]).map(toAudit);
  }

  putElevation(e: ElevationRecord): void {
    this.call('putElevation', [elevationRow(e)]);
  }

  revokeElevation(id: string, at: Date, by: string, reason: string): boolean {
    return this.call('revokeElevation', [id, at.getTime(), by, redactForAudit(reason)]) === true;
  }

  getElevation(id: string): ElevationRecord | undefined {
    const r = this.call('getElevation', [id]) as ElevationRow | null;
    return r ? toElevation(r) : undefined;
  }

  listElevations(f: { identity?: string; activeAt?: Date; limit?: number } = {}): ElevationRecord[] {
    return (this.call('listElevations', [f.identity ?? null, f.activeAt ? f.activeAt.getTime() : null, f.limit ?? 1000]) as ElevationRow[]).map(toElevation);
  }

  /** Synchronous (a sign-in is rare, and the approver lookup right after must see it). */
  recordIdpIdentity(e: IdpIdentity): void {
    this.call('putIdpIdentity', [idpIdentityData(e)]);
    this.recordAudit(registrationEvent(e));
  }

  findIdpIdentities(q: { email: string } | { identity: string }): IdpIdentity[] {
    const args = 'email' in q ? ['email', q.email.trim().toLowerCase()] : ['identity', q.identity];
    return (this.call('findIdpIdentities', args) as IdpIdentityRow[]).map(toIdpIdentity);
  }

  findSessionIds(prefix: string, limit = 10): string[] {
    if (prefix === '') return [];
    return this.call('findSessionIds', [prefix, limit]) as string[];
  }

  /**
   * Registers this instance (its lease row) and claims, under one lock shared by every gateway on the
   * database, the instances that are certainly gone (instances.ts): their rows are removed and their
   * sessions still open are returned for reconcile.ts to end. Sessions without an owner (recorded
   * before instance ids) are left alone: they may be a live older gateway's. Call at startup.
   */
  claimOrphanedSessions(): OrphanClaim {
    return this.call('claimOrphans', [this.instance, this.instanceLeaseMs], Math.max(this.opts.readTimeoutMs ?? 5000, 15_000)) as OrphanClaim;
  }

  /** Keeps this instance's lease fresh (every lease/3, on the database's clock) until close; close marks it gone. */
  startInstanceLease(): void {
    if (this.leaseTimer || this.closed) return;
    const beat = () => this.worker.postMessage({ t: 'lease', self: this.instance } satisfies ToWorker);
    beat();
    this.leaseTimer = setInterval(beat, Math.max(10, Math.floor(this.instanceLeaseMs / 3)));
    this.leaseTimer.unref();
  }

  /** Gateway instances registered on this database (lease rows). */
  instances(): InstanceRow[] {
    return this.call('instances', []) as InstanceRow[];
  }

  schemaVersion(): number {
    return this.call('schemaVersion', []) as number;
  }

  /** The same checks as the SQLite store (verify.ts), over a consistent snapshot of the tables. */
  verify(opts: VerifyOptions = {}): VerifyReport {
    const d = this.call('dump', [], Math.max(60_000, this.opts.readTimeoutMs ?? 0)) as Record<'sessions' | 'operations' | 'audit' | 'journal' | 'checkpoints', Record<string, unknown>[]>;
    const copy = SqliteStore.open(':memory:');
    try {
      const db = copy.database;
      const insert = (table: string, rows: Record<string, unknown>[]) => {
        if (rows.length === 0) return;
        const cols = Object.keys(rows[0]);
        const st = db.prepare(`INSERT INTO ${table} (${cols.join(', ')}) VALUES (${cols.map((c) => '@' + c).join(', ')})`);
        db.transaction(() => {
          for (const r of rows) st.run(r);
        })();
      };
      insert('sessions', d.sessions);
      insert('operations', d.operations);
      insert('audit', d.audit);
      insert('journal', d.journal);
      insert('checkpoints', d.checkpoints);
      return verifyAuditDb(db, opts);
    } finally {
      copy.close();
    }
  }

  /**
   * Retention, with SqliteStore.prune's semantics: refuses (PruneRefusedError) when the chain does not
   * verify, then deletes what ended before `before` in one transaction under the chain lock, keeping
   * snapshots of retained state and a base checkpoint (signed when the store has the key).
   */
  prune(before: Date, opts: VerifyOptions = {}): PruneResult {
    if (!validDate(before)) throw new RangeError('prune needs a valid cutoff date');
    const report = this.verify(opts);
    if (!report.ok) throw new PruneRefusedError(report);
    return this.call('prune', [before.getTime(), report.lastSeq, report.lastHash, report.entries], 10 * 60_000) as PruneResult;
  }

  /** Signs the chain head now (also done every checkpointEvery entries, checkpointInterval and on close). */
  checkpoint(): Checkpoint | undefined {
    if (!this.opts.signingKey) return undefined;
    return (this.call('checkpoint', []) as Checkpoint | null) ?? undefined;
  }

  publicKey(): KeyObject | undefined {
    return this.opts.signingKey ? createPublicKey(this.opts.signingKey) : undefined;
  }

  stats(): StoreStats {
    return { writes: this.counters.writes, failures: this.counters.failures, pending: this.pending.size, dropped: this.counters.dropped, lastError: this.counters.lastError };
  }

  health(): AuditHealth {
    const pending = this.pending.size;
    const oldestQueuedAt = pending > 0 ? (this.pending.values().next().value as number) : 0;
    const { policy, closed, hardFailure, maxPending, maxPendingMs } = this;
    return auditHealth({ policy, pending, oldestQueuedAt, dropped: this.counters.dropped, lastError: this.counters.lastError, closed, hardFailure, maxPending, maxPendingMs });
  }

  writable(): boolean {
    return this.policy === 'open' || this.health().ok;
  }

  assertWritable(): void {
    assertAuditWritable(this.policy, () => this.health());
  }

  /** Resolves true once every accepted record is committed, false after `timeoutMs` (shutdown). */
  async whenDrained(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    this.flush();
    while (this.pending.size > 0 && !this.closed) {
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.pending.size === 0;
  }

  /** Commits what can be committed within closeTimeoutMs, signs the head, closes. Idempotent. */
  close(): void {
    if (this.closed) return;
    const wait = this.opts.closeTimeoutMs ?? 5000;
    let lost = this.pending.size;
    const leased = this.leaseTimer !== undefined;
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    this.leaseTimer = undefined;
    try {
      lost = this.call('close', [wait, leased ? this.instance : undefined], wait + 5000) as number;
    } catch (e) {
      log.error({ store: this.path, err: e instanceof Error ? e.message : String(e) }, 'audit store: close failed');
    }
    this.closed = true;
    if (lost > 0) {
      this.counters.dropped += lost;
      log.error({ store: this.path, lost, lastError: this.counters.lastError }, 'audit store closed with unwritten records');
    }
    this.pending.clear();
    void this.worker.terminate();
  }
}

function sslConfig(tls: PostgresConnectionOptions['tls']): WorkerInit['connection']['ssl'] {
  if (!tls) return false;
  if (tls === true) return { rejectUnauthorized: true };
  return { ca: tls.ca, rejectUnauthorized: tls.rejectUnauthorized ?? true };
}

/** PostgreSQL text cannot hold NUL; SQLite can. U+FFFD keeps the record (and its chain entry) storable. */
function noNul(data: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const [k, v] of Object.entries(data)) {
    if (typeof v === 'string' && v.includes('\u0000')) {
      out ??= { ...data };
      out[k] = v.replaceAll('\u0000', '\uFFFD');
    }
  }
  return out ?? data;
}
