// One statement run as the session tracks it (decision, counters, masks, limit state), and how
// it is written to the audit store and reported to an approval thread.
import type { GrantUse, OperationBinding } from '../approvals/approver.ts';
import type { BoundParameter } from '../enforce/binding.ts';
import type { Decision, Limits, MaskPlan } from '../policy/decision.ts';
import type { Operation } from '../policy/operation.ts';
import type { OperationRecord } from '../recording/store.ts';
import type { PgError } from './messages.ts';
import type { CopyMasker, RowMasker } from './row-masker.ts';

export const EMPTY_PLAN: MaskPlan = { columns: [], detectors: [], denyMaskedExpressions: false };

/** A statement as Parsed (or looked up), with its decision; approved reviews carry the approval. */
export interface Stmt {
  text: string;
  op: Operation | undefined;
  decision: Decision;
  approval?: OperationRecord['approval'];
  /** Parameter type OIDs the client declared in its Parse (absent: none declared). */
  paramTypes?: number[];
}

/** A bound portal; `rows` accumulates over Executes so cursor-style fetches share one row limit. */
export interface Portal {
  stmt: Stmt;
  rows: number;
  /** The approval of exactly this Bind (statement + parameter values), for held statements. */
  approval?: OperationRecord['approval'];
  grant?: GrantUse;
  parameters?: BoundParameter[];
  binding?: OperationBinding;
  /**
   * Hold-commit already ran and committed this portal's statement in Airlock's transaction: the
   * server has no such portal, Airlock answers its Describe (NoData) and one Execute (this tag).
   */
  committed?: { tag: string; executed: boolean };
}

export interface Run {
  text: string;
  op: Operation | undefined;
  decision: Decision;
  started: number;
  rows: number;
  /** Rows of the current result set (simple query: per statement in the query string). */
  resultRows: number;
  bytes: number;
  masked: Set<string>;
  masker: RowMasker | null;
  copyMasker: CopyMasker | null;
  cut: PgError | null;
  /** After Airlock reported an error for this run, drop the upstream's remaining responses. */
  swallowRest: boolean;
  error?: string;
  /** Last CommandComplete tag (`DELETE 3`), for the approval thread. */
  tag?: string;
  portal?: Portal;
  approval?: OperationRecord['approval'];
  /** Set when a reusable grant (not a fresh approval) released this run. */
  grant?: GrantUse;
  /** What the approval was bound to (held statements): shown parameters and the keyed digest. */
  binding?: OperationBinding;
  parameters?: BoundParameter[];
  /** The client sent a CancelRequest while the statement was held. */
  cancelledByClient?: boolean;
  recorded: boolean;
  /** Upstream-side progress (session.ts), created when first needed. */
  progress?: RunProgress;
}

/** Upstream-side progress of one run: which statement of its query string is answering, and its timer. */
export interface RunProgress {
  /** Index of the statement (in the query string) whose responses are arriving. */
  stmt: number;
  /** CopyOutResponses seen so far: the Nth gets the Nth COPY TO STDOUT's spec. */
  copies: number;
  /** The cursor the current statement FETCHes from (its rows count across FETCHes). */
  cursor?: string;
  /** Statement time limit timer, armed when the run is the one the upstream is working on. */
  timer?: NodeJS.Timeout;
  done?: boolean;
}

export function newRun(text: string, op: Operation | undefined, decision: Decision): Run {
  // Every field is present from the start (optional ones undefined): one object shape for every
  // run, so the per-statement code that reads them stays monomorphic.
  return {
    text, op, decision, started: performance.now(), rows: 0, resultRows: 0, bytes: 0, masked: new Set(), masker: null, copyMasker: null, cut: null, swallowRest: false,
    error: undefined, tag: undefined, portal: undefined, approval: undefined, grant: undefined, binding: undefined, parameters: undefined, cancelledByClient: undefined,
    recorded: false, progress: undefined,
  };
}

export function planOf(d: Decision): MaskPlan {
  return d.action === 'deny' ? EMPTY_PLAN : d.mask;
}

export function limitsOf(d: Decision): Limits {
  return d.action === 'deny' ? {} : d.limits;
}

export function operationRecord(run: Run): Omit<OperationRecord, 'sessionId' | 'seq'> {
  const d = run.decision;
  const op = run.op;
  return {
    at: new Date(),
    text: run.text,
    kind: op?.kind ?? 'utility',
    classification: op ? classificationOf(run, op) : d.elevation ? { elevation: d.elevation.id } : {},
    decision: d.action,
    rule: d.rule,
    reason: d.action === 'deny' || d.action === 'review' ? d.reason : undefined,
    rows: run.rows,
    bytes: run.bytes,
    maskedColumns: run.masked.size === 0 ? [] : [...run.masked],
    error: run.error,
    durationMs: Math.round((performance.now() - run.started) * 1000) / 1000,
    approval: run.approval,
  };
}

/** The record's classification of a classified run (keys in this order; optional ones only when set). */
function classificationOf(run: Run, op: Operation): Record<string, unknown> {
  const d = run.decision;
  const b = run.binding;
  const sql = op.sql;
  const c: Record<string, unknown> = {
    tables: op.tables,
    functions: op.functions,
    statementTypes: sql?.statementTypes ?? [],
    copy: sql?.copy,
    fingerprint: sql?.fingerprint,
    parseError: sql?.parseError,
    tag: run.tag,
  };
  // Held statements: the parameters as the approver saw them and the keyed digest of the exact values.
  if (b) c.binding = b.parameters ? { digest: b.digest, parameters: b.parameters } : { digest: b.digest };
  if (run.grant) c.grant = run.grant;
  if (d.elevation) c.elevation = d.elevation.id;
  return c;
}

/** What the approval thread is told after the approved statement ran. */
export function heldResultSummary(run: Run, rec: Pick<OperationRecord, 'rows' | 'bytes' | 'durationMs' | 'maskedColumns'>): string {
  if (run.error) return `ran with error: ${run.error} (${rec.rows} rows, ${rec.durationMs} ms)`;
  const masked = rec.maskedColumns.length ? `; masked ${rec.maskedColumns.join(', ')}` : '';
  return `completed${run.tag ? ` (${run.tag})` : ''}: ${rec.rows} rows, ${rec.bytes} bytes returned in ${rec.durationMs} ms${masked}`;
}
