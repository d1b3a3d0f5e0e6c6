// SQL classification with the real PostgreSQL parser (libpg-query, WASM). Every statement of a
// query string is parsed and its whole AST walked generically, so CTEs, subqueries, EXPLAIN,
// PREPARE, DECLARE, COPY (query) and DO blocks cannot hide a write, a table or a function call.
// Anything we cannot classify becomes a statement with `sql.parseError`, which the engine denies.
import { createHash } from 'node:crypto';
import { fingerprintSync, loadModule, parsePlPgSQLSync, parseSync } from 'libpg-query';
import type { CopyDirection, SqlFacts, SqlKind } from '../operation.ts';
import { isSafeBuiltin } from './safe-functions.ts';
import { statementShape } from './shape.ts';

export interface ClassifiedStatement {
  /** This statement's slice of the query string, trimmed (no trailing `;`). */
  text: string;
  kind: SqlKind;
  /** `schema.table`, lower-case, default schema `public`; CTE names are not tables. */
  tables: string[];
  /** Lower-case; `schema.name` when qualified in the query, bare otherwise. */
  functions: string[];
  sql: SqlFacts;
}

let ready = false;
let loading: Promise<void> | undefined;

/** Loads the WASM parser once; every later call resolves immediately. */
export async function initSqlParser(): Promise<void> {
  if (ready) return;
  loading ??= loadModule().then(
    () => {
      ready = true;
    },
    (err: unknown) => {
      loading = undefined; // let a later call retry instead of caching the failure
      throw err;
    },
  );
  await loading;
}

// ---------------------------------------------------------------------------------------------
// Cache. Keyed by the exact query string: text slices, tables and literal-dependent facts
// (COPY file names, SET ROLE, query_to_xml('...')) are then right by construction. Queries that
// repeat verbatim (ORM / agent loops, extended-protocol statements with $n) hit. Bounded by
// entries and by total query characters, so a stream of huge one-off batches cannot grow it.
const CACHE_MAX_ENTRIES = 5000;
const CACHE_MAX_CHARS = 4_000_000;
const CACHE_MAX_QUERY_CHARS = 64_000;
const cache = new Map<string, ClassifiedStatement[]>();
let cachedChars = 0;

function cacheGet(query: string): ClassifiedStatement[] | undefined {
  const hit = cache.get(query);
  if (hit === undefined) return undefined;
  cache.delete(query); // re-insert: Map keeps insertion order, so this is LRU
  cache.set(query, hit);
  return hit;
}

function cachePut(query: string, value: ClassifiedStatement[]): void {
  if (query.length > CACHE_MAX_QUERY_CHARS || cache.has(query)) return;
  cache.set(query, value);
  cachedChars += query.length;
  while (cache.size > CACHE_MAX_ENTRIES || cachedChars > CACHE_MAX_CHARS) {
    const oldest = cache.keys().next().value as string;
    cache.delete(oldest);
    cachedChars -= oldest.length;
  }
}

/** Callers get their own copies so nobody can corrupt a cached classification. */
function copyStatement(s: ClassifiedStatement): ClassifiedStatement {
  // Runs on every cache hit: the optional arrays are copied in place (same keys, same order as
  // the spread), without an empty object spread for each absent one.
  const sql = { ...s.sql, statementTypes: s.sql.statementTypes.slice(), expressionColumns: s.sql.expressionColumns.slice() };
  if (s.sql.settings) sql.settings = s.sql.settings.slice();
  if (s.sql.renamed) sql.renamed = s.sql.renamed.slice();
  if (s.sql.embedded) sql.embedded = s.sql.embedded.slice();
  return { text: s.text, kind: s.kind, tables: s.tables.slice(), functions: s.functions.slice(), sql };
}

/**
 * Classifies every top-level statement of `query`. Synchronous; throws only when
 * initSqlParser() has not completed. Comment/whitespace-only input gives [].
 */
export function classifySql(query: string): ClassifiedStatement[] {
  if (!ready) throw new Error('SQL parser not initialised: await initSqlParser() before classifySql()');
  // The session decodes query bytes as UTF-8; U+FFFD is what invalid bytes became, so the text we
  // would check is not the text the server would run. Refuse it (a literal U+FFFD is refused too).
  if (query.includes('\uFFFD')) return [parseErrorStatement(query.trim(), 'the query text is not valid UTF-8 (or contains U+FFFD), so Airlock cannot be sure what the server would run')];
  const hit = cacheGet(query);
  if (hit) return hit.map(copyStatement);
  const shape = statementShape(query);
  const byShape = shape === undefined ? undefined : shapeCache.get(shape);
  if (byShape) {
    const s = copyStatement(byShape);
    s.text = withoutFinalSemicolon(query);
    return [s];
  }
  const result = classifyUncached(query);
  cachePut(query, result);
  if (shape !== undefined && shapeCacheable(result)) {
    if (shapeCache.size >= CACHE_MAX_ENTRIES) shapeCache.delete(shapeCache.keys().next().value as string);
    shapeCache.set(shape, result[0]);
  }
  return result.map(copyStatement);
}

/**
 * `query.trim().replace(/;\s*$/, '').trim()` without the regex: after trim() the text ends in a
 * non-space, so the pattern can only match a final `;` (trim and \s share one whitespace set).
 */
function withoutFinalSemicolon(query: string): string {
  const t = query.trim();
  return t.endsWith(';') ? t.slice(0, -1).trim() : t;
}

// Second-level cache by statement shape (literals stripped, see shape.ts). Only for single DML
// statements whose classification cannot depend on a literal: functions that read SQL or table
// names from string arguments are walked by value, so their statements are never shared.
const shapeCache = new Map<string, ClassifiedStatement>();

/** Classifications whose facts depend on a literal: never shared by shape. */
const literalDependent = new WeakSet<ClassifiedStatement>();

function shapeCacheable(result: ClassifiedStatement[]): boolean {
  if (result.length !== 1) return false;
  const s = result[0];
  if (literalDependent.has(s)) return false;
  if (s.sql.parseError || (s.kind !== 'read' && s.kind !== 'write')) return false;
  // set_config('role', ...) and set_config('search_path', ...) differ only in a literal.
  if (s.sql.settings || s.sql.renamed || s.sql.lockMode || s.sql.opaqueSource) return false;
  return !s.functions.some((f) => {
    const fn = f.slice(f.lastIndexOf('.') + 1);
    return fn === 'ts_rewrite' || fn === 'set_config' || SQL_TEXT_FUNCTIONS.has(fn) || TABLE_NAME_FUNCTIONS.has(fn) || WHOLE_DATABASE_FUNCTIONS.has(fn);
  });
}

