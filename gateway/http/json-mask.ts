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
import { isUtf8 } from 'node:buffer';
import type { DetectorName, MaskStrategy } from '../policy/decision.ts';
import { detectorMask, quickCheckString } from '../masking/detectors.ts';
import { applyStrategy, REDACTED, STRATEGY_STRENGTH, type Hasher } from '../masking/strategies.ts';
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
  /** The segments as the byte scanner (maskBytes) matches them. */
  scan: ScanSegment[];
}

interface ScanSegment {
  text: string;
  star: boolean;
  /** The array index a digits-only segment selects (as `Number(seg)`), else -1. */
  index: number;
  /** UTF-8 bytes to compare an unescaped key with; null: compare the decoded key (the segment has surrogates, which could be lone). */
  bytes: Buffer | null;
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
    this.#fields = plan.fields.map((f) => {
      const segments = parseFieldPath(f.path);
      const scan = segments.map((t) => ({ text: t, star: t === '*', index: /^\d+$/.test(t) ? Number(t) : -1, bytes: /[\ud800-\udfff]/.test(t) ? null : Buffer.from(t, 'utf8') }));
      return { segments, strategy: f.strategy, base64: f.encoding === 'base64', scan };
    });
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

  /**
   * The same masking as `mask(JSON.parse(body))` followed by `JSON.stringify`, done on the bytes:
   * only the values a field path covers are rewritten (by the same `#maskAll`), everything else is
   * copied as it came. Returns undefined whenever it cannot vouch for that, and the caller parses
   * instead: detectors apply (they read every string), the body is not valid UTF-8 (a lenient
   * client could decode overlong or broken sequences into a covered key), it is not strict JSON
   * (BOM, trailing commas, control characters ...: JSON.parse then refuses it), or it nests deeper
   * than MAX_JSON_DEPTH (refused by `mask`).
   *
   * Differences from the parse path, none of which lets a covered value through: the output keeps
   * the upstream's formatting, escapes and number spelling (`1.0`, `1e400`, integers beyond 2^53
   * are passed exactly instead of rounded); duplicate keys are all kept and every occurrence under
   * a covered path is masked (the parse path keeps the last one only), so `masked` may also list
   * an earlier occurrence; `*` lists integer-like keys in document order, not ascending.
   */
  maskBytes(body: Buffer): { value: Buffer; masked: string[] } | undefined {
    if (this.#rules.mask !== 0 || this.#fields.length === 0 || this.#fields.length > 0x7ffff) return undefined;
    if (!isUtf8(body)) return undefined;
    const scan = new FieldScan(body, this.#fields, this.#scanHost);
    try {
      scan.run();
    } catch (err) {
      if (err === BAIL) return undefined;
      throw err;
    }
    // As the parse path's one Set filled field after field (a duplicate key can repeat a location).
    const set = new Set<string>();
    for (const hits of scan.hits) if (hits) for (const h of hits) set.add(h);
    return { value: scan.output(), masked: [...set].slice(0, 200) };
  }

  readonly #scanHost: ScanHost = {
    maskAll: (v, f) => this.#maskAll(v, this.#fields[f].strategy, this.#fields[f].base64),
    redactsAll: (f) => this.#fields[f].strategy === 'redact' && !this.#fields[f].base64,
    applySubtree: (doc, states, where, hits) => {
      const box = { root: doc };
      for (const s of states) {
        const f = s >>> 12;
        const set = new Set<string>();
        // The parse path's walk from this value on (`where` is '' only at the root, printed '$' as there).
        this.#applyField(box, 'root', this.#fields[f].segments, s & 0xfff, this.#fields[f], where, set);
        for (const h of set) (hits[f] ??= []).push(h);
      }
      return box.root;
    },
  };

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

/** A non-null leaf the first covering field redacts without reading it. */
const UNREAD = Symbol('unread leaf');
const REDACTED_JSON = JSON.stringify(REDACTED);
const REDACTED_JSON_BYTES = Buffer.from(REDACTED_JSON, 'utf8');

/** Thrown inside FieldScan when the bytes are not something it vouches for (the caller parses instead). */
const BAIL = new Error('json byte scan: fall back to parsing');

interface ScanHost {
  /** `#maskAll` of field `f` on a decoded value. */
  maskAll(v: unknown, f: number): unknown;
  /** Field `f`'s `#maskAll` turns every non-null leaf into REDACTED (strategy redact, no base64), whatever the value. */
  redactsAll(f: number): boolean;
  /** The parse path's `#applyField` for every state (field << 12 | segment index), in field order, on a parsed subtree at `where`. */
  applySubtree(doc: unknown, states: number[], where: string, hits: Array<string[] | undefined>): unknown;
}

/**
 * One pass over a UTF-8 JSON body: validates it as strict JSON (what JSON.parse accepts, minus
 * nothing: any doubt throws BAIL), tracks which field paths can still match below each value
 * (states: field index << 12 | next segment), and records replacements for covered values.
 */
function digit(c: number | undefined): boolean {
  return c !== undefined && c >= 0x30 && c <= 0x39;
}

class FieldScan {
  readonly #b: Buffer;
  readonly #n: number;
  readonly #fields: CompiledField[];
  readonly #host: ScanHost;
  #pos = 0;
  #depth = 0;
  /** Replacements: start, end, text (flat). */
  readonly #edits: Array<number | string> = [];
  /** The path to the current value: an array index (kind 0) or a key's content offsets (kind 1 plain, 2 escaped). */
  readonly #kind: number[] = [];
  readonly #pa: number[] = [];
  readonly #pb: number[] = [];
  /** The decoded key of a path entry when already known (undefined: decode on demand). */
  readonly #name: Array<string | undefined> = [];
  /** `#where` through entry i, while entries 0..i are unchanged (truncated whenever an entry is pushed below it). */
  readonly #pw: string[] = [];
  /** Masked locations per field, in document order. */
  readonly hits: Array<string[] | undefined> = [];

  constructor(body: Buffer, fields: CompiledField[], host: ScanHost) {
    this.#b = body;
    this.#n = body.length;
    this.#fields = fields;
    this.#host = host;
  }

  run(): void {
    const root: number[] = [];
    for (let f = 0; f < this.#fields.length; f++) {
      if (this.#fields[f].scan.length > 0xfff) throw BAIL;
      root.push(f << 12);
    }
    this.#value(root);
    this.#ws();
    if (this.#pos !== this.#n) throw BAIL;
  }

  output(): Buffer {
    const e = this.#edits;
    if (e.length === 0) return this.#b;
    // Replacement texts as bytes (the redact token's are built once), then one copy of each span.
    const b = this.#b;
    const texts: Buffer[] = [];
    let size = this.#n;
    for (let i = 0; i < e.length; i += 3) {
      const t = e[i + 2] === REDACTED_JSON ? REDACTED_JSON_BYTES : Buffer.from(e[i + 2] as string, 'utf8');
      texts.push(t);
      size += t.length - ((e[i + 1] as number) - (e[i] as number));
    }
    const out = Buffer.allocUnsafe(size);
    let from = 0;
    let to = 0;
    for (let i = 0; i < e.length; i += 3) {
      const start = e[i] as number;
      out.set(b.subarray(from, start), to);
      to += start - from;
      const t = texts[i / 3];
      out.set(t, to);
      to += t.length;
      from = e[i + 1] as number;
    }
    out.set(b.subarray(from), to);
    return out;
  }

  #ws(): void {
    const b = this.#b;
    let p = this.#pos;
    for (;;) {
      const c = b[p];
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) p++;
      else break;
    }
    this.#pos = p;
  }

  /** Where the current value is, as the parse path writes it ('' at the root). */
  #where(): string {
    const pw = this.#pw;
    const n = this.#kind.length;
    if (pw.length > n) pw.length = n;
    let i = pw.length;
    let w = i > 0 ? pw[i - 1] : '';
    for (; i < n; i++) {
      const k = this.#kind[i];
      if (k === 0) w = `${w}[${this.#pa[i]}]`;
      else {
        const key = this.#name[i] ?? this.#key(this.#pa[i], this.#pb[i], k === 2);
        w = w ? `${w}.${key}` : key;
      }
      pw.push(w);
    }
    return w;
  }

  #push(kind: number, a: number, z: number, name: string | undefined): void {
    const n = this.#kind.length;
    if (this.#pw.length > n) this.#pw.length = n;
    this.#kind.push(kind);
    this.#pa.push(a);
    this.#pb.push(z);
    this.#name.push(name);
  }

  #pop(): void {
    this.#kind.pop();
    this.#pa.pop();
    this.#pb.pop();
    this.#name.pop();
  }

  #key(a: number, z: number, escaped: boolean): string {
    return escaped ? (JSON.parse(this.#b.toString('utf8', a - 1, z + 1)) as string) : this.#b.toString('utf8', a, z);
  }

  /** One value; `states` null or empty: nothing can match below, only validate. */
  #value(states: number[] | null): void {
    this.#ws();
    const c = this.#b[this.#pos];
    let ending = false;
    let deeper = false;
    if (states !== null) {
      for (let i = 0; i < states.length; i++) {
        const s = states[i];
        if ((s & 0xfff) === this.#fields[s >>> 12].scan.length) ending = true;
        else deeper = true;
      }
    }
    if (c === 0x7b || c === 0x5b) {
      if (ending) {
        // A path ends on an object or array: that subtree is parsed and masked as the parse path does.
        const start = this.#pos;
        if (c === 0x7b) this.#object(null);
        else this.#array(null);
        const end = this.#pos;
        const where = this.#where();
        const doc = JSON.parse(this.#b.toString('utf8', start, end)) as unknown;
        const out = this.#host.applySubtree(doc, states!, where, this.hits);
        this.#edits.push(start, end, JSON.stringify(out));
        return;
      }
      if (c === 0x7b) this.#object(deeper ? states : null);
      else this.#array(deeper ? states : null);
      return;
    }
    const start = this.#pos;
    let v: unknown;
    if (c === 0x22) {
      const escaped = this.#string();
      if (!ending) return;
      // Decoded only when a strategy reads it (redact does not: any string becomes the token).
      v = this.#redactsFirst(states!) ? UNREAD : this.#key(start + 1, this.#pos - 1, escaped);
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      this.#number();
      if (!ending) return;
      v = this.#redactsFirst(states!) ? UNREAD : Number(this.#b.toString('latin1', start, this.#pos));
    } else if (c === 0x74) {
      this.#literal('true');
      v = true;
    } else if (c === 0x66) {
      this.#literal('false');
      v = false;
    } else if (c === 0x6e) {
      this.#literal('null');
      v = null;
    } else throw BAIL;
    if (!ending) return;
    // Every field ending here, in field order, on the value the previous one left (as the parse path).
    let changed = false;
    let where: string | undefined;
    for (const s of states!) {
      const f = s >>> 12;
      if ((s & 0xfff) !== this.#fields[f].scan.length || v === null) continue;
      v = v === UNREAD || this.#host.redactsAll(f) ? REDACTED : this.#host.maskAll(v, f);
      (this.hits[f] ??= []).push((where ??= this.#where() || '$'));
      changed = true;
    }
    if (changed) this.#edits.push(start, this.#pos, v === REDACTED ? REDACTED_JSON : JSON.stringify(v));
  }

  /** The first field ending here redacts whatever it finds (so the leaf need not be decoded). */
  #redactsFirst(states: number[]): boolean {
    for (let i = 0; i < states.length; i++) {
      const f = states[i] >>> 12;
      if ((states[i] & 0xfff) === this.#fields[f].scan.length) return this.#host.redactsAll(f);
    }
    return false;
  }

  /** Steps into an object or array; true when it is empty (`close` follows at once), which is then consumed too. */
  #enter(close: number): boolean {
    if (++this.#depth > MAX_JSON_DEPTH) throw BAIL;
    this.#pos++;
    this.#ws();
    if (this.#b[this.#pos] !== close) return false;
    this.#pos++;
    this.#depth--;
    return true;
  }

  #object(states: number[] | null): void {
    if (this.#enter(0x7d)) return;
    const b = this.#b;
    for (;;) {
      if (b[this.#pos] !== 0x22) throw BAIL;
      const ka = this.#pos + 1;
      const escaped = this.#string();
      const kz = this.#pos - 1;
      let child: number[] | null = null;
      let decoded: string | undefined;
      if (states !== null) {
        for (let i = 0; i < states.length; i++) {
          const s = states[i];
          const seg = this.#fields[s >>> 12].scan[s & 0xfff];
          let hit = seg.star;
          if (!hit) {
            const bytes = seg.bytes;
            if (bytes !== null && !escaped) {
              if (bytes.length === kz - ka) {
                hit = true;
                for (let j = 0; j < bytes.length; j++) {
                  if (bytes[j] !== b[ka + j]) {
                    hit = false;
                    break;
                  }
                }
                if (hit) decoded = seg.text;
              }
            } else hit = (decoded ??= this.#key(ka, kz, escaped)) === seg.text;
          }
          if (hit) (child ??= []).push(s + 1);
        }
      }
      this.#ws();
      if (b[this.#pos] !== 0x3a) throw BAIL;
      this.#pos++;
      if (child !== null) {
        this.#push(escaped ? 2 : 1, ka, kz, decoded);
        this.#value(child);
        this.#pop();
      } else this.#value(null);
      this.#ws();
      const c = b[this.#pos++];
      if (c === 0x7d) break;
      if (c !== 0x2c) throw BAIL;
      this.#ws();
    }
    this.#depth--;
  }

  #array(states: number[] | null): void {
    if (this.#enter(0x5d)) return;
    const b = this.#b;
    for (let i = 0; ; i++) {
      let child: number[] | null = null;
      if (states !== null) {
        for (let k = 0; k < states.length; k++) {
          const s = states[k];
          const seg = this.#fields[s >>> 12].scan[s & 0xfff];
          // As the parse path: an index selects one element, `*` consumes the level, any other segment sees through it.
          if (seg.index >= 0) {
            if (seg.index === i) (child ??= []).push(s + 1);
          } else (child ??= []).push(seg.star ? s + 1 : s);
        }
      }
      if (child !== null) {
        this.#push(0, i, 0, undefined);
        this.#value(child);
        this.#pop();
      } else this.#value(null);
      this.#ws();
      const c = b[this.#pos++];
      if (c === 0x5d) break;
      if (c !== 0x2c) throw BAIL;
    }
    this.#depth--;
  }

  /** A string at #pos (validated: escapes, no raw control characters); returns whether it has escapes. */
  #string(): boolean {
    const b = this.#b;
    const n = this.#n;
    let p = this.#pos + 1;
    let escaped = false;
    for (;;) {
      if (p >= n) throw BAIL;
      const c = b[p++];
      if (c === 0x22) break;
      if (c < 0x20) throw BAIL;
      if (c === 0x5c) {
        escaped = true;
        if (p >= n) throw BAIL;
        const e = b[p++];
        if (e === 0x75) {
          if (p + 4 > n) throw BAIL;
          for (let j = 0; j < 4; j++) {
            const h = b[p++];
            if (!((h >= 0x30 && h <= 0x39) || (h >= 0x41 && h <= 0x46) || (h >= 0x61 && h <= 0x66))) throw BAIL;
          }
        } else if (e !== 0x22 && e !== 0x5c && e !== 0x2f && e !== 0x62 && e !== 0x66 && e !== 0x6e && e !== 0x72 && e !== 0x74) throw BAIL;
      }
    }
    this.#pos = p;
    return escaped;
  }

  /** -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
  #number(): void {
    const b = this.#b;
    let p = this.#pos;
    if (b[p] === 0x2d) p++;
    if (b[p] === 0x30) p++;
    else if (digit(b[p])) while (digit(b[p])) p++;
    else throw BAIL;
    if (b[p] === 0x2e) {
      p++;
      if (!digit(b[p])) throw BAIL;
      while (digit(b[p])) p++;
    }
    if (b[p] === 0x65 || b[p] === 0x45) {
      p++;
      if (b[p] === 0x2b || b[p] === 0x2d) p++;
      if (!digit(b[p])) throw BAIL;
      while (digit(b[p])) p++;
    }
    this.#pos = p;
  }

  #literal(word: string): void {
    const p = this.#pos;
    if (p + word.length > this.#n) throw BAIL;
    for (let i = 0; i < word.length; i++) if (this.#b[p + i] !== word.charCodeAt(i)) throw BAIL;
    this.#pos = p + word.length;
  }
}
