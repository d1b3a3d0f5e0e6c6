// The one place free text is made PII-free before the audit store keeps it. Statement text carries
// literals, errors quote values, approval reasons are typed by people: every detector runs on them,
// whatever the masking config says, because the audit trail is read by more people (auditors, chat
// threads, SIEMs) than the data it describes.
//
// Parameters: the seam records the approver-shown form (detector-masked, the same redactForAudit)
// plus parameterDigest(key, values), a keyed digest of the exact values, so an auditor holding the
// key can confirm "these were the values" without the store ever holding them.
import { createHmac } from 'node:crypto';
import type { DetectorName } from '../policy/decision.ts';
import { detectorMask, findSpans, quickCheckString } from '../masking/detectors.ts';
import { redactToken } from '../masking/strategies.ts';

const ALL: DetectorName[] = ['email', 'card', 'ssn', 'phone', 'iban', 'secret'];
const ALL_MASK = detectorMask(ALL);

/**
 * Recent results of redactForAudit for short strings. The same statement texts, table names and
 * statement types reach the audit store over and over (an agent's loop, prepared statements), and
 * the function is pure, so a bounded memo spares the detectors per record.
 */
const MEMO_MAX_ENTRIES = 4096;
const MEMO_MAX_CHARS = 2048;
const memo = new Map<string, string>();

/** `text` with every detected span replaced by `[redacted:<detector>]`. Unchanged text is returned as is. */
export function redactForAudit(input: string): string {
  if (input.length > MEMO_MAX_CHARS) return redactUncached(input);
  let out = memo.get(input);
  if (out === undefined) {
    out = redactUncached(input);
    if (memo.size >= MEMO_MAX_ENTRIES) memo.clear();
    memo.set(input, out);
  }
  return out;
}

function redactUncached(input: string): string {
  const text = wellFormed(input);
  if (text.length < 6) return text;
  // Detectors work on binary strings (one char per UTF-8 byte), like on the wire.
  const ascii = isAscii(text);
  const bin = ascii ? text : Buffer.from(text, 'utf8').toString('latin1');
  const mask = quickCheckString(bin, ALL_MASK);
  if (mask === 0) return text;
  const spans = findSpans(bin, mask);
  if (spans.length === 0) return text;
  let out = '';
  let at = 0;
  for (const s of spans) {
    out += bin.slice(at, s.start) + redactToken(s.detector);
    at = s.end;
  }
  out += bin.slice(at);
  return ascii ? out : Buffer.from(out, 'latin1').toString('utf8');
}

/**
 * Keys whose values are identities Airlock itself established (token subjects, configured approvers,
 * groups): kept as they are, since an auditor needs to know who, and an identity may well be an
 * email address. Everything else in a detail is client- or upstream-supplied and redacted.
 */
export const IDENTITY_KEYS: ReadonlySet<string> = new Set(['identity', 'owner', 'actor', 'approver', 'approvers', 'decidedBy', 'rejectedBy', 'requester', 'mention', 'groups', 'approverGroups']);

/** redactForAudit over every string (keys too) inside a JSON-able value, except identity values
 * (IDENTITY_KEYS); returns a copy (cycles become "[circular]", BigInts strings). */
export function redactDeep(v: unknown, seen: WeakSet<object> = new WeakSet(), keep = false): unknown {
  if (typeof v === 'string') return keep ? wellFormed(v) : redactForAudit(v);
  if (typeof v === 'bigint') return v.toString();
  if (typeof v !== 'object' || v === null || v instanceof Date) return v;
  if (seen.has(v)) return '[circular]';
  seen.add(v);
  let out: unknown;
  if (Array.isArray(v)) out = v.map((x) => redactDeep(x, seen, keep));
  else {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) o[redactForAudit(k)] = redactDeep(x, seen, IDENTITY_KEYS.has(k));
    out = o;
  }
  seen.delete(v);
  return out;
}

