// Result masking for the PostgreSQL proxy: rewrites DataRow messages (and COPY TO rows, text or csv)
// per the policy's MaskPlan.
//
// Which columns are masked:
// - Column rules match by (table OID, attnum) from the RowDescription, resolved through the catalog
//   (gateway/postgres/catalog.ts), so aliases (`SELECT email AS e`), `SELECT *`, joins, and plain
//   pass-through view columns are all caught. Computed columns (tableOid 0, or a view column built
//   by an expression) are not: content detectors and the policy's denyMaskedExpressions cover those.
// - Detectors run on text-like table columns (text, varchar, char, name, json, jsonb, xml, citext,
//   arrays, composites) and on every derived column (tableOid 0), whatever its type.
//
// How values are masked (strategies.ts): column rules replace the whole value; detectors replace
// each span found (`alice@example.com` inside a sentence), and a 'null' detector strategy nulls the
// whole value. A value that cannot be masked in place becomes NULL: masked non-text columns (numbers,
// dates, arrays) in either format, binary values other than text/json/jsonb, detector hits inside
// numbers. Text-like values in binary format are plain bytes and are masked in place (jsonb keeps its
// version byte).
//
// Failure: a catalog error makes forResult/forCopy/maskCopyLine throw (the proxy ends the statement
// with an error, nothing unmasked is relayed); a malformed DataRow makes maskDataRow throw.
import type pg from 'pg';
import type { DetectorName, MaskPlan, MaskStrategy } from '../policy/decision.ts';
import { Catalog, type Horizon, type TypeInfo } from './catalog.ts';
import { parseRowDescription } from './masking-api.ts';
import { detectorMask, findSpans, quickCheck, quickCheckString } from '../masking/detectors.ts';
import { Hasher, REDACTED, strongest } from '../masking/strategies.ts';
import { BUILTIN_TYPE_CLASS, classFromCategory, isTextual, maskSpans, maskWhole, type DetectorRules, type TypeClass } from '../masking/value.ts';
import { copyBytes, int32, putInt32, reservedAt, slabAlloc, slabReserve } from './slab.ts';
import { decodeCopyField, decodeCsvField, encodeCopyField, encodeCsvField, type CsvDialect } from '../masking/copy-text.ts';

export interface FieldInfo {
  name: string;
  tableOid: number;
  columnId: number;
  typeOid: number;
  format: 0 | 1;
}

/** regionBuffer before the first masked message. */
const NO_REGION = Buffer.alloc(0);

export interface RowMasker {
  /** `frame` is one complete DataRow message ('D', int32 len, int16 ncols, then per column int32 len (-1 = NULL) + bytes). Returns the same Buffer when nothing changed, else a new complete frame with a correct length header. */
  maskDataRow(frame: Buffer): Buffer;
  /**
   * maskDataRow() of the DataRow message buf[start, end) for a caller that only needs where the
   * masked message is (the session's write batch, WriteBatch.addRegion): -1 when nothing changed
   * (relay the original), else the length of the new message, at regionStart in regionBuffer
   * (memory nothing writes again). Saves the two Buffer objects per masked row.
   */
  maskDataRowRegion(buf: Buffer, start: number, end: number): number;
  /** The message of the last maskDataRowRegion() that returned a length. */
  readonly regionBuffer: Buffer;
  readonly regionStart: number;
  /** What was masked so far in this result: `schema.table.column` for column rules, `<detector>:<field name>` for detector hits. */
  readonly maskedColumns: ReadonlySet<string>;
}

export interface CopyMasker {
  /** Masks one COPY row as the server sent it in one CopyData message (trailing newline optional). Returns the same Buffer if unchanged. Throws on a row whose column count does not match. */
  maskLine(line: Buffer): Buffer;
  /**
   * maskLine() on the row inside one complete CopyData message (`frame`: 'd', int32 length, row
   * bytes): returns the same Buffer when nothing changed, else a new complete CopyData message,
   * built in one allocation (no separate masked line to copy into a frame).
   */
  maskFrame(frame: Buffer): Buffer;
  /**
   * maskFrame() of the CopyData message buf[start, end), for a caller that only needs where the
   * masked message is (the session's write batch, WriteBatch.addRegion): -1 when nothing changed
   * (relay the original), else the length of the new CopyData message, at regionStart in
   * regionBuffer (memory nothing writes again). Saves the two Buffer objects per masked message
   * (the view of the original and the new message).
   */
  maskFrameRegion(buf: Buffer, start: number, end: number): number;
  /** The message of the last maskFrameRegion() that returned a length. */
  readonly regionBuffer: Buffer;
  readonly regionStart: number;
  /** Same naming as RowMasker.maskedColumns. */
  readonly maskedColumns: ReadonlySet<string>;
}

export interface CopyOptions {
  /** COPY's FORMAT; default text. `binary` is refused (its values cannot be inspected safely). */
  format?: 'text' | 'csv' | 'binary';
  /** COPY's DELIMITER (one single-byte character); default tab for text, comma for csv. */
  delimiter?: string;
  /** COPY's NULL string; default `\N` for text, empty for csv. */
  nullString?: string;
  /** COPY's QUOTE and ESCAPE (csv only); default `"` and the quote. */
  quote?: string;
  escape?: string;
  /** COPY's HEADER: the first line holds column names and is passed through. */
  header?: boolean;
}

