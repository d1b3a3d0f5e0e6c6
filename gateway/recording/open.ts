import type { KeyObject } from 'node:crypto';
import { ConfigError, configPath, parseDuration, resolveSecret, type LoadedConfig } from '../config/load.ts';
import { parsePrivateKey, SigningKeyError } from './chain.ts';
import { SqliteStore, type SqliteStoreOptions } from './sqlite-store.ts';

export interface OpenStoreOptions {
  /** Load audit.signingKey (default true). Readers (`sessions list`, `audit verify`) pass false so
   * they work where the private key is not available. */
  signer?: boolean;
}

/** Opens the store the config names (SQLite path relative to the config file), with the audit policy. */
export function openStore(loaded: LoadedConfig, opts: OpenStoreOptions = {}): SqliteStore {
  return SqliteStore.open(configPath(loaded, loaded.config.store.sqlite), storeOptions(loaded, opts));
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
