// Masking of JSON documents (HTTP and Kubernetes responses) by field paths and content detectors.
//
// Field path syntax: segments separated by `.`; `*` is any key or array element; a segment with
// dots or other specials is quoted: `metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]`.
// Arrays are transparent: `items.email` masks `email` in every element of `items` (so one path
// covers an object and a list of them). A path that ends on an object or array masks every leaf
// beneath it, keeping the document's shape.
//
// Values: strings get the strategy (redact -> "[redacted]", partial, hash); numbers and booleans
// become the redact token (or null for `null`), since a number cannot hold a mask. Detectors run
// on every remaining string value, through the same span masking as PostgreSQL text columns, on
// numbers (a card number sent as a JSON number becomes the detector's token, a string) and on
// object keys (an email used as a key is replaced; colliding masked keys get `#2`, `#3` ...).
//
// Depth: documents nested deeper than MAX_JSON_DEPTH are refused (JsonDepthError) before any
// walk, so no response can exhaust the stack; callers fail closed (502).
import type { DetectorName, MaskStrategy } from '../policy/decision.ts';
import { detectorMask, quickCheckString } from '../masking/detectors.ts';
import { applyStrategy, STRATEGY_STRENGTH, type Hasher } from '../masking/strategies.ts';
import { maskSpans, type DetectorRules } from '../masking/value.ts';

export interface FieldMask {
  path: string;
  strategy: MaskStrategy;
  rule: string;
  /** `base64`: the value is base64 (Kubernetes Secret `data`): decoded, masked, re-encoded, so typed clients still decode it. */
  encoding?: 'base64';
}

export interface JsonMaskPlan {
  fields: FieldMask[];
  detectors: Array<{ detector: DetectorName; strategy: MaskStrategy; rule: string }>;
}

interface CompiledField {
  segments: string[];
  strategy: MaskStrategy;
  base64: boolean;
}

const CARD_BIT = detectorMask(['card']);

export class FieldPathError extends Error {}

/** Deeper than any real API document (Kubernetes objects stay under ~30 levels). */
export const MAX_JSON_DEPTH = 256;

export class JsonDepthError extends Error {
  constructor(readonly limit: number) {
    super(`the JSON document is nested deeper than ${limit} levels, so Airlock cannot mask it; it was withheld`);
  }
}

/** Whether `doc` nests deeper than `limit` (iterative: cannot overflow the stack itself). */
export function jsonDeeperThan(doc: unknown, limit: number): boolean {
  if (doc === null || typeof doc !== 'object') return false;
  // Two parallel stacks (node, its depth): no pair allocated per node; leaves are never pushed.
  const nodes: object[] = [doc];
  const depths: number[] = [1];
  while (nodes.length > 0) {
    const v = nodes.pop()!;
    const d = depths.pop()!;
    if (d > limit) return true;
    const children = Array.isArray(v) ? v : Object.values(v);
    for (let i = 0; i < children.length; i++) {
      const c: unknown = children[i];
      if (c !== null && typeof c === 'object') {
        nodes.push(c);
        depths.push(d + 1);
      }
    }
  }
  return false;
}

/** Parses `a.b["c.d"].*` into segments. */
export function parseFieldPath(path: string): string[] {
  const out: string[] = [];
  let i = 0;
  let cur = '';
  const push = () => {
    if (cur === '') throw new FieldPathError(`empty segment in field path ${JSON.stringify(path)}`);
    out.push(cur);
    cur = '';
  };
  while (i < path.length) {
    const c = path[i];
    if (c === '.') {
      push();
      i++;
    } else if (c === '[') {
      if (cur !== '') push();
      const m = /^\[("(?:[^"\\]|\\.)*"|\*|\d+)\]/.exec(path.slice(i));
      if (!m) throw new FieldPathError(`bad bracket segment in field path ${JSON.stringify(path)}: expected ["key"], [*] or [N]`);
      out.push(m[1].startsWith('"') ? (JSON.parse(m[1]) as string) : m[1]);
      i += m[0].length;
      if (path[i] === '.') i++;
      else if (i < path.length && path[i] !== '[') throw new FieldPathError(`expected "." after ] in field path ${JSON.stringify(path)}`);
    } else {
      cur += c;
      i++;
    }
  }
  if (cur !== '' || out.length === 0) push();
  return out;
}

