// The thin seam between a Session and a pool (pool.ts): a stream the Session uses exactly like
// its upstream socket. Behind it, a backend is leased when the session sends work while it has
// none, and returned when the LeaseTracker says the backend is idle (transaction mode, not
// pinned, no cancel in flight). The Session does not know it is pooled; cancels reach the
// backend serving it now (or nothing when none is), through `cancel()`.
import { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { sendCancel } from './cancel.ts';
import { FrameReader, MAX_BACKEND_MESSAGE, WriteBatch, readCString } from './frames.ts';
import type { PostgresConnectionConfig } from '../config/schema.ts';
import type { GatewayMetrics } from '../observability/metrics.ts';
import { LeaseTracker, pinReason, StatementRegistry, UNRESETTABLE_PINS, UpstreamPool, type PoolBackend, type PoolSet } from './pool.ts';
import { connectUpstream } from './upstream.ts';
import { parseDuration } from '../config/load.ts';

export interface LeaseOptions {
  pool: UpstreamPool;
  /** Upstream host and port, for CancelRequests. */
  host: string;
  port: number;
  logger: Logger;
  /** Who this lease serves (logs). */
  describe: () => Record<string, unknown>;
  /** The session was pinned to its backend, and why (metrics). */
  onPin?: (reason: string) => void;
}

const TERMINATE = 0x58;
const QUERY = 0x51;
const PARSE = 0x50;
/** Frontend messages that need no backend of their own (nothing runs). */
const NO_BACKEND = new Set([0x48 /* Flush */, 0x64 /* CopyData */, 0x63 /* CopyDone */, 0x66 /* CopyFail */]);

export class PooledUpstream extends Duplex {
  private backend: PoolBackend | null = null;
  private tracker: LeaseTracker | null = null;
  /** Reads the leased backend's bytes; empty whenever no backend is leased. */
  private readonly br = new FrameReader(MAX_BACKEND_MESSAGE, 'upstream');
  private readonly fr = new FrameReader(MAX_BACKEND_MESSAGE, 'frontend');
  private readonly registry = new StatementRegistry();
  private readonly out = new WriteBatch();
  private readonly toClient = new WriteBatch();
  private acquiring: AbortController | null = null;
  private waitingWrite: ((err?: Error | null) => void) | null = null;
  private cancels = 0;
  private socketPaused = false;
  /** Why this session keeps its backend until it ends (transaction mode), once it must. */
  pinned: string | undefined;
  /** Backends this session has been given (tests, status). */
  leases = 0;

  constructor(private readonly o: LeaseOptions) {
    super({ allowHalfOpen: false, readableHighWaterMark: 64 * 1024, writableHighWaterMark: 64 * 1024 });
  }

  /** Socket API the Session calls; meaningless here (the pool's sockets have it set). */
  setNoDelay(): this {
    return this;
  }

  /** The pid of the backend serving this session now, if any (tests). */
  get backendPid(): number | undefined {
    return this.backend?.pid;
  }

  /**
   * Cancels what runs for this session now: the backend it holds, never one it gave back. While
   * the cancel is in flight the backend is not returned, so a late cancel cannot reach the next
   * client (and a cancel landing in the reset makes the reset fail, which closes the backend).
   */
  cancel(): Promise<Error | undefined> {
    const b = this.backend;
    if (!b) return Promise.resolve(undefined);
    this.cancels++;
    return sendCancel({ host: this.o.host, port: this.o.port, pid: b.pid, secret: b.secret }).finally(() => {
      this.cancels--;
      this.maybeRelease();
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.fr.push(chunk);
    this.pump(cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    const b = this.backend;
    if (b) this.giveBack(b, this.tracker?.idle === true && this.cancels === 0 && this.fr.pending === 0 && !(this.pinned !== undefined && UNRESETTABLE_PINS.has(this.pinned)));
    this.push(null);
    cb();
  }

  override _read(): void {
    if (this.socketPaused && this.backend) {
      this.socketPaused = false;
      this.backend.socket.resume();
    }
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.acquiring?.abort();
    this.acquiring = null;
    const b = this.backend;
    if (b) this.giveBack(b, false);
    cb(err);
  }

  /** Sends the frames written so far; leases a backend first when one is needed and none is held. */
  private pump(cb: (err?: Error | null) => void): void {
    const r = this.fr;
    try {
      while (r.next()) {
        const t = r.type;
        if (t === TERMINATE) continue; // the session ends; the backend goes back to the pool, not away
        if (!this.backend) {
          if (NO_BACKEND.has(t)) continue;
          r.rewind();
          this.lease(cb);
          return;
        }
        const inject = this.tracker!.frontend(t, r.buf, r.start, r.end);
        if (inject) for (const p of inject) this.out.addOwned(p);
        if ((t === QUERY || t === PARSE) && this.pinned === undefined && this.o.pool.settings.mode === 'transaction') this.checkPin(t);
        this.out.add(r.buf, r.start, r.end, r.frameIsTransient);
      }
    } catch (err) {
      cb(err as Error);
      return;
    }
    if (this.out.size === 0 || !this.backend) {
      this.out.clear();
      return cb();
    }
    if (this.out.writeTo(this.backend.socket)) return cb();
    this.backend.socket.once('drain', () => cb());
  }

  private checkPin(t: number): void {
    const r = this.fr;
    let off = r.start + 5;
    if (t === PARSE) off = readCString(r.buf, off, r.end)[1];
    const reason = pinReason(readCString(r.buf, off, r.end)[0]);
    if (reason === undefined) return;
    this.pinned = reason;
    this.o.logger.info({ ...this.o.describe(), reason }, 'pooled session pinned to its upstream backend until it ends');
    this.o.onPin?.(reason);
  }

  private lease(cb: (err?: Error | null) => void): void {
    this.waitingWrite = cb;
    if (this.acquiring) return;
    const ac = new AbortController();
    this.acquiring = ac;
    this.o.pool.acquire(ac.signal).then(
      (b) => {
        this.acquiring = null;
        if (this.destroyed) {
          this.o.pool.release(b, true);
          return;
        }
        if (b.gone) {
          // It failed between leaving the pool and reaching us: its slot is freed, try again.
          this.o.pool.release(b, false);
          const w = this.waitingWrite;
          this.waitingWrite = null;
          if (w) this.lease(w);
          return;
        }
        this.attach(b);
        const w = this.waitingWrite;
        this.waitingWrite = null;
        if (w) this.pump(w);
      },
      (err: Error) => {
        this.acquiring = null;
        if (ac.signal.aborted) return;
        const w = this.waitingWrite;
        this.waitingWrite = null;
        w?.(err);
        this.destroy(err);
      },
    );
  }

  private attach(b: PoolBackend): void {
    this.backend = b;
    this.leases++;
    this.tracker = new LeaseTracker(this.registry);
    b.sink = (c) => this.fromBackend(c);
    b.onGone = (err) => {
      if (this.backend !== b) return;
      this.backend = null;
      this.o.pool.release(b, false);
      this.destroy(err);
    };
  }

  private fromBackend(c: Buffer): void {
    const r = this.br;
    const tracker = this.tracker!;
    r.push(c);
    try {
      while (r.next()) if (tracker.backend(r.type, r.buf, r.start)) this.toClient.add(r.buf, r.start, r.end, r.frameIsTransient);
    } catch (err) {
      this.destroy(err as Error);
      return;
    }
    const data = this.toClient.take();
    if (data && !this.push(data) && this.backend) {
      this.socketPaused = true;
      this.backend.socket.pause();
    }
    this.maybeRelease();
  }

  /** Transaction mode: the backend goes back once idle, unpinned, with no cancel or write in flight. */
  private maybeRelease(): void {
    const b = this.backend;
    if (!b || this.pinned !== undefined || this.o.pool.settings.mode !== 'transaction') return;
    if (!this.tracker!.idle || this.cancels > 0 || this.fr.pending > 0 || this.waitingWrite || this.br.pending > 0) return;
    this.giveBack(b, true);
  }

  private giveBack(b: PoolBackend, clean: boolean): void {
    this.backend = null;
    this.tracker = null;
    // Bytes of that backend never reach the session's next one (a clean return has none).
    if (this.br.pending > 0) this.br.drain();
    if (this.socketPaused) {
      this.socketPaused = false;
      b.socket.resume();
    }
    this.o.pool.release(b, clean);
  }
}

export interface PooledConnection {
  socket: PooledUpstream;
  leftover: Buffer;
  pid: number;
  secret: Buffer;
  startupFrames: Buffer[];
  tls: boolean;
  /** Cancels what the session runs now (cancel.ts UpstreamKey.cancel). */
  cancel: () => Promise<Error | undefined>;
}

export interface OpenPooledOptions {
  pools: PoolSet;
  conn: PostgresConnectionConfig & { pool: NonNullable<PostgresConnectionConfig['pool']> };
  password: string | undefined;
  /** The upstream role the session's backends log in as: part of the pool key. */
  role: string;
  /** Startup parameters forwarded from the client (server.ts); application_name is per client. */
  params: Record<string, string>;
  timeoutMs?: number;
  logger: Logger;
  metrics?: GatewayMetrics;
  describe: () => Record<string, unknown>;
}

function parameterStatus(name: string, value: string): Buffer {
  const body = Buffer.from(`${name}\0${value}\0`, 'utf8');
  const f = Buffer.allocUnsafe(5 + body.length);
  f[0] = 0x53;
  f.writeInt32BE(body.length + 4, 1);
  body.copy(f, 5);
  return f;
}

/**
 * A pooled upstream for one client session: no backend yet (one is leased with the first
 * statement), the startup ParameterStatus of the pool's backends (application_name: the
 * client's own), and a cancel that follows the session's current backend.
 */
export async function openPooled(o: OpenPooledOptions): Promise<PooledConnection> {
  const { conn, pools } = o;
  const { application_name: applicationName, ...settings } = o.params;
  const pool = pools.get(conn.name, o.role, settings, conn.pool.size, (budget) => {
    const p = new UpstreamPool({
      label: conn.name,
      budget,
      settings: { mode: conn.pool.mode, size: conn.pool.size, idleTimeoutMs: parseDuration(conn.pool.idleTimeout), queueTimeoutMs: parseDuration(conn.pool.queueTimeout) },
      connect: () => connectUpstream({ conn, password: o.password, params: { ...settings, application_name: `airlock-pool (${conn.name})`.slice(0, 63) }, timeoutMs: o.timeoutMs }),
      logger: o.logger,
      events: {
        onStats: () => {
          if (!o.metrics) return;
          let idle = 0;
          let leased = 0;
          let waiting = 0;
          for (const q of pools.all()) {
            if (q.label !== conn.name) continue;
            const s = q.stats();
            idle += s.idle;
            leased += s.total - s.idle;
            waiting += s.waiting;
          }
          o.metrics.poolBackends.set({ connection: conn.name, state: 'idle' }, idle);
          o.metrics.poolBackends.set({ connection: conn.name, state: 'leased' }, leased);
          o.metrics.poolWaiting.set({ connection: conn.name }, waiting);
        },
      },
    });
    return p;
  });
  const { frames, tls } = await pool.startupFrames();
  const startupFrames = frames.map((f) => (applicationName !== undefined && readCString(f, 5, f.length)[0] === 'application_name' ? parameterStatus('application_name', applicationName) : f));
  const socket = new PooledUpstream({
    pool,
    host: conn.host,
    port: conn.port,
    logger: o.logger,
    describe: o.describe,
    onPin: (reason) => o.metrics?.poolPins.inc({ connection: conn.name, reason }),
  });
  return { socket, leftover: Buffer.alloc(0), pid: 0, secret: Buffer.alloc(0), startupFrames, tls, cancel: () => socket.cancel() };
}
