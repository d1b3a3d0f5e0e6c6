// The admin listener answers readiness per dependency: a closed audit store or an upstream that
// refuses connections makes /readyz 503 and says which one; /healthz stays 200 (the process
// serves); /metrics is Prometheus text including the audit queue gauges read from store.health().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { pino } from 'pino';
import { freePort } from '../../gateway/net/free-port.ts';
import { GatewayMetrics } from '../../gateway/observability/metrics.ts';
import { startAdminServer } from '../../gateway/observability/admin-server.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { EventRateLimiter } from '../../gateway/net/rate-limit.ts';

test('readiness is per dependency: audit store, Temporal, each upstream', async () => {
  const live = createServer((s) => s.destroy());
  await new Promise<void>((r) => live.listen(0, '127.0.0.1', () => r()));
  const livePort = (live.address() as { port: number }).port;
  const deadPort = await freePort();
  const store = SqliteStore.open(':memory:');
  const metrics = new GatewayMetrics(store);
  const admin = await startAdminServer({
    host: '127.0.0.1',
    port: 0,
    metrics,
    logger: pino({ level: 'silent' }),
    targets: { store, temporal: `127.0.0.1:${livePort}`, upstreams: [{ name: 'app', host: '127.0.0.1', port: livePort }] },
  });
  const base = `http://127.0.0.1:${admin.port}`;
  try {
    let r = await fetch(`${base}/readyz`);
    let body = (await r.json()) as { ready: boolean; checks: Record<string, unknown> };
    assert.equal(r.status, 200, JSON.stringify(body));
    assert.equal(body.ready, true);

    metrics.limitsHit.inc({ protocol: 'postgres', limit: 'maxClientConnections' });
    const text = await (await fetch(`${base}/metrics`)).text();
    assert.match(text, /airlock_limits_hit_total\{protocol="postgres",limit="maxClientConnections"\} 1/);
    assert.match(text, /airlock_audit_queue_depth 0/);
    assert.match(text, /airlock_audit_healthy 1/);

    // An upstream that is down: not ready, and the body names it.
    await admin.close();
    const admin2 = await startAdminServer({
      host: '127.0.0.1',
      port: 0,
      metrics,
      logger: pino({ level: 'silent' }),
      targets: { store, temporal: `127.0.0.1:${deadPort}`, upstreams: [{ name: 'app', host: '127.0.0.1', port: livePort }, { name: 'reports', host: '127.0.0.1', port: deadPort }] },
    });
    const base2 = `http://127.0.0.1:${admin2.port}`;
    r = await fetch(`${base2}/readyz`);
    body = (await r.json()) as { ready: boolean; checks: { temporal: { ok: boolean }; connections: Record<string, { ok: boolean; error?: string }>; audit: { ok: boolean } } } & { checks: Record<string, unknown> };
    assert.equal(r.status, 503);
    const checks = body.checks as { temporal: { ok: boolean }; connections: Record<string, { ok: boolean; error?: string }>; audit: { ok: boolean } };
    assert.equal(checks.connections.app.ok, true);
    assert.equal(checks.connections.reports.ok, false);
    assert.match(checks.connections.reports.error ?? '', /ECONNREFUSED/);
    assert.equal(checks.temporal.ok, false);
    assert.equal(checks.audit.ok, true);

    // The audit store is unhealthy (closed): not ready; health stays 200.
    store.close();
    r = await fetch(`${base2}/readyz`);
    const b3 = (await r.json()) as { checks: { audit: { ok: boolean; error?: string } } };
    assert.equal(r.status, 503);
    assert.equal(b3.checks.audit.ok, false);
    assert.match(b3.checks.audit.error ?? '', /closed/);
    assert.equal((await fetch(`${base2}/healthz`)).status, 200);
    assert.match(await (await fetch(`${base2}/metrics`)).text(), /airlock_audit_healthy 0/);
    await admin2.close();
  } finally {
    await admin.close().catch(() => {});
    live.close();
  }
});

test('the refusal rate limiter passes a bounded number per window and reports what it suppressed', () => {
  let now = 0;
  const l = new EventRateLimiter(3, 1000, () => now);
  const passed = Array.from({ length: 10 }, () => l.take().pass).filter(Boolean).length;
  assert.equal(passed, 3);
  assert.equal(l.pending, 7);
  now = 1000;
  assert.deepEqual(l.take(), { pass: true, suppressed: 7 });
  assert.equal(l.pending, 0);
});
