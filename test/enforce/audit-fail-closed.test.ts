// No audit trail, no access: when the audit store cannot persist records (here SQLite's own
// SQLITE_FULL, from max_page_count), the enforcement seam refuses new operations and new sessions
// with SQLSTATE 53100; once the store recovers, service resumes and nothing was lost.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';

let h: GatewayHarness;

before(async () => {
  h = await startGateway({ setup: 'CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);', config: () => ({ policy: { default: 'allow', rules: [] } }) });
});

after(async () => {
  await h?.close();
});

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(cond(), what);
}

test('a full audit store refuses new statements and sessions (53100); service resumes once it can record again', async () => {
  const c = await h.client();
  try {
    assert.equal((await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n, 2);
    h.store.database.pragma('max_page_count = 1');
    // The next record cannot be written: the store turns unhealthy and the seam stops new work.
    for (let i = 0; i < 200 && h.store.writable(); i++) {
      await c.query(`SELECT 'fill ${i}', '${'x'.repeat(3000)}'`).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 10));
    }
    await until(() => !h.store.writable(), 'the store reports it cannot record');
    await assert.rejects(c.query('SELECT count(*)::int AS n FROM t'), (e: pg.DatabaseError) => e.code === '53100' && /no audit trail, no access/.test(e.message));
    await assert.rejects(h.client(), (e: pg.DatabaseError) => e.code === '53100');
    h.store.database.pragma('max_page_count = 1073741823');
    await until(() => h.store.writable(), 'the store recovers');
    assert.equal((await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n, 2);
  } finally {
    await c.end();
  }
  await until(() => h.store.health().pending === 0, 'everything accepted was written');
  const ops = h.store.listSessions().flatMap((x) => h.store.getSession(x.id)?.operations ?? []);
  assert.ok(ops.some((o) => o.text.startsWith("SELECT 'fill 0'")), 'the record written during the outage was kept and persisted later');
  assert.ok(ops.some((o) => o.rule === 'audit-unavailable'), 'the refusal itself is recorded once the store recovers');
});
