import type { LoadedConfig } from '../config/load.ts';
import { ConfigError, configPath, parseDuration, resolveSecret } from '../config/load.ts';
import { AuthStateStore } from './revocation.ts';
import type { RevocationSource } from '../enforce/session.ts';
import type { Identity } from '../policy/operation.ts';
import { buildKeyRing, KeyError, type KeyRing } from './keys.ts';
import type { TokenSettings } from './tokens.ts';

const rings = new WeakMap<LoadedConfig, KeyRing>();

/** auth.keys as a key ring (parsed once per loaded config); ConfigError when a key is unusable. */
export function keyRing(loaded: LoadedConfig): KeyRing {
  let ring = rings.get(loaded);
  if (ring) return ring;
  const a = loaded.config.auth;
  try {
    ring = buildKeyRing(
      a.keys.map((k) => ({
        kid: k.id,
        ...(k.alg ? { alg: k.alg } : {}),
        ...(k.privateKey ? { privateKey: resolveSecret(k.privateKey, loaded.baseDir, `auth.keys[${k.id}].privateKey`) } : {}),
        ...(k.publicKey ? { publicKey: resolveSecret(k.publicKey, loaded.baseDir, `auth.keys[${k.id}].publicKey`) } : {}),
      })),
      a.activeKey,
    );
  } catch (err) {
    if (err instanceof KeyError) throw new ConfigError(`${loaded.file}: auth.keys: ${err.message}`);
    throw err;
  }
  rings.set(loaded, ring);
  return ring;
}

/** Token settings from config; secrets are resolved from their env/file references. */
export function tokenSettings(loaded: LoadedConfig): TokenSettings {
  const a = loaded.config.auth;
  return {
    issuer: a.issuer,
    audience: a.audience,
    ...(a.signingKey && (a.keys.length === 0 || a.allowHs256) ? { key: resolveSecret(a.signingKey, loaded.baseDir, 'auth.signingKey') } : {}),
    ...(a.keys.length > 0 ? { keys: keyRing(loaded) } : {}),
    defaultTtlMs: parseDuration(a.defaultTtl),
    maxTtlMs: parseDuration(a.maxTtl),
    revocations: revocationSource(loaded),
  };
}

/** An identity as the config describes it (groups, owner); unknown names get no groups. */
export function configuredIdentity(loaded: LoadedConfig, name: string): Identity {
  const c = loaded.config.identities.find((i) => i.name === name);
  return { name, groups: c?.groups ?? [], ...(c?.owner ? { owner: c.owner } : {}) };
}

const states = new WeakMap<LoadedConfig, AuthStateStore>();
const watchers = new WeakMap<LoadedConfig, Set<() => void>>();

/**
 * Revocations of a loaded config as the verifiers and the enforcement seam see them: whatever state
 * openAuthState() opened for it (nothing is revoked before that), change listeners included.
 */
export function revocationSource(loaded: LoadedConfig): RevocationSource {
  let set = watchers.get(loaded);
  if (!set) watchers.set(loaded, (set = new Set()));
  const listeners = set;
  return {
    revoked: (identity, tokenId) => states.get(loaded)?.revoked(identity, tokenId),
    onChange(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  };
}

/**
 * Opens auth.stateFile (revocations, exchanged subject tokens) for this loaded config and polls it
 * every auth.revocationPoll; tokenSettings() of the same config then refuses revoked tokens. The
 * gateway opens it at start (app.ts) and closes it on shutdown.
 */
const opens = new WeakMap<LoadedConfig, number>();

export function openAuthState(loaded: LoadedConfig, path?: string): AuthStateStore {
  const existing = states.get(loaded);
  opens.set(loaded, (opens.get(loaded) ?? 0) + 1);
  if (existing) return existing;
  const state = AuthStateStore.open(path ?? configPath(loaded, loaded.config.auth.stateFile));
  state.startPolling(parseDuration(loaded.config.auth.revocationPoll));
  states.set(loaded, state);
  state.onChange(() => {
    for (const fn of watchers.get(loaded) ?? []) fn();
  });
  return state;
}

/** The open auth state of a loaded config, if the gateway opened one. */
export function authState(loaded: LoadedConfig): AuthStateStore | undefined {
  return states.get(loaded);
}

/** Closes the state once every opener (e.g. two gateways of one config in a test) has closed it. */
export function closeAuthState(loaded: LoadedConfig): void {
  const n = (opens.get(loaded) ?? 1) - 1;
  opens.set(loaded, n);
  if (n > 0) return;
  states.get(loaded)?.close();
  states.delete(loaded);
}