/** Thrown inside redactedJson's fast walk for anything it does not serialize itself. */
const SLOW = Symbol('slow path');
const MAX_FAST_DEPTH = 64;

/**
 * `JSON.stringify(redactDeep(v))` (what the store keeps for classifications and audit details)
 * built in one walk, without the redacted copy and without a replacer function: per audit record on
 * the writer's thread. Plain objects, arrays and primitives only; anything else (Dates, BigInts,
 * class instances, a key that redaction would change, cycles, deep nesting) takes the original two
 * steps, so the text is the same either way (test/recording/redact.test.ts compares them).
 */
export function redactedJson(v: unknown): string {
  try {
    return fastJson(v, false, 0) ?? 'null';
  } catch (e) {
    if (e !== SLOW) throw e;
    return safeJson(redactDeep(v));
  }
}

/** undefined where JSON.stringify leaves a member out. */
function fastJson(v: unknown, keep: boolean, depth: number): string | undefined {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(keep ? wellFormed(v) : redactForAudit(v));
    case 'number':
      return Number.isFinite(v) ? JSON.stringify(v) : 'null';
    case 'boolean':
      return v ? 'true' : 'false';
    case 'undefined':
      return undefined;
    case 'object':
      break;
    default:
      throw SLOW;
  }
  if (v === null) return 'null';
  if (depth >= MAX_FAST_DEPTH) throw SLOW; // also ends a cycle
  const proto = Object.getPrototypeOf(v);
  if (Array.isArray(v)) {
    if (proto !== Array.prototype) throw SLOW;
    let out = '[';
    for (let i = 0; i < v.length; i++) out += (i === 0 ? '' : ',') + (fastJson(v[i], keep, depth + 1) ?? 'null');
    return `${out}]`;
  }
  if ((proto !== Object.prototype && proto !== null) || typeof (v as { toJSON?: unknown }).toJSON === 'function') throw SLOW;
  let out = '{';
  for (const k of Object.keys(v)) {
    if (k === '__proto__' || redactForAudit(k) !== k) throw SLOW;
    const x = fastJson((v as Record<string, unknown>)[k], IDENTITY_KEYS.has(k), depth + 1);
    if (x === undefined) continue;
    out += `${out.length === 1 ? '' : ','}${JSON.stringify(k)}:${x}`;
  }
  return `${out}}`;
}

/** JSON that cannot throw: BigInts become strings, cycles become "[circular]". */
export function safeJson(v: unknown): string {
  // A list of strings (masked columns, groups) cannot hold a cycle or a BigInt: no replacer needed.
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return JSON.stringify(v);
  const seen = new WeakSet<object>();
  return JSON.stringify(v, (_k, val: unknown) => {
    if (typeof val === 'bigint') return val.toString();
    if (typeof val === 'object' && val !== null) {
      if (seen.has(val)) return '[circular]';
      seen.add(val);
    }
    return val;
  }) ?? 'null';
}

/** Lone UTF-16 surrogates become U+FFFD, as SQLite's UTF-8 would store them, so a stored row and
 * its chain entry can never differ by encoding alone. */
export function wellFormed(s: string): string {
  // ES2024's check is native (~20 ns against ~100 ns for the regex on a short string); Node 20 has it.
  const w = s as string & { isWellFormed?: () => boolean; toWellFormed?: () => string };
  if (w.isWellFormed && w.toWellFormed) return w.isWellFormed() ? s : w.toWellFormed();
  return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

/**
 * `hmac-sha256:` + hex HMAC over the exact parameter values (length-prefixed, NULL distinct from
 * empty), so the digest binds the values and their order without revealing them.
 */
export function parameterDigest(key: string | Buffer, values: ReadonlyArray<string | Uint8Array | null>): string {
  const h = createHmac('sha256', key);
  for (const v of values) {
    if (v === null) {
      h.update('N');
      continue;
    }
    const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    h.update('V').update(len).update(b);
  }
  return `hmac-sha256:${h.digest('hex')}`;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}
