// observability.tracing in airlock.yaml: validated on load (ratio bounds, secret-reference headers,
// no unknown keys), and wired by gateway/app.ts: the exporter sends the resolved headers and the
// service name to the configured endpoint, and the gateway's close() flushes what is pending.
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
import { ConfigError, loadConfig, parseConfig } from '../../gateway/config/load.ts';
import { startTracing } from '../../gateway/observability/tracing.ts';
import { startLocalServer } from '../support/local-server.ts';
import { startOtlpReceiver } from '../support/otlp-receiver.ts';

const base = 'auth: { signingKey: { env: X } }\n';

test('observability.tracing is validated: ratio in 0..1, headers are secret references, no unknown keys', () => {
  const ok = parseConfig(`${base}observability: { tracing: { enabled: true, endpoint: "http://collector:4318/v1/traces" } }`);
  assert.deepEqual(ok.config.observability?.tracing, { enabled: true, endpoint: 'http://collector:4318/v1/traces', serviceName: 'airlock-gateway', sampleRatio: 1 });
  assert.equal(parseConfig(base).config.observability, undefined, 'off unless given');
  for (const bad of [
    'observability: { tracing: { enabled: true, sampleRatio: 1.5 } }',
    'observability: { tracing: { enabled: true, endpoint: "not a url" } }',
    'observability: { tracing: { enabled: true, headers: { x-api-key: inline-secret } } }',
    'observability: { tracing: { enabled: true, exporter: zipkin } }',
  ]) {
    assert.throws(() => parseConfig(`${base}${bad}`), ConfigError, bad);
  }
});

test('the gateway exports to the configured endpoint with the resolved headers, and close() flushes', { timeout: 60_000 }, async (t) => {
  const otlp = await startOtlpReceiver();
  t.after(() => otlp.stop());
  const dir = mkdtempSync(join(tmpdir(), 'airlock-tracing-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  writeFileSync(join(dir, 'otel.key'), 'k-123\n');
  writeFileSync(
    join(dir, 'airlock.yaml'),
    stringify({
      auth: { signingKey: { file: 'signing.key' } },
      store: { sqlite: 'airlock.db' },
      observability: { tracing: { enabled: true, endpoint: otlp.url, serviceName: 'airlock-eu-1', sampleRatio: 1, headers: { 'x-api-key': { file: 'otel.key' } } } },
    }),
  );
  const gw = await startGateway(loadConfig(join(dir, 'airlock.yaml')), { approver: new FailClosedApprover(), logger: pino({ level: 'silent' }) });
  assert.ok(gw.tracing);
  gw.tracing.tracer.startSpan('probe').end();
  await gw.close(); // no forceFlush: shutdown must export what is pending
  const s = otlp.spans.find((x) => x.name === 'probe');
  assert.ok(s, `spans received: ${otlp.spans.map((x) => x.name).join(', ') || 'none'}`);
  assert.equal(s.resource['service.name'], 'airlock-eu-1');
  assert.equal(otlp.headers[0]['x-api-key'], 'k-123');
});

test('a collector that refuses exports is named in the gateway log, at most once a minute', { timeout: 60_000 }, async (t) => {
  const refusing = await startLocalServer(async (req, res) => {
    for await (const _ of req) {
      // drain the body
    }
    res.writeHead(400, { 'content-type': 'application/json' }).end('{"message":"bad"}');
  });
  t.after(() => refusing.stop());
  const lines: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
  const tracing = startTracing({ enabled: true, endpoint: `http://127.0.0.1:${refusing.port}/v1/traces`, serviceName: 'x', sampleRatio: 1 }, { logger });
  assert.ok(tracing);
  t.after(() => tracing.shutdown().catch(() => undefined));
  for (let i = 0; i < 3; i++) {
    tracing.tracer.startSpan(`probe-${i}`).end();
    // forceFlush reports the failed export too; the log line is what an operator sees.
    await assert.rejects(tracing.forceFlush(), /Bad Request/);
  }
  const failures = lines.filter((l) => l.includes('trace export failed'));
  assert.equal(failures.length, 1, `one line per minute: ${lines.join('')}`);
  assert.match(failures[0], new RegExp(`127\\.0\\.0\\.1:${refusing.port}`));
});
