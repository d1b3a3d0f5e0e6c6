// The policy engine: one decision procedure for every protocol.
//
// Semantics of decide(op), in this order:
//  1. A statement that did not parse (`sql.parseError`) is denied: rule `unparseable-sql`.
//  2. Rules are the enabled built-ins (all deny), then `policy.rules` in config order. A rule
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
//  6. Any applicable review rule -> review, with the first such rule's ReviewSpec.
//  7. Otherwise `mask` (naming the first applicable mask rule) or `allow` (naming the first
//     applicable allow rule, if any). Limits are the minimum over every applicable rule's
//     limits; rowsRule/bytesRule name the rule that set the binding one.
// Proxies apply `decision.mask` whenever it is present (allow, mask and review alike).
//
// decideAll(ops) decides each statement of one query string; the most restrictive wins
// (deny > review > mask > allow), masks are the union and limits the minimum across all of them.
import { parseDuration } from '../config/load.ts';
import type { AirlockConfig, RuleConfig } from '../config/schema.ts';
import { builtinRules } from './builtins.ts';
import type { ColumnMask, Decision, DetectorMask, Limits, MaskPlan, MaskStrategy, ReviewSpec } from './decision.ts';
import { compileMatch, PolicyConfigError, rulePolarity, type Matcher, type MatchSpec } from './match.ts';
import type { ConnectionContext, Identity, Operation } from './operation.ts';
import { classifySql } from './sql/classify.ts';

export { PolicyConfigError } from './match.ts';

type PolicyConfig = AirlockConfig['policy'];
type MaskingConfig = AirlockConfig['masking'];

/** Rule names the engine itself uses in decisions; config rules may not take them. */
export const ENGINE_RULES = ['unparseable-sql', 'masked-expression', 'masked-copy-query', 'default-deny', 'masking'] as const;

interface CompiledRule {
  name: string;
  action: RuleConfig['action'];
  reason?: string;
  applies: Matcher;
  columns: ColumnMask[];
  detectors: DetectorMask[];
  limits?: RuleConfig['limits'];
  review?: ReviewSpec;
}

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
    limits: rule.limits,
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

function mergeLimits(into: Limits, limits: Limits | RuleConfig['limits'], rule?: string): void {
  if (!limits) return;
  const l = limits as Limits;
  if (l.maxRowsPerStatement !== undefined && (into.maxRowsPerStatement === undefined || l.maxRowsPerStatement < into.maxRowsPerStatement)) {
    into.maxRowsPerStatement = l.maxRowsPerStatement;
    into.rowsRule = rule ?? l.rowsRule;
  }
  if (l.maxBytesPerSession !== undefined && (into.maxBytesPerSession === undefined || l.maxBytesPerSession < into.maxBytesPerSession)) {
    into.maxBytesPerSession = l.maxBytesPerSession;
    into.bytesRule = rule ?? l.bytesRule;
  }
}

export class PolicyEngine {
  readonly #rules: CompiledRule[];
  readonly #default: PolicyConfig['default'];
  readonly #globalColumns: ColumnMask[];
  readonly #globalDetectors: DetectorMask[];
  readonly #denyMaskedExpressions: boolean;

  /** Throws PolicyConfigError for an invalid regex, duration, or duplicate/reserved rule name. */
  constructor(policy: PolicyConfig, masking: MaskingConfig) {
    const builtins = builtinRules();
    const enabled = [...new Set(policy.builtins)].map((name) => {
      const rule = builtins[name];
      if (!rule) throw new PolicyConfigError(`policy.builtins: unknown built-in rule ${JSON.stringify(name)}`);
      return compileRule(rule, `built-in rule ${name}`);
    });
    const names = new Set(enabled.map((r) => r.name));
    const configured = policy.rules.map((rule, i) => {
      const where = `policy.rules[${i}] (${rule.name})`;
      if ((ENGINE_RULES as readonly string[]).includes(rule.name)) throw new PolicyConfigError(`${where}: the name ${rule.name} is reserved for the engine`);
      if (names.has(rule.name)) throw new PolicyConfigError(`${where}: duplicate rule name ${rule.name} (decisions and audit logs name rules, so names must be unique)`);
      names.add(rule.name);
      return compileRule(rule, where);
    });
    this.#rules = [...enabled, ...configured];
    this.#default = policy.default;
    this.#globalColumns = masking.columns.map((c) => ({ column: normalizeMaskColumn(c.column), strategy: c.strategy, rule: 'masking' }));
    this.#globalDetectors = masking.detectors.map((d) => ({ detector: d.detector, strategy: d.strategy, rule: 'masking' }));
    this.#denyMaskedExpressions = masking.denyMaskedExpressions;
  }

