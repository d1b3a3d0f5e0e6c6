// review.preview: hold-commit. The held write runs on the agent's OWN connection inside a
// transaction Airlock opened (BEGIN first: the client was idle), and Airlock holds the COMMIT
// while approvers look at the real result: rows affected, a masked sample of the rows written
// (RETURNING * on Airlock's copy of the statement) and how long locks have been held. Approve:
// COMMIT, and the client sees the commit's outcome; reject, expiry, cancel or maxLockHold:
// ROLLBACK, and the client sees the refusal. The client never sees the transaction: it gets the
// statement's CommandComplete (or error) and a ReadyForQuery 'I', as for an autocommit statement.
//
// Scope (the session checks it before calling): one INSERT/UPDATE/DELETE without its own
// RETURNING, client idle (no transaction block, nothing executed before it in the pipeline).
// Simple protocol: Airlock's statements go as simple Queries. Extended protocol (parameters):
// the statement runs with exactly the client's parameter bytes, formats and declared types, as
// Airlock's own named statement, so the client's unnamed statement and portals are untouched;
// the client then gets BindComplete, NoData / CommandComplete for its portal (session.ts).
// Everything else is held the ordinary way with a dry-run preview.
import type { ApprovalPreview } from '../../bots/channel.ts';
import type { OperationBinding } from '../approvals/approver.ts';
import type { EnforcementSession, HoldNotice, HoldResult, ReviewDecision } from '../enforce/session.ts';
import type { Refusal } from '../enforce/refusal.ts';
import type { RequestContext } from '../enforce/context.ts';
import { redactDetected } from '../masking/redact-text.ts';
import type { Operation } from '../policy/operation.ts';
import { readCString } from './frames.ts';
import { scrubMessage } from './scrub.ts';
import { bindMessage, closeMessage, describePortal, executeMessage, parseErrorFields, parseTyped, SYNC, type PgError } from './messages.ts';
import { parseRowDescription, planNeedsMasking } from './masking-api.ts';
import { appendReturning, readDataRow } from './preview.ts';
import type { FieldInfo, MaskerFactory } from './row-masker.ts';

const SAMPLE_ROWS = 5;

/** What an internal statement on the session's upstream produced (consumed, never relayed). */
export interface InternalResult {
  tag?: string;
  fields: FieldInfo[];
  /** Copies of the first DataRow frames. */
  rows: Buffer[];
  error?: PgError;
  /** Transaction status of its ReadyForQuery. */
  status: number;
}

/** Collects the responses to one internal simple Query up to its ReadyForQuery. */
export class InternalSink {
  private readonly r: InternalResult = { fields: [], rows: [], status: 0x49 };
  /** `own`: the client's statement text, whose own literals an error may echo (scrub.ts). */
  constructor(
    private readonly done: (r: InternalResult) => void,
    private readonly own?: string,
  ) {}

  /** The connection ended before the answer: the statement's fate is the upstream's (a closed connection rolls back). */
  fail(why: string): void {
    this.r.error ??= { code: '08006', message: why };
    this.done(this.r);
  }

  /** One upstream frame ([start, end) whole message); true when this was its ReadyForQuery. */
  frame(type: number, buf: Buffer, start: number, end: number): boolean {
    switch (type) {
      case 0x54: // RowDescription
        this.r.fields = parseRowDescription(buf, start, end);
        return false;
      case 0x44: // DataRow
        if (this.r.rows.length < SAMPLE_ROWS) this.r.rows.push(Buffer.from(buf.subarray(start, end)));
        return false;
      case 0x43: // CommandComplete
        this.r.tag = readCString(buf, start + 5, end)[0];
        return false;
      case 0x45: {
        const f = parseErrorFields(buf, start, end);
        // Approvers, the audit and the client read it: scrubbed like any relayed error under masking
        // (`secret::int` quotes the masked value), whether or not this statement masks anything.
        this.r.error ??= { code: f.C ?? 'XX000', message: scrubMessage(f.M ?? 'error', this.own) };
        return false;
      }
      case 0x5a:
        this.r.status = buf[start + 5];
        this.done(this.r);
        return true;
      default:
        return false; // notices and the like of Airlock's own statements are not the client's
    }
  }
}

