// HTTP throughput: requests/s to a small JSON upstream directly, through a plain http-proxy-3
// reverse proxy, and through Airlock (token check, policy decision, recording; then with JSON
// masking). Printed as ratios, in one bounded run (a few seconds per target).
//
//   node --import tsx scripts/bench-http.ts [--seconds 3] [--connections 32]
//
// The load generator runs in a child process so it does not share an event loop with the proxies.
// Also reported: this process's CPU time per request for each target (the upstream, http-proxy-3
// and Airlock all run here; subtracting the direct run's cost leaves the proxy's own), which holds
// up on a busy machine where req/s does not. `--runs N` repeats the whole sequence and reports
// the spread. Writes bench-results/http.json.
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createProxyServer } from 'http-proxy-3';
import { FailClosedApprover } from '../gateway/approvals/approver.ts';
import { tokenSettings } from '../gateway/auth/settings.ts';
import { mintToken } from '../gateway/auth/tokens.ts';
import { parseConfig } from '../gateway/config/load.ts';
import { startHttpGateway } from '../gateway/http/server.ts';
import { ThreadedSqliteStore } from '../gateway/recording/sqlite-writer.ts';

interface LoadResult {
  requests: number;
  errors: number;
  seconds: number;
}

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : def;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`--${name} must be a positive number`);
  return Math.min(v, name === 'seconds' ? 30 : name === 'runs' ? 10 : 512);
}

/** Child mode: keep-alive GET loops against one URL for a fixed time. */
async function loadGenerator(url: string, token: string, seconds: number, connections: number): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const until = Date.now() + seconds * 1000;
  let requests = 0;
  let errors = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const req = http.get(url, { agent, headers: token ? { authorization: `Bearer ${token}` } : {} }, (res) => {
        if (res.statusCode !== 200) errors++;
        res.resume();
        res.on('end', () => {
          requests++;
          resolve();
        });
      });
      req.on('error', () => {
        errors++;
        resolve();
      });
    });
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (Date.now() < until) await one();
    }),
  );
  agent.destroy();
  return { requests, errors, seconds: (Date.now() - t0) / 1000 };
}

function runLoad(url: string, token: string, seconds: number, connections: number): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), ['--child', url, token || '-', String(seconds), String(connections)], { execArgv: ['--import', 'tsx'] });
    child.once('message', (m) => resolve(m as LoadResult));
    child.once('error', reject);
    child.once('exit', (code) => code !== 0 && reject(new Error(`load generator exited with ${code}`)));
  });
}

