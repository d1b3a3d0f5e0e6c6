// Audit sink lag as Prometheus gauges (issue 14: "its lag is visible in metrics"), read through
// the gateway's admin /metrics: a webhook sink whose SIEM answers 500 falls behind (records and
// seconds grow, failures count up) while the store keeps recording; once the SIEM recovers the
// lag drains to zero and the failure count stays what it was.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { pino } from 'pino';
import { startGateway } from '../../gateway/app.ts';
import { FailClosedApprover } from '../../gateway/approvals/approver.ts';
import { loadConfig } from '../../gateway/config/load.ts';
import { waitFor } from '../support/approvals-stack.ts';
import { startLocalServer } from '../support/local-server.ts';

function gauge(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name}\\{sink="siem",type="webhook"\\} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

test('a failing webhook sink: lag records and seconds grow and failures count in /metrics; after recovery the lag is 0', { timeout: 120_000 }, async (t) => {
  let failing = true;
  let delivered = 0;
  const siem = await startLocalServer(async (req, res) => {
    let body = '';
    for await (const c of req) body += String(c);
    if (failing) return void res.writeHead(500).end('down');
    delivered += body.trim().split('\n').length;
    res.writeHead(200).end();
  });
  t.after(() => siem.stop());
  const dir = mkdtempSync(join(tmpdir(), 'airlock-sink-metrics-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  writeFileSync(
    join(dir, 'airlock.yaml'),
    stringify({
      auth: { signingKey: { file: 'signing.key' } },
      store: { sqlite: 'airlock.db' },
      listen: { admin: { host: '127.0.0.1', port: 0 } },
      audit: { sinks: [{ type: 'webhook', name: 'siem', url: `http://127.0.0.1:${siem.port}/ingest`, timeoutMs: 2000 }] },
    }),
  );
  const gw = await startGateway(loadConfig(join(dir, 'airlock.yaml')), { approver: new FailClosedApprover(), logger: pino({ level: 'silent' }), sinkPollMs: 50 });
  t.after(() => gw.close());
  const admin = gw.listeners.find((l) => l.protocol === 'admin');
  assert.ok(admin);
  const metrics = async () => (await fetch(`http://${admin.host}:${admin.port}/metrics`)).text();

  for (let i = 0; i < 5; i++) gw.store.recordAudit({ at: new Date(), kind: 'test.event', subject: `e${i}`, detail: { i } });
  const first = await waitFor(async () => {
    const m = await metrics();
    return (gauge(m, 'airlock_audit_sink_lag_records') ?? 0) >= 5 && (gauge(m, 'airlock_audit_sink_failures_total') ?? 0) >= 2 ? m : undefined;
  }, 'the sink lagging with failures', 30_000);
  const lagSeconds = gauge(first, 'airlock_audit_sink_lag_seconds') ?? 0;
  assert.ok(lagSeconds > 0, `lag seconds: ${lagSeconds}`);
  assert.equal(delivered, 0);

  // Still failing: the oldest undelivered record only gets older, and more records pile up.
  gw.store.recordAudit({ at: new Date(), kind: 'test.event', subject: 'late', detail: {} });
  const later = await waitFor(async () => {
    const m = await metrics();
    return (gauge(m, 'airlock_audit_sink_lag_seconds') ?? 0) > lagSeconds + 0.5 && (gauge(m, 'airlock_audit_sink_lag_records') ?? 0) >= 6 ? m : undefined;
  }, 'the lag growing', 30_000);
  const failures = gauge(later, 'airlock_audit_sink_failures_total') ?? 0;
  assert.ok(failures >= 2);

  failing = false;
  const recovered = await waitFor(async () => {
    const m = await metrics();
    return gauge(m, 'airlock_audit_sink_lag_records') === 0 ? m : undefined;
  }, 'the sink catching up', 30_000);
  assert.equal(gauge(recovered, 'airlock_audit_sink_lag_seconds'), 0);
  assert.ok((gauge(recovered, 'airlock_audit_sink_failures_total') ?? 0) >= failures, 'the failure count is monotonic');
  assert.ok(delivered >= 6, `delivered ${delivered}`);
  assert.match(recovered, /# TYPE airlock_audit_sink_failures_total counter/);
});