/** What the session offers the hold-commit flow. */
export interface HoldCommitHost {
  enforce: EnforcementSession;
  masking: MaskerFactory | null;
  /** Runs Airlock's own statements (no parameters), in order, on the session's upstream; answers consumed. */
  query(sqls: readonly string[]): Promise<InternalResult>;
  /** Runs the held statement (RETURNING * appended) with the client's parameters; answers consumed. */
  execute(): Promise<InternalResult>;
}

/** One of Airlock's own statements in an extended-protocol batch. */
export interface BatchStatement {
  text: string;
  types?: readonly number[];
  params?: ReadonlyArray<{ value: Buffer | null; binary: boolean }>;
  /** Describe the portal: its RowDescription gives the sample's columns. */
  rows?: boolean;
}

/**
 * Airlock's statements as one extended-protocol batch ending in Sync, all under one statement
 * and portal `name` of Airlock's. Leftovers of a failed earlier batch (an error skips the Closes)
 * are closed first; closing a name that does not exist is not an error.
 */
export function internalBatch(name: string, stmts: readonly BatchStatement[]): Buffer {
  const parts: Buffer[] = [closeMessage('P', name), closeMessage('S', name)];
  for (const st of stmts) {
    parts.push(parseTyped(name, st.text, st.types ?? []), bindMessage(name, name, st.params ?? []));
    if (st.rows) parts.push(describePortal(name));
    parts.push(executeMessage(name), closeMessage('P', name), closeMessage('S', name));
  }
  parts.push(SYNC);
  return Buffer.concat(parts);
}

export interface HoldCommitInput {
  run: { text: string; decision: ReviewDecision };
  operation: Operation;
  binding: OperationBinding;
  notify: (n: HoldNotice) => void;
  signal: AbortSignal;
  /** The client's own transaction is open (since then): run under a savepoint instead. */
  inTransactionSince?: Date;
}

export type HoldCommitOutcome =
  | { kind: 'committed'; tag: string; rows: number; hold: HoldResult }
  | { kind: 'failed'; error: PgError; hold?: HoldResult }
  | { kind: 'refused'; refusal: Refusal; hold: HoldResult; tag: string };

/** Whether hold-commit can take `text` (one INSERT/UPDATE/DELETE without RETURNING). */
export function holdCommitStatement(text: string): string | undefined {
  return appendReturning(text);
}

/** CommandComplete with `tag`: what the client gets for the committed statement. */
export function commandComplete(tag: string): Buffer {
  const body = Buffer.from(`${tag}\0`, 'utf8');
  const b = Buffer.allocUnsafe(5 + body.length);
  b[0] = 0x43;
  b.writeInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}

function rowsOf(tag: string | undefined): number {
  const m = /(\d+)$/.exec(tag ?? '');
  return m ? Number(m[1]) : 0;
}

async function sample(masking: MaskerFactory | null, d: ReviewDecision, r: InternalResult): Promise<string[][] | undefined> {
  if (r.fields.length === 0) return undefined;
  let rows = r.rows;
  if (planNeedsMasking(d.mask)) {
    if (!masking) return undefined;
    const m = await masking.forResult(r.fields, d.mask);
    if (m) rows = rows.map((f) => m.maskDataRow(f));
  }
  return [r.fields.map((f) => f.name), ...rows.map((f) => readDataRow(f).map((v) => (v === null ? 'NULL' : redactDetected(v))))];
}

function minutes(ms: number): string {
  return ms >= 60_000 ? `${Math.round(ms / 60_000)} min` : `${Math.round(ms / 1000)} s`;
}

