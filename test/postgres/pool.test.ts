// Upstream pooling (connection `pool:`), transaction mode, through the gateway to a real
// PostgreSQL: many clients share few backends and get correct results; session state pins (and
// never leaks to another client); protocol-level prepared statements survive backend changes;
// cancel hits only the query it was meant for; holds, masking and audit keep working.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { ManualApprover } from '../support/manual-approver.ts';
import { startGateway, pgError, type GatewayHarness } from '../support/gateway.ts';
import { WireClient, cancelRequest, sendRaw, serialize } from '../support/pgwire.ts';
import type { PooledUpstream } from '../../gateway/postgres/upstream-lease.ts';
import type { Session } from '../../gateway/postgres/session.ts';

const SIZE = 3;
const approver = new ManualApprover('#db-approvals');
let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    approver,
    setup: `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
            INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;
            CREATE TABLE customers (id int, email text);
            INSERT INTO customers VALUES (1, 'ann@example.com'), (2, 'bob@example.org');
            CREATE TABLE accounts (id int PRIMARY KEY, owner text);
            INSERT INTO accounts VALUES (1, 'ann'), (2, 'bob'), (3, 'cat');
            DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pool_other') THEN CREATE ROLE pool_other NOLOGIN; END IF; END $$;
            GRANT pool_other TO CURRENT_USER;
            CREATE OR REPLACE FUNCTION quiet_state() RETURNS text LANGUAGE plpgsql AS $f$
              BEGIN
                EXECUTE 'SE' || 'T airlock.quiet = ''leaked''';
                EXECUTE 'CREATE TEMP TABLE IF NOT EXISTS quiet_tmp (v int)';
                RETURN current_setting('airlock.quiet');
              END $f$;`,
    config: (up) => ({
      connections: [
        {
          name: 'app',
          type: 'postgres',
          host: up.host,
          port: up.port,
          database: 'postgres',
          user: up.user,
          password: { file: 'upstream.pass' },
          tls: 'prefer',
          allowSuperuser: true,
          pool: { mode: 'transaction', size: SIZE, idleTimeout: '1m' },
        },
      ],
      masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.customers.email', strategy: 'redact' }] },
      policy: {
        default: 'allow',
        rules: [
          { name: 'no-drop', match: { statements: ['DropStmt'] }, action: 'deny', reason: 'no dropping' },
          { name: 'approve-deletes', match: { statements: ['DeleteStmt'] }, action: 'review', reason: 'deletes need review', review: { approvers: ['dba'], timeout: '10m' } },
          { name: 'hold-commit-updates', match: { statements: ['UpdateStmt'], tables: ['public.accounts'] }, action: 'review', reason: 'updates run held', review: { approvers: ['dba'], timeout: '10m', preview: 'hold-commit', holdInTransaction: true } },
        ],
      },
    }),
  });
});

after(async () => {
  await h?.close();
});

/** Backends the pool holds on the upstream right now. */
async function poolBackends(): Promise<number> {
  const r = await h.pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'airlock-pool (app)'");
  return r.rows[0].n;
}

function leaseOf(s: Session): PooledUpstream {
  return (s as unknown as { upstream: PooledUpstream }).upstream;
}

function sessionOf(marker: string): Session {
  for (const s of h.gateway.sessions()) if (s.identity.name === marker) return s;
  throw new Error('no session');
}

test('20 clients share a pool of 3 backends: every result is right and the upstream never sees more than 3 backends', async () => {
  const clients = await Promise.all(Array.from({ length: 20 }, () => h.client()));
  let most = 0;
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      most = Math.max(most, await poolBackends());
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  try {
    await Promise.all(
      clients.map(async (c, i) => {
        for (let k = 0; k < 10; k++) {
          const id = ((i * 10 + k) % 100) + 1;
          const r = await c.query('SELECT name, $2::int AS client FROM items WHERE id = $1', [id, i]);
          assert.deepEqual(r.rows, [{ name: `item ${id}`, client: i }]);
          const s = await c.query(`SELECT ${i} AS client, count(*)::int AS n FROM items WHERE id <= ${id}`);
          assert.deepEqual(s.rows, [{ client: i, n: id }]);
        }
        // A transaction keeps one backend from BEGIN to COMMIT.
        await c.query('BEGIN');
        const a = await c.query('SELECT pg_backend_pid() AS pid');
        await c.query('SELECT pg_sleep(0.01)');
        const b = await c.query('SELECT pg_backend_pid() AS pid');
        await c.query('COMMIT');
        assert.equal(a.rows[0].pid, b.rows[0].pid);
      }),
    );
  } finally {
    watching = false;
    await watcher;
    await Promise.all(clients.map((c) => c.end()));
  }
  assert.ok(most <= SIZE, `at most ${SIZE} backends, saw ${most}`);
  assert.ok(most >= 1);
  assert.ok((await poolBackends()) <= SIZE);
});

