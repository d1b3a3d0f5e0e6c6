// Masking strategies. Values are "binary strings" (one char per wire byte, latin1), so hashing is
// over the exact bytes the server sent and untouched bytes round-trip in any client_encoding.
//
//   redact   whole column: `[redacted]`; a detected span: `[redacted:<detector>]` (e.g. `[redacted:email]`)
//   partial  every letter/digit becomes `*` except the last 4, separators (`-`, `@`, `.`, space, ...)
//            keep their place: `4242-4242-4242-4242` -> `****-****-****-4242`. Values with fewer
//            than 8 letters/digits are masked entirely (keeping 4 of 6 would reveal the value).
//            A multi-byte UTF-8 character counts as one letter and becomes one `*`.
//   hash     `h:` + the first 16 hex chars of HMAC-SHA256(key, value bytes): deterministic per key,
//            so masked values still join and group, but cannot be reversed or precomputed.
//   null     SQL NULL (for a detected span: the whole value becomes NULL).
import { createHmac } from 'node:crypto';
import type { DetectorName, MaskStrategy } from '../policy/decision.ts';

export const REDACTED = '[redacted]';

export function redactToken(detector?: DetectorName): string {
  return detector ? `[redacted:${detector}]` : REDACTED;
}

/** How restrictive a strategy is, to pick one when several rules mask the same thing. */
export const STRATEGY_STRENGTH: Record<MaskStrategy, number> = { partial: 0, hash: 1, redact: 2, null: 3 };

export function strongest(a: MaskStrategy, b: MaskStrategy): MaskStrategy {
  return STRATEGY_STRENGTH[a] >= STRATEGY_STRENGTH[b] ? a : b;
}

function isAsciiAlnum(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/** See `partial` above. Input and output are binary strings. */
export function partialMask(value: string): string {
  // Count maskable characters: ASCII letters/digits and UTF-8 lead bytes (continuations belong to their lead).
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (isAsciiAlnum(c) || c >= 0xc0 || (c >= 0x80 && !isContinuation(value, i))) n++;
  }
  const keep = n >= 8 ? 4 : 0;
  const maskCount = n - keep;
  let out = '';
  let seen = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 0x80 && c < 0xc0 && isContinuation(value, i)) {
      // Continuation byte: dropped if its character was masked, kept otherwise.
      if (seen > maskCount) out += value[i];
      continue;
    }
    if (isAsciiAlnum(c) || c >= 0x80) {
      seen++;
      out += seen <= maskCount ? '*' : value[i];
    } else {
      out += value[i];
    }
  }
  return out;
}

/** A 0x80-0xBF byte that follows a UTF-8 lead or another continuation (so it is part of a character). */
function isContinuation(s: string, i: number): boolean {
  for (let j = i - 1; j >= 0 && j >= i - 3; j--) {
    const p = s.charCodeAt(j);
    if (p >= 0xc0) return true;
    if (p < 0x80) return false;
  }
  return false;
}

export class Hasher {
  readonly #key: Buffer;
  constructor(key: string) {
    if (!key) throw new Error('masking: hashKey must be a non-empty secret (it keys the HMAC of the hash strategy)');
    this.#key = Buffer.from(key, 'utf8');
  }
  /** `h:` + 16 hex chars of HMAC-SHA256 over the value's bytes (binary string). */
  hash(value: string): string {
    return 'h:' + createHmac('sha256', this.#key).update(Buffer.from(value, 'latin1')).digest('hex').slice(0, 16);
  }
}

/**
 * Apply a strategy to a whole value or a detected span. Returns null for SQL NULL.
 * `detector` selects the redact token (`[redacted:email]` for spans, `[redacted]` for columns).
 */
export function applyStrategy(strategy: MaskStrategy, value: string, hasher: Hasher, detector?: DetectorName): string | null {
  switch (strategy) {
    case 'redact':
      return redactToken(detector);
    case 'partial':
      return partialMask(value);
    case 'hash':
      return hasher.hash(value);
    case 'null':
      return null;
  }
}
