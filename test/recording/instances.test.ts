// Gateway instance identity and crash reconciliation on a store several gateways share: each session
// records the instance that served it, a restarting gateway ends only sessions of instances that are
// certainly gone (its own earlier incarnation, a peer whose lease lapsed, a peer on this host whose
// process is gone), and live peers keep their sessions. Existing stores upgrade additively.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { stringify } from 'yaml';
import { startGateway, type RunningGateway } from '../../gateway/app.ts';
import { configuredIdentity, tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { loadConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import type { AirlockConfigInput } from '../../gateway/config/schema.ts';
import { PostgresStore } from '../../gateway/recording/postgres-store.ts';
import { SCHEMA_VERSION, SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { PG_SCHEMA_VERSION } from '../../gateway/recording/postgres-schema.ts';
import { CRASH_REASON, HOLD_STARTED, reconcileCrashed } from '../../gateway/recording/reconcile.ts';
import { verifyAuditDb } from '../../gateway/recording/verify.ts';
import { entryHash, entryText, GENESIS_HASH } from '../../gateway/recording/chain.ts';
import Database from 'better-sqlite3';
import { startPostgres, type RunningPostgres } from '../support/postgres.ts';

let server: RunningPostgres;
let dir: string;

before(async () => {
  server = await startPostgres();
  dir = mkdtempSync(join(tmpdir(), 'airlock-instances-'));
});

after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const session = (id: string) => ({ id, protocol: 'postgres', identity: 'alice', groups: [], connection: 'app', clientAddress: '127.0.0.1:1', startedAt: new Date() });

/** A process that has exited: its pid is free. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(r.stdout.toString());
}

function gatewayConfig(name: string, database: string, instanceId: string): LoadedConfig {
  const base: AirlockConfigInput = {
    listen: { postgres: { host: '127.0.0.1', port: 0 } },
    auth: { signingKey: { file: 'signing.key' } },
    store: { sqlite: `${name}.db`, postgres: { host: server.host, port: server.port, database, user: server.user, password: { file: 'upstream.pass' } } },
    gateway: { instanceId, instanceLease: '10s' },
    identities: [{ name: 'alice', groups: ['dba'] }],
    connections: [{ name: 'app', type: 'postgres', host: server.host, port: server.port, database: 'postgres', user: server.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true }],
    masking: { hashKey: { file: 'hash.key' } },
    policy: { default: 'allow' },
  };
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, stringify(base));
  return loadConfig(file);
}

async function clientThrough(gw: RunningGateway, loaded: LoadedConfig): Promise<pg.Client> {
  const port = gw.listeners.find((l) => l.protocol === 'postgres')!.port;
  const c = new pg.Client({ host: '127.0.0.1', port, database: 'app', user: 'alice', password: await mintToken(tokenSettings(loaded), configuredIdentity(loaded, 'alice')) });
  await c.connect();
  return c;
}

test('two gateways on one PostgreSQL store: restarting one ends only sessions of dead instances; the other gateway\'s live session stays open and keeps working', async () => {
  const database = `audit_shared_${process.pid}`;
  await server.query(`CREATE DATABASE ${database}`);
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  writeFileSync(join(dir, 'upstream.pass'), server.password);
  writeFileSync(join(dir, 'hash.key'), randomBytes(32).toString('hex'));
  const aConfig = gatewayConfig('gw-a', database, 'gw-a');
  const bConfig = gatewayConfig('gw-b', database, 'gw-b');
  const conn = { host: server.host, port: server.port, user: server.user, password: server.password, database };

  let a = await startGateway(aConfig);
  const b = await startGateway(bConfig);
  const clients: pg.Client[] = [];
  try {
    // A third gateway, on another host, crashed a minute ago with a session open and a hold in flight.
    const crashed = PostgresStore.open(conn, { instance: { id: 'gw-crashed', boot: 'b0', host: 'some-other-host', pid: 4242, startedAt: Date.now() - 120_000 } });
    crashed.startSession(session('crashed-1'));
    crashed.recordAudit({ at: new Date(), kind: HOLD_STARTED, subject: 'crashed-1', detail: { requestId: 'REQ-crashed', rule: 'r', kind: 'delete', text: 'delete from t' } });
    assert.equal(await crashed.whenDrained(5000), true);
    crashed.close();
    await server.query(`INSERT INTO gateway_instances (id, boot, host, pid, started_at, last_seen) VALUES ('gw-crashed', 'b0', 'some-other-host', 4242, 0, (extract(epoch from clock_timestamp()) * 1000)::bigint - 60000)`, database);

    const viaB = await clientThrough(b, bConfig);
    clients.push(viaB);
    assert.equal((await viaB.query('select 1 as n')).rows[0].n, 1);
    const viaA = await clientThrough(a, aConfig);
    clients.push(viaA);
    await viaA.query('select 2');

    const store = a.store as PostgresStore;
    const live = store.listSessions().filter((s) => !s.endedAt);
    assert.deepEqual(live.map((s) => s.instance).sort(), ['gw-a', 'gw-b', 'gw-crashed']);
    assert.deepEqual((store.instances() as { id: string }[]).map((r) => r.id), ['gw-a', 'gw-b', 'gw-crashed']);

    // Restart A (planned stop, then a new process with the same instance id).
    await viaA.end().catch(() => {});
    await a.shutdown('fast');
    a = await startGateway(aConfig);
    const after = a.store as PostgresStore;

    const sessions = after.listSessions();
    const crashedSession = sessions.find((s) => s.id === 'crashed-1')!;
    assert.equal(crashedSession.endReason, CRASH_REASON, 'the lapsed instance\'s session is ended');
    assert.equal(after.getSession('crashed-1')!.operations.find((o) => o.approval?.requestId === 'REQ-crashed')?.approval?.outcome, 'abandoned');
    const bSessions = sessions.filter((s) => s.instance === 'gw-b');
    assert.equal(bSessions.length, 1);
    assert.equal(bSessions[0].endedAt, undefined, 'the live peer\'s session stays open');
    assert.equal((await viaB.query('select 3 as n')).rows[0].n, 3, 'and keeps working');
    const ids = (after.instances() as { id: string }[]).map((r) => r.id);
    assert.deepEqual(ids, ['gw-a', 'gw-b'], 'the dead instance was claimed (its lease row removed)');
    assert.ok(sessions.filter((s) => s.instance === 'gw-a').every((s) => s.endedAt), 'A\'s own session ended at its planned stop');

    // B's lease keeps being renewed; the chain still verifies with the instance ids in it.
    const seen = (after.instances() as { id: string; last_seen: number }[]).find((r) => r.id === 'gw-b')!.last_seen;
    await new Promise((r) => setTimeout(r, 3600));
    assert.ok((after.instances() as { id: string; last_seen: number }[]).find((r) => r.id === 'gw-b')!.last_seen > seen, 'B renews its lease');
    const v = after.verify();
    assert.equal(v.ok, true, JSON.stringify(v.problems));
  } finally {
    for (const c of clients) await c.end().catch(() => {});
    await a.close();
    await b.close();
  }
});

test('SQLite: a restart reconciles its own earlier incarnation and same-host peers whose process is gone at once, not a live peer', () => {
  const file = join(dir, 'local.db');
  const me = { id: 'gw-1', boot: 'new-boot', host: hostname(), pid: process.pid, startedAt: Date.now() };
  // What an earlier incarnation of gw-1, a crashed same-host peer and a live same-host peer left behind.
  for (const [instance, sid] of [
    [{ ...me, boot: 'old-boot' }, 'mine-before'],
    [{ id: 'gw-dead', boot: 'x', host: hostname(), pid: deadPid(), startedAt: 0 }, 'dead-peer'],
    [{ id: 'gw-live', boot: 'y', host: hostname(), pid: process.ppid, startedAt: 0 }, 'live-peer'],
  ] as const) {
    const s = SqliteStore.open(file, { instance });
    s.startSession(session(sid));
    s.flush();
    // Its lease row as a crash leaves it: seen just now (well within the lease).
    s.database.prepare('INSERT INTO gateway_instances (id, boot, host, pid, started_at, last_seen) VALUES (?, ?, ?, ?, 0, ?)').run(instance.id, instance.boot, instance.host, instance.pid, Date.now());
    s.close();
  }
  const store = SqliteStore.open(file, { instance: me, instanceLeaseMs: 60_000 });
  try {
    const r = reconcileCrashed(store);
    assert.deepEqual(r.sessions.sort(), ['dead-peer', 'mine-before']);
    assert.deepEqual(r.instances.sort(), ['gw-1', 'gw-dead'], 'its own earlier incarnation and the dead peer');
    assert.equal(store.getSession('live-peer')!.session.endedAt, undefined);
    assert.equal(store.getSession('dead-peer')!.session.endReason, CRASH_REASON);
    assert.equal(store.getSession('mine-before')!.session.instance, 'gw-1');
    // Nothing left to do on a second pass.
    assert.deepEqual(reconcileCrashed(store).sessions, []);
    assert.equal(verifyAuditDb(store.database).ok, true);
  } finally {
    store.close();
  }
});

test('existing stores upgrade: sessions recorded before instance ids keep verifying; SQLite reconciles them as before, PostgreSQL leaves them (a live older gateway may own them)', async () => {
  // SQLite: take a current file back to the schema before instance ids (the last migration: no instance column, no lease table).
  const file = join(dir, 'old.db');
  const old = SqliteStore.open(file);
  old.close();
  const raw = new Database(file);
  raw.exec(`DROP INDEX sessions_open_instance; ALTER TABLE sessions DROP COLUMN instance; DROP TABLE gateway_instances; PRAGMA user_version = ${SCHEMA_VERSION - 1};`);
  // A session as a version without instance ids recorded it: the row and its chain entry.
  const data = { id: 'legacy', protocol: 'postgres', identity: 'alice', groups: '[]', connection: 'app', clientAddress: 'x', startedAt: 1 };
  raw.prepare(`INSERT INTO sessions (id, protocol, identity, groups, connection, client_address, started_at) VALUES (@id, @protocol, @identity, @groups, @connection, @clientAddress, @startedAt)`).run(data);
  const text = entryText(1, 'session.start', 1, data);
  raw.prepare('INSERT INTO journal (seq, at, kind, entity, item, entry, hash) VALUES (1, 1, ?, ?, NULL, ?, ?)').run('session.start', 's:legacy', text, entryHash(GENESIS_HASH, text));
  raw.close();
  const s = SqliteStore.open(file, { instance: { id: 'gw-new', boot: 'b', host: hostname(), pid: process.pid, startedAt: Date.now() } });
  try {
    assert.equal(s.schemaVersion(), SCHEMA_VERSION);
    assert.equal(s.getSession('legacy')!.session.instance, undefined);
    assert.deepEqual(reconcileCrashed(s).sessions, ['legacy']);
    assert.equal(verifyAuditDb(s.database).ok, true);
  } finally {
    s.close();
  }

  const database = `audit_upgrade_${process.pid}`;
  await server.query(`CREATE DATABASE ${database}`);
  const conn = { host: server.host, port: server.port, user: server.user, password: server.password, database };
  const p1 = PostgresStore.open(conn);
  p1.close();
  await server.query(`DROP INDEX sessions_open_instance; ALTER TABLE sessions DROP COLUMN instance; DROP TABLE gateway_instances; DELETE FROM airlock_schema_version WHERE version = ${PG_SCHEMA_VERSION};`, database);
  await server.query(`INSERT INTO sessions (id, protocol, identity, groups, connection, client_address, started_at) VALUES ('legacy-pg', 'postgres', 'alice', '[]', 'app', 'x', 1)`, database);
  const p2 = PostgresStore.open(conn, { instance: { id: 'gw-new', boot: 'b', host: hostname(), pid: process.pid, startedAt: Date.now() } });
  try {
    assert.equal(p2.schemaVersion(), PG_SCHEMA_VERSION);
    assert.deepEqual(reconcileCrashed(p2).sessions, []);
    assert.equal(p2.getSession('legacy-pg')!.session.endedAt, undefined);
  } finally {
    p2.close();
  }
});
