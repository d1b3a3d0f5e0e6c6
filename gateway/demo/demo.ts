// `airlock demo`: everything on one machine, offline. An embedded PostgreSQL with fake PII, a
// local Temporal dev server, the approval worker on the local channel, and the gateway with a
// policy that masks PII, blocks destructive statements and holds writes. A scripted tour with the
// real psql shows each of those; then the gateway stays up for the user to try.
import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { resolve, join } from 'node:path';
import { stringify } from 'yaml';
import { loadConfig, type LoadedConfig } from '../config/load.ts';
import type { AirlockConfigInput } from '../config/schema.ts';
import { configuredIdentity, tokenSettings } from '../auth/settings.ts';
import { mintToken } from '../auth/tokens.ts';
import { startGateway } from '../app.ts';
import { openStore } from '../recording/open.ts';
import { formatSessionDetail } from '../recording/format.ts';
import { freePort } from '../net/free-port.ts';
import { log } from '../log.ts';
import { createLeastPrivilegeRole, startPostgres } from './embedded-postgres.ts';
import { DEMO_TABLES, seedDemoDatabase } from './sample-data.ts';
import { startDevServer } from '../../workflows/dev-server.ts';
import { startApprovalService } from '../../workflows/service.ts';
import { connectClient } from '../../workflows/client.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { signerFromConfig } from '../../workflows/decision-proof.ts';
import { LocalChannel } from '../../bots/local/local-channel.ts';
import { previewTable, previewTitle } from '../../bots/preview-text.ts';

export interface DemoOptions {
  dir: string;
  /** Keep running after the tour until `waitForExit` resolves. */
  interactive: boolean;
  waitForExit: () => Promise<void>;
  /** Where the tour's narration goes (tests capture it). */
  out?: (line: string) => void;
}

function secretFile(path: string): void {
  if (!existsSync(path)) writeFileSync(path, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
}

async function portOr(preferred: number): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => void freePort().then(res));
    s.listen(preferred, '127.0.0.1', () => s.close(() => res(preferred)));
  });
}

const DEMO_ROLE = 'airlock_demo';

function demoConfig(pgPort: number, gatewayPort: number, temporalAddress: string): AirlockConfigInput {
  return {
    listen: { postgres: { host: '127.0.0.1', port: gatewayPort } },
    auth: { signingKey: { file: 'signing.key' }, defaultTtl: '30m', maxTtl: '2h' },
    store: { sqlite: 'airlock.db' },
    // The operator key: `airlock approvals approve` signs with it, the worker verifies.
    decisions: { keys: { cli: { privateKey: { file: 'operator.key' } } } },
    // The auditor console (gateway/console); log in with a token of an `auditors` identity.
    console: { enabled: true, listen: { host: '127.0.0.1', port: 0 }, groups: ['auditors'] },
    identities: [
      { name: 'agent-7', groups: ['agents'], owner: 'alice' },
      { name: 'audrey', groups: ['auditors'] },
      { name: 'alice', groups: ['engineers', 'dba'] },
      { name: 'bob', groups: ['dba', 'oncall'] },
    ],
    connections: [
      // A dedicated least-privilege role (see createLeastPrivilegeRole), never the superuser.
      { name: 'demo', type: 'postgres', host: '127.0.0.1', port: pgPort, database: 'postgres', user: DEMO_ROLE, password: { file: 'db.password' }, tls: 'disable' },
    ],
    masking: {
      hashKey: { file: 'mask.key' },
      columns: [
        { column: 'public.customers.email', strategy: 'hash' },
        { column: 'public.customers.card_number', strategy: 'partial' },
        { column: 'public.customers.ssn', strategy: 'redact' },
        { column: 'public.customers.iban', strategy: 'partial' },
        { column: 'public.customers.phone', strategy: 'partial' },
      ],
      detectors: [
        { detector: 'email', strategy: 'redact' },
        { detector: 'card', strategy: 'partial' },
        { detector: 'ssn', strategy: 'redact' },
        { detector: 'iban', strategy: 'partial' },
        { detector: 'secret', strategy: 'redact' },
      ],
    },
    policy: {
      // Safe defaults: every built-in, the recommended rules (DO blocks, server-side code,
      // extensions, server settings, backend control, exclusive locks ...), masked columns only as
      // plain output columns; and anything no rule allows is denied.
      profile: 'recommended',
      default: 'deny',
      rules: [
        { name: 'agent-read-limit', match: { groups: ['agents'], kinds: ['read'] }, action: 'allow', limits: { maxRowsPerStatement: 50, maxBytesPerSession: 5_000_000, maxStatementTime: '30s' } },
        { name: 'agent-session-statements', match: { groups: ['agents'], kinds: ['transaction', 'utility'] }, action: 'allow' },
        {
          name: 'agent-writes-need-a-dba',
          match: { groups: ['agents'], kinds: ['write'] },
          action: 'review',
          reason: 'writes by agents are reviewed by a DBA',
          // Approvers see what the write would change: a dry run, rolled back, its sample masked.
          review: { approvers: ['dba'], quorum: 1, timeout: '10m', escalation: [{ after: '5m', mention: ['oncall'] }], grantTtl: '10m', preview: 'dry-run' },
        },
      ],
    },
    temporal: { address: temporalAddress, namespace: 'default', taskQueue: 'airlock-demo' },
  };
}

