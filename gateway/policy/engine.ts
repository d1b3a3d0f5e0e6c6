// The policy engine: one decision procedure for every protocol.
//
// Semantics of decide(op), in this order:
//  1. A statement that did not parse (`sql.parseError`) is denied: rule `unparseable-sql`. So is
//     one that changes client_encoding (SET/RESET, SET NAMES, RESET ALL, DISCARD ALL, set_config,
//     ALTER ROLE/DATABASE SET): rule `client-encoding` (Airlock pins the upstream to UTF8; the
//     parser and the server must read the same bytes the same way).
//  2. Rules are the `recommended` profile's rules (policy.profile; a configured rule of the same
//     name replaces one), the enabled built-ins (all deny), then `policy.rules` in config order. A rule
//     applies when its `match` matches and its `unless` (if any) does not. Within a match block
//     every given field must match (AND); within one field's list any entry may match (OR).
//  3. Any applicable deny rule -> deny, naming the first one. An `allow` rule does NOT override a
//     deny: exceptions to a deny rule are written as that rule's `unless`.
//  4. Masks: the global `masking` columns/detectors (rule `masking`) plus the mask blocks of every
//     applicable non-deny rule. One entry per column/detector; the strongest strategy wins
//     (null > redact > hash > partial). With `masking.denyMaskedExpressions`, a statement that
//     reads a masked column inside an expression (`lower(email)`, `row_to_json(c)`) on a table it
//     touches is denied: rule `masked-expression`. `COPY (query) TO STDOUT` carries no column
//     origins, so one that reads a table with masked columns is always denied: `masked-copy-query`.
//  5. No applicable allow/mask/review rule and `policy.default: deny` -> deny `default-deny`.
//     Renaming or moving a relation (or schema) that has masked columns is always denied: rule
//     `masked-rename` (masks are configured by name; the data would leave its name behind).
//  6. Any applicable review rule -> review, naming the first; when several apply their specs
//     combine strictest-wins (largest quorum, every rule's approvers required, shortest timeout
//     and grantTtl, all escalation steps). A SQL PREPARE that would need review is denied (rule
//     `prepare-needs-review`): one approval cannot cover every later EXECUTE of it.
//  7. Otherwise `mask` (naming the first applicable mask rule) or `allow` (naming the first
//     applicable allow rule, if any). Limits are the minimum over every applicable rule's
//     limits; rowsRule/bytesRule name the rule that set the binding one.
// Proxies apply `decision.mask` whenever it is present (allow, mask and review alike).
//
// decideAll(ops) decides each statement of one query string; the most restrictive wins
// (deny > review > mask > allow), masks are the union and limits the minimum across all of them.
import { parseDuration } from '../config/load.ts';
import type { AirlockConfig, RuleConfig } from '../config/schema.ts';
import { builtinRules, recommendedProfileRules } from './builtins.ts';
import type { ColumnMask, Decision, DetectorMask, Limits, MaskPlan, MaskStrategy, ReviewSpec } from './decision.ts';
import { compileMatch, PolicyConfigError, rulePolarity, type Matcher, type MatchSpec } from './match.ts';
import type { ConnectionContext, Identity, Operation } from './operation.ts';
import { classifySql } from './sql/classify.ts';

export { PolicyConfigError } from './match.ts';

type PolicyConfig = AirlockConfig['policy'];
type MaskingConfig = AirlockConfig['masking'];

/** Rule names the engine itself uses in decisions; config rules may not take them. */
export const ENGINE_RULES = [
  'unparseable-sql', 'client-encoding', 'read-only-connection', 'masked-expression', 'masked-copy-query', 'masked-rename', 'prepare-needs-review',
  'default-deny', 'masking',
] as const;

interface CompiledRule {
  name: string;
  action: RuleConfig['action'];
  reason?: string;
  applies: Matcher;
  columns: ColumnMask[];
  detectors: DetectorMask[];
  limits?: Limits;
  review?: ReviewSpec;
}

/** What a read-only connection runs: reads, transaction control, session statements. */
const READ_ONLY_KINDS = new Set(['read', 'transaction', 'utility']);

const STRENGTH: Record<MaskStrategy, number> = { partial: 0, hash: 1, redact: 2, null: 3 };
const RANK: Record<Decision['action'], number> = { allow: 0, mask: 1, review: 2, deny: 3 };

