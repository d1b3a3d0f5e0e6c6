// Prints the top self-time and total-time functions of a V8 .cpuprofile (node --cpu-prof), for
// docs/performance.md.   node --import tsx scripts/profile-top.ts FILE.cpuprofile [N]
import { readFileSync } from 'node:fs';

process.stdout.on('error', () => process.exit(0));

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
const [file, n = '25'] = process.argv.slice(2);
const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const byId = new Map(prof.nodes.map((x) => [x.id, x]));
const parent = new Map<number, number>();
for (const x of prof.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
const self = new Map<number, number>();
for (let i = 0; i < prof.samples.length; i++) self.set(prof.samples[i], (self.get(prof.samples[i]) ?? 0) + (prof.timeDeltas[i] ?? 0));
const total = [...self.values()].reduce((a, b) => a + b, 0);
const key = (x: Node) => `${x.callFrame.functionName || '(anonymous)'} ${x.callFrame.url.replace(/^.*\/(gateway|node_modules|scripts)\//, '$1/').replace(/^node:/, 'node:')}:${x.callFrame.lineNumber + 1}`;
const selfBy = new Map<string, number>();
const totalBy = new Map<string, number>();
for (const [id, t] of self) {
  const x = byId.get(id)!;
  selfBy.set(key(x), (selfBy.get(key(x)) ?? 0) + t);
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const k = key(byId.get(cur)!);
    if (seen.has(k)) continue;
    seen.add(k);
    totalBy.set(k, (totalBy.get(k) ?? 0) + t);
  }
}
const idle = selfBy.get('(idle) :0') ?? 0;
console.log(`samples ${(total / 1000).toFixed(0)} ms, idle ${((100 * idle) / total).toFixed(1)}%, busy ${((total - idle) / 1000).toFixed(0)} ms`);
const show = (m: Map<string, number>, title: string) => {
  console.log(`\n${title} (% of busy time)`);
  for (const [k, t] of [...m].filter(([k]) => !k.startsWith('(idle)') && !k.startsWith('(root)')).sort((a, b) => b[1] - a[1]).slice(0, Number(n))) console.log(`${((100 * t) / (total - idle)).toFixed(1).padStart(5)}%  ${k}`);
};
show(selfBy, 'self time');
show(totalBy, 'total time');
