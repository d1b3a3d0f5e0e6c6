// Optional upstream pooling for PostgreSQL connections (`pool:` in a connection's config).
//
// Design (see README "Upstream pooling" and docs/threat-model.md "Upstream pooling"):
// - One UpstreamPool per (connection, upstream role, startup settings): clients of different
//   upstream roles, or that asked for different DateStyle/TimeZone/..., never share a backend.
// - A backend goes back to the pool only at ReadyForQuery 'I' with nothing outstanding, and is
//   reset there with DISCARD ALL (plus closing the unnamed statement) before anyone else gets it.
//   The reset is what guarantees isolation between clients: whatever state a client created,
//   seen by Airlock or not (a function, a DO block), is gone before the backend is reused. A
//   backend whose reset fails, or that is returned mid-transaction, is closed instead.
// - Pinning is what keeps pooling CORRECT for a client: a statement that creates session state
//   the client expects to keep (SET, LISTEN, temp tables, advisory locks, SQL PREPARE, WITH HOLD
//   cursors, set_config, LOAD) pins that session to its backend until it ends (pinReason).
// - Protocol-level prepared statements are not pinned but re-established: the LeaseTracker keeps
//   each client's Parse messages (StatementRegistry) and replays one on a backend that lacks it,
//   just before the Bind/Describe/Parse that needs it, dropping the ParseComplete it causes.
//   Backends are reset between clients, so names never collide and need no renaming.
// The LeaseTracker and pinReason are pure (bytes in, decisions out); UpstreamPool owns sockets.
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { classifySql } from '../policy/sql/classify.ts';
import { Deque } from './expect-queue.ts';
import { FrameReader, MAX_BACKEND_MESSAGE, readCString } from './frames.ts';
import { closeMessage, simpleQuery, SYNC } from './messages.ts';
import type { UpstreamConnection } from './upstream.ts';

export interface PoolSettings {
  mode: 'session' | 'transaction';
  size: number;
  idleTimeoutMs: number;
  /** A client waits at most this long for a backend; then its session ends (PoolExhaustedError). */
  queueTimeoutMs: number;
}

// ------------------------------------------------------------------------------ pinning

const ADVISORY_SESSION = new Set(['pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock', 'pg_try_advisory_lock_shared']);
/** Transaction-scoped SET forms; every other SET/RESET outlives the transaction. */
const TX_SCOPED_SET = /^set\s+(local|transaction)\b/i;
const TEMP_WORD = /\b(temp|temporary|pg_temp(_\d+)?)\b/i;
/** dblink's persistent connections survive DISCARD ALL. */
const DBLINK_CONNECT = new Set(['dblink_connect', 'dblink_connect_u']);

/**
 * Pins whose state DISCARD ALL cannot remove: the backend is closed when the session ends,
 * never reset and reused.
 */
export const UNRESETTABLE_PINS: ReadonlySet<string> = new Set(['LOAD', 'dblink connection', 'DO block', 'statement could not be analysed']);

function bareName(fn: string): string {
  return fn.slice(fn.lastIndexOf('.') + 1);
}

/**
 * Why this statement text pins its session to its backend in transaction pooling, or undefined.
 * Errs on the side of pinning: a pin costs pooling efficiency, a missed pin costs the client its
 * own state at the end of the transaction (never another client's isolation, which the reset
 * guarantees). If the parser is unavailable, it pins.
 */
export function pinReason(text: string): string | undefined {
  const hit = pinCache.get(text);
  if (hit !== undefined) return hit === '' ? undefined : hit;
  const reason = pinReasonUncached(text);
  if (text.length <= PIN_CACHE_MAX_TEXT) {
    if (pinCache.size >= PIN_CACHE_MAX) pinCache.delete(pinCache.keys().next().value as string);
    pinCache.set(text, reason ?? '');
  }
  return reason;
}

/** Statement texts repeat (ORMs, agents' loops); their verdicts are kept, bounded. '' = no pin. */
const pinCache = new Map<string, string>();
const PIN_CACHE_MAX = 5000;
const PIN_CACHE_MAX_TEXT = 4096;

