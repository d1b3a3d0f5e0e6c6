// Content detectors: find sensitive spans inside a value (an email inside a sentence, a card number
// inside a JSON document). They run on "binary strings": one char per byte (latin1 decoding of the
// wire bytes), so any client_encoding round-trips losslessly and untouched bytes stay identical. All
// patterns are ASCII; bytes >= 0x80 (UTF-8 sequences) count as letters in email addresses.
//
// Every detector wants structure, not just digits, so order ids, years and timestamps do not match:
// cards need a brand prefix and a valid Luhn checksum, IBANs a valid mod-97 checksum (and the
// country's length when known), SSNs separators and valid area/group/serial, phones a leading `+`
// or NANP separators. Bare 9-digit SSNs and bare 10-digit phone numbers are NOT detected on purpose.
import type { DetectorName } from '../policy/decision.ts';

export interface Span {
  start: number;
  end: number;
  detector: DetectorName;
}

/** Order matters: when spans overlap, the earlier detector wins (a JWT beats the digits inside it). */
export const DETECTOR_PRIORITY: readonly DetectorName[] = ['secret', 'email', 'iban', 'card', 'ssn', 'phone'];

const BIT: Record<DetectorName, number> = { email: 1, card: 2, ssn: 4, phone: 8, iban: 16, secret: 32 };

/** A set of detectors as a bit mask, for cheap per-value checks. */
export function detectorMask(names: Iterable<DetectorName>): number {
  let m = 0;
  for (const n of names) m |= BIT[n];
  return m;
}

/** Byte classes for quickCheck: 0 other, 1 digit, 2 separator inside a digit run, 3 other but a pattern's key byte. */
const QC_CLASS = new Uint8Array(256);
for (let c = 0x30; c <= 0x39; c++) QC_CLASS[c] = 1;
for (const c of ' -.()') QC_CLASS[c.charCodeAt(0)] = 2;
for (const c of '@+JKSI_') QC_CLASS[c.charCodeAt(0)] = 3;

/**
 * Which of the `enabled` detectors could possibly match bytes[start, end): one pass counting digits
 * and looking for the few bytes each pattern cannot do without ('@', a `+`, two capitals before two
 * digits, secret prefixes), so most values never reach a regex.
 */
export function quickCheck(buf: Uint8Array, start: number, end: number, enabled: number): number {
  if (end - start < 6 || enabled === 0) return 0;
  // Only the email detector: its one requirement is an '@', so skip the digit-run and prefix
  // bookkeeping the other detectors need (the same answer as the full loop below, for email).
  if (enabled === BIT.email) {
    for (let i = start; i < end; i++) if (buf[i] === 0x40) return BIT.email;
    return 0;
  }
  // Longest run of digits joined by at most three separators in a row (' ', '-', '.', '(', ')'):
  // cards, SSNs and phones are such runs, so the digit total of a long text does not matter.
  // (Three, not two: an international number may join groups as `)-(`, e.g. +1(234)-(567)-(890),
  // which round 2's limit of two split into short runs, so such a phone was never looked for.)
  // Most bytes are class 0 (one table load and a reset); the pattern hints look back at the
  // previous bytes only when a key byte shows up.
  let run = 0;
  let maxRun = 0;
  let gap = 0;
  let at = false;
  let plus = false;
  let ibanHint = false;
  let secretHint = false;
  for (let i = start; i < end; i++) {
    const c = buf[i];
    const k = QC_CLASS[c];
    if (k === 0) {
      run = 0;
    } else if (k === 1) {
      if (gap > MAX_GAP) run = 0;
      gap = 0;
      if (++run > maxRun) maxRun = run;
      // IBAN: [A-Z]{2}[0-9]{2}
      if (run > 1 && !ibanHint && i - 3 >= start) {
        const p1 = buf[i - 1];
        const p2 = buf[i - 2];
        const p3 = buf[i - 3];
        if (p1 >= 0x30 && p1 <= 0x39 && p2 >= 0x41 && p2 <= 0x5a && p3 >= 0x41 && p3 <= 0x5a) ibanHint = true;
      }
    } else if (k === 2) {
      gap++;
      // xox?- (Slack), ----- (PEM)
      if (c === 0x2d && !secretHint && i - 4 >= start) {
        const p1 = buf[i - 1];
        const p2 = buf[i - 2];
        const p3 = buf[i - 3];
        const p4 = buf[i - 4];
        if ((p2 === 0x78 && p3 === 0x6f && p4 === 0x78) || (p1 === 0x2d && p2 === 0x2d && p3 === 0x2d && p4 === 0x2d)) secretHint = true;
      }
    } else {
      run = 0;
      if (c === 0x40) at = true;
      else if (c === 0x2b) plus = true;
      else if (!secretHint) {
        const p1 = i - 1 >= start ? buf[i - 1] : 0;
        const p2 = i - 2 >= start ? buf[i - 2] : 0;
        if (c === 0x4a) {
          if (p1 === 0x79 && p2 === 0x65) secretHint = true; // eyJ (JWT)
        } else if (c === 0x5f) {
          // ghp_ (gh[pousr]_), github_, sk_live_ / rk_live_
          const p3 = i - 3 >= start ? buf[i - 3] : 0;
          if ((p2 === 0x68 && p3 === 0x67) || (p1 === 0x62 && p2 === 0x75) || (p1 === 0x6b && (p2 === 0x73 || p2 === 0x72)) || (p1 === 0x65 && p2 === 0x76)) secretHint = true;
        } else if (p1 === 0x41) secretHint = true; // AKIA, ASIA, AIza (c is K, S or I)
      }
    }
  }
  let m = 0;
  if (at) m |= BIT.email;
  if (maxRun >= 13) m |= BIT.card;
  if (maxRun >= 9) m |= BIT.ssn;
  if (maxRun >= 10 || (plus && maxRun >= 8)) m |= BIT.phone;
  if (ibanHint && end - start >= 15) m |= BIT.iban;
  if (secretHint && end - start >= MIN_SECRET) m |= BIT.secret;
  return m & enabled;
}