interface PsqlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs psql; `stderr()` shows what it printed so far (the NOTICE of a held statement). */
function psqlLive(conninfo: string, sql: string): { done: Promise<PsqlResult>; stderr: () => string } {
  let stdout = '';
  let stderr = '';
  const done = new Promise<PsqlResult>((res, rej) => {
    const p = spawn('psql', ['-X', '-v', 'ON_ERROR_STOP=0', conninfo, '-c', sql], { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.once('error', (err) => rej(new Error(`cannot run psql (install postgresql-client): ${err.message}`)));
    p.once('close', (code) => res({ code: code ?? 1, stdout, stderr }));
  });
  return { done, stderr: () => stderr };
}

function psql(conninfo: string, sql: string): Promise<PsqlResult> {
  return psqlLive(conninfo, sql).done;
}

export async function runDemo(opts: DemoOptions): Promise<void> {
  // The tour is the output; operational logs only when asked for (AIRLOCK_LOG_LEVEL=info).
  if (!process.env.AIRLOCK_LOG_LEVEL) log.level = 'warn';
  const say = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const dir = resolve(opts.dir);
  mkdirSync(dir, { recursive: true });
  for (const f of ['signing.key', 'mask.key']) secretFile(join(dir, f));
  const operatorKey = join(dir, 'operator.key');
  if (!existsSync(operatorKey)) writeFileSync(operatorKey, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  };
  try {
    say('airlock demo: starting an embedded PostgreSQL with fake customer data ...');
    const db = await startPostgres();
    stops.push(() => db.stop());
    const seedClient = await db.client();
    await seedDemoDatabase(seedClient);
    const rolePassword = randomBytes(18).toString('base64url');
    await createLeastPrivilegeRole(seedClient, DEMO_ROLE, rolePassword, DEMO_TABLES);
    await seedClient.end();
    writeFileSync(join(dir, 'db.password'), rolePassword + '\n', { mode: 0o600 });

    say('airlock demo: starting a local Temporal dev server ...');
    // Workflow state lives in a SQLite file, started fresh each run: an approval from a previous
    // run would otherwise still be a grant, and the tour's held UPDATE would not be held.
    // (Sessions and the audit trail stay in airlock.db across runs.)
    for (const f of ['temporal.db', 'temporal.db-wal', 'temporal.db-shm']) rmSync(join(dir, f), { force: true });
    const temporal = await startDevServer({ dbFile: join(dir, 'temporal.db'), ui: true });
    stops.push(() => temporal.stop());

    const configFile = join(dir, 'airlock.yaml');
    const gatewayPort = await portOr(6432);
    writeFileSync(configFile, '# Written by `airlock demo`.\n' + stringify(demoConfig(db.port, gatewayPort, temporal.address)));
    const loaded: LoadedConfig = loadConfig(configFile);
    const store = openStore(loaded);
    stops.push(async () => store.close());
    const worker = await startApprovalService(loaded, { store });
    stops.push(() => worker.shutdown());
    const gw = await startGateway(loaded, { store }).catch(async (e: NodeJS.ErrnoException) => {
      // 6432 was free when checked and taken before the bind (another demo starting): any free port.
      if (e.code !== 'EADDRINUSE') throw e;
      const port = await freePort();
      writeFileSync(configFile, '# Written by `airlock demo`.\n' + stringify(demoConfig(db.port, port, temporal.address)));
      return startGateway(loaded, { store, postgres: { host: '127.0.0.1', port } });
    });
    stops.push(() => gw.close());
    const { host, port } = gw.listeners[0];

    const settings = tokenSettings(loaded);
    const token = await mintToken(settings, { name: 'agent-7', groups: ['agents'], owner: 'alice' });
    const conninfo = `host=${host} port=${port} dbname=demo user=agent-7 password=${token}`;
    const tour: { title: string; sql: string }[] = [
      { title: 'PII columns are masked, whatever the query calls them', sql: 'SELECT id, full_name, email, card_number, ssn FROM customers ORDER BY id LIMIT 3' },
      { title: 'aliases and joins do not unmask', sql: 'SELECT c.full_name, c.email AS contact, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id ORDER BY o.id LIMIT 3' },
      { title: 'content detectors catch PII in free text', sql: "SELECT id, body FROM support_tickets WHERE body LIKE '%@example.%' ORDER BY id LIMIT 2" },
      { title: 'a masked column passed through a function is refused, not leaked', sql: "SELECT reverse(email), encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers LIMIT 3" },
      { title: 'code Airlock cannot check statement by statement is refused', sql: "DO $$ BEGIN EXECUTE 'DELETE FROM orders'; END $$" },
      { title: 'destructive statements are blocked; the session stays usable', sql: 'DROP TABLE customers' },
      { title: 'a DELETE hidden in a CTE is still a DELETE without WHERE', sql: 'WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone' },
      { title: 'bulk export is cut at the row limit', sql: 'SELECT id, city FROM customers' },
    ];
    for (const step of tour) {
      say(`\n-- ${step.title}\n$ psql ... -c "${step.sql}"`);
      const r = await psql(conninfo, step.sql);
      say((r.stderr + r.stdout).trimEnd());
    }

    say('\n-- a write by the agent is held for a DBA, with its reason and a dry-run preview; alice owns the agent, so bob approves');
    const held = psqlLive(conninfo, `/* airlock: reason="customer 1 moved to Oslo" ticket=SUP-311 */ UPDATE customers SET city = 'Oslo' WHERE id = 1`);
    const local = LocalChannel.open(join(dir, 'airlock.db'));
    stops.push(async () => local.close());
    // Wait until the agent has been told it is waiting, as a person would see it happen.
    // (The first notice says the request was created; the second that approvers can see it.)
    for (let i = 0; !/approval required: request \S+ (posted to|re-attached in)/.test(held.stderr()) && i < 600; i++) await new Promise((r) => setTimeout(r, 100));
    const requestId = /request (airlock-[0-9a-f]+)/.exec(held.stderr())?.[1];
    const pending = local.list().find((r) => r.view.requestId === requestId && r.view.status === 'pending');
    if (!pending) throw new Error(`the held UPDATE never reached the local approval channel${held.stderr() ? `: ${held.stderr()}` : ''}`);
    say(`${held.stderr().trimEnd()}\n(psql is waiting)\n\n$ airlock approvals list\n${pending.view.requestId}  pending  ${pending.view.identity}@${pending.view.connection}: ${pending.view.text}`);
    // What the approver sees besides the statement: the effect (masked) and why the agent asks.
    const pv = pending.view.preview;
    if (pv) say(`${previewTitle(pv)}${previewTable(pv) ? `\n${previewTable(pv)}` : ''}`);
    for (const d of pending.view.details ?? []) if (/^(agent's reason|ticket|agent's owner|before this)/.test(d)) say(d);
    const client = await connectClient(loaded);
    stops.push(() => client.connection.close());
    const bob = configuredIdentity(loaded, 'bob');
    const alice = configuredIdentity(loaded, 'alice');
    const operator = signerFromConfig(loaded, 'cli')!;
    const refused = await submitDecision(client, store, operator.sign({ requestId: pending.view.requestId, approver: 'alice', approverGroups: alice.groups, decision: 'approve', via: 'demo' }, 'demo'));
    say(`$ airlock approvals approve ${pending.view.requestId} --as alice\n${refused.ok ? 'approved' : `refused: ${refused.error}`}`);
    const ok = await submitDecision(client, store, operator.sign({ requestId: pending.view.requestId, approver: 'bob', approverGroups: bob.groups, decision: 'approve', via: 'demo' }, 'demo'));
    say(`$ airlock approvals approve ${pending.view.requestId} --as bob\n${ok.ok ? 'approved' : `refused: ${ok.error}`}`);
    const r = await held.done;
    say(r.stdout.trimEnd());

    await new Promise((res) => setTimeout(res, 300));
    const sessions = store.listSessions({ identity: 'agent-7', limit: 1 });
    if (sessions[0]) {
      const detail = store.getSession(sessions[0].id);
      if (detail) say(`\n-- what the audit log recorded for the held UPDATE's session\n$ airlock sessions show ${sessions[0].id}\n${formatSessionDetail(detail)}`);
    }

    say(`
-- for auditors
Auditor console (read-only): ${consoleUrl(gw.listeners)}
  log in with a token: node bin/airlock.js token -i audrey --ttl 2h --config ${configFile}
Approval workflows in the Temporal Web UI: ${temporal.uiUrl ?? '(headless)'}
  list queries: AirlockRequester="agent-7"  AirlockConnection="demo"  AirlockOutcome="rejected"
                AirlockApprovers IN ("bob")  AirlockRejecter="bob"  AirlockRule="..."  (README "For auditors")`);

    if (opts.interactive) {
      const long = await mintToken(settings, { name: 'agent-7', groups: ['agents'], owner: 'alice' }, 2 * 3_600_000);
      say(`
Airlock is running. Try it yourself as agent-7 (token valid 2h):

  psql "host=${host} port=${port} dbname=demo user=agent-7 password=${long}"

Writes are held for approval. In another terminal:

  node bin/airlock.js approvals list --config ${configFile}
  node bin/airlock.js approvals approve ID --as bob --config ${configFile}
  node bin/airlock.js approvals reject ID --as bob --reason "not today" --config ${configFile}
  node bin/airlock.js sessions list --config ${configFile}

Press Ctrl-C to stop.`);
      await opts.waitForExit();
    }
  } finally {
    // Ctrl-C reaches the embedded PostgreSQL too; its connections dropping on the way out is expected.
    if (!process.env.AIRLOCK_LOG_LEVEL) log.level = 'error';
    await stopAll();
  }
}

/** The auditor console's URL among the gateway's listeners. */
function consoleUrl(listeners: { protocol: string; detail?: string }[]): string {
  return listeners.find((l) => l.protocol === 'console')?.detail ?? '(console not enabled)';
}