function pinReasonUncached(text: string): string | undefined {
  let stmts;
  try {
    stmts = classifySql(text);
  } catch {
    return 'statement could not be analysed';
  }
  for (const s of stmts) {
    const types = s.sql.statementTypes;
    // Text that does not parse never reaches the upstream from a client (the session denies it);
    // what does is Airlock's own placeholder for a denied statement, which fails upstream too.
    if (s.sql.parseError) continue;
    if (types.includes('ListenStmt')) return 'LISTEN';
    if (types.includes('PrepareStmt') || types.includes('DeallocateStmt')) return 'SQL PREPARE/DEALLOCATE';
    if (types.includes('LoadStmt')) return 'LOAD';
    if (types.includes('DeclareCursorStmt') && /\bwith\s+hold\b/i.test(s.text)) return 'DECLARE ... WITH HOLD';
    if (types.includes('VariableSetStmt') && !TX_SCOPED_SET.test(s.text)) return 'SET/RESET of a session setting';
    for (const f of s.functions) {
      const fn = bareName(f);
      if (fn === 'set_config') return 'set_config() of a session setting';
      if (ADVISORY_SESSION.has(fn)) return 'session-level advisory lock';
      if (DBLINK_CONNECT.has(fn)) return 'dblink connection';
    }
    // CREATE TEMP ..., SELECT ... INTO TEMP, objects created in pg_temp.
    if (TEMP_WORD.test(s.text) && (types.some((t) => t.startsWith('Create') || t === 'ViewStmt') || /\binto\b/i.test(s.text))) return 'temporary object';
    // A DO block may build any statement at run time (EXECUTE 'SE' || 'T ...'): pinned, and
    // its backend is closed at the end rather than trusted to DISCARD ALL.
    if (types.includes('DoStmt')) return 'DO block';
  }
  return undefined;
}

// ------------------------------------------------------------------------------ statements

/**
 * A client's prepared statements as the server confirmed them (ParseComplete), with the Parse
 * message that created each: what a new backend must be told to know them. '' is the unnamed
 * statement, which lives until the next unnamed Parse or simple Query.
 */
export class StatementRegistry {
  private readonly parses = new Map<string, Buffer>();
  get(name: string): Buffer | undefined {
    return this.parses.get(name);
  }
  set(name: string, parse: Buffer): void {
    this.parses.set(name, parse);
  }
  delete(name: string): void {
    this.parses.delete(name);
  }
  get size(): number {
    return this.parses.size;
  }
}

const enum F {
  Bind = 0x42, Close = 0x43, Describe = 0x44, Execute = 0x45, FunctionCall = 0x46, Parse = 0x50, Query = 0x51, Sync = 0x53,
}
const enum B {
  ParseComplete = 0x31, BindComplete = 0x32, CloseComplete = 0x33, CommandComplete = 0x43, ErrorResponse = 0x45,
  EmptyQuery = 0x49, NoData = 0x6e, PortalSuspended = 0x73, RowDescription = 0x54, ReadyForQuery = 0x5a,
}

interface Sent {
  type: number;
  /** Parse: the statement name; Close of a statement: its name. */
  name?: string;
  /** A client Parse: its bytes, registered when the server confirms. */
  parse?: Buffer;
  /** A Parse Airlock replayed: its ParseComplete is not the client's. */
  injected?: boolean;
  /** A client Parse: the backend had a statement of that name before it. */
  hadBefore?: boolean;
}

/**
 * One backend lease seen through its messages: what the backend knows (statement names), what is
 * outstanding, whether it may go back to the pool, and which Parse messages to replay. Pure.
 */
export class LeaseTracker {
  /** Transaction status from the last ReadyForQuery. */
  status = 0x49;
  /** Query/Sync/FunctionCall messages awaiting their ReadyForQuery. */
  outstanding = 0;
  /** Extended-protocol messages sent since the last Sync (they form one implicit transaction). */
  openGroup = false;
  private readonly has = new Set<string>();
  private readonly q = new Deque<Sent>();

  constructor(private readonly registry: StatementRegistry) {}

  /** Nothing outstanding, no transaction: the backend may be returned. */
  get idle(): boolean {
    return this.outstanding === 0 && !this.openGroup && this.status === 0x49 && this.q.length === 0;
  }

