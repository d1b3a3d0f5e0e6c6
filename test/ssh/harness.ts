// A running Airlock SSH gateway in front of a real sshd, for tests: real airlock.yaml (host key,
// upstream key and signing key in secret files), the real policy engine and SQLite store, and
// the real OpenSSH `ssh`/`scp` clients pointed at it with the gateway's host key pinned.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';
import { configuredIdentity, tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { loadConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import type { AirlockConfigInput } from '../../gateway/config/schema.ts';
import { PolicyEngine } from '../../gateway/policy/engine.ts';
import type { Identity } from '../../gateway/policy/operation.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { startSshGateway, type SshGateway } from '../../gateway/ssh/server.ts';
import type { Approver } from '../../gateway/approvals/approver.ts';
import { ManualApprover } from '../support/manual-approver.ts';
import { clientArgs, generateKey, run, startSshd, type ClientAuth, type RunningSshd, type RunResult } from '../support/sshd.ts';
import { approvalBindingKey } from '../../gateway/config/keys.ts';
import { ElevationRegistry, rolePolicies } from '../../gateway/elevation/registry.ts';

export interface SshHarness {
  sshd: RunningSshd;
  gateway: SshGateway;
  loaded: LoadedConfig;
  store: SqliteStore;
  /** Present when the config has roles; `refresh()` it after writing a window. */
  elevations?: ElevationRegistry;
  approver: ManualApprover;
  dir: string;
  knownHosts: string;
  /** alice's registered public-key login. */
  aliceKeyPath: string;
  token(identity?: string | Identity, ttlMs?: number): Promise<string>;
  /** Real `ssh` through the gateway: `ssh [extra] <user>@127.0.0.1 [command]`. */
  ssh(user: string, command: string | undefined, o?: { auth?: ClientAuth; extra?: string[]; input?: string | Buffer; timeoutMs?: number }): ReturnType<typeof run>;
  /** Real `scp` through the gateway (`-P port`); `gw:` in from/to means `<user>@127.0.0.1:`. */
  scp(user: string, from: string, to: string, o?: { auth?: ClientAuth; extra?: string[] }): Promise<RunResult>;
  /** Real `sftp -b -` through the gateway, running the batch commands given (one a line). */
  sftp(user: string, batch: string[], o?: { auth?: ClientAuth; extra?: string[] }): Promise<RunResult>;
  close(): Promise<void>;
}

/** `approver`: defaults to a ManualApprover (then `h.approver` decides); pass a real one to test it end to end. */
export async function startSshHarness(policy: AirlockConfigInput['policy'], extra: Partial<AirlockConfigInput> = {}, realApprover?: Approver): Promise<SshHarness> {
  const sshd = await startSshd();
  const dir = mkdtempSync(join(tmpdir(), 'airlock-sshgw-'));
  try {
    writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
    generateKey(dir, 'gateway_host_key');
    const alice = generateKey(dir, 'alice_key');
    const wrong = generateKey(dir, 'not_the_host_key');
    writeFileSync(join(dir, 'upstream.key'), sshd.clientKey);
    const target = { host: sshd.host, port: sshd.port, user: sshd.user, privateKey: { file: 'upstream.key' } };
    const config: AirlockConfigInput = {
      auth: { signingKey: { file: 'signing.key' } },
      store: { sqlite: 'airlock.db' },
      identities: [
        { name: 'alice', groups: ['ops'] },
        { name: 'bob', groups: ['ops'] },
        { name: 'agent-1', groups: ['agents'], owner: 'alice' },
        { name: 'mallory', groups: ['contractors'] },
      ],
      ssh: {
        listen: { host: '127.0.0.1', port: 0 },
        hostKey: { file: 'gateway_host_key' },
        loginTimeout: '3s',
        targets: [
          { name: 'box', ...target, hostKeyFingerprints: [sshd.hostKeyFingerprint], allow: { groups: ['ops', 'agents'] }, allowEnv: ['AIRLOCK_TEST_COLOR', 'AIRLOCK_TEST_OK_*'] },
          { name: 'impostor', ...target, hostKeyFingerprints: [wrong.fingerprint] },
        ],
        publicKeys: [{ identity: 'alice', key: alice.publicLine }],
      },
      policy,
      ...extra,
    };
    const file = join(dir, 'airlock.yaml');
    writeFileSync(file, stringify(config));
    const loaded = loadConfig(file);
    const engine = new PolicyEngine(loaded.config.policy, loaded.config.masking);
    const store = SqliteStore.open(join(dir, 'airlock.db'));
    const approver = new ManualApprover('#ops-approvals');
    // Roles in the config: elevation windows from the store apply (gateway/elevation/), as in app.ts.
    const roles = rolePolicies(loaded.config);
    const elevations = roles.size > 0 ? new ElevationRegistry(store, roles) : undefined;
    const gateway = await startSshGateway({ config: loaded, policy: engine, ...(elevations ? { elevations } : {}), store, approver: realApprover ?? approver, bindingKey: approvalBindingKey(loaded) });
    const knownHosts = join(dir, 'known_hosts');
    writeFileSync(knownHosts, `[127.0.0.1]:${gateway.port} ${gateway.hostPublicKey}\n`);
    const settings = tokenSettings(loaded);
    const token = async (identity: string | Identity = 'alice', ttlMs?: number) => {
      return mintToken(settings, typeof identity === 'string' ? configuredIdentity(loaded, identity) : identity, ttlMs);
    };
    const defaultAuth = async (auth?: ClientAuth): Promise<ClientAuth> => auth ?? { token: await token('alice') };
    return {
      sshd,
      gateway,
      loaded,
      store,
      ...(elevations ? { elevations } : {}),
      approver,
      dir,
      knownHosts,
      aliceKeyPath: alice.path,
      token,
      ssh(user, command, o = {}) {
        // Token minting is async, the returned promise must also expose pid/kill: resolve first.
        let killer: (() => void) | undefined;
        let killed = false;
        const p = (async () => {
          const { args, env } = clientArgs(dir, knownHosts, await defaultAuth(o.auth));
          const r = run('ssh', [...args, ...(o.extra ?? []), '-p', String(gateway.port), `${user}@127.0.0.1`, ...(command !== undefined ? [command] : [])], { env, input: o.input, timeoutMs: o.timeoutMs });
          killer = () => r.kill();
          if (killed) r.kill();
          return r;
        })() as ReturnType<typeof run>;
        p.kill = () => {
          killed = true;
          killer?.();
        };
        return p;
      },
      async scp(user, from, to, o = {}) {
        const { args, env } = clientArgs(dir, knownHosts, await defaultAuth(o.auth));
        const fix = (s: string) => (s.startsWith('gw:') ? `${user}@127.0.0.1:${s.slice(3)}` : s);
        return run('scp', [...args, ...(o.extra ?? []), '-P', String(gateway.port), fix(from), fix(to)], { env, timeoutMs: 60_000 });
      },
      async sftp(user, batch, o = {}) {
        const { args, env } = clientArgs(dir, knownHosts, await defaultAuth(o.auth));
        // -b turns on BatchMode, which would stop the askpass token login; ssh keeps the first value it gets.
        const file = join(dir, `sftp-batch-${randomBytes(4).toString('hex')}`);
        writeFileSync(file, batch.join('\n') + '\n');
        return run('sftp', ['-o', 'BatchMode=no', ...args, ...(o.extra ?? []), '-P', String(gateway.port), '-b', file, `${user}@127.0.0.1`], { env, timeoutMs: 60_000 });
      },
      async close() {
        await gateway.close();
        store.close();
        await sshd.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await sshd.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}
