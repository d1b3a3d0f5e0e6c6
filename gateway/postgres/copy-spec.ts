// What Airlock needs to know about a COPY ... TO STDOUT statement to mask its output: the table,
// the column list, and the format options, read from the real parser's AST (never guessed from
// text), so masked columns line up with the right fields.
import { parseSync } from 'libpg-query';

export interface CopyOutSpec {
  /** `schema.table` (lower-case, default schema public), undefined for COPY (query) TO. */
  table?: string;
  columns?: string[];
  format: 'text' | 'csv' | 'binary';
  delimiter?: string;
  nullString?: string;
  quote?: string;
  escape?: string;
  /** HEADER: the first line holds column names (text since PG 15, and csv). */
  header?: boolean;
}

interface DefElem {
  defname: string;
  arg?: { String?: { sval: string }; Boolean?: { boolval?: boolean }; Integer?: { ival?: number } };
}

/** HEADER, HEADER true/on/1/match: the parser keeps what was written; no argument means true. */
function headerOn(d: DefElem): boolean {
  if (!d.arg) return true;
  if (d.arg.Boolean) return d.arg.Boolean.boolval === true;
  if (d.arg.Integer) return (d.arg.Integer.ival ?? 0) !== 0;
  const v = d.arg.String?.sval.toLowerCase();
  return v === 'true' || v === 'on' || v === 'match';
}
interface CopyStmtNode {
  relation?: { schemaname?: string; relname: string };
  attlist?: Array<{ String?: { sval: string } }>;
  query?: unknown;
  is_from?: boolean;
  is_program?: boolean;
  filename?: string;
  options?: Array<{ DefElem?: DefElem }>;
}

/** One COPY statement's spec, or undefined when it is not a COPY ... TO STDOUT. */
function specOf(c: CopyStmtNode): CopyOutSpec | undefined {
  if (c.is_from || c.is_program || c.filename) return undefined;
  const spec: CopyOutSpec = { format: 'text' };
  if (c.relation) spec.table = `${(c.relation.schemaname ?? 'public').toLowerCase()}.${c.relation.relname.toLowerCase()}`;
  if (c.attlist?.length) spec.columns = c.attlist.map((a) => a.String?.sval ?? '');
  for (const o of c.options ?? []) {
    const d = o.DefElem;
    if (!d) continue;
    const v = d.arg?.String?.sval;
    if (d.defname === 'format' && (v === 'csv' || v === 'binary' || v === 'text')) spec.format = v;
    else if (d.defname === 'delimiter' && v !== undefined) spec.delimiter = v;
    else if (d.defname === 'null' && v !== undefined) spec.nullString = v;
    else if (d.defname === 'quote' && v !== undefined) spec.quote = v;
    else if (d.defname === 'escape' && v !== undefined) spec.escape = v;
    else if (d.defname === 'header') spec.header = headerOn(d);
  }
  return spec;
}

/**
 * Every COPY ... TO STDOUT in `sql`, in order: the server answers the Nth one with the Nth
 * CopyOutResponse of the query string, so each gets its own table, columns and format. Undefined
 * when the text does not parse (the caller then refuses to relay unmasked output). Requires the
 * parser to be loaded (initSqlParser), which the policy layer does at startup.
 */
export function copyOutSpecs(sql: string): CopyOutSpec[] | undefined {
  let tree: { stmts?: Array<{ stmt?: { CopyStmt?: CopyStmtNode } }> };
  try {
    tree = parseSync(sql) as typeof tree;
  } catch {
    return undefined;
  }
  const out: CopyOutSpec[] = [];
  for (const s of tree.stmts ?? []) {
    const c = s.stmt?.CopyStmt;
    const spec = c && specOf(c);
    if (spec) out.push(spec);
  }
  return out;
}

/** The first COPY ... TO STDOUT in `sql` (see copyOutSpecs). */
export function copyOutSpec(sql: string): CopyOutSpec | undefined {
  return copyOutSpecs(sql)?.[0];
}
