// Benchmark (not a test): CPU time of CopyMasker.maskFrame per CopyData message, for several COPY
// shapes, socket-free (the catalog is an in-memory stand-in, so no PostgreSQL is started).
//   node --import tsx scripts/bench-copy-masking.ts [--rounds 7] [--only NAME] [--base DIR]
// Reported per case: median and best round, ns of this process's CPU per message, for what the
// session calls (maskFrameRegion since round 3: the message in place in the socket chunk, the
// result left in a slab region; before, a subarray per message and maskFrame) and for
// subarray + maskFrame. --base DIR: also an older tree's masker (`git archive <commit> gateway |
// tar -x -C DIR`, DIR needs node_modules), rounds interleaved in this process, for A/B.
// Cases (1000 distinct lines, masked 100 times per round):
//   rule+email     bench-pg.ts's export table (id int, email text `redact`, note text = md5) with
//                  the email detector on: what `COPY bench_export TO STDOUT` costs (= bench-masking)
//   rule+all       same, all six detectors on
//   detect-clean   (id, name, note) with all six detectors, no rule, nothing found: lines unchanged
//   detect-hit     same, every 10th note carries an email or a card (masked)
//   csv rule+email the first case in csv format
//   query-copy     COPY (query) TO (no table): email detector on every column, lines unchanged
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type pg from 'pg';
import { createMaskerFactory, type CopyOptions } from '../gateway/postgres/row-masker.ts';
import type { DetectorName, MaskPlan } from '../gateway/policy/decision.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '7' }, only: { type: 'string' }, base: { type: 'string' } } });
const rounds = Number(values.rounds);

const tables = new Map<string, { oid: number; columns: Array<[string, number]> }>([
  ['public.bench_export', { oid: 100, columns: [['id', 23], ['email', 25], ['note', 25]] }],
  ['public.people', { oid: 101, columns: [['id', 23], ['name', 25], ['note', 25]] }],
]);
const connect = async (): Promise<pg.Client> =>
  ({
    query: async ({ text, values: v }: { text: string; values: unknown[] }) => {
      if (text.includes('to_regclass')) return { rows: [{ oid: String(tables.get(String(v[0]))?.oid ?? null) }] };
      if (text.includes('pg_attribute')) {
        const rows = [];
        for (const [name, t] of tables) {
          if (!(v[0] as number[]).map(Number).includes(t.oid)) continue;
          const [nsp, rel] = name.split('.');
          let attnum = 0;
          for (const [attname, typid] of t.columns) rows.push({ relid: String(t.oid), attnum: ++attnum, nspname: nsp, relname: rel, relkind: 'r', attname, typid: String(typid), ancestors: null });
        }
        return { rows };
      }
      return { rows: [] };
    },
    on: () => undefined,
    end: async () => undefined,
  }) as unknown as pg.Client;

const ALL: DetectorName[] = ['email', 'card', 'ssn', 'phone', 'iban', 'secret'];
const plan = (rule: boolean, detectors: DetectorName[]): MaskPlan => ({
  columns: rule ? [{ column: 'public.bench_export.email', strategy: 'redact', rule: 'r' }] : [],
  detectors: detectors.map((detector) => ({ detector, strategy: 'redact', rule: 'r' })),
  denyMaskedExpressions: false,
});

const md5 = (i: number) => createHash('md5').update(String(i)).digest('hex');
function chunk(lines: string[]): Buffer {
  return Buffer.concat(
    lines.map((l) => {
      const line = Buffer.from(`${l}\n`);
      const c = Buffer.alloc(5 + line.length);
      c[0] = 0x64;
      c.writeInt32BE(4 + line.length, 1);
      line.copy(c, 5);
      return c;
    }),
  );
}
const N = 1000;
const range = (f: (i: number) => string) => Array.from({ length: N }, (_, k) => f(k + 1));

