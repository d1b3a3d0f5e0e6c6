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
import { log as defaultLogger } from '../log.ts';
import { initSqlParser } from '../policy/sql/classify.ts';
import { AuditUnavailableError, type Store } from '../recording/store.ts';
import { CancelRegistry } from './cancel.ts';
import { authenticationOk, backendKeyData, readyForQuery, type PgError } from './messages.ts';
import type { MaskerFactory } from './row-masker.ts';
import { maskingConfigured } from './scrub.ts';
import { Session, type SqlClassifier } from './session.ts';
import { clientStartup, refuse, UPSTREAM_CLIENT_ENCODING, type ClientTls } from './startup.ts';
import { connectUpstream, UpstreamError } from './upstream.ts';

export interface PostgresGatewayOptions {
  config: LoadedConfig;
  /** Decides on classified operations; a PolicyEngine. */
  policy: PolicyDecider;
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
  /** Time a client has to finish startup and authentication. Default 60s (PG's authentication_timeout). */
  startupTimeoutMs?: number;
  /** Time to connect and authenticate upstream. Default 10s. */
  upstreamTimeoutMs?: number;
}

export interface PostgresGateway {
  host: string;
  port: number;
  /** Live sessions (for status pages and tests). */
  sessions(): ReadonlySet<Session>;
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
  const listen = loaded.config.listen.postgres ?? { host: '127.0.0.1', port: 6432 };
  const tokens = tokenSettings(loaded);
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
  const cancels = new CancelRegistry();
  const sessions = new Set<Session>();
  const pending = new Set<Socket>();
  const startupTimeoutMs = opts.startupTimeoutMs ?? 60_000;

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
    pending.add(raw);
    const timer = setTimeout(() => raw.destroy(), startupTimeoutMs);
    try {
      const res = await clientStartup(raw, {
        tls,
        cancels,
        auth: { tokens, connections: loaded.config.connections },
        onRefused: (e, params) => {
          logger.info({ clientAddress, user: params?.user, database: params?.database, code: e.code, reason: e.message }, 'postgres connection refused');
          audit('postgres.refused', params?.user ?? clientAddress, { clientAddress, user: params?.user, connection: params?.database, code: e.code, reason: e.message });
        },
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
        up = await connectUpstream({ conn, password, params, timeoutMs: opts.upstreamTimeoutMs });
      } catch (err) {
        if (err instanceof UpstreamError) return fail({ code: err.code, message: err.message });
        throw err;
      }
      if (socket.destroyed) {
        up.socket.destroy();
        return;
      }
      const key = cancels.register({ host: conn.host, port: conn.port, pid: up.pid, secret: up.secret });
      const enforcement = new EnforcementSession(
        { policy: opts.policy, approver: opts.approver, store: opts.store, logger },
        { id: randomUUID(), protocol: 'postgres', identity: res.identity, connection: conn.name, clientAddress, tokenExpiresAt: res.tokenExpiresAt },
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
          previewConnect: () => previewConnection(conn, password, res.identity.name),
        },
        {
          enforcement,
          client: socket,
          clientLeftover: res.leftover,
          upstream: up.socket,
          upstreamLeftover: up.leftover,
          upstreamKey: { host: conn.host, port: conn.port, pid: up.pid, secret: up.secret },
          clientPid: key.pid,
          onClose: (s) => sessions.delete(s),
          scrubOutput: maskingConfigured(loaded.config),
          maxMessageBytes: listen.maxMessageBytes,
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
      socket.write(Buffer.concat([authenticationOk(), ...up.startupFrames, backendKeyData(key.pid, key.secret), readyForQuery('I')]));
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
  server.on('error', (err) => logger.error({ err }, 'postgres listener error'));
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
  logger.info({ host: addr.address, port: addr.port, tls: !!tls, tlsRequired: tls?.required ?? false }, 'postgres gateway listening');

  return {
    host: addr.address,
    port: addr.port,
    sessions: () => sessions,
    async close() {
      const closed = new Promise<void>((r) => server.close(() => r()));
      for (const s of [...sessions]) s.end('gateway shutting down', { severity: 'FATAL', code: '57P01', message: 'the Airlock gateway is shutting down' });
      for (const raw of pending) raw.destroy();
      await closed;
    },
  };
}