/** JS string <-> binary string (one char per UTF-8 byte), the masking layer's representation. */
function toBinary(s: string): string {
  return /^[\x00-\x7f]*$/.test(s) ? s : Buffer.from(s, 'utf8').toString('latin1');
}
function fromBinary(s: string): string {
  return /^[\x00-\x7f]*$/.test(s) ? s : Buffer.from(s, 'latin1').toString('utf8');
}

export class JsonMasker {
  readonly #fields: CompiledField[];
  readonly #rules: DetectorRules;
  readonly #hasher: Hasher;
  /** Names of the rules whose masks this masker applies (for refusals). */
  readonly rules: string[];

  constructor(plan: JsonMaskPlan, hasher: Hasher) {
    this.rules = [...new Set([...plan.fields.map((f) => f.rule), ...plan.detectors.map((d) => d.rule)])];
    this.#fields = plan.fields.map((f) => ({ segments: parseFieldPath(f.path), strategy: f.strategy, base64: f.encoding === 'base64' }));
    const strategy: Partial<Record<DetectorName, MaskStrategy>> = {};
    for (const d of plan.detectors) {
      const prev = strategy[d.detector];
      if (!prev || STRATEGY_STRENGTH[d.strategy] > STRATEGY_STRENGTH[prev]) strategy[d.detector] = d.strategy;
    }
    this.#rules = { mask: detectorMask(plan.detectors.map((d) => d.detector)), strategy };
    this.#hasher = hasher;
  }

  get empty(): boolean {
    return this.#fields.length === 0 && this.#rules.mask === 0;
  }

  /** Content detectors apply (they also read header values and text; field masks do not). */
  get hasDetectors(): boolean {
    return this.#rules.mask !== 0;
  }

  /** Field masks apply (only JSON can be masked then; text bodies cannot). */
  get hasFields(): boolean {
    return this.#fields.length > 0;
  }

