// Benchmark (not a test): pgbench -S TPS through Airlock, without and with masking, as a ratio of
// direct PostgreSQL, all in one run on this machine. Ratios, not absolute numbers, are the point:
// absolute TPS depends on the machine and on what else it is doing.
//   npm run bench:pg -- [--seconds 10] [--clients 4] [--protocol simple|extended|prepared]
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
import { freePort } from '../gateway/net/free-port.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    clients: { type: 'string', default: '4' },
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
const dir = mkdtempSync(join(tmpdir(), 'airlock-bench-'));
try {
  const direct = { PGHOST: db.host, PGPORT: String(db.port), PGUSER: db.user, PGPASSWORD: db.password, PGDATABASE: 'postgres' };
  await pgbench(['-i', '-s', '2', '-q'], direct);
  writeFileSync(join(dir, 'signing.key'), randomBytes(32).toString('hex'));
  writeFileSync(join(dir, 'db.password'), db.password);
  const run = ['-S', '-n', '-M', values.protocol!, '-c', values.clients!, '-j', '2', '-T', values.seconds!];

  /** The same workload through PgBouncer (session pooling), when it is installed. */
  async function throughPgBouncer(): Promise<number | undefined> {
    const exe = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p));
    if (!exe) return undefined;
    const port = await freePort();
    const bdir = join(dir, 'pgbouncer');
    mkdirSync(bdir);
    writeFileSync(join(bdir, 'userlist.txt'), `"${db.user}" "${db.password}"\n`);
    writeFileSync(
      join(bdir, 'pgbouncer.ini'),
      `[databases]\nbench = host=${db.host} port=${db.port} dbname=postgres\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ${port}\nunix_socket_dir =\nauth_type = plain\nauth_file = ${join(bdir, 'userlist.txt')}\npool_mode = session\nmax_client_conn = 100\ndefault_pool_size = 20\nlogfile = ${join(bdir, 'pgbouncer.log')}\n`,
    );
    chmodSync(dir, 0o755);
    execFileSync('chown', ['-R', 'postgres', bdir]);
    // PgBouncer refuses to run as root; -u drops to the postgres user.
    const args = process.getuid?.() === 0 ? ['-u', 'postgres', join(bdir, 'pgbouncer.ini')] : [join(bdir, 'pgbouncer.ini')];
    const child = spawn(exe, args, { stdio: 'ignore' });
    try {
      for (let i = 0; i < 50; i++) {
        try {
          return tps(await pgbench(run, { PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: db.user, PGPASSWORD: db.password, PGDATABASE: 'bench' }));
        } catch (err) {
          if (i === 49) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      return undefined;
    } finally {
      child.kill();
    }
  }

  async function throughAirlock(masking: AirlockConfigInput['masking']): Promise<number> {
    const cfg: AirlockConfigInput = {
      auth: { signingKey: { file: 'signing.key' } },
      store: { sqlite: 'bench.db' },
      connections: [{ name: 'bench', type: 'postgres', host: db.host, port: db.port, database: 'postgres', user: db.user, password: { file: 'db.password' }, tls: 'disable', allowSuperuser: true }], // benchmark only: measures the relay, not the role check
      masking,
    };
    writeFileSync(join(dir, 'airlock.yaml'), stringify(cfg));
    const loaded = loadConfig(join(dir, 'airlock.yaml'));
    const gw = await startGateway(loaded, { approver: new FailClosedApprover(), postgres: { host: '127.0.0.1', port: 0 } });
    try {
      const token = await mintToken(tokenSettings(loaded), { name: 'bench', groups: [] }, 3_600_000);
      const { host, port } = gw.listeners[0];
      return tps(await pgbench(run, { PGHOST: host, PGPORT: String(port), PGUSER: 'bench', PGPASSWORD: token, PGDATABASE: 'bench' }));
    } finally {
      await gw.close();
    }
  }

  const base = tps(await pgbench(run, direct));
  const bouncer = await throughPgBouncer();
  const plain = await throughAirlock(undefined);
  // Masks the selected column itself, so every DataRow is rewritten (the worst case for -S).
  const masked = await throughAirlock({ columns: [{ column: 'public.pgbench_accounts.abalance', strategy: 'null' }], detectors: [{ detector: 'email', strategy: 'redact' }] });
  const f = (n: number) => n.toFixed(0).padStart(8);
  console.log(`pgbench ${run.join(' ')}`);
  console.log(`direct PostgreSQL         ${f(base)} tps   1.00`);
  if (bouncer !== undefined) console.log(`through PgBouncer         ${f(bouncer)} tps   ${(bouncer / base).toFixed(2)} of direct (a peer proxy, for scale)`);
  else console.log('through PgBouncer         (not installed: apt-get install pgbouncer to compare with a peer proxy)');
  console.log(`through Airlock           ${f(plain)} tps   ${(plain / base).toFixed(2)} of direct`);
  console.log(`through Airlock, masking  ${f(masked)} tps   ${(masked / base).toFixed(2)} of direct`);
} finally {
  await db.stop();
  rmSync(dir, { recursive: true, force: true });
}