test('SET (not LOCAL) pins the client to its backend; another client never sees the setting', async () => {
  const a = await h.client();
  const b = await h.client();
  try {
    await a.query("SET application_name = 'client-a-setting'");
    await a.query("SELECT set_config('airlock.test', 'from-a', false)");
    // A keeps its own setting across transactions...
    for (let i = 0; i < 5; i++) {
      const r = await a.query("SELECT current_setting('application_name') AS app, current_setting('airlock.test', true) AS t");
      assert.deepEqual(r.rows[0], { app: 'client-a-setting', t: 'from-a' });
    }
    // ...and B, on the other backends, never sees it.
    for (let i = 0; i < 10; i++) {
      const r = await b.query("SELECT current_setting('application_name') AS app, current_setting('airlock.test', true) AS t");
      assert.notEqual(r.rows[0].app, 'client-a-setting');
      assert.ok(r.rows[0].t === null || r.rows[0].t === '', JSON.stringify(r.rows[0]));
    }
  } finally {
    await a.end();
    await b.end();
  }
  // After A ended, its backend was reset before reuse: nobody inherits the setting.
  const cs = await Promise.all(Array.from({ length: SIZE + 1 }, () => h.client()));
  try {
    for (const c of cs) {
      const r = await c.query("SELECT current_setting('application_name') AS app, current_setting('airlock.test', true) AS t");
      assert.notEqual(r.rows[0].app, 'client-a-setting');
      assert.ok(r.rows[0].t === null || r.rows[0].t === '');
    }
  } finally {
    await Promise.all(cs.map((c) => c.end()));
  }
});

/** Runs `sql` on every backend of the pool at once (each client holds one inside a transaction). */
async function onEveryBackend(sql: string): Promise<Array<Record<string, unknown>>> {
  const cs = await Promise.all(Array.from({ length: SIZE }, () => h.client()));
  try {
    await Promise.all(cs.map((c) => c.query('BEGIN')));
    const rows = await Promise.all(cs.map(async (c) => (await c.query(sql)).rows[0] as Record<string, unknown>));
    assert.equal(new Set(rows.map((r) => r.pid)).size, SIZE, 'every backend was checked');
    await Promise.all(cs.map((c) => c.query('COMMIT')));
    return rows;
  } finally {
    await Promise.all(cs.map((c) => c.end()));
  }
}

test('SET ROLE pins; no other client ever runs under that role, during or after the session', async () => {
  const a = await h.client();
  try {
    await a.query('SET ROLE pool_other');
    assert.equal((await a.query('SELECT current_user AS u')).rows[0].u, 'pool_other');
    assert.equal((await a.query('SELECT current_user AS u')).rows[0].u, 'pool_other', 'still, in the next transaction');
  } finally {
    await a.end();
  }
  const rows = await onEveryBackend('SELECT current_user AS u, pg_backend_pid() AS pid');
  for (const r of rows) assert.equal(r.u, h.pg.user);
});

test('state created where Airlock cannot see it (inside a function) is reset before anyone else gets the backend', async () => {
  const a = await h.client();
  try {
    assert.equal((await a.query('SELECT quiet_state() AS v')).rows[0].v, 'leaked');
  } finally {
    await a.end();
  }
  const rows = await onEveryBackend("SELECT current_setting('airlock.quiet', true) AS v, to_regclass('pg_temp.quiet_tmp') AS t, pg_backend_pid() AS pid");
  for (const r of rows) {
    assert.ok(r.v === null || r.v === '', JSON.stringify(r));
    assert.equal(r.t, null);
  }
});

/** A raw client whose startup packet asks for its own TimeZone (a startup setting forwarded upstream). */
async function loginWithTimeZone(tz: string): Promise<WireClient> {
  const w = await WireClient.open(h.gateway.port);
  w.send(serialize.startup({ user: 'alice', database: 'app', TimeZone: tz }));
  await w.until((m) => m.name === 'authenticationCleartextPassword');
  w.send(serialize.password(await h.token('alice')));
  await w.until((m) => m.name === 'readyForQuery');
  return w;
}

