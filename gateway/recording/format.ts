// How recorded sessions read: tables and transcripts for people (`airlock sessions`, the session
// log attached to approval threads) and stable JSON for machines (`--json`). Pure functions.
//
// Everything shown comes from clients (SQL text, identities, reasons), so control characters are
// escaped before they reach a terminal: an agent must not be able to repaint an auditor's screen.
import type { AuditEvent, OperationRecord, SessionRecord } from './store.ts';
import type { SessionSummary } from './sqlite-store.ts';

export interface SessionDetail {
  session: SessionRecord;
  operations: OperationRecord[];
}

export interface FormatOptions {
  /** Terminal width to fit; default 120 (the CLI passes process.stdout.columns). */
  width?: number;
  /** Show statement text and audit detail in full instead of shortened. */
  full?: boolean;
}

const DEFAULT_WIDTH = 120;
const MIN_WIDTH = 60;
/** Characters of statement text shown per operation unless `full`. */
const SHORT_TEXT_CHARS = 400;
/** Per-operation cap in the chat session log, which people read in a thread, not a terminal. */
const LOG_TEXT_CHARS = 4000;

// ---------------------------------------------------------------------------------------------
// Small formatters

/** `2026-11-24 22:31:08` (UTC). */
export function formatTimestamp(d: Date): string {
  if (!validDate(d)) return '?';
  return d.toISOString().slice(0, 19).replace('T', ' ');
}

/** `22:31:08.123` (UTC). */
function formatClock(d: Date): string {
  if (!validDate(d)) return '?';
  return d.toISOString().slice(11, 23);
}