  decide(op: Operation): Decision {
    if (op.sql?.parseError !== undefined) {
      return { action: 'deny', rule: 'unparseable-sql', reason: `the statement could not be parsed, so it cannot be checked: ${op.sql.parseError}` };
    }
    const mask: MaskPlan = { columns: [], detectors: [], denyMaskedExpressions: this.#denyMaskedExpressions };
    mergeMasks(mask, this.#globalColumns, this.#globalDetectors);
    const limits: Limits = {};
    let review: CompiledRule | undefined;
    let masker: CompiledRule | undefined;
    let allower: CompiledRule | undefined;

    for (const rule of this.#rules) {
      if (!rule.applies(op)) continue;
      if (rule.action === 'deny') return { action: 'deny', rule: rule.name, reason: rule.reason ?? `denied by policy rule ${rule.name}` };
      if (rule.action === 'review') review ??= rule;
      else if (rule.action === 'mask') masker ??= rule;
      else allower ??= rule;
      mergeMasks(mask, rule.columns, rule.detectors);
      mergeLimits(limits, rule.limits, rule.name);
    }

    const leak = this.#maskedExpression(op, mask) ?? maskedCopyQuery(op, mask);
    if (leak) return leak;
    if (!review && !masker && !allower && this.#default === 'deny') {
      return { action: 'deny', rule: 'default-deny', reason: 'no policy rule allows this operation and policy.default is deny' };
    }
    if (review?.review) {
      return {
        action: 'review',
        rule: review.name,
        reason: review.reason ?? `requires approval (policy rule ${review.name})`,
        review: structuredClone(review.review),
        mask,
        limits,
      };
    }
    if (masker) return { action: 'mask', rule: masker.name, mask, limits };
    return allower ? { action: 'allow', rule: allower.name, mask, limits } : { action: 'allow', mask, limits };
  }

  decideAll(ops: Operation[]): { decision: Decision; operation: Operation } {
    if (ops.length === 0) throw new TypeError('decideAll needs at least one operation (an empty query has nothing to decide)');
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
    if (chosen.action === 'review') decision = { ...chosen, mask, limits };
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
    const touched = new Set(op.tables.map((t) => t.toLowerCase()));
    for (const m of mask.columns) {
      const parts = m.column.split('.');
      const column = parts[parts.length - 1];
      if (parts.length >= 3 && !touched.has(parts.slice(-3, -1).join('.'))) continue;
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
 * `COPY (query) TO STDOUT` sends no RowDescription, so its fields cannot be traced to table
 * columns and column masks cannot apply: refuse it when it reads a table with masked columns.
 * (`COPY table TO STDOUT` is masked by the proxy from the table's catalog columns.)
 */
function maskedCopyQuery(op: Operation, mask: MaskPlan): Decision | undefined {
  if (op.sql?.copy !== 'to-stdout' || mask.columns.length === 0) return undefined;
  if (!op.sql.statementTypes.some((t) => t !== 'CopyStmt')) return undefined;
  const touched = new Set(op.tables.map((t) => t.toLowerCase()));
  const hit = mask.columns.find((m) => touched.has(m.column.split('.').slice(-3, -1).join('.')));
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