test('clients asking for other startup settings get pools of their own, and all of them together stay within size', async () => {
  const zones = ['UTC', 'Europe/Paris', 'Asia/Tokyo', 'America/New_York', 'Australia/Sydney'];
  const ws: WireClient[] = [];
  try {
    for (const tz of zones) {
      const w = await loginWithTimeZone(tz);
      ws.push(w);
      const r = await w.roundtrip([serialize.query('SHOW TimeZone')]);
      assert.equal(String((r.find((m) => m.name === 'dataRow')!.fields as string[])[0]), tz);
      assert.ok((await poolBackends()) <= SIZE, `at most ${SIZE} backends across every pool of the connection`);
    }
    // Each still gets its own setting, the slots moving between pools as needed.
    for (const [i, w] of ws.entries()) {
      const r = await w.roundtrip([serialize.query('SHOW TimeZone')]);
      assert.equal(String((r.find((m) => m.name === 'dataRow')!.fields as string[])[0]), zones[i]);
    }
    assert.ok((await poolBackends()) <= SIZE);
  } finally {
    for (const w of ws) w.end();
  }
});

test('a brand-new backend is reset after its first client too', async () => {
  // A fresh gateway with a pool of 2: A holds the first backend in a transaction, so B's
  // statement opens the second, and C can only get that one after B.
  const g = await startGateway({
    pg: h.pg,
    config: (up) => ({
      connections: [{ name: 'two', type: 'postgres', host: up.host, port: up.port, database: 'postgres', user: up.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true, pool: { mode: 'transaction', size: 2, idleTimeout: '1m' } }],
    }),
  });
  try {
    // One after the other: only the first connects a backend for its startup messages.
    const a = await g.client({ dbname: 'two' });
    const b = await g.client({ dbname: 'two' });
    const c = await g.client({ dbname: 'two' });
    try {
      await a.query('BEGIN');
      const pidA = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      const rb = await b.query('SELECT quiet_state() AS v, pg_backend_pid() AS pid');
      assert.equal(rb.rows[0].v, 'leaked');
      assert.notEqual(rb.rows[0].pid, pidA);
      const rc = await c.query("SELECT current_setting('airlock.quiet', true) AS v, to_regclass('pg_temp.quiet_tmp') AS t, pg_backend_pid() AS pid");
      assert.equal(rc.rows[0].pid, rb.rows[0].pid, 'the backend B used first');
      assert.ok(rc.rows[0].v === null || rc.rows[0].v === '', JSON.stringify(rc.rows[0]));
      assert.equal(rc.rows[0].t, null);
      await a.query('COMMIT');
    } finally {
      await Promise.all([a.end(), b.end(), c.end()]);
    }
  } finally {
    await g.close();
  }
});

test('SET LOCAL does not pin: the backend goes back after the transaction', async () => {
  const c = await h.client({ user: 'agent-1' });
  try {
    await c.query('BEGIN');
    await c.query("SET LOCAL statement_timeout = '5s'");
    await c.query('COMMIT');
    const lease = leaseOf(sessionOf('agent-1'));
    assert.equal(lease.pinned, undefined);
    assert.equal(lease.backendPid, undefined, 'no backend held between transactions');
  } finally {
    await c.end();
  }
});

test('a denied statement is refused as without pooling, and does not pin', async () => {
  const c = await h.client({ user: 'agent-1' });
  try {
    const e = await pgError(c.query('DROP TABLE items'));
    assert.equal(e.code, '42501');
    const x = await pgError(c.query({ text: 'DROP TABLE items', values: [] }));
    assert.equal(x.code, '42501');
    assert.equal((await c.query('SELECT count(*)::int AS n FROM items')).rows[0].n, 100);
    const lease = leaseOf(sessionOf('agent-1'));
    assert.equal(lease.pinned, undefined);
    assert.equal(lease.backendPid, undefined);
  } finally {
    await c.end();
  }
});