interface Case { name: string; plan: MaskPlan; table: string | undefined; options?: CopyOptions; data: Buffer }
const cases: Case[] = [
  { name: 'rule+email', plan: plan(true, ['email']), table: 'public.bench_export', data: chunk(range((i) => `${i}\tuser${i}@example.com\t${md5(i)}`)) },
  { name: 'rule+all', plan: plan(true, ALL), table: 'public.bench_export', data: chunk(range((i) => `${i}\tuser${i}@example.com\t${md5(i)}`)) },
  { name: 'detect-clean', plan: plan(false, ALL), table: 'public.people', data: chunk(range((i) => `${i}\tPerson Number ${i}\t${md5(i)}`)) },
  {
    name: 'detect-hit',
    plan: plan(false, ALL),
    table: 'public.people',
    data: chunk(range((i) => `${i}\tPerson Number ${i}\t${i % 20 === 0 ? `mail user${i}@example.com` : i % 10 === 0 ? 'card 4242 4242 4242 4242' : md5(i)}`)),
  },
  { name: 'csv rule+email', plan: plan(true, ['email']), table: 'public.bench_export', options: { format: 'csv' }, data: chunk(range((i) => `${i},user${i}@example.com,${md5(i)}`)) },
  { name: 'query-copy', plan: plan(false, ['email']), table: undefined, data: chunk(range((i) => `${i}\tPerson Number ${i}\t${md5(i)}`)) },
];

type Factory = ReturnType<typeof createMaskerFactory>;
const trees: Array<{ name: string; factory: Factory }> = [{ name: 'this tree', factory: createMaskerFactory({ connect, hashKey: 'bench' }) }];
if (values.base) {
  // An older tree (e.g. `git archive <commit> gateway | tar -x -C DIR`), measured in the same process, rounds interleaved.
  const mod = (await import(resolve(values.base, 'gateway/postgres/row-masker.ts'))) as { createMaskerFactory: typeof createMaskerFactory };
  trees.unshift({ name: 'base', factory: mod.createMaskerFactory({ connect, hashKey: 'bench' }) });
}
const REPEAT = 100;
const cpu = (f: () => void): number => {
  const t0 = process.cpuUsage();
  f();
  const t = process.cpuUsage(t0);
  return (t.user + t.system) * 1000; // ns
};
const show = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return `median ${s[s.length >> 1].toFixed(0).padStart(5)} (min ${s[0].toFixed(0).padStart(5)})`;
};
for (const c of cases) {
  if (values.only && values.only !== c.name) continue;
  const offsets: number[] = [];
  for (let off = 0; off < c.data.length; ) {
    offsets.push(off);
    off += c.data.readInt32BE(off + 1) + 1;
  }
  offsets.push(c.data.length);
  const lines = offsets.length - 1;
  const data = c.data;
  const maskers = await Promise.all(trees.map(async (t) => (await t.factory.forCopy(c.plan, c.table, undefined, c.options))!));
  const framePer: number[][] = trees.map(() => []);
  const sessionPer: number[][] = trees.map(() => []);
  for (let round = 0; round < rounds; round++) {
    for (let t = 0; t < trees.length; t++) {
      const m = maskers[t];
      // maskFrame on a view of each message (the session's call before round 3).
      framePer[t].push(cpu(() => {
        for (let k = 0; k < REPEAT; k++) for (let i = 0; i < lines; i++) m.maskFrame(data.subarray(offsets[i], offsets[i + 1]));
      }) / (REPEAT * lines));
      // What the session calls: maskFrameRegion when the tree has it, else the above.
      sessionPer[t].push(m.maskFrameRegion ? cpu(() => {
        for (let k = 0; k < REPEAT; k++) for (let i = 0; i < lines; i++) m.maskFrameRegion!(data, offsets[i], offsets[i + 1]);
      }) / (REPEAT * lines) : framePer[t][round]);
    }
  }
  for (let t = 0; t < trees.length; t++) {
    console.log(`${c.name.padEnd(15)} ${trees[t].name.padEnd(9)} session call ${show(sessionPer[t])} ns/message; subarray+maskFrame ${show(framePer[t])}`);
  }
}
for (const t of trees) await t.factory.close();
