// Output channels other than rows: ErrorResponse, NoticeResponse, NotificationResponse and
// ParameterStatus can all carry data to the client (`SELECT email::int` quotes the value in its
// error, `string_agg(email, ',')::int` puts a whole column in one message, a unique violation's
// DETAIL holds the key, RAISE NOTICE and pg_notify carry any text, set_config('application_name',
// email, false) is echoed as ParameterStatus). When masking is in effect these are rewritten here
// so that nothing the row masker would have hidden reaches the client another way.
//
// Strings are "binary strings" (latin1, one char per wire byte) like the detectors expect, so the
// bytes the server sent round-trip and detectors see exactly what the client would.
import { DETECTOR_PRIORITY, detectorMask, findSpans } from '../masking/detectors.ts';
import { REDACTED, redactToken } from '../masking/strategies.ts';

const ALL_DETECTORS = detectorMask(DETECTOR_PRIORITY);

/** Replaces every span any detector finds (scrubbing uses all detectors: more masking is safe). */
export function applyDetectors(s: string): string {
  const spans = findSpans(s, ALL_DETECTORS);
  if (spans.length === 0) return s;
  let out = '';
  let at = 0;
  for (const sp of spans) {
    out += s.slice(at, sp.start) + redactToken(sp.detector);
    at = sp.end;
  }
  return out + s.slice(at);
}

function isWordChar(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f || c >= 0x80;
}

/**
 * True when `v` occurs in the client's own statement text as a whole token (not inside a longer
 * word): an identifier or literal the client typed may be echoed back, a value that came out of
 * the database may not. (`"a"` from `substr(email,1,1)` is not "own" just because `email` has an a.)
 */
function clientSaid(v: string, own: string | undefined): boolean {
  if (!own || v.length === 0) return false;
  for (let i = own.indexOf(v); i >= 0; i = own.indexOf(v, i + 1)) {
    const before = i === 0 ? 0 : own.charCodeAt(i - 1);
    const after = i + v.length >= own.length ? 0 : own.charCodeAt(i + v.length);
    const startsWord = isWordChar(v.charCodeAt(0));
    const endsWord = isWordChar(v.charCodeAt(v.length - 1));
    if ((!startsWord || !isWordChar(before)) && (!endsWord || !isWordChar(after))) return true;
  }
  return false;
}

const QUOTED = /"([^"]*)"/g;

/**
 * Scrubs a server-written message (MESSAGE, HINT): double-quoted parts that the client did not
 * itself write are replaced (PostgreSQL quotes the offending value: `invalid input syntax for type
 * integer: "alice@example.com"`), `Key (...)=(...)` values are replaced, then detectors run on
 * what is left. A value may itself contain quotes (`x" y "z`), so when any quoted part is not the
 * client's own, everything from the first to the last quote is replaced as one. Some messages
 * print numbers unquoted (`requested character too large for encoding: 98765` from chr(pin),
 * `date field value out of range: 2020-98765-01`): numbers the client did not write are replaced.
 */
export function scrubMessage(s: string, own: string | undefined): string {
  s = scrubKeyValues(s);
  const first = s.indexOf('"');
  const last = s.lastIndexOf('"');
  if (first >= 0 && last > first) {
    let allOwn = true;
    QUOTED.lastIndex = 0;
    const inner = s.slice(first, last + 1);
    for (let m: RegExpExecArray | null; (m = QUOTED.exec(inner)) !== null; ) {
      if (!clientSaid(m[1], own)) {
        allOwn = false;
        break;
      }
    }
    if (!allOwn) s = s.slice(0, first) + `"${REDACTED}"` + s.slice(last + 1);
  } else if (first >= 0) {
    // A lone quote: whatever follows may be a value.
    s = s.slice(0, first) + `"${REDACTED}`;
  }
  s = s.replace(NUMBER, (n: string, at: number, all: string) => (insideQuotes(all, at) || clientSaid(n, own) ? n : REDACTED));
  return applyDetectors(s);
}

/** A free-standing number (not part of a name such as `f2` or `$1`). */
const NUMBER = /(?<![0-9A-Za-z_$])\d+(?![0-9A-Za-z_])/g;