/** Most separators between two digits of one detector match (`)-(` in an international phone). */
const MAX_GAP = 3;
/**
 * Shortest text SECRET_RE matches: a Slack token `xoxb-` + 10 chars (a JWT is 16, a Stripe key
 * 18). Round 2 required 20, so shorter tokens the regex masks were never looked for.
 */
const MIN_SECRET = 15;

/** Same as quickCheck, for a binary string. */
export function quickCheckString(s: string, enabled: number): number {
  if (s.length < 6 || enabled === 0) return 0;
  return quickCheck(Buffer.from(s, 'latin1'), 0, s.length, enabled);
}

// ---------------------------------------------------------------------------------------------
// Regexes (compiled once; `g` + lastIndex reset per use). Lookbehinds pin matches to token starts,
// which also keeps the email regex linear on long runs without '@'.

const EMAIL_RE =
  /(?<![A-Za-z0-9._%+\-\x80-\xff])[A-Za-z0-9_%+\-\x80-\xff](?:[A-Za-z0-9._%+\-\x80-\xff]{0,63})@(?:[A-Za-z0-9\x80-\xff](?:[A-Za-z0-9\-\x80-\xff]{0,61}[A-Za-z0-9\x80-\xff])?\.)+[A-Za-z\x80-\xff][A-Za-z\x80-\xff]{1,62}(?![A-Za-z0-9\-\x80-\xff])/g;

// 13-19 digits, single spaces or dashes allowed between digits.
const CARD_RE = /(?<![0-9A-Za-z])[0-9](?:[ -]?[0-9]){12,22}(?![0-9A-Za-z])/g;

const SSN_RE = /(?<![0-9A-Za-z-])([0-9]{3})([- ])([0-9]{2})\2([0-9]{4})(?![0-9A-Za-z-])/g;

// NANP with separators: (415) 555-2671, 415-555-2671, 415.555.2671, 415 555 2671, +1 415 555 2671, 1-415-555-2671.
const NANP_RE =
  /(?<![0-9A-Za-z+])(?:\+?1[ .-]?)?(?:\([2-9][0-9]{2}\)[ .-]?|[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}(?![0-9A-Za-z])/g;
// E.164-ish international: a `+`, a country code, then digit groups with single separators.
const INTL_RE = /(?<![0-9A-Za-z+])\+[1-9][0-9]{0,3}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,6})){1,7}(?![0-9A-Za-z])/g;

const IBAN_RE = /(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])/g;

const SECRET_RE = new RegExp(
  [
    // JWT / JWS: base64url header and payload that both start with `{"`.
    String.raw`eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`,
    // AWS access key ids (long-term and STS).
    String.raw`(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])`,
    // GitHub tokens.
    String.raw`(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,251}`,
    String.raw`(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,255}`,
    // Slack tokens.
    String.raw`(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,}`,
    // Stripe live secret / restricted keys.
    String.raw`(?<![A-Za-z0-9])[sr]k_live_[A-Za-z0-9]{10,}`,
    // Google API keys.
    String.raw`(?<![A-Za-z0-9])AIza[0-9A-Za-z_-]{35}`,
    // PEM / PGP private keys; a key without its END line is masked to the end of the value.
    String.raw`-----BEGIN[A-Z0-9 ]* PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END[A-Z0-9 ]* PRIVATE KEY(?: BLOCK)?-----|$)`,
  ].join('|'),
  'g',
);

