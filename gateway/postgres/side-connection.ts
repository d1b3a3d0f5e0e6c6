// A connection of Airlock's own to an upstream database, beside the agents' sessions: catalog
// lookups for masking, the upstream role check, previews. Same credentials and TLS as sessions.
import pg from 'pg';
import { resolveSecret, type LoadedConfig } from '../config/load.ts';
import type { PostgresConnectionConfig } from '../config/schema.ts';

export async function connectSide(loaded: LoadedConfig, c: PostgresConnectionConfig, applicationName: string): Promise<pg.Client> {
  const client = new pg.Client({
    host: c.host,
    port: c.port,
    database: c.database,
    user: c.user,
    password: c.password ? resolveSecret(c.password, loaded.baseDir, `connection ${c.name} password`) : undefined,
    ssl: c.tls === 'require' ? { rejectUnauthorized: false } : undefined,
    application_name: applicationName,
    connectionTimeoutMillis: 10_000,
  });
  await client.connect();
  return client;
}
