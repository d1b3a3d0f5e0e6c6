// What a held write would change, for its approvers (rule `review.preview`), computed on a
// SEPARATE upstream connection so the agent's session is never touched:
//   explain  - `EXPLAIN (FORMAT JSON)` in a READ ONLY transaction (nothing executes; even a
//              function the planner folds cannot write): the planner's row estimate and top node;
//   dry-run  - the statement itself with its bound parameters, inside a transaction with short
//              statement_timeout / lock_timeout, then ROLLBACK: exact rows affected and a masked
//              sample (RETURNING *). Statements whose effects a rollback cannot undo (functions not
//              on the reviewed-safe list such as nextval or dblink, sequence defaults or identity
//              columns filled by an INSERT, triggers, rules, foreign tables) fall back to explain
//              and say so.
// Parameters travel as parameters (extended protocol, never spliced into the text); the text
// must be exactly one statement. Sample values go through the connection's masking layer with
// the statement's mask plan, then through the PII detectors like everything approvers read.
// Any failure yields a preview that says it is unavailable: a preview never blocks a hold.
import { parseSync } from 'libpg-query';
import type pg from 'pg';
import type { ApprovalPreview } from '../../bots/channel.ts';
import type { BoundParameter } from '../enforce/binding.ts';
import { redactDetected } from '../masking/redact-text.ts';
import type { MaskPlan } from '../policy/decision.ts';
import { isSafeBuiltin } from '../policy/sql/safe-functions.ts';
import { planNeedsMasking } from './masking-api.ts';
import type { FieldInfo, MaskerFactory } from './row-masker.ts';

export type PreviewMode = 'explain' | 'dry-run';

export interface PreviewDeps {
  /** A fresh connection to the same upstream as the session, with the same credentials. Closed after use. */
  connect: () => Promise<pg.Client>;
  masking: MaskerFactory | null;
  /** statement_timeout of the dry run (default 5000 ms); lock_timeout is a fifth of it. */
  timeoutMs?: number;
}

export interface PreviewInput {
  mode: PreviewMode;
  /** Exactly what would run. */
  text: string;
  parameters: readonly BoundParameter[];
  /** Functions the statement calls (Operation.functions). */
  functions: readonly string[];
  /** Tables (and views) the statement names (Operation.tables), schema-qualified. */
  tables?: readonly string[];
  plan: MaskPlan;
}

/** Sample rows shown to approvers. */
const SAMPLE_ROWS = 5;
const WRITE_TYPES = new Set(['InsertStmt', 'UpdateStmt', 'DeleteStmt']);
/** Functions whose effect a ROLLBACK undoes though they are not read-only. */
const ROLLBACK_SAFE = new Set(['pg_notify']);

interface ParsedWrite {
  type: string;
  returning: boolean;
  /** Target table as written (schema-qualified when it was). */
  table?: string;
}

function parseOne(text: string): { one: true; write?: ParsedWrite } | { one: false } {
  let tree: { stmts?: Array<{ stmt?: Record<string, Record<string, unknown>> }> };
  try {
    tree = parseSync(text) as typeof tree;
  } catch {
    return { one: false };
  }
  const stmts = tree.stmts ?? [];
  if (stmts.length !== 1 || !stmts[0].stmt) return { one: false };
  const [type, node] = Object.entries(stmts[0].stmt)[0];
  if (!WRITE_TYPES.has(type)) return { one: true };
  const rel = node.relation as { schemaname?: string; relname?: string } | undefined;
  const table = rel?.relname ? (rel.schemaname ? `${quoteIdent(rel.schemaname)}.${quoteIdent(rel.relname)}` : quoteIdent(rel.relname)) : undefined;
  // PG 18 trees: returningClause.exprs; earlier: returningList.
  const rc = node.returningClause as { exprs?: unknown[] } | undefined;
  const returning = (Array.isArray(rc?.exprs) && rc.exprs.length > 0) || (Array.isArray(node.returningList) && node.returningList.length > 0);
  return { one: true, write: { type, returning, table } };
}

