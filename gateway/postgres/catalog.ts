// Cached catalog lookups for masking: (table OID, attnum) -> `schema.table.column`, table -> ordered
// columns (for COPY), and type OID -> type class. Uses its own pg.Client (Airlock's credentials, same
// database as the session), opened lazily and reopened after a failure. Entries expire after a TTL
// so DDL (renames, new columns, replaced views) is picked up.
//
// Views: a RowDescription names the VIEW's OID for columns read through a view, so a rule on
// `app.users.email` would not match `app.users_view.email` by OID alone. For views and materialized
// views we therefore read the view's stored query (pg_rewrite._RETURN) and follow each output column's
// origin (resorigtbl/resorigcol, the same origin PostgreSQL reports for plain tables), recursively for
// views over views. A view column computed by an expression (`lower(email)`, UNION branches) has no
// origin: only the content detectors (or the policy's denyMaskedExpressions) cover it.
//
// Failure policy: a lookup that fails (after one retry on a fresh connection) THROWS an Error whose
// message starts with "masking catalog lookup failed"; the proxy must then end the statement with an
// error rather than relay unmasked rows (fail closed).
import type pg from 'pg';
import { log } from '../log.ts';

export interface CatalogOptions {
  /** Opens a new connection to the upstream database with Airlock's own credentials. */
  connect: () => Promise<pg.Client>;
  /** How long resolved entries are trusted; default 30 s. */
  ttlMs?: number;
  /** Upper bound for connecting plus one lookup query; default 10 s. A hung catalog must not hang the session forever. */
  timeoutMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

export interface CatalogColumn {
  attnum: number;
  /** Column name as stored (case preserved). */
  name: string;
  /** `schema.table.column`, lower-case. */
  qualified: string;
  typeOid: number;
}

export interface Relation {
  oid: number;
  /** `schema.table`, lower-case. */
  name: string;
  /** pg_class.relkind: r table, p partitioned, v view, m materialized view, f foreign, ... */
  kind: string;
  /** Columns in attnum order (no dropped or system columns). */
  columns: CatalogColumn[];
  /** For views: attnum -> the column it passes through unchanged ([relation OID, attnum]). */
  origins?: Map<number, [number, number]>;
  /**
   * For partitions and inheritance children: every ancestor (`schema.table`, nearest first). A
   * row read from `customers_2024` is a row of `customers`, so its masks follow (the child's
   * columns have the parent's names).
   */
  ancestors?: string[];
}

export interface TypeInfo {
  oid: number;
  name: string;
  /** pg_type.typcategory (S string, N numeric, A array, C composite, U user-defined, ...). */
  category: string;
}

/** See Catalog.horizon(). */
export interface Horizon {
  /** Earliest expiry of the entries read (ms, the catalog's clock). */
  until: number;
  generation: number;
}

interface Entry<T> {
  value: T;
  expires: number;
}

const MAX_VIEW_DEPTH = 16;
/** A relation the catalog cannot see (dropped, or created in the client's uncommitted transaction) is re-checked soon. */
const NEGATIVE_TTL_MS = 2_000;

// `ancestors`: partitions and inheritance children, any depth, nearest first (same query, so one
// round trip per batch).
const RELATIONS_SQL = `SELECT a.attrelid::int8 AS relid, a.attnum, n.nspname, c.relname, c.relkind, a.attname, a.atttypid::int8 AS typid,
       CASE WHEN a.attnum = (SELECT min(a2.attnum) FROM pg_catalog.pg_attribute a2 WHERE a2.attrelid = a.attrelid AND a2.attnum > 0 AND NOT a2.attisdropped) THEN
         (WITH RECURSIVE anc(parent, depth) AS (
             SELECT i.inhparent, 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid
             UNION ALL
             SELECT i.inhparent, anc.depth + 1 FROM anc JOIN pg_catalog.pg_inherits i ON i.inhrelid = anc.parent WHERE anc.depth < 64)
          SELECT array_agg(pn.nspname || '.' || pc.relname ORDER BY anc.depth)
            FROM anc JOIN pg_catalog.pg_class pc ON pc.oid = anc.parent JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace)
       END AS ancestors
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attrelid, a.attnum`;

const VIEW_QUERY_SQL = `SELECT ev_class::int8 AS relid, ev_action::text AS action
  FROM pg_catalog.pg_rewrite WHERE ev_class = ANY($1::oid[]) AND rulename = '_RETURN'`;

// regclass syntax first (quoted identifiers, search_path); failing that, a unique case-insensitive
// `schema.table` match, for callers that lower-cased a quoted mixed-case name. Ambiguity finds nothing.
const TABLE_OID_SQL = `SELECT coalesce(pg_catalog.to_regclass($1)::oid::int8, (
  SELECT CASE WHEN count(*) = 1 THEN min(c.oid::int8) END
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE lower(n.nspname) = lower(split_part($1, '.', 1)) AND lower(c.relname) = lower(substr($1, length(split_part($1, '.', 1)) + 2))
     AND strpos($1, '.') > 0)) AS oid`;

const TYPES_SQL = `SELECT oid::int8 AS oid, typname, typcategory FROM pg_catalog.pg_type WHERE oid = ANY($1::oid[])`;

export class Catalog {
  readonly #connect: () => Promise<pg.Client>;
  readonly #ttl: number;
  readonly #now: () => number;
  readonly #timeout: number;
  #client: Promise<pg.Client> | undefined;
  readonly #relations = new Map<number, Entry<Relation | undefined>>();
  readonly #types = new Map<number, Entry<TypeInfo | undefined>>();
  readonly #tableOids = new Map<string, Entry<number | undefined>>();
  /** In-flight relation loads, so concurrent results share one query per OID. */
  readonly #pending = new Map<number, Promise<void>>();
  #closed = false;
  /** Bumped by invalidate(), so horizons taken before it are no longer current. */
  #generation = 0;

