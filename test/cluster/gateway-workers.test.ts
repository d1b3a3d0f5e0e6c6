// `airlock gateway --workers 2` as an operator runs it: a child process (a cluster primary and two
// gateway workers sharing the listening socket) against a real PostgreSQL. Clients spread over
// both workers all get masked results; a CancelRequest cancels the right query whichever worker
// its new connection lands on, and never another client's; a revoked identity loses its sessions
// on both workers; a killed worker's sessions are closed in the record (`worker crashed`) and the
// worker is replaced; audit records of both workers form one intact chain (`airlock audit verify`);
// SIGTERM drains both workers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import pg from 'pg';
import { stringify } from 'yaml';
import { configuredIdentity, tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { loadConfig } from '../../gateway/config/load.ts';
import { freePort } from '../../gateway/net/free-port.ts';
import { cancelKeyWorker } from '../../gateway/postgres/cancel.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { startPostgres, type RunningPostgres } from '../support/postgres.ts';
import { runPsql } from '../support/gateway.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;

let upstream: RunningPostgres;
let dir: string;
let file: string;
let port: number;
let adminPort: number;
let child: ChildProcess;
let stderr = '';
let exited: Promise<number | null>;
const clients: pg.Client[] = [];

before(async () => {
  upstream = await startPostgres();
  await upstream.query(`create table customers (id int primary key, email text); insert into customers select g, 'user' || g || '@example.com' from generate_series(1, 20) g;`);
  dir = mkdtempSync(join(tmpdir(), 'airlock-cluster-'));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  writeFileSync(join(dir, 'upstream.pass'), upstream.password);
  writeFileSync(join(dir, 'hash.key'), randomBytes(32).toString('hex'));
  port = await freePort();
  adminPort = await freePort();
  file = join(dir, 'airlock.yaml');
  writeFileSync(
    file,
    stringify({
      gateway: { workers: 1 }, // the command line opts in to two
      listen: { postgres: { host: '127.0.0.1', port }, admin: { host: '127.0.0.1', port: adminPort } },
      shutdown: { drainTimeout: '20s' },
      auth: { signingKey: { file: 'signing.key' }, revocationPoll: '200ms' },
      audit: { maxPendingMs: '1s' },
      store: { sqlite: 'airlock.db' },
      identities: [
        { name: 'alice', groups: ['dba'] },
        { name: 'agent-1', groups: ['agents'], owner: 'alice' },
      ],
      connections: [{ name: 'app', type: 'postgres', host: upstream.host, port: upstream.port, database: 'postgres', user: upstream.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true }],
      masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.customers.email', strategy: 'redact' }] },
      policy: { default: 'allow', rules: [] },
    }),
  );
  const env: NodeJS.ProcessEnv = { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' };
  delete env.NODE_TEST_CONTEXT;
  child = spawn(process.execPath, [bin, 'gateway', '--config', file, '--workers', '2'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  // The log (stdout) and the command's own lines (stderr), in one string.
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout!.on('data', (d: Buffer) => (stderr += d.toString()));
  exited = new Promise((r) => child.once('exit', (code) => r(code)));
  const deadline = Date.now() + 90_000;
  while (!/2 gateway workers: /.test(stderr)) {
    if (child.exitCode !== null) throw new Error(`gateway exited: ${stderr}`);
    if (Date.now() > deadline) throw new Error(`gateway did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

after(async () => {
  for (const c of clients) await c.end().catch(() => {});
  if (child && child.exitCode === null) {
    child.kill('SIGKILL');
    await exited;
  }
  await upstream?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function token(identity = 'alice'): Promise<string> {
  const loaded = loadConfig(file);
  return mintToken(tokenSettings(loaded), configuredIdentity(loaded, identity));
}

async function client(identity = 'alice'): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, database: 'app', user: identity, password: await token(identity) });
  c.on('error', () => {});
  await c.connect();
  clients.push(c);
  return c;
}

/** The worker serving a client: its index is in the low bits of the cancel key it was given. */
function workerOf(c: pg.Client): number {
  return cancelKeyWorker((c as unknown as { processID: number }).processID);
}

/** Clients until both workers serve at least one (connections are handed out round-robin). */
async function onBothWorkers(identity = 'alice'): Promise<Map<number, pg.Client>> {
  const by = new Map<number, pg.Client>();
  for (let i = 0; i < 10 && by.size < 2; i++) {
    const c = await client(identity);
    if (!by.has(workerOf(c))) by.set(workerOf(c), c);
  }
  assert.deepEqual([...by.keys()].sort(), [1, 2], 'clients landed on both workers');
  return by;
}

async function metrics(): Promise<string> {
  return (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
}

function workerPids(text: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const x of text.matchAll(/airlock_cluster_worker\{worker="(\d+)",pid="(\d+)"\} 1/g)) m.set(Number(x[1]), Number(x[2]));
  return m;
}

/** A CancelRequest on a fresh connection, as libpq sends it. */
function sendCancel(pid: number, secret: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      const b = Buffer.alloc(16);
      b.writeInt32BE(16, 0);
      b.writeInt32BE(80877102, 4);
      b.writeInt32BE(pid, 8);
      b.writeInt32BE(secret, 12);
      s.end(b);
    });
    s.on('error', reject);
    s.on('close', () => resolve());
  });
}

/** A connection that opens and closes at once: shifts which worker gets the next one. */
function knock(): Promise<void> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => s.end());
    s.on('error', () => resolve());
    s.on('close', () => resolve());
  });
}

function ended(c: pg.Client): Promise<{ code?: string; message: string }> {
  return new Promise((resolve) => c.on('error', (e: Error & { code?: string }) => resolve({ code: e.code, message: e.message })));
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms))]);
}

function sessions() {
  const s = SqliteStore.open(join(dir, 'airlock.db'), { readonly: true });
  try {
    return s.listSessions();
  } finally {
    s.close();
  }
}

test('clients spread over both workers (two processes) all get masked results; metrics aggregate both', async () => {
  const many = await Promise.all(Array.from({ length: 8 }, () => client()));
  const workers = new Set(many.map(workerOf));
  assert.deepEqual([...workers].sort(), [1, 2]);
  for (const c of many) {
    const r = await c.query('select id, email from customers order by id');
    assert.equal(r.rows.length, 20);
    for (const row of r.rows) assert.equal(row.email, '[redacted]');
  }
  const viaPsql = await Promise.all(Array.from({ length: 4 }, async () => runPsql(`host=127.0.0.1 port=${port} dbname=app user=alice password=${await token()} sslmode=disable`, 'select email from customers where id = 3;')));
  for (const r of viaPsql) {
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), '[redacted]');
  }
  const text = await metrics();
  const pids = workerPids(text);
  assert.equal(pids.size, 2, text);
  assert.notEqual(pids.get(1), pids.get(2), 'two worker processes');
  assert.ok(![...pids.values()].includes(child.pid!), 'the primary serves no client');
  const active = Number(/airlock_sessions_active\{protocol="postgres"\} (\d+)/.exec(text)?.[1]);
  assert.ok(active >= 8, `sessions of both workers are counted (${active})`);
  assert.match(text, /airlock_audit_healthy 1/);
  for (const c of many) await c.end();
});

test('a CancelRequest cancels the right query whichever worker its connection lands on; a wrong secret cancels nothing', async () => {
  const routes = new Set<string>();
  const routed = async () => Number(/airlock_cluster_cancels_routed_total (\d+)/.exec(await metrics())?.[1]);
  const routedBefore = await routed();
  for (let i = 0; i < 6; i++) {
    const by = await onBothWorkers();
    const target = by.get(1 + (i % 2))!;
    const bystander = by.get(2 - (i % 2))!;
    let settled = false;
    const cancelled = target.query('select pg_sleep(30)').then(
      () => undefined,
      (e: Error & { code?: string }) => e.code,
    ).finally(() => (settled = true));
    const other = bystander.query('select pg_sleep(1.5) , 7 as seven');
    await new Promise((r) => setTimeout(r, 300));
    const { processID, secretKey } = target as unknown as { processID: number; secretKey: number };
    // The wrong secret first: whichever worker receives it, the query keeps running.
    await sendCancel(processID, secretKey ^ 1);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(settled, false, 'a wrong secret cancelled nothing');
    if (i >= 2 && i % 2 === 0) await knock();
    await sendCancel(processID, secretKey);
    assert.equal(await within(cancelled, 10_000, 'the cancelled query'), '57014', 'the target query was cancelled');
    assert.equal((await other).rows[0].seven, 7, "the other worker's client was not cancelled");
    routes.add(`${workerOf(target)}`);
    for (const c of by.values()) await c.end();
  }
  assert.deepEqual([...routes].sort(), ['1', '2']);
  // Twelve CancelRequests: some landed on the owning worker, some were routed through the primary.
  const n = (await routed()) - routedBefore;
  assert.ok(n > 0 && n < 12, `${n} of 12 cancel requests were routed to another worker`);
});

test('revoking an identity ends its sessions on both workers', async () => {
  const by = await onBothWorkers('agent-1');
  const gone = [...by.values()].map(ended);
  const alice = await client('alice');
  await run(process.execPath, [bin, 'revoke', '--identity', 'agent-1', '--reason', 'INC-9', '--by', 'carol', '-c', file]);
  for (const e of await within(Promise.all(gone), 15_000, 'revoked sessions ending')) {
    assert.equal(e.code, '57P01');
    assert.match(e.message, /revoked by carol: INC-9/);
  }
  assert.equal((await alice.query('select 1 as one')).rows[0].one, 1, 'other identities keep working');
  await run(process.execPath, [bin, 'unrevoke', '--identity', 'agent-1', '-c', file]);
});

test('fail closed in every worker: while the primary cannot write the audit store, both workers refuse new sessions (53100); then service resumes', async () => {
  const c = await client();
  // Another writer holds the SQLite write lock: the primary's appends wait, then queue for retry.
  const lock = new Database(join(dir, 'airlock.db'), { timeout: 100 });
  lock.exec('BEGIN IMMEDIATE');
  try {
    await c.query('select 1').catch(() => undefined);
    const deadline = Date.now() + 30_000;
    let consecutive = 0;
    while (consecutive < 4) {
      assert.ok(Date.now() < deadline, 'new sessions kept being admitted while the audit store could not record');
      try {
        const x = await client();
        consecutive = 0;
        await x.end();
      } catch (e) {
        assert.equal((e as pg.DatabaseError).code, '53100', String(e));
        assert.match((e as Error).message, /no audit trail, no access/);
        consecutive++;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    lock.exec('ROLLBACK');
    lock.close();
  }
  // Connections alternate between the workers: four refusals in a row came from both.
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await onBothWorkers();
      break;
    } catch (e) {
      assert.ok(Date.now() < deadline, `service did not resume: ${String(e)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  await c.end().catch(() => undefined);
});

test('a killed worker is replaced; its sessions are closed in the record as "worker crashed"', async () => {
  const by = await onBothWorkers();
  const victim = by.get(2)!;
  const survivor = by.get(1)!;
  const { rows } = await victim.query(`select 'marker-' || 42 as m`);
  assert.equal(rows[0].m, 'marker-42');
  const before = workerPids(await metrics());
  const lost = ended(victim);
  process.kill(before.get(2)!, 'SIGKILL');
  await within(lost, 10_000, 'the killed worker client');
  const deadline = Date.now() + 30_000;
  let after = before;
  while (!(after.get(2) && after.get(2) !== before.get(2))) {
    assert.ok(Date.now() < deadline, 'worker 2 was not replaced');
    await new Promise((r) => setTimeout(r, 200));
    after = workerPids(await metrics());
  }
  assert.equal(after.get(1), before.get(1), 'worker 1 kept running');
  assert.equal((await survivor.query('select 2 as two')).rows[0].two, 2, "worker 1's session was untouched");
  assert.match(await metrics(), /airlock_cluster_worker_restarts_total 1/);
  await onBothWorkers(); // the replacement serves
  const crashed = sessions().filter((s) => s.endReason === 'worker crashed');
  assert.ok(crashed.length >= 1, 'the killed worker session is closed in the record');
  assert.match(stderr, /gateway worker 2 \(pid \d+\) died/);
});

test('SIGTERM drains both workers: running statements finish, the chain of both workers records verifies', async () => {
  const by = await onBothWorkers();
  const running = [...by.values()].map((c) => c.query('select pg_sleep(1.5), 42 as answer'));
  const told = [...by.values()].map(ended);
  await new Promise((r) => setTimeout(r, 400));
  child.kill('SIGTERM');
  for (const r of await within(Promise.all(running), 30_000, 'running statements')) assert.equal(r.rows[0].answer, 42);
  for (const e of await within(Promise.all(told), 30_000, 'drained sessions')) assert.match(e.message, /shutting down/);
  assert.equal(await within(exited, 40_000, 'exit'), 0, stderr);
  const all = sessions();
  assert.ok(all.every((s) => s.endedAt), 'every session is ended in the record');
  assert.ok(all.filter((s) => /gateway draining/.test(s.endReason ?? '')).length >= 2);
  const verify = await run(process.execPath, [bin, 'audit', 'verify', '-c', file]);
  const entries = Number(/audit chain OK: (\d+) entries/.exec(verify.stdout)?.[1]);
  assert.ok(entries > all.length * 2, verify.stdout);
});
