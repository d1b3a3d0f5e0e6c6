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

/** Lone UTF-16 surrogates become U+FFFD, as SQLite's UTF-8 would store them, so a stored row and
 * its chain entry can never differ by encoding alone. */
export function wellFormed(s: string): string {
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
