// One client session after authentication: relays the v3 protocol in both directions and
// enforces the policy decision of every statement.
//
// Design notes, because the details matter:
// - Both directions are pull-based FrameReaders. "Parking" a session (a held statement, an async
//   masker lookup, backpressure) means: stop pulling and pause that socket (a held client is
//   still read up to 1 MiB, so a hang-up is noticed). Unread frames stay queued in order, so a
//   pipeline behind a held statement waits behind it without copying.
// - Frames that need no rewriting are forwarded as views on the incoming chunk, batched into
//   one write per pump (normally one per incoming chunk); write() returning false pauses the
//   other side until 'drain'.
// - Every forwarded message that produces responses pushes an Expect entry; upstream responses
//   are matched against the head of that queue, which tells us which statement (and so which
//   masks and limits) a DataRow belongs to, and keeps Airlock's own errors in pipeline order.
// - A denied statement is never forwarded. Instead a "poison" statement that fails to parse is
//   sent upstream in its place and the upstream's syntax error is replaced by Airlock's 42501.
//   This makes the upstream do exactly what PostgreSQL does after an error: inside a
//   transaction block it becomes failed (25P02 until ROLLBACK), in a pipeline it skips to Sync
//   and the implicit transaction rolls back, and ReadyForQuery carries the true status. The
//   poison has no side effects, needs no privileges and no PL/pgSQL, and keeps responses in order.
// - Limits: past the limit rows are not relayed; a CancelRequest stops the upstream statement
//   and its cancel error (or its completion, if the cancel lost the race) is replaced by
//   Airlock's 54000 error. ReadyForQuery is held back until the cancel was delivered, so a late
//   cancel cannot hit the client's next statement. Known gap: if the cut statement completed
//   anyway inside an extended-protocol pipeline (or a multi-statement simple query), the
//   messages after it (up to Sync) were already
//   forwarded and did run; their responses are swallowed so the client sees PostgreSQL's error
//   semantics, but their effects stay. Only rows were withheld, never a policy decision skipped.
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type pg from 'pg';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { bindOperation, type BoundParameter } from '../enforce/binding.ts';
import { POSTGRES_SQLSTATE, type Refusal } from '../enforce/refusal.ts';
import type { EnforcementSession, HoldNotice, ReviewDecision } from '../enforce/session.ts';
import type { Decision } from '../policy/decision.ts';
import type { ConnectionContext, Identity, Operation } from '../policy/operation.ts';
import { bindParameters } from './bind.ts';
import { sendCancel, type CancelRegistry, type UpstreamKey } from './cancel.ts';
import { Deque } from './expect-queue.ts';
import { FrameReader, MAX_BACKEND_MESSAGE, MAX_FRONTEND_MESSAGE, ProtocolError, WriteBatch, describeType, isUtf8CString, readCString } from './frames.ts';
import { copyOutSpecs } from './copy-spec.ts';
import { cursorUses, mayUseCursor } from './cursor-spec.ts';
import { heldResultSummary, limitsOf, newRun, operationRecord, planOf, type Portal, type Run, type RunProgress, type Stmt } from './statement.ts';
import { isUtf8Encoding } from './startup.ts';
import { redactNotification, relayParameterStatus, scrubNoticeFrame } from './scrub.ts';
import { contextFromSql } from '../enforce/context.ts';
import { previewStatement, rollbackUnsafe } from './preview.ts';
import { parameterDigest } from '../recording/redact.ts';
import { commandComplete, holdCommit, holdCommitStatement, internalBatch, InternalSink, type HoldCommitOutcome, type InternalResult } from './hold-commit.ts';
import { parseRowDescription, planNeedsMasking } from './masking-api.ts';
import type { FieldInfo, MaskerFactory, } from './row-masker.ts';
import { elevationTagNotice } from '../elevation/registry.ts';
import { BIND_COMPLETE, errorResponse, NO_DATA, noticeResponse, parseErrorFields, parseMessage, describePortal, readyForQuery, simpleQuery, SYNC, type PgError } from './messages.ts';
import { HOLD_PARKED, type OperationBinding } from '../approvals/approver.ts';

export interface OperationBase {
  protocol: 'postgres';
  identity: Identity;
  connection: ConnectionContext;
}

export type SqlClassifier = (query: string, base: OperationBase) => Operation[];

export interface SessionDeps {
  classify: SqlClassifier;
  masking: MaskerFactory | null;
  cancels: CancelRegistry;
  logger: Logger;
  /** Keys the digest an approval binds to (statement text + exact parameter bytes). */
  bindingKey: string;
  /** A separate connection to this session's upstream, for previews of held writes (review.preview). */
  previewConnect?: () => Promise<pg.Client>;
  /** Keys the audit's digest of a held statement's exact parameter values (receipts carry it). */
  parameterDigestKey?: string;
}

/** The session's upstream: a socket, or a pooled lease of one (upstream-lease.ts). */
export type UpstreamStream = Duplex & { setNoDelay?(noDelay?: boolean): unknown };

export interface SessionInit {
  /** This session in the enforcement seam: decisions, holds, records, token expiry. */
  enforcement: EnforcementSession;
  client: Socket | TLSSocket;
  clientLeftover: Buffer;
  upstream: UpstreamStream;
  upstreamLeftover: Buffer;
  upstreamKey: UpstreamKey;
  /** Airlock's own key given to the client. */
  clientPid: number;
  onClose?: (s: Session) => void;
  /**
   * Masking is configured for this connection (scrub.ts maskingConfigured): errors, notices,
   * notifications are scrubbed from the first message. Without it, scrubbing starts with the
   * first statement whose decision carries a mask plan, and stays on.
   */
  scrubOutput?: boolean;
  /** Largest frontend message (listen.postgres.maxMessageBytes); default MAX_FRONTEND_MESSAGE. */
  maxMessageBytes?: number;
  /** Responses outstanding before the client is no longer read (listen.postgres.maxPipelinedMessages). */
  maxPipelinedMessages?: number;
  /** Called when a per-session limit is hit (metrics). */
  onLimit?: (limit: 'maxPipelinedMessages') => void;
}

/** SQL statements that create, replace or drop prepared statements or portals behind the protocol's back. */
const NAME_CHANGING_SQL = new Set(['PrepareStmt', 'DeallocateStmt', 'DeclareCursorStmt', 'ClosePortalStmt', 'DiscardStmt']);

const POISON_SQL = '/* Airlock denied this statement; this placeholder fails to parse on purpose */ AIRLOCK_DENIED';
const POISON_STATEMENT = 'airlock.denied';
/** Statements that may change client_encoding (SET/RESET client_encoding, SET NAMES, set_config). */
const ENCODING_CHANGE = /client_encoding|\bnames\b|\breset\s+all\b/i;
const FLUSH = Buffer.from([0x48, 0, 0, 0, 4]);
/** Prefix of Airlock's own statement and portal names on a session's connection (hold-commit). */
const INTERNAL_PREFIX = 'airlock.hc.';
/** Statement text that is not valid UTF-8 is never decoded (lossily) and classified: denied. */
const NOT_UTF8: Decision = { action: 'deny', rule: 'airlock-encoding', reason: 'the statement text is not valid UTF-8 (Airlock sessions use client_encoding UTF8)' };
const NOT_UTF8_TEXT = '<statement text that is not valid UTF-8>';
/** Message types a client may send after startup. */
const FRONTEND_TYPES = new Set([0x42, 0x43, 0x44, 0x45, 0x46, 0x48, 0x50, 0x51, 0x53, 0x58, 0x64, 0x63, 0x66]);
/** Bytes read ahead from a parked client before its socket is paused. */
const PARKED_READ_LIMIT = 1024 * 1024;
/** Default listen.postgres.maxPipelinedMessages. */
export const DEFAULT_MAX_PIPELINED = 10_000;

const enum M {
  Bind = 0x42, Close = 0x43, Describe = 0x44, Execute = 0x45, FunctionCall = 0x46, Flush = 0x48,
  Parse = 0x50, Query = 0x51, Sync = 0x53, Terminate = 0x58, CopyData = 0x64, CopyDone = 0x63, CopyFail = 0x66,
  // backend
  ParseComplete = 0x31, BindComplete = 0x32, CloseComplete = 0x33, NotificationResponse = 0x41,
  CommandComplete = 0x43, DataRow = 0x44, ErrorResponse = 0x45, CopyInResponse = 0x47, CopyOutResponse = 0x48,
  EmptyQueryResponse = 0x49, BackendKeyData = 0x4b, NoticeResponse = 0x4e, Authentication = 0x52,
  ParameterStatus = 0x53, RowDescription = 0x54, FunctionCallResponse = 0x56, CopyBothResponse = 0x57,
  ReadyForQuery = 0x5a, NoData = 0x6e, PortalSuspended = 0x73, ParameterDescription = 0x74, NegotiateProtocol = 0x76,
}

type ExpectKind = 'query' | 'parse' | 'bind' | 'describe' | 'describe-internal' | 'execute' | 'close' | 'sync' | 'poison' | 'internal';

interface Expect {
  kind: ExpectKind;
  run?: Run;
  /** Poison entries: the error the client sees instead of the upstream's. */
  error?: PgError;
  /** Parse/Bind/Close entries: the name whose record changes when the server confirms. */
  name?: string;
  stmt?: Stmt;
  portal?: Portal;
  /** Poison sent as an extended-protocol Parse (vs a simple Query). */
  extended?: boolean;
  /** Responses to this message are dropped: the client already got an error for its pipeline. */
  swallow?: boolean;
  /** A client's Describe of a portal whose Execute needs masking: its RowDescription sets up the masker. */
  captureFor?: Run;
  /** Airlock's own statement on this connection (hold-commit): its responses go here, never to the client. */
  sink?: InternalSink;
}