/** `340ms`, `12.3s`, `4m 02s`, `2h 05m`, `3d 04h`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '?';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)}s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad2(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h ${pad2(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86_400)}d ${pad2(Math.floor((s % 86_400) / 3600))}h`;
}

/** `512 B`, `12.3 KiB`, `4.0 MiB`. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '?';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

function validDate(d: unknown): d is Date {
  return d instanceof Date && Number.isFinite(d.getTime());
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** Escapes control characters (keeps newline and tab when `keepLines`). */
function clean(s: string, keepLines = false): string {
  return String(s).replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    if (keepLines && (c === '\n' || c === '\t')) return c === '\t' ? '  ' : c;
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

/** One line: whitespace runs collapsed, controls escaped. */
function oneLine(s: string): string {
  return clean(String(s).replace(/\s+/g, ' ').trim());
}

function ellipsize(s: string, max: number): string {
  if (max <= 0) return '';
  const chars = Array.from(s);
  if (chars.length <= max) return s;
  return max === 1 ? '…' : chars.slice(0, max - 1).join('') + '…';
}

function displayLength(s: string): number {
  return Array.from(s).length;
}

/** Word-wraps one line to `width` columns, breaking long words when it must. */
function wrap(line: string, width: number): string[] {
  const w = Math.max(10, width);
  let rest = Array.from(line);
  const out: string[] = [];
  while (rest.length > w) {
    let cut = rest.lastIndexOf(' ', w);
    if (cut < w / 3) cut = w; // no good space: hard break
    out.push(rest.slice(0, cut).join('').trimEnd());
    rest = rest.slice(cut);
    if (rest[0] === ' ') rest = rest.slice(1);
  }
  if (rest.length > 0 || out.length === 0) out.push(rest.join(''));
  return out;
}

/** `label     value`, value wrapped and continued under itself. */
function field(indent: number, labelWidth: number, label: string, value: string, width: number): string[] {
  const prefix = ' '.repeat(indent) + label.padEnd(labelWidth);
  const avail = width - prefix.length;
  const lines = value.split('\n').flatMap((l) => wrap(l, avail));
  return lines.map((l, i) => (i === 0 ? prefix : ' '.repeat(prefix.length)) + l);
}

function isSummary(s: SessionRecord): s is SessionSummary {
  return typeof (s as Partial<SessionSummary>).operationCount === 'number';
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** Tables and statement types, wherever the proxy put them in the classification. */
function classificationFacts(c: Record<string, unknown>): { tables: string[]; statements: string[]; functions: string[]; copy?: string } {
  const sql = typeof c.sql === 'object' && c.sql !== null ? (c.sql as Record<string, unknown>) : {};
  const copy = typeof c.copy === 'string' ? c.copy : typeof sql.copy === 'string' ? sql.copy : undefined;
  return {
    tables: strings(c.tables),
    statements: strings(c.statementTypes).length ? strings(c.statementTypes) : strings(sql.statementTypes),
    functions: strings(c.functions),
    copy,
  };
}

function textLabel(protocol: string): string {
  switch (protocol) {
    case 'postgres':
      return 'sql';
    case 'ssh':
      return 'command';
    case 'http':
    case 'kubernetes':
      return 'request';
    default:
      return 'text';
  }
}

function decisionLabel(op: OperationRecord): string {
  return String(op.decision).toUpperCase();
}

/** `approved by alice, bob`, `rejected by carol: too broad`, `expired: nobody answered`. */
function approvalText(a: NonNullable<OperationRecord['approval']>): string {
  const who = a.approvers.length ? ` by ${a.approvers.join(', ')}` : '';
  const why = a.reason ? `: ${a.reason}` : '';
  return `${a.outcome}${who}${why} (request ${a.requestId})`;
}

function resultText(op: OperationRecord): string | undefined {
  const parts: string[] = [];
  // The server's command tag (`UPDATE 3`, `COPY 10`) says what a write did; rows count results.
  if (typeof op.classification.tag === 'string' && op.classification.tag) parts.push(clean(op.classification.tag));
  if (op.rows !== undefined) parts.push(plural(op.rows, 'row'));
  if (op.bytes !== undefined) parts.push(formatBytes(op.bytes));
  return parts.length ? parts.join(', ') : undefined;
}

function sessionDuration(s: SessionRecord): number | undefined {
  return validDate(s.endedAt) && validDate(s.startedAt) ? s.endedAt.getTime() - s.startedAt.getTime() : undefined;
}

interface Tally {
  total: number;
  allow: number;
  mask: number;
  deny: number;
  review: number;
  maskedOps: number;
  errors: number;
}

function tally(ops: OperationRecord[]): Tally {
  const t: Tally = { total: ops.length, allow: 0, mask: 0, deny: 0, review: 0, maskedOps: 0, errors: 0 };
  for (const op of ops) {
    if (op.decision === 'allow' || op.decision === 'mask' || op.decision === 'deny' || op.decision === 'review') t[op.decision]++;
    if (op.maskedColumns.length) t.maskedOps++;
    if (op.error) t.errors++;
  }
  return t;
}

function tallyText(t: Tally): string {
  if (t.total === 0) return 'none';
  const parts = [
    t.allow && `${t.allow} allowed`,
    t.mask && `${t.mask} masked`,
    t.deny && `${t.deny} denied`,
    t.review && `${t.review} held for approval`,
  ].filter(Boolean);
  const extra = [t.maskedOps && `${plural(t.maskedOps, 'result')} with masked values`, t.errors && plural(t.errors, 'error')].filter(Boolean);
  return `${t.total}: ${parts.join(', ')}${extra.length ? `; ${extra.join(', ')}` : ''}`;
}

function statementText(text: string, full: boolean, cap: number): string {
  if (full) return clean(text, true).replace(/\s+$/, '');
  const flat = oneLine(text);
  const n = displayLength(flat);
  if (n <= cap) return flat;
  return `${Array.from(flat).slice(0, cap).join('')}… (${n - cap} more characters)`;
}

// ---------------------------------------------------------------------------------------------
// Session list

/** Shortest prefix length (at least 8) that tells these ids apart. */
function idPrefixLength(ids: string[]): number {
  const longest = Math.max(0, ...ids.map((i) => i.length));
  if (longest <= 12) return longest;
  for (let len = 8; len < longest; len++) {
    const seen = new Set(ids.map((i) => i.slice(0, len)));
    if (seen.size === new Set(ids).size) return len;
  }
  return longest;
}

interface Column {
  header: string;
  cells: string[];
  right?: boolean;
}

/** Renders columns at their natural widths, shortening `shrink` columns (index -> minimum width)
 * in order while the table is wider than `width`. Returns the lines and how much still overflows. */
function renderTable(cols: Column[], width: number, shrink: [number, number][]): { lines: string[]; overflow: number } {
  const widths = cols.map((c) => Math.max(displayLength(c.header), ...c.cells.map(displayLength)));
  const total = () => widths.reduce((a, b) => a + b, 0) + 2 * (cols.length - 1);
  for (const [i, min] of shrink) {
    const over = total() - width;
    if (over <= 0) break;
    widths[i] = Math.max(Math.min(widths[i], Math.max(min, displayLength(cols[i].header))), widths[i] - over);
  }
  const row = (cells: string[]) =>
    cells
      .map((c, i) => {
        const v = ellipsize(c, widths[i]);
        const padding = ' '.repeat(Math.max(0, widths[i] - displayLength(v)));
        return cols[i].right ? padding + v : v + padding;
      })
      .join('  ')
      .trimEnd();
  const lines = [row(cols.map((c) => c.header))];
  const n = cols[0]?.cells.length ?? 0;
  for (let r = 0; r < n; r++) lines.push(row(cols.map((c) => c.cells[r])));
  return { lines, overflow: Math.max(0, total() - width) };
}

/**
 * A table of sessions, newest first as given: id (shortest unique prefix), start, duration,
 * identity, connection, client address, operation and denied counts (when the rows carry them),
 * and why the session ended. Fits `width`: first by shortening free text, then by dropping the
 * client address (shown by `sessions show`), then by dropping the seconds and year of the start.
 */
export function formatSessionList(rows: SessionRecord[], opts: FormatOptions = {}): string {
  if (rows.length === 0) return 'No sessions recorded.\n';
  const width = Math.max(MIN_WIDTH, opts.width ?? DEFAULT_WIDTH);
  const idLen = idPrefixLength(rows.map((r) => r.id));
  const counts = rows.every(isSummary);
  const layout = (client: boolean, shortStart: boolean): Column[] => [
    { header: 'ID', cells: rows.map((r) => clean(r.id.slice(0, idLen))) },
    shortStart
      ? { header: 'STARTED UTC', cells: rows.map((r) => formatTimestamp(r.startedAt).slice(5, 16)) }
      : { header: 'STARTED (UTC)', cells: rows.map((r) => formatTimestamp(r.startedAt)) },
    { header: 'DURATION', cells: rows.map((r) => (r.endedAt ? formatDuration(sessionDuration(r) ?? NaN) : 'open')), right: true },
    { header: 'IDENTITY', cells: rows.map((r) => oneLine(r.identity)) },
    { header: 'CONNECTION', cells: rows.map((r) => oneLine(r.connection)) },
    ...(client ? [{ header: 'CLIENT', cells: rows.map((r) => oneLine(r.clientAddress)) }] : []),
    { header: 'OPS', cells: rows.map((r) => (isSummary(r) ? String(r.operationCount) : '-')), right: true },
    { header: 'DENIED', cells: rows.map((r) => (isSummary(r) ? String(r.deniedCount) : '-')), right: true },
    { header: 'END', cells: rows.map((r) => (r.endedAt ? oneLine(r.endReason ?? '') || '-' : '')) },
  ];
  // Column indexes: 3 identity, 4 connection, last = end reason.
  const attempts: [Column[], [number, number][]][] = [
    [layout(true, false), [[8, 16], [3, 14], [4, 14]]],
    [layout(false, false), [[7, 10], [3, 10], [4, 10]]],
    [layout(false, true), [[7, 6], [3, 8], [4, 8]]],
  ];
  let table = renderTable(attempts[0][0], width, attempts[0][1]);
  for (const a of attempts.slice(1)) {
    if (table.overflow === 0) break;
    table = renderTable(a[0], width, a[1]);
  }
  const open = rows.filter((r) => !r.endedAt).length;
  const denied = counts ? rows.reduce((a, r) => a + (r as SessionSummary).deniedCount, 0) : 0;
  const footer = [plural(rows.length, 'session'), open ? `${open} open` : '', counts ? plural(denied, 'denied operation') : ''].filter(Boolean).join(', ');
  return `${table.lines.join('\n')}\n\n${footer}\n`;
}

// ---------------------------------------------------------------------------------------------
// One session in detail

function headerLines(s: SessionRecord, ops: OperationRecord[], width: number): string[] {
  const lw = 12;
  const lines = [`Session ${clean(s.id)}`];
  const groups = s.groups.length ? `  (groups: ${s.groups.map(oneLine).join(', ')})` : '';
  lines.push(...field(2, lw, 'identity', `${oneLine(s.identity)}${groups}`, width));
  lines.push(...field(2, lw, 'connection', `${oneLine(s.connection)}  (${oneLine(s.protocol)}, client ${oneLine(s.clientAddress)})`, width));
  lines.push(...field(2, lw, 'started', `${formatTimestamp(s.startedAt)} UTC`, width));
  if (validDate(s.endedAt)) {
    const reason = s.endReason ? `: ${oneLine(s.endReason)}` : '';
    lines.push(...field(2, lw, 'ended', `${formatTimestamp(s.endedAt)} UTC, after ${formatDuration(sessionDuration(s) ?? NaN)}${reason}`, width));
  } else {
    lines.push(...field(2, lw, 'ended', 'not yet (session open, or the gateway stopped before recording its end)', width));
  }
  lines.push(...field(2, lw, 'traffic', `${formatBytes(s.bytesToClient)} to client, ${formatBytes(s.bytesFromClient)} from client`, width));
  lines.push(...field(2, lw, 'operations', tallyText(tally(ops)), width));
  return lines;
}

function operationBlock(op: OperationRecord, protocol: string, sameDay: boolean, width: number, full: boolean): string[] {
  const when = sameDay ? formatClock(op.at) : `${formatTimestamp(op.at).slice(0, 10)} ${formatClock(op.at)}`;
  const head = [`#${op.seq}`, when, decisionLabel(op), oneLine(op.kind)];
  if (op.rule) head.push(`rule ${oneLine(op.rule)}`);
  if (op.durationMs !== undefined) head.push(formatDuration(op.durationMs));
  const lines = wrap(head.join('  '), width);
  const lw = 10;
  const add = (label: string, value: string) => lines.push(...field(4, lw, label, value, width));
  if (op.reason) add('reason', oneLine(op.reason));
  if (op.approval) add('approval', oneLine(approvalText(op.approval)));
  const facts = classificationFacts(op.classification);
  if (facts.tables.length) add('tables', facts.tables.map(oneLine).join(', '));
  if (facts.functions.length) add('functions', facts.functions.map(oneLine).join(', '));
  if (facts.copy) add('copy', oneLine(facts.copy));
  add(textLabel(protocol), statementText(op.text, full, SHORT_TEXT_CHARS) || '(empty)');
  const result = resultText(op);
  if (result) add('result', result);
  if (op.maskedColumns.length) add('masked', op.maskedColumns.map(oneLine).join(', '));
  if (op.error) add('error', full ? clean(op.error, true) : oneLine(op.error));
  // Terminal sessions (ssh shell, kubectl exec) are recorded as asciicast files: `asciinema play <file>`.
  if (typeof op.classification.recording === 'string') add('recording', oneLine(op.classification.recording));
  return lines;
}

function stableDetail(detail: Record<string, unknown>): string {
  try {
    return JSON.stringify(sortKeys(detail));
  } catch {
    return '{}';
  }
}

function auditLines(audit: AuditEvent[], width: number, full: boolean): string[] {
  const lines = [`Audit (${plural(audit.length, 'event')})`];
  for (const e of audit) {
    const head = [`  ${formatTimestamp(e.at)}`, oneLine(e.kind), oneLine(e.subject)];
    if (e.actor) head.push(`by ${oneLine(e.actor)}`);
    const detail = stableDetail(e.detail);
    const line = `${head.join('  ')}${detail === '{}' ? '' : `  ${clean(detail)}`}`;
    if (full) lines.push(...wrap(line, width).map((l, i) => (i === 0 ? l : `      ${l}`)));
    else lines.push(ellipsize(line, width));
  }
  return lines;
}

/**
 * The session header (who, where, when, how it ended, traffic, a tally of decisions), one block
 * per operation in seq order, then the audit events (approval attempts, grants) if given.
 */
export function formatSessionDetail(d: SessionDetail, audit: AuditEvent[] = [], opts: FormatOptions = {}): string {
  const width = Math.max(MIN_WIDTH, opts.width ?? DEFAULT_WIDTH);
  const full = opts.full ?? false;
  const ops = [...d.operations].sort((a, b) => a.seq - b.seq);
  const day = formatTimestamp(d.session.startedAt).slice(0, 10);
  const out = [...headerLines(d.session, ops, width), ''];
  if (ops.length === 0) out.push('No operations recorded.', '');
  else {
    out.push(`Times are UTC${ops.every((o) => formatTimestamp(o.at).startsWith(day)) ? `, on ${day}` : ''}.`, '');
    for (const op of ops) out.push(...operationBlock(op, d.session.protocol, formatTimestamp(op.at).startsWith(day), width, full), '');
  }
  if (audit.length) out.push(...auditLines(audit, width, full), '');
  return out.join('\n').replace(/\n+$/, '\n');
}

// ---------------------------------------------------------------------------------------------
// Session log for chat threads

/**
 * A compact plain-text transcript: a short header, then each operation on one line with its
 * decision and outcome, the statement indented beneath. Meant to be attached to approval threads
 * when the session ends.
 */
export function formatSessionLog(d: SessionDetail, audit: AuditEvent[] = []): string {
  const s = d.session;
  const ops = [...d.operations].sort((a, b) => a.seq - b.seq);
  const lines = [`Airlock session log ${clean(s.id)}`];
  lines.push(`identity:   ${oneLine(s.identity)}${s.groups.length ? ` (${s.groups.map(oneLine).join(', ')})` : ''}`);
  lines.push(`connection: ${oneLine(s.connection)} (${oneLine(s.protocol)}) from ${oneLine(s.clientAddress)}`);
  const ended = validDate(s.endedAt)
    ? `ended ${formatTimestamp(s.endedAt)} UTC after ${formatDuration(sessionDuration(s) ?? NaN)}${s.endReason ? ` (${oneLine(s.endReason)})` : ''}`
    : 'still open';
  lines.push(`time:       started ${formatTimestamp(s.startedAt)} UTC, ${ended}`);
  lines.push(`traffic:    ${formatBytes(s.bytesToClient)} to client, ${formatBytes(s.bytesFromClient)} from client`);
  lines.push(`operations: ${tallyText(tally(ops))}`);
  lines.push('');
  for (const op of ops) {
    const parts = [`${formatClock(op.at)} #${op.seq} ${decisionLabel(op)} ${oneLine(op.kind)}`];
    if (op.rule) parts.push(`rule ${oneLine(op.rule)}`);
    if (op.approval) parts.push(oneLine(approvalText(op.approval)));
    const result = resultText(op);
    if (result) parts.push(result);
    if (op.durationMs !== undefined) parts.push(formatDuration(op.durationMs));
    lines.push(parts.join(' | '));
    if (op.reason) lines.push(`  reason: ${oneLine(op.reason)}`);
    if (op.maskedColumns.length) lines.push(`  masked: ${op.maskedColumns.map(oneLine).join(', ')}`);
    if (op.error) lines.push(`  error: ${oneLine(op.error)}`);
    const text = statementText(op.text, true, LOG_TEXT_CHARS);
    const capped = displayLength(text) > LOG_TEXT_CHARS ? `${Array.from(text).slice(0, LOG_TEXT_CHARS).join('')}… (${displayLength(text) - LOG_TEXT_CHARS} more characters)` : text;
    lines.push(...capped.split('\n').map((l) => `  > ${l}`));
  }
  if (ops.length === 0) lines.push('(no operations)');
  if (audit.length) {
    lines.push('', 'audit:');
    for (const e of audit) {
      const detail = stableDetail(e.detail);
      lines.push(`${formatTimestamp(e.at)} ${oneLine(e.kind)} ${oneLine(e.subject)}${e.actor ? ` by ${oneLine(e.actor)}` : ''}${detail === '{}' ? '' : ` ${clean(detail)}`}`);
    }
  }
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------
// JSON

/** Objects with keys sorted at every level, so the same record always serializes identically. */
function sortKeys(v: unknown, seen = new WeakSet<object>()): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Date) return validDate(v) ? v.toISOString() : null;
  if (typeof v !== 'object' || v === null) return v === undefined ? null : v;
  if (seen.has(v)) return '[circular]';
  seen.add(v);
  if (Array.isArray(v)) return v.map((x) => sortKeys(x, seen));
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) {
    const x = (v as Record<string, unknown>)[k];
    if (x !== undefined) out[k] = sortKeys(x, seen);
  }
  return out;
}