  /**
   * A frontend message about to be sent. Returns the Parse messages to send before it (replays of
   * the client's statements this backend lacks), or null. `frame` is [start, end) of `buf`.
   */
  frontend(type: number, buf: Buffer, start: number, end: number): Buffer[] | null {
    let inject: Buffer[] | null = null;
    const ensure = (name: string) => {
      if (this.has.has(name)) return;
      const p = this.registry.get(name);
      if (!p) return;
      (inject ??= []).push(p);
      this.q.push({ type: F.Parse, name, injected: true });
      this.has.add(name);
    };
    switch (type) {
      case F.Query:
        this.outstanding++;
        this.q.push({ type });
        // A simple Query destroys the unnamed statement.
        this.registry.delete('');
        this.has.delete('');
        break;
      case F.FunctionCall:
        this.outstanding++;
        this.q.push({ type });
        break;
      case F.Parse: {
        const [name] = readCString(buf, start + 5, end);
        // Redefining a named statement the client already has must fail (42P05) as it would
        // without pooling: the backend gets the old one first.
        if (name !== '') ensure(name);
        this.q.push({ type, name, parse: Buffer.from(buf.subarray(start, end)), hadBefore: this.has.has(name) });
        this.has.add(name);
        this.openGroup = true;
        break;
      }
      case F.Bind: {
        const [, off] = readCString(buf, start + 5, end);
        ensure(readCString(buf, off, end)[0]);
        this.q.push({ type });
        this.openGroup = true;
        break;
      }
      case F.Describe:
        if (buf[start + 5] === 0x53 /* S */) ensure(readCString(buf, start + 6, end)[0]);
        this.q.push({ type });
        this.openGroup = true;
        break;
      case F.Close: {
        const statement = buf[start + 5] === 0x53;
        const [name] = readCString(buf, start + 6, end);
        if (statement) this.has.delete(name);
        this.q.push(statement ? { type, name } : { type });
        this.openGroup = true;
        break;
      }
      case F.Execute:
        this.q.push({ type });
        this.openGroup = true;
        break;
      case F.Sync:
        this.outstanding++;
        this.q.push({ type });
        this.openGroup = false;
        break;
      default:
      // Flush, CopyData/CopyDone/CopyFail: no response of their own.
    }
    return inject;
  }

  /** A Parse that did not happen (failed or skipped): the backend's names are as before it. */
  private undo(e: Sent): void {
    if (e.type !== F.Parse || e.name === undefined) return;
    if (e.injected || !e.hadBefore) this.has.delete(e.name);
  }

  /** Skips what the server skips after an extended-protocol error: everything up to Sync. */
  private skipToSync(): void {
    while (this.q.length && this.q.first()!.type !== F.Sync) this.undo(this.q.shift()!);
  }

  /** A backend message. Returns false when it must not reach the client (answer to a replayed Parse). */
  backend(type: number, buf: Buffer, start: number): boolean {
    switch (type) {
      case B.ParseComplete: {
        const e = this.q.shift();
        if (e?.injected) return false;
        if (e?.parse && e.name !== undefined) this.registry.set(e.name, e.parse);
        return true;
      }
      case B.BindComplete:
        this.q.shift();
        return true;
      case B.CloseComplete: {
        const e = this.q.shift();
        if (e?.name !== undefined) this.registry.delete(e.name);
        return true;
      }
      case B.RowDescription:
        if (this.q.first()?.type === F.Describe) this.q.shift();
        return true;
      case B.NoData:
        this.q.shift();
        return true;
      case B.CommandComplete:
      case B.EmptyQuery:
      case B.PortalSuspended:
        if (this.q.first()?.type === F.Execute) this.q.shift();
        return true;
      case B.ErrorResponse: {
        const head = this.q.first();
        if (!head || head.type === F.Query || head.type === F.FunctionCall || head.type === F.Sync) return true;
        this.undo(this.q.shift()!);
        this.skipToSync();
        return true;
      }
      case B.ReadyForQuery: {
        this.status = buf[start + 5];
        while (this.q.length) {
          const e = this.q.shift()!;
          this.undo(e);
          if (e.type === F.Sync || e.type === F.Query || e.type === F.FunctionCall) break;
        }
        if (this.outstanding > 0) this.outstanding--;
        return true;
      }
      default:
        return true;
    }
  }
}

