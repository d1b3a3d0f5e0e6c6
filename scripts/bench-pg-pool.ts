// Benchmark (not a test): pgbench -S with many clients through Airlock, one upstream backend per
// client vs transaction pooling with a few backends (connection `pool:`), as ratios in one run.
//   node --import tsx scripts/bench-pg-pool.ts [--seconds 5] [--clients 50] [--size 4] [--protocol simple|extended|prepared]
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { startGateway } from '../gateway/app.ts';
import { tokenSettings } from '../gateway/auth/settings.ts';
import { mintToken } from '../gateway/auth/tokens.ts';
import { loadConfig } from '../gateway/config/load.ts';
import type { AirlockConfigInput } from '../gateway/config/schema.ts';
import { FailClosedApprover } from '../gateway/approvals/approver.ts';
import { startPostgres } from '../gateway/demo/embedded-postgres.ts';
import { log } from '../gateway/log.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    clients: { type: 'string', default: '50' },
    size: { type: 'string', default: '4' },
    protocol: { type: 'string', default: 'simple' },
  },
});
log.level = 'warn';

function pgbench(args: string[], env: Record<string, string>): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('pgbench', args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.once('error', reject);
    p.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`pgbench exited ${code}:\n${out}`))));
  });
}

function tps(out: string): number {
  const m = /tps = ([\d.]+)/.exec(out);
  if (!m) throw new Error(`no TPS in pgbench output:\n${out}`);
  return Number(m[1]);
}

const db = await startPostgres();
const dir = mkdtempSync(join(tmpdir(), 'airlock-bench-pool-'));
try {
  const direct = { PGHOST: db.host, PGPORT: String(db.port), PGUSER: db.user, PGPASSWORD: db.password, PGDATABASE: 'postgres' };
  await pgbench(['-i', '-s', '2', '-q'], direct);
  writeFileSync(join(dir, 'signing.key'), randomBytes(32).toString('hex'));
  writeFileSync(join(dir, 'db.password'), db.password);
  const run = ['-S', '-n', '-M', values.protocol!, '-c', values.clients!, '-j', '2', '-T', values.seconds!];

  async function throughAirlock(pool: { mode: 'transaction'; size: number } | undefined): Promise<{ tps: number; backends: number }> {
    const cfg: AirlockConfigInput = {
      auth: { signingKey: { file: 'signing.key' } },
      store: { sqlite: 'bench.db' },
      // benchmark only: measures the relay, not the role check
      connections: [{ name: 'bench', type: 'postgres', host: db.host, port: db.port, database: 'postgres', user: db.user, password: { file: 'db.password' }, tls: 'disable', allowSuperuser: true, ...(pool ? { pool } : {}) }],
    };
    writeFileSync(join(dir, 'airlock.yaml'), stringify(cfg));
    const loaded = loadConfig(join(dir, 'airlock.yaml'));
    const gw = await startGateway(loaded, { approver: new FailClosedApprover(), postgres: { host: '127.0.0.1', port: 0 } });
    let most = 0;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const r = await db.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()");
        most = Math.max(most, (r.rows[0] as { n: number }).n);
        await new Promise((res) => setTimeout(res, 200));
      }
    })();
    try {
      const token = await mintToken(tokenSettings(loaded), { name: 'bench', groups: [] }, 3_600_000);
      const { host, port } = gw.listeners[0];
      return { tps: tps(await pgbench(run, { PGHOST: host, PGPORT: String(port), PGUSER: 'bench', PGPASSWORD: token, PGDATABASE: 'bench' })), backends: most };
    } finally {
      watching = false;
      await watch;
      await gw.close();
    }
  }

  const base = tps(await pgbench(run, direct));
  const own = await throughAirlock(undefined);
  const pooled = await throughAirlock({ mode: 'transaction', size: Number(values.size) });
  const f = (n: number) => n.toFixed(0).padStart(8);
  console.log(`pgbench ${run.join(' ')}`);
  console.log(`direct PostgreSQL                        ${f(base)} tps   1.00`);
  console.log(`Airlock, one backend per client          ${f(own.tps)} tps   ${(own.tps / base).toFixed(2)} of direct, up to ${own.backends} upstream backends (incl. Airlock's own)`);
  console.log(`Airlock, transaction pool of ${values.size.padEnd(2)}          ${f(pooled.tps)} tps   ${(pooled.tps / base).toFixed(2)} of direct, up to ${pooled.backends} upstream backends (incl. Airlock's own)`);
} finally {
  await db.stop();
  rmSync(dir, { recursive: true, force: true });
}
