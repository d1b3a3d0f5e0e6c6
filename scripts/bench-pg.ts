// Benchmark (not a test): pgbench -S throughput and per-statement latency through Airlock, against
// direct PostgreSQL, a bare Node relay (the ceiling for a Node proxy) and PgBouncer, plus a masked
// 1M-row export, all in one run on this machine. Ratios, not absolute numbers, are the point:
// absolute TPS depends on the machine and on what else it is doing. Each TPS configuration runs
// `--runs` times, interleaved (every target once per round), and the spread is reported.
//   npm run bench:pg -- [--quick] [--seconds 8] [--clients 4] [--runs 3] [--rows 1000000]
//                       [--targets direct,relay,pgbouncer,airlock,masked[,unrecorded,unstored,segment]] [--protocols simple,prepared]
//                       [--no-latency] [--no-export] [--holds 100] [--out bench-results/pg.json]
// `unrecorded` (diagnostic, never a deployment): Airlock whose store drops operation records, so the
// run shows what the audit record itself costs on this machine (sessions are still recorded).
// `unstored` (diagnostic too): Airlock that computes each operation record in full on the relaying
// thread (redaction, the chain entry's canonical JSON and its SHA-256 after the previous one) and
// then drops it: no hand-over, no SQLite. The ceiling of any audit storage that keeps a redacted,
// hash-chained record per statement, however it writes it.
// `segment` (a prototype, never a deployment): Airlock whose operation records are handed over like
// the writer thread's (every 2 ms) to a thread that computes them as the store does and appends
// them to a file, one write per batch (bench-segment-thread.ts): what a segment-file audit store's
// hot path would cost, before any projection into queryable tables.
// Every target logs in as the same non-superuser role (bench_app), so Airlock's upstream is what a
// deployment would use (no allowSuperuser) and every peer does the same work upstream.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Session as Inspector } from 'node:inspector/promises';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import pg from 'pg';
import { stringify } from 'yaml';
import { startGateway } from '../gateway/app.ts';
import { tokenSettings } from '../gateway/auth/settings.ts';
import { mintToken } from '../gateway/auth/tokens.ts';
import { loadConfig } from '../gateway/config/load.ts';
import type { AirlockConfigInput } from '../gateway/config/schema.ts';
import { type Approver, FailClosedApprover, type HoldOutcome, type HoldPosted, type HoldRequest, type HoldRequested } from '../gateway/approvals/approver.ts';
import { startPostgres } from '../gateway/demo/embedded-postgres.ts';
import { log } from '../gateway/log.ts';
import { freePort } from '../gateway/net/free-port.ts';
import { entryHash, entryText, GENESIS_HASH } from '../gateway/recording/chain.ts';
import { openStore } from '../gateway/recording/open.ts';
import { operationData } from '../gateway/recording/sqlite-store.ts';
import type { OperationRecord } from '../gateway/recording/store.ts';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    seconds: { type: 'string' },
    clients: { type: 'string', default: '4' },
    runs: { type: 'string' },
    rows: { type: 'string' },
    statements: { type: 'string' },
    targets: { type: 'string', default: 'direct,relay,pgbouncer,airlock,masked' },
    protocols: { type: 'string', default: 'simple,prepared' },
    'no-latency': { type: 'boolean', default: false },
    'no-export': { type: 'boolean', default: false },
    /** Only the export part (no pgbench throughput runs). */
    'no-tps': { type: 'boolean', default: false },
    /** Statements held at once for the hold-cost phase (0: skip it). */
    holds: { type: 'string' },
    out: { type: 'string', default: 'bench-results/pg.json' },
    /** Writes a V8 CPU profile of this process (where the gateways run) for each Airlock throughput run. */
    profile: { type: 'string' },
  },
});
log.level = 'warn';
const quick = values.quick!;
const seconds = values.seconds ?? (quick ? '3' : '8');
const runs = Number(values.runs ?? (quick ? '1' : '3'));
const exportRows = Number(values.rows ?? (quick ? '100000' : '1000000'));
const latencyStatements = Number(values.statements ?? (quick ? '2000' : '10000'));
const clients = values.clients!;
const holds = Number(values.holds ?? (quick ? '20' : '100'));
const targets = values.targets!.split(',') as Target[];
const protocols = values.protocols!.split(',');