// ---------------------------------------------------------------------------------------------
// Checksums and structural rules.

/** Luhn (mod 10) over a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return false;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return digits.length > 0 && sum % 10 === 0;
}

/** A plausible payment card: a known brand prefix with that brand's length (13-19 digits), valid Luhn. */
export function isCardNumber(digits: string): boolean {
  const n = digits.length;
  if (n < 13 || n > 19) return false;
  const d1 = digits.charCodeAt(0) - 48;
  const d2 = Number(digits.slice(0, 2));
  const d4 = Number(digits.slice(0, 4));
  let brand: boolean;
  if (d1 === 4) brand = n === 13 || n === 16 || n === 19; // Visa
  else if ((d2 >= 51 && d2 <= 55) || (d4 >= 2221 && d4 <= 2720)) brand = n === 16; // Mastercard
  else if (d2 === 34 || d2 === 37) brand = n === 15; // Amex
  else if (d2 === 36 || d2 === 38 || d2 === 39 || (d4 >= 3000 && d4 <= 3059)) brand = n >= 14; // Diners
  else if (d4 >= 3528 && d4 <= 3589) brand = n >= 16; // JCB
  else brand = d2 === 50 || (d2 >= 56 && d2 <= 69); // Discover, UnionPay, Maestro, RuPay...
  return brand && luhnValid(digits);
}

/** US SSN area/group/serial rules: no 000/666/9xx area, no 00 group, no 0000 serial. */
export function ssnValid(area: string, group: string, serial: string): boolean {
  const a = Number(area);
  if (a === 0 || a === 666 || a >= 900) return false;
  if (Number(group) === 0) return false;
  if (Number(serial) === 0) return false;
  return true;
}

/** IBAN length per country (ISO 13616 registry); unknown countries are accepted at 15-34 chars. */
const IBAN_LENGTHS: Record<string, number> = {
  AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BI: 27, BR: 29, BY: 28, CH: 21, CR: 22, CY: 28,
  CZ: 24, DE: 22, DJ: 27, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18, FK: 18, FO: 18, FR: 27, GB: 22, GE: 22, GI: 23,
  GL: 18, GR: 27, GT: 28, HN: 28, HR: 21, HU: 28, IE: 22, IL: 23, IQ: 23, IS: 26, IT: 27, JO: 30, KW: 30, KZ: 20, LB: 28,
  LC: 32, LI: 21, LT: 20, LU: 20, LV: 21, LY: 25, MC: 27, MD: 24, ME: 22, MK: 19, MN: 20, MR: 27, MT: 31, MU: 30, NI: 28,
  NL: 18, NO: 15, OM: 23, PK: 24, PL: 28, PS: 29, PT: 25, QA: 29, RO: 24, RS: 22, RU: 33, SA: 24, SC: 31, SD: 18, SE: 24,
  SI: 19, SK: 24, SM: 27, SO: 23, ST: 25, SV: 28, TL: 23, TN: 24, TR: 26, UA: 29, VA: 22, VG: 24, XK: 20, YE: 30,
};

/** ISO 7064 mod 97-10 over a compact IBAN (no spaces). */
export function ibanValid(iban: string): boolean {
  const s = iban.toUpperCase();
  if (!/^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$/.test(s)) return false;
  const expected = IBAN_LENGTHS[s.slice(0, 2)];
  if (expected !== undefined && expected !== s.length) return false;
  const rearranged = s.slice(4) + s.slice(0, 4);
  let rem = 0;
  for (let i = 0; i < rearranged.length; i++) {
    const c = rearranged.charCodeAt(i);
    if (c <= 57) rem = (rem * 10 + (c - 48)) % 97;
    else rem = (rem * 100 + (c - 55)) % 97;
  }
  return rem === 1;
}

// ---------------------------------------------------------------------------------------------

/**
 * All non-overlapping sensitive spans in `text` for the detectors in `mask` (see detectorMask),
 * sorted by position. Callers normally pass `quickCheckString(text, enabled)` as the mask.
 */
