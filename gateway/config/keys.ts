// Keys derived from the configuration, the same in every protocol, replica and restart.
import { createHmac } from 'node:crypto';
import { ConfigError, resolveSecret, type LoadedConfig } from './load.ts';

/** The root secret keys derive from: auth.signingKey, or masking.hashKey when tokens are signed only with auth.keys. */
function signingKey(loaded: LoadedConfig): string {
  const { auth, masking } = loaded.config;
  if (auth.signingKey) return resolveSecret(auth.signingKey, loaded.baseDir, 'auth.signingKey');
  if (masking.hashKey) return resolveSecret(masking.hashKey, loaded.baseDir, 'masking.hashKey');
  throw new ConfigError(`${loaded.file}: set auth.signingKey or masking.hashKey (a shared secret derived keys come from)`);
}

/**
 * The `hash` masking key: the configured one, or else one derived from the token signing key so
 * a value hashes identically on every protocol and across restarts without another secret.
 */
export function maskHashKey(loaded: LoadedConfig): string {
  const { masking } = loaded.config;
  if (masking.hashKey) return resolveSecret(masking.hashKey, loaded.baseDir, 'masking.hashKey');
  return createHmac('sha256', signingKey(loaded)).update('airlock masking hash key v1').digest('hex');
}

/**
 * The key of the digest approvals bind to (statement + parameter bytes, request + body), so
 * every replica and every restart computes the same request ids.
 */
export function approvalBindingKey(loaded: LoadedConfig): string {
  return createHmac('sha256', signingKey(loaded)).update('airlock approval binding key v1').digest('hex');
}
