import type { LoadedConfig } from '../config/load.ts';
import { parseDuration, resolveSecret } from '../config/load.ts';
import type { TokenSettings } from './tokens.ts';

/** Token settings from config; the signing key is resolved from its env/file reference. */
export function tokenSettings(loaded: LoadedConfig): TokenSettings {
  const a = loaded.config.auth;
  return {
    issuer: a.issuer,
    audience: a.audience,
    key: resolveSecret(a.signingKey, loaded.baseDir, 'auth.signingKey'),
    defaultTtlMs: parseDuration(a.defaultTtl),
    maxTtlMs: parseDuration(a.maxTtl),
  };
}