// ------------------------------------------------------------------------------ the pool

/** DISCARD ALL, then drop the unnamed statement (DISCARD ALL keeps it). Two ReadyForQuery answers. */
const RESET = Buffer.concat([simpleQuery('DISCARD ALL'), closeMessage('S', ''), SYNC]);
const RESET_TIMEOUT_MS = 10_000;

/** One pooled upstream backend. Its bytes go to `sink` (the lease, the reset, or nowhere while idle). */
export class PoolBackend {
  /** Where this backend's bytes go now. */
  sink: ((chunk: Buffer) => void) | null = null;
  /** Told when the backend fails or closes while leased. */
  onGone: ((err: Error) => void) | null = null;
  gone = false;
  /** Reads the answers to resets (one per backend: a reader allocates its assembly buffers). */
  resetReader: FrameReader | undefined;
  idleTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly id: number,
    readonly socket: Socket | TLSSocket,
    readonly pid: number,
    readonly secret: Buffer,
    readonly tls: boolean,
  ) {}
}

export interface PoolEvents {
  /** Counts of backends by state, and clients waiting for one (metrics). */
  onStats?: (s: PoolStats) => void;
}

export interface PoolStats {
  total: number;
  idle: number;
  leased: number;
  waiting: number;
}

/** Every backend stayed busy for the whole queueTimeout. */
export class PoolExhaustedError extends Error {
  readonly code = '53300';
  constructor(message: string) {
    super(message);
    this.name = 'PoolExhaustedError';
  }
}

interface Waiter {
  resolve: (b: PoolBackend) => void;
  reject: (e: Error) => void;
}

/**
 * The backends of every pool of one connection count against its `size` together, so a client
 * cannot multiply upstream backends by asking for other startup settings (each set is a pool).
 * A pool short of a slot closes an idle backend of another pool of the connection.
 */
export class PoolBudget {
  used = 0;
  readonly pools = new Set<UpstreamPool>();
  constructor(readonly size: number) {}

  /** A slot for `p`: a free one, or one freed by closing another pool's idle backend. */
  take(p: UpstreamPool): boolean {
    if (this.used < this.size) {
      this.used++;
      return true;
    }
    for (const q of this.pools) {
      if (q !== p && q.closeOneIdle()) {
        this.used++;
        return true;
      }
    }
    return false;
  }

  /** A slot came free: the first pool with a waiter gets it. */
  give(): void {
    this.used--;
    for (const q of this.pools) if (q.serveWaiter()) return;
  }

  /** Another pool of the connection has clients waiting. */
  othersWaiting(p: UpstreamPool): boolean {
    for (const q of this.pools) if (q !== p && q.stats().waiting > 0) return true;
    return false;
  }
}

export interface UpstreamPoolOptions {
  /** Connection name (logs, metrics). */
  label: string;
  /** Shared by all pools of the connection. */
  budget: PoolBudget;
  settings: PoolSettings;
  /** Opens and authenticates one backend (upstream.ts connectUpstream). */
  connect: () => Promise<UpstreamConnection>;
  logger: Logger;
  events?: PoolEvents;
}

/** Authenticated backends of one pool key; with the connection's other pools, at most `size` at any time. */
export class UpstreamPool {
  private readonly idle: PoolBackend[] = [];
  private readonly waiters: Waiter[] = [];
  private total = 0;
  private leased = 0;
  private nextId = 1;
  private closed = false;
  private startup: Buffer[] | undefined;

  constructor(private readonly o: UpstreamPoolOptions) {
    o.budget.pools.add(this);
  }

  get settings(): PoolSettings {
    return this.o.settings;
  }

  get label(): string {
    return this.o.label;
  }

  stats(): PoolStats {
    return { total: this.total, idle: this.idle.length, leased: this.leased, waiting: this.waiters.length };
  }

  private changed(): void {
    this.o.events?.onStats?.(this.stats());
  }

