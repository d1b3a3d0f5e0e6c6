// The audit store as a gateway worker sees it: every write is batched and sent to the cluster
// primary, the one writer, so the hash chain stays linear whatever the number of workers. The
// primary acknowledges each batch with the store's health; the fail-closed policy holds here
// too: new sessions and operations are refused while the primary reports the trail unhealthy,
// while acknowledgements are overdue (the primary is stuck) or once the IPC channel is gone.
// Reads (approval threads' session logs) go to a read-only handle on the same store.
import type { IdpIdentity } from '../recording/identity-registry.ts';
import { auditHealth, assertAuditWritable, handedOverHealth, type AuditEvent, type ElevationRecord, type AuditFailurePolicy, type AuditHealth, type OperationRecord, type SessionFilter, type SessionRecord, type SessionStart, type Store } from '../recording/store.ts';
import type { AuditCall, ToPrimary } from './protocol.ts';

/** Calls per IPC message at most; a busy worker sends full batches, a quiet one every turn of the loop. */
const BATCH_MAX = 512;

export interface PrimaryChannel {
  send(m: ToPrimary): void;
  connected(): boolean;
}

export interface WorkerStoreOptions {
  policy: AuditFailurePolicy;
  maxPending: number;
  maxPendingMs: number;
  /** Opens a read-only handle on the store the primary writes (opened on first read). */
  openReader: () => StoreReader;
}

export type StoreReader = Pick<Store, 'listSessions' | 'getSession' | 'listAudit' | 'findSessionIds' | 'getElevation' | 'listElevations' | 'findIdpIdentities' | 'close'>;

export class WorkerStore implements Store {
  #batch: AuditCall[] = [];
  #scheduled = false;
  #next = 1;
  /** Sent, not yet acknowledged: batch number -> (calls, when the oldest was accepted). */
  readonly #inflight = new Map<number, { count: number; queuedAt: number }>();
  #batchQueuedAt = 0;
  #unacked = 0;
  #primary: AuditHealth | undefined;
  #lost = false;
  /** Records that could not be sent (the channel was gone). */
  #dropped = 0;
  #closed = false;
  #reader: StoreReader | undefined;
  readonly #drainWaiters = new Set<() => void>();

  constructor(
    private readonly channel: PrimaryChannel,
    private readonly opts: WorkerStoreOptions,
  ) {}

  startSession(s: SessionStart): void {
    this.#push({ k: 'start', s });
  }

  endSession(id: string, at: Date, reason: string, bytes: { toClient: number; fromClient: number }): void {
    this.#push({ k: 'end', id, at, reason, bytes: { toClient: bytes.toClient, fromClient: bytes.fromClient } });
  }

  recordOperation(op: OperationRecord): void {
    this.#push({ k: 'op', op });
  }

  recordAudit(e: AuditEvent): void {
    this.#push({ k: 'audit', e });
  }

