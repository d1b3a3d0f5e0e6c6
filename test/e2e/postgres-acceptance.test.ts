// The PostgreSQL gateway's acceptance list, as an agent would live it: the real psql client, a real
// PostgreSQL, the built-in rules, and at the end `airlock sessions show` (the real CLI) telling an
// auditor what happened.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { SignJWT } from 'jose';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';

let h: GatewayHarness;
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;

before(async () => {
  h = await startGateway({
    setup: `CREATE TABLE customers (id int PRIMARY KEY, name text, email text, card text);
            INSERT INTO customers VALUES (1, 'Ann', 'ann@example.com', '4111 1111 1111 1111'), (2, 'Bob', 'bob@example.org', '5555555555554444');
            CREATE TABLE orders (id int PRIMARY KEY, customer_id int, amount int);
            INSERT INTO orders SELECT g, 1 + g % 2, g * 10 FROM generate_series(1, 500) g;`,
    config: () => ({
      masking: {
        hashKey: { file: 'hash.key' },
        columns: [
          { column: 'public.customers.email', strategy: 'redact' },
          { column: 'public.customers.card', strategy: 'partial' },
        ],
        detectors: [{ detector: 'email', strategy: 'redact' }],
      },
      policy: {
        builtins: ['block-destructive-ddl', 'block-unbounded-writes', 'block-copy-program', 'block-server-file-access', 'block-role-changes'],
        rules: [
          { name: 'orders-export-limit', match: { tables: ['public.orders'] }, action: 'allow', limits: { maxRowsPerStatement: 100 } },
          { name: 'no-copy-of-orders', match: { tables: ['public.orders'], copy: ['to-stdout'] }, action: 'deny', reason: 'orders are not exported in bulk' },
        ],
      },
    }),
  });
});

after(async () => {
  await h?.close();
});

function sessionsShow(): Promise<string> {
  return (async () => {
    const ids = h.store.listSessions({ identity: 'alice', limit: 100 }).map((s) => s.id);
    let out = '';
    for (const id of ids) out += (await promisify(execFile)(process.execPath, [bin, 'sessions', 'show', id, '--config', h.loaded.file])).stdout;
    return out;
  })();
}

test('masked emails and cards in SELECT *, in joins and under aliases', async () => {
  const r = await h.psql(`SELECT * FROM customers ORDER BY id;
SELECT c.email AS contact, c.card AS pan, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id ORDER BY o.id LIMIT 2;
SELECT lower(email) FROM customers ORDER BY id;`);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout, /ann@example\.com|bob@example\.org|4111 1111 1111 1111|5555555555554444/);
  assert.match(r.stdout, /^1\|Ann\|\[redacted\]\|\*{4} \*{4} \*{4} 1111$/m);
  assert.match(r.stdout, /^\[redacted\]\|\*{12}4444\|10$/m, 'join + alias still masked by column');
  assert.match(r.stdout, /^\[redacted:email\]$/m, 'derived column caught by the content detector');
});

test('DROP TABLE and DELETE without WHERE are denied with 42501; the session stays usable', async () => {
  const r = await h.psql(`\\set VERBOSITY verbose
DROP TABLE customers;
SELECT 'still here';
DELETE FROM orders;
SELECT count(*) FROM orders;`);
  assert.match(r.stderr, /ERROR: {2}42501: Airlock denied this statement: rule block-destructive-ddl/);
  assert.match(r.stderr, /ERROR: {2}42501: Airlock denied this statement: rule block-unbounded-writes/);
  assert.match(r.stdout, /still here\n500/);
});

