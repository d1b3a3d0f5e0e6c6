// Masking one value given its type class. Shared by the DataRow masker and the COPY masker.
// Values are binary strings (one char per byte); see strategies.ts.
//
// A value that cannot be masked in place becomes NULL: a masked column of a non-text type (an
// integer, a date, an array) cannot hold `[redacted]` without breaking the client's parser, so
// column rules on such columns always yield NULL, whatever the strategy; likewise a detector hit
// inside a number. json/jsonb stay valid JSON: a replacement outside a JSON string is quoted, and
// a result that no longer parses becomes NULL.
import type { DetectorName, MaskStrategy } from '../policy/decision.ts';
import { findSpans, quickCheckString } from './detectors.ts';
import { applyStrategy, type Hasher } from './strategies.ts';

/**
 * text       strings (text, varchar, char(n), name, unknown, xml, citext and other string-category
 *            types): masked in place; binary format is the same bytes.
 * json       json: in place, JSON-aware; binary format is the same bytes.
 * jsonb      in text format like json; binary format has a leading version byte (1).
 * container  arrays, composites, records: detector spans are replaced in place in text format;
 *            column rules and binary-format hits yield NULL.
 * number     integers, numeric, floats, money, oid: any hit yields NULL (binary values are decoded to check).
 * other      everything else (bool, dates, uuid, bytea, ...): column rules yield NULL; detectors only in text format.
 */
export type TypeClass = 'text' | 'json' | 'jsonb' | 'container' | 'number' | 'other';

/** Built-in type OIDs (stable across PostgreSQL versions). Anything else is asked of pg_type. */
export const BUILTIN_TYPE_CLASS: ReadonlyMap<number, TypeClass> = new Map<number, TypeClass>([
  [25, 'text'], [1043, 'text'], [1042, 'text'], [19, 'text'], [705, 'text'], [142, 'text'],
  [114, 'json'], [3802, 'jsonb'],
  [20, 'number'], [21, 'number'], [23, 'number'], [26, 'number'], [700, 'number'], [701, 'number'], [1700, 'number'], [790, 'number'],
  [16, 'other'], [17, 'other'], [18, 'other'], [1082, 'other'], [1083, 'other'], [1114, 'other'], [1184, 'other'], [1186, 'other'],
  [1266, 'other'], [2950, 'other'], [869, 'other'], [650, 'other'], [829, 'other'], [774, 'other'], [1560, 'other'], [1562, 'other'],
  [4072, 'other'], [3614, 'other'], [3615, 'other'],
  // Arrays of common types, and anonymous records.
  [1009, 'container'], [1015, 'container'], [1014, 'container'], [1003, 'container'], [199, 'container'], [3807, 'container'],
  [1005, 'container'], [1007, 'container'], [1016, 'container'], [1231, 'container'], [1021, 'container'], [1022, 'container'],
  [1000, 'container'], [1028, 'container'], [2951, 'container'], [1182, 'container'], [1115, 'container'], [1185, 'container'],
  [2249, 'container'], [2287, 'container'],
]);

/** Class of a type from its pg_type.typcategory (for types not in BUILTIN_TYPE_CLASS). */
export function classFromCategory(category: string, typname: string): TypeClass {
  if (category === 'S') return 'text';
  if (category === 'A' || category === 'C') return 'container';
  if (category === 'N') return 'number';
  if (typname === 'json') return 'json';
  if (typname === 'jsonb') return 'jsonb';
  return 'other';
}

/** Whether detectors run on a table column of this class (derived columns are always checked). */
export function isTextual(cls: TypeClass): boolean {
  return cls === 'text' || cls === 'json' || cls === 'jsonb' || cls === 'container';
}

/** Compiled detector part of a MaskPlan. */
export interface DetectorRules {
  /** detectorMask() of the enabled detectors. */
  mask: number;
  strategy: Partial<Record<DetectorName, MaskStrategy>>;
}

/** Whole-value masking for a column rule, in the type's text representation. null = SQL NULL. */
export function maskWhole(strategy: MaskStrategy, value: string, cls: TypeClass, hasher: Hasher): string | null {
  if (cls === 'text') return applyStrategy(strategy, value, hasher);
  if (cls === 'json' || cls === 'jsonb') {
    const s = applyStrategy(strategy, value, hasher);
    return s === null ? null : JSON.stringify(s);
  }
  return null;
}

export interface SpanResult {
  /** undefined: unchanged; null: SQL NULL; else the new value. */
  value: string | null | undefined;
  hits: DetectorName[];
}

const UNCHANGED: SpanResult = { value: undefined, hits: [] };

/**
 * Detector masking of a value in its text representation. `candidates` is the quick-check mask
 * (call quickCheck/quickCheckString first; 0 means nothing to do).
 */
export function maskSpans(value: string, cls: TypeClass, rules: DetectorRules, hasher: Hasher, candidates?: number): SpanResult {
  const mask = candidates ?? quickCheckString(value, rules.mask);
  if (mask === 0) return UNCHANGED;
  const spans = findSpans(value, mask);
  if (spans.length === 0) return UNCHANGED;
  const hits: DetectorName[] = [];
  for (const s of spans) if (!hits.includes(s.detector)) hits.push(s.detector);
  // A hit inside a number (or a type we cannot rewrite in place) hides the whole value.
  if (cls === 'number' || cls === 'other') return { value: null, hits };
  const json = cls === 'json' || cls === 'jsonb';
  const inString = json ? jsonStringContext(value, spans) : undefined;
  let out = '';
  let pos = 0;
  for (let i = 0; i < spans.length; i++) {
    const s = spans[i];
    const strategy = rules.strategy[s.detector] ?? 'redact';
    const original = value.slice(s.start, s.end);
    let rep = applyStrategy(strategy, original, hasher, s.detector);
    if (rep === null) return { value: null, hits };
    if (json) {
      // Partial keeps separators, which may include JSON escapes (`\n` in a PEM): use the token then.
      if (strategy === 'partial' && /[\\"]/.test(original)) rep = applyStrategy('redact', original, hasher, s.detector) as string;
      if (!inString![i]) rep = JSON.stringify(rep);
    }
    out += value.slice(pos, s.start) + rep;
    pos = s.end;
  }
  out += value.slice(pos);
  if (json && !isValidJson(out)) return { value: null, hits };
  return { value: out, hits };
}

/** For each span (sorted), whether it starts inside a JSON string literal. */
function jsonStringContext(text: string, spans: { start: number }[]): boolean[] {
  const res: boolean[] = [];
  let inStr = false;
  let i = 0;
  for (const s of spans) {
    for (; i < s.start; i++) {
      const c = text.charCodeAt(i);
      if (inStr) {
        if (c === 0x5c) i++; // skip the escaped char
        else if (c === 0x22) inStr = false;
      } else if (c === 0x22) inStr = true;
    }
    res.push(inStr);
  }
  return res;
}

function isValidJson(s: string): boolean {
  try {
    JSON.parse(s);
    return true;
  } catch {
    return false;
  }
}
