// A renderer for the subset of Helm's Go templates the Airlock chart uses (no Helm in CI): actions
// with `{{-`/`-}}` trimming, comments, `define`/`include`, `if`, `with`, `end`, field paths from
// `.`, string and number literals, and the functions toYaml, quote, nindent, indent, sha256sum.
// Anything else is an error, so a template that `helm template` would read differently cannot
// pass silently: the chart must stay inside this subset (or the renderer must grow with it).
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';

type Block = { t: 'if' | 'with'; expr: string; body: Node[]; else: Node[] };
type Define = { t: 'define'; name: string; body: Node[] };
type Node = { t: 'text'; s: string } | { t: 'out'; expr: string } | Block | Define;

export class TemplateError extends Error {}

function tokenize(src: string, file: string): Node[] {
  const out: Node[] = [];
  const re = /\{\{(-?)\s*([\s\S]*?)\s*(-?)\}\}/g;
  let last = 0;
  let trimNext = false;
  for (let m = re.exec(src); m; m = re.exec(src)) {
    let text = src.slice(last, m.index);
    if (trimNext) text = text.replace(/^\s+/, '');
    if (m[1] === '-') text = text.replace(/\s+$/, '');
    if (text) out.push({ t: 'text', s: text });
    trimNext = m[3] === '-';
    last = re.lastIndex;
    const body = m[2];
    if (body.startsWith('/*')) {
      if (!body.endsWith('*/')) throw new TemplateError(`${file}: unterminated comment`);
      continue;
    }
    out.push({ t: 'out', expr: body });
  }
  let tail = src.slice(last);
  if (trimNext) tail = tail.replace(/^\s+/, '');
  if (tail) out.push({ t: 'text', s: tail });
  return out;
}

/** Nests if/with/define ... end. */
function parse(tokens: Node[], file: string): Node[] {
  const root: Node[] = [];
  const stack: { node: Block | Define; inElse: boolean }[] = [];
  const target = () => {
    const top = stack[stack.length - 1];
    if (!top) return root;
    return top.inElse && top.node.t !== 'define' ? top.node.else : top.node.body;
  };
  for (const tok of tokens) {
    if (tok.t !== 'out') {
      target().push(tok);
      continue;
    }
    const m = /^(if|with|define|end|else|range)\b\s*(.*)$/s.exec(tok.expr);
    if (!m) {
      target().push(tok);
      continue;
    }
    const [, kw, rest] = m;
    if (kw === 'range') throw new TemplateError(`${file}: range is outside the supported subset`);
    if (kw === 'end') {
      if (!stack.pop()) throw new TemplateError(`${file}: end without a block`);
    } else if (kw === 'else') {
      const top = stack[stack.length - 1];
      if (!top || top.node.t === 'define' || rest) throw new TemplateError(`${file}: unsupported else`);
      top.inElse = true;
    } else if (kw === 'define') {
      const name = /^"([^"]+)"$/.exec(rest)?.[1];
      if (!name) throw new TemplateError(`${file}: define needs a quoted name`);
      const node = { t: 'define' as const, name, body: [] as Node[] };
      target().push(node);
      stack.push({ node, inElse: false });
    } else {
      const node = { t: kw as 'if' | 'with', expr: rest, body: [] as Node[], else: [] as Node[] };
      target().push(node);
      stack.push({ node, inElse: false });
    }
  }
  if (stack.length) throw new TemplateError(`${file}: unclosed ${stack[stack.length - 1].node.t}`);
  return root;
}

function truthy(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v as object).length > 0;
  return true;
}

function toYaml(v: unknown): string {
  if (v === undefined || v === null) return '';
  return YAML.stringify(v, { lineWidth: 0 }).replace(/\n$/, '');
}

function indent(n: number, s: string): string {
  const pad = ' '.repeat(n);
  return s.split('\n').map((l) => pad + l).join('\n');
}

class Renderer {
  readonly defines = new Map<string, Node[]>();
  constructor(readonly file: () => string) {}

