// A running Airlock PostgreSQL gateway for tests: writes a real airlock.yaml (signing key and
// upstream password in secret files), starts an embedded PostgreSQL (or reuses one), wires the
// real policy engine, SQLite store and masking layer, and offers token minting, psql and
// node-postgres helpers.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { stringify } from 'yaml';
import { FailClosedApprover, type Approver } from '../../gateway/approvals/approver.ts';
import { approvalBindingKey } from '../../gateway/app.ts';
import { configuredIdentity, tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { loadConfig, resolveSecret, type LoadedConfig } from '../../gateway/config/load.ts';
import type { AirlockConfigInput } from '../../gateway/config/schema.ts';
import { PolicyEngine, sqlOperations } from '../../gateway/policy/engine.ts';
import type { Identity } from '../../gateway/policy/operation.ts';
import { initSqlParser } from '../../gateway/policy/sql/classify.ts';
import { createMaskerFactory, type MaskerFactory } from '../../gateway/postgres/row-masker.ts';
import { startPostgresGateway, type PostgresGateway } from '../../gateway/postgres/server.ts';
import type { PolicyDecider } from '../../gateway/enforce/session.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { startPostgres, type RunningPostgres } from './postgres.ts';

export interface GatewayOptions {
  /** Reuse a running PostgreSQL (not stopped by close()). */
  pg?: RunningPostgres;
  pgAuthMethod?: 'scram-sha-256' | 'md5';
  /** SQL run on the upstream `postgres` database before the gateway starts. */
  setup?: string;
  /** Extra/overriding config. `connections` defaults to one connection `app` to the upstream. */
  config?: (pg: RunningPostgres, dir: string) => Partial<AirlockConfigInput>;
  approver?: Approver;
  /** false: start without a masking layer. */
  masking?: boolean;
  /** Wraps the real policy engine (e.g. to add a decision field the config cannot express yet). */
  decider?: (engine: PolicyEngine) => PolicyDecider;
}

export interface PsqlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface ConnectOptions {
  user?: string;
  token?: string;
  dbname?: string;
  sslmode?: string;
  application_name?: string;
}

export interface GatewayHarness {
  pg: RunningPostgres;
  gateway: PostgresGateway;
  loaded: LoadedConfig;
  store: SqliteStore;
  masking: MaskerFactory | null;
  dir: string;
  /** A token for `identity` (groups from the config's identities unless given). */
  token(identity?: string | Identity, ttlMs?: number): Promise<string>;
  conninfo(o?: ConnectOptions): Promise<string>;
  /** Runs psql (-X -A -t -v ON_ERROR_STOP=0) with `sql` on stdin. */
  psql(sql: string, o?: ConnectOptions & { args?: string[]; env?: Record<string, string> }): Promise<PsqlResult>;
  /** A node-postgres client connected through the gateway. */
  client(o?: ConnectOptions): Promise<pg.Client>;
  close(): Promise<void>;
}

export const SIGNING_KEY_BYTES = 48;

export async function startGateway(opts: GatewayOptions = {}): Promise<GatewayHarness> {
  const ownPg = !opts.pg;
  const upstream = opts.pg ?? (await startPostgres({ authMethod: opts.pgAuthMethod }));
  const dir = mkdtempSync(join(tmpdir(), 'airlock-gw-'));
  try {
    if (opts.setup) await upstream.query(opts.setup);
    writeFileSync(join(dir, 'signing.key'), randomBytes(SIGNING_KEY_BYTES).toString('base64'));
    writeFileSync(join(dir, 'upstream.pass'), upstream.password);
    writeFileSync(join(dir, 'hash.key'), randomBytes(32).toString('hex'));
    const base: AirlockConfigInput = {
      listen: { postgres: { host: '127.0.0.1', port: 0 } },
      auth: { signingKey: { file: 'signing.key' } },
      store: { sqlite: 'airlock.db' },
      identities: [
        { name: 'alice', groups: ['dba'] },
        { name: 'agent-1', groups: ['agents'], owner: 'alice' },
      ],
      connections: [{ name: 'app', type: 'postgres', host: upstream.host, port: upstream.port, database: 'postgres', user: upstream.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true }],
      masking: { hashKey: { file: 'hash.key' } },
    };
    const extra = opts.config?.(upstream, dir) ?? {};
    const file = join(dir, 'airlock.yaml');
    writeFileSync(file, stringify({ ...base, ...extra }));
    const loaded = loadConfig(file);
    await initSqlParser();
    const engine = new PolicyEngine(loaded.config.policy, loaded.config.masking, loaded.config.connections);
    const store = SqliteStore.open(join(dir, 'airlock.db'));
    const masking =
      opts.masking === false
        ? null
        : createMaskerFactory({
            connect: async () => {
              const c = new pg.Client({ host: upstream.host, port: upstream.port, user: upstream.user, password: upstream.password, database: 'postgres' });
              await c.connect();
              return c;
            },
            hashKey: resolveSecret(loaded.config.masking.hashKey ?? { file: 'hash.key' }, loaded.baseDir, 'masking.hashKey'),
          });
    const gateway = await startPostgresGateway({
      config: loaded,
      policy: opts.decider ? opts.decider(engine) : engine,
      classify: sqlOperations,
      store,
      approver: opts.approver ?? new FailClosedApprover(),
      bindingKey: approvalBindingKey(loaded),
      masking,
    });
    const settings = tokenSettings(loaded);
    const token = async (identity: string | Identity = 'alice', ttlMs?: number) => {
      return mintToken(settings, typeof identity === 'string' ? configuredIdentity(loaded, identity) : identity, ttlMs);
    };
    const conninfo = async (o: ConnectOptions = {}) => {
      const user = o.user ?? 'alice';
      const parts = [
        `host=${gateway.host}`,
        `port=${gateway.port}`,
        `dbname=${o.dbname ?? 'app'}`,
        `user=${user}`,
        `password=${o.token ?? (await token(user))}`,
        `sslmode=${o.sslmode ?? 'disable'}`,
        'connect_timeout=10',
      ];
      if (o.application_name) parts.push(`application_name=${o.application_name}`);
      return parts.join(' ');
    };
    return {
      pg: upstream,
      gateway,
      loaded,
      store,
      masking,
      dir,
      token,
      conninfo,
      async psql(sql, o = {}) {
        const ci = await conninfo(o);
        return runPsql(ci, sql, o.args ?? [], o.env);
      },
      async client(o = {}) {
        const user = o.user ?? 'alice';
        const c = new pg.Client({
          host: gateway.host,
          port: gateway.port,
          database: o.dbname ?? 'app',
          user,
          password: o.token ?? (await token(user)),
          ...(o.application_name ? { application_name: o.application_name } : {}),
        });
        await c.connect();
        return c;
      },
      async close() {
        await gateway.close();
        await masking?.close().catch(() => {});
        store.close();
        if (ownPg) await upstream.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (ownPg) await upstream.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

export function runPsql(conninfo: string, sql: string, args: string[] = [], env: Record<string, string> = {}): Promise<PsqlResult> {
  return new Promise((resolve, reject) => {
    const p = spawn('/usr/bin/psql', [conninfo, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=0', '-f', '-', ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', PGCONNECT_TIMEOUT: '10', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
    p.stdin.end(sql);
  });
}

/** The PostgreSQL error a statement fails with (fails the test when it succeeds). */
export async function pgError(p: Promise<unknown>): Promise<pg.DatabaseError> {
  try {
    await p;
  } catch (e) {
    return e as pg.DatabaseError;
  }
  throw new Error('expected the statement to fail, but it succeeded');
}
