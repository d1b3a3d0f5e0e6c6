// Keys derived from the configuration, the same in every protocol, replica and restart.
import { createHmac } from 'node:crypto';
import { resolveSecret, type LoadedConfig } from './load.ts';

function signingKey(loaded: LoadedConfig): string {
  return resolveSecret(loaded.config.auth.signingKey, loaded.baseDir, 'auth.signingKey');
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
