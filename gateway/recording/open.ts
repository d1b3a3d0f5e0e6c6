import type { KeyObject } from 'node:crypto';
import { ConfigError, configPath, parseDuration, resolveSecret, type LoadedConfig } from '../config/load.ts';
import { parsePrivateKey, SigningKeyError } from './chain.ts';
import { readFileSync } from 'node:fs';
import { PostgresStore, type PostgresConnectionOptions } from './postgres-store.ts';
import { SqliteStore, type SqliteStoreOptions } from './sqlite-store.ts';
import { ThreadedSqliteStore } from './sqlite-writer.ts';
import { instanceIdentity } from './instances.ts';

export interface OpenStoreOptions {
  /** Load audit.signingKey (default true). Readers (`sessions list`, `audit verify`) pass false so
   * they work where the private key is not available. */
  signer?: boolean;
  /** SQLite: append records on a writer thread (sqlite-writer.ts), as a running gateway does; the
   * CLI's short-lived commands write inline. Ignored for PostgreSQL (always on its I/O thread). */
  writerThread?: boolean;
}

/** Either audit store; both implement Store plus verify/checkpoint/stats/whenDrained. */
export type AuditStore = SqliteStore | ThreadedSqliteStore | PostgresStore;

/** Opens the store the config names (SQLite path relative to the config file, or PostgreSQL), with the audit policy. */
export function openStore(loaded: LoadedConfig, opts: OpenStoreOptions = {}): AuditStore {
  const pg = postgresConnection(loaded);
  if (pg) {
    const { maxPageCount: _m, busyTimeoutMs: _b, readonly: _r, ...rest } = storeOptions(loaded, opts);
    return PostgresStore.open(pg, rest);
  }
  const path = configPath(loaded, loaded.config.store.sqlite);
  if (opts.writerThread && loaded.config.store.sqlite !== ':memory:') return ThreadedSqliteStore.open(path, storeOptions(loaded, opts));
  return SqliteStore.open(path, storeOptions(loaded, opts));
}

/** store.postgres resolved (password secret, CA file), or undefined for the SQLite store. */
export function postgresConnection(loaded: LoadedConfig): PostgresConnectionOptions | undefined {
  const p = loaded.config.store.postgres;
  if (!p) return undefined;
  const tls = typeof p.tls === 'boolean' ? p.tls : { rejectUnauthorized: p.tls.rejectUnauthorized, ca: p.tls.ca ? readCa(configPath(loaded, p.tls.ca)) : undefined };
  return {
    host: p.host,
    port: p.port,
    database: p.database,
    user: p.user,
    password: p.password ? resolveSecret(p.password, loaded.baseDir, 'store.postgres.password').trim() : undefined,
    tls,
  };
}

function readCa(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`store.postgres.tls.ca: cannot read ${path}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

export function storeOptions(loaded: LoadedConfig, opts: OpenStoreOptions = {}): SqliteStoreOptions {
  const a = loaded.config.audit;
  return {
    onFailure: a.onFailure,
    maxPending: a.maxPending,
    maxPendingMs: parseDuration(a.maxPendingMs),
    checkpointEvery: a.checkpointEvery,
    checkpointIntervalMs: parseDuration(a.checkpointInterval),
    anchorFile: a.anchor ? configPath(loaded, a.anchor.file) : undefined,
    signingKey: opts.signer === false ? undefined : auditSigningKey(loaded),
    instance: instanceIdentity(loaded.config.gateway.instanceId),
    instanceLeaseMs: parseDuration(loaded.config.gateway.instanceLease),
  };
}

/** audit.signingKey as an Ed25519 key, or undefined when not configured. ConfigError when unusable. */
export function auditSigningKey(loaded: LoadedConfig): KeyObject | undefined {
  const ref = loaded.config.audit.signingKey;
  if (!ref) return undefined;
  const text = resolveSecret(ref, loaded.baseDir, 'audit.signingKey');
  try {
    return parsePrivateKey(text);
  } catch (e) {
    if (e instanceof SigningKeyError) throw new ConfigError(`audit.signingKey: ${e.message}`);
    throw e;
  }
}

/** Key for parameterDigest (exact parameter values are never stored, only this HMAC of them):
 * audit.digestKey, else masking.hashKey; undefined when neither is configured. */
export function auditDigestKey(loaded: LoadedConfig): string | undefined {
  const ref = loaded.config.audit.digestKey ?? loaded.config.masking.hashKey;
  return ref ? resolveSecret(ref, loaded.baseDir, loaded.config.audit.digestKey ? 'audit.digestKey' : 'masking.hashKey') : undefined;
}