export function findSpans(text: string, mask: number): Span[] {
  // Plain loops, no per-call closures: this runs per value on the result hot path (and tsx's
  // keepNames would add a defineProperty call for every named closure).
  const found: Span[] = [];
  if (mask === 0) return found;
  let m: RegExpExecArray | null;
  if (mask & BIT.secret) {
    SECRET_RE.lastIndex = 0;
    while ((m = SECRET_RE.exec(text)) !== null) addSpan(found, m.index, m.index + m[0].length, 'secret');
  }
  if (mask & BIT.email) {
    EMAIL_RE.lastIndex = 0;
    while ((m = EMAIL_RE.exec(text)) !== null) addSpan(found, m.index, m.index + m[0].length, 'email');
  }
  if (mask & BIT.iban) {
    IBAN_RE.lastIndex = 0;
    while ((m = IBAN_RE.exec(text)) !== null) {
      const len = ibanSpan(m[0]);
      if (len > 0) addSpan(found, m.index, m.index + len, 'iban');
    }
  }
  if (mask & BIT.card) {
    CARD_RE.lastIndex = 0;
    while ((m = CARD_RE.exec(text)) !== null) for (const [s, e] of cardSpans(m[0])) addSpan(found, m.index + s, m.index + e, 'card');
  }
  if (mask & BIT.ssn) {
    SSN_RE.lastIndex = 0;
    while ((m = SSN_RE.exec(text)) !== null) if (ssnValid(m[1], m[3], m[4])) addSpan(found, m.index, m.index + m[0].length, 'ssn');
  }
  if (mask & BIT.phone) {
    NANP_RE.lastIndex = 0;
    while ((m = NANP_RE.exec(text)) !== null) addSpan(found, m.index, m.index + m[0].length, 'phone');
    INTL_RE.lastIndex = 0;
    while ((m = INTL_RE.exec(text)) !== null) {
      const len = intlPhoneLength(m[0]);
      if (len > 0) addSpan(found, m.index, m.index + len, 'phone');
    }
  }
  if (found.length > 1) found.sort(byStart);
  return found;
}

function byStart(a: Span, b: Span): number {
  return a.start - b.start;
}

/** Adds a span unless it overlaps one found by a higher-priority detector. */
function addSpan(found: Span[], start: number, end: number, detector: DetectorName): void {
  for (const s of found) if (start < s.end && s.start < end) return;
  found.push({ start, end, detector });
}

/**
 * Card candidates in a run of digit groups: the whole run when valid, else any sub-run of whole
 * groups (so "4242 4242 4242 4242 123" still finds the card in front of the trailing number).
 */
function cardSpans(run: string): Array<[number, number]> {
  const digits = run.replace(/[ -]/g, '');
  if (isCardNumber(digits)) return [[0, run.length]];
  // Group boundaries: [start, end) of each separator-delimited group.
  const groups: Array<[number, number]> = [];
  let gs = 0;
  for (let i = 0; i <= run.length; i++) {
    if (i === run.length || run[i] === ' ' || run[i] === '-') {
      if (i > gs) groups.push([gs, i]);
      gs = i + 1;
    }
  }
  const out: Array<[number, number]> = [];
  if (groups.length < 2) return out;
  let i = 0;
  while (i < groups.length) {
    let hit = false;
    // Prefer the longest sub-run starting at group i.
    for (let j = groups.length - 1; j >= i; j--) {
      if (i === 0 && j === groups.length - 1) continue;
      const s = groups[i][0];
      const e = groups[j][1];
      const d = run.slice(s, e).replace(/[ -]/g, '');
      if (d.length < 13) break;
      if (isCardNumber(d)) {
        out.push([s, e]);
        i = j + 1;
        hit = true;
        break;
      }
    }
    if (!hit) i++;
  }
  return out;
}

/** Length of the IBAN at the start of `cand` (spaces allowed), or 0 when none is valid. */
function ibanSpan(cand: string): number {
  const compactAt: number[] = []; // compactAt[k] = index in cand just after the k-th (1-based) alnum char
  for (let i = 0; i < cand.length; i++) if (cand[i] !== ' ') compactAt.push(i + 1);
  const compact = cand.replace(/ /g, '');
  const expected = IBAN_LENGTHS[compact.slice(0, 2)];
  const ends = expected !== undefined ? [expected] : range(Math.min(compact.length, 34), 15);
  for (const n of ends) {
    if (n > compact.length) continue;
    const end = compactAt[n - 1];
    // The IBAN must end at a group boundary: the end of the candidate or a space.
    if (end !== cand.length && cand[end] !== ' ') continue;
    if (ibanValid(compact.slice(0, n))) return end;
  }
  return 0;
}

function range(from: number, downTo: number): number[] {
  const r: number[] = [];
  for (let i = from; i >= downTo; i--) r.push(i);
  return r;
}

/** An international number must have 8-15 digits (E.164); trailing groups beyond 15 are dropped. */
function intlPhoneLength(m: string): number {
  let end = m.length;
  for (;;) {
    const digits = m.slice(0, end).replace(/[^0-9]/g, '').length;
    const opens = m.slice(0, end).split('(').length;
    const closes = m.slice(0, end).split(')').length;
    if (digits <= 15 && opens === closes) return digits >= 8 ? end : 0;
    const cut = Math.max(m.lastIndexOf(' ', end - 1), m.lastIndexOf('-', end - 1), m.lastIndexOf('.', end - 1));
    if (cut <= 0) return 0;
    end = cut;
  }
}