  #push(c: AuditCall): void {
    if (this.#closed) return;
    if (this.#batch.length === 0) this.#batchQueuedAt = Date.now();
    this.#batch.push(c);
    if (this.#batch.length >= BATCH_MAX) this.flush();
    else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Sends what is batched now. */
  flush(): void {
    this.#scheduled = false;
    if (this.#batch.length === 0) return;
    const calls = this.#batch;
    this.#batch = [];
    if (this.#lost || !this.channel.connected()) {
      this.#lost = true;
      this.#dropped += calls.length; // nothing can carry them: health() already refuses new work
      return;
    }
    const n = this.#next++;
    this.#inflight.set(n, { count: calls.length, queuedAt: this.#batchQueuedAt });
    this.#unacked += calls.length;
    try {
      this.channel.send({ t: 'airlock:audit', n, calls });
    } catch {
      this.#lost = true;
      this.#dropped += calls.length;
    }
  }

  /** The primary accepted batch `n` into its store. */
  acknowledged(n: number, health: AuditHealth): void {
    const b = this.#inflight.get(n);
    if (b) {
      this.#inflight.delete(n);
      this.#unacked -= b.count;
    }
    this.#primary = health;
    if (this.#inflight.size === 0 && this.#batch.length === 0) for (const w of [...this.#drainWaiters]) w();
  }

  /** The store's health as the primary last reported it. */
  primaryHealth(health: AuditHealth): void {
    this.#primary = health;
  }

  /** The IPC channel closed: nothing can be recorded any more. */
  disconnected(): void {
    this.#lost = true;
    for (const w of [...this.#drainWaiters]) w();
  }

  health(): AuditHealth {
    const { policy, maxPending, maxPendingMs } = this.opts;
    let oldestQueuedAt = this.#batch.length ? this.#batchQueuedAt : Number.POSITIVE_INFINITY;
    for (const b of this.#inflight.values()) oldestQueuedAt = Math.min(oldestQueuedAt, b.queuedAt);
    const local = auditHealth({
      policy,
      pending: this.#unacked + this.#batch.length,
      oldestQueuedAt: Number.isFinite(oldestQueuedAt) ? oldestQueuedAt : 0,
      dropped: 0,
      closed: this.#closed,
      hardFailure: false,
      maxPending,
      maxPendingMs,
    });
    const gone = this.#lost || !this.channel.connected() ? 'the gateway primary process (the audit writer) is unreachable' : undefined;
    return handedOverHealth(local, [this.#primary], { dropped: this.#dropped, waitingFor: 'acknowledged by the gateway primary', ...(gone ? { gone } : {}) });
  }

  writable(): boolean {
    return this.opts.policy === 'open' || this.health().ok;
  }

  assertWritable(): void {
    assertAuditWritable(this.opts.policy, () => this.health());
  }

  /** Resolves true once the primary acknowledged every record, false after `timeoutMs` or when one may be lost. */
  async whenDrained(timeoutMs: number): Promise<boolean> {
    this.flush();
    if (this.#lost) return this.#inflight.size === 0 && this.#dropped === 0;
    if (this.#inflight.size === 0) return true;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.#drainWaiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, timeoutMs);
      this.#drainWaiters.add(done);
    });
    return this.#inflight.size === 0 && this.#dropped === 0;
  }

  #read(): StoreReader {
    this.flush();
    this.#reader ??= this.opts.openReader();
    return this.#reader;
  }

  // Reads see what the primary has committed: this worker's last records may still be on their way.
  listSessions(f?: SessionFilter): SessionRecord[] {
    return this.#read().listSessions(f);
  }

  getSession(id: string): { session: SessionRecord; operations: OperationRecord[] } | undefined {
    return this.#read().getSession(id);
  }

  listAudit(subject?: string): AuditEvent[] {
    return this.#read().listAudit(subject);
  }

  findSessionIds(prefix: string, limit?: number): string[] {
    return this.#read().findSessionIds(prefix, limit);
  }

  // Elevation windows and IdP sign-ins: read from the store, written by the primary (one writer).
  getElevation(id: string): ElevationRecord | undefined {
    return this.#read().getElevation(id);
  }

  listElevations(f?: { identity?: string; activeAt?: Date; limit?: number }): ElevationRecord[] {
    return this.#read().listElevations(f);
  }

  findIdpIdentities(q: { email: string } | { identity: string }): IdpIdentity[] {
    return this.#read().findIdpIdentities(q);
  }

  putElevation(e: ElevationRecord): void {
    this.#push({ k: 'elevation', e });
  }

  recordIdpIdentity(e: IdpIdentity): void {
    this.#push({ k: 'idp', e });
  }

  /** Windows are revoked with `airlock request revoke` against the store, never from a gateway worker. */
  revokeElevation(): boolean {
    throw new Error('a gateway worker cannot revoke an elevation: use `airlock request revoke`');
  }

  close(): void {
    if (this.#closed) return;
    this.flush();
    this.#closed = true;
    try {
      this.#reader?.close();
    } catch {
      // a reader that failed to close holds nothing we need
    }
  }
}
