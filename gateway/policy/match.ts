// Compiles a rule's `match` / `unless` block into one predicate over Operations. Patterns and
// regexes are compiled once, at engine construction; a bad regex fails there, naming the rule.
import { ConfigError } from '../config/load.ts';
import type { RuleMatch } from '../config/schema.ts';
import type { Operation } from './operation.ts';

/**
 * The config's match block plus two engine-level fields the built-in rules need:
 * - `alterDrops`: ALTER TABLE ... DROP COLUMN / CONSTRAINT (sql.alterDrops);
 * - `any`: OR of sub-matches, so one built-in rule can cover several shapes (e.g. dblink
 *   functions OR CREATE SERVER) and still go through the single matching path.
 */
export type MatchSpec = RuleMatch & { alterDrops?: boolean; any?: MatchSpec[]; agents?: boolean; lockModes?: string[] };

export type Matcher = (op: Operation) => boolean;

/**
 * How a rule's match reads the facts Airlock cannot prove about an SSH command (fail closed):
 * - `restrict` (deny and review rules, and the `unless` of allow/mask rules): `functions`
 *   matches every complex command and every shell too, since Airlock cannot prove they do not run
 *   that program; `kinds: [exec]` also covers `exec-complex` and `shell`, and `exec-complex`
 *   covers `shell` (each can do what the narrower one can).
 * - `permit` (allow and mask rules, and the `unless` of deny/review rules): `functions` matches
 *   only a simple command every one of whose programs is listed; `kinds` match exactly.
 * Other protocols are unaffected.
 */
export type MatchPolarity = 'restrict' | 'permit';

export function rulePolarity(action: string): MatchPolarity {
  return action === 'deny' || action === 'review' ? 'restrict' : 'permit';
}

/** SSH kinds an operation kind named in a restricting rule also covers. */
const SSH_KIND_COVERS: Record<string, string[]> = { exec: ['exec-complex', 'shell'], 'exec-complex': ['shell'] };

/** An SSH operation whose programs Airlock cannot know. */
function opaqueSsh(op: Operation): boolean {
  return op.protocol === 'ssh' && (op.kind === 'exec-complex' || op.kind === 'shell');
}

/** A policy that validated against the schema but cannot be compiled (bad regex, duration...). */
export class PolicyConfigError extends ConfigError {
  constructor(message: string) {
    super(message);
    this.name = 'PolicyConfigError';
  }
}

const WRITE_TYPES = ['DeleteStmt', 'UpdateStmt', 'MergeStmt'];

/**
 * Lower-case names (parse-tree node names such as `SelectStmt`: a small, fixed vocabulary), memoised:
 * every statement-type check of every rule would otherwise allocate a new string per statement.
 * Bounded, so even an unbounded vocabulary costs no more than toLowerCase.
 */
const lowered = new Map<string, string>();
function lowerName(s: string): string {
  let l = lowered.get(s);
  if (l === undefined) {
    l = s.toLowerCase();
    if (lowered.size < 4096) lowered.set(s, l);
  }
  return l;
}