/** `customers.email` -> `public.customers.email`; lower-case. A bare column stays bare (any table). */
export function normalizeMaskColumn(column: string): string {
  const parts = column.trim().toLowerCase().split('.');
  return parts.length === 2 ? `public.${parts[0]}.${parts[1]}` : parts.join('.');
}

function durationMs(value: string, where: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new PolicyConfigError(`${where}: ${(err as Error).message}`);
  }
}

function compileReview(rule: RuleConfig, where: string): ReviewSpec | undefined {
  const r = rule.review;
  if (!r) return undefined;
  const timeoutMs = durationMs(r.timeout, `${where} review.timeout`);
  const escalation = r.escalation.map((step, i) => {
    const afterMs = durationMs(step.after, `${where} review.escalation[${i}].after`);
    if (afterMs >= timeoutMs) {
      throw new PolicyConfigError(`${where} review.escalation[${i}]: after ${step.after} is not before the timeout ${r.timeout}, so it would never fire`);
    }
    return { afterMs, mention: [...step.mention], ...(step.channel ? { channel: step.channel } : {}) };
  });
  escalation.sort((a, b) => a.afterMs - b.afterMs);
  return {
    approvers: [...r.approvers],
    quorum: r.quorum,
    timeoutMs,
    escalation,
    ...(r.channel ? { channel: r.channel } : {}),
    grantTtlMs: durationMs(r.grantTtl, `${where} review.grantTtl`),
    ...(r.holdInTransaction ? { holdInTransaction: true } : {}),
    ...(r.preview && r.preview !== 'none' ? { preview: r.preview } : {}),
    ...(r.maxLockHold ? { maxLockHoldMs: durationMs(r.maxLockHold, `${where} review.maxLockHold`) } : {}),
  };
}

function compileRule(rule: RuleConfig & { match: MatchSpec }, where: string): CompiledRule {
  // Fail closed (see match.ts): deny/review rules restrict, allow/mask rules permit; an `unless` is the opposite.
  const polarity = rulePolarity(rule.action);
  const applies = compileMatch(rule.match ?? {}, `${where} match`, polarity);
  const unless = rule.unless ? compileMatch(rule.unless, `${where} unless`, polarity === 'restrict' ? 'permit' : 'restrict') : undefined;
  if (rule.action === 'review' && !rule.review) throw new PolicyConfigError(`${where}: a review rule needs a review block`);
  if (rule.action === 'mask' && !rule.mask) throw new PolicyConfigError(`${where}: a mask rule needs a mask block`);
  return {
    name: rule.name,
    action: rule.action,
    reason: rule.reason,
    applies: unless ? (op) => applies(op) && !unless(op) : applies,
    columns: (rule.mask?.columns ?? []).map((c) => ({ column: normalizeMaskColumn(c.column), strategy: c.strategy, rule: rule.name })),
    detectors: (rule.mask?.detectors ?? []).map((d) => ({ detector: d.detector, strategy: d.strategy, rule: rule.name })),
    limits: compileLimits(rule, where),
    review: compileReview(rule, where),
  };
}

/** Union of masks: one entry per column / detector, strongest strategy, first rule on ties. */
function mergeMasks(into: MaskPlan, columns: ColumnMask[], detectors: DetectorMask[]): void {
  for (const c of columns) {
    const i = into.columns.findIndex((x) => x.column === c.column);
    if (i < 0) into.columns.push({ ...c });
    else if (STRENGTH[c.strategy] > STRENGTH[into.columns[i].strategy]) into.columns[i] = { ...c };
  }
  for (const d of detectors) {
    const i = into.detectors.findIndex((x) => x.detector === d.detector);
    if (i < 0) into.detectors.push({ ...d });
    else if (STRENGTH[d.strategy] > STRENGTH[into.detectors[i].strategy]) into.detectors[i] = { ...d };
  }
}

function compileLimits(rule: RuleConfig, where: string): Limits | undefined {
  const l = rule.limits;
  if (!l) return undefined;
  const out: Limits = {};
  if (l.maxRowsPerStatement !== undefined) out.maxRowsPerStatement = l.maxRowsPerStatement;
  if (l.maxBytesPerSession !== undefined) out.maxBytesPerSession = l.maxBytesPerSession;
  if (l.maxStatementTime !== undefined) {
    out.maxStatementMs = durationMs(l.maxStatementTime, `${where} limits.maxStatementTime`);
    if (out.maxStatementMs <= 0) throw new PolicyConfigError(`${where} limits.maxStatementTime must be more than 0`);
  }
  return out;
}

