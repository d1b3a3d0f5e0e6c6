// The SQLite audit store with its writes on a thread of their own: what `airlock gateway` runs.
//
// Recording a statement is most of what the gateway spends per statement when done inline (the
// record's redaction and JSON, the chain entry's canonical form and SHA-256, two inserts and their
// indexes; see docs/performance.md). Here the relaying thread only batches the calls (one
// structured-clone message every few milliseconds) and a writer thread
// (sqlite-writer-thread.ts) applies them to an ordinary SqliteStore: same tables, chain, group
// commit, retry queue and checkpoints. What stays on this thread:
//
// - Fail-closed health, exactly: records handed over and not yet acknowledged count as pending
//   (their age and number against audit.maxPendingMs / maxPending), merged with the writer's own
//   health (its retry queue, hard failures) as it reports it after every commit and on every change.
//   A writer thread that dies makes the store unhealthy at once. A writer that is healthy but behind
//   slows the relaying thread down (bounded waits) rather than letting the bound refuse traffic.
// - Reads and the rare synchronous writes (elevation windows, identity registry, instance leases,
//   reconciliation, verify) go through a second connection on the same file (WAL: readers never
//   wait for the writer). Each first waits (Atomics.wait, bounded) until the writer acknowledged
//   every record handed over before it, so a reader sees what was recorded before it asked.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { MessageChannel, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { log } from '../log.ts';
import type { AuditCall } from './audit-call.ts';
import type { Checkpoint } from './chain.ts';
import type { IdpIdentity } from './identity-registry.ts';
import type { InstanceIdentity, InstanceRow, OrphanClaim } from './instances.ts';
import { PruneRefusedError, SqliteStore, StoreOpenError, validDate, type PruneResult, type SessionSummary, type SqliteStoreOptions, type StoreStats } from './sqlite-store.ts';
import type { FromWriter, ToWriter, WriterInit } from './sqlite-writer-protocol.ts';
import { assertAuditWritable, auditHealth, handedOverHealth, type AuditEvent, type AuditFailurePolicy, type AuditHealth, type ElevationRecord, type OperationRecord, type SessionFilter, type SessionStart, type Store } from './store.ts';
import type { VerifyOptions, VerifyReport } from './verify.ts';

/** Longest one hand-over waits for a slow writer (backpressure), so a stall never freezes the gateway. */
const THROTTLE_MAX_MS = 250;

/** How long records wait to be handed over together (bounded by BATCH_MAX). */
const HAND_OVER_MS = 2;

/** Records handed over and not yet acknowledged before the relaying thread waits for the writer. */
const HIGH_WATER = 2048;

type WriterCall = DistributiveOmit<Extract<ToWriter, { t: 'call' }>, 't' | 'id'>;
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** Calls per message at most; a busy gateway sends full batches, a quiet one every HAND_OVER_MS. */
const BATCH_MAX = 512;

export interface ThreadedSqliteStoreOptions extends SqliteStoreOptions {
  /** Longest a read (or close) waits for the writer to acknowledge what was handed over; default 5000 ms. */
  readWaitMs?: number;
}

export class ThreadedSqliteStore implements Store {
  #batch: AuditCall[] = [];
  #batchQueuedAt = 0;
  #scheduled = false;
  #next = 1;
  /** Handed over, not yet acknowledged: batch number -> (calls, when the oldest was accepted). Insertion-ordered. */
  readonly #inflight = new Map<number, { count: number; queuedAt: number }>();
  #unacked = 0;
  /** The writer's store as it last reported: health after its last commit. */
  #writer: AuditHealth;
  #writerStats: StoreStats = { writes: 0, failures: 0, pending: 0, dropped: 0 };
  /** Why the writer thread is gone (it died, or could not be reached), if it is. */
  #gone: string | undefined;
  #lostRecords = 0;
  #closed = false;
  #nextCall = 1;
  readonly #drainWaiters = new Set<() => void>();
  readonly #policy: AuditFailurePolicy;
  readonly #maxPending: number;
  readonly #maxPendingMs: number;
  readonly #readWaitMs: number;
  /** Unacknowledged records beyond which handing over waits for the writer (#throttle). */
  readonly #highWater: number;
  readonly #signal: Int32Array;
  readonly #port: MessageChannel['port1'];
  readonly #thread: Worker;
  readonly #signingKey: KeyObject | undefined;

