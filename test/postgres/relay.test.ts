// The protocol relay: extended protocol, pipelining, COPY both ways, cancel, asynchronous
// messages, large values and independent sessions, all through the gateway to a real PostgreSQL.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { WireClient, cancelRequest, sendRaw, serialize } from '../support/pgwire.ts';

let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    setup: `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
            INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g;
            CREATE TABLE imported (id int, name text);`,
  });
});

after(async () => {
  await h?.close();
});

test('extended protocol: parameterized and named prepared statements', async () => {
  const c = await h.client();
  try {
    const r = await c.query('SELECT id, name FROM items WHERE id = $1', [7]);
    assert.deepEqual(r.rows, [{ id: 7, name: 'item 7' }]);
    for (const id of [1, 2, 3]) {
      const n = await c.query({ name: 'by-id', text: 'SELECT name FROM items WHERE id = $1', values: [id] });
      assert.deepEqual(n.rows, [{ name: `item ${id}` }]);
    }
    const bin = await c.query({ text: 'SELECT $1::bytea AS b', values: [Buffer.from([0, 1, 2, 255])] });
    assert.deepEqual(bin.rows[0].b, Buffer.from([0, 1, 2, 255]));
  } finally {
    await c.end();
  }
});

test('pipelined queries (node-postgres pipeline mode) come back in order', async () => {
  const c = new pg.Client({ host: h.gateway.host, port: h.gateway.port, user: 'alice', password: await h.token('alice'), database: 'app', pipeline: true } as pg.ClientConfig);
  await c.connect();
  try {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => c.query('SELECT $1::int * 2 AS v', [i])));
    assert.deepEqual(results.map((r) => r.rows[0].v), Array.from({ length: 20 }, (_, i) => i * 2));
  } finally {
    await c.end();
  }
});

test('a whole pipeline written in one packet is relayed and answered in order', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    const msgs: Buffer[] = [];
    for (let i = 1; i <= 3; i++) {
      msgs.push(serialize.parse({ text: `SELECT name FROM items WHERE id = ${i}` }), serialize.bind({}), serialize.describe({ type: 'P' }), serialize.execute({}));
    }
    msgs.push(serialize.sync());
    const out = await w.roundtrip(msgs);
    assert.deepEqual(
      out.map((m) => m.name),
      ['parseComplete', 'bindComplete', 'rowDescription', 'dataRow', 'commandComplete', 'parseComplete', 'bindComplete', 'rowDescription', 'dataRow', 'commandComplete', 'parseComplete', 'bindComplete', 'rowDescription', 'dataRow', 'commandComplete', 'readyForQuery'],
    );
    assert.deepEqual(out.filter((m) => m.name === 'dataRow').map((m) => String((m.fields as string[])[0])), ['item 1', 'item 2', 'item 3']);
  } finally {
    w.end();
  }
});