test('LISTEN, temporary tables and session advisory locks pin, and stay private to their client', async () => {
  const a = await h.client();
  const b = await h.client();
  try {
    await a.query('CREATE TEMP TABLE scratch (v int)');
    await a.query('INSERT INTO scratch VALUES (42)');
    assert.deepEqual((await a.query('SELECT v FROM scratch')).rows, [{ v: 42 }]);
    const e = await pgError(b.query('SELECT v FROM scratch'));
    assert.equal(e.code, '42P01', 'B cannot see A\'s temporary table');

    await b.query('SELECT pg_advisory_lock(4242)');
    const got = await b.query('SELECT pg_try_advisory_lock(4242) AS ok');
    assert.equal(got.rows[0].ok, true, 're-entrant on B\'s own (pinned) backend');
    const other = await a.query('SELECT pg_try_advisory_lock(4242) AS ok');
    assert.equal(other.rows[0].ok, false, 'A does not share B\'s lock');

    const c = await h.client({ user: 'agent-1' });
    try {
      const heard = new Promise<string>((resolve) => c.on('notification', (n) => resolve(n.channel)));
      await c.query('LISTEN pool_events');
      await h.pg.query("NOTIFY pool_events, 'hello'");
      assert.equal(await heard, 'pool_events', 'the notification reached the pinned client (its payload is scrubbed: masking is on)');
      assert.equal(leaseOf(sessionOf('agent-1')).pinned, 'LISTEN');
    } finally {
      await c.end();
    }
  } finally {
    await a.end();
    await b.end();
  }
  // B's session ended: its backend was reset, so the lock is free for everyone.
  const r = await h.pg.query("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242");
  assert.equal(r.rows[0].n, 0);
});

test('named prepared statements (node-postgres `name:`) work across transactions on changing backends', async () => {
  const c = await h.client({ user: 'agent-1' });
  const busy = await Promise.all(Array.from({ length: SIZE }, () => h.client()));
  try {
    const pids = new Set<number>();
    for (let i = 1; i <= 12; i++) {
      // Others keep the pool busy so this client's transactions land on different backends.
      const load = busy.map((b, k) => b.query('SELECT pg_sleep(0.005), $1::int AS k', [k]));
      const r = await c.query({ name: 'item-by-id', text: 'SELECT name, pg_backend_pid() AS pid FROM items WHERE id = $1', values: [i] });
      assert.equal(r.rows[0].name, `item ${i}`);
      pids.add(r.rows[0].pid);
      await Promise.all(load);
    }
    const lease = leaseOf(sessionOf('agent-1'));
    assert.equal(lease.pinned, undefined, 'protocol-level statements do not pin');
    assert.ok(lease.leases >= 12, `one lease per transaction (${lease.leases})`);
    assert.ok(pids.size >= 2, `the statement ran on ${pids.size} different backends`);
  } finally {
    await c.end();
    await Promise.all(busy.map((b) => b.end()));
  }
});

test('protocol level: a named and the unnamed statement are replayed in later transactions; redefining a name still fails with 42P05', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    const one = await w.roundtrip([serialize.parse({ name: 'by_id', text: 'SELECT name FROM items WHERE id = $1', types: [23] }), serialize.parse({ text: 'SELECT 7 AS unnamed' }), serialize.sync()]);
    assert.deepEqual(one.map((m) => m.name), ['parseComplete', 'parseComplete', 'readyForQuery']);
    // Each transaction below runs on a backend leased afresh and reset (DISCARD ALL): neither
    // statement exists there until Airlock replays it, and its ParseComplete is not relayed.
    for (const id of [5, 6]) {
      const r = await w.roundtrip([serialize.bind({ statement: 'by_id', values: [String(id)] }), serialize.execute({}), serialize.sync()]);
      assert.deepEqual(r.map((m) => m.name), ['bindComplete', 'dataRow', 'commandComplete', 'readyForQuery']);
      assert.equal(String((r[1].fields as string[])[0]), `item ${id}`);
    }
    const u = await w.roundtrip([serialize.bind({}), serialize.execute({}), serialize.sync()]);
    assert.deepEqual(u.map((m) => m.name), ['bindComplete', 'dataRow', 'commandComplete', 'readyForQuery']);
    assert.equal(String((u[1].fields as string[])[0]), '7');
    const dup = await w.roundtrip([serialize.parse({ name: 'by_id', text: 'SELECT 1' }), serialize.sync()]);
    assert.equal(dup[0].name, 'error');
    assert.equal(dup[0].code, '42P05');
    const still = await w.roundtrip([serialize.bind({ statement: 'by_id', values: ['9'] }), serialize.execute({}), serialize.sync()]);
    assert.equal(String((still[1].fields as string[])[0]), 'item 9', 'the name still means the original statement');
    const closed = await w.roundtrip([serialize.close({ type: 'S', name: 'by_id' }), serialize.sync()]);
    assert.deepEqual(closed.map((m) => m.name), ['closeComplete', 'readyForQuery']);
    const gone = await w.roundtrip([serialize.parse({ name: 'by_id', text: 'SELECT 2' }), serialize.sync()]);
    assert.deepEqual(gone.map((m) => m.name), ['parseComplete', 'readyForQuery'], 'closed names can be reused');
  } finally {
    w.end();
  }
});

