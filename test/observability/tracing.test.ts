// OpenTelemetry traces, end to end: the real gateway (gateway/app.ts, from one airlock.yaml with
// observability.tracing on) exports through the real OTLP/HTTP exporter to a local receiver.
// A client's traceparent (psql's application_name, a leading SQL comment, an HTTP header) becomes
// the parent of the operation's span; a held statement gets a hold span with its request id, the
// Temporal calls are children of it, and the workflow keeps the traceparent in its memo. Spans
// never carry statement text, literals or masked values; a malformed traceparent is ignored.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { configuredIdentity, tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { parentFromTraceparent, startTracing } from '../../gateway/observability/tracing.ts';
import { trace } from '@opentelemetry/api';
import { finished, spawnPsql, startApprovalsStack, waitFor, type ApprovalsStack } from '../support/approvals-stack.ts';
import { startLocalServer, type LocalServer } from '../support/local-server.ts';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../support/otlp-receiver.ts';
import { blockActionPayload, postInteraction } from '../support/fake-slack.ts';

let stack: ApprovalsStack;
let otlp: OtlpReceiver;
let upstream: LocalServer;

const TEST_TIMEOUT = 180_000;
// Values that must never reach a span: a masked column's value and literals of the statements.
const SECRET_EMAIL = 'zeb.quux@example.org';
const LITERAL = 'Zebediah Quux';

const hex = (bytes: number) => randomBytes(bytes).toString('hex');
function traceparent(): { traceId: string; spanId: string; header: string } {
  const traceId = hex(16);
  const spanId = hex(8);
  return { traceId, spanId, header: `00-${traceId}-${spanId}-01` };
}

before(
  async () => {
    otlp = await startOtlpReceiver();
    upstream = await startLocalServer(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, owner: SECRET_EMAIL }));
    });
    stack = await startApprovalsStack({
      setup: `CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text NOT NULL);
              INSERT INTO customers VALUES (1, '${LITERAL}', '${SECRET_EMAIL}');
              CREATE TABLE t_held (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t_held VALUES (1, 1);
              CREATE TABLE t_approved (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t_approved VALUES (1, 1);
              CREATE TABLE t_malformed (id int);`,
      identities: [
        { name: 'agent-1', groups: ['agents'], owner: 'carol' },
        { name: 'bob', groups: ['dba'] },
      ],
      rules: [
        {
          name: 'review-held',
          match: { tables: ['public.t_held'], statements: ['UpdateStmt'] },
          action: 'review',
          reason: 'tracing drill',
          review: { approvers: ['dba'], timeout: '4s' },
        },
        {
          name: 'review-approved',
          match: { tables: ['public.t_approved'], statements: ['UpdateStmt'] },
          action: 'review',
          reason: 'tracing drill',
          review: { approvers: ['dba'], timeout: '2m' },
        },
      ],
      slackUsers: { UBOB0001: 'bob' },
      extendConfig: () => ({
        listen: { postgres: { host: '127.0.0.1', port: 0 } },
        masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'customers.email', strategy: 'redact' }] },
        http: { listen: { host: '127.0.0.1', port: 0 }, services: [{ name: 'svc', url: `http://127.0.0.1:${upstream.port}` }] },
        observability: { tracing: { enabled: true, endpoint: otlp.url, serviceName: 'airlock-test', sampleRatio: 1 } },
      }),
    });
    stack.slack.addUser('UBOB0001', { name: 'bob' });
  },
  { timeout: 300_000 },
);

after(async () => {
  await stack?.close();
  await upstream?.stop();
  await otlp?.stop();
});

async function flush(): Promise<void> {
  assert.ok(stack.gateway.tracing, 'observability.tracing.enabled starts a tracer provider');
  await stack.gateway.tracing.forceFlush();
}

function operationSpan(traceId: string, table: string): (s: ReceivedSpan) => boolean {
  return (s) => s.traceId === traceId && s.attributes['airlock.session.id'] !== undefined && Array.isArray(s.attributes['airlock.tables']) && (s.attributes['airlock.tables'] as string[]).includes(table) && s.name.startsWith('airlock ');
}

/** Nothing the exporter sent (any span, any attribute, the resource) holds a masked value or a literal. */
function assertNoLeak(): void {
  assert.ok(otlp.bodies.length > 0);
  for (const b of otlp.bodies) {
    assert.ok(!b.includes(SECRET_EMAIL), 'a masked value reached the trace exporter');
    assert.ok(!b.includes('Zebediah'), 'a statement literal reached the trace exporter');
    assert.ok(!b.includes('example.org'), 'part of a masked value reached the trace exporter');
  }
  assert.deepEqual(otlp.errors, []);
}