type Target = 'direct' | 'relay' | 'pgbouncer' | 'airlock' | 'masked' | 'unrecorded' | 'unstored' | 'segment';
const LABEL: Record<Target, string> = {
  direct: 'direct PostgreSQL',
  relay: 'bare Node relay',
  pgbouncer: 'PgBouncer (session)',
  airlock: 'Airlock, policy on',
  masked: 'Airlock, masking',
  unrecorded: 'Airlock, no op. record',
  unstored: 'Airlock, record not stored',
  segment: 'Airlock, segment prototype',
};
/** The gateways under test (profiled with `--profile`). */
const GATEWAYS: readonly Target[] = ['airlock', 'masked', 'unrecorded', 'unstored', 'segment'];
/** The targets that run in this process (their CPU per statement is measured). */
const IN_PROCESS: readonly Target[] = ['relay', ...GATEWAYS];

/** The `segment` prototype's hand-over: batched like ThreadedSqliteStore's (every 2 ms, at most 512). */
function segmentWriter(path: string): { recordOperation(op: OperationRecord): void; close(): Promise<void> } {
  const thread = new Worker(new URL('./bench-segment-thread.mjs', import.meta.url), { workerData: { path } });
  thread.unref();
  let batch: OperationRecord[] = [];
  let scheduled = false;
  const handOver = () => {
    scheduled = false;
    if (batch.length === 0) return;
    thread.postMessage(batch);
    batch = [];
  };
  return {
    recordOperation(op) {
      batch.push(op);
      if (batch.length >= 512) handOver();
      else if (!scheduled) {
        scheduled = true;
        setTimeout(handOver, 2).unref();
      }
    },
    async close() {
      handOver();
      thread.postMessage('close');
      await new Promise((resolve) => thread.once('exit', resolve));
    },
  };
}

function run(cmd: string, args: string[], env: Record<string, string>, stdout: 'pipe' | 'ignore' = 'pipe'): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', stdout, 'pipe'] });
    let out = '';
    p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    p.once('error', reject);
    p.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}:\n${out}`))));
  });
}

function tps(out: string): number {
  const m = /tps = ([\d.]+)/.exec(out);
  if (!m) throw new Error(`no TPS in pgbench output:\n${out}`);
  return Number(m[1]);
}

const TICK_US = 10_000; // USER_HZ is 100 on Linux

/**
 * CPU time of this process's main thread so far, in microseconds (Linux: utime + stime of
 * /proc/self/task/<pid>/stat, in clock ticks of 10 ms, fine over a run of seconds); undefined
 * elsewhere. The main thread relays and decides; the audit writer has a thread of its own.
 */
function mainThreadCpuUs(): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * TICK_US;
  } catch {
    return undefined;
  }
}

function transactions(out: string): number {
  const m = /number of transactions actually processed: (\d+)/.exec(out);
  if (!m) throw new Error(`no transaction count in pgbench output:\n${out}`);
  return Number(m[1]);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/**
 * The hold-cost phase's approval backend: nobody answers, so each held statement waits on its live
 * connection until its client goes away, as one nobody has decided yet. What is measured is the
 * gateway's side of holding (the parked session, its client and upstream sockets, the wait); the
 * Temporal workflow of a real hold runs on the worker and the Temporal server, not in the gateway.
 */
class UnansweredApprover implements Approver {
  waiting = 0;
  #n = 0;
  async hold(req: HoldRequest, onPosted: (p: HoldPosted) => void, signal: AbortSignal, onRequested?: (p: HoldRequested) => void): Promise<HoldOutcome> {
    const requestId = `bench-hold-${++this.#n}`;
    this.waiting++;
    onRequested?.({ requestId, channel: 'nobody', reattached: false });
    onPosted({ requestId, channel: 'nobody', deadline: new Date(Date.now() + req.review.timeoutMs), reattached: false });
    return new Promise((resolve) => {
      const gone = () => {
        this.waiting--;
        resolve({ outcome: 'cancelled', requestId, reason: 'the client went away' });
      };
      if (signal.aborted) gone();
      else signal.addEventListener('abort', gone, { once: true });
    });
  }
  async reportResult(): Promise<void> {}
  async sessionEnded(): Promise<void> {}
}