test('a DO block pins, and its backend is closed at the end instead of being reused', async () => {
  const c = await h.client();
  let pid: number;
  try {
    await c.query("DO $$ BEGIN PERFORM 1; END $$");
    pid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    assert.equal((await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid, pid, 'pinned');
  } finally {
    await c.end();
  }
  for (let i = 0; i < 100; i++) {
    const r = await h.pg.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${Number(pid)}`);
    if (r.rows[0].n === 0) return;
    await new Promise((res) => setTimeout(res, 20));
  }
  assert.fail('the backend of a session that ran a DO block was kept');
});

test('cancel stops the right query and never another client\'s', async () => {
  const a = await h.client({ application_name: 'cancel-a' });
  const b = await h.client({ application_name: 'cancel-b' });
  try {
    // A CancelRequest with A's key while A is idle (holding no backend) touches nobody, even
    // though B runs on a backend A used a moment ago.
    await a.query('SELECT 1');
    const early = b.query("SELECT pg_sleep(0.3), 'early-marker' AS v");
    await new Promise((res) => setTimeout(res, 50));
    const ka = a as unknown as { processID: number; secretKey: number };
    await sendRaw(h.gateway.port, cancelRequest(ka.processID, ka.secretKey));
    assert.equal((await early).rows[0].v, 'early-marker');
    const slowA = a.query("SELECT pg_sleep(30), 'cancel-marker-a'");
    const slowB = b.query("SELECT pg_sleep(1.5), 'cancel-marker-b' AS v");
    for (let i = 0; i < 100; i++) {
      const r = await h.pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%cancel-marker-%' AND state = 'active' AND pid <> pg_backend_pid()");
      if (r.rows[0].n === 2) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    // node-postgres sends a CancelRequest with the key the gateway gave A.
    const canceller = new pg.Client({ host: h.gateway.host, port: h.gateway.port, user: 'alice', database: 'app', password: await h.token('alice') });
    (canceller as unknown as { cancel(c: pg.Client, q: unknown): void }).cancel(a, (a as unknown as { activeQuery: unknown }).activeQuery);
    const e = await pgError(slowA);
    assert.equal(e.code, '57014');
    const rb = await slowB;
    assert.equal(rb.rows[0].v, 'cancel-marker-b', 'B\'s query was not cancelled');
    // A's session is usable afterwards and its next statement is not hit by a late cancel.
    assert.deepEqual((await a.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
  } finally {
    await a.end();
    await b.end();
  }
});

test('a held statement still holds in pooled mode and resumes on approval', async () => {
  const c = await h.client();
  try {
    const running = c.query('DELETE FROM accounts WHERE id = 1');
    const held = await approver.next();
    assert.equal(held.req.operation.text, 'DELETE FROM accounts WHERE id = 1');
    assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 3, 'nothing ran before approval');
    held.resolve({ outcome: 'approved', requestId: held.id, approvers: ['carol'], viaGrant: false });
    const r = await running;
    assert.equal(r.rowCount, 1);
    assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM accounts')).rows[0].n, 2);
  } finally {
    await c.end();
  }
});

test('hold-commit keeps its transaction (and so its backend) for the whole hold; other clients use the rest of the pool; approve commits', async () => {
  const c = await h.client({ user: 'agent-1' });
  try {
    const running = c.query("UPDATE accounts SET owner = 'held' WHERE id = 2");
    const held = await approver.next();
    assert.equal(held.req.binding?.preview?.kind, 'hold-commit');
    const lease = leaseOf(sessionOf('agent-1'));
    const pid = lease.backendPid;
    assert.ok(pid, 'the held transaction keeps its backend');
    const st = await h.pg.query(`SELECT state FROM pg_stat_activity WHERE pid = ${Number(pid)}`);
    assert.equal(st.rows[0].state, 'idle in transaction');
    // The other backends still serve everyone else.
    const others = await Promise.all(Array.from({ length: 5 }, () => h.client()));
    try {
      for (const o of others) assert.equal((await o.query("SELECT owner FROM accounts WHERE id = 3")).rows[0].owner, 'cat');
    } finally {
      await Promise.all(others.map((o) => o.end()));
    }
    assert.equal(lease.backendPid, pid);
    held.resolve({ outcome: 'approved', requestId: held.id, approvers: ['carol'], viaGrant: false });
    assert.equal((await running).rowCount, 1);
    assert.equal((await h.pg.query('SELECT owner FROM accounts WHERE id = 2')).rows[0].owner, 'held');
  } finally {
    await c.end();
  }
});

test('a statement held inside a transaction (holdInTransaction) keeps the backend and resumes on it', async () => {
  const c = await h.client({ user: 'agent-1' });
  try {
    await c.query('BEGIN');
    const before = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const running = c.query("UPDATE accounts SET owner = 'in-tx' WHERE id = 3");
    const held = await approver.next();
    assert.equal(leaseOf(sessionOf('agent-1')).backendPid, before);
    held.resolve({ outcome: 'approved', requestId: held.id, approvers: ['carol'], viaGrant: false });
    assert.equal((await running).rowCount, 1);
    assert.equal((await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid, before);
    await c.query('COMMIT');
    assert.equal((await h.pg.query('SELECT owner FROM accounts WHERE id = 3')).rows[0].owner, 'in-tx');
  } finally {
    await c.end();
  }
});

test('masking still applies to pooled sessions (simple and extended protocol)', async () => {
  const c = await h.client();
  try {
    const s = await c.query('SELECT id, email FROM customers ORDER BY id');
    assert.doesNotMatch(JSON.stringify(s.rows), /@example/);
    const x = await c.query('SELECT email FROM customers WHERE id = $1', [2]);
    assert.doesNotMatch(JSON.stringify(x.rows), /bob@example\.org/);
  } finally {
    await c.end();
  }
});

test('every pooled statement is audited under its own identity', async () => {
  const c = await h.client({ user: 'agent-1' });
  try {
    await c.query("SELECT 'pool-audit-marker' AS m");
  } finally {
    await c.end();
  }
  await new Promise((r) => setTimeout(r, 100));
  const found = h.store
    .listSessions({ limit: 50 })
    .map((s) => h.store.getSession(s.id)!)
    .find((d) => d.operations.some((o) => o.text.includes('pool-audit-marker')));
  assert.ok(found, 'recorded');
  assert.equal(found.session.identity, 'agent-1');
});

test('session mode: one backend per client session, reset and reused after it; a client that waits too long gets a clear error', async () => {
  const s = await startGateway({
    pg: h.pg,
    config: (up) => ({
      connections: [
        { name: 'sess', type: 'postgres', host: up.host, port: up.port, database: 'postgres', user: up.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true, pool: { mode: 'session', size: 2, idleTimeout: '1m', queueTimeout: '300ms' } },
      ],
    }),
  });
  const count = async () => (await h.pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'airlock-pool (sess)'")).rows[0].n as number;
  try {
    const a = await s.client({ dbname: 'sess' });
    const b = await s.client({ dbname: 'sess' });
    await a.query("SET application_name = 'kept-by-a'");
    const pidA = (await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    await b.query('SELECT 1');
    assert.equal((await a.query('SELECT pg_backend_pid() AS pid')).rows[0].pid, pidA, 'same backend for the whole session');
    assert.equal((await a.query("SELECT current_setting('application_name') AS v")).rows[0].v, 'kept-by-a');
    const c = await s.client({ dbname: 'sess' });
    c.on('error', () => {}); // the session ends after the error
    const e = await pgError(c.query('SELECT 1'));
    assert.match(e.message, /no upstream backend became free within 300 ms .*pool\.queueTimeout/);
    await a.end();
    const d = await s.client({ dbname: 'sess' });
    try {
      const r = await d.query("SELECT pg_backend_pid() AS pid, current_setting('application_name') AS v");
      assert.equal(r.rows[0].pid, pidA, 'A\'s backend was reused');
      assert.notEqual(r.rows[0].v, 'kept-by-a', 'after DISCARD ALL');
      assert.ok((await count()) <= 2);
    } finally {
      await d.end();
      await b.end();
    }
  } finally {
    await s.close();
  }
});