test('psql: application_name traceparent parents the statement span, with decision attributes and no literal or masked value', { timeout: TEST_TIMEOUT }, async () => {
  const tp = traceparent();
  const conninfo = `${await stack.conninfo('agent-1')} application_name=${tp.header}`;
  // A quoted identifier is client text too: it reaches the span only with the detectors applied.
  const r = await finished(spawnPsql(conninfo, `SELECT email FROM customers WHERE name = '${LITERAL}';\nSELECT 1 FROM "${SECRET_EMAIL}";\n`), 'masked select');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /does not exist/);
  assert.ok(!r.stdout.includes(SECRET_EMAIL), 'the column is masked for the client too');
  await flush();
  const s = await otlp.waitForSpan(operationSpan(tp.traceId, 'public.customers'), 'the SELECT on customers in the application_name trace');
  assert.equal(s.parentSpanId, tp.spanId, 'the client span is the parent');
  assert.equal(s.attributes['airlock.protocol'], 'postgres');
  assert.equal(s.attributes['airlock.connection'], 'app');
  assert.equal(s.attributes['airlock.identity'], 'agent-1');
  assert.equal(s.attributes['airlock.operation.kind'], 'read');
  assert.match(String(s.attributes['airlock.decision']), /^(allow|mask)$/);
  assert.equal(s.attributes['airlock.trace.source'], 'application_name');
  assert.equal(s.resource['service.name'], 'airlock-test');
  const quoted = await otlp.waitForSpan((x) => x.traceId === tp.traceId && x.spanId !== s.spanId && String(x.attributes['airlock.tables']).includes('[redacted:email]'), 'the span of the quoted-identifier SELECT, redacted');
  assert.equal(quoted.parentSpanId, tp.spanId);
  assertNoLeak();
});

test('psql: a leading SQL comment traceparent parents its statement (over the session one)', { timeout: TEST_TIMEOUT }, async () => {
  const session = traceparent();
  const own = traceparent();
  const conninfo = `${await stack.conninfo('agent-1')} application_name=${session.header}`;
  const r = await finished(spawnPsql(conninfo, `/* airlock: traceparent=${own.header} reason="look up ${LITERAL}" */ SELECT name FROM customers WHERE email = '${SECRET_EMAIL}';\n`), 'commented select');
  assert.equal(r.code, 0, r.stderr);
  await flush();
  const s = await otlp.waitForSpan(operationSpan(own.traceId, 'public.customers'), 'the SELECT in the SQL comment trace');
  assert.equal(s.parentSpanId, own.spanId);
  assert.equal(s.attributes['airlock.trace.source'], 'sql comment, application_name');
  assert.ok(!otlp.spans.some((x) => x.traceId === session.traceId && x.spanId === s.spanId));
  assertNoLeak();
});

test('a malformed traceparent is ignored: the statement runs and its span starts a trace of its own', { timeout: TEST_TIMEOUT }, async () => {
  const zeros = `00-${'0'.repeat(32)}-${hex(8)}-01`;
  const bad = `00-${hex(15)}zz-${hex(8)}-01`;
  const conninfo = `${await stack.conninfo('agent-1')} application_name=${bad}`;
  const r = await finished(spawnPsql(conninfo, `/* airlock: traceparent=${zeros} */ SELECT count(*) FROM t_malformed;\n/* airlock: traceparent=00-${hex(16)}-${hex(8)}-01-extra */ SELECT count(*) FROM t_malformed;\n`), 'malformed');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), '0\n0');
  await flush();
  await waitFor(() => otlp.spans.filter((s) => (s.attributes['airlock.tables'] as string[] | undefined)?.includes('public.t_malformed')).length >= 2, 'two spans for t_malformed');
  for (const s of otlp.spans.filter((x) => (x.attributes['airlock.tables'] as string[] | undefined)?.includes('public.t_malformed'))) {
    assert.equal(s.parentSpanId, '', 'no parent from a malformed traceparent');
    assert.notEqual(s.traceId, '0'.repeat(32));
    assert.match(s.traceId, /^[0-9a-f]{32}$/);
    assert.equal(s.attributes['airlock.trace.source'], undefined);
  }
  // The parser rejects them the same way everywhere.
  for (const v of [zeros, bad, `ff-${hex(16)}-${hex(8)}-01`, `00-${hex(16)}-${'0'.repeat(16)}-01`, '', 'garbage', `00-${hex(16)}-${hex(8)}-01-x`]) {
    assert.equal(trace.getSpanContext(parentFromTraceparent(v)), undefined, `ignored: ${v}`);
  }
});