/** Glob with `*` only; everything else literal. Anchored. */
export function globToRegExp(pattern: string, caseInsensitive: boolean): RegExp {
  const body = pattern
    .split('*')
    .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${body}$`, caseInsensitive ? 'i' : '');
}

function nameMatcher(patterns: string[]): (value: string) => boolean {
  const exact = new Set(patterns.filter((p) => !p.includes('*')));
  const globs = patterns.filter((p) => p.includes('*')).map((p) => globToRegExp(p, false));
  return (v) => exact.has(v) || globs.some((g) => g.test(v));
}

/** Case-insensitive globs (setting names). */
function nameMatcherCI(patterns: string[]): (value: string) => boolean {
  const res = patterns.map((p) => globToRegExp(p.trim().toLowerCase(), true));
  return (v) => res.some((r) => r.test(v));
}

/** `*` is any table; a bare name is `public.<name>`; case-insensitive. */
export function tablePatterns(patterns: string[]): (table: string) => boolean {
  const res = patterns.map((p) => {
    const lower = p.trim().toLowerCase();
    if (lower === '*') return /^.*$/;
    return globToRegExp(lower.includes('.') ? lower : `public.${lower}`, true);
  });
  return (t) => {
    const lower = t.toLowerCase(); // once per table, not once per pattern
    for (const r of res) if (r.test(lower)) return true;
    return false;
  };
}

/**
 * A bare pattern (`pg_read_file`) matches the function in any schema; a qualified one matches
 * the qualified call, and `pg_catalog.x` also the bare call `x` (bare names resolve to
 * pg_catalog first).
 */
export function functionPatterns(patterns: string[]): (fn: string) => boolean {
  const compiled = patterns.map((p) => {
    const lower = p.trim().toLowerCase();
    const dot = lower.lastIndexOf('.');
    if (dot < 0) return { schema: undefined, name: globToRegExp(lower, true) };
    return { schema: globToRegExp(lower.slice(0, dot), true), name: globToRegExp(lower.slice(dot + 1), true) };
  });
  return (fn) => {
    const lower = fn.toLowerCase();
    const dot = lower.lastIndexOf('.');
    const schema = dot < 0 ? undefined : lower.slice(0, dot);
    const name = dot < 0 ? lower : lower.slice(dot + 1);
    return compiled.some((c) => {
      if (!c.name.test(name)) return false;
      if (!c.schema) return true;
      return c.schema.test(schema ?? 'pg_catalog');
    });
  };
}

/** Compiles a match block; `where` names the rule in errors. An empty block matches everything. */
export function compileMatch(spec: MatchSpec, where: string, polarity: MatchPolarity = 'restrict'): Matcher {
  const checks: Matcher[] = [];

  if (spec.identities) {
    const m = nameMatcher(spec.identities);
    checks.push((op) => m(op.identity.name));
  }
  if (spec.groups) {
    const m = nameMatcher(spec.groups);
    checks.push((op) => op.identity.groups.some(m));
  }
  if (spec.connections) {
    const m = nameMatcher(spec.connections);
    checks.push((op) => m(op.connection.name));
  }
  if (spec.protocols) {
    const set = new Set<string>(spec.protocols);
    checks.push((op) => set.has(op.protocol));
  }
  if (spec.kinds) {
    const set = new Set(spec.kinds.map((k) => k.toLowerCase()));
    if (polarity === 'restrict') for (const k of [...set]) for (const c of SSH_KIND_COVERS[k] ?? []) set.add(c);
    checks.push((op) => set.has(op.kind));
  }
  if (spec.tables) {
    const m = tablePatterns(spec.tables);
    checks.push((op) => op.tables.some(m));
  }
  if (spec.functions) {
    const m = functionPatterns(spec.functions);
    if (polarity === 'restrict') checks.push((op) => opaqueSsh(op) || op.functions.some(m));
    else checks.push((op) => (op.protocol === 'ssh' ? op.kind === 'exec' && op.functions.length > 0 && op.functions.every(m) : op.functions.some(m)));
  }
  if (spec.statements) {
    const set = new Set(spec.statements.map((s) => s.toLowerCase()));
    checks.push((op) => {
      const types = op.sql?.statementTypes;
      if (types) for (const t of types) if (set.has(lowerName(t))) return true;
      return false;
    });
  }
  if (spec.text) {
    const res = spec.text.map((src) => {
      try {
        return new RegExp(src, 'i');
      } catch (err) {
        throw new PolicyConfigError(`${where}: invalid text regex ${JSON.stringify(src)}: ${(err as Error).message}`);
      }
    });
    checks.push((op) => res.some((r) => r.test(op.text)));
  }
  if (spec.missingWhere !== undefined) {
    const want = spec.missingWhere;
    checks.push((op) => {
      const sql = op.sql;
      if (!sql || !sql.statementTypes.some((t) => WRITE_TYPES.includes(t))) return false;
      return !sql.hasWhere === want;
    });
  }
  if (spec.copy) {
    const set = new Set<string>(spec.copy);
    checks.push((op) => op.sql?.copy !== undefined && set.has(op.sql.copy));
  }
  if (spec.settings) {
    // `*` on the operation is RESET ALL / DISCARD ALL: it changes every setting a rule can name.
    const m = nameMatcherCI(spec.settings);
    checks.push((op) => (op.sql?.settings ?? []).some((s) => s === '*' || m(s)));
  }
  if (spec.lockModes) {
    const set = new Set(spec.lockModes.map((m) => m.toLowerCase()));
    checks.push((op) => op.sql?.lockMode !== undefined && set.has(op.sql.lockMode.toLowerCase()));
  }
  if (spec.alterDrops !== undefined) {
    const want = spec.alterDrops;
    checks.push((op) => op.sql !== undefined && op.sql.alterDrops === want);
  }
  // HTTP / Kubernetes fields: an operation without the facts (another protocol) never matches.
  if (spec.methods) {
    const set = new Set(spec.methods.map((m) => m.toUpperCase()));
    checks.push((op) => op.http !== undefined && set.has(op.http.method));
  }
  if (spec.paths) {
    // Case-insensitive unless the service says its routes are case-sensitive (`/Admin` reaches `/admin` on many servers).
    const exact = spec.paths.map((p) => globToRegExp(p, false));
    const folded = spec.paths.map((p) => globToRegExp(p, true));
    checks.push((op) => op.http !== undefined && (op.http.caseSensitivePaths ? exact : folded).some((r) => r.test(op.http!.path)));
  }
  if (spec.verbs) {
    const set = new Set(spec.verbs.map((v) => v.toLowerCase()));
    checks.push((op) => op.kubernetes !== undefined && set.has(op.kubernetes.verb));
  }
  if (spec.resources) {
    // `secrets` any group; `apps/deployments` that group; `/pods` the core group only.
    const wanted = spec.resources.map((r) => {
      const lower = r.toLowerCase();
      const slash = lower.lastIndexOf('/');
      return slash < 0 ? { group: undefined, resource: lower } : { group: lower.slice(0, slash), resource: lower.slice(slash + 1) };
    });
    checks.push((op) => {
      const k = op.kubernetes;
      if (!k || k.resource === '') return false;
      return wanted.some((w) => (w.resource === '*' || w.resource === k.resource) && (w.group === undefined || w.group === k.apiGroup));
    });
  }
  if (spec.subresources) {
    const set = new Set(spec.subresources.map((v) => v.toLowerCase()));
    checks.push((op) => op.kubernetes?.subresource !== undefined && set.has(op.kubernetes.subresource));
  }
  if (spec.namespaces) {
    const m = nameMatcher(spec.namespaces);
    checks.push((op) => op.kubernetes?.namespace !== undefined && m(op.kubernetes.namespace));
  }
  if (spec.names) {
    const m = nameMatcher(spec.names);
    checks.push((op) => op.kubernetes?.name !== undefined && m(op.kubernetes.name));
  }
  if (spec.clusterScoped !== undefined) {
    const want = spec.clusterScoped;
    checks.push((op) => op.kubernetes !== undefined && op.kubernetes.resource !== '' && op.kubernetes.clusterScoped === want);
  }
  if (spec.agents !== undefined) {
    // Agents are the identities acting for a human owner.
    const want = spec.agents;
    checks.push((op) => (op.identity.owner !== undefined) === want);
  }
  if (spec.any) {
    if (spec.any.length === 0) throw new PolicyConfigError(`${where}: 'any' needs at least one alternative`);
    const alts = spec.any.map((s, i) => compileMatch(s, `${where} any[${i}]`, polarity));
    checks.push((op) => {
      for (const a of alts) if (a(op)) return true;
      return false;
    });
  }

  if (checks.length === 0) return () => true;
  if (checks.length === 1) return checks[0];
  // Every rule's matcher runs for every operation: a plain loop, no closure per call.
  return (op) => {
    for (const c of checks) if (!c(op)) return false;
    return true;
  };
}