function iso(d: Date | undefined): string | null {
  return validDate(d) ? d.toISOString() : null;
}

export interface SessionJson {
  id: string;
  protocol: string;
  identity: string;
  groups: string[];
  connection: string;
  clientAddress: string;
  startedAt: string | null;
  endedAt: string | null;
  durationMs: number | null;
  endReason: string | null;
  bytesToClient: number;
  bytesFromClient: number;
  /** Present when the record came from a listing with counts; otherwise null. */
  counts: { operations: number; denied: number; review: number; masked: number; errors: number } | null;
}

export interface OperationJson {
  seq: number;
  at: string | null;
  kind: string;
  decision: string;
  rule: string | null;
  reason: string | null;
  text: string;
  classification: unknown;
  rows: number | null;
  bytes: number | null;
  maskedColumns: string[];
  error: string | null;
  durationMs: number | null;
  approval: { requestId: string; outcome: string; approvers: string[]; reason: string | null } | null;
}

export interface AuditJson {
  at: string | null;
  kind: string;
  subject: string;
  actor: string | null;
  detail: unknown;
}

export interface SessionDetailJson {
  session: SessionJson;
  operations: OperationJson[];
  audit: AuditJson[];
}

/** One session as JSON with a fixed set of keys (absent values are null, dates ISO-8601 UTC). */
export function sessionToJson(s: SessionRecord): SessionJson {
  return {
    id: s.id,
    protocol: s.protocol,
    identity: s.identity,
    groups: [...s.groups],
    connection: s.connection,
    clientAddress: s.clientAddress,
    startedAt: iso(s.startedAt),
    endedAt: iso(s.endedAt),
    durationMs: sessionDuration(s) ?? null,
    endReason: s.endReason ?? null,
    bytesToClient: s.bytesToClient,
    bytesFromClient: s.bytesFromClient,
    counts: isSummary(s)
      ? { operations: s.operationCount, denied: s.deniedCount, review: s.reviewCount, masked: s.maskedCount, errors: s.errorCount }
      : null,
  };
}

