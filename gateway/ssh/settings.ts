// The `ssh:` config block, resolved: host key parsed (its fingerprint is what clients pin),
// registered public keys bound to configured identities. Target credentials are resolved per
// connection, so a rotated secret file is picked up without a restart.
import { dirname, resolve } from 'node:path';
import ssh2, { type ParsedKey } from 'ssh2';
import { ConfigError, configPath, parseDuration, resolveSecret, type LoadedConfig } from '../config/load.ts';
import type { SshConfig, SshTargetConfig } from '../config/schema.ts';
import type { Identity } from '../policy/operation.ts';
import { describeKey, type UpstreamTarget } from './upstream.ts';

export interface RegisteredKey {
  identity: Identity;
  key: ParsedKey;
  blob: Buffer;
  fingerprint: string;
}

export interface SshSettings {
  config: SshConfig;
  hostKey: string;
  hostKeyFingerprint: string;
  /** `ssh-ed25519 AAAA...`: for clients' known_hosts. */
  hostPublicKey: string;
  targets: Map<string, SshTargetConfig>;
  publicKeys: RegisteredKey[];
  loginTimeoutMs: number;
  recordingsDir: string;
}

const { utils } = ssh2;

function parseOne(text: string, what: string): ParsedKey {
  const parsed = utils.parseKey(text);
  if (parsed instanceof Error) throw new ConfigError(`${what}: cannot parse key: ${parsed.message}`);
  return Array.isArray(parsed) ? (parsed[0] as ParsedKey) : parsed;
}

export function sshSettings(loaded: LoadedConfig): SshSettings {
  const ssh = loaded.config.ssh;
  if (!ssh) throw new ConfigError('no `ssh:` block in the config: the SSH gateway needs at least ssh.hostKey and ssh.targets');
  const hostKey = resolveSecret(ssh.hostKey, loaded.baseDir, 'ssh.hostKey');
  const hk = parseOne(hostKey, 'ssh.hostKey');
  if (!hk.isPrivateKey()) throw new ConfigError('ssh.hostKey: this is a public key; the gateway needs its private host key');
  const { fingerprint, publicLine } = describeKey(hostKey);

  const targets = new Map<string, SshTargetConfig>();
  ssh.targets.forEach((t, i) => {
    if (targets.has(t.name)) throw new ConfigError(`ssh.targets[${i}]: duplicate target name ${t.name}`);
    if (t.name.includes('+')) throw new ConfigError(`ssh.targets[${i}]: target names may not contain '+' (it separates identity and target in the user name)`);
    targets.set(t.name, t);
  });

  const identities = new Map(loaded.config.identities.map((i) => [i.name, i]));
  const publicKeys = ssh.publicKeys.map((pk, i): RegisteredKey => {
    const id = identities.get(pk.identity);
    if (!id) throw new ConfigError(`ssh.publicKeys[${i}]: identity ${JSON.stringify(pk.identity)} is not in identities[]`);
    const key = parseOne(pk.key, `ssh.publicKeys[${i}]`);
    const blob = key.getPublicSSH();
    return {
      identity: { name: id.name, groups: [...id.groups], ...(id.owner ? { owner: id.owner } : {}) },
      key,
      blob,
      fingerprint: describeKey(pk.key).fingerprint,
    };
  });

  const recordingsDir = ssh.recordings
    ? configPath(loaded, ssh.recordings)
    : resolve(dirname(configPath(loaded, loaded.config.store.sqlite)), 'recordings');

  return {
    config: ssh,
    hostKey,
    hostKeyFingerprint: fingerprint,
    hostPublicKey: publicLine,
    targets,
    publicKeys,
    loginTimeoutMs: parseDuration(ssh.listen.clientLoginTimeout ?? ssh.loginTimeout),
    recordingsDir,
  };
}

/** The upstream login of a target; throws ConfigError naming the missing secret, never its value. */
export function upstreamTarget(loaded: LoadedConfig, t: SshTargetConfig): UpstreamTarget {
  return {
    name: t.name,
    host: t.host,
    port: t.port,
    user: t.user,
    ...(t.privateKey ? { privateKey: resolveSecret(t.privateKey, loaded.baseDir, `ssh.targets.${t.name}.privateKey`) + '\n' } : {}),
    ...(t.password ? { password: resolveSecret(t.password, loaded.baseDir, `ssh.targets.${t.name}.password`) } : {}),
    hostKeyFingerprints: t.hostKeyFingerprints,
  };
}

/** Who may use a target: empty allow lists mean everyone with a valid token or key. */
export function targetAllows(t: SshTargetConfig, id: Identity): boolean {
  const { identities, groups } = t.allow;
  if (identities.length === 0 && groups.length === 0) return true;
  return identities.includes(id.name) || id.groups.some((g) => groups.includes(g));
}
