// What the HTTP gateway asks for and refuses so that what passes is what it could check:
// - while a response must be masked, only maskable formats are asked for (Accept), and a Kubernetes
//   field mask covers an object in every wrapper it arrives in (list, watch event, Table row);
// - rules that read bodies (`text` matchers) refuse bodies they cannot read (see binding.ts);
// - method-override parameters (`_method`) are refused, since the upstream would run another method.
import type { RuleConfig } from '../config/schema.ts';
import { compileMatch, type Matcher } from '../policy/match.ts';
import type { CanonicalBody } from './binding.ts';
import type { FieldMask } from './json-mask.ts';

/** Kubernetes wrappers an object arrives in: itself (get, write), a list, a watch event, a Table row. */
const KUBE_WRAPPERS = ['items.', 'object.', 'rows.object.'];

/** A field path written for an object (`data.*`) also masks it inside lists, watch events and Table rows. */
export function kubernetesFieldVariants(f: FieldMask): FieldMask[] {
  if (KUBE_WRAPPERS.some((w) => f.path.startsWith(w))) return [f];
  return [f, ...KUBE_WRAPPERS.map((w) => ({ ...f, path: `${w}${f.path}` }))];
}

/**
 * The Accept sent to a cluster while a response must be masked: JSON only. `as=Table` variants are
 * kept when no field mask applies (detectors mask Table cells and included objects); protobuf,
 * YAML and everything else are dropped.
 */
export function kubernetesMaskedAccept(accept: string | undefined, hasFields: boolean): string {
  if (hasFields || !accept) return 'application/json';
  const kept = accept
    .split(',')
    .map((p) => p.trim())
    .filter((p) => /^application\/json(\s*;|$)/i.test(p));
  return kept.length > 0 ? kept.join(',') : 'application/json';
}

/**
 * The Accept sent to an HTTP service while a response must be masked: only the types Airlock can
 * mask (JSON; plain text when no field mask applies); `application/json` when none of the
 * client's remain (`text/csv`, `*\/*`).
 */
export function serviceMaskedAccept(accept: string | undefined, hasFields: boolean): string {
  const kept = (accept ?? '')
    .split(',')
    .map((p) => p.trim())
    .filter((p) => {
      const t = (p.split(';')[0] ?? '').trim().toLowerCase();
      return t === 'application/json' || t.endsWith('+json') || /^application\/(x-)?ndjson$/.test(t) || (!hasFields && (t === 'text/plain' || t === 'text/event-stream'));
    });
  return kept.length > 0 ? kept.join(', ') : 'application/json';
}

export function isKubernetesTable(doc: unknown): boolean {
  if (doc === null || typeof doc !== 'object') return false;
  const d = doc as { kind?: unknown; object?: { kind?: unknown } };
  return d.kind === 'Table' || d.object?.kind === 'Table';
}

/**
 * Rules that read the request body (a `text` regex, in match or unless), with the rest of their
 * match: when one applies and the body is opaque to it (protobuf, compressed, unparseable), the
 * request is refused rather than decided without the body.
 */
export function compileBodyRules(rules: RuleConfig[]): Array<{ name: string; applies: Matcher }> {
  return rules
    .filter((r) => r.match?.text !== undefined || r.unless?.text !== undefined)
    .map((r) => {
      const rest = { ...(r.match ?? {}) };
      delete rest.text;
      return { name: r.name, applies: compileMatch(rest, `rule ${r.name} match`) };
    });
}

/** Whether the query or a form/JSON body carries a `_method` override parameter. */
export function methodOverrideParam(query: string, body: CanonicalBody): boolean {
  // A name that decodes to `_method` contains `_` or `%5F` as sent: without either, no parse is needed.
  if ((query.includes('_') || query.includes('%')) && new URLSearchParams(query).has('_method')) return true;
  if (body.kind === 'form') return new URLSearchParams(body.text).has('_method');
  if (body.kind === 'json' || body.kind === 'yaml') {
    const v = body.value;
    return v !== null && typeof v === 'object' && !Array.isArray(v) && Object.hasOwn(v, '_method');
  }
  return false;
}
