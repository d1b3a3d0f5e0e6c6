// Which cursor a statement reads, declares or closes, from the real parser's AST, so row limits
// count every row a cursor returns across all the FETCHes that read it (`FETCH 100` in a loop
// must not reset the count the way a new statement does).
import { parseSync } from 'libpg-query';

export interface CursorUse {
  /** FETCH (not MOVE) from this cursor: its rows count against the cursor's total. */
  fetch?: string;
  /** DECLARE of this cursor: its count starts over. */
  declare?: string;
  /** CLOSE of this cursor, or '*' for CLOSE ALL. */
  close?: string;
}

interface Node {
  FetchStmt?: { portalname?: string; ismove?: boolean };
  DeclareCursorStmt?: { portalname?: string };
  ClosePortalStmt?: { portalname?: string };
}

const cache = new Map<string, CursorUse[] | null>();
const CACHE_MAX = 256;

/** Per top-level statement of `sql` (index = position in the query string); null when it does not parse. */
export function cursorUses(sql: string): CursorUse[] | null {
  const hit = cache.get(sql);
  if (hit !== undefined) return hit;
  let out: CursorUse[] | null;
  try {
    const tree = parseSync(sql) as { stmts?: Array<{ stmt?: Node }> };
    out = (tree.stmts ?? []).map(({ stmt }) => {
      if (stmt?.FetchStmt && !stmt.FetchStmt.ismove) return { fetch: stmt.FetchStmt.portalname ?? '' };
      if (stmt?.DeclareCursorStmt) return { declare: stmt.DeclareCursorStmt.portalname ?? '' };
      if (stmt?.ClosePortalStmt) return { close: stmt.ClosePortalStmt.portalname ?? '*' };
      return {};
    });
  } catch {
    out = null;
  }
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(sql, out);
  return out;
}

/** Cheap prefilter: only texts that mention a cursor verb are parsed. */
export function mayUseCursor(sql: string): boolean {
  return /fetch|declare|close/i.test(sql);
}
