// Assembles a running gateway from a loaded config: store, policy engine, masking, approver and
// the protocol listeners. `airlock gateway`, the demo and the end-to-end tests all start here.
import pg from 'pg';
import { resolveSecret, type LoadedConfig } from './config/load.ts';
import { approvalBindingKey, maskHashKey } from './config/keys.ts';
import type { PostgresConnectionConfig } from './config/schema.ts';
import { log as rootLog, type Logger } from './log.ts';
import { PolicyEngine, sqlOperations } from './policy/engine.ts';
import { initSqlParser } from './policy/sql/classify.ts';
import { createMaskerFactory, type MaskerFactory } from './postgres/row-masker.ts';
import { startPostgresGateway } from './postgres/server.ts';
import { checkUpstreamRoles } from './postgres/upstream-role.ts';
import { startHttpGateway } from './http/server.ts';
import { AuthEndpoints } from './auth/endpoints.ts';
import { closeAuthState, openAuthState } from './auth/settings.ts';
import { startSshGateway } from './ssh/server.ts';
import { openStore } from './recording/open.ts';
import type { Store } from './recording/store.ts';
import { approverFromConfig } from './approvals/from-config.ts';
import type { Approver } from './approvals/approver.ts';

export interface Listener {
  protocol: string;
  host: string;
  port: number;
  /** What a client should know, e.g. the SSH host key fingerprint. */
  detail?: string;
}

export interface RunningGateway {
  listeners: Listener[];
  store: Store;
  close(): Promise<void>;
}

export interface StartGatewayOptions {
  /** Use this store instead of opening the configured one (the caller closes it). */
  store?: Store;
  /** Use this approver instead of the one the config describes. */
  approver?: Approver;
  logger?: Logger;
  /** Override listen.postgres host/port; port 0 picks a free one. */
  postgres?: { host?: string; port?: number };
  /** Override the HTTP/Kubernetes listener's host/port. */
  http?: { host?: string; port?: number };
  /** Override the SSH listener's host/port. */
  ssh?: { host?: string; port?: number };
}

export { approvalBindingKey, maskHashKey };

/** One catalog connection per upstream connection: table OIDs are per database. */
function maskingPerConnection(loaded: LoadedConfig, hashKey: string): { forConnection: (c: PostgresConnectionConfig) => MaskerFactory; close(): Promise<void> } {
  const factories = new Map<string, MaskerFactory>();
  const forConnection = (c: PostgresConnectionConfig): MaskerFactory => {
    let f = factories.get(c.name);
    if (!f) {
      f = createMaskerFactory({
        hashKey,
        connect: async () => {
          const client = new pg.Client({
            host: c.host,
            port: c.port,
            database: c.database,
            user: c.user,
            password: c.password ? resolveSecret(c.password, loaded.baseDir, `connection ${c.name} password`) : undefined,
            ssl: c.tls === 'require' ? { rejectUnauthorized: false } : undefined,
            application_name: 'airlock-catalog',
            connectionTimeoutMillis: 10_000,
          });
          await client.connect();
          return client;
        },
      });
      factories.set(c.name, f);
    }
    return f;
  };
  return {
    forConnection,
    close: async () => {
      await Promise.all([...factories.values()].map((f) => f.close()));
    },
  };
}

/**
 * Last line of defence for `airlock gateway`: an exception that escaped a connection's own handler
 * is logged, and the process keeps serving the other connections and protocols instead of taking
 * every listener down (each handler already answers its own request 500/502 and closes it).
 * Returns a function that removes the guard.
 */
export function installCrashGuard(logger: Logger = rootLog): () => void {
  const log = logger.child({ component: 'crash-guard' });
  const onException = (err: unknown) => log.error({ err }, 'uncaught exception contained; the gateway keeps serving');
  const onRejection = (err: unknown) => log.error({ err }, 'unhandled rejection contained; the gateway keeps serving');
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  return () => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  };
}

export async function startGateway(loaded: LoadedConfig, opts: StartGatewayOptions = {}): Promise<RunningGateway> {
  const logger = opts.logger ?? rootLog;
  await initSqlParser();
  for (const w of loaded.warnings ?? []) logger.warn(`config ${loaded.file}: ${w}`);
  const policy = new PolicyEngine(loaded.config.policy, loaded.config.masking, loaded.config.connections);
  const store = opts.store ?? openStore(loaded);
  const closers: (() => Promise<void>)[] = [];
  if (!opts.store) closers.push(async () => store.close());
  let approver = opts.approver;
  if (!approver) {
    const a = await approverFromConfig(loaded, store);
    approver = a.approver;
    closers.push(a.close);
  }
  const listeners: Listener[] = [];
  // Revocations (and exchanged subject tokens) every listener consults; polled, shared by replicas.
  const authState = openAuthState(loaded);
  closers.push(async () => closeAuthState(loaded));
  try {
    if (loaded.config.listen.postgres || opts.postgres) {
      // Refuse a superuser (or server-program / server-file) upstream login unless allowed explicitly.
      await checkUpstreamRoles(loaded, { warn: (m) => logger.warn(m) });
      const masking = maskingPerConnection(loaded, maskHashKey(loaded));
      closers.unshift(masking.close);
      const gw = await startPostgresGateway({
        config: loaded,
        policy,
        classify: sqlOperations,
        store,
        approver,
        bindingKey: approvalBindingKey(loaded),
        masking: masking.forConnection,
        logger,
        host: opts.postgres?.host,
        port: opts.postgres?.port,
      });
      closers.unshift(() => gw.close());
      listeners.push({ protocol: 'postgres', host: gw.host, port: gw.port });
    }
    if (loaded.config.ssh) {
      const ssh = await startSshGateway({ config: loaded, policy, store, approver, bindingKey: approvalBindingKey(loaded), logger, host: opts.ssh?.host, port: opts.ssh?.port });
      closers.unshift(() => ssh.close());
      listeners.push({ protocol: 'ssh', host: ssh.host, port: ssh.port, detail: `host key ${ssh.hostKeyFingerprint}` });
    }
    if (loaded.config.http || opts.http) {
      const auth = new AuthEndpoints(loaded, authState, logger);
      const hg = await startHttpGateway({ loaded, store, approver, logger, hashKey: maskHashKey(loaded), host: opts.http?.host, port: opts.http?.port, auth });
      closers.unshift(() => hg.close());
      listeners.push({ protocol: 'http', host: hg.host, port: hg.port });
    }
  } catch (err) {
    for (const c of closers) await c().catch(() => undefined);
    throw err;
  }
  if (listeners.length === 0) logger.warn('no listeners configured (listen.postgres, ssh, http)');
  return {
    listeners,
    store,
    async close() {
      for (const c of closers) await c().catch((err: unknown) => logger.warn({ err }, 'error while closing'));
    },
  };
}
