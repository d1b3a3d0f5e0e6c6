import type { LoadedConfig } from '../config/load.ts';
import { parseDuration, resolveSecret } from '../config/load.ts';
import type { Identity } from '../policy/operation.ts';
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

/** An identity as the config describes it (groups, owner); unknown names get no groups. */
export function configuredIdentity(loaded: LoadedConfig, name: string): Identity {
  const c = loaded.config.identities.find((i) => i.name === name);
  return { name, groups: c?.groups ?? [], ...(c?.owner ? { owner: c.owner } : {}) };
}
