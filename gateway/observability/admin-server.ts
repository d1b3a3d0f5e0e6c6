// The admin listener (listen.admin): /healthz (the process serves), /readyz (it should get
// traffic: the audit store persists within its bounds, Temporal answers when configured, every
// upstream accepts connections; each check in the JSON body) and Prometheus /metrics.
// Off by default; it reveals connection names, so bind it to a private address.
import { connect } from 'node:net';
import { createServer as createHttpServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import type { Store } from '../recording/store.ts';
import type { GatewayMetrics } from './metrics.ts';

export interface Check {
  ok: boolean;
  error?: string;
}

export interface ReadinessTargets {
  store: Pick<Store, 'health'>;
  /** host:port of the Temporal frontend, when approvals use Temporal. */
  temporal?: string;
  /** Upstream connections by name, checked with a TCP connect. */
  upstreams: { name: string; host: string; port: number }[];
  /** More checks (e.g. the gateway workers of a cluster primary); each must be ok to be ready. */
  extra?: () => Record<string, Check>;
}

export interface AdminServer {
  host: string;
  port: number;
  close(): Promise<void>;
}

/** A TCP connect within `timeoutMs`: enough to tell a dead upstream from a live one, without credentials. */
export function tcpCheck(host: string, port: number, timeoutMs = 2000): Promise<Check> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (c: Check) => {
      clearTimeout(t);
      s.destroy();
      resolve(c);
    };
    const t = setTimeout(() => done({ ok: false, error: `no connection within ${timeoutMs} ms` }), timeoutMs);
    s.once('connect', () => done({ ok: true }));
    s.once('error', (e: NodeJS.ErrnoException) => done({ ok: false, error: e.code ?? e.message }));
  });
}

function hostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return i < 0 ? { host: address, port: 7233 } : { host: address.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(address.slice(i + 1)) };
}

export async function readiness(t: ReadinessTargets): Promise<{ ready: boolean; checks: Record<string, unknown> }> {
  const h = t.store.health();
  const audit: Check & { pending: number; lagMs: number } = { ok: h.ok, pending: h.pending, lagMs: h.lagMs, ...(h.ok ? {} : { error: h.reason ?? 'unhealthy' }) };
  const [temporal, ...ups] = await Promise.all([
    t.temporal ? tcpCheck(hostPort(t.temporal).host, hostPort(t.temporal).port) : Promise.resolve(undefined),
    ...t.upstreams.map((u) => tcpCheck(u.host, u.port)),
  ]);
  const connections: Record<string, Check> = {};
  t.upstreams.forEach((u, i) => (connections[u.name] = ups[i]));
  const extra = t.extra?.() ?? {};
  const ready = audit.ok && (temporal?.ok ?? true) && ups.every((c) => c.ok) && Object.values(extra).every((c) => c.ok);
  return { ready, checks: { audit, ...(temporal ? { temporal } : {}), connections, ...extra } };
}

/** What /metrics serves: a gateway's registry, or a cluster primary's aggregate of its workers'. */
export type MetricsSource = Pick<GatewayMetrics, 'text'> & { registry: { contentType: string } };

export async function startAdminServer(o: { host: string; port: number; metrics: MetricsSource; targets: ReadinessTargets; logger: Logger }): Promise<AdminServer> {
  const server: Server = createHttpServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(405, { error: 'GET only' });
    if (path === '/healthz') return json(200, { status: 'ok' });
    if (path === '/readyz') {
      readiness(o.targets).then(
        (r) => json(r.ready ? 200 : 503, r),
        (err: Error) => json(503, { ready: false, error: err.message }),
      );
      return;
    }
    if (path === '/metrics') {
      o.metrics.text().then(
        (text) => {
          res.writeHead(200, { 'content-type': o.metrics.registry.contentType });
          res.end(text);
        },
        (err: Error) => json(500, { error: err.message }),
      );
      return;
    }
    json(404, { error: 'not found: /healthz, /readyz, /metrics' });
  });
  server.on('clientError', (_e, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as { address: string; port: number };
  o.logger.info({ host: addr.address, port: addr.port }, 'admin listener (/healthz, /readyz, /metrics)');
  return {
    host: addr.address,
    port: addr.port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  };
}

