// The whole approvals path for end-to-end tests, wired the way production wires it: ONE generated
// airlock.yaml (with a `slack:` block pointing at a fake Slack Web API, and whatever
// `extendConfig` adds, such as a `teams:` block) read by the real gateway
// (`gateway/app.ts` startGateway) and the real approval service (`workflows/service.ts`: Temporal
// worker + Slack Bolt app), an embedded PostgreSQL, a real Temporal dev server, and live psql
// processes whose output can be watched while their statement is held.
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { configuredIdentity, tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { startGateway, type RunningGateway } from '../../gateway/app.ts';
import { loadConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import type { AirlockConfigInput } from '../../gateway/config/schema.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { SLACK_EVENTS_PATH } from '../../bots/slack/slack-app.ts';
import { startApprovalService, type ApprovalService } from '../../workflows/service.ts';
import { FakeSlack } from './fake-slack.ts';
import { freePort } from './net.ts';
import { startPostgres, type RunningPostgres } from './postgres.ts';
import { startTemporal, type TestTemporal } from './temporal.ts';

type IdentityInput = NonNullable<AirlockConfigInput['identities']>[number];
/** A rule as the YAML would have it (defaults may be left out). */
type RuleInput = NonNullable<NonNullable<AirlockConfigInput['policy']>['rules']>[number];

export interface ApprovalsStackOptions {
  identities: IdentityInput[];
  rules: RuleInput[];
  /** Slack user id -> Airlock identity (`slack.users`); others are mapped by email via users.info. */
  slackUsers?: Record<string, string>;
  /** SQL run on the upstream before anything starts. */
  setup?: string;
  channel?: string;
  escalationChannel?: string;
  /**
   * More config (e.g. a `teams:` block), given the stack's directory to write its secret files
   * into; merged over the generated config before anything reads it.
   */
  extendConfig?: (dir: string) => Partial<AirlockConfigInput> | Promise<Partial<AirlockConfigInput>>;
}

export interface LivePsql {
  readonly stdout: string;
  readonly stderr: string;
  /** Exit code once psql has exited, else undefined. */
  readonly exitCode: number | null | undefined;
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
  kill(signal?: NodeJS.Signals): void;
}

/** `airlock gateway --config` as operators run it: a separate OS process. */
export interface GatewayProcess {
  port: number;
  child: ChildProcess;
  /** Kills it the hard way (a crash: nothing is cleaned up). */
  crash(): Promise<void>;
}

export interface ApprovalsStack {
  dir: string;
  configFile: string;
  loaded: LoadedConfig;
  pg: RunningPostgres;
  temporal: TestTemporal;
  slack: FakeSlack;
  store: SqliteStore;
  service: ApprovalService;
  gateway: RunningGateway;
  signingSecret: string;
  /** The Bolt receiver's URL (what Slack's Request URL would be). */
  slackEventsUrl: string;
  /** Ids of the fake's channels. */
  channelId: string;
  escalationChannelId: string;
  /** Another gateway process' worth of listeners on the same config (closed by close()). */
  startGateway(loaded?: LoadedConfig): Promise<RunningGateway>;
  /** Starts `airlock gateway --config <the generated file>` as a child process (killed by close()). */
  spawnGateway(): Promise<GatewayProcess>;
  /** Loads a variant of the generated config (same dir and secrets) with `patch` applied. */
  variant(name: string, patch: (c: AirlockConfigInput) => AirlockConfigInput): LoadedConfig;
  /** libpq conninfo for `identity` through a gateway (the stack's own by default). */
  conninfo(identity: string, gw?: RunningGateway | number): Promise<string>;
  /** Starts psql (-X -A -t, ON_ERROR_STOP=0) with `sql` on stdin; output can be read while it runs. */
  psql(identity: string, sql: string, gw?: RunningGateway | number): Promise<LivePsql>;
  close(): Promise<void>;
}

/** How long the end-to-end tests wait for something a person or a busy machine has to do. */
export const WAIT = 60_000;

/** Polls `fn` until it returns a value (not undefined/false/null), or fails naming `what`. */
export async function waitFor<T>(fn: () => T | undefined | false | null | Promise<T | undefined | false | null>, what: string, timeoutMs = WAIT): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false && v !== null) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits for a held psql to finish, failing with what it printed so far. */
export async function finished(p: LivePsql, what: string, timeoutMs = WAIT * 2): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`psql (${what}) still running after ${timeoutMs} ms; stdout: ${p.stdout}; stderr: ${p.stderr}`)), timeoutMs);
  });
  try {
    return await Promise.race([p.done, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function pgPort(gw: RunningGateway): number {
  const l = gw.listeners.find((x) => x.protocol === 'postgres');
  if (!l) throw new Error('the gateway has no postgres listener');
  return l.port;
}

export function spawnPsql(conninfo: string, sql: string): LivePsql {
  const p = spawn('/usr/bin/psql', [conninfo, '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=0', '-f', '-'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', PGCONNECT_TIMEOUT: '10' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let exitCode: number | null | undefined;
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    p.on('error', reject);
    p.on('close', (code) => {
      exitCode = code;
      resolve({ code, stdout, stderr });
    });
  });
  p.stdin.end(sql);
  return {
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    get exitCode() {
      return exitCode;
    },
    done,
    kill: (signal = 'SIGKILL') => {
      if (exitCode === undefined) p.kill(signal);
    },
  };
}

export async function startApprovalsStack(opts: ApprovalsStackOptions): Promise<ApprovalsStack> {
  const closers: (() => Promise<void> | void)[] = [];
  const closeAll = async () => {
    for (const c of closers.reverse()) await (async () => c())().catch(() => undefined);
    closers.length = 0;
  };
  const live = new Set<LivePsql>();
  closers.push(() => {
    for (const p of live) p.kill('SIGKILL');
  });
  try {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-approvals-e2e-'));
    closers.push(() => rmSync(dir, { recursive: true, force: true }));
    const pgServer = await startPostgres();
    closers.push(() => pgServer.stop());
    if (opts.setup) await pgServer.query(opts.setup);
    const temporal = await startTemporal();
    closers.push(() => temporal.stop());
    const slack = await FakeSlack.start();
    closers.push(() => slack.stop());
    const channel = opts.channel ?? '#db-approvals';
    const escalationChannel = opts.escalationChannel ?? '#db-escalations';
    const channelId = slack.addChannel(channel);
    const escalationChannelId = slack.addChannel(escalationChannel);

    const signingSecret = randomBytes(16).toString('hex');
    writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
    writeFileSync(join(dir, 'upstream.pass'), pgServer.password);
    writeFileSync(join(dir, 'hash.key'), randomBytes(32).toString('hex'));
    writeFileSync(join(dir, 'slack-bot.token'), slack.token);
    writeFileSync(join(dir, 'slack-signing.secret'), signingSecret);
    // One decision key per source (decisions.keys): the apps and the CLI sign, the worker verifies.
    for (const source of ['slack', 'teams', 'cli']) {
      writeFileSync(join(dir, `${source}-decision.key`), generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
    }
    const slackPort = await freePort();
    const base: AirlockConfigInput = {
      listen: { postgres: { host: '127.0.0.1', port: 0 } },
      auth: { signingKey: { file: 'signing.key' } },
      store: { sqlite: 'airlock.db' },
      identities: opts.identities,
      connections: [
        { name: 'app', type: 'postgres', host: pgServer.host, port: pgServer.port, database: 'postgres', user: pgServer.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true },
      ],
      masking: { hashKey: { file: 'hash.key' } },
      policy: { rules: opts.rules },
      decisions: {
        keys: {
          slack: { privateKey: { file: 'slack-decision.key' } },
          teams: { privateKey: { file: 'teams-decision.key' } },
          cli: { privateKey: { file: 'cli-decision.key' } },
        },
      },
      temporal: { address: temporal.address, namespace: temporal.namespace, taskQueue: `airlock-e2e-${randomUUID()}` },
      slack: {
        botToken: { file: 'slack-bot.token' },
        signingSecret: { file: 'slack-signing.secret' },
        channel,
        escalationChannel,
        apiUrl: slack.apiUrl,
        listen: { host: '127.0.0.1', port: slackPort },
        users: opts.slackUsers ?? {},
      },
    };
    if (opts.extendConfig) Object.assign(base, await opts.extendConfig(dir));
    const configFile = join(dir, 'airlock.yaml');
    writeFileSync(configFile, stringify(base));
    const loaded = loadConfig(configFile);

    // One store for the gateway and the worker, as when both run from the same config on one host.
    const store = SqliteStore.open(join(dir, 'airlock.db'));
    closers.push(() => store.close());
    const service = await startApprovalService(loaded, { store, connection: temporal.native });
    closers.push(() => service.shutdown());
    const gateway = await startGateway(loaded, { store });
    closers.push(() => gateway.close());

    const settings = tokenSettings(loaded);
    const conninfo = async (identity: string, gw: RunningGateway | number = gateway) => {
      if (!loaded.config.identities.some((i) => i.name === identity)) throw new Error(`no identity ${identity} in the test config`);
      const token = await mintToken(settings, configuredIdentity(loaded, identity));
      return `host=127.0.0.1 port=${typeof gw === 'number' ? gw : pgPort(gw)} dbname=app user=${identity} password=${token} sslmode=disable connect_timeout=10`;
    };

    return {
      dir,
      configFile,
      loaded,
      pg: pgServer,
      temporal,
      slack,
      store,
      service,
      gateway,
      signingSecret,
      slackEventsUrl: `http://127.0.0.1:${slackPort}${SLACK_EVENTS_PATH}`,
      channelId,
      escalationChannelId,
      async startGateway(l = loaded) {
        const gw = await startGateway(l, { store });
        closers.push(() => gw.close());
        return gw;
      },
      async spawnGateway() {
        const bin = join(import.meta.dirname, '..', '..', 'bin', 'airlock.js');
        const child = spawn(process.execPath, [bin, 'gateway', '--config', configFile, '--workers', '1'], {
          env: { ...process.env, AIRLOCK_LOG_LEVEL: 'silent' },
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        const crash = async () => {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
          await exited;
        };
        closers.push(crash);
        let stderr = '';
        child.stderr!.setEncoding('utf8');
        const port = await new Promise<number>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`airlock gateway did not start within 90 s: ${stderr}`)), 90_000);
          child.stderr!.on('data', (d: string) => {
            stderr += d;
            const m = /postgres gateway listening on [^\s:]+:(\d+)/.exec(stderr);
            if (m) {
              clearTimeout(timer);
              resolve(Number(m[1]));
            }
          });
          child.once('exit', (code, signal) => {
            clearTimeout(timer);
            reject(new Error(`airlock gateway exited (${code ?? signal}) before listening: ${stderr}`));
          });
        });
        return { port, child, crash };
      },
      variant(name, patch) {
        const file = join(dir, `${name}.yaml`);
        writeFileSync(file, stringify(patch(structuredClone(base))));
        return loadConfig(file);
      },
      conninfo,
      async psql(identity, sql, gw) {
        const p = spawnPsql(await conninfo(identity, gw), sql);
        live.add(p);
        void p.done.finally(() => live.delete(p));
        return p;
      },
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
