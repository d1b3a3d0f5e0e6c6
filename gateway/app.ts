// Assembles a running gateway from a loaded config: store, policy engine, masking, approver and
// the protocol listeners. `airlock gateway`, the demo and the end-to-end tests all start here.
import { configPath, resolveSecret, type LoadedConfig } from './config/load.ts';
import { approvalBindingKey, maskHashKey } from './config/keys.ts';
import type { PostgresConnectionConfig } from './config/schema.ts';
import { log as rootLog, type Logger } from './log.ts';
import { PolicyEngine, sqlOperations } from './policy/engine.ts';
import { ElevationRegistry, rolePolicies } from './elevation/registry.ts';
import { initSqlParser } from './policy/sql/classify.ts';
import { createMaskerFactory, type MaskerFactory } from './postgres/row-masker.ts';
import { startPostgresGateway } from './postgres/server.ts';
import { connectSide } from './postgres/side-connection.ts';
import { checkUpstreamRoles } from './postgres/upstream-role.ts';
import { startHttpGateway } from './http/server.ts';
import { AuthEndpoints } from './auth/endpoints.ts';
import { closeAuthState, openAuthState } from './auth/settings.ts';
import { startSshGateway } from './ssh/server.ts';
import { openStore } from './recording/open.ts';
import type { Store } from './recording/store.ts';
import { approverFromConfig } from './approvals/from-config.ts';
import type { Approver } from './approvals/approver.ts';
import { startMcpFromConfig } from './mcp/from-config.ts';
import { parseDuration } from './config/load.ts';
import { GatewayMetrics } from './observability/metrics.ts';
import { startAdminServer } from './observability/admin-server.ts';
import { startTracing, type GatewayTracing } from './observability/tracing.ts';
import { canReconcile, reconcileCrashed } from './recording/reconcile.ts';
import type { ConsoleStore } from './console/data.ts';
import type { CancelRegistry } from './postgres/cancel.ts';

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
  metrics: GatewayMetrics;
  /**
   * Planned shutdown. 'drain' (SIGTERM): stop accepting, let running statements finish for up to
   * shutdown.drainTimeout, tell held clients their request stays open, flush the audit store.
   * 'fast' (SIGINT): the same without waiting for running statements. Then close().
   */
  shutdown(mode: 'drain' | 'fast'): Promise<void>;
  /** Each audit.sinks entry's position and lag (for metrics / readiness), when sinks are configured. */
  auditSinkStatus?: () => import('./recording/sinks.ts').SinkStatus[];
  /** OpenTelemetry traces (observability.tracing), when enabled; flushed and shut down by close(). */
  tracing?: GatewayTracing;
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
  /** Override the MCP listener's host/port. */
  mcp?: { host?: string; port?: number };
  /** Override listen.admin host/port (port 0 picks a free one). */
  admin?: { host?: string; port?: number };
  /** Override console.listen (the auditor console starts when console.enabled). */
  console?: { host?: string; port?: number };
  /** How often audit sinks poll the journal (and the base of their retry backoff); default 1 s. */
  sinkPollMs?: number;
  /** Cancel keys for the PostgreSQL listener (a gateway worker's routes other workers' keys). */
  cancels?: CancelRegistry;
  /** Parts a gateway worker leaves to the cluster primary (gateway/cluster), or to one worker (mcp). */
  without?: ReadonlyArray<'admin' | 'auditSinks' | 'console' | 'mcp'>;
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
        connect: () => connectSide(loaded, c, 'airlock-catalog'),
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
  // Roles for just-in-time elevation: a role that does not fit the policy stops the start (fail closed).
  const roles = rolePolicies(loaded.config);
  const store = opts.store ?? openStore(loaded, { writerThread: true });
  const closers: (() => Promise<void>)[] = [];
  if (!opts.store) closers.push(async () => store.close());
  // A store this gateway opened is its own: whatever a crash left open is closed in the record.
  if (!opts.store && canReconcile(store)) {
    const r = reconcileCrashed(store);
    if (r.sessions.length) logger.warn({ sessions: r.sessions.length, holds: r.holds, instances: r.instances }, `startup: ${r.sessions.length} session(s) left open by a crash were ended (reason: gateway crashed); ${r.holds.length} held operation(s) recorded as not executed`);
    // From here on peers sharing the store see this instance alive (gateway.instanceLease).
    store.startInstanceLease();
    logger.info({ instance: (store as { instance?: { id: string } }).instance?.id }, 'gateway instance registered in the audit store');
  }
  const metrics = new GatewayMetrics(store);
  const tracingCfg = loaded.config.observability?.tracing;
  const tracing = startTracing(
    tracingCfg && {
      enabled: tracingCfg.enabled,
      endpoint: tracingCfg.endpoint,
      serviceName: tracingCfg.serviceName,
      sampleRatio: tracingCfg.sampleRatio,
      ...(tracingCfg.headers ? { headers: Object.fromEntries(Object.entries(tracingCfg.headers).map(([k, ref]) => [k, resolveSecret(ref, loaded.baseDir, `observability.tracing.headers.${k}`)])) } : {}),
    },
    { logger },
  );
  const tracer = tracing?.tracer;
  let pgGateway: Awaited<ReturnType<typeof startPostgresGateway>> | undefined;
  let approver = opts.approver;
  if (!approver) {
    const a = await approverFromConfig(loaded, store, tracer ? { tracer } : {});
    approver = a.approver;
    closers.push(a.close);
  }
  const listeners: Listener[] = [];
  let auditSinkStatus: RunningGateway['auditSinkStatus'];
  // Revocations (and exchanged subject tokens) every listener consults; polled, shared by replicas.
  const authState = openAuthState(loaded);
  closers.push(async () => closeAuthState(loaded));
  // Elevation windows every replica sees (the audit store), polled like revocations.
  const elevations = roles.size > 0 ? new ElevationRegistry(store, roles, logger) : undefined;
  if (elevations) {
    elevations.startPolling(parseDuration(loaded.config.auth.revocationPoll));
    closers.push(async () => elevations.close());
  }
  try {
    if (loaded.config.listen.postgres || opts.postgres) {
      // Refuse a superuser (or server-program / server-file) upstream login unless allowed explicitly.
      await checkUpstreamRoles(loaded, { warn: (m) => logger.warn(m) });
      const masking = maskingPerConnection(loaded, maskHashKey(loaded));
      closers.unshift(masking.close);
      const gw = await startPostgresGateway({
        config: loaded,
        policy,
        ...(elevations ? { elevations } : {}),
        classify: sqlOperations,
        store,
        approver,
        bindingKey: approvalBindingKey(loaded),
        masking: masking.forConnection,
        logger,
        metrics,
        ...(tracer ? { tracer } : {}),
        host: opts.postgres?.host,
        port: opts.postgres?.port,
        ...(opts.cancels ? { cancels: opts.cancels } : {}),
      });
      pgGateway = gw;
      closers.unshift(() => gw.close());
      listeners.push({ protocol: 'postgres', host: gw.host, port: gw.port });
    }
    if (loaded.config.ssh) {
      const ssh = await startSshGateway({ config: loaded, policy, store, approver, bindingKey: approvalBindingKey(loaded), logger, metrics, ...(tracer ? { tracer } : {}), ...(elevations ? { elevations } : {}), host: opts.ssh?.host, port: opts.ssh?.port });
      closers.unshift(() => ssh.close());
      listeners.push({ protocol: 'ssh', host: ssh.host, port: ssh.port, detail: `host key ${ssh.hostKeyFingerprint}` });
    }
    if (loaded.config.http || opts.http) {
      const auth = new AuthEndpoints(loaded, authState, logger, store);
      const hg = await startHttpGateway({ loaded, store, approver, logger, hashKey: maskHashKey(loaded), metrics, ...(tracer ? { tracer } : {}), ...(elevations ? { elevations } : {}), host: opts.http?.host, port: opts.http?.port, auth });
      closers.unshift(() => hg.close());
      listeners.push({ protocol: 'http', host: hg.host, port: hg.port });
    }
    const without = new Set(opts.without ?? []);
    if (loaded.config.mcp && !without.has('mcp')) {
      const pgListener = listeners.find((l) => l.protocol === 'postgres');
      const httpListener = listeners.find((l) => l.protocol === 'http');
      const sshListener = listeners.find((l) => l.protocol === 'ssh');
      const ssh = sshListener ? { host: sshListener.host, port: sshListener.port, hostKeyFingerprint: /host key (\S+)/.exec(sshListener.detail ?? '')?.[1] ?? '' } : undefined;
      const m = await startMcpFromConfig({ loaded, policy, store, approver, logger, postgres: pgListener, http: httpListener, ssh, host: opts.mcp?.host, port: opts.mcp?.port });
      closers.unshift(() => m.close());
      listeners.push({ protocol: 'mcp', host: m.host, port: m.port, detail: m.url });
    }
    const adminCfg = loaded.config.listen.admin;
    if ((adminCfg || opts.admin) && !without.has('admin')) {
      const admin = await startAdminServer({
        host: opts.admin?.host ?? adminCfg?.host ?? '127.0.0.1',
        port: opts.admin?.port ?? adminCfg?.port ?? 9187,
        metrics,
        logger,
        targets: {
          store,
          temporal: loaded.config.temporal && !opts.approver ? loaded.config.temporal.address : undefined,
          upstreams: loaded.config.connections.map((c) => ({ name: c.name, host: c.host, port: c.port })),
        },
      });
      closers.unshift(() => admin.close());
      listeners.push({ protocol: 'admin', host: admin.host, port: admin.port, detail: '/healthz /readyz /metrics' });
    }
    if (loaded.config.audit.sinks?.length && !without.has('auditSinks')) {
      const { startAuditSinks } = await import('./recording/sinks.ts');
      const sinks = startAuditSinks(configPath(loaded, loaded.config.store.sqlite), loaded.config.audit.sinks, loaded.baseDir, opts.sinkPollMs);
      closers.unshift(() => sinks.close());
      auditSinkStatus = () => sinks.status();
      metrics.watchSinks(auditSinkStatus);
    }
    if (loaded.config.console?.enabled && !without.has('console')) {
      if (!isConsoleStore(store)) throw new Error('console.enabled needs a store the console can read (the SQLite store)');
      const { openConsole } = await import('./console/open.ts');
      const c = await openConsole(loaded, { store, host: opts.console?.host, port: opts.console?.port });
      closers.unshift(() => c.close());
      listeners.push({ protocol: 'console', host: c.host, port: c.port, detail: c.url });
    }
  } catch (err) {
    for (const c of closers) await c().catch(() => undefined);
    await tracing?.shutdown().catch(() => undefined);
    throw err;
  }
  // Last: spans ended while listeners and the approver close are still exported.
  if (tracing) closers.push(() => tracing.shutdown());
  if (listeners.length === 0) logger.warn('no listeners configured (listen.postgres, ssh, http)');
  const closeAll = async () => {
    for (const c of closers) await c().catch((err: unknown) => logger.warn({ err }, 'error while closing'));
  };
  return {
    listeners,
    store,
    metrics,
    async shutdown(mode) {
      const drainMs = mode === 'drain' ? parseDuration(loaded.config.shutdown.drainTimeout) : 0;
      logger.info({ mode, drainMs }, 'gateway shutting down');
      await pgGateway?.drain(drainMs);
      const flush = (store as Partial<{ whenDrained(ms: number): Promise<boolean> }>).whenDrained;
      if (flush) {
        const ok = await flush.call(store, parseDuration(loaded.config.shutdown.auditFlushTimeout));
        if (!ok) logger.error('audit store: records still pending at shutdown (see audit.onFailure)');
      }
      await closeAll();
    },
    ...(auditSinkStatus ? { auditSinkStatus } : {}),
    ...(tracing ? { tracing } : {}),
    async close() {
      for (const c of closers) await c().catch((err: unknown) => logger.warn({ err }, 'error while closing'));
    },
  };
}

function isConsoleStore(s: Store): s is Store & ConsoleStore {
  return typeof (s as unknown as Partial<ConsoleStore>).verify === 'function';
}