export function operationToJson(op: OperationRecord): OperationJson {
  return {
    seq: op.seq,
    at: iso(op.at),
    kind: op.kind,
    decision: op.decision,
    rule: op.rule ?? null,
    reason: op.reason ?? null,
    text: op.text,
    classification: sortKeys(op.classification ?? {}),
    rows: op.rows ?? null,
    bytes: op.bytes ?? null,
    maskedColumns: [...op.maskedColumns],
    error: op.error ?? null,
    durationMs: op.durationMs ?? null,
    approval: op.approval
      ? { requestId: op.approval.requestId, outcome: op.approval.outcome, approvers: [...op.approval.approvers], reason: op.approval.reason ?? null }
      : null,
  };
}

export function auditToJson(e: AuditEvent): AuditJson {
  return { at: iso(e.at), kind: e.kind, subject: e.subject, actor: e.actor ?? null, detail: sortKeys(e.detail ?? {}) };
}

/** A session, its operations in seq order, and the given audit events, for `--json`. */
export function sessionDetailToJson(d: SessionDetail, audit: AuditEvent[] = []): SessionDetailJson {
  return {
    session: sessionToJson(d.session),
    operations: [...d.operations].sort((a, b) => a.seq - b.seq).map(operationToJson),
    audit: audit.map(auditToJson),
  };
}
