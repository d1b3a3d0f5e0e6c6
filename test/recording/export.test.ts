// Export and streaming of the audit journal: `airlock audit export` (jsonl, OCSF classes, --since,
// resume by position), and sinks following the journal: a webhook that fails then recovers gets
// every record (at least once) while the store keeps recording; positions survive a restart;
// `airlock audit status` shows the lag; a file sink rotates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { startAuditSinks } from '../../gateway/recording/sinks.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;
function airlock(args: string[]) {
  return run(process.execPath, [bin, ...args], { env: { ...process.env, AIRLOCK_TEST_SIGNING_KEY: 'k'.repeat(48), AIRLOCK_LOG_LEVEL: 'silent' }, maxBuffer: 1 << 24 }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

const day = (d: number, s = 0) => new Date(Date.UTC(2026, 10, d, 12, 0, s));
const EMAIL = 'jane.doe@example.com';

function fill(store: SqliteStore, id: string, d: number, protocol = 'postgres'): void {
  store.startSession({ id, protocol, identity: 'agent-7', groups: ['agents'], connection: protocol === 'postgres' ? 'shop' : 'box', clientAddress: '127.0.0.1:5000', startedAt: day(d) });
  store.recordOperation({ sessionId: id, seq: 1, at: day(d, 1), text: protocol === 'postgres' ? `SELECT * FROM customers WHERE email = '${EMAIL}'` : 'uptime', kind: 'read', classification: {}, decision: 'allow', maskedColumns: [], rows: 1 });
  store.recordOperation({ sessionId: id, seq: 2, at: day(d, 2), text: 'DROP TABLE customers', kind: 'ddl', classification: {}, decision: 'deny', rule: 'block-destructive-ddl', reason: 'no drops', maskedColumns: [] });
  store.recordAudit({ at: day(d, 3), kind: 'approval.outcome', subject: `airlock-${d}`, actor: 'bob', detail: { outcome: 'approved', approvers: ['bob'] } });
  store.endSession(id, day(d, 4), 'client terminated the session', { toClient: 1, fromClient: 2 });
}

function setup(t: { after(fn: () => void): void }, sinks: unknown[] = []) {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-export-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = join(dir, 'airlock.yaml');
  writeFileSync(cfg, stringify({ auth: { signingKey: { env: 'AIRLOCK_TEST_SIGNING_KEY' } }, store: { sqlite: 'audit.db' }, audit: { sinks } }));
  const db = join(dir, 'audit.db');
  return { dir, cfg, db };
}

test('`audit export` prints the journal as jsonl and as OCSF events, filters by --since and resumes after a position', async (t) => {
  const { cfg, db } = setup(t);
  const store = SqliteStore.open(db);
  fill(store, '11111111-aaaa-4000-8000-000000000001', 1);
  fill(store, '22222222-aaaa-4000-8000-000000000002', 5, 'ssh');
  store.close();

  const jsonl = await airlock(['audit', 'export', '--format', 'jsonl', '-c', cfg]);
  assert.equal(jsonl.code, 0, jsonl.stderr);
  const recs = jsonl.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(recs.length, 10);
  assert.deepEqual(recs.map((r) => r.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(recs.slice(0, 5).map((r) => r.type), ['session.start', 'operation', 'operation', 'audit', 'session.end']);
  assert.ok(!jsonl.stdout.includes(EMAIL), 'the export holds what the store holds: redacted text');

  const ocsf = await airlock(['audit', 'export', '--format', 'ocsf', '-c', cfg]);
  // biome-ignore lint/suspicious/noExplicitAny: OCSF events are deep, loosely typed JSON read field by field below
  const ev = ocsf.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
  assert.deepEqual(ev.map((e) => e.class_uid), [3002, 6005, 6005, 6003, 3002, 3002, 6003, 6003, 6003, 3002]);
  assert.deepEqual([ev[0].activity_id, ev[4].activity_id], [1, 2], 'logon, logoff');
  assert.equal(ev[0].actor.user.name, 'agent-7');
  assert.equal(ev[0].src_endpoint.ip, '127.0.0.1');
  assert.equal(ev[2].disposition, 'Blocked');
  assert.equal(ev[2].firewall_rule.name, 'block-destructive-ddl');
  assert.equal(ev[2].type_uid, 600504);
  assert.equal(ev[1].query_info.query_string.includes('customers'), true);
  assert.equal(ev[6].api.service.name, 'ssh');
  assert.equal(ev[3].actor.user.name, 'bob');
  for (const e of ev) {
    assert.equal(typeof e.time, 'number');
    assert.equal(e.metadata.product.name, 'Airlock');
    assert.equal(e.type_uid, e.class_uid * 100 + e.activity_id);
  }

  const since = await airlock(['audit', 'export', '--since', '2026-11-03', '-c', cfg]);
  assert.deepEqual(since.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { seq: number }).seq), [6, 7, 8, 9, 10]);
  const after = await airlock(['audit', 'export', '--after-seq', '8', '-c', cfg]);
  assert.deepEqual(after.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { seq: number }).seq), [9, 10]);
  const bad = await airlock(['audit', 'export', '--format', 'xml', '-c', cfg]);
  assert.equal(bad.code, 2);
});