/** Quoted parts left at this point are the client's own (checked above). */
function insideQuotes(s: string, at: number): boolean {
  let n = 0;
  for (let i = s.indexOf('"'); i >= 0 && i < at; i = s.indexOf('"', i + 1)) n++;
  return n % 2 === 1;
}

/** `Key (email)=(alice@x) already exists.` -> `Key (email)=([redacted]) ...`; `Failing row contains (...)`. */
function scrubKeyValues(s: string): string {
  return s
    .replace(/(\bKey \([^)]*\)=\().*\)/gs, `$1${REDACTED})`)
    .replace(/(\bFailing row contains \().*\)/gs, `$1${REDACTED})`);
}

/** DETAIL is kept only in the forms Airlock knows how to scrub; any other detail is dropped. */
function scrubDetail(s: string): string | undefined {
  if (/\bKey \(/.test(s) || /\bFailing row contains \(/.test(s)) return applyDetectors(scrubKeyValues(s));
  return undefined;
}

/**
 * Messages written by SQL code (plpgsql RAISE, PL/Python, PL/Perl, PL/Tcl): their text is whatever
 * the code computed, so no pattern can tell a value from prose. The server names the C routine that
 * reported the message (field R); without one the origin is unknown and treated the same.
 */
function raisedByCode(fields: ReadonlyArray<[number, string]>): boolean {
  const r = fields.find(([c]) => c === 0x52 /* R */)?.[1];
  return r === undefined || /raise|^PLy_|plperl|pltcl|elog/i.test(r);
}

const RAISED = '[redacted by Airlock: message text computed by SQL code]';

/** Reads the fields of an ErrorResponse / NoticeResponse frame ([start, end) is the whole frame). */
export function readFields(buf: Buffer, start: number, end: number): Array<[number, string]> {
  const out: Array<[number, string]> = [];
  let off = start + 5;
  while (off < end && buf[off] !== 0) {
    const code = buf[off];
    const nul = buf.indexOf(0, off + 1);
    if (nul < 0 || nul >= end) break;
    out.push([code, buf.toString('latin1', off + 1, nul)]);
    off = nul + 1;
  }
  return out;
}

function writeFields(type: number, fields: ReadonlyArray<[number, string]>): Buffer {
  let len = 4 + 1;
  for (const [, v] of fields) len += 1 + Buffer.byteLength(v, 'latin1') + 1;
  const out = Buffer.allocUnsafe(1 + len);
  out[0] = type;
  out.writeInt32BE(len, 1);
  let off = 5;
  for (const [c, v] of fields) {
    out[off++] = c;
    off += out.write(v, off, 'latin1');
    out[off++] = 0;
  }
  out[off] = 0;
  return out;
}

export interface ScrubbedNotice {
  frame: Buffer;
  /** SQLSTATE and scrubbed message, as the audit store may keep them (UTF-8 text). */
  summary: string;
}

/**
 * An ErrorResponse or NoticeResponse fit for a session where masking is in effect. Kept: severity,
 * SQLSTATE, positions, the server's file/line/routine, schema/table/column/type/constraint names
 * (through detectors). Scrubbed: MESSAGE, HINT and the known DETAIL forms. Dropped: any other
 * DETAIL, WHERE (context: function arguments, statements built by EXECUTE) and the internal
 * query. Text raised by SQL code is withheld entirely. `own` is the statement text the client sent.
 */
export function scrubNoticeFrame(buf: Buffer, start: number, end: number, own: string | undefined): ScrubbedNotice {
  const fields = readFields(buf, start, end);
  const ownBin = own === undefined ? undefined : Buffer.from(own, 'utf8').toString('latin1');
  const byCode = raisedByCode(fields);
  const kept: Array<[number, string]> = [];
  for (const [c, v] of fields) {
    switch (c) {
      case 0x53: // S severity
      case 0x56: // V
      case 0x43: // C SQLSTATE
      case 0x50: // P position
      case 0x70: // p internal position
      case 0x46: // F file
      case 0x4c: // L line
      case 0x52: // R routine
        kept.push([c, v]);
        break;
      case 0x4d: // M message
        kept.push([c, byCode ? RAISED : scrubMessage(v, ownBin)]);
        break;
      case 0x48: // H hint
        if (!byCode) kept.push([c, scrubMessage(v, ownBin)]);
        break;
      case 0x44: {
        // D detail
        const d = byCode ? undefined : scrubDetail(v);
        if (d !== undefined) kept.push([c, d]);
        break;
      }
      case 0x73: // s schema
      case 0x74: // t table
      case 0x63: // c column
      case 0x64: // d data type
      case 0x6e: // n constraint
        kept.push([c, applyDetectors(v)]);
        break;
      default:
        // W (where/context), q (internal query) and anything unknown carry data or might.
        break;
    }
  }
  if (!kept.some(([c]) => c === 0x4d)) kept.push([0x4d, RAISED]);
  const code = kept.find(([c]) => c === 0x43)?.[1] ?? '';
  const msg = kept.find(([c]) => c === 0x4d)![1];
  return { frame: writeFields(buf[start], kept), summary: Buffer.from(`${code} ${msg}`.trim(), 'latin1').toString('utf8') };
}

/**
 * A NotificationResponse with its payload replaced. The payload is arbitrary text computed by
 * SQL (`pg_notify('c', email)`, or any transformation of it): no column mask can follow it and
 * detectors cannot recognise a transformed value, so the sound choice is to redact it whole. The
 * channel name is kept: the client only hears channels it LISTENed to, by a name it wrote.
 */
export function redactNotification(buf: Buffer, start: number, end: number): Buffer {
  const pid = buf.readInt32BE(start + 5);
  const nul = buf.indexOf(0, start + 9);
  if (nul < 0 || nul >= end) throw new Error('malformed NotificationResponse from upstream');
  const channel = buf.subarray(start + 9, nul);
  const payload = Buffer.from(REDACTED, 'latin1');
  const len = 4 + 4 + channel.length + 1 + payload.length + 1;
  const out = Buffer.allocUnsafe(1 + len);
  out[0] = 0x41;
  out.writeInt32BE(len, 1);
  out.writeInt32BE(pid, 5);
  channel.copy(out, 9);
  out[9 + channel.length] = 0;
  payload.copy(out, 10 + channel.length);
  out[out.length - 1] = 0;
  return out;
}

/**
 * After startup, ParameterStatus is relayed only for parameters whose value the server controls or
 * validates to a fixed vocabulary. Free text a client can set to any value it computed
 * (application_name, search_path, anything unknown) would echo data, so changes to them are not
 * relayed: the client keeps the value it set itself at startup. TimeZone passes only as a real
 * zone name or a numeric offset (a POSIX zone spec can carry arbitrary letters).
 */
const SERVER_PARAMETERS = new Set([
  'server_version',
  'server_encoding',
  'DateStyle',
  'IntervalStyle',
  'integer_datetimes',
  'standard_conforming_strings',
  'is_superuser',
  'session_authorization',
  'default_transaction_read_only',
  'in_hot_standby',
]);

let zones: Set<string> | undefined;

function knownTimeZone(v: string): boolean {
  zones ??= new Set([...Intl.supportedValuesOf('timeZone'), 'UTC', 'GMT', 'Etc/UTC', 'Etc/GMT', 'localtime', 'Universal', 'Zulu']);
  return zones.has(v) || /^<[+-]\d{2}(?:\d{2}){0,2}>[+-]\d{1,2}(?::\d{2}){0,2}$/.test(v) || /^Etc\/GMT[+-]\d{1,2}$/.test(v);
}

export function relayParameterStatus(name: string, value: string): boolean {
  if (SERVER_PARAMETERS.has(name)) return true;
  if (name === 'TimeZone') return knownTimeZone(value);
  return false;
}

/**
 * Whether any masking is configured at all (global columns/detectors, or a rule with a mask
 * block): then every session scrubs its non-row channels from its first message on, before any
 * statement's own mask plan is known (a notification or a notice can arrive at any time).
 */
export function maskingConfigured(config: {
  masking: { columns: readonly unknown[]; detectors: readonly unknown[] };
  policy: { rules: ReadonlyArray<{ mask?: { columns: readonly unknown[]; detectors: readonly unknown[] } }> };
}): boolean {
  if (config.masking.columns.length > 0 || config.masking.detectors.length > 0) return true;
  return config.policy.rules.some((r) => !!r.mask && (r.mask.columns.length > 0 || r.mask.detectors.length > 0));
}