export interface MaskerFactory {
  /** null when this result needs no masking at all (fast path: no column of the result is masked and no detector applies to any text-typed column). */
  forResult(fields: FieldInfo[], plan: MaskPlan): Promise<RowMasker | null>;
  /**
   * forResult() when the catalog cache can answer now (undefined when it cannot: use forResult).
   * Same result, same failures (throws instead of rejecting); spares the proxy a turn of the
   * event loop and a parked upstream per masked result.
   */
  forResultCached?(fields: FieldInfo[], plan: MaskPlan): RowMasker | null | undefined;
  /**
   * forResultCached() from the RowDescription message itself (`frame`: 'T', length, fields). The
   * column plans of a layout are kept per mask plan and exact RowDescription bytes (table OIDs,
   * attnums, types and formats included) for as long as every catalog entry they were built from
   * stays fresh, so a repeated result costs a lookup instead of a parse and a rebuild.
   */
  forRowDescriptionCached?(frame: Buffer, plan: MaskPlan): RowMasker | null | undefined;
  /** Masks one line of text-format COPY TO STDOUT output (tab-separated, \N nulls, backslash escapes) for `table` (`schema.table`, or undefined for COPY (query) TO). Column order comes from `columns` if given, else catalog order of the table. Returns the same Buffer if unchanged. */
  maskCopyLine(line: Buffer, plan: MaskPlan, table: string | undefined, columns?: string[]): Promise<Buffer>;
  /**
   * A per-COPY masker (sync per row), or null when nothing in this COPY needs masking. `table` is
   * `schema.table` (resolved like regclass on the catalog connection, so pass it qualified); pass
   * the COPY's options (format csv, delimiter, null, quote, escape, header) when not the defaults.
   * For COPY (query) TO (`table` undefined) only detectors apply, to every column: column rules
   * cannot be resolved without a RowDescription, so the policy must deny such a COPY that reads
   * masked columns. Throws for binary format (fail closed) and for unknown tables or columns.
   */
  forCopy(plan: MaskPlan, table: string | undefined, columns?: string[], options?: CopyOptions): Promise<CopyMasker | null>;
  /** Closes the catalog connection. */
  close(): Promise<void>;
}

export interface MaskerFactoryOptions {
  connect: () => Promise<pg.Client>;
  hashKey: string;
  cacheTtlMs?: number;
  /** Clock of the catalog cache, for tests. */
  now?: () => number;
}

export function createMaskerFactory(opts: MaskerFactoryOptions): MaskerFactory {
  return new Factory(opts);
}

// ---------------------------------------------------------------------------------------------

interface CompiledPlan {
  /** `schema.table.column` -> the strongest strategy any rule asks for. */
  rules: Map<string, { strategy: MaskStrategy }>;
  detectors: DetectorRules | undefined;
  /** Column plans by RowDescription bytes (latin1), see forRowDescriptionCached. */
  layouts: Map<string, Layout>;
}

/** The column plans of one result layout (null: nothing to mask), valid while its horizon is current. */
interface Layout extends Horizon {
  plans: Array<ColumnPlan | undefined> | null;
}

/** Bounds of the plan and layout caches (a client can make up any number of layouts, of any width). */
const MAX_PLANS = 256;
const MAX_LAYOUTS = 1024;
/** Total RowDescription bytes kept as layout keys, over all plans. */
const MAX_LAYOUT_BYTES = 4 * 1024 * 1024;

/** Everything compilePlan reads, as a string: equal keys compile to equal plans. */
function planKey(plan: MaskPlan): string {
  let k = '';
  for (const c of plan.columns) k += `${c.column}\u0000${c.strategy}\u0001`;
  k += '\u0002';
  for (const d of plan.detectors) k += `${d.detector}\u0000${d.strategy}\u0001`;
  return k;
}

function compilePlan(plan: MaskPlan): CompiledPlan {
  const rules = new Map<string, { strategy: MaskStrategy }>();
  for (const c of plan.columns) {
    const key = c.column.toLowerCase();
    const prev = rules.get(key);
    rules.set(key, { strategy: prev ? strongest(prev.strategy, c.strategy) : c.strategy });
  }
  let detectors: DetectorRules | undefined;
  if (plan.detectors.length > 0) {
    const strategy: Partial<Record<DetectorName, MaskStrategy>> = {};
    for (const d of plan.detectors) {
      const prev = strategy[d.detector];
      strategy[d.detector] = prev ? strongest(prev, d.strategy) : d.strategy;
    }
    detectors = { mask: detectorMask(Object.keys(strategy) as DetectorName[]), strategy };
  }
  return { rules, detectors, layouts: new Map() };
}

/** What to do with one result column. */
interface ColumnPlan {
  /** Column rule: the masked column's name (for maskedColumns) and strategy. */
  rule?: { name: string; strategy: MaskStrategy; constant?: Buffer };
  /** Run detectors on this column. */
  detect: boolean;
  cls: TypeClass;
  binary: boolean;
  typeOid: number;
  fieldName: string;
}

const JSONB_VERSION = 1;

class Factory implements MaskerFactory {
  readonly #catalog: Catalog;
  readonly #hasher: Hasher;
  /** Compiled plans by content: decisions carry a new MaskPlan object per statement. */
  readonly #byKey = new Map<string, CompiledPlan>();
  #layoutBytes = 0;
  readonly #copyCache = new WeakMap<MaskPlan, Map<string, { masker: Promise<CopyMasker | null>; expires: number }>>();
  readonly #ttl: number;

  constructor(opts: MaskerFactoryOptions) {
    this.#hasher = new Hasher(opts.hashKey);
    this.#ttl = opts.cacheTtlMs ?? 30_000;
    this.#catalog = new Catalog({ connect: opts.connect, ttlMs: this.#ttl, now: opts.now });
  }

  /** The catalog, for callers that want to invalidate it after DDL. */
  get catalog(): Catalog {
    return this.#catalog;
  }

  #compile(plan: MaskPlan): CompiledPlan {
    const key = planKey(plan);
    let c = this.#byKey.get(key);
    if (!c) {
      c = compilePlan(plan);
      if (this.#byKey.size >= MAX_PLANS) this.#dropLayouts(true);
      this.#byKey.set(key, c);
    }
    return c;
  }