test('a CTE hiding a DELETE is caught', async () => {
  const r = await h.psql('WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d;');
  assert.match(r.stderr, /Airlock denied this statement: rule block-unbounded-writes/);
  assert.equal((await h.pg.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 500);
});

test('an invalid or an expired token is refused with 28P01', async () => {
  const bad = await h.psql('SELECT 1', { token: 'not-a-token', args: ['-v', 'VERBOSITY=verbose'] });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /28P01|not a valid Airlock token/);
  const now = Math.floor(Date.now() / 1000);
  const key = new TextEncoder().encode((await import('node:fs')).readFileSync(`${h.dir}/signing.key`, 'utf8').trim());
  const expired = await new SignJWT({ groups: ['dba'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setIssuer('airlock').setAudience('airlock').setIssuedAt(now - 600).setExpirationTime(now - 300).sign(key);
  const r = await h.psql('SELECT 1', { token: expired });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /token has expired/);
});

test('rows beyond the limit are cut with an error', async () => {
  const r = await h.psql('SELECT id FROM orders ORDER BY id;\nSELECT \'after\';');
  assert.match(r.stderr, /Airlock row limit reached: rule orders-export-limit allows at most 100 rows per statement/);
  assert.match(r.stdout, /after/);
  assert.doesNotMatch(r.stdout, /^101$/m);
});

test('psql cancel (SIGINT) reaches the right upstream backend and ends the statement', async () => {
  const conninfo = await h.conninfo();
  const p = spawn('/usr/bin/psql', [conninfo, '-X', '-c', 'SELECT pg_sleep(60)'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const started = Date.now();
  for (let i = 0; i < 100; i++) {
    const r = await h.pg.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'");
    if (r.rows[0].n > 0) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  p.kill('SIGINT');
  const code = await new Promise<number | null>((res) => p.on('close', res));
  assert.ok(Date.now() - started < 20_000, 'cancelled long before pg_sleep(60) ends');
  assert.notEqual(code, 0);
  assert.match(stderr, /canceling statement due to user request/);
});

test('COPY ... TO STDOUT is masked, or denied where the policy says so', async () => {
  const masked = await h.psql('COPY customers TO STDOUT;');
  assert.equal(masked.code, 0, masked.stderr);
  assert.match(masked.stdout, /^1\tAnn\t\[redacted\]\t\*{4} \*{4} \*{4} 1111$/m);
  assert.doesNotMatch(masked.stdout, /@example/);
  const denied = await h.psql('COPY orders TO STDOUT;');
  assert.match(denied.stderr, /Airlock denied this statement: rule no-copy-of-orders: orders are not exported in bulk/);
  const program = await h.psql("COPY customers TO PROGRAM 'cat > /tmp/x';");
  assert.match(program.stderr, /rule block-copy-program/);
  // psql's \copy in CSV with a header: quoted fields are masked and stay valid CSV.
  const csv = await h.psql('\\copy customers to stdout with (format csv, header)');
  assert.equal(csv.code, 0, csv.stderr);
  assert.match(csv.stdout, /^id,name,email,card$/m);
  assert.match(csv.stdout, /^1,Ann,"\[redacted\]","\*{4} \*{4} \*{4} 1111"$/m);
  assert.doesNotMatch(csv.stdout, /@example/);
  // COPY (query) has no column origins to mask by: refused when it reads a masked column.
  const query = await h.psql('COPY (SELECT name, email FROM customers) TO STDOUT;');
  assert.match(query.stderr, /Airlock denied this statement: rule masked-copy-query/);
});

test('every one of these is visible in `airlock sessions show`', async () => {
  const out = await sessionsShow();
  for (const expected of [
    /DENY .*rule block-destructive-ddl[\s\S]*DROP TABLE customers/,
    /DENY .*rule block-unbounded-writes[\s\S]*WITH d AS \(DELETE FROM orders/,
    /rule orders-export-limit[\s\S]*row limit/i,
    /masked +public\.customers\.email/,
    /DENY .*rule no-copy-of-orders/,
    /DENY .*rule block-copy-program/,
    /DENY .*rule masked-copy-query/,
    /SELECT pg_sleep\(60\)[\s\S]*57014|SELECT pg_sleep\(60\)[\s\S]*cancel/i,
  ]) {
    assert.match(out, expected);
  }
});

test('a session lives no longer than its token: the next statement after expiry ends it with a clear error', async () => {
  const token = await h.token('alice', 2000);
  const c = await h.client({ token });
  const errors: Error[] = [];
  c.on('error', (e) => errors.push(e));
  // A statement running when the token expires finishes; the next one is refused.
  assert.equal((await c.query('SELECT 1 AS one FROM pg_sleep(3)')).rows[0].one, 1);
  await assert.rejects(c.query('SELECT 2'), /token this session logged in with has expired/);
  await c.end().catch(() => {});
  // An idle session is ended at expiry without waiting for a statement.
  const idle = await h.client({ token: await h.token('alice', 2000) });
  const ended = new Promise<Error>((resolve) => idle.on('error', resolve));
  const e = await Promise.race([ended, new Promise<undefined>((r) => setTimeout(r, 8000))]);
  assert.match(String(e?.message), /token this session logged in with has expired/);
  await idle.end().catch(() => {});
});