/** Strictest of several review specs: see the header (6). */
function combineReviews(rules: CompiledRule[]): ReviewSpec {
  return combineSpecs(rules.map((r) => r.name), rules.map((r) => r.review as ReviewSpec));
}

function combineSpecs(names: string[], specs: ReviewSpec[]): ReviewSpec {
  if (specs.length === 1) return structuredClone(specs[0]);
  const timeoutMs = Math.min(...specs.map((s) => s.timeoutMs));
  const steps = new Map<string, ReviewSpec['escalation'][number]>();
  for (const s of specs) {
    for (const e of s.escalation) {
      // A step due after the combined deadline still fires, just at the deadline's edge.
      const step = { ...e, afterMs: Math.min(e.afterMs, Math.max(0, timeoutMs - 1)), mention: [...e.mention] };
      steps.set(JSON.stringify([step.afterMs, step.mention, step.channel ?? null]), step);
    }
  }
  const channel = specs.find((s) => s.channel !== undefined)?.channel;
  return {
    approvers: [...new Set(specs.flatMap((s) => s.approvers))],
    quorum: Math.max(...specs.map((s) => s.quorum)),
    timeoutMs,
    escalation: [...steps.values()].sort((a, b) => a.afterMs - b.afterMs),
    ...(channel !== undefined ? { channel } : {}),
    grantTtlMs: Math.min(...specs.map((s) => s.grantTtlMs)),
    requireEach: specs.flatMap((s) => s.requireEach ?? [[...s.approvers]]),
    // Several rules: the first preview asked for; the shortest lock hold.
    ...(specs.find((s) => s.preview) ? { preview: specs.find((s) => s.preview)!.preview } : {}),
    ...(specs.some((s) => s.maxLockHoldMs !== undefined) ? { maxLockHoldMs: Math.min(...specs.flatMap((s) => (s.maxLockHoldMs !== undefined ? [s.maxLockHoldMs] : []))) } : {}),
    rules: [...new Set(specs.flatMap((s, i) => s.rules ?? [names[i]]))],
  };
}

function mergeLimits(into: Limits, limits: Limits | undefined, rule?: string): void {
  if (!limits) return;
  const l = limits;
  if (l.maxStatementMs !== undefined && (into.maxStatementMs === undefined || l.maxStatementMs < into.maxStatementMs)) {
    into.maxStatementMs = l.maxStatementMs;
    into.timeRule = rule ?? l.timeRule;
  }
  if (l.maxRowsPerStatement !== undefined && (into.maxRowsPerStatement === undefined || l.maxRowsPerStatement < into.maxRowsPerStatement)) {
    into.maxRowsPerStatement = l.maxRowsPerStatement;
    into.rowsRule = rule ?? l.rowsRule;
  }
  if (l.maxBytesPerSession !== undefined && (into.maxBytesPerSession === undefined || l.maxBytesPerSession < into.maxBytesPerSession)) {
    into.maxBytesPerSession = l.maxBytesPerSession;
    into.bytesRule = rule ?? l.bytesRule;
  }
}

/**
 * A role's policy during an elevation window (config `roles`, gateway/elevation/): the engine's
 * own checks are untouched; the `lift` rules (deny/review only, each must exist) are taken out and
 * the role's `rules` come first. Anything that does not fit is a config error (fail closed).
 */
export interface ElevatedRole {
  role: string;
  lift: readonly string[];
  rules: readonly RuleConfig[];
}

function elevatedRules(e: ElevatedRole, rules: CompiledRule[], names: Set<string>): CompiledRule[] {
  const byName = new Map(rules.map((r) => [r.name, r] as const));
  for (const name of e.lift) {
    const r = byName.get(name);
    if (!r) throw new PolicyConfigError(`roles.${e.role}.lift: there is no rule named ${JSON.stringify(name)} to lift`);
    if (r.action !== 'deny' && r.action !== 'review') throw new PolicyConfigError(`roles.${e.role}.lift: ${name} is an ${r.action} rule; only deny and review rules can be lifted`);
  }
  const extra = e.rules.map((rule, i) => {
    const where = `roles.${e.role}.rules[${i}] (${rule.name})`;
    if ((ENGINE_RULES as readonly string[]).includes(rule.name)) throw new PolicyConfigError(`${where}: the name ${rule.name} is reserved for the engine`);
    if (names.has(rule.name)) throw new PolicyConfigError(`${where}: duplicate rule name ${rule.name} (decisions and audit logs name rules, so names must be unique)`);
    names.add(rule.name);
    return compileRule(rule, where);
  });
  const lifted = new Set(e.lift);
  return [...extra, ...rules.filter((r) => !lifted.has(r.name))];
}