  private constructor(
    /** Reads and synchronous writes: a connection of this thread on the same file. */
    private readonly reader: SqliteStore,
    opts: ThreadedSqliteStoreOptions,
  ) {
    this.#policy = opts.onFailure ?? 'closed';
    this.#maxPending = Math.max(1, opts.maxPending ?? 10_000);
    this.#maxPendingMs = Math.max(0, opts.maxPendingMs ?? 5000);
    this.#readWaitMs = opts.readWaitMs ?? 5000;
    this.#highWater = Math.max(1, Math.min(HIGH_WATER, Math.floor(this.#maxPending / 4)));
    this.#signingKey = opts.signingKey;
    this.#writer = reader.health();
    const sab = new SharedArrayBuffer(4);
    this.#signal = new Int32Array(sab);
    const channel = new MessageChannel();
    this.#port = channel.port1;
    const { signingKey, readonly: _r, readWaitMs: _w, ...options } = opts;
    const init: WriterInit = {
      path: reader.path,
      options: { ...options, instance: reader.instance },
      ...(signingKey ? { signingKeyPem: signingKey.export({ format: 'pem', type: 'pkcs8' }).toString() } : {}),
      signal: sab,
      port: channel.port2,
    };
    // The thread runs TypeScript: its .mjs entry registers tsx (workers do not inherit the loader).
    this.#thread = new Worker(new URL('./sqlite-writer-thread.mjs', import.meta.url), { workerData: init, transferList: [channel.port2] });
    this.#thread.unref();
    this.#thread.on('error', (e) => this.#lose(`the audit writer thread failed: ${e.message}`));
    this.#thread.on('exit', (code) => {
      if (!this.#closed) this.#lose(`the audit writer thread exited (${code})`);
    });
    this.#port.on('message', (m: FromWriter) => this.#onMessage(m));
    this.#port.unref();
  }

  /**
   * Opens the store at `path` (a file: the writer thread needs its own connection to it), migrating
   * it on this thread first, then starts the writer and waits until it has the file open.
   * Throws StoreOpenError naming the file when either fails: a gateway that cannot record must not start.
   */
  static open(path: string, opts: ThreadedSqliteStoreOptions = {}): ThreadedSqliteStore {
    if (path === ':memory:') throw new StoreOpenError('the audit writer thread needs a file, not :memory:', path);
    if (opts.readonly) throw new StoreOpenError('the audit writer thread writes: open a read-only store with SqliteStore', path);
    // This connection never signs checkpoints on its own (the writer does, as it appends); it keeps
    // the key only for prune's base checkpoint and explicit checkpoint() calls, which go to the writer.
    const { signingKey: _k, readWaitMs: _w, ...rest } = opts;
    const reader = SqliteStore.open(path, rest);
    const store = new ThreadedSqliteStore(reader, opts);
    try {
      store.#await((m) => m.t === 'ready' || m.t === 'open-failed', 'start', Math.max(store.#readWaitMs, 15_000));
    } catch (e) {
      store.#closed = true;
      void store.#thread.terminate();
      reader.close();
      throw new StoreOpenError(`cannot start the audit writer for ${reader.path}: ${e instanceof Error ? e.message : String(e)}`, reader.path, { cause: e });
    }
    return store;
  }

  get path(): string {
    return this.reader.path;
  }

  /** The gateway instance sessions are stamped with. */
  get instance(): InstanceIdentity {
    return this.reader.instance;
  }

  /** This thread's connection (reads, verification), after the writer took what was handed over. */
  get database(): SqliteStore['database'] {
    this.#settle('open the database');
    return this.reader.database;
  }

  #onMessage(m: FromWriter): void {
    if (m.t === 'ack') {
      // Batches are numbered in order and the writer applies them in order: everything up to upTo is done.
      for (const [n, b] of this.#inflight) {
        if (n > m.upTo) break;
        this.#inflight.delete(n);
        this.#unacked -= b.count;
      }
      this.#writer = m.health;
      this.#writerStats = m.stats;
      if (this.#inflight.size === 0 && this.#batch.length === 0) for (const w of [...this.#drainWaiters]) w();
    } else if (m.t === 'health') {
      this.#writer = m.health;
      this.#writerStats = m.stats;
    } else if (m.t === 'open-failed') {
      this.#lose(`the audit writer could not open the store: ${m.error}`);
    }
    // 'ready' and 'reply' are awaited synchronously (#await)
  }

  #lose(reason: string): void {
    if (this.#gone) return;
    this.#gone = reason;
    this.#lostRecords += this.#unacked + this.#batch.length;
    log.error({ path: this.path, err: reason, unwritten: this.#unacked + this.#batch.length }, 'audit store: the writer thread is gone; new work is refused (audit.onFailure: closed)');
    for (const w of [...this.#drainWaiters]) w();
  }

  /**
   * Blocks this thread until a message from the writer satisfies `done` (processing every other
   * message on the way), or `timeoutMs` passes. Returns the message.
   */
  #await(done: (m: FromWriter) => boolean, what: string, timeoutMs = this.#readWaitMs): FromWriter {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = Atomics.load(this.#signal, 0);
      for (let r = receiveMessageOnPort(this.#port); r; r = receiveMessageOnPort(this.#port)) {
        const m = r.message as FromWriter;
        this.#onMessage(m);
        if (done(m)) {
          if (m.t === 'open-failed') throw new Error(m.error);
          return m;
        }
      }
      if (this.#gone) throw new Error(this.#gone);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`the audit writer did not answer (${what}) within ${timeoutMs} ms`);
      Atomics.wait(this.#signal, 0, seen, left);
    }
  }

  /** Waits until the writer acknowledged everything handed over so far (reads see their own writes). */
  #settle(what: string): void {
    this.#handOver();
    if (this.#inflight.size === 0 || this.#gone) return;
    this.#port.postMessage({ t: 'flush' } satisfies ToWriter);
    this.#await(() => this.#inflight.size === 0, what);
  }

  /**
   * Backpressure: the writer fell behind (it shares the CPU with the traffic it records), so this
   * thread waits for it instead of piling up records until the fail-closed bound refuses traffic.
   * Recording then costs this thread what it cost inline, only while the writer cannot keep up.
   */
  #throttle(): void {
    // A writer that is failing (lock, full disk) is not slow but stuck: health() refuses new work
    // then, and waiting here would only freeze every session of this gateway.
    if (!this.#writer.ok || this.#writer.pending > 0) return;
    this.#port.postMessage({ t: 'flush' } satisfies ToWriter);
    try {
      this.#await(() => this.#unacked <= this.#highWater / 2, 'catch up', THROTTLE_MAX_MS);
    } catch {
      // Not caught up within THROTTLE_MAX_MS: the lag counts against maxPendingMs in health().
    }
  }

  /** A synchronous request to the writer (checkpoint, prune, close). */
  #call(req: WriterCall, timeoutMs = this.#readWaitMs): Checkpoint | PruneResult | null {
    this.#handOver();
    if (this.#gone) throw new Error(this.#gone);
    const id = this.#nextCall++;
    this.#port.postMessage({ t: 'call', id, ...req } as ToWriter);
    const r = this.#await((m) => m.t === 'reply' && m.id === id, req.op, timeoutMs);
    if (r.t !== 'reply') throw new Error(`unexpected answer from the audit writer to ${req.op}`);
    if (!r.ok) throw r.report ? new PruneRefusedError(r.report) : new Error(r.error);
    this.#writerStats = r.stats;
    return r.value;
  }

  #push(c: AuditCall): void {
    if (this.#closed) {
      this.#lostRecords++;
      log.error({ path: this.path, kind: c.k }, 'audit store: write after close dropped');
      return;
    }
    // Memory stays bounded whatever the writer does: beyond twice maxPending records not yet
    // acknowledged (the closed policy refuses new work long before), new ones are dropped and counted.
    if (this.#unacked + this.#batch.length >= 2 * this.#maxPending) {
      this.#lostRecords++;
      log.error({ path: this.path, kind: c.k, pending: this.#unacked + this.#batch.length }, 'audit store: the writer is too far behind, record dropped');
      return;
    }
    if (this.#batch.length === 0) this.#batchQueuedAt = Date.now();
    this.#batch.push(c);
    if (this.#batch.length >= BATCH_MAX) this.#handOver();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      // A message per few milliseconds, not per turn of the loop: each one wakes the writer and
      // costs a clone of its own (records are never changed after they are recorded: Store).
      setTimeout(this.#handOverLater, HAND_OVER_MS).unref();
    }
  }

  /** Commits now, like SqliteStore.flush: hands the batch over and waits (bounded) for the writer's commit. */
  flush(): void {
    this.#settle('flush');
  }

  readonly #handOverLater = () => this.#handOver();

  /** Hands what is batched to the writer without waiting (the hot path). */
  #handOver(): void {
    this.#scheduled = false;
    if (this.#batch.length === 0) return;
    const calls = this.#batch;
    this.#batch = [];
    if (this.#gone) {
      this.#lostRecords += calls.length; // nothing will write them: health() already refuses new work
      return;
    }
    const n = this.#next++;
    this.#inflight.set(n, { count: calls.length, queuedAt: this.#batchQueuedAt });
    this.#unacked += calls.length;
    try {
      this.#port.postMessage({ t: 'write', n, calls } satisfies ToWriter);
    } catch {
      // Something in a record cannot be cloned: hand the calls over one by one so only that one is lost.
      this.#inflight.delete(n);
      this.#unacked -= calls.length;
      this.#handOverEach(calls);
      return;
    }
    if (this.#unacked >= this.#highWater) this.#throttle();
  }

  #handOverEach(calls: AuditCall[]): void {
    for (const c of calls) {
      const n = this.#next++;
      try {
        this.#port.postMessage({ t: 'write', n, calls: [c] } satisfies ToWriter);
        this.#inflight.set(n, { count: 1, queuedAt: this.#batchQueuedAt });
        this.#unacked += 1;
      } catch (e) {
        this.#lostRecords++;
        log.error({ path: this.path, kind: c.k, err: e instanceof Error ? e.message : String(e) }, 'audit store: a record could not be handed to the writer and was dropped');
      }
    }
  }

  // Session starts and ends and audit events are handed over in the same turn of the event loop
  // (the writer commits them at once); operations are batched for a few milliseconds.
  startSession(s: SessionStart): void {
    this.#push({ k: 'start', s });
    this.#soon();
  }

  endSession(id: string, at: Date, reason: string, bytes: { toClient: number; fromClient: number }): void {
    this.#push({ k: 'end', id, at, reason, bytes: { toClient: bytes.toClient, fromClient: bytes.fromClient } });
    this.#soon();
  }

  recordOperation(op: OperationRecord): void {
    this.#push({ k: 'op', op });
  }

  recordAudit(e: AuditEvent): void {
    this.#push({ k: 'audit', e });
    this.#soon();
  }

  #soonScheduled = false;
  readonly #handOverSoon = () => {
    this.#soonScheduled = false;
    this.#handOver();
  };

  #soon(): void {
    if (this.#soonScheduled || this.#batch.length === 0) return;
    this.#soonScheduled = true;
    setImmediate(this.#handOverSoon);
  }

  health(): AuditHealth {
    let oldestQueuedAt = this.#batch.length ? this.#batchQueuedAt : 0;
    for (const b of this.#inflight.values()) {
      oldestQueuedAt = oldestQueuedAt === 0 ? b.queuedAt : Math.min(oldestQueuedAt, b.queuedAt);
      break; // insertion order: the first is the oldest
    }
    const local = auditHealth({
      policy: this.#policy,
      pending: this.#unacked + this.#batch.length,
      oldestQueuedAt,
      dropped: 0,
      closed: this.#closed,
      hardFailure: false,
      maxPending: this.#maxPending,
      maxPendingMs: this.#maxPendingMs,
    });
    // The writer thread's store, and this thread's own connection (its rare direct writes).
    return handedOverHealth(local, [this.#writer, this.reader.health()], { dropped: this.#lostRecords, waitingFor: 'taken by the audit writer', ...(this.#gone ? { gone: this.#gone } : {}) });
  }

  writable(): boolean {
    if (this.#policy === 'open') return true;
    // Per statement on the proxy's hot path: a few comparisons while everything keeps up.
    if (!this.#gone && !this.#closed && this.#writer.ok && this.#writer.pending === 0 && this.reader.writable()) {
      const n = this.#unacked + this.#batch.length;
      if (n === 0) return true;
      if (n < this.#maxPending) {
        const first = this.#inflight.values().next();
        const oldest = first.done ? this.#batchQueuedAt : first.value.queuedAt;
        if (Date.now() - oldest < this.#maxPendingMs) return true;
      }
    }
    return this.health().ok;
  }

  assertWritable(): void {
    assertAuditWritable(this.#policy, () => this.health());
  }

  stats(): StoreStats {
    const own = this.reader.stats();
    const w = this.#writerStats;
    const lastError = w.lastError ?? own.lastError;
    return {
      writes: w.writes + own.writes,
      failures: w.failures + own.failures,
      pending: this.#unacked + this.#batch.length + w.pending + own.pending,
      dropped: w.dropped + own.dropped + this.#lostRecords,
      ...(lastError ? { lastError } : {}),
    };
  }

  /** Resolves true once the writer has written every accepted record, false after `timeoutMs` (shutdown). */
  async whenDrained(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    this.#handOver();
    for (;;) {
      if (this.#gone) return false;
      if (this.#inflight.size === 0 && this.#writer.pending === 0 && this.#batch.length === 0) return this.reader.whenDrained(Math.max(0, deadline - Date.now()));
      const left = deadline - Date.now();
      if (left <= 0) return false;
      if (this.#inflight.size > 0) this.#port.postMessage({ t: 'flush' } satisfies ToWriter);
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          this.#drainWaiters.delete(done);
          resolve();
        };
        const t = setTimeout(done, Math.min(left, 20));
        this.#drainWaiters.add(done);
      });
    }
  }

  // Reads: after the writer took everything handed over before them.
  listSessions(f: SessionFilter = {}): SessionSummary[] {
    this.#settle('list sessions');
    return this.reader.listSessions(f);
  }

  getSession(id: string): { session: SessionSummary; operations: OperationRecord[] } | undefined {
    this.#settle('read a session');
    return this.reader.getSession(id);
  }

  listAudit(subject?: string): AuditEvent[] {
    this.#settle('list audit events');
    return this.reader.listAudit(subject);
  }

  findSessionIds(prefix: string, limit?: number): string[] {
    this.#settle('find sessions');
    return this.reader.findSessionIds(prefix, limit);
  }

  openSessionIds(): string[] {
    this.#settle('list open sessions');
    return this.reader.openSessionIds();
  }

  getElevation(id: string): ElevationRecord | undefined {
    return this.reader.getElevation(id);
  }

  listElevations(f?: { identity?: string; activeAt?: Date; limit?: number }): ElevationRecord[] {
    return this.reader.listElevations(f);
  }

  findIdpIdentities(q: { email: string } | { identity: string }): IdpIdentity[] {
    return this.reader.findIdpIdentities(q);
  }

  // Written at once (the Store contract), on this thread's connection, after the writer's queue.
  putElevation(e: ElevationRecord): void {
    this.#settle('record an elevation');
    this.reader.putElevation(e);
  }

  revokeElevation(id: string, at: Date, by: string, reason: string): boolean {
    this.#settle('revoke an elevation');
    return this.reader.revokeElevation(id, at, by, reason);
  }

  recordIdpIdentity(e: IdpIdentity): void {
    this.#settle('register an identity');
    this.reader.recordIdpIdentity(e);
  }

  claimOrphanedSessions(): OrphanClaim {
    this.#settle('reconcile');
    return this.reader.claimOrphanedSessions();
  }

  startInstanceLease(): void {
    this.reader.startInstanceLease();
  }

  instances(): InstanceRow[] {
    return this.reader.instances();
  }

  schemaVersion(): number {
    return this.reader.schemaVersion();
  }

  verify(opts: VerifyOptions = {}): VerifyReport {
    this.#settle('verify');
    return this.reader.verify(opts);
  }

  /** Retention with SqliteStore.prune's semantics, run by the writer (one chain order, its signing key). */
  prune(before: Date, opts: VerifyOptions = {}): PruneResult {
    if (!validDate(before)) throw new RangeError('prune needs a valid cutoff date');
    this.#settle('prune');
    return this.#call({
      op: 'prune',
      before: before.getTime(),
      ...(opts.publicKey ? { publicKeyPem: opts.publicKey.export({ format: 'pem', type: 'spki' }).toString() } : {}),
      ...(opts.from ? { from: opts.from.getTime() } : {}),
      ...(opts.anchored ? { anchored: opts.anchored } : {}),
    }, 10 * 60_000) as PruneResult;
  }

  /** Signs the chain head now (the writer also does every checkpointEvery entries, checkpointInterval and on close). */
  checkpoint(): Checkpoint | undefined {
    if (!this.#signingKey) return undefined;
    this.#settle('checkpoint');
    return (this.#call({ op: 'checkpoint' }) as Checkpoint | null) ?? undefined;
  }

  publicKey(): KeyObject | undefined {
    return this.#signingKey ? createPublicKey(this.#signingKey) : undefined;
  }

  /** Tests: ends the writer thread abruptly, as a crash of it would. */
  async crashWriterForTests(): Promise<void> {
    await this.#thread.terminate();
  }

  /** Lets the writer commit what it was handed (within readWaitMs), sign the head, and stops it. Idempotent. */
  close(): void {
    if (this.#closed) return;
    try {
      if (!this.#gone) this.#call({ op: 'close' }, Math.max(this.#readWaitMs, 5000));
    } catch (e) {
      log.error({ path: this.path, err: e instanceof Error ? e.message : String(e) }, 'audit store: closing the writer failed');
      this.#lostRecords += this.#unacked;
    }
    this.#closed = true;
    const lost = this.#writerStats.pending;
    if (lost > 0) log.error({ path: this.path, lost }, 'audit store closed with unwritten records');
    this.#inflight.clear();
    this.#unacked = 0;
    void this.#thread.terminate();
    this.#port.close();
    this.reader.close();
  }
}
