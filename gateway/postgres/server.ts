// The PostgreSQL listener: accepts clients, runs startup + token authentication, connects the
// upstream with the connection's own credentials and hands both sockets to a Session. Nothing a
// client sends can crash the process: every failure is scoped to that one connection.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { readFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { Approver } from '../approvals/approver.ts';
import { tokenSettings } from '../auth/settings.ts';
import { configPath, resolveSecret, type LoadedConfig } from '../config/load.ts';
import type { PostgresConnectionConfig } from '../config/schema.ts';
import { contextFromApplicationName } from '../enforce/context.ts';
import { EnforcementSession, type PolicyDecider } from '../enforce/session.ts';
import type { ElevationSource } from '../elevation/registry.ts';
import { log as defaultLogger } from '../log.ts';
import { initSqlParser } from '../policy/sql/classify.ts';
import { auditDigestKey } from '../recording/open.ts';
import { AuditUnavailableError, type Store } from '../recording/store.ts';
import { CancelRegistry } from './cancel.ts';
import { authenticationOk, backendKeyData, noticeResponse, readyForQuery, type PgError } from './messages.ts';
import type { MaskerFactory } from './row-masker.ts';
import { maskingConfigured } from './scrub.ts';
import { Session, type SqlClassifier } from './session.ts';
import { clientStartup, refuse, UPSTREAM_CLIENT_ENCODING, type ClientTls } from './startup.ts';
import { connectUpstream, UpstreamError } from './upstream.ts';
import { PoolSet } from './pool.ts';
import { openPooled } from './upstream-lease.ts';
import { parseDuration } from '../config/load.ts';
import { EventRateLimiter } from '../net/rate-limit.ts';
import { fdLimit, watchFds } from '../net/fd-watch.ts';
import type { GatewayMetrics } from '../observability/metrics.ts';
import type { Tracer } from '@opentelemetry/api';

export interface PostgresGatewayOptions {
  config: LoadedConfig;
  /** Decides on classified operations; a PolicyEngine. */
  policy: PolicyDecider;
  /** Just-in-time elevation windows (gateway/elevation/); none when absent. */
  elevations?: ElevationSource;
  /** Turns a query string into operations; `sqlOperations` from gateway/policy/engine.ts. */
  classify: SqlClassifier;
  store: Store;
  approver: Approver;
  /** Keys the digest approvals bind to; stable across restarts and replicas (app.ts approvalBindingKey). */
  bindingKey: string;
  /**
   * Masking layer (createMaskerFactory), or one per connection: table OIDs are per database, so
   * the catalog lookups must go to the session's own upstream. Without one, results that need
   * masking are refused.
   */
  masking?: MaskerFactory | ((connection: PostgresConnectionConfig) => MaskerFactory) | null;
  logger?: Logger;
  /** Override listen.postgres host/port (tests, the demo). Port 0 picks a free port. */
  host?: string;
  port?: number;
  /** Time a client has to finish startup and authentication. Default listen.postgres.clientLoginTimeout (60s). */
  startupTimeoutMs?: number;
  /** Prometheus metrics (gateway/observability/metrics.ts); none when absent. */
  metrics?: GatewayMetrics;
  /** OpenTelemetry tracer (observability.tracing); none = tracing off. */
  tracer?: Tracer;
  /** Time to connect and authenticate upstream. Default 10s. */
  upstreamTimeoutMs?: number;
  /** Cancel keys (a gateway worker's registry routes other workers' keys: gateway/cluster). */
  cancels?: CancelRegistry;
}