export class PolicyEngine {
  readonly #rules: CompiledRule[];
  readonly #default: PolicyConfig['default'];
  readonly #globalColumns: ColumnMask[];
  readonly #globalDetectors: DetectorMask[];
  readonly #denyMaskedExpressions: boolean;
  readonly #readOnlyConnections: ReadonlySet<string>;

  /** Throws PolicyConfigError for an invalid regex, duration, or duplicate/reserved rule name. */
  constructor(
    policy: Omit<PolicyConfig, 'profile'> & { profile?: PolicyConfig['profile'] },
    masking: MaskingConfig,
    connections: ReadonlyArray<{ name: string; readOnly?: boolean }> = [],
    elevation?: ElevatedRole,
  ) {
    this.#readOnlyConnections = new Set(connections.filter((c) => c.readOnly).map((c) => c.name));
    const recommended = policy.profile === 'recommended';
    const builtins = builtinRules();
    // The profile's rules first; a configured rule with the same name takes the profile rule's place.
    const overrides = new Map(policy.rules.map((r, i) => [r.name, { rule: r, i }] as const));
    const overridden = new Set<string>();
    const profile = (recommended ? recommendedProfileRules() : []).map((rule) => {
      const o = overrides.get(rule.name);
      if (!o) return compileRule(rule, `recommended profile rule ${rule.name}`);
      overridden.add(rule.name);
      return compileRule(o.rule, `policy.rules[${o.i}] (${o.rule.name}, replacing the recommended profile's rule)`);
    });
    const names = new Set(profile.map((r) => r.name));
    const enabled = [...new Set(policy.builtins)].filter((name) => !names.has(name)).map((name) => {
      const rule = builtins[name];
      if (!rule) throw new PolicyConfigError(`policy.builtins: unknown built-in rule ${JSON.stringify(name)}`);
      return compileRule(rule, `built-in rule ${name}`);
    });
    for (const r of enabled) names.add(r.name);
    const configured = policy.rules.flatMap((rule, i) => {
      if (overridden.has(rule.name)) return [];
      const where = `policy.rules[${i}] (${rule.name})`;
      if ((ENGINE_RULES as readonly string[]).includes(rule.name)) throw new PolicyConfigError(`${where}: the name ${rule.name} is reserved for the engine`);
      if (names.has(rule.name)) throw new PolicyConfigError(`${where}: duplicate rule name ${rule.name} (decisions and audit logs name rules, so names must be unique)`);
      names.add(rule.name);
      return [compileRule(rule, where)];
    });
    this.#rules = elevation ? elevatedRules(elevation, [...profile, ...enabled, ...configured], names) : [...profile, ...enabled, ...configured];
    this.#default = policy.default;
    this.#globalColumns = masking.columns.map((c) => ({ column: normalizeMaskColumn(c.column), strategy: c.strategy, rule: 'masking' }));
    this.#globalDetectors = masking.detectors.map((d) => ({ detector: d.detector, strategy: d.strategy, rule: 'masking' }));
    // The recommended profile's guarantee: a masked column leaves only as a plain output column.
    this.#denyMaskedExpressions = masking.denyMaskedExpressions || recommended;
  }