test('a webhook sink that fails gets every record once it recovers, never holding up the store; positions survive a restart', async (t) => {
  let failing = true;
  const received: number[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      if (failing) {
        res.writeHead(503).end();
        return;
      }
      for (const l of body.trim().split('\n')) received.push((JSON.parse(l) as { metadata: { sequence: number } }).metadata.sequence);
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/ingest`;
  const sinkCfg = [{ type: 'webhook' as const, name: 'siem', url }];
  const { cfg, db, dir } = setup(t, sinkCfg);
  const store = SqliteStore.open(db);
  t.after(() => store.close());
  let sinks = startAuditSinks(db, sinkCfg, dir, 20);
  fill(store, '11111111-aaaa-4000-8000-000000000001', 1);
  store.flush();
  // The webhook is down: the store records on, healthy; the sink lags and says why.
  await waitFor(() => (sinks.status()[0].lastError ?? '').includes('503'));
  assert.equal(store.health().ok, true);
  fill(store, '22222222-aaaa-4000-8000-000000000002', 2);
  store.flush();
  assert.equal(sinks.status()[0].lag, 10);
  const lagging = await airlock(['audit', 'status', '-c', cfg]);
  assert.match(lagging.stdout, /siem \(webhook\): delivered through #0 of #10, lag 10 entries/);

  failing = false;
  await waitFor(() => sinks.status()[0].lag === 0, 20_000);
  assert.deepEqual([...new Set(received)].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  await sinks.close();
  const caughtUp = await airlock(['audit', 'status', '--json', '-c', cfg]);
  assert.deepEqual((JSON.parse(caughtUp.stdout) as { sinks: { position: number; lag: number }[] }).sinks.map((s) => [s.position, s.lag]), [[10, 0]]);

  // Restart: only what is new is sent.
  received.length = 0;
  fill(store, '33333333-aaaa-4000-8000-000000000003', 3);
  store.flush();
  sinks = startAuditSinks(db, sinkCfg, dir, 20);
  await waitFor(() => sinks.status()[0].lag === 0);
  await sinks.close();
  assert.deepEqual(received, [11, 12, 13, 14, 15]);
});

test('a file sink writes JSON lines and rotates at maxBytes', async (t) => {
  const { db, dir } = setup(t);
  const store = SqliteStore.open(db);
  t.after(() => store.close());
  for (let d = 1; d <= 4; d++) fill(store, `4444444${d}-aaaa-4000-8000-00000000000${d}`, d);
  store.flush();
  const sinks = startAuditSinks(db, [{ type: 'file', path: 'siem/audit.jsonl', format: 'jsonl', maxBytes: 2000, keep: 3 }], dir, 20);
  await waitFor(() => sinks.status()[0].lag === 0);
  fill(store, '55555555-aaaa-4000-8000-000000000005', 5);
  store.flush();
  await waitFor(() => sinks.status()[0].lag === 0);
  await sinks.close();
  assert.ok(existsSync(join(dir, 'siem/audit.jsonl.1')), 'rotated');
  const seqs = [join(dir, 'siem/audit.jsonl.1'), join(dir, 'siem/audit.jsonl')].flatMap((f) => readFileSync(f, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { seq: number }).seq));
  assert.deepEqual(seqs, Array.from({ length: 25 }, (_, i) => i + 1));
});

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}
