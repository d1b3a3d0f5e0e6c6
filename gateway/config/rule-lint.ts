// Warnings about policy rules that can never take effect: a rule that repeats an earlier one,
// a rule shadowed by an earlier deny that matches everything it matches, match blocks that
// contradict themselves (an empty list, a PostgreSQL-only field on an SSH-only rule, a kind no
// operation has) and connections that do not exist. The config still loads; `airlock gateway`
// logs each warning at start so a policy that does less than it says is noticed.
import type { AirlockConfig, RuleConfig, RuleMatch } from './schema.ts';

const KINDS = new Set(['read', 'write', 'ddl', 'admin', 'transaction', 'utility', 'exec', 'shell', 'sftp', 'forward', 'http', 'kubernetes']);
const SQL_KINDS = new Set(['read', 'write', 'ddl', 'admin', 'transaction', 'utility']);
const SQL_FIELDS = ['tables', 'functions', 'statements', 'missingWhere', 'copy', 'settings'] as const;
const HTTP_FIELDS = ['methods', 'paths'] as const;
const K8S_FIELDS = ['verbs', 'resources', 'subresources', 'namespaces', 'names', 'clusterScoped'] as const;

/** A stable text form of a match block: key order and list order do not matter. */
function canonical(m: RuleMatch | undefined): string {
  if (!m) return '';
  const entries = Object.entries(m)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => [k, Array.isArray(v) ? [...v].map(String).sort() : v] as const)
    .sort(([a], [b]) => a.localeCompare(b));
  return JSON.stringify(entries);
}

function contradictions(m: RuleMatch, knownConnections: Set<string>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(m)) {
    if (Array.isArray(v) && v.length === 0) out.push(`match.${k} is an empty list, which matches nothing`);
  }
  const protocols = m.protocols ? new Set(m.protocols) : undefined;
  const only = (fields: readonly string[], protocol: string, label: string) => {
    const used = fields.filter((f) => (m as Record<string, unknown>)[f] !== undefined);
    if (used.length > 0 && protocols && !protocols.has(protocol as never)) {
      out.push(`match.${used[0]} is ${label}-only but match.protocols is [${[...protocols].join(', ')}]`);
    }
  };
  only(SQL_FIELDS, 'postgres', 'PostgreSQL');
  only(K8S_FIELDS, 'kubernetes', 'Kubernetes');
  if (HTTP_FIELDS.some((f) => m[f] !== undefined) && protocols && !protocols.has('http') && !protocols.has('kubernetes')) {
    out.push(`match.${HTTP_FIELDS.find((f) => m[f] !== undefined)} is HTTP-only but match.protocols is [${[...protocols].join(', ')}]`);
  }
  if (m.kinds) {
    const unknown = m.kinds.filter((k) => !KINDS.has(k.toLowerCase()));
    if (unknown.length === m.kinds.length && m.kinds.length > 0) out.push(`match.kinds [${unknown.join(', ')}] names no operation kind (${[...KINDS].join(', ')})`);
    if (SQL_FIELDS.some((f) => m[f] !== undefined) && m.kinds.length > 0 && m.kinds.every((k) => !SQL_KINDS.has(k.toLowerCase()))) {
      out.push('match.kinds lists no SQL kind, but the rule also matches SQL facts');
    }
  }
  if (m.connections && knownConnections.size > 0) {
    const exact = m.connections.filter((c) => !c.includes('*'));
    if (exact.length === m.connections.length && exact.every((c) => !knownConnections.has(c))) {
      out.push(`match.connections [${exact.join(', ')}] names no configured connection`);
    }
  }
  return out;
}

/** True when `later`'s match block matches a subset of what `earlier` matches (conservatively). */
function subsumedBy(later: RuleConfig, earlier: RuleConfig): boolean {
  if (earlier.unless) return false;
  const e = earlier.match ?? {};
  // Only the simplest, certain case: every field the earlier rule constrains, the later rule
  // constrains identically (so it matches a subset).
  for (const [k, v] of Object.entries(e)) {
    if (v === undefined) continue;
    if (canonical({ [k]: v } as RuleMatch) !== canonical({ [k]: (later.match as Record<string, unknown>)[k] } as RuleMatch)) return false;
  }
  return true;
}

export function lintPolicy(config: AirlockConfig): string[] {
  const warnings: string[] = [];
  const connections = new Set<string>([
    ...config.connections.map((c) => c.name),
    ...(config.http?.services ?? []).map((s) => s.name),
    ...(config.http?.clusters ?? []).map((c) => c.name),
    ...(config.ssh?.targets ?? []).map((t) => t.name),
  ]);
  const rules = config.policy.rules;
  rules.forEach((rule, i) => {
    const where = `policy.rules[${i}] (${rule.name})`;
    for (const c of contradictions(rule.match ?? {}, connections)) warnings.push(`${where} can never match: ${c}`);
    for (let j = 0; j < i; j++) {
      const earlier = rules[j];
      if (canonical(earlier.match) === canonical(rule.match) && canonical(earlier.unless) === canonical(rule.unless) && earlier.action === rule.action) {
        warnings.push(`${where} repeats policy.rules[${j}] (${earlier.name}) (same match, unless and action), so it adds nothing`);
        break;
      }
      if (earlier.action === 'deny' && rule.action !== 'deny' && subsumedBy(rule, earlier)) {
        warnings.push(`${where} is shadowed: policy.rules[${j}] (${earlier.name}) denies everything it matches, and a deny always wins`);
        break;
      }
    }
  });
  return warnings;
}
