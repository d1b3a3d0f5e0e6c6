// Which JsonMasker masks the response to an operation: the field masks of every applicable
// non-deny rule with `mask.fields` (Kubernetes: in every wrapper an object arrives in) and the
// decision's detectors.
//
// A JsonMasker is immutable once built (compiled field paths, detector bits, the hasher), so one is
// shared by every request with the same plan instead of being built per request. The cache key is
// the whole plan: the protocol (Kubernetes field variants), the indices of the field rules that
// applied, in order, and every detector of the decision (name, strategy, rule). The rules are fixed
// for the life of the gateway (a new config builds a new gateway), so equal keys mean equal maskers.
import type { RuleConfig } from '../config/schema.ts';
import type { Hasher } from '../masking/strategies.ts';
import type { DetectorMask } from '../policy/decision.ts';
import { compileMatch, type Matcher } from '../policy/match.ts';
import type { Operation } from '../policy/operation.ts';
import { kubernetesFieldVariants } from './fail-closed.ts';
import { JsonMasker, parseFieldPath, type FieldMask } from './json-mask.ts';

interface FieldRule {
  applies: Matcher;
  fields: FieldMask[];
  /** The fields with their Kubernetes wrapper variants. */
  kubeFields: FieldMask[];
}

/** Enough for every combination real configs produce; cleared (not grown) beyond it. */
const MAX_CACHED = 512;

export class ResponseMaskers {
  readonly #rules: FieldRule[];
  readonly #hasher: Hasher;
  readonly #cache = new Map<string, JsonMasker | null>();

  /** `rules`: every rule of the listener (deny rules and rules without `mask.fields` are skipped); a bad field path throws here, at start. */
  constructor(rules: RuleConfig[], hasher: Hasher) {
    this.#hasher = hasher;
    this.#rules = [];
    for (const r of rules) {
      const fields = r.mask?.fields ?? [];
      if (r.action === 'deny' || fields.length === 0) continue;
      for (const f of fields) parseFieldPath(f.path);
      const m = compileMatch(r.match ?? {}, `rule ${r.name} match`);
      const unless = r.unless ? compileMatch(r.unless, `rule ${r.name} unless`) : undefined;
      const own = fields.map((f) => ({ path: f.path, strategy: f.strategy, rule: r.name, ...(f.encoding ? { encoding: f.encoding } : {}) }));
      this.#rules.push({ applies: unless ? (op) => m(op) && !unless(op) : m, fields: own, kubeFields: own.flatMap(kubernetesFieldVariants) });
    }
  }

  /** The masker for `op`'s response under `detectors` (the decision's), or undefined when nothing is masked. */
  for(op: Operation, detectors: readonly DetectorMask[]): JsonMasker | undefined {
    const kube = op.protocol === 'kubernetes';
    let key = kube ? 'k' : 'h';
    for (let i = 0; i < this.#rules.length; i++) if (this.#rules[i].applies(op)) key += `,${i}`;
    if (key.length === 1 && detectors.length === 0) return undefined;
    key += '|';
    for (const d of detectors) key += `${d.detector}:${d.strategy}:${JSON.stringify(d.rule)},`;
    const hit = this.#cache.get(key);
    if (hit !== undefined) return hit ?? undefined;
    const m = this.#build(key, kube, detectors);
    if (this.#cache.size >= MAX_CACHED) this.#cache.clear();
    this.#cache.set(key, m ?? null);
    return m;
  }

  #build(key: string, kube: boolean, detectors: readonly DetectorMask[]): JsonMasker | undefined {
    const applied = key.slice(2, key.indexOf('|')).split(',').filter((x) => x !== '');
    const fields: FieldMask[] = [];
    const seen = new Set<string>();
    for (const i of applied) {
      const r = this.#rules[Number(i)];
      for (const f of kube ? r.kubeFields : r.fields) {
        // One mask per path: applying `hash` or `partial` twice would mask the mask.
        const k = `${f.path}\0${f.strategy}\0${f.encoding ?? ''}`;
        if (seen.has(k)) continue;
        seen.add(k);
        fields.push(f);
      }
    }
    if (fields.length === 0 && detectors.length === 0) return undefined;
    return new JsonMasker({ fields, detectors: detectors.map((d) => ({ detector: d.detector, strategy: d.strategy, rule: d.rule })) }, this.#hasher);
  }

  /** Maskers held (tests). */
  get size(): number {
    return this.#cache.size;
  }
}