/** The client's timeouts (put back inside its transaction) and whether search_path is the connection's default. */
const SETTINGS =
  "SELECT pg_catalog.current_setting('statement_timeout'), pg_catalog.current_setting('lock_timeout'), pg_catalog.current_setting('search_path') OPERATOR(pg_catalog.=) (SELECT s.reset_val FROM pg_catalog.pg_settings s WHERE s.name OPERATOR(pg_catalog.=) 'search_path')";
/** Airlock's savepoint inside a client's transaction (review.holdInTransaction). */
const SAVEPOINT = 'airlock_hold_commit';
/** Fails the client's transaction after a refused held statement, as an error of its own would. */
const FAIL_TRANSACTION = '/* Airlock refused the held statement: the transaction fails as on an error */ AIRLOCK_REFUSED';

function literal(v: string): string {
  return `'${v.replace(/'/g, "''")}'`;
}

/**
 * Runs the statement on the session's connection, holds for approval with the real result as
 * preview, then keeps or undoes it. Outside a transaction (the usual case) Airlock opens one and
 * holds its COMMIT. Inside the client's own transaction (`o.inTransactionSince`, only when the rule
 * allows holding there) the statement runs under a savepoint: approve releases it (the client's
 * COMMIT decides), reject / expiry / cancel roll back to it and fail the client's transaction, as
 * an error of the statement would. Timeouts are Airlock's while the statement runs, the client's
 * again afterwards. Never throws.
 */