  constructor(opts: CatalogOptions) {
    this.#connect = opts.connect;
    this.#ttl = opts.ttlMs ?? 30_000;
    this.#now = opts.now ?? Date.now;
    this.#timeout = opts.timeoutMs ?? 10_000;
  }

  /**
   * Names of each (table OID, attnum): the column's own `schema.table.column` first, then, for
   * view columns, the columns they come from. Unknown relations or columns give [].
   * Keys of the returned map are `${oid}:${attnum}`.
   */
  async columnNames(refs: Iterable<{ tableOid: number; columnId: number }>): Promise<Map<string, string[]>> {
    const wanted: Array<[number, number]> = [];
    for (const r of refs) if (r.tableOid > 0 && r.columnId > 0) wanted.push([r.tableOid, r.columnId]);
    const out = new Map<string, string[]>();
    if (wanted.length === 0) return out;
    // Load relations, then the relations their view columns come from, level by level.
    let frontier = [...new Set(wanted.map(([oid]) => oid))];
    for (let depth = 0; frontier.length > 0 && depth <= MAX_VIEW_DEPTH; depth++) {
      await this.relations(frontier);
      const next = new Set<number>();
      for (const oid of frontier) {
        const rel = this.#cached(this.#relations, oid);
        if (rel?.origins) for (const [base] of rel.origins.values()) if (!this.#fresh(this.#relations, base)) next.add(base);
      }
      frontier = [...next];
    }
    for (const [oid, attnum] of wanted) out.set(`${oid}:${attnum}`, this.#chain(oid, attnum));
    return out;
  }

  /**
   * columnNames() answered from the cache alone: undefined unless every relation it needs (view
   * origins included) is fresh. Lets a proxy set up masking without a turn of the event loop.
   */
  columnNamesCached(refs: Iterable<{ tableOid: number; columnId: number }>, horizon?: Horizon): Map<string, string[]> | undefined {
    const out = new Map<string, string[]>();
    const wanted: Array<[number, number]> = [];
    for (const r of refs) if (r.tableOid > 0 && r.columnId > 0) wanted.push([r.tableOid, r.columnId]);
    if (wanted.length === 0) return out;
    // Every relation a name chain can reach must be fresh (stricter than columnNames, which
    // trusts a fresh view without re-checking what it comes from).
    const seen = new Set<number>();
    let frontier = [...new Set(wanted.map(([oid]) => oid))];
    for (let depth = 0; frontier.length > 0; depth++) {
      if (depth > MAX_VIEW_DEPTH) return undefined;
      const next = new Set<number>();
      for (const oid of frontier) {
        seen.add(oid);
        if (!this.#fresh(this.#relations, oid)) return undefined;
        if (horizon) this.#lower(horizon, this.#relations, oid);
        const rel = this.#cached(this.#relations, oid);
        if (rel?.origins) for (const [base] of rel.origins.values()) if (!seen.has(base)) next.add(base);
      }
      frontier = [...next];
    }
    for (const [oid, attnum] of wanted) out.set(`${oid}:${attnum}`, this.#chain(oid, attnum));
    return out;
  }

  /** types() answered from the cache alone: undefined unless every OID is fresh. */
  typesCached(oids: number[], horizon?: Horizon): Map<number, TypeInfo | undefined> | undefined {
    const out = new Map<number, TypeInfo | undefined>();
    for (const oid of oids) {
      if (!this.#fresh(this.#types, oid)) return undefined;
      if (horizon) this.#lower(horizon, this.#types, oid);
      out.set(oid, this.#cached(this.#types, oid));
    }
    return out;
  }

  #chain(oid: number, attnum: number): string[] {
    const names: string[] = [];
    const seen = new Set<string>();
    let cur: [number, number] | undefined = [oid, attnum];
    while (cur && names.length <= MAX_VIEW_DEPTH) {
      const key = `${cur[0]}:${cur[1]}`;
      if (seen.has(key)) break;
      seen.add(key);
      const rel: Relation | undefined = this.#cached(this.#relations, cur[0]);
      if (!rel) break;
      const att = cur[1];
      const col = rel.columns.find((c) => c.attnum === att);
      if (!col) break;
      names.push(col.qualified);
      for (const a of rel.ancestors ?? []) names.push(`${a}.${col.name.toLowerCase()}`);
      cur = rel.origins?.get(cur[1]);
    }
    return names;
  }

  /** Relations by OID (undefined when the catalog does not know the OID). */
  async relations(oids: number[]): Promise<Map<number, Relation | undefined>> {
    const missing: number[] = [];
    const waits: Promise<void>[] = [];
    for (const oid of new Set(oids)) {
      if (this.#fresh(this.#relations, oid)) continue;
      const p = this.#pending.get(oid);
      if (p) waits.push(p);
      else missing.push(oid);
    }
    if (missing.length > 0) {
      const load = this.#loadRelations(missing);
      const shared = load.finally(() => {
        for (const oid of missing) if (this.#pending.get(oid) === shared) this.#pending.delete(oid);
      });
      for (const oid of missing) this.#pending.set(oid, shared);
      waits.push(shared);
    }
    await Promise.all(waits);
    const out = new Map<number, Relation | undefined>();
    for (const oid of oids) out.set(oid, this.#cached(this.#relations, oid));
    return out;
  }

  async #loadRelations(oids: number[]): Promise<void> {
    const rows = (await this.#query('relations', RELATIONS_SQL, [oids])) as Array<{
      relid: string; attnum: number; nspname: string; relname: string; relkind: string; attname: string; typid: string; ancestors: string[] | null;
    }>;
    const now = this.#now();
    const found = new Map<number, Relation>();
    for (const r of rows) {
      const oid = Number(r.relid);
      let rel = found.get(oid);
      if (!rel) {
        rel = { oid, name: `${r.nspname}.${r.relname}`.toLowerCase(), kind: r.relkind, columns: [] };
        found.set(oid, rel);
      }
      if (r.ancestors && r.ancestors.length > 0) rel.ancestors = r.ancestors.map((a) => a.toLowerCase());
      rel.columns.push({ attnum: r.attnum, name: r.attname, qualified: `${rel.name}.${r.attname.toLowerCase()}`, typeOid: Number(r.typid) });
    }
    const views = [...found.values()].filter((r) => r.kind === 'v' || r.kind === 'm').map((r) => r.oid);
    if (views.length > 0) {
      const vrows = (await this.#query('view definitions', VIEW_QUERY_SQL, [views])) as Array<{ relid: string; action: string }>;
      for (const v of vrows) {
        const rel = found.get(Number(v.relid));
        if (rel) rel.origins = viewColumnOrigins(v.action);
      }
    }
    for (const oid of oids) {
      const rel = found.get(oid);
      this.#put(this.#relations, oid, { value: rel, expires: now + (rel ? this.#ttl : Math.min(this.#ttl, NEGATIVE_TTL_MS)) });
    }
  }

  /** A table by name (`schema.table`, resolved like `regclass`) with its ordered columns. Throws if it does not exist. */
  async table(name: string): Promise<Relation> {
    const key = name;
    let oid: number | undefined;
    if (this.#fresh(this.#tableOids, key)) oid = this.#cached(this.#tableOids, key);
    else {
      const rows = (await this.#query('table', TABLE_OID_SQL, [name])) as Array<{ oid: string | null }>;
      oid = rows[0]?.oid == null ? undefined : Number(rows[0].oid);
      this.#tableOids.set(key, { value: oid, expires: this.#now() + (oid ? this.#ttl : Math.min(this.#ttl, NEGATIVE_TTL_MS)) });
    }
    const rel = oid === undefined ? undefined : (await this.relations([oid])).get(oid);
    if (!rel) throw new Error(`masking: table "${name}" is not in the catalog`);
    return rel;
  }

  /** Type names and categories by OID (undefined for unknown OIDs). */
  async types(oids: number[]): Promise<Map<number, TypeInfo | undefined>> {
    const missing = [...new Set(oids)].filter((o) => !this.#fresh(this.#types, o));
    if (missing.length > 0) {
      const rows = (await this.#query('types', TYPES_SQL, [missing])) as Array<{ oid: string; typname: string; typcategory: string }>;
      const now = this.#now();
      const byOid = new Map(rows.map((r) => [Number(r.oid), r]));
      for (const oid of missing) {
        const r = byOid.get(oid);
        this.#put(this.#types, oid, {
          value: r ? { oid, name: r.typname, category: r.typcategory } : undefined,
          expires: now + (r ? this.#ttl : Math.min(this.#ttl, NEGATIVE_TTL_MS)),
        });
      }
    }
    const out = new Map<number, TypeInfo | undefined>();
    for (const oid of oids) out.set(oid, this.#cached(this.#types, oid));
    return out;
  }

  /**
   * A horizon for something derived from cached entries (the masking layout of a result): pass it
   * to columnNamesCached/typesCached, which lower `until` to the earliest expiry of every entry
   * they read. The derived value may be reused while current() says so: no entry it was built
   * from has expired or been dropped since (entries are never replaced while fresh).
   */
  horizon(): Horizon {
    return { until: Number.POSITIVE_INFINITY, generation: this.#generation };
  }

  /** Whether everything read under `h` is still what the catalog would answer now. */
  current(h: Horizon): boolean {
    return h.generation === this.#generation && h.until > this.#now();
  }

  #lower<K, T>(h: Horizon, map: Map<K, Entry<T>>, key: K): void {
    const e = map.get(key);
    if (e && e.expires < h.until) h.until = e.expires;
  }

  /** Forget everything cached (e.g. after Airlock itself ran DDL). */
  invalidate(): void {
    this.#generation++;
    this.#relations.clear();
    this.#types.clear();
    this.#tableOids.clear();
  }

  async close(): Promise<void> {
    this.#closed = true;
    const c = this.#client;
    this.#client = undefined;
    if (c) await c.then((client) => client.end()).catch(() => {});
  }

  /** Stores an entry; replacing one that is still fresh (two loads racing) ends every horizon. */
  #put<K, T>(map: Map<K, Entry<T>>, key: K, e: Entry<T>): void {
    const prev = map.get(key);
    if (prev && prev.expires > this.#now()) this.#generation++;
    map.set(key, e);
  }

  #fresh<K, T>(map: Map<K, Entry<T>>, key: K): boolean {
    const e = map.get(key);
    if (!e) return false;
    if (e.expires > this.#now()) return true;
    map.delete(key);
    return false;
  }

  #cached<K, T>(map: Map<K, Entry<T>>, key: K): T | undefined {
    return map.get(key)?.value;
  }

  /** One query, retried once on a fresh connection; throws a clear error otherwise. */
  async #query(what: string, text: string, values: unknown[]): Promise<unknown[]> {
    if (this.#closed) throw new Error('masking catalog lookup failed: the catalog is closed');
    let lastErr: unknown;
    for (let attempt = 0; attempt < 2; attempt++) {
      const conn = this.#getClient();
      try {
        const res = await withTimeout(conn.then((c) => c.query({ text, values })), this.#timeout, `no answer within ${this.#timeout} ms`);
        return res.rows;
      } catch (err) {
        lastErr = err;
        log.warn({ err, what, attempt }, 'masking catalog query failed; reconnecting');
        // Retire the connection this query used (and only that one: another caller may have reconnected already).
        if (this.#client === conn) this.#client = undefined;
        conn.then((c) => c.end()).catch(() => {});
      }
    }
    const msg = lastErr instanceof Error ? lastErr.message : String(lastErr);
    throw new Error(`masking catalog lookup failed (${what}): ${msg}`, { cause: lastErr });
  }

  #getClient(): Promise<pg.Client> {
    if (!this.#client) {
      const p = this.#connect().then((client) => {
        // An idle connection that dies emits 'error'; without a listener that would crash the process.
        client.on('error', (err) => {
          log.warn({ err }, 'masking catalog connection lost');
          if (this.#client === p) this.#client = undefined;
        });
        client.on('end', () => {
          if (this.#client === p) this.#client = undefined;
        });
        return client;
      });
      p.catch(() => {
        if (this.#client === p) this.#client = undefined;
      });
      this.#client = p;
    }
    return this.#client;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The origin of each output column of a view, from its stored query tree (pg_node_tree text of
 * pg_rewrite.ev_action): the top-level Query's targetList entries carry `:resno`, `:resorigtbl`
 * and `:resorigcol`. Entries without an origin (expressions) are left out.
 */
export function viewColumnOrigins(action: string): Map<number, [number, number]> {
  const origins = new Map<number, [number, number]>();
  let depth = 0;
  let tlDepth = -1; // depth of the top-level targetList's entries, once inside it
  let entry: { resno?: number; tbl?: number; col?: number } | undefined;
  let pendingKey: string | undefined;
  let i = 0;
  const n = action.length;
  while (i < n) {
    const c = action[i];
    if (c === '(' || c === '{') {
      depth++;
      if (tlDepth > 0 && c === '{' && depth === tlDepth) entry = {};
      i++;
      continue;
    }
    if (c === ')' || c === '}') {
      if (tlDepth > 0 && c === '}' && depth === tlDepth && entry) {
        if (entry.resno && entry.tbl && entry.col) origins.set(entry.resno, [entry.tbl, entry.col]);
        entry = undefined;
      }
      depth--;
      if (tlDepth > 0 && depth < tlDepth - 1) return origins; // the targetList closed
      i++;
      continue;
    }
    if (c === ' ' || c === '\n' || c === '\t') {
      i++;
      continue;
    }
    // A token: up to whitespace or a bracket, with backslash escapes.
    let tok = '';
    while (i < n) {
      const d = action[i];
      if (d === '\\' && i + 1 < n) {
        tok += action[i + 1];
        i += 2;
        continue;
      }
      if (d === ' ' || d === '\n' || d === '\t' || d === '(' || d === ')' || d === '{' || d === '}') break;
      tok += d;
      i++;
    }
    if (pendingKey !== undefined) {
      if (entry) {
        const v = Number(tok);
        if (pendingKey === ':resno') entry.resno = v;
        else if (pendingKey === ':resorigtbl') entry.tbl = v;
        else if (pendingKey === ':resorigcol') entry.col = v;
      }
      pendingKey = undefined;
    }
    if (tok === ':targetList' && depth === 2 && tlDepth < 0) tlDepth = depth + 2;
    else if (entry && depth === tlDepth && (tok === ':resno' || tok === ':resorigtbl' || tok === ':resorigcol')) pendingKey = tok;
  }
  return origins;
}