/** Whether any of the statements defines or drops prepared statements or cursors (NAME_CHANGING_SQL). */
function changesNames(ops: Operation[]): boolean {
  for (const o of ops) {
    const types = o.sql?.statementTypes;
    if (types) for (const t of types) if (NAME_CHANGING_SQL.has(t)) return true;
  }
  return false;
}

/** An entry of a statement that runs upstream (armTimeLimit; a function of its own, not a closure per call). */
function runsUpstream(x: Expect): boolean {
  return (x.kind === 'query' || x.kind === 'execute') && x.run !== undefined;
}

/** What hold-commit needs of a held Bind: where the client's portal and statement live. */
interface BoundHold {
  portalName: string;
  stmtName: string;
  stmt: Stmt;
}

/** The parameter type OIDs of a Parse frame whose query text starts at `textStart` (undefined: none declared). */
function parseParamTypes(buf: Buffer, textStart: number, end: number): number[] | undefined {
  const [, off] = readCString(buf, textStart, end);
  if (off + 2 > end) return undefined;
  const n = buf.readInt16BE(off);
  if (n <= 0 || off + 2 + 4 * n > end) return undefined;
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = buf.readUInt32BE(off + 2 + 4 * i);
  return out;
}

function quoteIdent(s: string): string {
  return '"' + s.replace(/"/g, '""') + '"';
}

/** A refusal from the enforcement seam in PostgreSQL's words. */
export function refusalError(r: Refusal): PgError {
  return { code: POSTGRES_SQLSTATE[r.kind], message: r.message, ...(r.hint ? { hint: r.hint } : {}) };
}

export class Session {
  readonly id: string;
  readonly identity: Identity;
  readonly connection: string;
  private readonly client: Socket | TLSSocket;
  private readonly upstream: UpstreamStream;
  private readonly cr: FrameReader;
  private readonly ur = new FrameReader(MAX_BACKEND_MESSAGE, 'upstream');
  private readonly toUpstream = new WriteBatch();
  private readonly toClient = new WriteBatch();
  private readonly q = new Deque<Expect>();
  /** The client is not read while this many responses are outstanding (maxPipelinedMessages). */
  private pipelineCapped = false;
  /** Most responses ever outstanding at once (tests and status pages). */
  private pipelineHigh = 0;
  /**
   * Prepared statements and portals as the SERVER knows them: changed only when it confirms
   * (ParseComplete, BindComplete, CloseComplete). `pendingStmts`/`pendingPortals` hold what the
   * messages in flight will make of a name if they succeed (null: closed), so a pipeline that
   * uses a name right after defining it resolves the same way the server will; a failed Parse
   * (42P05 for a reused name) never replaces the record of the statement the server still has.
   */
  private readonly stmts = new Map<string, Stmt>();
  private readonly portals = new Map<string, Portal>();
  private readonly pendingStmts = new Map<string, Stmt | null>();
  private readonly pendingPortals = new Map<string, Portal | null>();
  private readonly base: OperationBase;
  private readonly enforce: EnforcementSession;
  /** Transaction status from the last ReadyForQuery, and since when a transaction is open. */
  private txStatus = 0x49; /* I */
  private txSince: Date | undefined;
  private closed = false;
  private holding = false;
  private holdAbort: AbortController | null = null;
  private upstreamFull = false;
  private clientFull = false;
  private upstreamParked = false;
  private skipTillSync = false;
  private pumpingClient = false;
  private pumpingUpstream = false;
  private bytesToClient = 0;
  private bytesFromClient = 0;
  /** Result bytes (DataRow, CopyData) sent to the client, for maxBytesPerSession. */
  private resultBytes = 0;
  /** A CancelRequest sent for a cut statement, until the upstream postmaster has taken it. */
  private cancelInFlight: Promise<void> | null = null;
  /**
   * A statement that may change client_encoding is a barrier: frames behind it wait until its
   * ReadyForQuery, by which time the ParameterStatus check (unsafe encodings end the session)
   * has run. Otherwise a pipelined statement could be read by the server in an encoding the
   * policy did not parse it in. 'armed': seen at Parse, becomes active at the next Sync.
   */
  private encodingBarrier: 'none' | 'armed' | 'active' = 'none';
  /** The Describe('P') just forwarded, if the very next message is the Execute of that portal. */
  private lastPortalDescribe: { portal: string; entry: Expect } | null = null;
  private barrierEntry: Expect | null = null;
  /** The token the session logged in with has expired: no new statement starts. */
  private tokenExpired = false;
  /** The held statement's hold, which a CancelRequest from the client aborts. */
  private heldRun: Run | null = null;
  /** A non-ASCII statement waits for the ReadyForQuery of what executed before it (beforeText). */
  private waitingIdle = false;
  /** Rows returned so far by each open SQL cursor (DECLARE ... / FETCH), for row limits. */
  private readonly cursorRows = new Map<string, number>();
  /** Non-row channels (errors, notices, notifications) are scrubbed: see scrub.ts. Sticky. */
  private scrubbing: boolean;
  /** The portals hold-commit answered for (Portal.committed) until the client's next Sync (several Binds may be held in one pipeline). */
  private readonly committedPortals = new Set<string>();
  /** A Describe/Execute of the committed portal waits for the client's messages in flight ahead of it. */
  private waitingCommitted = false;
  /** Inside pumpUpstream: finished runs are recorded after the client write. */
  private deferRecords = false;
  private deferredRecords: Array<{ run: Run; rec: ReturnType<typeof operationRecord> }> = [];

  constructor(
    private readonly deps: SessionDeps,
    private readonly init: SessionInit,
  ) {
    this.enforce = init.enforcement;
    const info = init.enforcement.info;
    this.id = info.id;
    this.identity = info.identity;
    this.connection = info.connection;
    this.client = init.client;
    this.upstream = init.upstream;
    this.scrubbing = init.scrubOutput ?? false;
    this.cr = new FrameReader(init.maxMessageBytes ?? MAX_FRONTEND_MESSAGE, 'frontend');
    this.base = {
      protocol: 'postgres',
      identity: info.identity,
      connection: { name: info.connection, clientAddress: info.clientAddress, sessionId: this.id },
    };
  }

  /** Starts relaying. The caller has already sent the client AuthenticationOk ... ReadyForQuery. */
  start(): void {
    const { client, upstream } = this;
    client.setNoDelay?.(true);
    upstream.setNoDelay?.(true);
    client.on('data', (c: Buffer) => {
      this.bytesFromClient += c.length;
      this.cr.push(c);
      this.pumpClient();
    });
    upstream.on('data', (c: Buffer) => {
      this.ur.push(c);
      this.pumpUpstream();
    });
    client.on('error', (e) => this.end(`client connection error: ${e.message}`));
    upstream.on('error', (e) => this.end(`upstream connection error: ${e.message}`, { code: '08006', message: `upstream database for connection "${this.connection}" failed: ${e.message}` }));
    client.on('close', () => this.end('client disconnected'));
    upstream.on('close', () => this.end('upstream closed the connection', { code: '08006', message: `upstream database for connection "${this.connection}" closed the connection` }));
    if (this.init.clientLeftover.length) this.cr.push(this.init.clientLeftover);
    if (this.init.upstreamLeftover.length) this.ur.push(this.init.upstreamLeftover);
    client.resume();
    upstream.resume();
    // Sessions live no longer than the short-lived token they logged in with: an idle session
    // ends at expiry; a busy one finishes what it is doing (a held statement included) and ends
    // when the client starts its next statement.
    this.enforce.onTokenExpiry(() => {
      this.tokenExpired = true;
      if (this.q.length === 0 && !this.holding) this.end('token expired', refusalError(this.enforce.tokenRefusal()));
    });
    this.deps.cancels.onCancel(this.init.clientPid, () => this.cancelHeld());
    this.pumpUpstream();
    this.pumpClient();
  }

  /** Airlock's own statement and portal name on this connection (hold-commit), unlike any client's. */
  private get internalName(): string {
    return `${INTERNAL_PREFIX}${this.id.slice(0, 8)}`;
  }

  /** A CancelRequest from the client: a held statement is cancelled here (true), else upstream. */
  private cancelHeld(): boolean {
    const run = this.heldRun;
    if (!run || !this.holdAbort) return false;
    run.cancelledByClient = true;
    this.holdAbort.abort(new Error('cancelled by the client (CancelRequest)'));
    return true;
  }

  /** Byte counters (what was handed to each socket), for status pages and tests. */
  stats(): { bytesToClient: number; bytesFromClient: number; resultBytes: number; pipelineHigh: number } {
    return { bytesToClient: this.bytesToClient, bytesFromClient: this.bytesFromClient, resultBytes: this.resultBytes, pipelineHigh: this.pipelineHigh };
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** A statement (or any response) is outstanding upstream: a draining gateway lets it finish. */
  get busy(): boolean {
    return this.q.length > 0 || this.cr.pending > 0;
  }

  /** A statement is held for approval (it has not started upstream). */
  get held(): boolean {
    return this.holding;
  }

  // ---------------------------------------------------------------- client -> upstream

  private pumpClient(): void {
    if (this.pumpingClient || this.closed) return;
    this.pumpingClient = true;
    try {
      const cap = this.init.maxPipelinedMessages ?? DEFAULT_MAX_PIPELINED;
      while (!this.closed && !this.holding && !this.upstreamFull && this.encodingBarrier !== 'active' && !this.waitingIdle && !this.waitingCommitted && this.q.length < cap && this.cr.next()) this.onFrontend();
      if (this.q.length > this.pipelineHigh) this.pipelineHigh = this.q.length;
      if (!this.closed && this.q.length >= cap && !this.pipelineCapped) {
        this.pipelineCapped = true;
        this.init.onLimit?.('maxPipelinedMessages');
        // Stop reading until responses drain. Without a Sync or simple Query in flight the
        // upstream need not answer at all, so waiting could last forever: end the session instead.
        if (!this.q.some((e) => e.kind === 'sync' || e.kind === 'query' || e.kind === 'poison')) {
          this.flushUpstream();
          this.end(`more than ${cap} pipelined messages without Sync`, { severity: 'FATAL', code: '54000', message: `Airlock: more than ${cap} messages pipelined without a Sync; the session was closed (limit listen.postgres.maxPipelinedMessages)`, hint: 'send Sync more often' });
          return;
        }
      }
    } catch (err) {
      if (err instanceof ProtocolError) {
        this.flushUpstream();
        this.end(`protocol error: ${err.message}`, { severity: 'FATAL', code: '08P01', message: err.message });
        return;
      }
      this.deps.logger.error({ err, session: this.id }, 'postgres session failed');
      this.end(`internal error: ${(err as Error).message}`, { severity: 'FATAL', code: 'XX000', message: 'Airlock internal error; the session was closed (see the gateway log)' });
      return;
    } finally {
      this.pumpingClient = false;
    }
    this.flushUpstream();
    if (this.closed) return;
    // While parked (held statement, encoding barrier) the socket keeps being read, up to a bound,
    // so a client that hangs up is noticed at once (and its approval request cancelled); the
    // frames themselves stay queued, unprocessed, behind the parked one.
    const parked = this.holding || this.encodingBarrier === 'active' || this.waitingIdle || this.waitingCommitted || this.pipelineCapped;
    if (this.upstreamFull || (parked && this.cr.pending > PARKED_READ_LIMIT)) this.client.pause();
    else this.client.resume();
  }

  private flushUpstream(): void {
    if (this.toUpstream.size === 0) return;
    if (this.closed) return this.toUpstream.clear();
    this.armTimeLimit();
    if (!this.toUpstream.writeTo(this.upstream) && !this.upstreamFull) {
      this.upstreamFull = true;
      this.client.pause();
      this.upstream.once('drain', () => {
        this.upstreamFull = false;
        this.pumpClient();
      });
    }
  }

  private forwardCurrent(): void {
    const r = this.cr;
    this.toUpstream.add(r.buf, r.start, r.end, r.frameIsTransient);
  }

  private currentCopy(): Buffer {
    return Buffer.from(this.cr.buf.subarray(this.cr.start, this.cr.end));
  }

  private onFrontend(): void {
    const r = this.cr;
    const t = r.type;
    if (this.tokenExpired && (t === M.Query || t === M.Parse)) return this.end('token expired', refusalError(this.enforce.tokenRefusal()));
    // After an error in the extended protocol PostgreSQL ignores everything until Sync; the
    // upstream would too, so such messages are dropped here.
    if (this.skipTillSync && t !== M.Sync && t !== M.Terminate && FRONTEND_TYPES.has(t)) return;
    const lastDescribe = this.lastPortalDescribe;
    this.lastPortalDescribe = null;
    if (t === M.Execute) this.lastPortalDescribe = lastDescribe; // read (and cleared) by onExecute
    switch (t) {
      case M.Query:
        return this.onQuery();
      case M.Parse:
        return this.onParse();
      case M.Bind:
        return this.onBind();
      case M.Execute:
        return this.onExecute();
      case M.Describe: {
        if (r.buf[r.start + 5] === 0x50 /* P */ && this.committedPortals.size > 0) {
          const portal = this.lookupPortal(readCString(r.buf, r.start + 6, r.end)[0]);
          if (portal?.committed) return this.answerCommitted(portal, 'describe');
        }
        this.forwardCurrent();
        const e: Expect = { kind: 'describe' };
        this.q.push(e);
        if (r.buf[r.start + 5] === 0x50 /* P */) this.lastPortalDescribe = { portal: readCString(r.buf, r.start + 6, r.end)[0], entry: e };
        return;
      }
      case M.Close: {
        const which = r.buf[r.start + 5];
        const [name] = readCString(r.buf, r.start + 6, r.end);
        // Closed once the server says so; until then nothing may use the name.
        if (which === 0x53) this.pendingStmts.set(name, null);
        else this.pendingPortals.set(name, null);
        this.forwardCurrent();
        this.q.push({ kind: 'close', name: (which === 0x53 ? 'S' : 'P') + name });
        return;
      }
      case M.Sync: {
        this.skipTillSync = false;
        // Outside a transaction block the server drops portals at Sync: so does Airlock's.
        if (this.committedPortals.size > 0) {
          for (const name of this.committedPortals) if (this.portals.get(name)?.committed) this.portals.delete(name);
          this.committedPortals.clear();
        }
        this.forwardCurrent();
        const e: Expect = { kind: 'sync' };
        this.q.push(e);
        if (this.encodingBarrier === 'armed') {
          this.encodingBarrier = 'active';
          this.barrierEntry = e;
        }
        return;
      }
      case M.Flush:
      case M.CopyData:
      case M.CopyDone:
      case M.CopyFail:
        this.forwardCurrent();
        return;
      case M.Terminate:
        this.forwardCurrent();
        this.flushUpstream();
        this.end('client terminated the session');
        return;
      case M.FunctionCall: {
        // The fast-path function call bypasses SQL entirely, so policy cannot see it: refused.
        const run = this.newRun('<fast-path function call>', undefined, { action: 'deny', rule: 'airlock-fastpath', reason: 'fast-path function calls bypass SQL policy' });
        this.deny(run, false);
        return;
      }
      default:
        throw new ProtocolError(`invalid frontend message type ${describeType(t)}`);
    }
  }

  private queryText(off: number): string {
    const r = this.cr;
    const [s] = readCString(r.buf, off, r.end);
    return s;
  }

  /** Classifies and decides through the enforcement seam. Failures of the policy layer deny (fail closed). */
  private decide(text: string): { decision: Decision; op: Operation | undefined } {
    let ops: Operation[];
    try {
      ops = this.deps.classify(text, this.base);
    } catch (err) {
      this.deps.logger.error({ err, session: this.id }, 'classification failed; denying');
      return { decision: { action: 'deny', rule: 'airlock-internal', reason: `classification failed: ${(err as Error).message}` }, op: undefined };
    }
    // A leading `/* airlock: traceparent=... */` parents the statement's span (read only when tracing).
    let { decision, operation } = this.enforce.decide(ops, this.enforce.traced ? contextFromSql(text) : undefined);
    // SQL EXECUTE can run a statement this session prepared through the protocol, whose own
    // decision (review at Bind, or deny) the EXECUTE's classification knows nothing about.
    for (const o of ops) {
      const name = o.sql?.executeName;
      const known = name !== undefined ? this.lookupStmt(name) : undefined;
      if (name !== undefined && known && (known.decision.action === 'review' || known.decision.action === 'deny') && decision.action !== 'deny') {
        decision = {
          action: 'deny',
          rule: known.decision.rule,
          reason: `EXECUTE of prepared statement ${quoteIdent(name)} would bypass its ${known.decision.action === 'review' ? 'approval (bind it through the protocol to be held with its values)' : 'denial'}: ${known.decision.reason}`,
        };
        operation = o;
      }
    }
    // During an elevation window every statement says so (the window is never silent).
    if (decision.elevation) this.toClient.addOwned(noticeResponse({ message: elevationTagNotice(decision.elevation, this.enforce.info.connection), detail: `decided under role ${decision.elevation.role}${'rule' in decision && decision.rule ? ` (rule ${decision.rule})` : ''}` }));
    // SQL that defines or drops prepared statements or cursors changes names the protocol can
    // use; Airlock cannot follow it, so every name it knew becomes unknown (and is refused).
    if (decision.action !== 'deny' && changesNames(ops)) this.forgetNames();
    return { decision, op: operation };
  }

  private forgetNames(): void {
    for (const k of this.stmts.keys()) this.pendingStmts.set(k, null);
    for (const k of this.pendingStmts.keys()) this.pendingStmts.set(k, null);
    for (const k of this.portals.keys()) this.pendingPortals.set(k, null);
    for (const k of this.pendingPortals.keys()) this.pendingPortals.set(k, null);
  }

  /** What a name will refer to once the messages in flight are processed (undefined: unknown). */
  private lookupStmt(name: string): Stmt | undefined {
    const p = this.pendingStmts.get(name);
    return p === undefined ? this.stmts.get(name) : (p ?? undefined);
  }

  private lookupPortal(name: string): Portal | undefined {
    const p = this.pendingPortals.get(name);
    return p === undefined ? this.portals.get(name) : (p ?? undefined);
  }

  private newRun(text: string, op: Operation | undefined, decision: Decision): Run {
    return newRun(text, op, decision);
  }

  /**
   * Statement text must reach a server reading it in the encoding Airlock parsed it in (UTF8).
   * Code Airlock cannot see (a function, a procedure) might change client_encoding; the server
   * reports that only with its next ReadyForQuery (where the ParameterStatus backstop ends the
   * session), yet frames pipelined behind such a statement would already be parsed in the new
   * encoding. ASCII reads the same in every client encoding PostgreSQL supports (multibyte
   * trailing bytes follow a lead byte >= 0x80), so only non-ASCII text is affected: it waits
   * until every statement executed before it has reached its ReadyForQuery, or, inside an
   * extended-protocol pipeline with no Sync yet (no ReadyForQuery can come), it is refused.
   * Returns 'wait' when the frame was put back to be read again, 'refuse', or 'go'.
   */
  private beforeText(textStart: number): 'go' | 'wait' | 'refuse' {
    const r = this.cr;
    let executed = -1;
    for (let i = this.q.length - 1; i >= 0; i--) {
      const k = this.q.at(i)!.kind;
      if (k === 'query' || k === 'execute') {
        executed = i;
        break;
      }
    }
    if (executed < 0) return 'go';
    const b = r.buf;
    let ascii = true;
    for (let i = textStart; i < r.end; i++) {
      if (b[i] >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return 'go';
    if (this.q.at(executed)!.kind === 'execute' && !this.q.someFrom(executed, (e) => e.kind === 'sync')) return 'refuse';
    r.rewind();
    this.waitingIdle = true;
    return 'wait';
  }

  /** Called as upstream responses retire statements: resumes a statement waiting for ReadyForQuery. */
  private releaseIdleWait(): void {
    if (!this.waitingIdle || this.q.some((e) => e.kind === 'query' || e.kind === 'execute' || e.kind === 'sync')) return;
    this.waitingIdle = false;
    setImmediate(() => this.pumpClient());
  }

  private refusePipelinedText(extended: boolean): void {
    this.deny(
      this.newRun('<non-ASCII statement pipelined behind an executed statement>', undefined, {
        action: 'deny',
        rule: 'airlock-encoding',
        reason: 'statement text with non-ASCII characters may not follow an executed statement in the same pipeline before Sync: Airlock cannot know the server still reads it as UTF8 (send Sync first)',
      }),
      extended,
    );
  }

  private onQuery(): void {
    const r = this.cr;
    if (!isUtf8CString(r.buf, r.start + 5, r.end)) return this.deny(this.newRun(NOT_UTF8_TEXT, undefined, NOT_UTF8), false);
    const go = this.beforeText(r.start + 5);
    if (go === 'wait') return;
    if (go === 'refuse') return this.refusePipelinedText(false);
    const text = this.queryText(r.start + 5);
    const { decision, op } = this.decide(text);
    const run = this.newRun(text, op, decision);
    if (decision.action === 'deny') return this.deny(run, false);
    if (decision.action === 'review') {
      const frame = this.currentCopy();
      return this.hold(run, false, [], undefined, () => {
        this.toUpstream.addOwned(frame);
        this.q.push({ kind: 'query', run });
      });
    }
    this.forwardCurrent();
    const e: Expect = { kind: 'query', run };
    this.q.push(e);
    if (ENCODING_CHANGE.test(text)) {
      this.encodingBarrier = 'active';
      this.barrierEntry = e;
    }
  }

  private onParse(): void {
    const r = this.cr;
    const [name, off] = readCString(r.buf, r.start + 5, r.end);
    if (name.startsWith(INTERNAL_PREFIX)) return this.refuseInternalName('prepared statement', name);
    if (!isUtf8CString(r.buf, off, r.end)) return this.deny(this.newRun(NOT_UTF8_TEXT, undefined, NOT_UTF8), true);
    const go = this.beforeText(off);
    if (go === 'wait') return;
    if (go === 'refuse') return this.refusePipelinedText(true);
    const text = this.queryText(off);
    const { decision, op } = this.decide(text);
    const stmt: Stmt = { text, op, decision };
    const run = this.newRun(text, op, decision);
    if (decision.action === 'deny') return this.deny(run, true);
    // Reviewed statements keep their declared parameter types: hold-commit binds the same values.
    if (decision.action === 'review') {
      const types = parseParamTypes(r.buf, off, r.end);
      if (types) stmt.paramTypes = types;
    }
    // A statement that needs review is held at Bind, where its parameter values are known: the
    // approval covers the statement AND the exact values. Parsing it upstream runs nothing.
    this.pendingStmts.set(name, stmt);
    this.forwardCurrent();
    this.q.push({ kind: 'parse', run, name, stmt });
    if (ENCODING_CHANGE.test(text) && this.encodingBarrier === 'none') this.encodingBarrier = 'armed';
  }

  /** Hold-commit's statement and portal names are Airlock's: a client's would be closed under it. */
  private refuseInternalName(what: 'prepared statement' | 'portal', name: string): void {
    this.deny(this.newRun(`<${what} ${quoteIdent(name)}>`, undefined, { action: 'deny', rule: 'airlock-internal-name', reason: `${what} names starting with "${INTERNAL_PREFIX}" are reserved for Airlock` }), true);
  }

  /** A Bind or Execute naming something Airlock never saw defined: the server may know it from SQL, Airlock cannot decide on it. */
  private refuseUnknown(what: 'prepared statement' | 'portal', name: string): void {
    const run = this.newRun(`<${what} ${quoteIdent(name)}>`, undefined, {
      action: 'deny',
      rule: 'airlock-unknown-name',
      reason: `${what} ${quoteIdent(name)} was not defined through this session's extended protocol (or SQL PREPARE/DECLARE/DEALLOCATE/DISCARD changed it), so Airlock cannot tell what it runs; prepare it again with Parse`,
    });
    this.deny(run, true);
  }

  private onBind(): void {
    const r = this.cr;
    const [portalName, off] = readCString(r.buf, r.start + 5, r.end);
    const [stmtName] = readCString(r.buf, off, r.end);
    if (portalName.startsWith(INTERNAL_PREFIX)) return this.refuseInternalName('portal', portalName);
    const stmt = this.lookupStmt(stmtName);
    if (!stmt) return this.refuseUnknown('prepared statement', stmtName);
    if (stmt.decision.action === 'review') {
      const run = this.newRun(stmt.text, stmt.op, stmt.decision);
      const params = bindParameters(r.buf, r.start, r.end).map((p) => ({ value: p.value && Buffer.from(p.value), binary: p.binary }));
      run.parameters = params;
      const frame = this.currentCopy();
      return this.hold(run, true, params, { portalName, stmtName, stmt }, () => {
        // The portal carries this approval: its Execute runs exactly the approved values once.
        const portal: Portal = { stmt, rows: 0, approval: run.approval, grant: run.grant, parameters: params, binding: run.binding };
        this.pendingPortals.set(portalName, portal);
        this.toUpstream.addOwned(frame);
        this.q.push({ kind: 'bind', name: portalName, portal });
      });
    }
    const portal: Portal = { stmt, rows: 0 };
    this.pendingPortals.set(portalName, portal);
    this.forwardCurrent();
    this.q.push({ kind: 'bind', name: portalName, portal });
  }

  private onExecute(): void {
    const r = this.cr;
    const [portalName] = readCString(r.buf, r.start + 5, r.end);
    const portal = this.lookupPortal(portalName);
    if (!portal) return this.refuseUnknown('portal', portalName);
    if (portal.committed) return this.answerCommitted(portal, 'execute');
    const elevation = portal.stmt.decision.elevation;
    if (elevation && !this.enforce.elevationOpen(elevation.id)) {
      // Prepared under an elevation window that has ended (or was revoked): its decision no longer holds.
      return this.deny(
        this.newRun(portal.stmt.text, portal.stmt.op, { action: 'deny', rule: 'elevation-ended', reason: `this statement was prepared under elevation ${elevation.id} (role ${elevation.role}), which has ended; prepare it again to be decided under the current rules` }),
        true,
      );
    }
    const run = this.newRun(portal.stmt.text, portal.stmt.op, portal.stmt.decision);
    run.portal = portal;
    run.approval = portal.approval;
    run.grant = portal.grant;
    run.parameters = portal.parameters;
    run.binding = portal.binding;
    const described = this.lastPortalDescribe?.portal === portalName ? this.lastPortalDescribe.entry : null;
    this.lastPortalDescribe = null;
    if (planNeedsMasking(planOf(run.decision)) && described) {
      // The client just described this portal (most drivers do): its answer gives the layout.
      described.captureFor = run;
    } else if (planNeedsMasking(planOf(run.decision))) {
      // The column layout (and result formats chosen at Bind) of this exact portal, which the
      // client may never have asked for; its answer is consumed here, not relayed.
      this.toUpstream.addOwned(describePortal(portalName));
      this.q.push({ kind: 'describe-internal', run });
    }
    this.forwardCurrent();
    // Timed statements: a Flush makes the server report this Execute's completion at once (not at the next Sync), so the time limit follows the right statement.
    if (limitsOf(run.decision).maxStatementMs !== undefined) this.toUpstream.addOwned(FLUSH);
    this.q.push({ kind: 'execute', run });
  }

  /** Answers a statement with Airlock's error instead of running it (see "poison" above). */
  private deny(run: Run, extended: boolean, refusal?: Refusal): void {
    const d = run.decision;
    const error: PgError = refusal
      ? refusalError(refusal)
      : d.action === 'deny'
        ? refusalError(this.enforce.denial(d))
        : { code: '42501', message: run.error ?? 'Airlock denied this statement' };
    run.error ??= error.message;
    this.finishRun(run);
    this.toUpstream.addOwned(extended ? parseMessage(POISON_STATEMENT, POISON_SQL) : simpleQuery(POISON_SQL));
    this.q.push({ kind: 'poison', error, extended });
    if (extended) this.skipTillSync = true;
  }

  /**
   * Holds a statement for approval through the enforcement seam: only this session's client side
   * is parked (frames behind it wait in order), the client hears at once and again when the
   * request is posted, and a CancelRequest or hang-up cancels the hold.
   */
  private hold(run: Run, extended: boolean, params: BoundParameter[], bound: BoundHold | undefined, forward: () => void): void {
    const d = run.decision;
    if (d.action !== 'review') return;
    this.holding = true;
    this.heldRun = run;
    const ac = new AbortController();
    this.holdAbort = ac;
    // Approvers see everything that will run on approval: the whole query string (not just the
    // statement that triggered the review) and the exact parameter values.
    const op: Operation = run.op ? { ...run.op, text: run.text } : { ...this.base, kind: 'utility', text: run.text, tables: [], functions: [] };
    // Statements already executed in this pipeline (or an open transaction block) hold locks.
    const inTx = this.txStatus !== 0x49 || this.q.some((e) => e.kind === 'query' || e.kind === 'execute');
    const notify = (n: HoldNotice) => {
      if (this.closed) return;
      this.toClient.addOwned(noticeResponse({ message: n.message, ...(n.detail ? { detail: n.detail } : {}) }));
      this.flushClient();
    };
    const binding = bindOperation(op, this.deps.bindingKey, { parameters: params });
    run.binding = binding;
    const connect = this.deps.previewConnect;
    // Hold-commit inside the client's own transaction (a savepoint) only where the rule lets a
    // hold keep a transaction's locks, for one simple Query with nothing else in flight.
    const inClientTx = inTx && !extended && d.review.holdInTransaction === true && this.txStatus === 0x54 /* T */ && this.q.length === 0;
    const returning = d.review.preview === 'hold-commit' && connect && (inTx ? inClientTx : !extended || bound) ? holdCommitStatement(run.text) : undefined;
    const previewInput = { text: run.text, parameters: params, functions: op.functions, tables: op.tables, plan: planOf(d) };
    if (returning !== undefined && connect) {
      // Running before approval must leave nothing a ROLLBACK cannot undo: else held the ordinary way.
      void rollbackUnsafe({ connect, masking: this.deps.masking }, previewInput).then((unsafe) => {
        if (!unsafe) return this.holdCommitted(run, op, binding, notify, ac, returning, bound, inClientTx ? (this.txSince ?? new Date()) : undefined);
        this.previewAndHold(run, op, binding, notify, ac, extended, inTx, params, forward, unsafe);
      });
      return;
    }
    this.previewAndHold(run, op, binding, notify, ac, extended, inTx, params, forward, undefined);
  }

  /** The ordinary hold, with the rule's preview (hold-commit's fallback: a dry run, saying why). */
  private previewAndHold(run: Run, op: Operation, binding: OperationBinding, notify: (n: HoldNotice) => void, ac: AbortController, extended: boolean, inTx: boolean, params: BoundParameter[], forward: () => void, unsafe: string | undefined): void {
    const d = run.decision;
    if (d.action !== 'review') return;
    // The effect approvers see (review.preview), computed on a separate connection before posting.
    const mode = d.review.preview === 'hold-commit' ? 'dry-run' : d.review.preview;
    const connect = this.deps.previewConnect;
    const previewed = mode && connect
      ? previewStatement({ connect, masking: this.deps.masking }, { mode, text: run.text, parameters: params, functions: op.functions, tables: op.tables, plan: planOf(d) }).then((p) => {
          // hold-commit covers one simple-protocol write outside a transaction; otherwise a dry run is shown.
          binding.preview = d.review.preview === 'hold-commit' ? { ...p, summary: `hold-commit not available here (${unsafe ?? (inTx ? 'inside a transaction' : 'not a single INSERT/UPDATE/DELETE without RETURNING')}); ${p.summary}` } : p;
        })
      : Promise.resolve();
    void previewed
      .then(() => this.enforce.hold({ operation: op, decision: d, binding, notify, signal: ac.signal, transactionSince: inTx ? (this.txSince ?? new Date()) : undefined, context: contextFromSql(run.text) }))
      .then((h) => {
        this.holdAbort = null;
        this.heldRun = null;
        run.approval = h.approval;
        if (h.approved) run.grant = h.grant;
        if (this.closed) {
          run.error ??= 'not executed: the client disconnected while the statement was held';
          this.finishRun(run);
          return;
        }
        if (h.approved) forward();
        else if (run.cancelledByClient) {
          // What PostgreSQL answers for a cancelled statement, so drivers' cancel handling works.
          const requestId = h.approval?.requestId;
          this.deny(run, extended, { kind: 'cancelled', message: `canceling statement due to user request: Airlock cancelled the held statement${requestId ? ` and its approval request ${requestId}` : ''}` });
          this.q.last()!.error!.code = '57014';
        } else this.deny(run, extended, h.refusal);
        this.holding = false;
        this.flushUpstream();
        this.pumpClient();
      });
  }

  /** review.preview hold-commit (hold-commit.ts): run now in Airlock's transaction, COMMIT on approval. */
  private holdCommitted(run: Run, op: Operation, binding: OperationBinding, notify: (n: HoldNotice) => void, ac: AbortController, returning: string, bound: BoundHold | undefined, inTransactionSince: Date | undefined): void {
    const d = run.decision as ReviewDecision;
    const name = this.internalName;
    const host = bound
      ? {
          enforce: this.enforce,
          masking: this.deps.masking,
          query: (sqls: readonly string[]) => this.internal(internalBatch(name, sqls.map((text) => ({ text }))), 'internal', run.text),
          execute: () => this.internal(internalBatch(name, [{ text: returning, types: bound.stmt.paramTypes, params: run.parameters ?? [], rows: true }]), 'internal', run.text),
        }
      : {
          enforce: this.enforce,
          masking: this.deps.masking,
          query: (sqls: readonly string[]) => this.internal(simpleQuery(sqls.join('; ')), 'internal', run.text),
          execute: () => this.internal(simpleQuery(returning), 'internal', run.text),
        };
    // Extended protocol: the client's Parse of this statement may still be in flight. A Sync of
    // Airlock's own waits for its answer (and ends the server's skipping if it failed, which the
    // client was told); nothing else of the client's has executed (hold-commit needs that).
    const flow = async (): Promise<HoldCommitOutcome | 'skipped'> => {
      if (bound) {
        const synced = await this.internal(SYNC, 'sync');
        if (synced.error || this.stmts.get(bound.stmtName) !== bound.stmt) return 'skipped';
      }
      return holdCommit(host, { run: { text: run.text, decision: d }, operation: op, binding: { ...binding, details: [...(binding.details ?? [])] }, notify, signal: ac.signal, ...(inTransactionSince ? { inTransactionSince } : {}) }, contextFromSql(run.text));
    };
    void flow().then((out) => {
        this.holdAbort = null;
        this.heldRun = null;
        if (out === 'skipped') {
          // Its Parse failed: the server skipped this Bind and everything up to the client's Sync.
          run.error ??= 'not executed: an earlier message in the pipeline failed';
          this.finishRun(run);
          this.skipTillSync = true;
        } else {
          if (out.hold) run.approval = out.hold.approval;
          if (out.hold?.approved) run.grant = out.hold.grant;
          if (out.kind === 'committed') {
            run.tag = out.tag;
            run.rows = out.rows;
          } else run.error = out.kind === 'failed' ? out.error.message : out.refusal.message;
          this.finishRun(run);
          if (this.closed) return;
          const error = out.kind === 'committed' ? undefined : out.kind === 'failed' ? out.error : run.cancelledByClient ? { code: '57014', message: 'canceling statement due to user request: Airlock rolled back the held statement' } : refusalError(out.refusal);
          if (bound) {
            // Simple Queries of Airlock's would have destroyed the client's unnamed statement; the
            // batches did not, but the server has no portal for this Bind: Airlock answers for it.
            if (error) {
              this.toClient.addOwned(errorResponse(error));
              this.skipTillSync = true;
            } else {
              this.toClient.addOwned(BIND_COMPLETE);
              const portal: Portal = { stmt: bound.stmt, rows: 0, approval: run.approval, grant: run.grant, parameters: run.parameters, binding: run.binding, committed: { tag: out.kind === 'committed' ? out.tag : '', executed: false } };
              this.pendingPortals.delete(bound.portalName);
              this.portals.set(bound.portalName, portal);
              this.committedPortals.add(bound.portalName);
            }
          } else {
            this.toClient.addOwned(error ? errorResponse(error) : commandComplete((out as { tag: string }).tag));
            // Idle after Airlock's own transaction; inside the client's: still open, or failed.
            this.toClient.addOwned(readyForQuery(this.txStatus === 0x54 ? 'T' : this.txStatus === 0x45 ? 'E' : 'I'));
          }
        }
        if (this.closed) return;
        this.holding = false;
        this.flushClient();
        this.pumpClient();
      });
  }

  /**
   * The client's Describe or Execute of the portal hold-commit already committed (Portal.committed):
   * answered here, in order, as the server would have for an executed INSERT/UPDATE/DELETE. Only
   * right behind its Bind (nothing of the client's in flight); anything else is refused.
   */
  private answerCommitted(portal: Portal, what: 'describe' | 'execute'): void {
    const c = portal.committed!;
    if (this.q.length > 0 && !(what === 'execute' && c.executed) && !this.q.some((e) => e.kind === 'query' || e.kind === 'sync')) {
      // Messages of the client's are still in flight (a Describe, Parse, Close between the Bind and
      // this): answer in order once they are, as the server would (or skip it after their error).
      this.cr.rewind();
      this.waitingCommitted = true;
      this.toUpstream.addOwned(FLUSH);
      this.flushUpstream();
      return;
    }
    if (this.q.length > 0 || (what === 'execute' && c.executed)) {
      const run = this.newRun(portal.stmt.text, portal.stmt.op, { action: 'deny', rule: 'airlock-hold-commit', reason: 'the statement of this portal already ran (approved and committed while held); it can be described and executed once, right after its Bind' });
      return this.deny(run, true);
    }
    if (what === 'describe') this.toClient.addOwned(NO_DATA);
    else {
      c.executed = true;
      this.toClient.addOwned(commandComplete(c.tag));
    }
    // A client waiting with Flush (no Sync yet) gets it now: nothing upstream would trigger a flush.
    this.flushClient();
  }

  // ---------------------------------------------------------------- upstream -> client

  private pumpUpstream(): void {
    if (this.pumpingUpstream || this.closed) return;
    this.pumpingUpstream = true;
    this.deferRecords = true;
    try {
      while (!this.closed && !this.upstreamParked && !this.clientFull && this.ur.next()) this.onBackend();
    } catch (err) {
      const msg = err instanceof ProtocolError ? err.message : (err as Error).message;
      this.deps.logger.error({ err, session: this.id }, 'upstream protocol failure');
      this.flushClient();
      this.end(`upstream protocol error: ${msg}`, { severity: 'FATAL', code: '08P01', message: `upstream database for connection "${this.connection}" sent an invalid message: ${msg}` });
      return;
    } finally {
      this.pumpingUpstream = false;
      this.deferRecords = false;
    }
    this.flushClient();
    this.recordDeferred();
    if (this.closed) return;
    this.armTimeLimit();
    this.releaseIdleWait();
    if (this.waitingCommitted && this.q.length === 0) {
      this.waitingCommitted = false;
      setImmediate(() => this.pumpClient());
    }
    if (this.pipelineCapped && this.q.length < (this.init.maxPipelinedMessages ?? DEFAULT_MAX_PIPELINED)) {
      this.pipelineCapped = false;
      setImmediate(() => this.pumpClient());
    }
    if (this.upstreamParked || this.clientFull) this.upstream.pause();
    else this.upstream.resume();
  }

  private flushClient(): void {
    const n = this.toClient.size;
    if (n === 0) return;
    if (this.closed) return this.toClient.clear();
    this.bytesToClient += n;
    if (!this.toClient.writeTo(this.client) && !this.clientFull) {
      this.clientFull = true;
      this.upstream.pause();
      this.client.once('drain', () => {
        this.clientFull = false;
        this.pumpUpstream();
      });
    }
  }

  private relay(): void {
    const r = this.ur;
    this.toClient.add(r.buf, r.start, r.end, r.frameIsTransient);
  }

  private onBackend(): void {
    const r = this.ur;
    const head = this.q.first();
    if (head?.sink && r.type !== M.ParameterStatus) {
      if (head.sink.frame(r.type, r.buf, r.start, r.end)) {
        this.q.shift();
        this.trackTx(r.buf[r.start + 5]);
      }
      return;
    }
    switch (r.type) {
      case M.ParameterStatus: {
        const [name, off] = readCString(r.buf, r.start + 5, r.end);
        const [value] = readCString(r.buf, off, r.end);
        if (name === 'client_encoding') {
          // Nothing after this message may reach the client or run: the server would now read
          // statement text differently from the policy (which parses UTF-8).
          if (!isUtf8Encoding(value)) {
            this.end(`client_encoding changed to ${value}`, { code: '22023', message: `client_encoding ${value} is not supported through Airlock (sessions always use UTF8); the session was closed`, hint: 'do not change client_encoding' });
            return;
          }
          return this.relay();
        }
        if (relayParameterStatus(name, value)) return this.relay();
        this.deps.logger.debug({ session: this.id, parameter: name }, 'client-settable ParameterStatus not relayed');
        return;
      }
      case M.NoticeResponse:
        if (!this.scrubFor(head?.run)) return this.relay();
        this.toClient.addOwned(scrubNoticeFrame(r.buf, r.start, r.end, head?.run?.text).frame);
        return;
      case M.NotificationResponse:
        if (!this.scrubFor(head?.run)) return this.relay();
        this.toClient.addOwned(redactNotification(r.buf, r.start, r.end));
        return;
      case M.ParseComplete:
      case M.BindComplete:
      case M.CloseComplete:
        this.q.shift();
        if (head) this.confirm(head);
        if (!head?.swallow) this.relay();
        return;
      case M.ParameterDescription:
        if (!head?.swallow) this.relay();
        return;
      case M.RowDescription:
        return this.onRowDescription(head);
      case M.NoData:
        this.q.shift();
        if (head?.kind !== 'describe-internal' && !head?.swallow) this.relay();
        return;
      case M.DataRow:
        return this.onRow(head, false);
      case M.CopyData:
        return this.onRow(head, true);
      case M.CommandComplete:
      case M.EmptyQueryResponse:
      case M.PortalSuspended:
        return this.onComplete(head);
      case M.ErrorResponse:
        return this.onError(head);
      case M.ReadyForQuery:
        return this.onReady();
      case M.CopyOutResponse:
        return this.onCopyOut(head);
      case M.CopyInResponse:
      case M.CopyBothResponse:
      case M.CopyDone:
      case M.FunctionCallResponse:
        if (!head?.swallow && !head?.run?.swallowRest && !head?.run?.cut) this.relay();
        return;
      case M.BackendKeyData:
      case M.Authentication:
      case M.NegotiateProtocol:
        // Startup-only messages; never let an upstream key or auth request reach the client.
        this.deps.logger.warn({ session: this.id, type: describeType(r.type) }, 'unexpected startup message from upstream dropped');
        return;
      default:
        throw new ProtocolError(`unexpected message type ${describeType(r.type)}`);
    }
  }

  /** The server confirmed a Parse, Bind or Close: only now does Airlock's record of the name change. */
  private confirm(e: Expect): void {
    if (e.name === undefined) return;
    if (e.kind === 'parse' && e.stmt) {
      this.stmts.set(e.name, e.stmt);
      if (this.pendingStmts.get(e.name) === e.stmt) this.pendingStmts.delete(e.name);
    } else if (e.kind === 'bind' && e.portal) {
      this.portals.set(e.name, e.portal);
      if (this.pendingPortals.get(e.name) === e.portal) this.pendingPortals.delete(e.name);
    } else if (e.kind === 'close') {
      const which = e.name[0];
      const name = e.name.slice(1);
      if (which === 'S') {
        this.stmts.delete(name);
        if (this.pendingStmts.get(name) === null) this.pendingStmts.delete(name);
      } else {
        this.portals.delete(name);
        if (this.pendingPortals.get(name) === null) this.pendingPortals.delete(name);
      }
    }
  }

  /** Messages the server skipped or refused: what they would have defined never exists. */
  private unconfirmed(e: Expect): void {
    if (e.name === undefined) return;
    if (e.kind === 'parse' && this.pendingStmts.get(e.name) === e.stmt) this.pendingStmts.delete(e.name);
    else if (e.kind === 'bind' && this.pendingPortals.get(e.name) === e.portal) this.pendingPortals.delete(e.name);
  }

  private onRowDescription(head: Expect | undefined): void {
    const r = this.ur;
    if (!head) return this.relay();
    if (head.kind === 'describe') {
      this.q.shift();
      if (!head.swallow) this.relay();
      if (head.captureFor) this.startMasker(head.captureFor, r.buf, r.start, r.end);
      return;
    }
    if (head.kind === 'describe-internal') {
      this.q.shift();
      if (head.run) this.startMasker(head.run, r.buf, r.start, r.end);
      return;
    }
    const run = head.run;
    if (!run) return this.relay();
    run.resultRows = 0;
    this.noteCursor(run, head.kind);
    if (head.swallow || run.swallowRest) return;
    this.relay();
    if (planNeedsMasking(planOf(run.decision))) this.startMasker(run, r.buf, r.start, r.end); // no field objects per result otherwise
  }

  private maskRule(run: Run): string {
    return run.decision.action === 'deny' ? run.decision.rule : (run.decision.rule ?? 'masking');
  }

  /** `buf[start, end)` is the result's RowDescription message. */
  private startMasker(run: Run, buf: Buffer, start: number, end: number): void {
    const plan = planOf(run.decision);
    if (!planNeedsMasking(plan)) return;
    const factory = this.deps.masking;
    if (!factory) {
      this.cut(run, { code: '42501', message: `Airlock cannot return this result: rule ${this.maskRule(run)} requires masking, but no masking layer is configured` });
      return;
    }
    // Catalog cache hit: the masker is ready now, so the session is not parked (no extra write or
    // microtask turn); a layout seen before is not even parsed again (forRowDescriptionCached).
    let ready: ReturnType<NonNullable<MaskerFactory['forResultCached']>>;
    try {
      ready = factory.forRowDescriptionCached ? factory.forRowDescriptionCached(buf.subarray(start, end), plan) : factory.forResultCached?.(parseRowDescription(buf, start, end), plan);
    } catch {
      ready = undefined; // the async path reports the failure (fail closed there)
    }
    if (ready !== undefined) {
      run.masker = ready;
      return;
    }
    const fields: FieldInfo[] = parseRowDescription(buf, start, end);
    this.awaitMasker(run, () => factory.forResult(fields, plan), (m) => (run.masker = m));
  }

  /** Parks the upstream side while a masker is prepared (catalog lookups), keeping frame order. */
  private awaitMasker<T>(run: Run, make: () => Promise<T>, use: (m: T) => void): void {
    this.upstreamParked = true;
    this.upstream.pause();
    let p: Promise<T>;
    try {
      p = make();
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(use, (err: Error) => {
      // Fail closed: without a masker nothing of this result is relayed.
      this.deps.logger.error({ err, session: this.id }, 'masker setup failed; result withheld');
      this.cut(run, { code: 'XX000', message: `Airlock could not prepare masking for this result (rule ${this.maskRule(run)}): ${err.message}` });
    }).finally(() => {
      this.upstreamParked = false;
      this.pumpUpstream();
    });
  }

  private collectMasked(run: Run): void {
    if (run.masker) for (const c of run.masker.maskedColumns) run.masked.add(c);
    if (run.copyMasker) for (const c of run.copyMasker.maskedColumns) run.masked.add(c);
  }

  private onRow(head: Expect | undefined, copy: boolean): void {
    const run = head?.run;
    if (!run || head.swallow) return;
    run.rows++;
    run.resultRows++;
    if (run.portal) run.portal.rows++;
    if (run.resultRows === 1 && head.kind === 'execute') this.noteCursor(run, head.kind);
    const cursor = run.progress?.cursor;
    let cursorCount = 0;
    if (cursor !== undefined) {
      cursorCount = (this.cursorRows.get(cursor) ?? 0) + 1;
      this.cursorRows.set(cursor, cursorCount);
    }
    if (run.cut || run.swallowRest) return;
    const limits = limitsOf(run.decision);
    // Per statement, and per cursor across every FETCH that reads it, and per portal across Executes.
    const count = Math.max(run.portal ? run.portal.rows : run.resultRows, cursorCount);
    if (limits.maxRowsPerStatement !== undefined && count > limits.maxRowsPerStatement) {
      this.cut(run, {
        code: '54000',
        message: `Airlock row limit reached: rule ${limits.rowsRule ?? 'limits'} allows at most ${limits.maxRowsPerStatement} rows per statement`,
        hint: 'add a LIMIT or a narrower WHERE clause, or export through an approved path',
      });
      return;
    }
    const r = this.ur;
    // A masked message is left in its masker's region (no Buffer object for it): its length, or -1
    // when the message is unchanged and relayed as it came.
    let region = -1;
    let regionBuf = r.buf;
    let regionAt = 0;
    if (!copy && run.masker) {
      const m = run.masker;
      try {
        region = m.maskDataRowRegion(r.buf, r.start, r.end);
      } catch (err) {
        this.cut(run, { code: 'XX000', message: `Airlock could not mask a row of this result (rule ${this.maskRule(run)}): ${(err as Error).message}` });
        return;
      }
      regionBuf = m.regionBuffer;
      regionAt = m.regionStart;
    } else if (copy && run.copyMasker) {
      const cm = run.copyMasker;
      try {
        region = cm.maskFrameRegion(r.buf, r.start, r.end);
      } catch (err) {
        this.cut(run, { code: 'XX000', message: `Airlock could not mask a COPY line (rule ${this.maskRule(run)}): ${(err as Error).message}` });
        return;
      }
      regionBuf = cm.regionBuffer;
      regionAt = cm.regionStart;
    }
    const len = region >= 0 ? region : r.end - r.start;
    if (limits.maxBytesPerSession !== undefined && this.resultBytes + len > limits.maxBytesPerSession) {
      this.cut(run, {
        code: '54000',
        message: `Airlock byte limit reached: rule ${limits.bytesRule ?? 'limits'} allows at most ${limits.maxBytesPerSession} result bytes per session`,
      });
      return;
    }
    this.resultBytes += len;
    run.bytes += len;
    // Masked messages built back to back in a slab are written as one slice.
    if (region >= 0) this.toClient.addRegion(regionBuf, regionAt, region);
    else this.relay();
  }

  // Progress lives on the run itself (no WeakMap entry per statement), created only when needed.
  private progressOf(run: Run): RunProgress {
    return (run.progress ??= { stmt: 0, copies: 0, cursor: undefined, timer: undefined, done: undefined });
  }

  /** At the start of a result: is this statement a FETCH from a cursor (whose rows add up across FETCHes)? */
  private noteCursor(run: Run, kind: ExpectKind): void {
    if (limitsOf(run.decision).maxRowsPerStatement === undefined || !mayUseCursor(run.text)) return;
    const p = this.progressOf(run);
    const uses = cursorUses(run.text);
    p.cursor = uses?.[kind === 'execute' ? 0 : p.stmt]?.fetch;
  }

  /** A statement of the run finished (CommandComplete / EmptyQuery / PortalSuspended). */
  private statementDone(run: Run, kind: ExpectKind, tag: string | undefined): void {
    if (kind !== 'query') {
      // An Execute is one statement: no index to advance, so no progress is created for it.
      this.cursorDone(run, 0, tag);
      if (run.progress) run.progress.cursor = undefined;
      this.settle(run); // an Execute's run ends with its CommandComplete or PortalSuspended
      return;
    }
    const p = this.progressOf(run);
    this.cursorDone(run, p.stmt, tag);
    p.cursor = undefined;
    p.stmt++;
    // The time limit is per statement: the next statement of the query string starts afresh.
    if (p.timer) {
      clearTimeout(p.timer);
      p.timer = undefined;
      this.armTimeLimit();
    }
  }

  /** A DECLARE or CLOSE of a cursor (statement `at` of the run) ends that cursor's row count. */
  private cursorDone(run: Run, at: number, tag: string | undefined): void {
    if (tag && (tag.startsWith('DECLARE CURSOR') || tag.startsWith('CLOSE CURSOR')) && mayUseCursor(run.text)) {
      const use = cursorUses(run.text)?.[at];
      if (use?.declare !== undefined) this.cursorRows.delete(use.declare);
      if (use?.close === '*') this.cursorRows.clear();
      else if (use?.close !== undefined) this.cursorRows.delete(use.close);
    }
  }

  /** The run is over upstream: no time limit any more. */
  private settle(run: Run): void {
    const p = run.progress;
    if (!p) return;
    clearTimeout(p.timer);
    p.timer = undefined;
    p.done = true;
  }

  /**
   * Arms the statement time limit of the run the upstream is working on now: the first query or
   * execute still awaiting its responses (timers never run for statements queued behind it, so a
   * cancel always hits the statement whose time ran out).
   */
  private armTimeLimit(): void {
    if (this.closed) return;
    const e = this.q.find(runsUpstream);
    const run = e?.run;
    if (!run || e.swallow || run.cut) return;
    const limits = limitsOf(run.decision);
    const ms = limits.maxStatementMs;
    if (ms === undefined) return;
    const p = this.progressOf(run);
    if (p.timer || p.done) return;
    p.timer = setTimeout(() => {
      p.timer = undefined;
      if (this.closed || p.done || run.cut) return;
      this.cut(run, {
        code: '57014',
        message: `Airlock statement time limit reached: rule ${limits.timeRule ?? 'limits'} allows at most ${ms} ms per statement`,
        hint: 'narrow the statement, or ask for a rule with a longer time limit',
      });
      this.flushClient();
    }, ms);
    p.timer.unref();
  }

  /** Stops relaying a statement's results and cancels it upstream. */
  private cut(run: Run, error: PgError): void {
    if (run.cut) return;
    run.cut = error;
    run.error = error.message;
    if (this.cancelInFlight) return;
    this.cancelInFlight = sendCancel(this.init.upstreamKey).then((err) => {
      this.cancelInFlight = null;
      if (err) this.deps.logger.warn({ err, session: this.id }, 'upstream cancel request failed');
    });
  }

  private onCopyOut(head: Expect | undefined): void {
    const run = head?.run;
    if (!run || head.swallow || run.swallowRest) return;
    run.resultRows = 0; // row limits are per statement: this COPY's rows start a new count
    const plan = planOf(run.decision);
    if (planNeedsMasking(plan)) {
      const factory = this.deps.masking;
      const p = this.progressOf(run);
      const spec = copyOutSpecs(run.text)?.[p.copies++];
      if (!factory || !spec || spec.format === 'binary') {
        const why = !factory ? 'no masking layer is configured' : !spec ? 'the COPY statement could not be analysed' : 'BINARY format output cannot be masked (use the text or csv format)';
        this.cut(run, { code: '42501', message: `Airlock cannot relay this COPY: rule ${this.maskRule(run)} requires masking, but ${why}` });
        return;
      }
      this.relay();
      this.awaitMasker(run, () => factory.forCopy(plan, spec.table, spec.columns, { format: spec.format, delimiter: spec.delimiter, nullString: spec.nullString, quote: spec.quote, escape: spec.escape, header: spec.header }), (m) => (run.copyMasker = m));
      return;
    }
    this.relay();
  }

  /** CommandComplete / EmptyQueryResponse / PortalSuspended. */
  private onComplete(head: Expect | undefined): void {
    const run = head?.run;
    if (!head || !run) return this.relay();
    const r = this.ur;
    if (r.type === M.CommandComplete) run.tag = readCString(r.buf, r.start + 5, r.end)[0];
    this.statementDone(run, head.kind, r.type === M.CommandComplete ? run.tag : undefined);
    this.collectMasked(run);
    run.masker = null;
    run.copyMasker = null;
    if (head.kind === 'query') {
      if (head.swallow || run.swallowRest) return;
      if (run.cut) {
        // The statement finished before the cancel landed: the client still gets the error.
        this.toClient.addOwned(errorResponse(run.cut));
        run.swallowRest = true;
        return;
      }
      return this.relay();
    }
    // execute
    this.q.shift();
    if (!head.swallow) {
      if (run.cut) {
        this.toClient.addOwned(errorResponse(run.cut));
        this.swallowUntilSync();
      } else this.relay();
    }
    this.finishRun(run);
  }

  /** After Airlock reported an error in a pipeline the upstream did not see: drop responses up to Sync. */
  private swallowUntilSync(): void {
    let sawSync = false;
    for (const e of this.q) {
      if (e.kind === 'sync') {
        sawSync = true;
        break;
      }
      e.swallow = true;
    }
    if (!sawSync) this.skipTillSync = true;
  }

  /** Upstream skips to Sync after an error in the extended protocol: drop those expectations. */
  private dropUntilSync(): void {
    while (this.q.length && this.q.first()!.kind !== 'sync') {
      const e = this.q.shift()!;
      this.unconfirmed(e);
      if (e.run && e.kind === 'execute') {
        e.run.error ??= 'not executed: an earlier message in the pipeline failed';
        this.finishRun(e.run);
      }
    }
    if (this.q.length === 0) this.skipTillSync = true;
  }

  /**
   * Whether this session's non-row output must be scrubbed; turns on (for good) with the first
   * statement whose decision masks anything.
   */
  private scrubFor(run: Run | undefined): boolean {
    if (!this.scrubbing && run && planNeedsMasking(planOf(run.decision))) this.scrubbing = true;
    return this.scrubbing;
  }

  /** The upstream's ErrorResponse as the client may see it, and its text for the audit store. */
  private upstreamError(run: Run | undefined): { frame: Buffer | null; text: string } {
    const r = this.ur;
    if (this.scrubFor(run)) {
      const s = scrubNoticeFrame(r.buf, r.start, r.end, run?.text);
      return { frame: s.frame, text: s.summary };
    }
    const f = parseErrorFields(r.buf, r.start, r.end);
    return { frame: null, text: `${f.C ?? ''} ${f.M ?? ''}`.trim() };
  }

  private relayError(e: { frame: Buffer | null }): void {
    if (e.frame) this.toClient.addOwned(e.frame);
    else this.relay();
  }

  private onError(head: Expect | undefined): void {
    if (!head) return this.relayError(this.upstreamError(undefined));
    if (head.kind === 'poison') {
      this.toClient.addOwned(errorResponse(head.error!));
      if (head.extended) {
        this.q.shift();
        this.dropUntilSync();
      }
      return;
    }
    const run = head.run;
    if (run) {
      this.collectMasked(run);
      run.masker = null;
    }
    const err = this.upstreamError(run);
    if (run) this.settle(run);
    if (head.kind === 'query') {
      if (!run || head.swallow || run.swallowRest) return;
      if (run.cut) {
        this.toClient.addOwned(errorResponse(run.cut));
        run.swallowRest = true;
      } else {
        // The audit store and chat threads get the scrubbed text, never the upstream's raw one.
        run.error = err.text;
        this.relayError(err);
      }
      return;
    }
    // Extended protocol: the upstream now skips everything until Sync.
    this.q.shift();
    this.unconfirmed(head);
    if (!head.swallow) {
      if (run?.cut) this.toClient.addOwned(errorResponse(run.cut));
      else this.relayError(err);
    }
    if (run && (head.kind === 'execute' || head.kind === 'parse')) {
      run.error ??= err.text;
      this.finishRun(run);
    }
    this.dropUntilSync();
  }

  private trackTx(status: number): void {
    if (status !== 0x49 /* I */ && this.txStatus === 0x49) this.txSince = new Date();
    if (status === 0x49) this.txSince = undefined;
    this.txStatus = status;
  }

  /**
   * Sends Airlock's own messages on this connection (hold-commit.ts), ending in one ReadyForQuery
   * (a simple Query, or a batch / lone Sync); their responses are consumed, never relayed. A lone
   * Sync is queued as kind 'sync' so an error of the client's ahead of it skips up to it.
   */
  private internal(bytes: Buffer, kind: 'internal' | 'sync' = 'internal', own?: string): Promise<InternalResult> {
    if (this.closed) return Promise.resolve({ fields: [], rows: [], status: 0x49, error: { code: '08006', message: 'the session ended' } });
    return new Promise((resolve) => {
      this.q.push({ kind, sink: new InternalSink(resolve, own) });
      this.toUpstream.addOwned(bytes);
      this.flushUpstream();
    });
  }

  private onReady(): void {
    this.trackTx(this.ur.buf[this.ur.start + 5]);
    // Pops up to and including the entry that ends in ReadyForQuery.
    while (this.q.length) {
      const e = this.q.shift()!;
      this.unconfirmed(e);
      if (e.run) this.settle(e.run);
      if (e.kind === 'query' && e.run) {
        this.collectMasked(e.run);
        this.finishRun(e.run);
      }
      if (e === this.barrierEntry) {
        this.barrierEntry = null;
        this.encodingBarrier = 'none';
        setImmediate(() => this.pumpClient());
      }
      if (e.kind === 'query' || e.kind === 'sync' || e.kind === 'poison') break;
    }
    if (this.cancelInFlight) {
      // A cut statement finished before its cancel arrived. Until the postmaster has delivered
      // the cancel, the client does not get ReadyForQuery, so it cannot start a statement the
      // late cancel would hit (an idle backend ignores a cancel).
      const z = Buffer.from(this.ur.buf.subarray(this.ur.start, this.ur.end));
      this.upstreamParked = true;
      this.upstream.pause();
      void this.cancelInFlight.then(() => {
        this.toClient.addOwned(z);
        this.upstreamParked = false;
        this.pumpUpstream();
      });
      return;
    }
    this.relay();
  }

  // ---------------------------------------------------------------- recording and shutdown

  private finishRun(run: Run): void {
    if (run.recorded) return;
    run.recorded = true;
    const rec = operationRecord(run);
    // Held statements: the exact values never reach the store, their keyed digest does (receipts).
    const key = this.deps.parameterDigestKey;
    if (run.parameters && key && rec.classification) rec.classification.parameterDigest = parameterDigest(key, run.parameters.map((p) => p.value));
    // While upstream responses are relayed, the record is written right after the client write
    // (same task, same order): the audit work is not on the response's path.
    if (this.deferRecords) {
      this.deferredRecords.push({ run, rec });
      return;
    }
    this.recordRun(run, rec);
  }

  private recordDeferred(): void {
    const d = this.deferredRecords;
    if (d.length === 0) return;
    this.deferredRecords = [];
    for (const { run, rec } of d) this.recordRun(run, rec);
  }

  private recordRun(run: Run, rec: ReturnType<typeof operationRecord>): void {
    this.enforce.record(rec);
    // Every approved run is reported to its request: approvals release one run unless the
    // approver chose a reusable grant, and each grant use belongs in the request's history.
    // (Only held runs carry an approval: the summary is not built for every statement.)
    if (run.approval) this.enforce.reportResult(run.approval, { summary: heldResultSummary(run, rec), tag: run.tag, rows: run.rows, error: run.error, grant: run.grant });
  }

  /** Ends the session (idempotent). `clientError` is sent to the client first when given. With
   * `park` (a drain), a held statement's request stays open for the client's re-attach (HOLD_PARKED). */
  end(reason: string, clientError?: PgError, opts: { park?: boolean } = {}): void {
    if (this.closed) return;
    this.flushClient();
    this.closed = true;
    // Records of runs finished in this pump come before the session's end and the runs cut short by it.
    this.deferRecords = false;
    this.recordDeferred();
    this.holdAbort?.abort(opts.park ? HOLD_PARKED : new Error(reason));

    this.holdAbort = null;
    const { client, upstream } = this;
    if (client.writable) {
      if (clientError) client.end(errorResponse({ severity: 'FATAL', ...clientError }));
      else client.end();
    }
    if (upstream.writable) upstream.end(Buffer.from([M.Terminate, 0, 0, 0, 4]));
    const killer = setTimeout(() => {
      client.destroy();
      upstream.destroy();
    }, 2000);
    killer.unref();
    this.deps.cancels.unregister(this.init.clientPid);
    for (const e of this.q) {
      e.sink?.fail(`session ended: ${reason}`);
      if (e.run && !e.run.recorded && e.kind !== 'parse' && e.kind !== 'describe-internal') {
        e.run.error ??= `session ended before the statement finished: ${reason}`;
        this.finishRun(e.run);
      }
    }
    this.q.clear();
    this.enforce.end(reason, { toClient: this.bytesToClient, fromClient: this.bytesFromClient });
    this.deps.logger.info({ session: this.id, identity: this.identity.name, connection: this.connection, reason }, 'postgres session ended');
    this.init.onClose?.(this);
  }
}