export async function holdCommit(host: HoldCommitHost, o: HoldCommitInput, context?: RequestContext): Promise<HoldCommitOutcome> {
  const d = o.run.decision;
  const inTx = o.inTransactionSince;
  const ms = d.limits.maxStatementMs ?? 60_000;
  const timeouts = [`SET LOCAL statement_timeout = ${Math.max(1, Math.floor(ms))}`, `SET LOCAL lock_timeout = ${Math.max(1, Math.min(5000, Math.floor(ms / 2)))}`];
  // Outside a transaction: SET LOCAL ends with Airlock's transaction. Inside the client's: the
  // client's values are read first and put back once the statement ran (a released savepoint
  // would keep Airlock's values until the client's transaction ends). Function calls are
  // schema-qualified: the client's search_path may put its own current_setting() first.
  const begun = await host.query([inTx ? `SAVEPOINT ${SAVEPOINT}` : 'BEGIN', SETTINGS, ...timeouts]);
  if (begun.error) {
    if (!inTx && begun.status !== 0x49) await host.query(['ROLLBACK']);
    return { kind: 'failed', error: begun.error };
  }
  const saved = readDataRow(begun.rows[0] ?? Buffer.alloc(0));
  if (saved[2] !== 't') {
    // The rollback-safety check (preview.ts) resolved the statement's tables with the default
    // search_path; this session's may name other tables (and their triggers). Not run: refused.
    await host.query(inTx ? [`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`, `RELEASE SAVEPOINT ${SAVEPOINT}`, FAIL_TRANSACTION] : ['ROLLBACK']);
    return { kind: 'failed', error: { code: '55000', message: "Airlock: this held write runs before approval (review.preview hold-commit) only with the connection's default search_path, which this session changed; RESET search_path and send it again" } };
  }
  const since = inTx ?? new Date();
  const ran = await host.execute();
  if (ran.error) {
    // Inside the client's transaction an error fails it, as it would have without Airlock.
    if (!inTx) await host.query(['ROLLBACK']);
    return { kind: 'failed', error: ran.error };
  }
  if (inTx) {
    const restored = await host.query([`SET LOCAL statement_timeout = ${literal(saved[0] ?? '0')}`, `SET LOCAL lock_timeout = ${literal(saved[1] ?? '0')}`]);
    if (restored.error) return { kind: 'failed', error: restored.error };
  }
  const rows = rowsOf(ran.tag);
  const tag = ran.tag ?? '';
  let shown: string[][] | undefined;
  try {
    shown = await sample(host.masking, d, ran);
  } catch {
    shown = undefined; // fail closed: no sample rather than an unmasked one
  }
  if (o.signal.aborted) {
    // Cancelled (CancelRequest, hang-up) while the statement ran: an abort listener added now would
    // never fire, and approvers would be asked about a statement nobody waits for. Undone here.
    if (inTx) await host.query([`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`, `RELEASE SAVEPOINT ${SAVEPOINT}`, FAIL_TRANSACTION]);
    else await host.query(['ROLLBACK']);
    return { kind: 'failed', error: { code: '57014', message: 'canceling statement due to user request: Airlock rolled back the held statement before asking for approval' } };
  }
  const maxLock = d.review.maxLockHoldMs;
  const bound = maxLock ? ` (at most ${minutes(maxLock)}, then rolled back)` : '';
  const preview: ApprovalPreview = {
    kind: 'hold-commit',
    summary: inTx
      ? `ran inside the client's transaction (open since ${inTx.toISOString()}) under a savepoint Airlock holds: ${tag}; its locks are held${bound}; approve keeps it in the client's transaction (the client's COMMIT decides), reject or expiry rolls it back and fails that transaction${shown ? '; sample of rows as written' : ''}`
      : `ran in a transaction Airlock holds open: ${tag}; its locks are held since ${since.toISOString()}${bound}; approve commits it, reject or expiry rolls it back${shown ? '; sample of rows as written' : ''}`,
    rows,
    ...(shown ? { sample: shown } : {}),
  };
  const binding: OperationBinding = { ...o.binding, preview, details: [...(o.binding.details ?? []), inTx ? `locks held: the statement ran inside the client's transaction open since ${inTx.toISOString()}` : `locks held: the statement ran in a transaction open since ${since.toISOString()}; nothing is committed until you approve`] };
  const ac = new AbortController();
  const onAbort = () => ac.abort(o.signal.reason);
  o.signal.addEventListener('abort', onAbort, { once: true });
  let lockExpired = false;
  const timer = maxLock
    ? setTimeout(() => {
        lockExpired = true;
        ac.abort(new Error(`locks held for the longest the rule allows (maxLockHold ${minutes(maxLock)})`));
      }, maxLock)
    : undefined;
  let h: HoldResult;
  try {
    h = await host.enforce.hold({ operation: o.operation, decision: d, binding, notify: o.notify, signal: ac.signal, ...(inTx ? { transactionSince: inTx } : {}), ...(context ? { context } : {}) });
  } finally {
    clearTimeout(timer);
    o.signal.removeEventListener('abort', onAbort);
  }
  if (h.approved && !o.signal.aborted) {
    const c = await host.query([inTx ? `RELEASE SAVEPOINT ${SAVEPOINT}` : 'COMMIT']);
    // The client sees the commit's outcome: a failed COMMIT (deferred constraint, serialization) is its error.
    if (c.error) return { kind: 'failed', error: c.error, hold: h };
    if (!inTx && c.tag !== 'COMMIT') return { kind: 'failed', error: { code: '40000', message: `the transaction was not committed (${c.tag ?? 'no tag'})` }, hold: h };
    return { kind: 'committed', tag, rows, hold: h };
  }
  if (inTx) await host.query([`ROLLBACK TO SAVEPOINT ${SAVEPOINT}`, `RELEASE SAVEPOINT ${SAVEPOINT}`, FAIL_TRANSACTION]);
  else await host.query(['ROLLBACK']);
  if (h.approved) return { kind: 'failed', error: { code: '57014', message: 'Airlock rolled back the held statement: the client cancelled it' }, hold: h };
  const refusal: Refusal = lockExpired
    ? { kind: 'rejected', rule: d.rule, requestId: h.approval?.requestId, message: `Airlock: rolled back: the held ${inTx ? 'statement' : 'transaction'} kept its locks for the longest rule ${d.rule} allows (maxLockHold ${minutes(maxLock ?? 0)}) without a decision`, hint: 'ask again when an approver is available' }
    : { ...h.refusal, message: `${h.refusal.message} (the statement was rolled back)` };
  return { kind: 'refused', refusal, hold: h, tag };
}
