// Content masking of command output, opt-in per rule: only the detectors of the rule that
// decided the operation (a `mask` rule with `mask.detectors`) apply, never the global
// `masking.detectors`, so `cat backup.tar` through a plain allow rule is never touched.
// Works line by line on latin1 "binary strings" (see masking/detectors.ts): bytes outside the
// detected spans pass unchanged. A line longer than MAX_LINE is masked in pieces (a value
// split across the cut may then escape a detector; rules that need certainty should deny).
import { Transform, type TransformCallback } from 'node:stream';
import type { RuleConfig } from '../config/schema.ts';
import type { Decision, DetectorMask } from '../policy/decision.ts';
import { compileMatch } from '../policy/match.ts';
import type { Operation } from '../policy/operation.ts';
import { detectorMask, findSpans, quickCheckString } from '../masking/detectors.ts';
import { applyStrategy, redactToken, type Hasher } from '../masking/strategies.ts';

const MAX_LINE = 64 * 1024;

/** The rule-level detectors of a decision (global `masking` ones excluded), or none. */
export function outputDetectors(d: Decision): DetectorMask[] {
  if (d.action === 'deny') return [];
  return d.mask.detectors.filter((m) => m.rule !== 'masking');
}

const STRENGTH: Record<DetectorMask['strategy'], number> = { partial: 0, hash: 1, redact: 2, null: 3 };

/**
 * Output masks fail closed for what Airlock cannot see into: for a complex command or a shell,
 * every mask rule that could apply (its match read as a deny rule's: programs match any complex
 * command, `kinds: [exec]` covers exec-complex and shell) adds its detectors. It masks only;
 * whether the operation may run at all is the policy engine's decision, where mask rules allow
 * only what they provably match.
 */
export function opaqueOutputMasks(rules: RuleConfig[]): (op: Operation) => DetectorMask[] {
  const compiled = rules
    .filter((r) => r.action !== 'deny' && (r.mask?.detectors.length ?? 0) > 0)
    .map((r) => {
      const applies = compileMatch(r.match ?? {}, `policy rule ${r.name} match`, 'restrict');
      const unless = r.unless ? compileMatch(r.unless, `policy rule ${r.name} unless`, 'permit') : undefined;
      return { applies: (op: Operation) => applies(op) && !(unless && unless(op)), detectors: (r.mask?.detectors ?? []).map((d) => ({ detector: d.detector, strategy: d.strategy, rule: r.name })) };
    });
  return (op) => {
    if (op.protocol !== 'ssh' || (op.kind !== 'exec-complex' && op.kind !== 'shell')) return [];
    return compiled.filter((c) => c.applies(op)).flatMap((c) => c.detectors);
  };
}

/** One entry per detector, the strongest strategy winning. */
export function mergeDetectors(...lists: DetectorMask[][]): DetectorMask[] {
  const out = new Map<string, DetectorMask>();
  for (const list of lists) {
    for (const d of list) {
      const had = out.get(d.detector);
      if (!had || STRENGTH[d.strategy] > STRENGTH[had.strategy]) out.set(d.detector, d);
    }
  }
  return [...out.values()];
}

export class OutputMasker extends Transform {
  private pending = '';
  private readonly enabled: number;
  private readonly strategies: Map<string, DetectorMask>;
  /** Spans replaced so far, by detector (for the recording). */
  readonly masked = new Map<string, number>();

  constructor(
    detectors: DetectorMask[],
    private readonly hasher: Hasher,
  ) {
    // 32 KiB SSH packets against the default 16 KiB mark would pause the channel once per packet.
    super({ highWaterMark: 1024 * 1024 });
    this.enabled = detectorMask(detectors.map((d) => d.detector));
    this.strategies = new Map(detectors.map((d) => [d.detector, d]));
  }

  private maskText(text: string): string {
    const spans = findSpans(text, quickCheckString(text, this.enabled));
    if (spans.length === 0) return text;
    let out = '';
    let at = 0;
    for (const s of spans) {
      const m = this.strategies.get(s.detector);
      if (!m) continue;
      out += text.slice(at, s.start);
      const value = text.slice(s.start, s.end);
      // 'null' has no meaning in a byte stream: the span is redacted instead.
      out += applyStrategy(m.strategy, value, this.hasher, s.detector) ?? redactToken(s.detector);
      at = s.end;
      this.masked.set(s.detector, (this.masked.get(s.detector) ?? 0) + 1);
    }
    return out + text.slice(at);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let text = this.pending + chunk.toString('latin1');
    const nl = text.lastIndexOf('\n');
    if (nl < 0 && text.length < MAX_LINE) {
      this.pending = text;
      return cb();
    }
    const cut = nl >= 0 ? nl + 1 : text.length;
    this.pending = text.slice(cut);
    text = text.slice(0, cut);
    this.push(Buffer.from(this.maskText(text), 'latin1'));
    cb();
  }

  override _flush(cb: TransformCallback): void {
    if (this.pending) this.push(Buffer.from(this.maskText(this.pending), 'latin1'));
    this.pending = '';
    cb();
  }
}