  private words(expr: string): string[] {
    const words = expr.match(/"(?:[^"\\]|\\.)*"|\S+/g);
    if (!words) throw new TemplateError(`${this.file()}: empty action`);
    return words;
  }

  private value(word: string, dot: unknown): unknown {
    if (word.startsWith('"')) return JSON.parse(word) as string;
    if (/^-?\d+$/.test(word)) return Number(word);
    if (word === '.') return dot;
    if (word.startsWith('.')) {
      let v: unknown = dot;
      for (const part of word.slice(1).split('.')) {
        if (v === undefined || v === null || typeof v !== 'object') return undefined;
        v = (v as Record<string, unknown>)[part];
      }
      return v;
    }
    throw new TemplateError(`${this.file()}: unsupported operand ${word}`);
  }

  private call(fn: string, args: unknown[]): unknown {
    switch (fn) {
      case 'toYaml':
        return toYaml(args[0]);
      case 'quote':
        return JSON.stringify(args[0] === undefined || args[0] === null ? '' : String(args[0]));
      case 'nindent':
        return '\n' + indent(Number(args[0]), String(args[1] ?? ''));
      case 'indent':
        return indent(Number(args[0]), String(args[1] ?? ''));
      case 'sha256sum':
        return createHash('sha256').update(String(args[0] ?? '')).digest('hex');
      case 'include': {
        const body = this.defines.get(String(args[0]));
        if (!body) throw new TemplateError(`${this.file()}: include of undefined template ${String(args[0])}`);
        return this.render(body, args[1]);
      }
      default:
        throw new TemplateError(`${this.file()}: function ${fn} is outside the supported subset`);
    }
  }

  eval(expr: string, dot: unknown): unknown {
    let acc: unknown;
    let first = true;
    for (const stage of expr.split(/\s\|\s/)) {
      const [head, ...rest] = this.words(stage.trim());
      const args = rest.map((w) => this.value(w, dot));
      if (!first) args.push(acc);
      if (head.startsWith('.') || head.startsWith('"') || /^-?\d+$/.test(head)) {
        if (!first || rest.length) throw new TemplateError(`${this.file()}: cannot apply ${head}`);
        acc = this.value(head, dot);
      } else acc = this.call(head, args);
      first = false;
    }
    return acc;
  }

  render(nodes: Node[], dot: unknown): string {
    let out = '';
    for (const n of nodes) {
      if (n.t === 'text') out += n.s;
      else if (n.t === 'define') this.defines.set(n.name, n.body);
      else if (n.t === 'out') {
        const v = this.eval(n.expr, dot);
        if (v === undefined || v === null) throw new TemplateError(`${this.file()}: {{ ${n.expr} }} has no value (helm would print <no value>)`);
        out += typeof v === 'object' ? JSON.stringify(v) : String(v);
      } else {
        const v = this.eval(n.expr, dot);
        if (truthy(v)) out += this.render(n.body, n.t === 'with' ? v : dot);
        else out += this.render(n.else, dot);
      }
    }
    return out;
  }
}

export interface RenderedManifest {
  template: string;
  text: string;
  objects: Record<string, unknown>[];
}

/** `helm template RELEASE CHART` for the supported subset: every template's objects. */
export function renderChart(chartDir: string, release: string, overrides: Record<string, unknown> = {}): RenderedManifest[] {
  const chart = YAML.parse(readFileSync(join(chartDir, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
  const values = deepMerge(YAML.parse(readFileSync(join(chartDir, 'values.yaml'), 'utf8')) as Record<string, unknown>, overrides);
  const ctx = {
    Values: values,
    Release: { Name: release, Namespace: 'default', Service: 'Helm' },
    Chart: { Name: chart.name, Version: chart.version, AppVersion: chart.appVersion },
  };
  const dir = join(chartDir, 'templates');
  const files = readdirSync(dir).sort();
  let current = '';
  const r = new Renderer(() => current);
  // Helpers first (`_*.tpl`), as Helm loads every file before rendering any.
  for (const f of files.filter((f) => f.startsWith('_'))) {
    current = f;
    r.render(parse(tokenize(readFileSync(join(dir, f), 'utf8'), f), f), ctx);
  }
  const out: RenderedManifest[] = [];
  for (const f of files.filter((f) => !f.startsWith('_') && /\.ya?ml$/.test(f))) {
    current = f;
    const text = r.render(parse(tokenize(readFileSync(join(dir, f), 'utf8'), f), f), ctx);
    const objects = YAML.parseAllDocuments(text)
      .map((d) => {
        if (d.errors.length) throw new TemplateError(`${f}: rendered YAML is invalid: ${d.errors[0].message}\n${text}`);
        return d.toJS() as Record<string, unknown> | null;
      })
      .filter((o): o is Record<string, unknown> => o !== null);
    out.push({ template: f, text, objects });
  }
  return out;
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && cur && typeof cur === 'object' && !Array.isArray(cur) ? deepMerge(cur as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}