  /**
   * The ParameterStatus/Notice frames a new client is shown at startup: those of a backend of this
   * pool (same role, database and startup settings). Connects one the first time.
   */
  async startupFrames(): Promise<{ frames: Buffer[]; tls: boolean }> {
    if (!this.startup) {
      // Connected for its startup messages only: no client used it, so nothing to reset.
      const b = await this.acquire();
      b.sink = null;
      this.leased--;
      if (b.gone || this.closed) this.drop(b);
      else this.makeIdle(b);
    }
    return { frames: this.startup ?? [], tls: this.tlsSeen };
  }

  private tlsSeen = false;

  /** A backend for one lease: idle first, else a new one while under `size`, else wait (FIFO). */
  acquire(signal?: AbortSignal): Promise<PoolBackend> {
    if (this.closed) return Promise.reject(new Error('the upstream pool is closed'));
    const b = this.idle.pop();
    if (b) {
      clearTimeout(b.idleTimer);
      this.leased++;
      this.changed();
      return Promise.resolve(b);
    }
    if (this.o.budget.take(this)) return this.open();
    return new Promise((resolve, reject) => {
      const leave = (err: Error) => {
        const i = this.waiters.indexOf(w);
        if (i < 0) return;
        this.waiters.splice(i, 1);
        clearTimeout(timer);
        this.changed();
        reject(err);
      };
      const w: Waiter = {
        resolve: (b) => {
          clearTimeout(timer);
          resolve(b);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const s = this.stats();
        this.o.logger.warn({ connection: this.o.label, ...s, queueTimeoutMs: this.o.settings.queueTimeoutMs }, 'no pooled upstream backend became free in time; the waiting session is ended');
        leave(new PoolExhaustedError(`no upstream backend became free within ${this.o.settings.queueTimeoutMs} ms (pool of ${this.o.settings.size} on connection "${this.o.label}", all in use; pool.queueTimeout)`));
      }, this.o.settings.queueTimeoutMs);
      timer.unref();
      this.waiters.push(w);
      this.changed();
      signal?.addEventListener('abort', () => leave(new Error('no longer waiting for an upstream backend')), { once: true });
    });
  }

  /** Opens a backend in a slot already taken from the budget. */
  private async open(): Promise<PoolBackend> {
    this.total++;
    this.leased++;
    this.changed();
    let up: UpstreamConnection;
    try {
      up = await this.o.connect();
    } catch (err) {
      this.total--;
      this.leased--;
      this.changed();
      // The slot is free again: the next waiter tries its own connection.
      this.o.budget.give();
      throw err;
    }
    const b = new PoolBackend(this.nextId++, up.socket, up.pid, up.secret, up.tls);
    this.startup ??= up.startupFrames.filter((f) => f[0] === 0x53 /* ParameterStatus */);
    this.tlsSeen = up.tls;
    const s = up.socket;
    s.on('data', (c: Buffer) => b.sink?.(c));
    const gone = (err: Error) => {
      if (b.gone) return;
      b.gone = true;
      s.destroy();
      const i = this.idle.indexOf(b);
      if (i >= 0) {
        this.idle.splice(i, 1);
        clearTimeout(b.idleTimer);
        this.total--;
        this.changed();
        this.o.budget.give();
      }
      b.onGone?.(err);
    };
    s.on('error', gone);
    s.on('close', () => gone(new Error('the upstream closed the connection')));
    s.resume();
    if (this.closed) s.destroy();
    return b;
  }

  /** A waiter gets a newly opened backend when a slot came free; false when none waits (or no slot). */
  serveWaiter(): boolean {
    if (this.closed || this.waiters.length === 0 || !this.o.budget.take(this)) return false;
    const w = this.waiters.shift()!;
    this.changed();
    this.open().then(w.resolve, w.reject);
    return true;
  }

  /** Closes one idle backend, its slot going to another pool of the connection; false when none is idle. */
  closeOneIdle(): boolean {
    const b = this.idle.shift();
    if (!b) return false;
    clearTimeout(b.idleTimer);
    b.gone = true;
    b.socket.end(Buffer.from([0x58, 0, 0, 0, 4]));
    b.socket.destroy();
    this.total--;
    this.changed();
    return true;
  }

