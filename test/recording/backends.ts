// The audit store backends the recording tests run against: SQLite (a file in a temp dir) and
// PostgreSQL (a fresh database on a real server from test/support/postgres.ts, started once per file).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { ThreadedSqliteStore } from '../../gateway/recording/sqlite-writer.ts';
import { PostgresStore, type PostgresConnectionOptions, type PostgresStoreOptions } from '../../gateway/recording/postgres-store.ts';
import { startPostgres, type RunningPostgres } from '../support/postgres.ts';

export type AnyStore = SqliteStore | ThreadedSqliteStore | PostgresStore;

/** One place for a store's data: open as many stores on it as a test needs. */
export interface StoreLocation {
  open(opts?: PostgresStoreOptions): AnyStore;
  /** Removes the data (after every store on it is closed). */
  dispose(): Promise<void>;
}

export interface Backend {
  name: 'sqlite' | 'sqlite, writer thread' | 'postgres';
  location(): Promise<StoreLocation>;
  /** Stops shared servers (call from an `after` hook). */
  stop(): Promise<void>;
}

/** A SQLite file in a fresh temp dir, opened by `open`. */
function sqliteFileBackend(name: Backend['name'], open: (path: string, opts: PostgresStoreOptions) => AnyStore): Backend {
  return {
    name,
    async location() {
      const dir = mkdtempSync(join(tmpdir(), 'airlock-store-'));
      return {
        open: (opts = {}) => open(join(dir, 'airlock.db'), opts),
        dispose: async () => rmSync(dir, { recursive: true, force: true }),
      };
    },
    async stop() {},
  };
}

export const sqliteBackend = sqliteFileBackend('sqlite', (path, opts) => SqliteStore.open(path, opts));

/** What a running gateway uses: the same file format, records appended by a writer thread. */
export const sqliteThreadBackend = sqliteFileBackend('sqlite, writer thread', (path, opts) => ThreadedSqliteStore.open(path, opts));

let server: Promise<RunningPostgres> | undefined;
let dbCounter = 0;

export const postgresBackend: Backend & { server(): Promise<RunningPostgres>; connection(database: string): Promise<PostgresConnectionOptions> } = {
  name: 'postgres',
  server() {
    server ??= startPostgres();
    return server;
  },
  async connection(database: string) {
    const pg = await this.server();
    return { host: pg.host, port: pg.port, user: pg.user, password: pg.password, database };
  },
  async location() {
    const pg = await this.server();
    const database = `audit_${process.pid}_${++dbCounter}`;
    await pg.query(`CREATE DATABASE ${database}`);
    const conn = await this.connection(database);
    return {
      open: (opts = {}) => PostgresStore.open(conn, opts),
      dispose: async () => {
        await pg.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      },
    };
  },
  async stop() {
    if (!server) return;
    const s = await server;
    server = undefined;
    await s.stop();
  },
};

export const backends: Backend[] = [sqliteBackend, sqliteThreadBackend, postgresBackend];