/** The ceiling for a Node proxy: bytes piped both ways, no parsing, noDelay like Airlock. */
function startRelay(host: string, port: number): Promise<Server & { port: number }> {
  const server = createServer((c: Socket) => {
    const u = connect(port, host);
    c.setNoDelay(true);
    u.setNoDelay(true);
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(Object.assign(server, { port: (server.address() as { port: number }).port }))));
}

const db = await startPostgres();
const dir = mkdtempSync(join(tmpdir(), 'airlock-bench-'));
const cleanups: (() => Promise<void> | void)[] = [];
try {
  const superEnv = { PGHOST: db.host, PGPORT: String(db.port), PGUSER: db.user, PGPASSWORD: db.password, PGDATABASE: 'postgres' };
  await run('pgbench', ['-i', '-s', '2', '-q'], superEnv);
  const appPassword = randomBytes(12).toString('hex');
  {
    const c = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: 'postgres' });
    await c.connect();
    await c.query(`CREATE ROLE bench_app LOGIN PASSWORD '${appPassword}'`);
    if (!values['no-export']) {
      await c.query('CREATE TABLE bench_export (id int, email text, note text)');
      await c.query(`INSERT INTO bench_export SELECT i, 'user' || i || '@example.com', md5(i::text) FROM generate_series(1, ${exportRows}) i`);
      await c.query('VACUUM ANALYZE bench_export');
    }
    await c.query('GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_app');
    await c.end();
  }
  const direct = { PGHOST: db.host, PGPORT: String(db.port), PGUSER: 'bench_app', PGPASSWORD: appPassword, PGDATABASE: 'postgres' };
  writeFileSync(join(dir, 'signing.key'), randomBytes(32).toString('hex'));
  writeFileSync(join(dir, 'db.password'), appPassword);

  const envs: Partial<Record<Target, Record<string, string>>> = {};
  if (targets.includes('direct')) envs.direct = direct;
  if (targets.includes('relay')) {
    const relay = await startRelay(db.host, db.port);
    cleanups.push(() => void relay.close());
    envs.relay = { ...direct, PGHOST: '127.0.0.1', PGPORT: String(relay.port) };
  }
  if (targets.includes('pgbouncer')) {
    const exe = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p));
    if (!exe) throw new Error('pgbouncer is not installed: run scripts/setup.sh (Debian pgbouncer), or leave it out with --targets');
    const port = await freePort();
    const bdir = join(dir, 'pgbouncer');
    mkdirSync(bdir);
    writeFileSync(join(bdir, 'userlist.txt'), `"bench_app" "${appPassword}"\n`);
    writeFileSync(
      join(bdir, 'pgbouncer.ini'),
      `[databases]\npostgres = host=${db.host} port=${db.port} dbname=postgres\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ${port}\nunix_socket_dir =\nauth_type = plain\nauth_file = ${join(bdir, 'userlist.txt')}\npool_mode = session\nmax_client_conn = 100\ndefault_pool_size = 20\nlogfile = ${join(bdir, 'pgbouncer.log')}\n`,
    );
    chmodSync(dir, 0o755);
    if (process.getuid?.() === 0) execFileSync('chown', ['-R', 'postgres', bdir]);
    // PgBouncer refuses to run as root; -u drops to the postgres user.
    const args = process.getuid?.() === 0 ? ['-u', 'postgres', join(bdir, 'pgbouncer.ini')] : [join(bdir, 'pgbouncer.ini')];
    const child = spawn(exe, args, { stdio: 'ignore' });
    cleanups.push(() => void child.kill());
    envs.pgbouncer = { ...direct, PGHOST: '127.0.0.1', PGPORT: String(port) };
    for (let i = 0; ; i++) {
      try {
        await run('psql', ['-Atc', 'SELECT 1'], envs.pgbouncer);
        break;
      } catch (err) {
        if (i === 50) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async function airlock(
    name: string,
    masking: AirlockConfigInput['masking'],
    review?: { approver: Approver; rules: NonNullable<AirlockConfigInput['policy']>['rules'] },
    operationRecords: 'stored' | 'dropped' | 'computed' | 'segment' = 'stored',
  ): Promise<Record<string, string>> {
    const cfg: AirlockConfigInput = {
      auth: { signingKey: { file: 'signing.key' } },
      store: { sqlite: `${name}.db` },
      connections: [{ name: 'bench', type: 'postgres', host: db.host, port: db.port, database: 'postgres', user: 'bench_app', password: { file: 'db.password' }, tls: 'disable' }],
      policy: { profile: 'recommended', ...(review ? { rules: review.rules } : {}) },
      masking,
    };
    writeFileSync(join(dir, `${name}.yaml`), stringify(cfg));
    const loaded = loadConfig(join(dir, `${name}.yaml`));
    // The diagnostic stores: the gateway's own (writer thread), minus the per-statement record
    // ('dropped'), or with the record computed here exactly as the writer would and then dropped
    // ('computed'), or handed to the segment prototype ('segment').
    let head = GENESIS_HASH;
    let entries = 0;
    const segment = operationRecords === 'segment' ? segmentWriter(join(dir, `${name}.segment`)) : undefined;
    const recordOperation =
      segment?.recordOperation ??
      (operationRecords === 'dropped'
        ? () => {}
        : (op: OperationRecord) => {
            const data = operationData(op);
            head = entryHash(head, entryText(++entries, 'operation', data.at, data));
          });
    const store = operationRecords === 'stored' ? undefined : Object.assign(openStore(loaded, { writerThread: true }), { recordOperation });
    const gw = await startGateway(loaded, { approver: review?.approver ?? new FailClosedApprover(), postgres: { host: '127.0.0.1', port: 0 }, ...(store ? { store } : {}) });
    cleanups.push(async () => {
      await gw.close();
      store?.close();
      await segment?.close();
    });
    const token = await mintToken(tokenSettings(loaded), { name: 'bench', groups: [] }, 3_600_000);
    const { host, port } = gw.listeners[0];
    return { PGHOST: host, PGPORT: String(port), PGUSER: 'bench', PGPASSWORD: token, PGDATABASE: 'bench' };
  }
  if (targets.includes('airlock')) envs.airlock = await airlock('plain', undefined);
  if (targets.includes('unrecorded')) envs.unrecorded = await airlock('unrecorded', undefined, undefined, 'dropped');
  if (targets.includes('unstored')) envs.unstored = await airlock('unstored', undefined, undefined, 'computed');
  if (targets.includes('segment')) envs.segment = await airlock('segment', undefined, undefined, 'segment');
  // Masks the selected column itself, so every DataRow is rewritten (the worst case for -S), and
  // runs the email detector over every text value.
  if (targets.includes('masked')) {
    envs.masked = await airlock('masked', {
      columns: [
        { column: 'public.pgbench_accounts.abalance', strategy: 'null' },
        { column: 'public.bench_export.email', strategy: 'redact' },
      ],
      detectors: [{ detector: 'email', strategy: 'redact' }],
    });
  }
  const active = targets.filter((t) => envs[t]);

  // ------------------------------------------------------------------ throughput
  const pgbenchRun = (protocol: string) => ['-S', '-n', '-M', protocol, '-c', clients, '-j', '2', '-T', seconds];
  const results: Record<string, Partial<Record<Target, number[]>>> = {};
  const cpuUs: Record<string, Partial<Record<Target, number[]>>> = {};
  /** The user-space part (JavaScript, V8, libuv): the system part is the socket I/O every proxy pays. */
  const cpuUserUs: Record<string, Partial<Record<Target, number[]>>> = {};
  /** The part spent on this process's main thread (the relaying thread); the rest is the audit writer's and V8's helpers'. */
  const cpuMainUs: Record<string, Partial<Record<Target, number[]>>> = {};
  for (const protocol of values['no-tps'] ? [] : protocols) {
    results[protocol] = {};
    cpuUs[protocol] = {};
    cpuUserUs[protocol] = {};
    cpuMainUs[protocol] = {};
    // Warm-up (not measured): JIT, classification and catalog caches, pools.
    for (const t of active) await run('pgbench', ['-S', '-n', '-M', protocol, '-c', clients, '-j', '2', '-T', '1'], envs[t]!);
    for (let i = 0; i < runs; i++) {
      for (const t of active) {
        const profiling = values.profile && GATEWAYS.includes(t) ? new Inspector() : undefined;
        if (profiling) {
          profiling.connect();
          await profiling.post('Profiler.enable');
          await profiling.post('Profiler.start');
        }
        const cpu0 = process.cpuUsage();
        const main0 = mainThreadCpuUs();
        const out = await run('pgbench', pgbenchRun(protocol), envs[t]!);
        const cpu = process.cpuUsage(cpu0);
        const main1 = mainThreadCpuUs();
        const v = tps(out);
        // The relay and the gateways run in this process: its CPU time per statement is their cost,
        // a figure far less sensitive to other load on a shared machine than TPS.
        if (IN_PROCESS.includes(t)) {
          (cpuUs[protocol][t] ??= []).push((cpu.user + cpu.system) / transactions(out));
          (cpuUserUs[protocol][t] ??= []).push(cpu.user / transactions(out));
          if (main0 !== undefined && main1 !== undefined) (cpuMainUs[protocol][t] ??= []).push((main1 - main0) / transactions(out));
        }
        if (profiling) {
          const { profile } = await profiling.post('Profiler.stop');
          mkdirSync(values.profile!, { recursive: true });
          writeFileSync(join(values.profile!, `${protocol}-${t}-${i + 1}.cpuprofile`), JSON.stringify(profile));
          profiling.disconnect();
        }
        (results[protocol][t] ??= []).push(v);
        process.stderr.write(`  ${protocol} round ${i + 1}/${runs} ${t}: ${v.toFixed(0)} tps\n`);
      }
    }
  }

  // ------------------------------------------------------------------ hold cost
  // pgbench -S through one gateway alone, then again while `holds` other sessions each have a
  // statement held for approval on it (distinct statements, so none re-attaches to another's
  // request), in interleaved rounds: what holding costs everyone else.
  const holdTps: { without: number[]; with: number[] } = { without: [], with: [] };
  if (holds > 0 && !values['no-tps']) {
    const approver = new UnansweredApprover();
    const env = await airlock('holding', undefined, {
      approver,
      rules: [{ name: 'bench-review-branches', match: { tables: ['public.pgbench_branches'], kinds: ['write'] }, action: 'review', review: { approvers: ['dba'], timeout: '1h' } }],
    });
    const until = async (what: string, ok: () => boolean) => {
      for (let i = 0; !ok(); i++) {
        if (i === 600) throw new Error(`hold-cost phase: timed out waiting for ${what} (${approver.waiting} waiting)`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await run('pgbench', ['-S', '-n', '-M', 'simple', '-c', clients, '-j', '2', '-T', '1'], env);
    const alone = async () => holdTps.without.push(tps(await run('pgbench', pgbenchRun('simple'), env)));
    const whileHolding = async () => {
      const held: pg.Client[] = [];
      for (let k = 0; k < holds; k++) {
        const c = new pg.Client({ host: env.PGHOST, port: Number(env.PGPORT), user: env.PGUSER, password: env.PGPASSWORD, database: env.PGDATABASE });
        c.on('error', () => undefined);
        await c.connect();
        c.query(`UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = ${k + 1}`).catch(() => undefined);
        held.push(c);
      }
      await until(`${holds} statements to be held`, () => approver.waiting === holds);
      holdTps.with.push(tps(await run('pgbench', pgbenchRun('simple'), env)));
      if (approver.waiting !== holds) throw new Error(`hold-cost phase: ${approver.waiting} of ${holds} statements were still held at the end of the run`);
      await Promise.all(held.map((c) => c.end().catch(() => undefined)));
      await until('the held statements to be given up', () => approver.waiting === 0);
    };
    for (let i = 0; i < runs; i++) {
      // Alternate which of the pair runs first: the host's speed drifts between runs (by 15 % here),
      // and a fixed order would put that drift into the ratio.
      if (i % 2 === 0) {
        await alone();
        await whileHolding();
      } else {
        await whileHolding();
        await alone();
      }
      process.stderr.write(`  holds round ${i + 1}/${runs}: ${holdTps.without[i].toFixed(0)} tps alone, ${holdTps.with[i].toFixed(0)} tps with ${holds} held\n`);
    }
  }

  // ------------------------------------------------------------------ latency at one client
  const latency: Record<string, Partial<Record<Target, { p50: number; p99: number; mean: number }>>> = {};
  if (!values['no-latency']) {
    for (const protocol of protocols) {
      latency[protocol] = {};
      for (const t of active.filter((x) => x !== 'pgbouncer')) {
        const ldir = mkdtempSync(join(dir, 'lat-'));
        await run('pgbench', ['-S', '-n', '-M', protocol, '-c', '1', '-j', '1', '-t', String(latencyStatements), '-l', '--log-prefix', join(ldir, 'l')], envs[t]!);
        const us: number[] = [];
        for (const f of readdirSync(ldir)) for (const line of readFileSync(join(ldir, f), 'utf8').split('\n')) if (line) us.push(Number(line.split(' ')[2]));
        us.sort((a, b) => a - b);
        latency[protocol][t] = { p50: pct(us, 50), p99: pct(us, 99), mean: us.reduce((a, b) => a + b, 0) / us.length };
      }
    }
  }

  // ------------------------------------------------------------------ masked export
  const exportTimes: Record<string, Partial<Record<Target, number>>> = {};
  const exportCpuMs: Record<string, Partial<Record<Target, number>>> = {};
  if (!values['no-export']) {
    const ways = { copy: 'COPY bench_export TO STDOUT', select: 'SELECT * FROM bench_export' };
    for (const [way, sql] of Object.entries(ways)) {
      exportTimes[way] = {};
      for (const t of active.filter((x) => x === 'direct' || x === 'airlock' || x === 'masked')) {
        const profiling = values.profile && t !== 'direct' ? new Inspector() : undefined;
        if (profiling) {
          profiling.connect();
          await profiling.post('Profiler.enable');
          await profiling.post('Profiler.start');
        }
        const cpu0 = process.cpuUsage();
        const t0 = performance.now();
        const out = await run('psql', ['-X', '-At', '-o', '/dev/null', '-c', sql], envs[t]!, 'ignore');
        if (/ERROR|FATAL/.test(out)) throw new Error(`export through ${t} failed: ${out}`);
        exportTimes[way][t] = (performance.now() - t0) / 1000;
        // The gateway's own CPU for the export (this process), steadier than wall time on a shared machine.
        const cpu = process.cpuUsage(cpu0);
        if (t !== 'direct') (exportCpuMs[way] ??= {})[t] = Number(((cpu.user + cpu.system) / 1000).toFixed(0));
        if (profiling) {
          const { profile } = await profiling.post('Profiler.stop');
          mkdirSync(values.profile!, { recursive: true });
          writeFileSync(join(values.profile!, `export-${way}-${t}.cpuprofile`), JSON.stringify(profile));
          profiling.disconnect();
        }
      }
    }
  }

  // ------------------------------------------------------------------ report
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b ? Number((a / b).toFixed(3)) : undefined);
  const summary = {
    at: new Date().toISOString(),
    machine: { cpus: cpus().length, loadavgAtEnd: loadavg().map((x) => Number(x.toFixed(2))), note: 'shared machine unless stated otherwise' },
    settings: { seconds: Number(seconds), clients: Number(clients), runs, exportRows, latencyStatements, quick },
    tps: {} as Record<string, Record<string, { median: number; min: number; max: number; runs: number[] }>>,
    ratios: {} as Record<string, Record<string, number | undefined>>,
    /** CPU time of this process (relay or gateway) per statement, microseconds: median of the runs. */
    proxyCpuUsPerStatement: {} as Record<string, Record<string, { median: number; runs: number[]; userMedian: number; mainThreadMedian?: number; otherThreadsMedian?: number }>>,
    latencyUs: latency,
    addedLatencyUs: {} as Record<string, Record<string, number | undefined>>,
    exportSeconds: exportTimes,
    exportMaskedVsUnmasked: {} as Record<string, number | undefined>,
    /** CPU time of this process (the gateway) during each export through Airlock, milliseconds. */
    exportProxyCpuMs: exportCpuMs,
    /** pgbench -S (simple) through one gateway alone and while `holds` statements are held on it (goal: >= 0.95). */
    holdCost: holdTps.with.length > 0 ? { holds, tpsAlone: holdTps.without, tpsWithHolds: holdTps.with, ratio: ratio(median(holdTps.with), median(holdTps.without)) } : undefined,
  };
  for (const protocol of Object.keys(results)) {
    const m: Partial<Record<Target, number>> = {};
    summary.tps[protocol] = {};
    for (const t of active) {
      const xs = results[protocol][t]!;
      m[t] = median(xs);
      summary.tps[protocol][t] = { median: m[t]!, min: Math.min(...xs), max: Math.max(...xs), runs: xs };
    }
    summary.proxyCpuUsPerStatement[protocol] = Object.fromEntries(
      Object.entries(cpuUs[protocol]).map(([t, xs]) => {
        const main = cpuMainUs[protocol][t as Target];
        return [
          t,
          {
            median: Number(median(xs!).toFixed(1)),
            runs: xs!.map((x) => Number(x.toFixed(1))),
            userMedian: Number(median(cpuUserUs[protocol][t as Target]!).toFixed(1)),
            ...(main ? { mainThreadMedian: Number(median(main).toFixed(1)), otherThreadsMedian: Number(median(xs!.map((x, i) => x - main[i])).toFixed(1)) } : {}),
          },
        ];
      }),
    );
    summary.ratios[protocol] = {
      'pgbouncer/direct': ratio(m.pgbouncer, m.direct),
      'relay/direct': ratio(m.relay, m.direct),
      'airlock/direct': ratio(m.airlock, m.direct),
      'airlock/relay': ratio(m.airlock, m.relay),
      'airlock/pgbouncer': ratio(m.airlock, m.pgbouncer),
      'masked/direct': ratio(m.masked, m.direct),
      'masked/relay': ratio(m.masked, m.relay),
      'masked/pgbouncer': ratio(m.masked, m.pgbouncer),
      ...(m.unrecorded ? { 'unrecorded/relay': ratio(m.unrecorded, m.relay), 'unrecorded/pgbouncer': ratio(m.unrecorded, m.pgbouncer) } : {}),
      ...(m.unstored ? { 'unstored/relay': ratio(m.unstored, m.relay), 'unstored/pgbouncer': ratio(m.unstored, m.pgbouncer) } : {}),
      ...(m.segment ? { 'segment/relay': ratio(m.segment, m.relay), 'segment/pgbouncer': ratio(m.segment, m.pgbouncer) } : {}),
    };
    const l = latency[protocol];
    if (l?.direct) {
      summary.addedLatencyUs[protocol] = {
        'relay p50': l.relay && l.relay.p50 - l.direct.p50,
        'relay p99': l.relay && l.relay.p99 - l.direct.p99,
        'airlock p50': l.airlock && l.airlock.p50 - l.direct.p50,
        'airlock p99': l.airlock && l.airlock.p99 - l.direct.p99,
        'masked p50': l.masked && l.masked.p50 - l.direct.p50,
        'masked p99': l.masked && l.masked.p99 - l.direct.p99,
        ...(l.unrecorded ? { 'unrecorded p50': l.unrecorded.p50 - l.direct.p50, 'unrecorded p99': l.unrecorded.p99 - l.direct.p99 } : {}),
        ...(l.unstored ? { 'unstored p50': l.unstored.p50 - l.direct.p50, 'unstored p99': l.unstored.p99 - l.direct.p99 } : {}),
        ...(l.segment ? { 'segment p50': l.segment.p50 - l.direct.p50, 'segment p99': l.segment.p99 - l.direct.p99 } : {}),
      };
    }
  }
  for (const way of Object.keys(exportTimes)) summary.exportMaskedVsUnmasked[way] = ratio(exportTimes[way].masked, exportTimes[way].airlock);

  const f = (n: number) => n.toFixed(0).padStart(7);
  for (const protocol of Object.keys(results)) {
    console.log(`\npgbench ${pgbenchRun(protocol).join(' ')}  (median of ${runs}; min-max)`);
    const m = summary.tps[protocol];
    for (const t of active) {
      const s = m[t];
      const vs = (k?: Target) => (k && m[k] && k !== t ? `${(s.median / m[k].median).toFixed(2)}` : '   -');
      const c = summary.proxyCpuUsPerStatement[protocol][t];
      console.log(`${LABEL[t].padEnd(22)} ${f(s.median)} tps (${f(s.min)}-${f(s.max)})   vs direct ${vs('direct')}   vs relay ${vs('relay')}   vs PgBouncer ${vs('pgbouncer')}${c ? `   proxy CPU ${c.median.toFixed(1)} us/stmt (user ${c.userMedian.toFixed(1)}${c.mainThreadMedian !== undefined ? `; relaying thread ${c.mainThreadMedian.toFixed(1)}, other threads ${c.otherThreadsMedian!.toFixed(1)}` : ''})` : ''}`);
    }
  }
  for (const protocol of Object.keys(latency)) {
    console.log(`\nlatency at 1 client, ${latencyStatements} statements, -M ${protocol} (us)`);
    for (const [t, l] of Object.entries(latency[protocol])) {
      const d = latency[protocol].direct;
      const added = d && t !== 'direct' ? `   added p50 ${(l.p50 - d.p50).toFixed(0)} p99 ${(l.p99 - d.p99).toFixed(0)}` : '';
      console.log(`${LABEL[t as Target].padEnd(22)} p50 ${f(l.p50)}  p99 ${f(l.p99)}${added}`);
    }
  }
  for (const way of Object.keys(exportTimes)) {
    const e = exportTimes[way];
    console.log(`\nexport of ${exportRows} rows by ${way}: ${Object.entries(e).map(([t, s]) => `${t} ${s!.toFixed(2)} s`).join(', ')}; masked/unmasked through Airlock ${summary.exportMaskedVsUnmasked[way] ?? '-'}; proxy CPU ${Object.entries(exportCpuMs[way] ?? {}).map(([t, ms]) => `${t} ${ms} ms`).join(', ')}`);
  }
  if (summary.holdCost) {
    const h = summary.holdCost;
    console.log(`\nhold cost: pgbench -S through Airlock with ${holds} statements held on it: ${f(median(h.tpsWithHolds))} tps, alone ${f(median(h.tpsAlone))} tps: ${h.ratio} of alone (goal >= 0.95)`);
  }
  mkdirSync(dirname(values.out!), { recursive: true });
  writeFileSync(values.out!, `${JSON.stringify(summary, null, 2)}\n`);
  console.log(`\nsummary written to ${values.out}`);
} finally {
  for (const c of cleanups.reverse()) await c();
  await db.stop();
  rmSync(dir, { recursive: true, force: true });
}
