// CPU per masked response body: the parse path (JSON.parse, JsonMasker.mask, JSON.stringify,
// Buffer.from) against the byte path (JsonMasker.maskBytes), on scripts/bench-http.ts's document
// and on larger ones. In one process, interleaved, min and median over rounds.
//
//   node --import tsx scripts/bench-json-mask.ts [--rounds 7]
import { JsonMasker } from '../gateway/http/json-mask.ts';
import { Hasher } from '../gateway/masking/strategies.ts';

const i = process.argv.indexOf('--rounds');
const rounds = i >= 0 ? Number(process.argv[i + 1]) : 7;
const users = (n: number) => JSON.stringify({ users: Array.from({ length: n }, (_, k) => ({ id: k, name: `user ${k}`, email: `user${k}@example.com`, plan: 'pro', tags: ['a', 'b'], address: { city: 'Berlin', zip: '10115' } })) });
const bench = JSON.stringify({ users: Array.from({ length: 10 }, (_, k) => ({ id: k, name: `user ${k}`, email: `user${k}@example.com`, plan: 'pro' })) });
const docs: Array<[string, Buffer]> = [
  ['bench document (671 B)', Buffer.from(bench)],
  ['100 users (13 KB)', Buffer.from(users(100))],
  ['1000 users (133 KB)', Buffer.from(users(1000))],
];
const m = new JsonMasker({ fields: [{ path: 'users.email', strategy: 'redact', rule: 'r' }], detectors: [] }, new Hasher('bench'));
const parsePath = (b: Buffer) => Buffer.from(JSON.stringify(m.mask(JSON.parse(b.toString('utf8'))).value));
const bytePath = (b: Buffer) => m.maskBytes(b)!.value;
for (const [, b] of docs) if (!parsePath(b).equals(bytePath(b))) throw new Error('outputs differ');

function cpuPerCall(f: (b: Buffer) => unknown, b: Buffer): number {
  const n = Math.max(20, Math.floor(2_000_000 / b.length));
  const c0 = process.cpuUsage();
  for (let k = 0; k < n; k++) f(b);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}
const med = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
for (const [name, b] of docs) {
  for (let k = 0; k < 3; k++) (cpuPerCall(parsePath, b), cpuPerCall(bytePath, b));
  const p: number[] = [];
  const q: number[] = [];
  for (let r = 0; r < rounds; r++) {
    if (r % 2) q.push(cpuPerCall(bytePath, b));
    p.push(cpuPerCall(parsePath, b));
    if (!(r % 2)) q.push(cpuPerCall(bytePath, b));
  }
  process.stdout.write(`${name.padEnd(24)} parse path ${Math.min(...p).toFixed(1)} (${med(p).toFixed(1)}) us   byte path ${Math.min(...q).toFixed(1)} (${med(q).toFixed(1)}) us   min ratio ${(Math.min(...q) / Math.min(...p)).toFixed(2)}\n`);
}