test('COPY FROM STDIN and COPY TO STDOUT through psql \\copy', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-copy-'));
  try {
    const src = join(dir, 'in.tsv');
    writeFileSync(src, Array.from({ length: 1000 }, (_, i) => `${i}\tname ${i}`).join('\n') + '\n');
    const load = await h.psql(`\\copy imported FROM '${src}'\nSELECT count(*), sum(id) FROM imported;\n`);
    assert.equal(load.code, 0, load.stderr);
    assert.equal(load.stdout, 'COPY 1000\n1000|499500\n');
    const dst = join(dir, 'out.tsv');
    const dump = await h.psql(`\\copy (SELECT * FROM imported ORDER BY id) TO '${dst}'\n`);
    assert.equal(dump.code, 0, dump.stderr);
    assert.equal(readFileSync(dst, 'utf8'), readFileSync(src, 'utf8'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a failed COPY FROM STDIN (bad data) is reported and the session goes on', async () => {
  const r = await h.psql("COPY imported FROM STDIN;\nnot-a-number\tx\n\\.\nSELECT 'still here';\n");
  assert.match(r.stderr, /invalid input syntax for type integer/);
  assert.match(r.stdout, /still here/);
});

test('cancel: a CancelRequest with the key the gateway gave stops the statement with 57014', async () => {
  const c = await h.client();
  try {
    const key = c as unknown as { processID: number; secretKey: number };
    const upstreamPid = (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    assert.notEqual(key.processID, upstreamPid, 'the client must not see the upstream backend pid');
    const started = Date.now();
    const running = c.query('SELECT pg_sleep(30)');
    await new Promise((r) => setTimeout(r, 300));
    await sendRaw(h.gateway.port, cancelRequest(key.processID, key.secretKey));
    await assert.rejects(running, (e: pg.DatabaseError) => e.code === '57014');
    assert.ok(Date.now() - started < 10_000);
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
  } finally {
    await c.end();
  }
});

test('cancel: a wrong secret is ignored silently', async () => {
  const c = await h.client();
  try {
    const key = c as unknown as { processID: number; secretKey: number };
    const running = c.query('SELECT pg_sleep(1.5), 7 AS v');
    await new Promise((r) => setTimeout(r, 200));
    await sendRaw(h.gateway.port, cancelRequest(key.processID, (key.secretKey ^ 0x5a5a5a5a) | 0));
    await sendRaw(h.gateway.port, cancelRequest(12345, 678));
    assert.equal((await running).rows[0].v, 7);
  } finally {
    await c.end();
  }
});

test('notices and LISTEN/NOTIFY are relayed', async () => {
  const listener = await h.client();
  const sender = await h.client();
  try {
    const notices: string[] = [];
    listener.on('notice', (n) => notices.push(n.message ?? ''));
    await listener.query("DO $$BEGIN RAISE NOTICE 'hello from upstream'; END$$");
    assert.deepEqual(notices, ['hello from upstream']);
    const got = new Promise<string>((resolve) => listener.on('notification', (n) => resolve(n.payload ?? '')));
    await listener.query('LISTEN airlock_test');
    await sender.query("NOTIFY airlock_test, 'ping'");
    assert.equal(await got, 'ping');
  } finally {
    await listener.end();
    await sender.end();
  }
});

test('values far larger than a TCP chunk survive both directions', async () => {
  const c = await h.client();
  try {
    const big = 'x'.repeat(8 * 1024 * 1024) + 'end';
    const r = await c.query('SELECT length($1::text) AS n, $1::text AS v', [big]);
    assert.equal(r.rows[0].n, big.length);
    assert.equal(r.rows[0].v, big);
    const many = await c.query('SELECT g, repeat(md5(g::text), 20) AS pad FROM generate_series(1, 20000) g');
    assert.equal(many.rows.length, 20000);
    assert.equal(many.rows[19999].g, 20000);
  } finally {
    await c.end();
  }
});

test('errors from the upstream are relayed and the session stays usable', async () => {
  const r = await h.psql('SELECT * FROM no_such_table;\nSELECT 5;\n');
  assert.match(r.stderr, /relation "no_such_table" does not exist/);
  assert.equal(r.stdout, '5\n');
});

test('one slow session does not block another', async () => {
  const slow = await h.client();
  const fast = await h.client();
  try {
    const sleeping = slow.query('SELECT pg_sleep(2)');
    const t0 = Date.now();
    for (let i = 0; i < 10; i++) await fast.query('SELECT 1');
    assert.ok(Date.now() - t0 < 1500, 'fast session was blocked');
    await sleeping;
  } finally {
    await slow.end();
    await fast.end();
  }
});

test('sessions and their statements are recorded', async () => {
  const r = await h.psql("SELECT count(*) FROM items;\nSELECT 'recorded-marker';\n");
  assert.equal(r.code, 0);
  await new Promise((res) => setTimeout(res, 100));
  const sessions = h.store.listSessions({ identity: 'alice' });
  const found = sessions
    .map((s) => h.store.getSession(s.id)!)
    .find((d) => d.operations.some((o) => o.text.includes('recorded-marker')));
  assert.ok(found, 'session with the marker statement not found');
  assert.equal(found.session.connection, 'app');
  assert.ok(found.session.endedAt, 'session end recorded');
  const count = found.operations.find((o) => o.text.startsWith('SELECT count(*)'))!;
  assert.equal(count.decision, 'allow');
  assert.equal(count.rows, 1);
  assert.ok((count.bytes ?? 0) > 0);
  assert.deepEqual(found.operations.map((o) => o.seq), [1, 2]);
});

test('backpressure: a client that stops reading stalls the upstream instead of filling gateway memory', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    w.socket.pause();
    w.send(serialize.query("SELECT repeat('x', 1000) FROM generate_series(1, 300000) /* backpressure-marker */"));
    let waitEvent = '';
    for (let i = 0; i < 50 && waitEvent !== 'ClientWrite'; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const r = await h.pg.query("SELECT wait_event FROM pg_stat_activity WHERE query LIKE '%backpressure-marker%' AND pid <> pg_backend_pid()");
      waitEvent = r.rows[0]?.wait_event ?? '';
    }
    assert.equal(waitEvent, 'ClientWrite', 'the upstream backend should be blocked writing to the gateway');
    await new Promise((r) => setTimeout(r, 1500));
    const handed = Math.max(...[...h.gateway.sessions()].map((s) => s.stats().bytesToClient));
    assert.ok(handed < 32 * 1024 * 1024, `the gateway handed ${handed} bytes to a client that reads nothing`);
  } finally {
    w.socket.destroy();
  }
});

test('close() ends live sessions with 57P01 and stops listening', async () => {
  const g = await startGateway({ pg: h.pg });
  const c = await g.client();
  const ended = new Promise<pg.DatabaseError>((resolve) => c.on('error', (e) => resolve(e as pg.DatabaseError)));
  await g.close();
  const e = await ended;
  assert.equal(e.code, '57P01');
  await assert.rejects(g.client(), /ECONNREFUSED/);
});
