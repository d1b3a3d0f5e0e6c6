// Holds across gateway workers: `airlock gateway --workers 2` (a child process) with a real
// Temporal dev server, the real approval worker and the local approval channel. A statement held
// by one worker is re-attached from a connection the OTHER worker serves (approval requests have
// deterministic ids, so nothing is shared in memory), and the approval releases it there, once.
// A CancelRequest for a held statement cancels it (and its request) whichever worker it reaches.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';
import { promisify } from 'node:util';
import pg from 'pg';
import { configuredIdentity, tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { loadConfig } from '../../gateway/config/load.ts';
import { freePort } from '../../gateway/net/free-port.ts';
import { cancelKeyWorker } from '../../gateway/postgres/cancel.ts';
import { startPostgres, type RunningPostgres } from '../support/postgres.ts';
import { DECISIONS_YAML, eventually, IDENTITIES, startHarness, type Harness } from '../workflows/harness.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;

let h: Harness;
let upstream: RunningPostgres;
let gatewayFile: string;
let approvalsFile: string;
let port: number;
let adminPort: number;
let child: ChildProcess;
let log = '';
const clients: pg.Client[] = [];

before(async () => {
  upstream = await startPostgres();
  await upstream.query('create table accounts (id int primary key, balance int not null); insert into accounts values (1, 100);');
  h = await startHarness();
  writeFileSync(join(h.dir, 'signing.key'), randomBytes(48).toString('base64'));
  writeFileSync(join(h.dir, 'upstream.pass'), upstream.password);
  port = await freePort();
  adminPort = await freePort();
  const temporal = `temporal: { address: "${h.temporal.address}", namespace: default, taskQueue: ${h.taskQueue} }`;
  // The gateway's own store; the approval worker and `airlock approvals` use the harness's.
  gatewayFile = join(h.dir, 'gateway.yaml');
  writeFileSync(
    gatewayFile,
    `listen: { postgres: { host: 127.0.0.1, port: ${port} }, admin: { host: 127.0.0.1, port: ${adminPort} } }
auth: { signingKey: { file: signing.key } }
store: { sqlite: gateway.db }
${temporal}
${IDENTITIES}
connections:
  - { name: app, type: postgres, host: ${upstream.host}, port: ${upstream.port}, database: postgres, user: ${upstream.user}, password: { file: upstream.pass }, tls: prefer, allowSuperuser: true }
policy:
  default: allow
  rules:
    - { name: review-cancel, match: { tables: [public.accounts], statements: [DeleteStmt] }, action: review, reason: deletes need a DBA, review: { approvers: [dba], timeout: 2m } }
    - { name: review-writes, match: { tables: [public.accounts], statements: [UpdateStmt] }, action: review, reason: writes need a DBA, review: { approvers: [dba], timeout: 2m } }
`,
  );
  approvalsFile = join(h.dir, 'airlock.yaml');
  writeFileSync(approvalsFile, `auth: { signingKey: { file: signing.key } }\nstore: { sqlite: airlock.db }\n${temporal}\n${DECISIONS_YAML}\n${IDENTITIES}`);
  const env: NodeJS.ProcessEnv = { ...process.env, AIRLOCK_LOG_LEVEL: 'warn' };
  delete env.NODE_TEST_CONTEXT;
  child = spawn(process.execPath, [bin, 'gateway', '--config', gatewayFile, '--workers', '2'], { stdio: ['ignore', 'pipe', 'pipe'], env });
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  await eventually(() => /2 gateway workers: /.test(log) || child.exitCode !== null, 90_000, 'the gateway workers');
  assert.equal(child.exitCode, null, log);
});

after(async () => {
  for (const c of clients) await c.end().catch(() => {});
  if (child && child.exitCode === null) {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
  await h?.close();
  await upstream?.stop();
});

async function client(identity: string): Promise<{ c: pg.Client; notices: string[] }> {
  const loaded = loadConfig(gatewayFile);
  const c = new pg.Client({ host: '127.0.0.1', port, database: 'app', user: identity, password: await mintToken(tokenSettings(loaded), configuredIdentity(loaded, identity)) });
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  c.on('error', () => {});
  await c.connect();
  clients.push(c);
  return { c, notices };
}

const workerOf = (c: pg.Client) => cancelKeyWorker((c as unknown as { processID: number }).processID);

test('a statement held by one worker is re-attached from the other worker and released there once', { timeout: 240_000 }, async () => {
  const sql = 'UPDATE accounts SET balance = balance + 5 WHERE id = 1';
  const a = await client('agent-x');
  const first = a.c.query(sql).then(
    () => 'ran',
    (e: Error) => e.message,
  );
  const posted = await eventually(() => a.notices.find((n) => /approval required: request \S+ posted to/.test(n)), 60_000, 'the request posted');
  const requestId = /request (\S+)/.exec(posted)![1];

  let b = await client('agent-x');
  for (let i = 0; i < 6 && workerOf(b.c) === workerOf(a.c); i++) b = await client('agent-x');
  assert.notEqual(workerOf(b.c), workerOf(a.c), 'the retry is served by the other worker');
  const retry = b.c.query(sql);
  await eventually(() => b.notices.find((n) => n.includes(`approval required: request ${requestId} re-attached in`)), 60_000, 'the re-attach notice');

  // The first client gives up; the request stays open for the one still waiting.
  await a.c.end();
  assert.notEqual(await first, 'ran');
  const approved = await run(process.execPath, [bin, 'approvals', 'approve', requestId, '--as', 'bob', '--config', approvalsFile], { env: { ...process.env, AIRLOCK_LOG_LEVEL: 'silent' } });
  assert.match(approved.stdout + approved.stderr, /approved/i);
  const r = await retry;
  assert.equal(r.rowCount, 1);
  assert.equal((await upstream.query('select balance from accounts where id = 1')).rows[0].balance, 105, 'ran exactly once');
});

function raw(send?: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => (send ? s.end(send) : s.end()));
    s.on('error', () => resolve());
    s.on('close', () => resolve());
  });
}

function cancelRequest(c: pg.Client): Buffer {
  const { processID, secretKey } = c as unknown as { processID: number; secretKey: number };
  const b = Buffer.alloc(16);
  b.writeInt32BE(16, 0);
  b.writeInt32BE(80877102, 4);
  b.writeInt32BE(processID, 8);
  b.writeInt32BE(secretKey, 12);
  return b;
}

test('a CancelRequest cancels a held statement whichever worker receives it', { timeout: 240_000 }, async () => {
  const routed = async () => Number(/airlock_cluster_cancels_routed_total (\d+)/.exec(await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text())?.[1]);
  const before = await routed();
  for (let i = 0; i < 2; i++) {
    const a = await client('agent-x');
    const held = a.c.query(`DELETE FROM accounts WHERE id = ${100 + i}`).then(
      () => undefined,
      (e: Error & { code?: string }) => e,
    );
    await eventually(() => a.notices.find((n) => /approval required: request \S+ posted to/.test(n)), 60_000, 'the request posted');
    if (i === 1) await raw(); // shifts which worker the cancel connection reaches
    await raw(cancelRequest(a.c));
    const e = await held;
    assert.equal(e?.code, '57014');
    assert.match(e?.message ?? '', /Airlock cancelled the held statement/);
  }
  const n = (await routed()) - before;
  assert.equal(n, 1, `one of the two cancel requests was routed to the owning worker (${n})`);
});
