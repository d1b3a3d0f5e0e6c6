// The production topology as separate processes: gateway A and gateway B (`airlock gateway`, each with
// its own instance id), the approval worker (`airlock worker`), a Temporal dev server and PostgreSQL
// (the upstream AND the shared audit store). A statement held through A survives A's drain (SIGTERM:
// the client is told the request stays open), the client re-sends it through B, which re-attaches to
// the same request (deterministic request id), an approver approves it with the CLI, it runs through
// B once, and both gateways' sessions are in the one store with their instance ids.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { configuredIdentity, tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { loadConfig } from '../../gateway/config/load.ts';
import type { AirlockConfigInput } from '../../gateway/config/schema.ts';
import { finished, spawnPsql, waitFor, type LivePsql } from '../support/approvals-stack.ts';
import { startPostgres, type RunningPostgres } from '../support/postgres.ts';
import { startTemporal, type TestTemporal } from '../support/temporal.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'airlock.js');
const AUDIT_DB = 'airlock_audit';

interface Proc {
  child: ChildProcess;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

let dir: string;
let pgServer: RunningPostgres;
let temporal: TestTemporal;
const procs: Proc[] = [];
const psqls: LivePsql[] = [];

/** `airlock <args>` as its own process; resolves once stderr matches `ready`. */
async function airlock(args: string[], ready: RegExp, what: string): Promise<Proc & { match: RegExpExecArray }> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
  // Its log lines (stdout) and messages (stderr) together, for failure messages.
  let stderr = '';
  for (const s of [child.stdout!, child.stderr!]) {
    s.setEncoding('utf8');
    s.on('data', (d: string) => (stderr += d));
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const p: Proc = { child, stderr: () => stderr, exited };
  procs.push(p);
  const match = await Promise.race([
    waitFor(() => ready.exec(stderr), `${what} to start (stderr: ${stderr})`, 120_000),
    exited.then(({ code, signal }) => {
      throw new Error(`${what} exited (${code ?? signal}) before it was ready: ${stderr}`);
    }),
  ]);
  return { ...p, match };
}

function configFile(name: string, instanceId: string, taskQueue: string): string {
  const config: AirlockConfigInput = {
    listen: { postgres: { host: '127.0.0.1', port: 0 } },
    auth: { signingKey: { file: 'signing.key' } },
    // The shared audit store; the local approval channel lives next to `sqlite` (shared by the CLI and the worker).
    store: { sqlite: 'local/airlock.db', postgres: { host: pgServer.host, port: pgServer.port, database: AUDIT_DB, user: pgServer.user, password: { file: 'upstream.pass' } } },
    gateway: { instanceId },
    shutdown: { drainTimeout: '5s' },
    identities: [
      { name: 'erin', groups: ['engineers'] },
      { name: 'bob', groups: ['dba'] },
    ],
    connections: [{ name: 'app', type: 'postgres', host: pgServer.host, port: pgServer.port, database: 'postgres', user: pgServer.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true }],
    masking: { hashKey: { file: 'hash.key' } },
    policy: { rules: [{ name: 'review-topo', match: { tables: ['public.t_topo'], statements: ['UpdateStmt'] }, action: 'review', reason: 'writes need a DBA', review: { approvers: ['dba'], timeout: '10m' } }] },
    decisions: { keys: { cli: { privateKey: { file: 'cli-decision.key' } } } },
    temporal: { address: temporal.address, namespace: temporal.namespace, taskQueue },
  };
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(config));
  return file;
}