function quoteIdent(s: string): string {
  return '"' + s.replace(/"/g, '""') + '"';
}

/** pg values: text parameters as strings (sent as text), binary ones as Buffers (sent as binary). */
function values(params: readonly BoundParameter[]): Array<string | Buffer | null> {
  return params.map((p) => (p.value === null ? null : p.binary ? p.value : p.value.toString('utf8')));
}

/** Raw text of every value: nothing is parsed into JS types (masking reads the wire text). */
const RAW_TYPES = { getTypeParser: () => (v: string) => v } as unknown as pg.CustomTypesConfig;

function query(c: pg.Client, text: string, params: readonly BoundParameter[] = []): Promise<pg.QueryResult<string[]>> {
  // Extended protocol always: one statement only, parameters never spliced.
  return c.query<string[]>({ text, values: values(params), rowMode: 'array', types: RAW_TYPES, queryMode: 'extended' } as pg.QueryArrayConfig);
}

interface PlanNode {
  'Node Type'?: string;
  Operation?: string;
  'Relation Name'?: string;
  'Plan Rows'?: number;
  Plans?: PlanNode[];
}

/** The planner's estimate: the top node and the rows it expects to touch. */
async function explain(c: pg.Client, text: string, params: readonly BoundParameter[], prefix: string): Promise<ApprovalPreview> {
  await c.query('BEGIN READ ONLY');
  try {
    await c.query("SET LOCAL statement_timeout = '5s'");
    const r = await query(c, `EXPLAIN (FORMAT JSON) ${text}`, params);
    const raw = r.rows[0]?.[0];
    const doc = JSON.parse(typeof raw === 'string' ? raw : JSON.stringify(raw)) as Array<{ Plan: PlanNode }>;
    const top = doc[0].Plan;
    // A ModifyTable's own estimate is 0 rows returned; the rows it touches are its input's.
    const touched = top['Node Type'] === 'ModifyTable' ? (top.Plans?.[0]?.['Plan Rows'] ?? top['Plan Rows']) : top['Plan Rows'];
    const node = [top['Node Type'] === 'ModifyTable' && top.Operation ? top.Operation : top['Node Type'], top['Relation Name'] ? `on ${top['Relation Name']}` : ''].filter(Boolean).join(' ');
    const input = top['Node Type'] === 'ModifyTable' && top.Plans?.[0] ? `, from ${top.Plans[0]['Node Type']}${top.Plans[0]['Relation Name'] ? ` on ${top.Plans[0]['Relation Name']}` : ''}` : '';
    return { kind: 'explain', summary: `${prefix}planner estimate: about ${touched ?? '?'} rows (${node}${input}); nothing was run`, ...(touched !== undefined ? { rows: touched } : {}) };
  } finally {
    await c.query('ROLLBACK').catch(() => {});
  }
}

/** Why a dry run could leave effects behind a ROLLBACK, or undefined when it cannot. */
async function irreversible(c: pg.Client, w: ParsedWrite | undefined, functions: readonly string[]): Promise<string | undefined> {
  if (!w || !w.table) return 'only a single INSERT, UPDATE or DELETE can be dry-run';
  const unsafe = functions.filter((f) => !isSafeBuiltin(f) && !ROLLBACK_SAFE.has(f.replace(/^pg_catalog\./, '')));
  if (unsafe.length > 0) return `it calls ${unsafe.join(', ')}, whose effects a rollback may not undo`;
  const r = await c.query<{ relkind: string; triggers: boolean; rules: boolean; seq_default: boolean }>(
    `SELECT c.relkind::text AS relkind,
            EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal) AS triggers,
            EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.ev_class = c.oid AND r.rulename <> '_RETURN') AS rules,
            EXISTS (SELECT 1 FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                       AND (a.attidentity <> '' OR pg_get_expr(d.adbin, d.adrelid) ~* 'nextval')) AS seq_default
       FROM pg_class c WHERE c.oid = to_regclass($1)`,
    [w.table],
  );
  const t = r.rows[0];
  if (!t) return `its target table ${w.table} could not be resolved`;
  if (t.relkind !== 'r' && t.relkind !== 'p') return `its target ${w.table} is not a plain table (relkind ${t.relkind})`;
  if (t.triggers) return `${w.table} has triggers, which may act outside the transaction`;
  if (t.rules) return `${w.table} has rewrite rules`;
  if (w.type === 'InsertStmt' && t.seq_default) return `${w.table} fills a column from a sequence, which a rollback does not reset`;
  return undefined;
}

function dataRow(cells: Array<string | null>): Buffer {
  const parts = cells.map((v) => (v === null ? null : Buffer.from(v, 'utf8')));
  const len = 4 + 2 + parts.reduce((n, p) => n + 4 + (p ? p.length : 0), 0);
  const b = Buffer.allocUnsafe(1 + len);
  b[0] = 0x44;
  b.writeInt32BE(len, 1);
  b.writeInt16BE(parts.length, 5);
  let o = 7;
  for (const p of parts) {
    b.writeInt32BE(p ? p.length : -1, o);
    o += 4;
    if (p) o += p.copy(b, o);
  }
  return b;
}

/** The text values of a DataRow frame (NULL as null). */
export function readDataRow(b: Buffer): Array<string | null> {
  const n = b.readInt16BE(5);
  const out: Array<string | null> = [];
  let o = 7;
  for (let i = 0; i < n; i++) {
    const len = b.readInt32BE(o);
    o += 4;
    if (len < 0) out.push(null);
    else {
      out.push(b.toString('utf8', o, o + len));
      o += len;
    }
  }
  return out;
}

/**
 * A result's rows as approvers may see them: header first, through the masking layer with the
 * statement's mask plan (fail closed: undefined when it cannot mask), then the PII detectors.
 */
export async function maskedSample(masking: MaskerFactory | null, plan: MaskPlan, fields: readonly pg.FieldDef[], rows: ReadonlyArray<ReadonlyArray<string | null>>): Promise<string[][] | undefined> {
  const info: FieldInfo[] = fields.map((f) => ({ name: f.name, tableOid: f.tableID, columnId: f.columnID, typeOid: f.dataTypeID, format: 0 }));
  const shown = rows.slice(0, SAMPLE_ROWS);
  let masked: Array<Array<string | null>> = shown.map((r) => [...r]);
  if (planNeedsMasking(plan)) {
    if (!masking) return undefined;
    const m = await masking.forResult(info, plan);
    if (m) masked = shown.map((r) => readDataRow(m.maskDataRow(dataRow([...r]))));
  }
  return [fields.map((f) => f.name), ...masked.map((r) => r.map((v) => (v === null ? 'NULL' : redactDetected(v))))];
}

async function dryRun(c: pg.Client, deps: PreviewDeps, input: PreviewInput, w: ParsedWrite): Promise<ApprovalPreview> {
  const ms = deps.timeoutMs ?? 5000;
  // RETURNING * gives the rows written (after) or deleted (before); a statement with its own
  // RETURNING shows that.
  const withReturning = w.returning ? input.text : appendReturning(input.text);
  await c.query('BEGIN');
  try {
    await c.query(`SET LOCAL statement_timeout = ${Math.max(1, Math.floor(ms))}`);
    await c.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.floor(ms / 5))}`);
    const r = await query(c, withReturning ?? input.text, input.parameters);
    const tag = `${r.command} ${r.rowCount ?? 0}`;
    const sample = withReturning !== undefined && r.fields.length > 0 ? await maskedSample(deps.masking, input.plan, r.fields, r.rows) : undefined;
    const which = w.type === 'DeleteStmt' ? 'rows deleted (before)' : 'rows as written (after)';
    return {
      kind: 'dry-run',
      summary: `dry run: ${tag}, rolled back${sample ? `; sample of ${which}` : withReturning !== undefined ? '; sample withheld (it could not be masked)' : ''}`,
      rows: r.rowCount ?? 0,
      ...(sample ? { sample } : {}),
    };
  } finally {
    await c.query('ROLLBACK').catch(() => {});
  }
}

/** `text RETURNING *` when that still parses as the same single write with a RETURNING list. */
export function appendReturning(text: string): string | undefined {
  const t = text.replace(/[\s;]+$/, '');
  const candidate = `${t} RETURNING *`;
  const p = parseOne(candidate);
  return p.one && p.write?.returning ? candidate : undefined;
}

/**
 * Why even planning could run code Airlock has not reviewed, or undefined. The planner folds
 * IMMUTABLE functions with constant arguments, and a user-defined function may be declared
 * IMMUTABLE and still reach outside the transaction (dblink, untrusted languages). So: no
 * preview at all when the statement calls a function that is not a pg_catalog built-in, or a
 * relation it names has defaults, constraints, policies or view rules depending on one.
 */
async function userCode(c: pg.Client, functions: readonly string[], tables: readonly string[]): Promise<string | undefined> {
  const names = functions.map((f) => f.toLowerCase());
  const qualifiedElsewhere = names.filter((f) => f.includes('.') && !f.startsWith('pg_catalog.'));
  if (qualifiedElsewhere.length > 0) return `it calls ${qualifiedElsewhere.join(', ')}`;
  const bare = names.filter((f) => !f.includes('.'));
  const r = await c.query<{ fn: string | null; rel: string | null }>(
    `SELECT (SELECT string_agg(DISTINCT p.proname, ', ') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname <> 'pg_catalog' AND p.proname = ANY($1::text[])) AS fn,
            (SELECT string_agg(DISTINCT rel.oid::regclass::text, ', ')
               FROM unnest($2::text[]) t(name)
               JOIN pg_class rel ON rel.oid = to_regclass(t.name)
               JOIN pg_depend d ON d.refclassid = 'pg_proc'::regclass
                 AND ((d.classid = 'pg_attrdef'::regclass AND d.objid IN (SELECT oid FROM pg_attrdef WHERE adrelid = rel.oid))
                   OR (d.classid = 'pg_constraint'::regclass AND d.objid IN (SELECT oid FROM pg_constraint WHERE conrelid = rel.oid))
                   OR (d.classid = 'pg_policy'::regclass AND d.objid IN (SELECT oid FROM pg_policy WHERE polrelid = rel.oid))
                   OR (d.classid = 'pg_rewrite'::regclass AND d.objid IN (SELECT oid FROM pg_rewrite WHERE ev_class = rel.oid)))
               JOIN pg_proc p ON p.oid = d.refobjid JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname <> 'pg_catalog') AS rel`,
    [bare, [...tables]],
  );
  const row = r.rows[0];
  if (row?.fn) return `it calls ${row.fn}, which is not a PostgreSQL built-in`;
  if (row?.rel) return `${row.rel} runs user-defined functions (defaults, constraints, policies or view rules)`;
  return undefined;
}

/** Relations other than plain tables among those named (views, foreign tables): a dry run could reach past them. */
async function nonTables(c: pg.Client, tables: readonly string[]): Promise<string | undefined> {
  const r = await c.query<{ rel: string | null }>(
    `SELECT string_agg(rel.oid::regclass::text || ' (relkind ' || rel.relkind::text || ')', ', ') AS rel
       FROM unnest($1::text[]) t(name) JOIN pg_class rel ON rel.oid = to_regclass(t.name) WHERE rel.relkind NOT IN ('r', 'p')`,
    [[...tables]],
  );
  return r.rows[0]?.rel ?? undefined;
}

/**
 * Why running `input` before approval could leave effects a ROLLBACK does not undo (the checks of
 * a dry run), or undefined when it cannot. hold-commit runs the statement on the agent's own
 * connection before anyone approved, so it needs the same guarantee. Errors count as unsafe.
 */
export async function rollbackUnsafe(deps: PreviewDeps, input: Omit<PreviewInput, 'mode'>): Promise<string | undefined> {
  const parsed = parseOne(input.text);
  if (!parsed.one) return 'only a single statement can be run in a held transaction';
  let c: pg.Client | undefined;
  try {
    c = await deps.connect();
    c.on('error', () => {});
    const tables = input.tables ?? [];
    return (await userCode(c, input.functions, tables)) ?? (await nonTables(c, tables).then((o) => (o ? `it reads ${o}` : undefined))) ?? (await irreversible(c, parsed.write, input.functions));
  } catch (err) {
    return `its effects could not be checked: ${redactDetected((err as Error).message).slice(0, 200)}`;
  } finally {
    await c?.end().catch(() => {});
  }
}

/** The preview of a held statement; never throws (a failure is shown as the summary). */
export async function previewStatement(deps: PreviewDeps, input: PreviewInput): Promise<ApprovalPreview> {
  const parsed = parseOne(input.text);
  if (!parsed.one) return { kind: input.mode, summary: 'no preview: only a single statement can be previewed' };
  let c: pg.Client | undefined;
  try {
    c = await deps.connect();
    c.on('error', () => {});
    const tables = input.tables ?? [];
    const code = await userCode(c, input.functions, tables);
    if (code) return { kind: input.mode, summary: `no preview: ${code}, which even planning could run` };
    if (input.mode === 'explain') return await explain(c, input.text, input.parameters, '');
    const other = await nonTables(c, tables);
    const why = other ? `it reads ${other}` : await irreversible(c, parsed.write, input.functions);
    if (why) return await explain(c, input.text, input.parameters, `no dry run (${why}); `);
    return await dryRun(c, deps, input, parsed.write!);
  } catch (err) {
    return { kind: input.mode, summary: `no preview: ${redactDetected((err as Error).message).slice(0, 200)}` };
  } finally {
    await c?.end().catch(() => {});
  }
}