  /** Masks `doc` in place and returns it (the root may be replaced), with what was masked. Throws JsonDepthError on documents too deep to walk. */
  mask(doc: unknown): { value: unknown; masked: string[] } {
    if (jsonDeeperThan(doc, MAX_JSON_DEPTH)) throw new JsonDepthError(MAX_JSON_DEPTH);
    const masked = new Set<string>();
    const box = { root: doc };
    for (const f of this.#fields) this.#applyField(box, 'root', f.segments, 0, f, '', masked);
    if (this.#rules.mask !== 0) box.root = this.#detect(box.root, '', masked);
    return { value: box.root, masked: [...masked].slice(0, 200) };
  }

  #applyField(parent: Record<string, unknown> | unknown[], key: string | number, segs: string[], at: number, f: CompiledField, where: string, masked: Set<string>): void {
    const v = (parent as Record<string | number, unknown>)[key];
    if (at === segs.length) {
      if (v === undefined || v === null) return;
      (parent as Record<string | number, unknown>)[key] = this.#maskAll(v, f.strategy, f.base64);
      masked.add(where || '$');
      return;
    }
    const seg = segs[at];
    if (Array.isArray(v)) {
      if (/^\d+$/.test(seg)) {
        const i = Number(seg);
        if (i < v.length) this.#applyField(v, i, segs, at + 1, f, `${where}[${i}]`, masked);
        return;
      }
      // `*` consumes the array level; any other segment sees through it.
      const next = seg === '*' ? at + 1 : at;
      for (let i = 0; i < v.length; i++) this.#applyField(v, i, segs, next, f, `${where}[${i}]`, masked);
      return;
    }
    if (v === null || typeof v !== 'object') return;
    const obj = v as Record<string, unknown>;
    if (seg === '*') {
      for (const k of Object.keys(obj)) this.#applyField(obj, k, segs, at + 1, f, where ? `${where}.${k}` : k, masked);
    } else if (Object.hasOwn(obj, seg)) {
      this.#applyField(obj, seg, segs, at + 1, f, where ? `${where}.${seg}` : seg, masked);
    }
  }

  #maskAll(v: unknown, strategy: MaskStrategy, base64 = false): unknown {
    if (v === null) return null;
    if (Array.isArray(v)) return v.map((x) => this.#maskAll(x, strategy, base64));
    if (typeof v === 'object') {
      const o = v as Record<string, unknown>;
      for (const k of Object.keys(o)) o[k] = this.#maskAll(o[k], strategy, base64);
      return o;
    }
    if (typeof v === 'string' && base64) {
      const r = applyStrategy(strategy, Buffer.from(v, 'base64').toString('latin1'), this.#hasher);
      return r === null ? null : Buffer.from(r, 'latin1').toString('base64');
    }
    if (typeof v === 'string') {
      const r = applyStrategy(strategy, toBinary(v), this.#hasher);
      return r === null ? null : fromBinary(r);
    }
    // numbers, booleans: cannot be masked in place
    const r = applyStrategy(strategy === 'partial' ? 'redact' : strategy, String(v), this.#hasher);
    return r;
  }

  #detect(v: unknown, where: string, masked: Set<string>): unknown {
    if (typeof v === 'string') {
      const bin = toBinary(v);
      const cand = quickCheckString(bin, this.#rules.mask);
      if (cand === 0) return v;
      const r = maskSpans(bin, 'text', this.#rules, this.#hasher, cand);
      if (r.value === undefined) return v;
      for (const h of r.hits) masked.add(`detector:${h}@${where || '$'}`);
      return r.value === null ? null : fromBinary(r.value);
    }
    if (typeof v === 'number') {
      // A card number as a JSON number: masked to the detector's token (a string).
      const text = Number.isInteger(v) ? BigInt(v).toString() : String(v);
      if (Number.isInteger(v) && !Number.isSafeInteger(v) && (this.#rules.mask & CARD_BIT) !== 0) {
        // Parsing already rounded it: its digits cannot be checked, so a card-length integer is masked.
        masked.add(`detector:card@${where || '$'}`);
        return applyStrategy(this.#rules.strategy.card === 'partial' ? 'redact' : (this.#rules.strategy.card ?? 'redact'), text, this.#hasher, 'card');
      }
      const cand = quickCheckString(text, this.#rules.mask);
      if (cand === 0) return v;
      const r = maskSpans(text, 'text', this.#rules, this.#hasher, cand);
      if (r.value === undefined) return v;
      for (const h of r.hits) masked.add(`detector:${h}@${where || '$'}`);
      return r.value;
    }
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) v[i] = this.#detect(v[i], `${where}[${i}]`, masked);
      return v;
    }
    if (v !== null && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      let renamed: Map<string, string> | undefined;
      for (const k of Object.keys(o)) {
        o[k] = this.#detect(o[k], where ? `${where}.${k}` : k, masked);
        const mk = this.#maskKey(k, where, masked);
        if (mk !== k) (renamed ??= new Map()).set(k, mk);
      }
      if (!renamed) return o;
      // Rebuild in order with masked keys; colliding masked keys are numbered, never merged.
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(o)) {
        let nk = renamed.get(k) ?? k;
        if (Object.hasOwn(out, nk)) {
          let n = 2;
          while (Object.hasOwn(out, `${nk}#${n}`)) n++;
          nk = `${nk}#${n}`;
        }
        out[nk] = o[k];
      }
      return out;
    }
    return v;
  }

  /** An object key with detector hits, masked (a null strategy on a key redacts). */
  #maskKey(k: string, where: string, masked: Set<string>): string {
    const bin = toBinary(k);
    const cand = quickCheckString(bin, this.#rules.mask);
    if (cand === 0) return k;
    const r = maskSpans(bin, 'text', this.#rules, this.#hasher, cand);
    if (r.value === undefined) return k;
    for (const h of r.hits) masked.add(`detector:${h}@${where ? `${where}.` : ''}<key>`);
    return r.value === null ? '[redacted]' : fromBinary(r.value);
  }

  /** Detector masking of a plain-text body (text/*): spans replaced in place. */
  maskText(text: string): { value: string; masked: string[] } {
    if (this.#rules.mask === 0) return { value: text, masked: [] };
    const bin = toBinary(text);
    const r = maskSpans(bin, 'text', this.#rules, this.#hasher);
    if (r.value === undefined) return { value: text, masked: [] };
    // A null strategy on a span would drop the whole body; redact instead, never leak.
    const value = r.value === null ? '[redacted]' : fromBinary(r.value);
    return { value, masked: r.hits.map((h) => `detector:${h}`) };
  }
}