async function main(): Promise<void> {
  if (process.argv[2] === '--child') {
    const [, , , url, token, seconds, connections] = process.argv;
    const r = await loadGenerator(url, token === '-' ? '' : token, Number(seconds), Number(connections));
    process.send!(r);
    return;
  }
  const seconds = arg('seconds', 3);
  const connections = arg('connections', 32);
  const runs = arg('runs', 1);
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

  const dir = mkdtempSync(join(tmpdir(), 'airlock-bench-http-'));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  const loaded = parseConfig(
    `
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
`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  // The store `airlock gateway` runs: records appended on a writer thread.
  const store = ThreadedSqliteStore.open(join(dir, 'airlock.db'));
  const gw = await startHttpGateway({ loaded, store, approver: new FailClosedApprover() });
  const token = await mintToken(tokenSettings(loaded), { name: 'bench', groups: [] });

  try {
    const targets: Array<[string, string, string]> = [
      ['direct', `${upUrl}/users`, ''],
      ['http-proxy-3', `${plainUrl}/users`, ''],
      ['airlock', `${gw.url}/svc/users`, token],
      ['airlock+mask', `${gw.url}/masked/users`, token],
    ];
    process.stdout.write(`HTTP benchmark: ${connections} keep-alive connections, ${seconds}s per target, ${payload.length}-byte JSON responses, ${runs} run(s)\n`);
    const all: Array<Record<string, { rps: number; cpuUsPerRequest: number; errors: number }>> = [];
    for (let run = 0; run < runs; run++) {
      const one: Record<string, { rps: number; cpuUsPerRequest: number; errors: number }> = {};
      for (const [name, url, tok] of targets) {
        const c0 = process.cpuUsage();
        const r = await runLoad(url, tok, seconds, connections);
        const c = process.cpuUsage(c0);
        one[name] = { rps: r.requests / r.seconds, cpuUsPerRequest: (c.user + c.system) / Math.max(1, r.requests), errors: r.errors };
        process.stdout.write(`  ${name.padEnd(14)} ${one[name].rps.toFixed(0).padStart(8)} req/s   ${one[name].cpuUsPerRequest.toFixed(0).padStart(5)} us CPU/request${r.errors ? `  (${r.errors} errors)` : ''}\n`);
      }
      const ratio = (a: string, b: string) => one[a].rps / one[b].rps;
      process.stdout.write(
        `  airlock / http-proxy-3: ${ratio('airlock', 'http-proxy-3').toFixed(2)}   airlock+mask / http-proxy-3: ${ratio('airlock+mask', 'http-proxy-3').toFixed(2)}   ` +
          `airlock / direct: ${ratio('airlock', 'direct').toFixed(2)}   airlock+mask / direct: ${ratio('airlock+mask', 'direct').toFixed(2)}\n`,
      );
      all.push(one);
    }
    const stat = (xs: number[]) => ({ min: +Math.min(...xs).toFixed(3), median: +xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)].toFixed(3), max: +Math.max(...xs).toFixed(3) });
    const ratios = (a: string, b: string) => stat(all.map((o) => o[a].rps / o[b].rps));
    // CPU per request of the proxy alone: this process's cost minus the direct run's (the upstream's).
    const own = (name: string) => stat(all.map((o) => o[name].cpuUsPerRequest - o.direct.cpuUsPerRequest));
    const summary = {
      at: new Date().toISOString(),
      seconds,
      connections,
      runs,
      ratios: {
        airlockVsHttpProxy3: ratios('airlock', 'http-proxy-3'),
        maskVsHttpProxy3: ratios('airlock+mask', 'http-proxy-3'),
        airlockVsDirect: ratios('airlock', 'direct'),
        maskVsDirect: ratios('airlock+mask', 'direct'),
      },
      proxyCpuUsPerRequest: { 'http-proxy-3': own('http-proxy-3'), airlock: own('airlock'), 'airlock+mask': own('airlock+mask') },
      runsDetail: all,
      goal: 'airlock >= 0.8 of http-proxy-3; airlock+mask >= 0.6 of http-proxy-3',
    };
    const m = summary.ratios;
    process.stdout.write(`median of ${runs}: airlock / http-proxy-3 ${m.airlockVsHttpProxy3.median} (${m.airlockVsHttpProxy3.min}-${m.airlockVsHttpProxy3.max}), airlock+mask / http-proxy-3 ${m.maskVsHttpProxy3.median} (${m.maskVsHttpProxy3.min}-${m.maskVsHttpProxy3.max})\n`);
    process.stdout.write(`proxy CPU per request (median): http-proxy-3 ${summary.proxyCpuUsPerRequest['http-proxy-3'].median} us, airlock ${summary.proxyCpuUsPerRequest.airlock.median} us, airlock+mask ${summary.proxyCpuUsPerRequest['airlock+mask'].median} us\n`);
    mkdirSync('bench-results', { recursive: true });
    writeFileSync(join('bench-results', 'http.json'), JSON.stringify(summary, null, 2) + '\n');
  } finally {
    await gw.close();
    store.close();
    proxy.close();
    await new Promise((r) => plain.close(r));
    plain.closeAllConnections();
    await new Promise((r) => upstream.close(r));
    upstream.closeAllConnections();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