before(
  async () => {
    dir = mkdtempSync(join(tmpdir(), 'airlock-topology-'));
    mkdirSync(join(dir, 'local'));
    [pgServer, temporal] = await Promise.all([startPostgres(), startTemporal()]);
    await pgServer.query(`CREATE DATABASE ${AUDIT_DB}`);
    await pgServer.query(`CREATE TABLE t_topo (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t_topo VALUES (1, 1);`);
    writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
    writeFileSync(join(dir, 'upstream.pass'), pgServer.password);
    writeFileSync(join(dir, 'hash.key'), randomBytes(32).toString('hex'));
    writeFileSync(join(dir, 'cli-decision.key'), generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
  },
  { timeout: 180_000 },
);

after(async () => {
  for (const p of psqls) p.kill('SIGKILL');
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await Promise.all(procs.map((p) => p.exited));
  await temporal?.stop();
  await pgServer?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('gateway A drains with a statement held; the client re-attaches through gateway B; approved once, it runs once through B; one shared store knows both instances', { timeout: 240_000 }, async () => {
  const taskQueue = `airlock-topology-${randomUUID()}`;
  const aFile = configFile('gw-a', 'gw-a', taskQueue);
  const bFile = configFile('gw-b', 'gw-b', taskQueue);
  const listening = /postgres gateway listening on [^\s:]+:(\d+)/;
  const [a, b] = await Promise.all([
    airlock(['gateway', '--config', aFile, '--workers', '1'], listening, 'gateway A'),
    airlock(['gateway', '--config', bFile, '--workers', '1'], listening, 'gateway B'),
    airlock(['worker', '--config', aFile], /approval worker running/, 'the worker'),
  ]);
  const loaded = loadConfig(aFile);
  const conninfo = async (port: string) =>
    `host=127.0.0.1 port=${port} dbname=app user=erin password=${await mintToken(tokenSettings(loaded), configuredIdentity(loaded, 'erin'))} sslmode=disable connect_timeout=10`;
  const sql = `UPDATE t_topo SET v = v + 1 WHERE id = 1;\nSELECT 'after:' || v FROM t_topo WHERE id = 1;\n`;

  // 1. Held through A.
  const first = spawnPsql(await conninfo(a.match[1]), sql);
  psqls.push(first);
  const requestId = (await waitFor(() => /approval required: request (airlock-[0-9a-f]{16}) posted to/.exec(first.stderr), 'the NOTICE through A'))[1];

  // 2. A drains: the held client is told the request stays open and how to re-attach; A exits 0.
  a.child.kill('SIGTERM');
  const told = await finished(first, 'psql held on A');
  assert.match(told.stderr, new RegExp(`approval request ${requestId} stays open`));
  assert.match(told.stderr, /re-attach/);
  assert.doesNotMatch(told.stdout, /UPDATE 1/);
  assert.equal((await a.exited).code, 0, a.stderr());

  // 3. The client re-sends the same statement through B: the same request, re-attached.
  const retry = spawnPsql(await conninfo(b.match[1]), sql);
  psqls.push(retry);
  await waitFor(() => retry.stderr.includes(`approval required: request ${requestId} re-attached in`), `the re-attach NOTICE through B (psql stderr: ${retry.stderr}; gateway B: ${b.stderr()}; gateway A: ${a.stderr()})`);

  // 4. An approver approves with the CLI; the statement runs through B, once.
  const cli = spawnSync(process.execPath, [BIN, 'approvals', 'approve', requestId, '--as', 'bob', '--config', bFile], { env: { ...process.env, AIRLOCK_LOG_LEVEL: 'silent' }, encoding: 'utf8', timeout: 60_000 });
  assert.equal(cli.status, 0, cli.stdout + cli.stderr);
  assert.match(cli.stdout, new RegExp(`${requestId}: approved by bob`));
  const ran = await finished(retry, 'psql through B');
  assert.equal(ran.code, 0, ran.stderr);
  assert.match(ran.stdout, /^UPDATE 1$/m);
  assert.match(ran.stdout, /^after:2$/m);
  assert.equal((await pgServer.query('SELECT v FROM t_topo WHERE id = 1')).rows[0].v, 2, 'ran exactly once');

  // 5. One shared store: both instances' sessions, and the released run recorded once (by B).
  const audit = await pgServer.client(AUDIT_DB);
  try {
    const sessions = await waitFor(async () => {
      const r = await audit.query<{ id: string; instance: string; ended_at: string | null }>(`SELECT id, instance, ended_at FROM sessions WHERE identity = 'erin' ORDER BY started_at`);
      return r.rows.length === 2 && r.rows.every((s) => s.ended_at !== null) ? r.rows : undefined;
    }, 'both sessions recorded and ended');
    assert.deepEqual(sessions.map((s) => s.instance), ['gw-a', 'gw-b']);
    const ops = (await audit.query<{ session_id: string; error: string | null; approval: string; rows: number | null }>(`SELECT session_id, error, approval, rows FROM operations WHERE approval LIKE $1`, [`%${requestId}%`])).rows;
    const executed = ops.filter((o) => o.error === null && JSON.parse(o.approval).outcome === 'approved');
    assert.equal(executed.length, 1, JSON.stringify(ops));
    assert.equal(executed[0].session_id, sessions[1].id, 'recorded by B\'s session');
    const onA = ops.filter((o) => o.session_id === sessions[0].id);
    assert.ok(onA.every((o) => o.error !== null), `nothing ran on A: ${JSON.stringify(onA)}`);
    const instances = (await audit.query<{ id: string; last_seen: string }>(`SELECT id, last_seen FROM gateway_instances ORDER BY id`)).rows;
    assert.deepEqual(instances.map((i) => i.id), ['gw-a', 'gw-b']);
    assert.equal(Number(instances[0].last_seen), 0, 'A released its lease when it stopped');
  } finally {
    await audit.end();
  }
});