  /** Classes of built-in type oids now; the others need the catalog's type info (withCatalog). */
  #builtinClasses(typeOids: number[]): { out: Map<number, TypeClass>; unknown: number[] } {
    const out = new Map<number, TypeClass>();
    const unknown: number[] = [];
    for (const t of typeOids) {
      const c = BUILTIN_TYPE_CLASS.get(t);
      if (c) out.set(t, c);
      else unknown.push(t);
    }
    return { out, unknown };
  }

  #withCatalog(out: Map<number, TypeClass>, unknown: number[], info: ReadonlyMap<number, TypeInfo | undefined>): Map<number, TypeClass> {
    for (const t of unknown) {
      const ti = info.get(t);
      out.set(t, ti ? classFromCategory(ti.category, ti.name) : 'other');
    }
    return out;
  }

  #classesCached(typeOids: number[], horizon?: Horizon): Map<number, TypeClass> | undefined {
    const { out, unknown } = this.#builtinClasses(typeOids);
    if (unknown.length === 0) return out;
    const info = this.#catalog.typesCached(unknown, horizon);
    return info ? this.#withCatalog(out, unknown, info) : undefined;
  }

  async #classes(typeOids: number[]): Promise<Map<number, TypeClass>> {
    const { out, unknown } = this.#builtinClasses(typeOids);
    return unknown.length === 0 ? out : this.#withCatalog(out, unknown, await this.#catalog.types(unknown));
  }

  async forResult(fields: FieldInfo[], plan: MaskPlan): Promise<RowMasker | null> {
    const cp = this.#compile(plan);
    if (cp.rules.size === 0 && !cp.detectors) return null;
    const names = cp.rules.size > 0 ? await this.#catalog.columnNames(fields) : undefined;
    const rules = this.#rulesFor(fields, cp, names);
    const needType = this.#typesNeeded(fields, cp, rules);
    const classes = needType.length > 0 ? await this.#classes(needType) : new Map<number, TypeClass>();
    return this.#masker(this.#columnPlans(fields, cp, rules, classes), cp);
  }

  forResultCached(fields: FieldInfo[], plan: MaskPlan): RowMasker | null | undefined {
    const cp = this.#compile(plan);
    if (cp.rules.size === 0 && !cp.detectors) return null;
    const plans = this.#plansCached(fields, cp);
    return plans === undefined ? undefined : this.#masker(plans, cp);
  }

  forRowDescriptionCached(frame: Buffer, plan: MaskPlan): RowMasker | null | undefined {
    const cp = this.#compile(plan);
    if (cp.rules.size === 0 && !cp.detectors) return null;
    const key = frame.toString('latin1');
    const hit = cp.layouts.get(key);
    if (hit !== undefined && this.#catalog.current(hit)) return this.#masker(hit.plans, cp);
    const horizon = this.#catalog.horizon();
    const plans = this.#plansCached(parseRowDescription(frame, 0, frame.length), cp, horizon);
    if (plans === undefined) return undefined;
    if (this.#layoutBytes + key.length > MAX_LAYOUT_BYTES) this.#dropLayouts(false);
    if (cp.layouts.size >= MAX_LAYOUTS) {
      for (const k of cp.layouts.keys()) this.#layoutBytes -= k.length;
      cp.layouts.clear();
    }
    cp.layouts.set(key, { plans, until: horizon.until, generation: horizon.generation });
    this.#layoutBytes += key.length;
    return this.#masker(plans, cp);
  }

  /** Forgets every cached layout (and the compiled plans too when `plans`). */
  #dropLayouts(plans: boolean): void {
    for (const c of this.#byKey.values()) c.layouts.clear();
    if (plans) this.#byKey.clear();
    this.#layoutBytes = 0;
  }

  /** Column plans from the catalog cache alone (undefined: not all of it is fresh). */
  #plansCached(fields: FieldInfo[], cp: CompiledPlan, horizon?: Horizon): Array<ColumnPlan | undefined> | null | undefined {
    const names = cp.rules.size > 0 ? this.#catalog.columnNamesCached(fields, horizon) : undefined;
    if (cp.rules.size > 0 && !names) return undefined;
    const rules = this.#rulesFor(fields, cp, names);
    const needType = this.#typesNeeded(fields, cp, rules);
    const classes = needType.length > 0 ? this.#classesCached(needType, horizon) : new Map<number, TypeClass>();
    if (!classes) return undefined;
    return this.#columnPlans(fields, cp, rules, classes);
  }

  #masker(plans: Array<ColumnPlan | undefined> | null, cp: CompiledPlan): RowMasker | null {
    return plans === null ? null : new DataRowMasker(plans, cp.detectors, this.#hasher);
  }

  #rulesFor(fields: FieldInfo[], cp: CompiledPlan, names: Map<string, string[]> | undefined): Array<ColumnPlan['rule']> {
    const ruleFor = (f: FieldInfo): ColumnPlan['rule'] => {
      let best: ColumnPlan['rule'];
      for (const n of names?.get(`${f.tableOid}:${f.columnId}`) ?? []) {
        const r = cp.rules.get(n);
        if (r && (!best || strongest(best.strategy, r.strategy) !== best.strategy)) best = { name: n, strategy: r.strategy };
      }
      return best;
    };
    return fields.map(ruleFor);
  }

  /** Type classes only for columns that may be masked. */
  #typesNeeded(fields: FieldInfo[], cp: CompiledPlan, rules: Array<ColumnPlan['rule']>): number[] {
    return [...new Set(fields.filter((_, i) => rules[i] || cp.detectors).map((f) => f.typeOid))];
  }

  /** What to do with each column (shared by every masker of this layout: never mutated afterwards); null when nothing is masked. */
  #columnPlans(fields: FieldInfo[], cp: CompiledPlan, rules: Array<ColumnPlan['rule']>, classes: Map<number, TypeClass>): Array<ColumnPlan | undefined> | null {
    const plans: Array<ColumnPlan | undefined> = [];
    let any = false;
    fields.forEach((f, i) => {
      const rule = rules[i];
      const cls = classes.get(f.typeOid) ?? 'other';
      const binary = f.format === 1;
      let detect = false;
      if (!rule && cp.detectors) {
        const derived = f.tableOid === 0;
        if (binary) detect = (derived || isTextual(cls)) && cls !== 'other';
        else detect = derived || isTextual(cls);
      }
      if (!rule && !detect) {
        plans.push(undefined);
        return;
      }
      any = true;
      const p: ColumnPlan = { detect, cls, binary, typeOid: f.typeOid, fieldName: f.name };
      if (rule) {
        p.rule = rule;
        if (rule.strategy === 'redact' && (cls === 'text' || cls === 'json' || (cls === 'jsonb' && !binary))) {
          p.rule.constant = Buffer.from(cls === 'text' ? REDACTED : JSON.stringify(REDACTED), 'latin1');
        }
      }
      plans.push(p);
    });
    return any ? plans : null;
  }

  async forCopy(plan: MaskPlan, table: string | undefined, columns?: string[], options: CopyOptions = {}): Promise<CopyMasker | null> {
    const cp = this.#compile(plan);
    if (cp.rules.size === 0 && !cp.detectors) return null;
    if (table === undefined) {
      if (!cp.detectors) return null;
      return new CopyLineMasker(undefined, cp.detectors, this.#hasher, copyDialect(options));
    }
    const rel = await this.#catalog.table(table);
    let cols = rel.columns;
    if (columns && columns.length > 0) {
      cols = columns.map((name) => {
        const bare = name.startsWith('"') && name.endsWith('"') ? name.slice(1, -1).replace(/""/g, '"') : name;
        const col = rel.columns.find((c) => c.name === bare) ?? rel.columns.find((c) => c.name.toLowerCase() === bare.toLowerCase());
        if (!col) throw new Error(`masking: COPY column "${name}" is not a column of ${rel.name}`);
        return col;
      });
    }
    const classes = await this.#classes([...new Set(cols.map((c) => c.typeOid))]);
    const plans: Array<ColumnPlan | undefined> = [];
    let any = false;
    for (const c of cols) {
      // A partition or inheritance child carries its ancestors' masks (see Relation.ancestors).
      const inherited = (rel.ancestors ?? []).map((a) => `${a}.${c.name.toLowerCase()}`).find((n) => cp.rules.has(n));
      const r = cp.rules.get(c.qualified) ?? (inherited ? cp.rules.get(inherited) : undefined);
      const cls = classes.get(c.typeOid) ?? 'other';
      const detect = !r && !!cp.detectors && isTextual(cls);
      if (!r && !detect) {
        plans.push(undefined);
        continue;
      }
      any = true;
      plans.push({ rule: r ? { name: c.qualified, strategy: r.strategy } : undefined, detect, cls, binary: false, typeOid: c.typeOid, fieldName: c.name });
    }
    if (!any) return null;
    return new CopyLineMasker(plans, cp.detectors, this.#hasher, copyDialect(options));
  }

  async maskCopyLine(line: Buffer, plan: MaskPlan, table: string | undefined, columns?: string[]): Promise<Buffer> {
    let perPlan = this.#copyCache.get(plan);
    if (!perPlan) {
      perPlan = new Map();
      this.#copyCache.set(plan, perPlan);
    }
    const key = `${table ?? ''}\u0000${(columns ?? []).join('\u0000')}`;
    let hit = perPlan.get(key);
    if (!hit || hit.expires <= Date.now()) {
      // Cache the promise, so lines arriving before the first lookup completes share it.
      const masker = this.forCopy(plan, table, columns);
      const entry = { masker, expires: Date.now() + this.#ttl };
      perPlan.set(key, entry);
      masker.catch(() => {
        if (perPlan.get(key) === entry) perPlan.delete(key);
      });
      hit = entry;
    }
    const m = await hit.masker;
    return m ? m.maskLine(line) : line;
  }

  close(): Promise<void> {
    return this.#catalog.close();
  }
}

// ---------------------------------------------------------------------------------------------

class DataRowMasker implements RowMasker {
  readonly maskedColumns = new Set<string>();
  readonly #plans: Array<ColumnPlan | undefined>;
  readonly #detectors: DetectorRules | undefined;
  readonly #hasher: Hasher;
  // The edits of the row being masked, reused from row to row (no objects per row): the offset of
  // the column's int32 length, the end of its value bytes, and the new value (null = SQL NULL).
  // Allocated at the first row (most results of an OLTP load have one row or none).
  #hdr: Int32Array | undefined;
  #end: Int32Array | undefined;
  #value: Array<Buffer | null> | undefined;
  #lastRule: string | undefined;

  constructor(plans: Array<ColumnPlan | undefined>, detectors: DetectorRules | undefined, hasher: Hasher) {
    this.#plans = plans;
    this.#detectors = detectors;
    this.#hasher = hasher;
  }

  /** Where the last maskDataRowRegion() wrote its message. */
  regionBuffer: Buffer = NO_REGION;
  regionStart = 0;
  /** Edits found by the last #collect. */
  #edits = 0;

  maskDataRow(frame: Buffer): Buffer {
    const size = this.#collect(frame, 0, frame.length);
    if (size < 0) return frame;
    // One allocation (next to the previous masked row, see slab.ts).
    const out = slabAlloc(size);
    this.#build(frame, 0, frame.length, out, 0, size);
    return out;
  }

  maskDataRowRegion(buf: Buffer, start: number, end: number): number {
    if (start < 0 || end > buf.length || start > end) throw new Error('masking: not a DataRow message');
    const size = this.#collect(buf, start, end);
    if (size < 0) return -1;
    const out = slabReserve(size);
    const at = reservedAt();
    this.#build(buf, start, end, out, at, size);
    this.regionBuffer = out;
    this.regionStart = at;
    return size;
  }

  /**
   * Finds the edits of the DataRow message buf[from, to) (absolute offsets into `buf`, kept in the
   * reused arrays): -1 when nothing changes, else the size of the masked message.
   */
  #collect(buf: Buffer, from: number, to: number): number {
    const total = to - from;
    if (total < 7 || buf[from] !== 0x44) throw new Error('masking: not a DataRow message');
    if (int32(buf, from + 1) + 1 !== total) throw new Error('masking: DataRow length header does not match the frame');
    const n = buf.readInt16BE(from + 5);
    const plans = this.#plans;
    if (n !== plans.length) throw new Error(`masking: DataRow has ${n} columns, RowDescription had ${plans.length}`);
    const hdrs = (this.#hdr ??= new Int32Array(n));
    const ends = (this.#end ??= new Int32Array(n));
    const values = (this.#value ??= new Array<Buffer | null>(n).fill(null));
    let off = from + 7;
    let edits = 0;
    let size = total;
    for (let i = 0; i < n; i++) {
      if (off + 4 > to) throw new Error('masking: truncated DataRow');
      const len = int32(buf, off);
      const start = off + 4;
      const end = len < 0 ? start : start + len;
      if (end > to) throw new Error('masking: truncated DataRow');
      const p = plans[i];
      if (p !== undefined && len >= 0) {
        const v = this.#maskValue(p, buf, start, end);
        if (v !== undefined) {
          hdrs[edits] = off;
          ends[edits] = end;
          values[edits++] = v;
          size += (v === null ? 0 : v.length) - len;
        }
      }
      off = end;
    }
    if (off !== to) throw new Error('masking: DataRow has trailing bytes');
    this.#edits = edits;
    return edits === 0 ? -1 : size;
  }

  /** Writes the masked message (`size` bytes) at out[at]: the unchanged stretches between the edits are copied around the new values. */
  #build(buf: Buffer, from: number, to: number, out: Buffer, at: number, size: number): void {
    const hdrs = this.#hdr as Int32Array;
    const ends = this.#end as Int32Array;
    const values = this.#value as Array<Buffer | null>;
    out[at] = 0x44;
    putInt32(out, at + 1, size - 1);
    let src = from + 5;
    let dst = at + 5;
    for (let k = 0; k < this.#edits; k++) {
      dst += copyBytes(buf, src, hdrs[k], out, dst);
      const v = values[k];
      values[k] = null; // keep no row's values alive
      if (v === null) {
        putInt32(out, dst, -1);
        dst += 4;
      } else {
        putInt32(out, dst, v.length);
        dst += 4;
        dst += copyBytes(v, 0, v.length, out, dst);
      }
      src = ends[k];
    }
    copyBytes(buf, src, to, out, dst);
  }

  /** undefined: unchanged; null: SQL NULL; else the new value bytes. */
  #maskValue(p: ColumnPlan, buf: Buffer, start: number, end: number): Buffer | null | undefined {
    if (p.rule) {
      if (this.#lastRule !== p.rule.name) this.maskedColumns.add((this.#lastRule = p.rule.name)); // a Set; this spares the lookup per row
      const { strategy, constant } = p.rule;
      if (strategy === 'null') return null;
      if (constant) return constant;
      if (!p.binary || p.cls === 'text' || p.cls === 'json') return toBuffer(maskWhole(strategy, buf.toString('latin1', start, end), p.cls, this.#hasher));
      if (p.cls === 'jsonb' && end > start && buf[start] === JSONB_VERSION) {
        const v = maskWhole(strategy, buf.toString('latin1', start + 1, end), p.cls, this.#hasher);
        return v === null ? null : Buffer.from('\u0001' + v, 'latin1');
      }
      return null; // a binary value we cannot rewrite in place
    }
    const rules = this.#detectors!;
    if (!p.binary || p.cls === 'text' || p.cls === 'json') {
      const cand = quickCheck(buf, start, end, rules.mask);
      if (cand === 0) return undefined;
      return this.#spans(p, buf.toString('latin1', start, end), cand, '');
    }
    if (p.cls === 'jsonb' && end > start && buf[start] === JSONB_VERSION) {
      const cand = quickCheck(buf, start + 1, end, rules.mask);
      if (cand === 0) return undefined;
      return this.#spans(p, buf.toString('latin1', start + 1, end), cand, '\u0001');
    }
    // Binary values we cannot rewrite: look at their text (numbers) or raw bytes; any hit nulls them.
    const text = p.cls === 'number' ? binaryNumberText(p.typeOid, buf, start, end) : buf.toString('latin1', start, end);
    if (text === undefined) return undefined;
    const cand = quickCheckString(text, rules.mask);
    if (cand === 0) return undefined;
    const spans = findSpans(text, cand);
    if (spans.length === 0) return undefined;
    for (const s of spans) this.maskedColumns.add(`${s.detector}:${p.fieldName}`);
    return null;
  }

  #spans(p: ColumnPlan, value: string, cand: number, prefix: string): Buffer | null | undefined {
    const r = maskSpans(value, p.cls, this.#detectors!, this.#hasher, cand);
    for (const d of r.hits) this.maskedColumns.add(`${d}:${p.fieldName}`);
    if (r.value === undefined) return undefined;
    if (r.value === null) return null;
    return Buffer.from(prefix + r.value, 'latin1');
  }
}

function toBuffer(v: string | null): Buffer | null {
  return v === null ? null : Buffer.from(v, 'latin1');
}

/** Text of a binary-format number (for detectors), or undefined for types we do not decode. */
export function binaryNumberText(typeOid: number, buf: Buffer, start: number, end: number): string | undefined {
  const len = end - start;
  switch (typeOid) {
    case 21: return len === 2 ? String(buf.readInt16BE(start)) : undefined;
    case 23: return len === 4 ? String(buf.readInt32BE(start)) : undefined;
    case 26: return len === 4 ? String(buf.readUInt32BE(start)) : undefined;
    case 20: case 790: return len === 8 ? buf.readBigInt64BE(start).toString() : undefined;
    case 700: return len === 4 ? String(buf.readFloatBE(start)) : undefined;
    case 701: return len === 8 ? String(buf.readDoubleBE(start)) : undefined;
    case 1700: return numericText(buf, start, end);
    default: return undefined;
  }
}

/** numeric's binary form: ndigits, weight, sign, dscale (int16 each), then base-10000 digits. */
function numericText(buf: Buffer, start: number, end: number): string | undefined {
  if (end - start < 8) return undefined;
  const ndigits = buf.readInt16BE(start);
  const weight = buf.readInt16BE(start + 2);
  const sign = buf.readUInt16BE(start + 4);
  const dscale = buf.readInt16BE(start + 6);
  if (sign !== 0 && sign !== 0x4000) return 'NaN';
  if (ndigits < 0 || end - start < 8 + 2 * ndigits || dscale < 0) return undefined;
  const digit = (i: number) => (i >= 0 && i < ndigits ? buf.readInt16BE(start + 8 + 2 * i) : 0);
  let int = '';
  for (let i = 0; i <= weight; i++) int += i === 0 ? String(digit(i)) : String(digit(i)).padStart(4, '0');
  if (int === '') int = '0';
  let frac = '';
  for (let i = weight + 1; frac.length < dscale; i++) frac += String(digit(i)).padStart(4, '0');
  return (sign === 0x4000 ? '-' : '') + int + (dscale > 0 ? '.' + frac.slice(0, dscale) : '');
}

// ---------------------------------------------------------------------------------------------

interface CopyDialect {
  csv: boolean;
  delimiter: string;
  nullString: Buffer;
  csvDialect: CsvDialect;
  header: boolean;
}

function oneByte(what: string, v: string): number {
  if (v.length !== 1 || v.charCodeAt(0) > 0x7f) throw new Error(`masking: unsupported COPY ${what} ${JSON.stringify(v)} (one ASCII character expected)`);
  return v.charCodeAt(0);
}

function copyDialect(o: CopyOptions): CopyDialect {
  const format = o.format ?? 'text';
  if (format === 'binary') throw new Error('masking: COPY in binary format cannot be masked; use text or csv format');
  const csv = format === 'csv';
  const delimiter = o.delimiter ?? (csv ? ',' : '\t');
  const d = oneByte('delimiter', delimiter);
  if (d === 0x0a || d === 0x0d || d === 0x5c) throw new Error(`masking: unsupported COPY delimiter ${JSON.stringify(delimiter)}`);
  const quote = oneByte('quote', o.quote ?? '"');
  const escapeByte = oneByte('escape', o.escape ?? o.quote ?? '"');
  return {
    csv,
    delimiter,
    nullString: Buffer.from(o.nullString ?? (csv ? '' : '\\N'), 'latin1'),
    csvDialect: { delimiter: d, quote, escape: escapeByte },
    header: o.header ?? false,
  };
}

/** Columns of a COPY (query): no catalog information, so every column gets detectors as text. */
const QUERY_COPY_CLASS: TypeClass = 'text';

class CopyLineMasker implements CopyMasker {
  readonly maskedColumns = new Set<string>();
  readonly #plans: Array<ColumnPlan | undefined> | undefined;
  readonly #queryPlans: ColumnPlan[] = [];
  /** Per column of a table COPY: 1 when detectors run on it (a plan without a column rule). */
  readonly #detectCol: Uint8Array;
  readonly #detectors: DetectorRules | undefined;
  readonly #hasher: Hasher;
  readonly #d: CopyDialect;
  /** Per column: null not computed yet, undefined not constant. */
  readonly #constants: Array<Buffer | undefined | null>;
  #lastRule: string | undefined;
  #headerPending: boolean;
  // Fields of the row being masked and its replacements, reused from row to row: where each raw
  // field is, whether it is quoted (csv), and for detector columns the quick-check answer on its
  // bytes (UNKNOWN when the bytes are not the value: escapes, csv quotes doubled or escaped).
  #starts = new Int32Array(16);
  #ends = new Int32Array(16);
  #quoted = new Uint8Array(16);
  #cand = new Int32Array(16);
  #repCol = new Int32Array(16);
  readonly #repBuf: Array<Buffer | null> = new Array<Buffer | null>(16).fill(null);

  /** `plans` undefined: COPY (query). */
  constructor(plans: Array<ColumnPlan | undefined> | undefined, detectors: DetectorRules | undefined, hasher: Hasher, dialect: CopyDialect) {
    this.#plans = plans;
    this.#detectors = detectors;
    this.#hasher = hasher;
    this.#d = dialect;
    this.#headerPending = dialect.header;
    this.#constants = new Array<Buffer | undefined | null>(plans?.length ?? 0).fill(null);
    this.#detectCol = new Uint8Array(plans?.length ?? 0);
    if (plans) for (let i = 0; i < plans.length; i++) this.#detectCol[i] = plans[i] !== undefined && !plans[i]!.rule && detectors ? 1 : 0;
  }

  /** Where the last maskFrameRegion() wrote its message. */
  regionBuffer: Buffer = NO_REGION;
  regionStart = 0;
  /** Size of the masked row found by the last #collect() (without a CopyData header). */
  #size = 0;

  maskLine(line: Buffer): Buffer {
    const reps = this.#collect(line, 0, line.length);
    if (reps === 0) return line;
    const out = Buffer.allocUnsafe(this.#size);
    this.#build(line, 0, line.length, reps, out, 0, false);
    return out;
  }

  maskFrame(frame: Buffer): Buffer {
    this.#checkFrame(frame);
    const reps = this.#collect(frame, 5, frame.length);
    if (reps === 0) return frame;
    const out = slabAlloc(5 + this.#size);
    this.#build(frame, 5, frame.length, reps, out, 0, true);
    return out;
  }

  maskFrameRegion(buf: Buffer, start: number, end: number): number {
    if (start < 0 || end > buf.length || end - start < 5 || buf[start] !== 0x64 || int32(buf, start + 1) + 1 !== end - start) {
      throw new Error('masking: not a complete CopyData message');
    }
    const reps = this.#collect(buf, start + 5, end);
    if (reps === 0) return -1;
    const total = 5 + this.#size;
    const out = slabReserve(total);
    const at = reservedAt();
    this.#build(buf, start + 5, end, reps, out, at, true);
    this.regionBuffer = out;
    this.regionStart = at;
    return total;
  }

  #checkFrame(frame: Buffer): void {
    if (frame.length < 5 || frame[0] !== 0x64 || int32(frame, 1) + 1 !== frame.length) throw new Error('masking: not a complete CopyData message');
  }

  /**
   * Finds the replacements for the row in buf[from, to): returns how many (0: nothing changed),
   * with the masked row's size in #size. The replacements wait in the reused arrays (no objects
   * per field) for #build, which copies them once between the unchanged stretches.
   *
   * Detector columns: the split already ran the quick check on each such field's bytes when they
   * are exactly its value (no escape in a text field, an unquoted csv field, or a quoted one with no
   * quote or escape char inside), so a field whose check is 0 is neither decoded nor copied.
   * Any other field is decoded and its value checked (#maskField): escapes can hide what the bytes
   * show (`4242\ 4242…` with DELIMITER ' ', `\x40` for '@'), and round 2 missed such values.
   */
  #collect(buf: Buffer, from: number, to: number): number {
    if (this.#headerPending) {
      this.#headerPending = false;
      return 0;
    }
    let bodyEnd = to;
    if (bodyEnd > from && buf[bodyEnd - 1] === 0x0a) bodyEnd--;
    if (bodyEnd > from && buf[bodyEnd - 1] === 0x0d) bodyEnd--;
    const n = this.#d.csv ? this.#splitCsv(buf, from, bodyEnd) : this.#splitText(buf, from, bodyEnd);
    const plans = this.#plans;
    if (plans && n !== plans.length) {
      throw new Error(`masking: COPY line has ${n} columns, expected ${plans.length}`);
    }
    const starts = this.#starts;
    const ends = this.#ends;
    const cands = this.#cand;
    let reps = 0;
    let size = to - from;
    try {
      for (let col = 0; col < n; col++) {
        const p = plans ? plans[col] : this.#queryPlan(col);
        if (p === undefined) continue;
        const cand = cands[col];
        if (!p.rule && cand === 0) continue; // detectors only, and none can match these bytes
        const fStart = starts[col];
        const fEnd = ends[col];
        const quoted = this.#quoted[col] === 1;
        if (this.#isNull(buf, fStart, fEnd, quoted)) continue;
        const fixed = p.rule ? this.#constant(col, p) : undefined;
        let out: Buffer;
        if (fixed !== undefined) {
          if (this.#lastRule !== p.rule!.name) this.maskedColumns.add((this.#lastRule = p.rule!.name));
          out = fixed;
        } else {
          const v = this.#maskField(p, buf, fStart, fEnd, quoted, cand);
          if (v === undefined) continue;
          out = v === null ? this.#d.nullString : Buffer.from(this.#encode(v), 'latin1');
        }
        this.#repCol[reps] = col;
        this.#repBuf[reps++] = out;
        size += out.length - (fEnd - fStart);
      }
    } catch (err) {
      for (let k = 0; k < reps; k++) this.#repBuf[k] = null;
      throw err;
    }
    this.#size = size;
    return reps;
  }

  /**
   * Writes the masked row into out[at, ...): a CopyData header first when `framed`, then the
   * unchanged stretches of buf[from, to) around the #collect()ed replacements.
   */
  #build(buf: Buffer, from: number, to: number, reps: number, out: Buffer, at: number, framed: boolean): void {
    let dst = at;
    if (framed) {
      out[dst] = 0x64;
      putInt32(out, dst + 1, 4 + this.#size);
      dst += 5;
    }
    const starts = this.#starts;
    const ends = this.#ends;
    let src = from;
    for (let k = 0; k < reps; k++) {
      const col = this.#repCol[k];
      dst += copyBytes(buf, src, starts[col], out, dst);
      const rep = this.#repBuf[k]!;
      this.#repBuf[k] = null; // keep no row's values alive
      dst += copyBytes(rep, 0, rep.length, out, dst);
      src = ends[col];
    }
    copyBytes(buf, src, to, out, dst);
  }

  /** Grows the reused per-field arrays to hold `n` fields. */
  #room(n: number): void {
    if (n <= this.#starts.length) return;
    const size = Math.max(n, this.#starts.length * 2);
    const grow = <T extends Int32Array | Uint8Array>(a: T, make: (k: number) => T): T => {
      const b = make(size);
      b.set(a);
      return b;
    };
    this.#starts = grow(this.#starts, (k) => new Int32Array(k));
    this.#ends = grow(this.#ends, (k) => new Int32Array(k));
    this.#quoted = grow(this.#quoted, (k) => new Uint8Array(k));
    this.#cand = grow(this.#cand, (k) => new Int32Array(k));
    this.#repCol = grow(this.#repCol, (k) => new Int32Array(k));
    this.#repBuf.length = size;
  }

  /** Whether detectors run on column `col` (any column of a COPY (query)). */
  #detects(col: number): boolean {
    return this.#plans === undefined ? this.#detectors !== undefined : this.#detectCol[col] === 1;
  }

  /**
   * The quick-check answer for a detector field whose value is exactly buf[start, end) (0 when
   * detectors do not run on this column, where the answer is not used).
   */
  #check(col: number, buf: Buffer, start: number, end: number): number {
    return this.#detects(col) ? quickCheck(buf, start, end, this.#detectors!.mask) : 0;
  }

  /** Raw fields of a text-format COPY row; a backslash escapes the next byte (`\|` with DELIMITER '|'). Returns the count. */
  #splitText(line: Buffer, from: number, end: number): number {
    const delim = this.#d.csvDialect.delimiter;
    let n = 0;
    let i = from;
    const emailOnly = this.#detectors !== undefined && this.#detectors.mask === EMAIL_ONLY;
    for (;;) {
      let j = i;
      let escaped = false;
      let cand = 0;
      const detect = this.#detects(n);
      if (detect && emailOnly) {
        // The email detector alone: quickCheck's answer (an '@' in at least 6 bytes) found in the
        // same pass as the delimiter, instead of a second pass over the field.
        let at = false;
        while (j < end) {
          const c = line[j];
          if (c === delim) break;
          if (c === 0x5c) {
            escaped = true;
            j += j + 1 < end ? 2 : 1;
          } else {
            if (c === 0x40) at = true;
            j++;
          }
        }
        if (at && j - i >= 6) cand = EMAIL_ONLY;
      } else {
        while (j < end) {
          const c = line[j];
          if (c === delim) break;
          if (c === 0x5c) {
            escaped = true;
            j += j + 1 < end ? 2 : 1;
          } else j++;
        }
        if (detect && !escaped) cand = quickCheck(line, i, j, this.#detectors!.mask);
      }
      if (n === this.#starts.length) this.#room(n + 1);
      this.#starts[n] = i;
      this.#ends[n] = j;
      this.#quoted[n] = 0;
      // With an escape the bytes are not the value (`\ ` inside a card with DELIMITER ' ', `\x40`
      // for '@'): such a field is decoded and its value checked.
      this.#cand[n] = detect && escaped ? UNKNOWN : cand;
      n++;
      if (j >= end) return n;
      i = j + 1;
    }
  }

  /** Raw fields of a csv row (see splitCsvRow, which this follows byte for byte). Throws on an unterminated quote. */
  #splitCsv(line: Buffer, from: number, end: number): number {
    const { delimiter, quote, escape: esc } = this.#d.csvDialect;
    let n = 0;
    let i = from;
    for (;;) {
      const fs = i;
      let quoted = false;
      let cand: number;
      if (i < end && line[i] === quote) {
        quoted = true;
        // The value is buf[fs + 1, closing quote) when no quote or escape char is inside and
        // nothing follows the closing quote; otherwise it has to be decoded.
        let plain = true;
        i++;
        for (;;) {
          if (i >= end) throw new Error('masking: unterminated quoted CSV field in COPY output');
          const c = line[i];
          if (c === esc && esc !== quote && i + 1 < end && (line[i + 1] === quote || line[i + 1] === esc)) {
            plain = false;
            i += 2;
          } else if (c === quote) {
            if (esc === quote && i + 1 < end && line[i + 1] === quote) {
              plain = false;
              i += 2;
            } else {
              i++;
              break;
            }
          } else {
            if (c === esc) plain = false;
            i++;
          }
        }
        const closing = i - 1;
        // Anything up to the delimiter belongs to this field (PostgreSQL never writes it).
        while (i < end && line[i] !== delimiter) i++;
        if (i !== closing + 1) plain = false;
        cand = plain ? this.#check(n, line, fs + 1, closing) : this.#detects(n) ? UNKNOWN : 0;
      } else {
        while (i < end && line[i] !== delimiter) i++;
        cand = this.#check(n, line, fs, i);
      }
      if (n === this.#starts.length) this.#room(n + 1);
      this.#starts[n] = fs;
      this.#ends[n] = i;
      this.#quoted[n] = quoted ? 1 : 0;
      this.#cand[n++] = cand;
      if (i >= end) return n;
      i++; // delimiter
    }
  }

  /**
   * The encoded output of a column rule whose strategy ignores the value (redact, null, and any
   * strategy on a type that can only become NULL), computed once per column instead of decoding,
   * masking and encoding every line. undefined: the output depends on the value.
   */
  #constant(col: number, p: ColumnPlan): Buffer | undefined {
    const known = this.#constants[col];
    if (known !== null) return known;
    const { strategy } = p.rule!;
    let out: Buffer | undefined;
    if (strategy === 'redact' || strategy === 'null' || (p.cls !== 'text' && p.cls !== 'json' && p.cls !== 'jsonb')) {
      const v = maskWhole(strategy, '', p.cls, this.#hasher);
      out = v === null ? this.#d.nullString : Buffer.from(this.#encode(v), 'latin1');
    }
    this.#constants[col] = out;
    return out;
  }

  #queryPlan(col: number): ColumnPlan {
    return (this.#queryPlans[col] ??= { detect: true, cls: QUERY_COPY_CLASS, binary: false, typeOid: 0, fieldName: `column${col + 1}` });
  }

  #isNull(buf: Buffer, start: number, end: number, quoted: boolean): boolean {
    if (quoted) return false;
    const n = this.#d.nullString;
    if (end - start !== n.length) return false;
    for (let k = 0; k < n.length; k++) if (buf[start + k] !== n[k]) return false;
    return true;
  }

  #decode(buf: Buffer, start: number, end: number, quoted: boolean): string {
    if (this.#d.csv) return decodeCsvField(buf, { start, end, quoted }, this.#d.csvDialect);
    // (Not buf.indexOf: `buf` may be the whole socket chunk, and that would search past the field.)
    let i = start;
    while (i < end && buf[i] !== 0x5c) i++;
    return i === end ? buf.toString('latin1', start, end) : decodeCopyField(buf, start, end);
  }

  #encode(v: string): string {
    return this.#d.csv ? encodeCsvField(v, this.#d.csvDialect) : encodeCopyField(v, this.#d.delimiter);
  }

  /** `cand`: the quick check of the field's bytes (see #mask), or UNKNOWN: check the decoded value. */
  #maskField(p: ColumnPlan, buf: Buffer, start: number, end: number, quoted: boolean, cand: number): string | null | undefined {
    if (p.rule) {
      this.maskedColumns.add(p.rule.name);
      return maskWhole(p.rule.strategy, this.#decode(buf, start, end, quoted), p.cls, this.#hasher);
    }
    const rules = this.#detectors!;
    const r = maskSpans(this.#decode(buf, start, end, quoted), p.cls, rules, this.#hasher, cand === UNKNOWN ? undefined : cand);
    for (const d of r.hits) this.maskedColumns.add(`${d}:${p.fieldName}`);
    return r.value;
  }
}

/** A field's quick check when its bytes are not its value (decode it, then check the value). */
const UNKNOWN = -1;
const EMAIL_ONLY = detectorMask(['email']);
