// A/B of two builds of the HTTP gateway in ONE process (docs/performance.md, HTTP, Round 2/3):
// an upstream serving the bench's JSON, a plain http-proxy-3 proxy, and for each build an Airlock
// gateway with scripts/bench-http.ts's config. The bench's load generator hits every target in
// turn, order reversed every round; CPU per request of this process minus the direct run's is a
// proxy's own cost. Prints min and median over rounds.
//
//   node --import tsx scripts/bench-http-ab.ts BASE_DIR [--rounds 10] [--seconds 1.5] [--only mask|NAME]
//
// BASE_DIR: an exported tree of the base commit (git archive BASE | tar -x -C DIR; symlink node_modules).
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createProxyServer } from 'http-proxy-3';

function opt(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}
const base = process.argv[2];
if (!base || base.startsWith('--')) throw new Error('usage: bench-http-ab.ts BASE_DIR [--rounds N] [--seconds S]');
const rounds = Number(opt('rounds', '10'));
const seconds = Number(opt('seconds', '1.5'));
const only = opt('only', '');
const connections = 32;
const here = resolve(import.meta.dirname, '..');

const payload = JSON.stringify({ users: Array.from({ length: 10 }, (_, i) => ({ id: i, name: `user ${i}`, email: `user${i}@example.com`, plan: 'pro' })) });
const upstream = http.createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
  res.end(payload);
});
await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
const upUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
const proxy = createProxyServer({ target: upUrl, agent: new http.Agent({ keepAlive: true, maxSockets: 256 }) });
const plain = http.createServer((req, res) => proxy.web(req, res));
await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
const plainUrl = `http://127.0.0.1:${(plain.address() as AddressInfo).port}`;

const dir = mkdtempSync(join(tmpdir(), 'airlock-bench-ab-'));
writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
const yaml = `
auth: { signingKey: { file: signing.key } }
policy:
  rules:
    - name: mask-users
      match: { connections: [masked] }
      action: mask
      mask: { fields: [{ path: users.email, strategy: redact }] }
http:
  listen: { host: 127.0.0.1, port: 0 }
  services:
    - { name: svc, url: "${upUrl}" }
    - { name: masked, url: "${upUrl}" }
`;

async function startBuild(root: string, name: string) {
  const imp = (p: string) => import(pathToFileURL(join(root, p)).href);
  const { FailClosedApprover } = await imp('gateway/approvals/approver.ts');
  const { tokenSettings } = await imp('gateway/auth/settings.ts');
  const { mintToken } = await imp('gateway/auth/tokens.ts');
  const { parseConfig } = await imp('gateway/config/load.ts');
  const { startHttpGateway } = await imp('gateway/http/server.ts');
  const { ThreadedSqliteStore } = await imp('gateway/recording/sqlite-writer.ts');
  const loaded = parseConfig(yaml, join(dir, 'airlock.yaml'), dir);
  const store = ThreadedSqliteStore.open(join(dir, `${name}.db`));
  const gw = await startHttpGateway({ loaded, store, approver: new FailClosedApprover() });
  const token = await mintToken(tokenSettings(loaded), { name: 'bench', groups: [] });
  return { gw, store, token };
}

const builds = { base: await startBuild(resolve(base), 'base'), new: await startBuild(here, 'new') };
let targets: Array<[string, string, string]> = [
  ['direct', `${upUrl}/users`, ''],
  ['http-proxy-3', `${plainUrl}/users`, ''],
  ['base', `${builds.base.gw.url}/svc/users`, builds.base.token],
  ['new', `${builds.new.gw.url}/svc/users`, builds.new.token],
  ['base+mask', `${builds.base.gw.url}/masked/users`, builds.base.token],
  ['new+mask', `${builds.new.gw.url}/masked/users`, builds.new.token],
];
if (only === 'mask') targets = targets.filter(([n]) => n === 'direct' || n === 'http-proxy-3' || n.endsWith('+mask'));
else if (only) targets = targets.filter(([n]) => n === 'direct' || n === only);

// Sanity: both builds mask the field.
for (const b of ['base', 'new'] as const) {
  const body = await fetch(`${builds[b].gw.url}/masked/users`, { headers: { authorization: `Bearer ${builds[b].token}` } }).then((r) => r.text());
  if (body.includes('@example.com')) throw new Error(`${b} did not mask: ${body.slice(0, 200)}`);
}

const bench = join(here, 'scripts/bench-http.ts');
function load(url: string, token: string): Promise<{ requests: number; errors: number; seconds: number }> {
  return new Promise((res, rej) => {
    const child = fork(bench, ['--child', url, token || '-', String(seconds), String(connections)], { execArgv: ['--import', 'tsx'] });
    child.once('message', (m) => res(m as { requests: number; errors: number; seconds: number }));
    child.once('error', rej);
  });
}

const cpu: Record<string, number[]> = {};
const rps: Record<string, number[]> = {};
const served: Record<string, number> = {};
for (let r = 0; r < rounds; r++) {
  const order = r % 2 ? [...targets].reverse() : targets;
  for (const [name, url, tok] of order) {
    const c0 = process.cpuUsage();
    const x = await load(url, tok);
    const c = process.cpuUsage(c0);
    if (x.errors) process.stdout.write(`  ${name}: ${x.errors} errors\n`);
    (cpu[name] ??= []).push((c.user + c.system) / Math.max(1, x.requests));
    (rps[name] ??= []).push(x.requests / x.seconds);
    served[name] = (served[name] ?? 0) + x.requests;
  }
  process.stdout.write('.');
}
process.stdout.write('\n');
const med = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
process.stdout.write(`${rounds} rounds x ${seconds}s; proxy CPU per request (minus direct, same round), us: min / median; req/s median\n`);
for (const [name] of targets) {
  const own = cpu[name].map((v, i) => v - cpu.direct[i]);
  process.stdout.write(`  ${name.padEnd(14)} ${Math.min(...own).toFixed(0).padStart(5)} / ${med(own).toFixed(0).padStart(5)}   ${med(rps[name]).toFixed(0).padStart(6)} req/s   (direct-inclusive min ${Math.min(...cpu[name]).toFixed(0)}; ${served[name]} requests)\n`);
}
for (const b of Object.values(builds)) {
  await b.gw.close();
  b.store.close();
}
proxy.close();
plain.close();
plain.closeAllConnections();
upstream.close();
upstream.closeAllConnections();
rmSync(dir, { recursive: true, force: true });