  /**
   * Returns a leased backend. `clean`: idle with nothing outstanding (ReadyForQuery 'I'); it is
   * reset and reused. Otherwise (mid-transaction, failed, a cancel possibly in flight) it is closed.
   */
  release(b: PoolBackend, clean: boolean): void {
    b.sink = null;
    b.onGone = null;
    this.leased--;
    if (!clean || b.gone || this.closed) {
      this.drop(b);
      return;
    }
    this.leased++; // counted as busy while resetting
    this.reset(b).then((ok) => {
      this.leased--;
      if (ok && !b.gone && !this.closed) this.makeIdle(b);
      else this.drop(b);
    });
  }

  private drop(b: PoolBackend): void {
    if (!b.gone) {
      b.gone = true;
      b.socket.end(Buffer.from([0x58, 0, 0, 0, 4]));
      b.socket.destroy();
    }
    this.total--;
    this.changed();
    this.o.budget.give();
  }

  private makeIdle(b: PoolBackend): void {
    const w = this.waiters.shift();
    if (w) {
      this.leased++;
      this.changed();
      w.resolve(b);
      return;
    }
    // Clients of another pool of this connection wait for a slot: this backend makes room.
    if (this.o.budget.othersWaiting(this)) {
      this.drop(b);
      return;
    }
    // While idle a backend may only say goodbye (an error before it closes): nothing is relayed.
    b.sink = null;
    b.idleTimer = setTimeout(() => {
      const i = this.idle.indexOf(b);
      if (i < 0) return;
      this.idle.splice(i, 1);
      this.drop(b);
    }, this.o.settings.idleTimeoutMs);
    b.idleTimer.unref();
    this.idle.push(b);
    this.changed();
  }

  /** DISCARD ALL and closes the unnamed statement; true when both succeeded. */
  private reset(b: PoolBackend): Promise<boolean> {
    return new Promise((resolve) => {
      const r = (b.resetReader ??= new FrameReader(MAX_BACKEND_MESSAGE, 'upstream'));
      r.drain();
      let ready = 0;
      let failed = false;
      const done = (ok: boolean) => {
        clearTimeout(timer);
        b.sink = null;
        b.onGone = null;
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), RESET_TIMEOUT_MS);
      timer.unref();
      b.onGone = () => done(false);
      b.sink = (c) => {
        r.push(c);
        try {
          while (r.next()) {
            if (r.type === B.ErrorResponse) failed = true;
            else if (r.type === B.ReadyForQuery && ++ready === 2) return done(!failed && r.buf[r.start + 5] === 0x49);
          }
        } catch {
          done(false);
        }
      };
      if (b.gone) return done(false);
      b.socket.write(RESET);
    });
  }

  /** Closes idle backends and refuses new leases; leased ones close as their sessions end. */
  close(): void {
    this.closed = true;
    this.o.budget.pools.delete(this);
    for (const w of this.waiters.splice(0)) w.reject(new Error('the upstream pool is closed'));
    for (const b of this.idle.splice(0)) {
      clearTimeout(b.idleTimer);
      this.drop(b);
    }
  }
}

/** All pools of a gateway, by key. */
export class PoolSet {
  private readonly pools = new Map<string, UpstreamPool>();
  private readonly budgets = new Map<string, PoolBudget>();

  /**
   * The pool for one connection, upstream role and set of startup parameters (application_name
   * aside): clients only ever share backends that look exactly alike from the inside.
   */
  get(connection: string, role: string, params: Record<string, string>, size: number, make: (budget: PoolBudget) => UpstreamPool): UpstreamPool {
    const key = poolKey(connection, role, params);
    let p = this.pools.get(key);
    if (!p) {
      let budget = this.budgets.get(connection);
      if (!budget) {
        budget = new PoolBudget(size);
        this.budgets.set(connection, budget);
      }
      p = make(budget);
      this.pools.set(key, p);
    }
    return p;
  }

  all(): UpstreamPool[] {
    return [...this.pools.values()];
  }

  close(): void {
    for (const p of this.pools.values()) p.close();
    this.pools.clear();
    this.budgets.clear();
  }
}

export function poolKey(connection: string, role: string, params: Record<string, string>): string {
  const settings = Object.keys(params)
    .filter((k) => k !== 'application_name')
    .sort()
    .map((k) => [k, params[k]]);
  return JSON.stringify([connection, role, settings]);
}