  decide(op: Operation): Decision {
    if (op.sql?.parseError !== undefined) {
      return { action: 'deny', rule: 'unparseable-sql', reason: `the statement could not be parsed, so it cannot be checked: ${op.sql.parseError}` };
    }
    const settings = op.sql?.settings ?? [];
    if (settings.includes('client_encoding') || settings.includes('*')) {
      return {
        action: 'deny',
        rule: 'client-encoding',
        reason: `${settings.includes('*') ? 'RESET ALL / DISCARD ALL resets' : 'this statement changes'} client_encoding, which Airlock keeps at UTF8 so that it reads every query exactly as the server does`,
      };
    }
    if (op.protocol === 'postgres' && this.#readOnlyConnections.has(op.connection.name)) {
      const lifts = settings.some((s) => s === '*' || s === 'transaction_read_only' || s === 'default_transaction_read_only');
      if (lifts || !READ_ONLY_KINDS.has(op.kind)) {
        return {
          action: 'deny',
          rule: 'read-only-connection',
          reason: lifts
            ? `connection ${op.connection.name} is read-only; this statement would change read-only mode`
            : `connection ${op.connection.name} is read-only; this statement is ${op.kind === 'write' ? 'a write (or calls a function Airlock has not reviewed)' : `kind ${op.kind}`}`,
        };
      }
    }
    const mask: MaskPlan = { columns: [], detectors: [], denyMaskedExpressions: this.#denyMaskedExpressions };
    mergeMasks(mask, this.#globalColumns, this.#globalDetectors);
    const limits: Limits = {};
    const reviews: CompiledRule[] = [];
    let masker: CompiledRule | undefined;
    let allower: CompiledRule | undefined;

    for (const rule of this.#rules) {
      if (!rule.applies(op)) continue;
      if (rule.action === 'deny') return { action: 'deny', rule: rule.name, reason: rule.reason ?? `denied by policy rule ${rule.name}` };
      if (rule.action === 'review') reviews.push(rule);
      else if (rule.action === 'mask') masker ??= rule;
      else allower ??= rule;
      mergeMasks(mask, rule.columns, rule.detectors);
      mergeLimits(limits, rule.limits, rule.name);
    }

    const leak = maskedRename(op, mask) ?? this.#maskedExpression(op, mask) ?? maskedCopyQuery(op, mask);
    if (leak) return leak;
    const review = reviews[0];
    if (review && op.sql?.statementTypes[0] === 'PrepareStmt') {
      return {
        action: 'deny',
        rule: 'prepare-needs-review',
        reason: `this PREPARE would need approval (rule ${review.name}), but an approval covers one run and EXECUTE could repeat it; send the statement itself`,
      };
    }
    if (!review && !masker && !allower && this.#default === 'deny') {
      return { action: 'deny', rule: 'default-deny', reason: 'no policy rule allows this operation and policy.default is deny' };
    }
    if (review?.review) {
      return {
        action: 'review',
        rule: review.name,
        reason: reviews.length === 1 ? (review.reason ?? `requires approval (policy rule ${review.name})`) : `requires approval (policy rules ${reviews.map((r) => r.name).join(', ')})`,
        review: combineReviews(reviews),
        mask,
        limits,
      };
    }
    if (masker) return { action: 'mask', rule: masker.name, mask, limits };
    return allower ? { action: 'allow', rule: allower.name, mask, limits } : { action: 'allow', mask, limits };
  }

  decideAll(ops: Operation[]): { decision: Decision; operation: Operation } {
    if (ops.length === 0) throw new TypeError('decideAll needs at least one operation (an empty query has nothing to decide)');
    // One statement (nearly every query string): its own decision, without the merge below.
    if (ops.length === 1) return { decision: this.decide(ops[0]), operation: ops[0] };
    const decisions = ops.map((op) => this.decide(op));
    let at = 0;
    for (let i = 1; i < decisions.length; i++) if (RANK[decisions[i].action] > RANK[decisions[at].action]) at = i;
    const chosen = decisions[at];
    if (chosen.action === 'deny' || decisions.length === 1) return { decision: chosen, operation: ops[at] };

    const mask: MaskPlan = { columns: [], detectors: [], denyMaskedExpressions: false };
    const limits: Limits = {};
    for (const d of decisions) {
      if (d.action === 'deny') continue;
      mergeMasks(mask, d.mask.columns, d.mask.detectors);
      mask.denyMaskedExpressions ||= d.mask.denyMaskedExpressions;
      mergeLimits(limits, d.limits);
    }
    let decision: Decision;
    if (chosen.action === 'review') {
      // Every statement's review requirements hold for the one approval of the whole query string.
      const reviews = decisions.filter((d): d is Extract<Decision, { action: 'review' }> => d.action === 'review');
      decision = { ...chosen, mask, limits, review: combineSpecs(reviews.map((r) => r.rule), reviews.map((r) => r.review)) };
    }
    else if (chosen.action === 'mask') decision = { action: 'mask', rule: chosen.rule, mask, limits };
    else {
      const rule = decisions.find((d): d is Extract<Decision, { action: 'allow' }> => d.action === 'allow' && d.rule !== undefined)?.rule;
      decision = rule ? { action: 'allow', rule, mask, limits } : { action: 'allow', mask, limits };
    }
    return { decision, operation: ops[at] };
  }

  /** denyMaskedExpressions: a masked column read through an expression cannot be masked by OID. */
  #maskedExpression(op: Operation, mask: MaskPlan): Decision | undefined {
    if (!mask.denyMaskedExpressions || !op.sql || op.sql.expressionColumns.length === 0 || mask.columns.length === 0) return undefined;
    if (op.sql.expressionColumns.includes('?')) {
      return {
        action: 'deny',
        rule: 'masked-expression',
        reason: `this statement copies or transforms the rows of a prepared statement Airlock cannot see into, and masked columns (${mask.columns[0].column}, ...) could be among them`,
      };
    }
    const touched = touchedTables(op);
    for (const m of mask.columns) {
      const parts = m.column.split('.');
      const column = parts[parts.length - 1];
      if (parts.length >= 3 && !touched.has(parts[parts.length - 2])) continue;
      for (const expr of op.sql.expressionColumns) {
        const last = expr.split('.').pop();
        if (last === column || last === '*') {
          const how = last === '*' ? `a whole-row reference (${expr})` : `an expression (${expr})`;
          return {
            action: 'deny',
            rule: 'masked-expression',
            reason: `masked column ${m.column} is read inside ${how}, where it cannot be masked; select the column directly`,
          };
        }
      }
    }
    return undefined;
  }
}

/**
 * Table names a statement touches, WITHOUT their schema: the classifier writes an unqualified
 * `customers` as `public.customers`, but search_path may resolve it to `app.customers`. Matching
 * masks by table name alone errs on the side of denying.
 */
function touchedTables(op: Operation): Set<string> {
  return new Set(op.tables.map((t) => t.toLowerCase().split('.').pop() ?? ''));
}

/** Masks are configured by `schema.table.column`: renaming or moving such a table would unmask it. */
function maskedRename(op: Operation, mask: MaskPlan): Decision | undefined {
  const renamed = op.sql?.renamed;
  if (!renamed || mask.columns.length === 0) return undefined;
  for (const r of renamed) {
    const hit = mask.columns.find((m) => {
      const parts = m.column.split('.');
      if (parts.length < 3) return !r.endsWith('.*'); // a bare masked column name: any table may hold it
      const table = parts.slice(-3, -1).join('.');
      // By name alone for relations (search_path may put an unqualified name in another schema).
      return r.endsWith('.*') ? table.startsWith(r.slice(0, -1)) : parts[parts.length - 2] === r.split('.').pop();
    });
    if (hit) {
      return {
        action: 'deny',
        rule: 'masked-rename',
        reason: `${r} has masked columns (${hit.column}); renaming or moving it would leave the mask behind, so it is not allowed through Airlock`,
      };
    }
  }
  return undefined;
}

/**
 * `COPY (query) TO STDOUT` sends no RowDescription, so its fields cannot be traced to table
 * columns and column masks cannot apply: refuse it when it reads a table with masked columns.
 * (`COPY table TO STDOUT` is masked by the proxy from the table's catalog columns.)
 */
function maskedCopyQuery(op: Operation, mask: MaskPlan): Decision | undefined {
  if (op.sql?.copy !== 'to-stdout' || mask.columns.length === 0) return undefined;
  if (!op.sql.statementTypes.some((t) => t !== 'CopyStmt')) return undefined;
  const touched = touchedTables(op);
  const hit = mask.columns.find((m) => touched.has(m.column.split('.').slice(-2, -1)[0] ?? ''));
  if (!hit) return undefined;
  return {
    action: 'deny',
    rule: 'masked-copy-query',
    reason: `COPY (query) TO STDOUT reads ${hit.column}, which is masked, and its output cannot be masked by column; use COPY ${hit.column.split('.').slice(-3, -1).join('.')} TO STDOUT or a SELECT`,
  };
}

/** Classifies a (possibly multi-statement) query string into one Operation per statement. */
export function sqlOperations(
  query: string,
  base: { protocol: 'postgres'; identity: Identity; connection: ConnectionContext },
): Operation[] {
  return classifySql(query).map((s) => ({
    protocol: base.protocol,
    identity: base.identity,
    connection: base.connection,
    kind: s.kind,
    text: s.text,
    tables: s.tables,
    functions: s.functions,
    sql: s.sql,
  }));
}