export interface PostgresGateway {
  host: string;
  port: number;
  /** Live sessions (for status pages and tests). */
  sessions(): ReadonlySet<Session>;
  /**
   * Graceful stop: no new connections; sessions end as soon as no statement is running (up to
   * `timeoutMs`, 0: at once); a held client is told its approval request stays open and how to
   * re-attach. Resolves when every session has ended.
   */
  drain(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/** Client startup parameters passed upstream. Not user/database (from config), not `options`,
 * `search_path` or `role`-like settings, which could change what a statement means to the policy. */
const FORWARDED_PARAMS = ['application_name', 'client_encoding', 'DateStyle', 'TimeZone', 'IntervalStyle', 'extra_float_digits', 'lc_monetary', 'lc_numeric', 'lc_time', 'bytea_output'];

/** A separate connection to the session's upstream, same credentials, for previews of held writes (preview.ts). */
async function previewConnection(conn: PostgresConnectionConfig, password: string | undefined, identity: string): Promise<pg.Client> {
  const c = new pg.Client({
    host: conn.host,
    port: conn.port,
    database: conn.database,
    user: conn.user,
    password,
    ssl: conn.tls === 'require' ? { rejectUnauthorized: false } : undefined,
    application_name: `airlock-preview (airlock:${identity})`.slice(0, 63),
    connectionTimeoutMillis: 10_000,
  });
  await c.connect();
  return c;
}

export async function startPostgresGateway(opts: PostgresGatewayOptions): Promise<PostgresGateway> {
  const logger = opts.logger ?? defaultLogger.child({ component: 'postgres' });
  const loaded = opts.config;
  const listen: NonNullable<LoadedConfig['config']['listen']['postgres']> = loaded.config.listen.postgres ?? { host: '127.0.0.1', port: 6432, maxClientConnections: 1000, clientLoginTimeout: '60s', maxPipelinedMessages: 10_000 };
  const metrics = opts.metrics;
  const tokens = tokenSettings(loaded);
  // Receipts' parameter digests: audit.digestKey, else masking.hashKey, else the approval binding key.
  const digestKey = auditDigestKey(loaded) ?? opts.bindingKey;
  let tls: ClientTls | undefined;
  if (listen.tls) {
    const certFile = configPath(loaded, listen.tls.cert);
    const keyFile = configPath(loaded, listen.tls.key);
    let cert: Buffer, key: Buffer;
    try {
      cert = readFileSync(certFile);
      key = readFileSync(keyFile);
    } catch (err) {
      throw new Error(`listen.postgres.tls: cannot read ${(err as NodeJS.ErrnoException).path ?? certFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    tls = { context: createSecureContext({ cert, key }), required: listen.tls.required };
  }
  // The classifier and the COPY analysis need the WASM parser; without it every statement would be denied.
  await initSqlParser();
  const cancels = opts.cancels ?? new CancelRegistry();
  // Upstream pools of connections with `pool:` (pool.ts), by connection, upstream role and settings.
  const pools = new PoolSet();
  const sessions = new Set<Session>();
  const pending = new Set<Socket>();
  const startupTimeoutMs = opts.startupTimeoutMs ?? parseDuration(listen.clientLoginTimeout);
  const enforcements = new Map<Session, EnforcementSession>();
  let draining = false;
  // Refusals before a session exists are caused by whoever can open a socket: logged and audited
  // at a bounded rate, the rest counted and reported with the next one that passes.
  const refusalLimiter = new EventRateLimiter(20, 10_000);
  const fdLimiter = new EventRateLimiter(1, 5_000);
  const refused = (reason: string, log: Record<string, unknown>, subject: string, detail: Record<string, unknown>) => {
    metrics?.refusedConnections.inc({ protocol: 'postgres', reason });
    const v = refusalLimiter.take();
    if (!v.pass) return;
    const extra = v.suppressed ? { suppressedSinceLast: v.suppressed } : {};
    logger.info({ ...log, ...extra }, 'postgres connection refused');
    audit('postgres.refused', subject, { ...detail, ...extra });
  };

  const audit = (kind: string, subject: string, detail: Record<string, unknown>) => {
    try {
      opts.store.recordAudit({ at: new Date(), kind, subject, detail });
    } catch (err) {
      logger.error({ err }, 'recording an audit event failed');
    }
  };

  async function handle(raw: Socket): Promise<void> {
    const clientAddress = `${raw.remoteAddress ?? '?'}:${raw.remotePort ?? '?'}`;
    raw.setNoDelay(true);
    raw.setKeepAlive(true, 30_000);
    // Errors are handled by whoever reads the socket; this keeps a late one from being unhandled.
    raw.on('error', (err) => logger.debug({ err, clientAddress }, 'client socket error'));
    if (draining) {
      refuse(raw, { severity: 'FATAL', code: '57P03', message: 'the Airlock gateway is shutting down; connect again (to another gateway) shortly' });
      return;
    }
    if (pending.size + sessions.size >= listen.maxClientConnections) {
      metrics?.limitsHit.inc({ protocol: 'postgres', limit: 'maxClientConnections' });
      refused('maxClientConnections', { clientAddress, limit: listen.maxClientConnections }, clientAddress, { clientAddress, code: '53300', reason: 'too many client connections' });
      refuse(raw, { severity: 'FATAL', code: '53300', message: `sorry, too many clients already: Airlock accepts at most ${listen.maxClientConnections} connections (listen.postgres.maxClientConnections)` });
      return;
    }
    pending.add(raw);
    const timer = setTimeout(() => {
      metrics?.limitsHit.inc({ protocol: 'postgres', limit: 'clientLoginTimeout' });
      refused('clientLoginTimeout', { clientAddress, timeoutMs: startupTimeoutMs }, clientAddress, { clientAddress, code: '08006', reason: 'startup not completed within clientLoginTimeout' });
      raw.destroy();
    }, startupTimeoutMs);
    try {
      const res = await clientStartup(raw, {
        tls,
        cancels,
        auth: { tokens, connections: loaded.config.connections },
        onRefused: (e, params) =>
          refused(
            e.code,
            { clientAddress, user: params?.user, database: params?.database, code: e.code, reason: e.message },
            params?.user ?? clientAddress,
            { clientAddress, user: params?.user, connection: params?.database, code: e.code, reason: e.message },
          ),
      });
      if (res.kind !== 'session') return;
      const socket = res.socket;
      // Until the session takes over, a socket error must not go unhandled.
      socket.on('error', (err) => logger.debug({ err, clientAddress }, 'client socket error'));
      const conn: PostgresConnectionConfig = res.connection;
      const fail = (e: PgError) => {
        audit('postgres.refused', res.identity.name, { clientAddress, connection: conn.name, code: e.code, reason: e.message });
        logger.warn({ clientAddress, identity: res.identity.name, connection: conn.name, reason: e.message }, 'postgres session could not start');
        refuse(socket, { severity: 'FATAL', ...e });
      };
      let password: string | undefined;
      try {
        password = conn.password ? resolveSecret(conn.password, loaded.baseDir, `connections.${conn.name}.password`) : undefined;
      } catch (err) {
        logger.error({ err, connection: conn.name }, 'upstream password unavailable');
        return fail({ code: '08006', message: `upstream credentials for connection "${conn.name}" are not available (see the gateway log)` });
      }
      const params: Record<string, string> = {};
      for (const k of FORWARDED_PARAMS) if (res.params[k] !== undefined) params[k] = res.params[k];
      params.client_encoding = UPSTREAM_CLIENT_ENCODING; // whatever the client asked (startup.ts refuses non-UTF8)
      params.application_name = `${res.params.application_name ? res.params.application_name + ' ' : ''}(airlock:${res.identity.name})`.slice(0, 63);
      let up;
      try {
        up = conn.pool
          ? await openPooled({ pools, conn: { ...conn, pool: conn.pool }, password, role: conn.user, params, timeoutMs: opts.upstreamTimeoutMs, logger, metrics, describe: () => ({ identity: res.identity.name, connection: conn.name, clientAddress }) })
          : await connectUpstream({ conn, password, params, timeoutMs: opts.upstreamTimeoutMs });
      } catch (err) {
        if (err instanceof UpstreamError) return fail({ code: err.code, message: err.message });
        throw err;
      }
      if (socket.destroyed) {
        up.socket.destroy();
        return;
      }
      const upstreamKey = { host: conn.host, port: conn.port, pid: up.pid, secret: up.secret, ...('cancel' in up ? { cancel: up.cancel } : {}) };
      const key = cancels.register(upstreamKey);
      const enforcement = new EnforcementSession(
        { policy: opts.policy, approver: opts.approver, store: opts.store, logger, metrics, ...(opts.tracer ? { tracer: opts.tracer } : {}), ...(tokens.revocations ? { revocations: tokens.revocations } : {}), ...(opts.elevations ? { elevations: opts.elevations } : {}) },
        { id: randomUUID(), protocol: 'postgres', identity: res.identity, connection: conn.name, clientAddress, tokenExpiresAt: res.tokenExpiresAt, ...(res.tokenId ? { tokenId: res.tokenId } : {}) },
      );
      // A reason or traceparent in application_name speaks for the whole session.
      enforcement.setContext(contextFromApplicationName(res.params.application_name));
      const session = new Session(
        {
          classify: opts.classify,
          masking: typeof opts.masking === 'function' ? opts.masking(conn) : (opts.masking ?? null),
          cancels,
          logger,
          bindingKey: opts.bindingKey,
          parameterDigestKey: digestKey,
          previewConnect: () => previewConnection(conn, password, res.identity.name),
        },
        {
          enforcement,
          client: socket,
          clientLeftover: res.leftover,
          upstream: up.socket,
          upstreamLeftover: up.leftover,
          upstreamKey,
          clientPid: key.pid,
          onClose: (s) => {
            sessions.delete(s);
            enforcements.delete(s);
          },
          scrubOutput: maskingConfigured(loaded.config),
          maxMessageBytes: listen.maxMessageBytes,
          maxPipelinedMessages: listen.maxPipelinedMessages,
          onLimit: (limit) => metrics?.limitsHit.inc({ protocol: 'postgres', limit }),
        },
      );
      try {
        enforcement.start();
      } catch (err) {
        // No audit trail, no access.
        logger.error({ err }, 'recording the session start failed; refusing the session');
        cancels.unregister(key.pid);
        up.socket.destroy();
        if (err instanceof AuditUnavailableError) return fail({ code: err.sqlstate, message: err.message });
        return fail({ code: '58000', message: 'Airlock cannot record this session, so it is refused (see the gateway log)' });
      }
      clearTimeout(timer);
      pending.delete(raw);
      sessions.add(session);
      enforcements.set(session, enforcement);
      // A session that starts during an elevation window hears so before its first statement.
      const elevated = enforcement.elevationNotice();
      socket.write(Buffer.concat([authenticationOk(), ...up.startupFrames, backendKeyData(key.pid, key.secret), ...(elevated ? [noticeResponse({ message: elevated })] : []), readyForQuery('I')]));
      logger.info({ session: session.id, identity: res.identity.name, connection: conn.name, clientAddress, tls: res.tls, upstreamTls: up.tls }, 'postgres session started');
      session.start();
    } finally {
      clearTimeout(timer);
      pending.delete(raw);
    }
  }

  const server = createServer({ pauseOnConnect: false }, (raw) => {
    handle(raw).catch((err: Error) => {
      logger.error({ err }, 'postgres connection failed');
      refuse(raw, { severity: 'FATAL', code: 'XX000', message: 'Airlock internal error during startup (see the gateway log)' });
    });
  });
  server.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EMFILE' || err.code === 'ENFILE') {
      // Out of file descriptors: every new client fails until some close. Say so loudly (but
      // not once per attempted connection).
      metrics?.limitsHit.inc({ protocol: 'postgres', limit: 'fileDescriptors' });
      const v = fdLimiter.take();
      if (v.pass) logger.fatal({ err, code: err.code, failedSinceLast: v.suppressed, sessions: sessions.size, authenticating: pending.size }, `postgres listener cannot accept connections: out of file descriptors (${err.code}); raise the process limit (ulimit -n) or lower listen.postgres.maxClientConnections`);
      return;
    }
    logger.error({ err }, 'postgres listener error');
  });
  const host = opts.host ?? listen.host;
  const port = opts.port ?? listen.port;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as { address: string; port: number };
  const limit = fdLimit();
  // Each session holds two descriptors (client and upstream).
  if (limit !== undefined && listen.maxClientConnections * 2 + 64 > limit) logger.warn({ fdLimit: limit, maxClientConnections: listen.maxClientConnections }, `the process may open only ${limit} files, fewer than listen.postgres.maxClientConnections needs; raise ulimit -n`);
  const stopFdWatch = watchFds(({ open, limit }) => {
    metrics?.limitsHit.inc({ protocol: 'postgres', limit: 'fileDescriptors' });
    logger.fatal({ code: 'EMFILE', open, fdLimit: limit, sessions: sessions.size, authenticating: pending.size }, `out of file descriptors (${open} of ${limit} open): new connections are being dropped; raise the process limit (ulimit -n) or lower listen.postgres.maxClientConnections`);
  });
  server.once('close', stopFdWatch);
  logger.info({ host: addr.address, port: addr.port, tls: !!tls, tlsRequired: tls?.required ?? false }, 'postgres gateway listening');

  return {
    host: addr.address,
    port: addr.port,
    sessions: () => sessions,
    async drain(timeoutMs: number) {
      draining = true;
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const raw of pending) raw.destroy();
      const deadline = Date.now() + timeoutMs;
      const shutdownError = (held: string[]): PgError => ({
        severity: 'FATAL',
        code: '57P01',
        message: held.length
          ? `the Airlock gateway is shutting down; approval request ${held.join(', ')} stays open: reconnect and send the same statement to re-attach to it`
          : 'the Airlock gateway is shutting down; reconnect to continue',
      });
      for (;;) {
        for (const s of [...sessions]) {
          const e = enforcements.get(s);
          const held = e?.heldRequests() ?? [];
          // A held statement has not started; anything else in flight is allowed to finish.
          // The held client is told its request stays open: the hold parks (it does not cancel the request).
          if (held.length > 0 || s.held || !s.busy || Date.now() >= deadline) s.end(held.length || s.held ? 'gateway draining: held statement left for re-attach' : 'gateway draining', shutdownError(held), { park: held.length > 0 || s.held });
        }
        if (sessions.size === 0) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      pools.close();
      await closed;
    },
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of [...sessions]) s.end('gateway shutting down', { severity: 'FATAL', code: '57P01', message: 'the Airlock gateway is shutting down' });
      for (const raw of pending) raw.destroy();
      pools.close();
      await closed;
    },
  };
}