/** Test hook: number of cached query strings. */
export function sqlCacheSize(): number {
  return cache.size;
}

// ---------------------------------------------------------------------------------------------

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

interface RawStmt {
  stmt?: Obj;
  stmt_location?: number;
  stmt_len?: number;
}

function isObj(v: Json | undefined): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(v: Json | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** `{ TypeName: {...} }` wrapper -> [TypeName, fields]. */
function unwrap(v: Json | undefined): [string, Obj] | undefined {
  if (!isObj(v)) return undefined;
  const keys = Object.keys(v);
  if (keys.length !== 1) return undefined;
  const k = keys[0];
  const inner = v[k];
  if (!/^[A-Z]/.test(k) || !isObj(inner)) return undefined;
  return [k, inner];
}

function sval(v: Json | undefined): string | undefined {
  const u = unwrap(v);
  if (u && u[0] === 'String') return str(u[1].sval);
  return undefined;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function parseErrorStatement(text: string, message: string): ClassifiedStatement {
  return {
    text,
    kind: 'utility',
    tables: [],
    functions: [],
    sql: {
      statementTypes: [],
      hasWhere: true,
      hasLimit: false,
      alterDrops: false,
      fingerprint: 'unparseable:' + createHash('sha256').update(text).digest('hex').slice(0, 16),
      expressionColumns: [],
      parseError: message,
    },
  };
}

function classifyUncached(query: string): ClassifiedStatement[] {
  if (query.trim() === '') return []; // the parser rejects '' outright; PostgreSQL answers EmptyQuery
  let stmts: RawStmt[];
  try {
    stmts = (parseSync(query) as { stmts?: RawStmt[] }).stmts ?? [];
  } catch (err) {
    return [parseErrorStatement(query.trim(), errorMessage(err))];
  }
  if (stmts.length === 0) return [];
  // stmt_location / stmt_len are byte offsets into the UTF-8 text.
  const bytes = Buffer.from(query, 'utf8');
  return stmts.map((raw) => {
    const start = raw.stmt_location ?? 0;
    const end = raw.stmt_len ? start + raw.stmt_len : bytes.length;
    const text = bytes.subarray(start, end).toString('utf8').trim().replace(/;\s*$/, '').trim();
    try {
      return classifyStatement(raw.stmt ?? {}, text);
    } catch (err) {
      // Fail closed: a walker bug (or an absurdly deep tree) must deny, not allow.
      return parseErrorStatement(text, `cannot classify statement: ${errorMessage(err)}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Kinds

const DATA_MODIFYING = new Set(['InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

const ADMIN = new Set([
  'GrantStmt', 'GrantRoleStmt', 'CreateRoleStmt', 'AlterRoleStmt', 'AlterRoleSetStmt', 'DropRoleStmt',
  'AlterSystemStmt', 'VacuumStmt', 'CheckPointStmt', 'LoadStmt', 'CreateExtensionStmt', 'AlterExtensionStmt',
  'AlterExtensionContentsStmt', 'DoStmt', 'AlterDefaultPrivilegesStmt', 'ReindexStmt', 'ClusterStmt',
  'CreateTableSpaceStmt', 'DropTableSpaceStmt', 'AlterTableSpaceOptionsStmt', 'AlterTableMoveAllStmt',
  'CreateEventTrigStmt', 'AlterEventTrigStmt', 'CreateForeignServerStmt', 'AlterForeignServerStmt',
  'CreateFdwStmt', 'AlterFdwStmt', 'CreateUserMappingStmt', 'AlterUserMappingStmt', 'DropUserMappingStmt',
  'ImportForeignSchemaStmt', 'CreateSubscriptionStmt', 'AlterSubscriptionStmt', 'DropSubscriptionStmt',
  'CreatePublicationStmt', 'AlterPublicationStmt', 'CreatePLangStmt', 'CreateAmStmt', 'SecLabelStmt',
  'ReassignOwnedStmt', 'DropOwnedStmt', 'AlterDatabaseStmt', 'AlterDatabaseSetStmt',
  'AlterDatabaseRefreshCollStmt', 'CreateTransformStmt',
]);

const UTILITY = new Set([
  'DiscardStmt', 'ListenStmt', 'UnlistenStmt', 'NotifyStmt', 'DeallocateStmt', 'ClosePortalStmt', 'LockStmt',
]);

const DDL = new Set([
  'TruncateStmt', 'CommentStmt', 'RenameStmt', 'IndexStmt', 'ViewStmt', 'RuleStmt', 'CompositeTypeStmt',
  'RefreshMatViewStmt', 'CreateTableAsStmt', 'DefineStmt', 'CreatedbStmt', 'DropdbStmt',
]);

function containsDataModifying(v: Json | undefined): boolean {
  if (Array.isArray(v)) return v.some(containsDataModifying);
  if (!isObj(v)) return false;
  for (const [k, child] of Object.entries(v)) {
    if (DATA_MODIFYING.has(k) && isObj(child)) return true;
    if (containsDataModifying(child)) return true;
  }
  return false;
}

function copyDirection(n: Obj): CopyDirection {
  const from = n.is_from === true;
  if (n.is_program === true) return from ? 'from-program' : 'to-program';
  if (str(n.filename) === undefined) return from ? 'from-stdin' : 'to-stdout';
  return from ? 'from-file' : 'to-file';
}

function explainAnalyzes(n: Obj): boolean {
  const options = Array.isArray(n.options) ? n.options : [];
  for (const o of options) {
    const u = unwrap(o);
    if (!u || u[0] !== 'DefElem' || str(u[1].defname)?.toLowerCase() !== 'analyze') continue;
    const arg = unwrap(u[1].arg);
    if (!arg) return true; // bare ANALYZE
    const v = arg[1];
    const s = (str(v.sval) ?? (typeof v.boolval === 'boolean' ? String(v.boolval) : undefined) ?? (typeof v.ival === 'number' ? String(v.ival) : 'true')).toLowerCase();
    return !['false', 'off', '0', 'no'].includes(s);
  }
  return false;
}

function kindOf(type: string, n: Obj): SqlKind {
  if (type === 'SelectStmt') return n.intoClause || containsDataModifying(n) ? 'write' : 'read';
  if (DATA_MODIFYING.has(type) || type === 'CallStmt') return 'write';
  if (type === 'CopyStmt') {
    const dir = copyDirection(n);
    if (dir === 'from-stdin') return 'write';
    if (dir === 'to-stdout') return containsDataModifying(n.query) ? 'write' : 'read';
    return 'admin'; // server files and programs: superuser-level reach
  }
  // EXPLAIN ANALYZE executes its statement; plain EXPLAIN only plans it.
  if (type === 'ExplainStmt') {
    const inner = unwrap(n.query);
    return explainAnalyzes(n) && inner ? kindOf(inner[0], inner[1]) : 'read';
  }
  // PREPARE / DECLARE take the kind of the statement they will run, so `PREPARE p AS DELETE ...;
  // EXECUTE p` is reviewed like the DELETE it is.
  if (type === 'PrepareStmt' || type === 'DeclareCursorStmt') {
    const inner = unwrap(n.query);
    return inner ? kindOf(inner[0], inner[1]) : 'utility';
  }
  if (type === 'VariableShowStmt') return 'read';
  // FETCH and SQL EXECUTE return rows: they are reads, so read rules (limits, masks) apply. What an
  // EXECUTE runs was decided when it was PREPAREd (the engine refuses to PREPARE a statement that
  // needs review, since one approval cannot cover every later EXECUTE). MOVE returns no rows.
  if (type === 'FetchStmt') return n.ismove === true ? 'utility' : 'read';
  if (type === 'ExecuteStmt') return 'read';
  if (type === 'VariableSetStmt') {
    const name = str(n.name)?.toLowerCase();
    const setsValue = n.kind === 'VAR_SET_VALUE' || n.kind === 'VAR_SET_CURRENT' || n.kind === 'VAR_SET_MULTI';
    return (name === 'role' || name === 'session_authorization') && setsValue ? 'admin' : 'utility';
  }
  if (type === 'TransactionStmt' || type === 'ConstraintsSetStmt') return 'transaction';
  if (ADMIN.has(type)) return 'admin';
  if (UTILITY.has(type)) return 'utility';
  if (DDL.has(type) || /^(Create|Alter|Drop)/.test(type)) return 'ddl';
  return 'admin'; // unknown statement type: most restrictive sensible kind
}

// ---------------------------------------------------------------------------------------------
// The walk

interface Acc {
  types: Set<string>;
  tables: Set<string>;
  functions: Set<string>;
  unboundedWrite: boolean;
  alterDrops: boolean;
  /** Raw expression column references, as written. */
  exprCols: Set<string>;
  /** `x AS alias` in any target list: alias -> source column reference. */
  aliases: Map<string, Set<string>>;
  /** Relation names and aliases in FROM, to recognise whole-row references (`row_to_json(c)`). */
  relNames: Set<string>;
  /** Bare one-part target columns (`SELECT c FROM customers c` is a whole row if `c` is a relation). */
  bareTargets: Set<string>;
  /** GUC names changed (SET, RESET, set_config, ALTER ... SET); `*` for RESET ALL / DISCARD ALL. */
  settings: Set<string>;
  /** Relations / schemas renamed or moved. */
  renamed: Set<string>;
  lockMode?: string;
  /** Facts depend on a literal (`ORDER BY 2`), so statements of the same shape may differ. */
  literalDependent?: boolean;
  /** SQL EXECUTE: rows come from a statement this one does not show. */
  opaque: boolean;
  executeName?: string;
  /** Embedded SQL texts walked (bounded, see EMBEDDED_MAX). */
  embedded: string[];
}

const EMBEDDED_MAX = 50;
const EMBEDDED_MAX_CHARS = 2000;

interface Ctx {
  /** CTE names visible here; a schema-less RangeVar with such a name is the CTE, not a table. */
  ctes: ReadonlySet<string>;
  /**
   * Every ColumnRef below is recorded as an expression column: anywhere except a plain output
   * column of a statement that returns rows to the client (WHERE, ORDER BY, GROUP BY, join
   * conditions, function arguments, INSERT/CTAS/view sources, function and DO bodies ...).
   */
  inExpr: boolean;
  /** This SELECT is a UNION/INTERSECT/EXCEPT branch: its output columns lose their table origin. */
  setOpBranch: boolean;
}

const RENAMED_RELATIONS = new Set(['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_FOREIGN_TABLE']);

// LockStmt.mode: lockdefs.h numbers.
const LOCK_MODES: Record<number, string> = {
  1: 'AccessShareLock', 2: 'RowShareLock', 3: 'RowExclusiveLock', 4: 'ShareUpdateExclusiveLock',
  5: 'ShareLock', 6: 'ShareRowExclusiveLock', 7: 'ExclusiveLock', 8: 'AccessExclusiveLock',
};

/** Statements whose plain output columns reach the client with their table origin. */
const ROW_RETURNING_TOP = new Set(['SelectStmt', 'DeclareCursorStmt', 'PrepareStmt', 'ExplainStmt', 'CopyStmt', 'ExecuteStmt', 'FetchStmt']);

const RELATION_DROPS = new Set(['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_FOREIGN_TABLE', 'OBJECT_SEQUENCE']);

// Dynamic SQL in PL/pgSQL: the text is only known at run time. Recorded as statement types so a
// rule can deny or review it (`statements: [PLpgSQL_stmt_dynexecute]`).
const PLPGSQL_DYNAMIC = new Set(['PLpgSQL_stmt_dynexecute', 'PLpgSQL_stmt_dynfors']);

const SQL_TEXT_FUNCTIONS = new Set(['query_to_xml', 'query_to_xmlschema', 'query_to_xml_and_xmlschema', 'ts_stat']);
const TABLE_NAME_FUNCTIONS = new Set(['table_to_xml', 'table_to_xmlschema', 'table_to_xml_and_xmlschema']);
const WHOLE_DATABASE_FUNCTIONS = new Set([
  'schema_to_xml', 'schema_to_xmlschema', 'schema_to_xml_and_xmlschema',
  'database_to_xml', 'database_to_xmlschema', 'database_to_xml_and_xmlschema',
]);

/** DefElem list -> name -> arg. */
function defElems(list: Json | undefined): Map<string, Json | undefined> {
  const out = new Map<string, Json | undefined>();
  if (!Array.isArray(list)) return out;
  for (const item of list) {
    const u = unwrap(item);
    if (u && u[0] === 'DefElem' && typeof u[1].defname === 'string') out.set(u[1].defname.toLowerCase(), u[1].arg);
  }
  return out;
}

/** `'text'` or `'text'::type` -> text. */
function literalString(v: Json | undefined): string | undefined {
  const u = unwrap(v);
  if (!u) return undefined;
  if (u[0] === 'TypeCast') return literalString(u[1].arg);
  if (u[0] === 'A_Const' && isObj(u[1].sval)) return str(u[1].sval.sval);
  return undefined;
}

/** A regclass string (`customers`, `"Sales".orders`) -> `schema.table`, or undefined. */
function tableFromName(name: string): string | undefined {
  try {
    const stmts = (parseSync(`TABLE ${name}`) as { stmts?: RawStmt[] }).stmts ?? [];
    const select = stmts.length === 1 ? unwrap(stmts[0].stmt) : undefined;
    const from = select && select[0] === 'SelectStmt' && Array.isArray(select[1].fromClause) ? select[1].fromClause : [];
    const rv = from.length === 1 ? unwrap(from[0]) : undefined;
    if (!rv || rv[0] !== 'RangeVar') return undefined;
    const rel = str(rv[1].relname)?.toLowerCase();
    return rel ? `${str(rv[1].schemaname)?.toLowerCase() ?? 'public'}.${rel}` : undefined;
  } catch {
    return undefined;
  }
}

function lowerName(parts: Json[] | undefined): string | undefined {
  if (!parts) return undefined;
  const names = parts.map(sval);
  if (names.some((n) => n === undefined)) return undefined;
  return names.join('.').toLowerCase();
}

/**
 * Attribute notation is function notation in PostgreSQL: when `c.f` names no column of `c`, the
 * server calls `f(c)` on the whole row (`SELECT c.to_json FROM customers c`). These are the
 * built-ins that accept a row as their only (or only required) argument, so `x.f` may be one of
 * them (pg_proc: first argument record/anyelement/anycompatible/any/anynonarray, plus hstore).
 * A user function over a table's row type called this way is an administrator's object (see the
 * threat model).
 */
const ROW_ATTRIBUTE_FUNCTIONS = new Set([
  'any_out', 'anycompatible_out', 'anycompatiblenonarray_out', 'anyelement_out', 'anynonarray_out', 'concat',
  'hash_record', 'json_build_array', 'json_build_object', 'jsonb_build_array', 'jsonb_build_object', 'num_nonnulls',
  'num_nulls', 'pg_collation_for', 'pg_column_compression', 'pg_column_size', 'pg_column_toast_chunk_id',
  'pg_restore_attribute_stats', 'pg_restore_relation_stats', 'pg_typeof', 'quote_literal', 'quote_nullable',
  'record_out', 'record_send', 'row_to_json', 'to_json', 'to_jsonb', 'hstore',
]);

/** `c.to_json` / `public.customers.to_json`: the function attribute notation calls, or undefined. */
function attributeCall(n: Obj): { fn: string; row: string } | undefined {
  if (!Array.isArray(n.fields) || n.fields.length < 2) return undefined;
  const names = n.fields.map(sval);
  if (names.some((x) => x === undefined)) return undefined;
  const fn = (names[names.length - 1] as string).toLowerCase();
  if (!ROW_ATTRIBUTE_FUNCTIONS.has(fn)) return undefined;
  return { fn, row: (names[names.length - 2] as string).toLowerCase() };
}

function columnRefText(n: Obj): string | undefined {
  if (!Array.isArray(n.fields)) return undefined;
  const parts: string[] = [];
  for (const f of n.fields) {
    const u = unwrap(f);
    if (!u) return undefined;
    if (u[0] === 'A_Star') parts.push('*');
    else if (u[0] === 'String' && typeof u[1].sval === 'string') parts.push(u[1].sval.toLowerCase());
    else return undefined;
  }
  return parts.join('.');
}

/** A WHERE clause that references no column (`WHERE true`, `WHERE 1=1`) bounds nothing. */
function whereBounds(where: Json | undefined): boolean {
  if (where === undefined || where === null) return false;
  const seen = (v: Json): boolean => {
    if (Array.isArray(v)) return v.some(seen);
    if (!isObj(v)) return false;
    for (const [k, child] of Object.entries(v)) {
      if ((k === 'ColumnRef' || k === 'CurrentOfExpr') && isObj(child)) return true;
      if (seen(child)) return true;
    }
    return false;
  };
  return seen(where);
}

class Walker {
  constructor(
    readonly acc: Acc,
    readonly statementText: string,
  ) {}

  visit(v: Json | undefined, ctx: Ctx): void {
    if (Array.isArray(v)) {
      for (const x of v) this.visit(x, ctx);
      return;
    }
    if (!isObj(v)) return;
    const u = unwrap(v);
    if (u) {
      this.node(u[0], u[1], ctx);
      return;
    }
    // Some fields hold a node without its type wrapper (DeleteStmt.relation, IntoClause.rel).
    if (typeof v.relname === 'string') {
      this.node('RangeVar', v, ctx);
      return;
    }
    this.fields(v, ctx);
  }

  fields(n: Obj, ctx: Ctx, skip?: ReadonlySet<string>): void {
    for (const [k, child] of Object.entries(n)) {
      if (skip?.has(k)) continue;
      if (typeof child === 'object' && child !== null) this.visit(child, ctx);
    }
  }

  node(type: string, n: Obj, ctx: Ctx): void {
    if (type.endsWith('Stmt')) this.acc.types.add(type);
    if (PLPGSQL_DYNAMIC.has(type)) this.acc.types.add(type);
    switch (type) {
      case 'RangeVar':
        return this.rangeVar(n, ctx);
      case 'FuncCall': {
        const name = lowerName(Array.isArray(n.funcname) ? n.funcname : undefined);
        if (!name) throw new Error('a function call whose name cannot be read');
        this.acc.functions.add(name);
        const args = Array.isArray(n.args) ? n.args : [];
        this.sqlTextArguments(name, args);
        if (name === 'set_config' || name === 'pg_catalog.set_config') this.setConfig(args);
        // Arguments are expressions: a masked column passed to any function is transformed.
        return this.fields(n, { ...ctx, inExpr: true }, new Set(['funcname']));
      }
      case 'VariableSetStmt': {
        if (n.kind === 'VAR_RESET_ALL') this.acc.settings.add('*');
        else if (n.kind === 'VAR_SET_MULTI') {
          // SET TRANSACTION ... / SET SESSION CHARACTERISTICS AS TRANSACTION ...: the settings are the options.
          const prefix = str(n.name)?.toLowerCase() === 'session characteristics' ? 'default_' : '';
          this.transactionOptions(n.args, prefix);
        } else {
          const name = str(n.name)?.toLowerCase();
          if (!name) throw new Error('SET without a setting name');
          this.acc.settings.add(name);
        }
        return this.fields(n, ctx);
      }
      case 'AlterRoleSetStmt':
      case 'AlterDatabaseSetStmt':
      case 'AlterSystemStmt':
        // `setstmt` is a VariableSetStmt without its type wrapper.
        if (isObj(n.setstmt)) this.node('VariableSetStmt', n.setstmt, ctx);
        return this.fields(n, ctx, new Set(['setstmt']));
      case 'TransactionStmt':
        this.transactionOptions(n.options, '');
        return this.fields(n, ctx);
      case 'DiscardStmt':
        // DISCARD ALL includes RESET ALL.
        if (n.target === 'DISCARD_ALL') this.acc.settings.add('*');
        return;
      case 'RenameStmt':
        this.renameTarget(n, ctx);
        return this.fields(n, ctx);
      case 'AlterObjectSchemaStmt':
        if (RENAMED_RELATIONS.has(str(n.objectType) ?? '') && isObj(n.relation)) this.renamedRelation(n.relation);
        return this.fields(n, ctx);
      case 'LockStmt':
        this.acc.lockMode = LOCK_MODES[typeof n.mode === 'number' ? n.mode : 8] ?? 'AccessExclusiveLock';
        return this.fields(n, ctx);
      case 'ExecuteStmt':
        this.acc.opaque = true;
        this.acc.executeName ??= str(n.name);
        if (ctx.inExpr) this.acc.exprCols.add('?');
        return this.fields(n, ctx);
      case 'JoinExpr': {
        const alias = isObj(n.alias) ? str(n.alias.aliasname) : undefined;
        if (alias) this.acc.relNames.add(alias.toLowerCase());
        this.aliasColumns(n.alias, '*');
        this.visit(n.larg, ctx);
        this.visit(n.rarg, ctx);
        // Join conditions compare values: a masked column there is an oracle.
        this.visit(n.quals, { ...ctx, inExpr: true });
        if (Array.isArray(n.usingClause)) for (const u of n.usingClause) { const c = sval(u); if (c) this.acc.exprCols.add(c.toLowerCase()); }
        if (n.isNatural === true) this.acc.exprCols.add('*');
        return;
      }
      case 'RangeFunction':
      case 'RangeTableFunc':
      case 'RangeTableSample': {
        const alias = isObj(n.alias) ? str(n.alias.aliasname) : undefined;
        if (alias) this.acc.relNames.add(alias.toLowerCase());
        this.aliasColumns(n.alias, '*');
        return this.fields(n, { ...ctx, inExpr: true });
      }
      case 'CommonTableExpr':
        this.aliasColumns({ colnames: n.aliascolnames ?? null }, '*');
        return this.fields(n, ctx);
      case 'ColumnRef': {
        const call = attributeCall(n);
        if (call) {
          // A function over the whole row, whatever clause it is in.
          this.acc.functions.add(call.fn);
          this.acc.exprCols.add(`${call.row}.*`);
        }
        if (ctx.inExpr) {
          const c = columnRefText(n);
          if (c) this.acc.exprCols.add(c);
        }
        return;
      }
      case 'SelectStmt':
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt':
        return this.dml(type, n, ctx);
      case 'CallStmt':
        return this.visit({ FuncCall: n.funccall ?? {} }, ctx);
      case 'AlterTableCmd':
        if (/^AT_Drop/.test(str(n.subtype) ?? '')) this.acc.alterDrops = true;
        return this.fields(n, ctx);
      case 'DropStmt':
        if (RELATION_DROPS.has(str(n.removeType) ?? '') && Array.isArray(n.objects)) {
          for (const o of n.objects) {
            const list = unwrap(o);
            const name = list && list[0] === 'List' && Array.isArray(list[1].items) ? lowerName(list[1].items) : undefined;
            if (name) this.acc.tables.add(name.split('.').length === 1 ? `public.${name}` : name.split('.').slice(-2).join('.'));
          }
        }
        return;
      case 'RangeSubselect': {
        const alias = isObj(n.alias) ? str(n.alias.aliasname) : undefined;
        if (alias) this.acc.relNames.add(alias.toLowerCase());
        this.aliasColumns(n.alias, '*');
        // A LATERAL subquery can pass an outer row's columns through as its own outputs.
        return this.fields(n, n.lateral === true ? { ...ctx, inExpr: true } : ctx);
      }
      case 'DoStmt':
        this.fields(n, ctx);
        return this.doBlock(n);
      case 'CreateFunctionStmt':
        this.fields(n, ctx); // BEGIN ATOMIC / RETURN bodies are already parsed into sql_body
        return this.functionBody(n);
      default:
        return this.fields(n, ctx);
    }
  }

  rangeVar(n: Obj, ctx: Ctx): void {
    const rel = str(n.relname)?.toLowerCase();
    if (!rel) return;
    const schema = str(n.schemaname)?.toLowerCase();
    const alias = isObj(n.alias) ? str(n.alias.aliasname) : undefined;
    this.acc.relNames.add((alias ?? rel).toLowerCase());
    // `customers AS c(a, b, mail)`: renamed columns could be any of the table's columns.
    this.aliasColumns(n.alias, `${(alias ?? rel).toLowerCase()}.*`);
    if (!schema && ctx.ctes.has(rel)) return;
    this.acc.tables.add(`${schema ?? 'public'}.${rel}`);
  }

  /** SELECT / INSERT / UPDATE / DELETE / MERGE: CTE scoping, WHERE, target lists. */
  dml(type: string, n: Obj, outer: Ctx): void {
    let ctes = outer.ctes;
    const handled = new Set<string>(['withClause', 'targetList', 'returningClause', 'larg', 'rarg']);
    const withClause = isObj(n.withClause) ? n.withClause : undefined;
    if (withClause && Array.isArray(withClause.ctes)) {
      const entries = withClause.ctes.map(unwrap).filter((e): e is [string, Obj] => !!e && e[0] === 'CommonTableExpr');
      const names = entries.map((e) => (str(e[1].ctename) ?? '').toLowerCase());
      const all = new Set([...outer.ctes, ...names]);
      // Without RECURSIVE a CTE sees only the ones before it, so `WITH customers AS (SELECT *
      // FROM customers)` still reads the real table.
      entries.forEach((e, i) => {
        this.aliasColumns({ colnames: e[1].aliascolnames ?? null }, '*');
        const visible = withClause.recursive === true ? all : new Set([...outer.ctes, ...names.slice(0, i)]);
        this.fields(e[1], { ...outer, ctes: visible, setOpBranch: false });
      });
      ctes = all;
    }
    // Only a SELECT returns plain columns with their table origin; everything an INSERT, UPDATE,
    // DELETE or MERGE reads (sources, SET values, conditions, RETURNING) is recorded.
    const ctx: Ctx = { ...outer, ctes, setOpBranch: false, inExpr: outer.inExpr || type !== 'SelectStmt' };
    const exprCtx: Ctx = { ...ctx, inExpr: true };

    if (type !== 'SelectStmt') {
      // The target of a DML statement is always a real table, whatever the CTEs are called.
      handled.add('relation');
      const target = isObj(n.relation) ? n.relation : undefined;
      if (target && str(target.relname)?.toLowerCase() === 'pg_settings') {
        throw new Error('writing to pg_settings changes run-time settings behind the statement; use SET (which Airlock checks)');
      }
      this.visit(n.relation, { ...ctx, ctes: new Set() });
    }
    if (type === 'MergeStmt') this.mergeBounds(n);
    if (type === 'UpdateStmt' || type === 'DeleteStmt') {
      if (!whereBounds(n.whereClause)) this.acc.unboundedWrite = true;
    }
    if (type === 'SelectStmt') {
      for (const side of ['larg', 'rarg'] as const) {
        if (isObj(n[side])) this.node('SelectStmt', n[side] as Obj, { ...ctx, setOpBranch: true });
      }
      this.targets(n.targetList, { ...ctx, setOpBranch: outer.setOpBranch });
      // FROM keeps the plain-column rule (subqueries in FROM pass origins through); every other
      // clause (WHERE, GROUP BY, HAVING, ORDER BY, DISTINCT ON, WINDOW, VALUES) uses values.
      handled.add('fromClause');
      this.visit(n.fromClause, ctx);
      this.positionalRefs(n);
      if (isObj(n.intoClause)) handled.add('intoClause'), this.visit(n.intoClause, ctx);
    } else {
      // UPDATE ... SET col = expr writes, it does not return values: walk it plainly.
      this.visit(n.targetList, ctx);
    }
    if (isObj(n.returningClause)) {
      this.targets(n.returningClause.exprs, ctx);
      this.fields(n.returningClause, ctx, new Set(['exprs']));
    }
    this.fields(n, exprCtx, handled);
  }

  /**
   * `ORDER BY 2`, `GROUP BY 1`, `DISTINCT ON (1)` use the value of output column N exactly like
   * `ORDER BY email` would (an ordering or grouping oracle): record the column they point at. After
   * a `*` the position cannot be known, so the star stands for it.
   */
  positionalRefs(n: Obj): void {
    const targets = Array.isArray(n.targetList) ? n.targetList : [];
    const refer = (item: Json): void => {
      let u = unwrap(item);
      if (u && u[0] === 'SortBy') u = unwrap(u[1].node);
      if (u && u[0] === 'GroupingSet' && Array.isArray(u[1].content)) return u[1].content.forEach(refer);
      if (!u || u[0] !== 'A_Const' || !isObj(u[1].ival) || typeof u[1].ival.ival !== 'number') return;
      const pos = u[1].ival.ival;
      this.acc.literalDependent = true;
      for (let i = 0; i < Math.min(pos, targets.length); i++) {
        const t = unwrap(targets[i]);
        const val = t && t[0] === 'ResTarget' ? unwrap(t[1].val) : undefined;
        if (!val || val[0] !== 'ColumnRef') continue;
        const text = columnRefText(val[1]);
        if (text && (i === pos - 1 || text.endsWith('*'))) this.acc.exprCols.add(text);
      }
    };
    for (const k of ['sortClause', 'groupClause', 'distinctClause'] as const) if (Array.isArray(n[k])) n[k].forEach(refer);
  }

  /** MERGE: an unconditional WHEN MATCHED DELETE (or UPDATE joined on nothing) is an unbounded write. */
  mergeBounds(n: Obj): void {
    const clauses = Array.isArray(n.mergeWhenClauses) ? n.mergeWhenClauses : [];
    const joinBounds = whereBounds(n.joinCondition);
    for (const c of clauses) {
      const u = unwrap(c);
      if (!u || u[0] !== 'MergeWhenClause') continue;
      const w = u[1];
      if (str(w.matchKind) === 'MERGE_WHEN_NOT_MATCHED_BY_TARGET' || str(w.matchKind) === 'MERGE_WHEN_NOT_MATCHED') continue;
      const conditioned = whereBounds(w.condition);
      if (str(w.commandType) === 'CMD_DELETE' && !conditioned) this.acc.unboundedWrite = true;
      if (str(w.commandType) === 'CMD_UPDATE' && !conditioned && !joinBounds) this.acc.unboundedWrite = true;
      if (str(w.matchKind) === 'MERGE_WHEN_NOT_MATCHED_BY_SOURCE' && !conditioned && str(w.commandType) !== 'CMD_NOTHING') this.acc.unboundedWrite = true;
    }
  }

  /** BEGIN / SET TRANSACTION options as settings; READ ONLY only tightens, so it is not a change to flag. */
  transactionOptions(list: Json | undefined, prefix: string): void {
    if (!Array.isArray(list)) return;
    for (const item of list) {
      const u = unwrap(item);
      if (!u || u[0] !== 'DefElem') continue;
      const name = str(u[1].defname)?.toLowerCase();
      if (!name) continue;
      const arg = unwrap(u[1].arg);
      const readOnly = name === 'transaction_read_only' && arg?.[0] === 'A_Const' && isObj(arg[1].ival) && arg[1].ival.ival === 1;
      if (!readOnly) this.acc.settings.add(prefix + name);
    }
  }

  /** set_config(name, ...): the name must be a constant so the setting it changes is known. */
  setConfig(args: Json[]): void {
    const name = literalString(args[0]);
    if (name === undefined) throw new Error('set_config() with a setting name computed at run time cannot be checked; pass the name as a string literal');
    this.acc.settings.add(name.trim().toLowerCase());
  }

  /** Alias column lists (`AS s(a, b)`) rename columns: each new name may stand for `source`. */
  aliasColumns(alias: Json | undefined, source: string): void {
    if (!isObj(alias) || !Array.isArray(alias.colnames)) return;
    for (const c of alias.colnames) {
      const name = sval(c)?.toLowerCase();
      if (!name) continue;
      const set = this.acc.aliases.get(name) ?? new Set<string>();
      set.add(source);
      this.acc.aliases.set(name, set);
    }
  }

  renameTarget(n: Obj, ctx: Ctx): void {
    const type = str(n.renameType) ?? '';
    if (type === 'OBJECT_SCHEMA') {
      const schema = str(n.subname)?.toLowerCase();
      if (schema) this.acc.renamed.add(`${schema}.*`);
      return;
    }
    const relType = str(n.relationType) ?? '';
    if ((RENAMED_RELATIONS.has(type) || RENAMED_RELATIONS.has(relType) || type === 'OBJECT_COLUMN' || type === 'OBJECT_ATTRIBUTE') && isObj(n.relation)) {
      this.renamedRelation(n.relation);
    }
    void ctx;
  }

  renamedRelation(rv: Obj): void {
    const rel = str(rv.relname)?.toLowerCase();
    if (rel) this.acc.renamed.add(`${str(rv.schemaname)?.toLowerCase() ?? 'public'}.${rel}`);
  }

  targets(list: Json | undefined, ctx: Ctx): void {
    if (!Array.isArray(list)) return;
    for (const item of list) {
      const u = unwrap(item);
      if (!u || u[0] !== 'ResTarget') {
        this.visit(item, ctx);
        continue;
      }
      const target = u[1];
      const val = unwrap(target.val);
      if (val && val[0] === 'ColumnRef' && !ctx.inExpr && !ctx.setOpBranch && !attributeCall(val[1])) {
        // A bare column keeps its table origin, so the proxy can mask it; remember aliases so an
        // outer `lower(alias)` is traced back to the source column.
        const source = columnRefText(val[1]);
        if (source && !source.includes('.')) this.acc.bareTargets.add(source);
        const alias = str(target.name)?.toLowerCase();
        if (source && alias) {
          const set = this.acc.aliases.get(alias) ?? new Set<string>();
          set.add(source);
          this.acc.aliases.set(alias, set);
        }
        continue;
      }
      this.visit(target.val, { ...ctx, inExpr: true });
      this.fields(target, ctx, new Set(['val']));
    }
  }

  /** DO blocks run at once: parse the PL/pgSQL body and walk the SQL embedded in it. */
  doBlock(n: Obj): void {
    const language = defElems(n.args).get('language');
    if ((language === undefined ? 'plpgsql' : sval(language)?.toLowerCase()) !== 'plpgsql') return; // opaque; the kind stays admin
    this.plpgsqlBody('DO block');
  }

  /**
   * A function body is what a later call runs, so its SQL is checked when it is created: a
   * function wrapping pg_read_file or an unbounded DELETE is refused at CREATE time.
   */
  functionBody(n: Obj): void {
    if (n.sql_body !== undefined) return;
    const options = defElems(n.options);
    const language = sval(options.get('language'))?.toLowerCase();
    const as = unwrap(options.get('as'));
    if (!as) return;
    if (language === 'plpgsql') return this.plpgsqlBody('function body');
    if (language === 'sql' && as[0] === 'List' && Array.isArray(as[1].items)) {
      const body = sval(as[1].items[0]);
      if (body !== undefined) this.embedded(body, 0, 'SQL function body');
    }
  }

  plpgsqlBody(what: string): void {
    let tree: Json;
    try {
      tree = parsePlPgSQLSync(this.statementText) as unknown as Json;
    } catch (err) {
      throw new Error(`${what} did not parse: ${errorMessage(err)}`);
    }
    this.plpgsql(tree);
  }

  /**
   * Functions that run SQL given as text, or read a table named by a string. A literal argument
   * is parsed and walked like the query itself; anything computed cannot be checked, so the
   * statement is refused (fail closed) rather than waved through as a harmless SELECT.
   */
  sqlTextArguments(name: string, args: Json[]): void {
    const fn = name.slice(name.lastIndexOf('.') + 1);
    if (WHOLE_DATABASE_FUNCTIONS.has(fn)) {
      throw new Error(`${name}() reads every table of a schema or database, which cannot be checked table by table`);
    }
    const sqlArg = fn === 'ts_rewrite' ? (args.length === 2 ? 1 : -1) : SQL_TEXT_FUNCTIONS.has(fn) ? 0 : -1;
    if (sqlArg >= 0) {
      const text = literalString(args[sqlArg]);
      if (text === undefined) throw new Error(`the SQL passed to ${name}() is computed at run time and cannot be checked; pass it as a string literal`);
      // Its result is a derived value (XML, statistics): every column it reads is an expression column.
      this.embedded(text, 0, `SQL passed to ${name}()`, { ctes: new Set(), inExpr: true, setOpBranch: false });
    }
    if (TABLE_NAME_FUNCTIONS.has(fn)) {
      const text = literalString(args[0]);
      const table = text === undefined ? undefined : tableFromName(text);
      if (!table) throw new Error(`the table passed to ${name}() must be a literal table name so it can be checked`);
      this.acc.tables.add(table);
      this.acc.exprCols.add(`${table}.*`); // the whole table, rendered as one XML value
    }
  }

  plpgsql(v: Json): void {
    if (Array.isArray(v)) {
      for (const x of v) this.plpgsql(x);
      return;
    }
    if (!isObj(v)) return;
    for (const [k, child] of Object.entries(v)) {
      if (PLPGSQL_DYNAMIC.has(k) || (k === 'PLpgSQL_stmt_return_query' && isObj(child) && child.dynquery) || (k === 'PLpgSQL_stmt_open' && isObj(child) && child.dynquery)) {
        this.acc.types.add(PLPGSQL_DYNAMIC.has(k) ? k : 'PLpgSQL_stmt_dynexecute');
      }
      if (k === 'PLpgSQL_expr' && isObj(child) && typeof child.query === 'string') {
        this.embedded(child.query, typeof child.parseMode === 'number' ? child.parseMode : 0, 'SQL inside PL/pgSQL');
        continue;
      }
      if (typeof child === 'object' && child !== null) this.plpgsql(child);
    }
  }

  /** parseMode 0 is a full statement; the others are expressions or assignments. */
  // Code that runs later or elsewhere (DO and function bodies) returns nothing to the client with a
  // column origin, so every column it reads counts as used in an expression.
  embedded(query: string, parseMode: number, what: string, ctx: Ctx = { ctes: new Set(), inExpr: true, setOpBranch: false }): void {
    if (this.acc.embedded.length < EMBEDDED_MAX) {
      const t = query.trim();
      this.acc.embedded.push(t.length > EMBEDDED_MAX_CHARS ? `${t.slice(0, EMBEDDED_MAX_CHARS)}…` : t);
    }
    const attempts = parseMode === 0 ? [query] : [`SELECT ${query}`, query, `SELECT ${query.replace(/^[^:]*:=/, '')}`];
    for (const q of attempts) {
      let stmts: RawStmt[];
      try {
        stmts = (parseSync(q) as { stmts?: RawStmt[] }).stmts ?? [];
      } catch {
        continue;
      }
      for (const s of stmts) this.visit(s.stmt ?? {}, ctx);
      return;
    }
    throw new Error(`cannot parse ${what}: ${query.slice(0, 200)}`);
  }
}

function classifyStatement(stmt: Obj, text: string): ClassifiedStatement {
  const top = unwrap(stmt);
  if (!top) throw new Error('empty statement node');
  const [type, node] = top;
  const acc: Acc = {
    types: new Set(),
    tables: new Set(),
    functions: new Set(),
    unboundedWrite: false,
    alterDrops: false,
    exprCols: new Set(),
    aliases: new Map(),
    relNames: new Set(),
    bareTargets: new Set(),
    settings: new Set(),
    renamed: new Set(),
    opaque: false,
    embedded: [],
  };
  const copiesRows = type === 'SelectStmt' && isObj(node.intoClause);
  new Walker(acc, text).node(type, node, { ctes: new Set(), inExpr: copiesRows || !ROW_RETURNING_TOP.has(type), setOpBranch: false });

  let kind = kindOf(type, node);
  // SQL run from inside the statement (DO bodies, query_to_xml('...')) writes as much as a CTE does.
  if (kind === 'read' && type !== 'ExplainStmt' && [...DATA_MODIFYING].some((t) => acc.types.has(t))) kind = 'write';
  // A function Airlock has not reviewed may write, run dynamic SQL or change settings: never a read.
  // (Plain EXPLAIN only plans; EXPLAIN ANALYZE runs the calls.)
  const runs = type !== 'ExplainStmt' || explainAnalyzes(node);
  if (kind === 'read' && runs && acc.functions.size > 0 && [...acc.functions].some((f) => !isSafeBuiltin(f))) kind = 'write';
  const sql: SqlFacts = {
    statementTypes: [...acc.types],
    hasWhere: !acc.unboundedWrite,
    hasLimit: type === 'SelectStmt' && node.limitCount !== undefined && node.limitCount !== null,
    alterDrops: acc.alterDrops,
    fingerprint: fingerprint(text, kind),
    expressionColumns: expressionColumns(acc),
  };
  if (type === 'CopyStmt') sql.copy = copyDirection(node);
  if (acc.settings.size > 0) sql.settings = [...acc.settings];
  if (acc.renamed.size > 0) sql.renamed = [...acc.renamed];
  if (acc.lockMode) sql.lockMode = acc.lockMode;
  if (acc.opaque) sql.opaqueSource = true;
  if (acc.executeName !== undefined) sql.executeName = acc.executeName;
  if (acc.embedded.length > 0) sql.embedded = acc.embedded;
  const out: ClassifiedStatement = { text, kind, tables: [...acc.tables], functions: [...acc.functions], sql };
  if (acc.literalDependent) literalDependent.add(out);
  return out;
}

/**
 * libpg-query's fingerprint ignores constants, which is right for DML (an approval of
 * `DELETE ... WHERE id = 1` is keyed like its retry) but wrong where the constant is the whole
 * meaning: a DO body, a function body, `SET ROLE x`. For ddl/admin statements the fingerprint
 * is therefore bound to the exact text as well.
 */
function fingerprint(text: string, kind: SqlKind): string {
  const exact = () => createHash('sha256').update(text).digest('hex').slice(0, 16);
  try {
    const fp = fingerprintSync(text);
    return kind === 'ddl' || kind === 'admin' ? `${fp}:${exact()}` : fp;
  } catch {
    // Never share a fingerprint between different statements (grants are keyed by it).
    return `text:${exact()}`;
  }
}

/** Expression columns plus what they stand for: aliased source columns and whole-row refs. */
function expressionColumns(acc: Acc): string[] {
  const out = new Set<string>();
  // A relation selected as a value (`SELECT c FROM customers c`) is one composite column with no
  // table origin, so the proxy cannot mask inside it.
  const queue = [...acc.exprCols, ...[...acc.bareTargets].filter((b) => acc.relNames.has(b)).map((b) => `${b}.*`)];
  while (queue.length > 0) {
    const c = queue.pop() as string;
    if (out.has(c)) continue;
    out.add(c);
    const parts = c.split('.');
    const last = parts[parts.length - 1];
    // `row_to_json(c)` / `c::text`: a relation used as a value carries all its columns.
    if (parts.length === 1 && acc.relNames.has(last)) queue.push(`${last}.*`);
    for (const src of acc.aliases.get(last) ?? []) queue.push(src);
  }
  return [...out];
}