test('HTTP: a traceparent header parents the request span', { timeout: TEST_TIMEOUT }, async () => {
  const tp = traceparent();
  const http = stack.gateway.listeners.find((l) => l.protocol === 'http');
  assert.ok(http);
  const token = await mintToken(tokenSettings(stack.loaded), configuredIdentity(stack.loaded, 'agent-1'));
  const res = await fetch(`http://${http.host}:${http.port}/svc/items/${encodeURIComponent(LITERAL)}?q=${encodeURIComponent(SECRET_EMAIL)}`, { headers: { authorization: `Bearer ${token}`, traceparent: tp.header } });
  assert.equal(res.status, 200, await res.clone().text());
  await res.arrayBuffer();
  await flush();
  const s = await otlp.waitForSpan((x) => x.traceId === tp.traceId && x.attributes['airlock.protocol'] === 'http', 'the HTTP request span');
  assert.equal(s.parentSpanId, tp.spanId);
  assert.equal(s.attributes['http.request.method'], 'GET');
  assert.equal(s.attributes['airlock.connection'], 'svc');
  assert.equal(s.attributes['airlock.trace.source'], 'http header');
  assertNoLeak();
});

test('a held statement: hold span (request id, outcome, wait) under the statement span, Temporal calls under the hold, traceparent in the workflow memo', { timeout: TEST_TIMEOUT }, async () => {
  const tp = traceparent();
  const p = await stack.psql('agent-1', `/* airlock: traceparent=${tp.header} */ UPDATE t_held SET v = 2 WHERE id = 1;\n`);
  const r = await finished(p, 'held update that expires');
  assert.match(r.stderr, /AL002|expired/, r.stderr);
  await flush();
  const op = await otlp.waitForSpan(operationSpan(tp.traceId, 'public.t_held'), 'the held UPDATE span');
  assert.equal(op.parentSpanId, tp.spanId);
  assert.equal(op.attributes['airlock.decision'], 'review');
  assert.equal(op.attributes['airlock.rule'], 'review-held');
  const hold = await otlp.waitForSpan((s) => s.traceId === tp.traceId && s.name === 'airlock hold', 'the hold span');
  assert.equal(hold.parentSpanId, op.spanId, 'the hold is a child of its statement');
  const requestId = String(hold.attributes['airlock.approval.request_id']);
  assert.match(requestId, /^airlock-[0-9a-f]{16}$/);
  assert.equal(hold.attributes['airlock.approval.outcome'], 'expired');
  assert.ok(Number(hold.attributes['airlock.hold.wait_ms']) >= 3000, `waited: ${hold.attributes['airlock.hold.wait_ms']}`);
  assert.equal(op.attributes['airlock.approval.request_id'], requestId);
  const start = await otlp.waitForSpan((s) => s.traceId === tp.traceId && s.name === 'temporal signalWithStart approval', 'the workflow start span');
  assert.equal(start.parentSpanId, hold.spanId);
  assert.equal(start.attributes['temporal.workflow_id'], requestId);
  const d = await stack.temporal.client.workflow.getHandle(requestId).describe();
  const memoTp = String(d.memo?.traceparent ?? '');
  assert.equal(memoTp, `00-${tp.traceId}-${hold.spanId}-01`, 'the workflow names the hold span in the same trace');
  assertNoLeak();
});

test('tracing off: no tracer provider, nothing to flush', () => {
  assert.equal(startTracing(undefined), undefined);
  assert.equal(startTracing({ enabled: false, endpoint: otlp.url, serviceName: 'x', sampleRatio: 1 }), undefined);
});

test('an approved hold: the claim Update is a child of the hold span, outcome approved', { timeout: TEST_TIMEOUT }, async () => {
  const tp = traceparent();
  const p = await stack.psql('agent-1', `/* airlock: traceparent=${tp.header} */ UPDATE t_approved SET v = 2 WHERE id = 1;\n`);
  const msg = await waitFor(() => stack.slack.messagesIn(stack.channelId).find((m) => !m.thread_ts && JSON.stringify(m.blocks).includes('t_approved')), 'the request in Slack');
  const requestId = /airlock-[0-9a-f]{16}/.exec(JSON.stringify(msg.blocks))?.[0];
  assert.ok(requestId);
  const { payload } = blockActionPayload({ userId: 'UBOB0001', channelId: msg.channel, messageTs: msg.ts, actionId: 'airlock_approve', value: requestId });
  const click = await postInteraction(stack.slackEventsUrl, stack.signingSecret, payload);
  assert.equal(click.status, 200, click.body);
  const r = await finished(p, 'approved update');
  assert.match(r.stdout + r.stderr, /UPDATE 1/);
  await flush();
  const hold = await otlp.waitForSpan((s) => s.traceId === tp.traceId && s.name === 'airlock hold', 'the hold span');
  assert.equal(hold.attributes['airlock.approval.request_id'], requestId);
  assert.equal(hold.attributes['airlock.approval.outcome'], 'approved');
  const claim = await otlp.waitForSpan((s) => s.traceId === tp.traceId && s.name === 'temporal update claim' && s.attributes['airlock.claim.result'] === 'released', 'the claim Update span');
  assert.equal(claim.parentSpanId, hold.spanId);
  assert.equal(claim.attributes['temporal.workflow_id'], requestId);
  assertNoLeak();
});
