// Limits hold for every command that returns rows: a cursor read in chunks, a SQL-prepared
// statement, a portal read with maxRows across Executes. A statement time limit cancels what runs
// too long with 57014, naming the rule; a multi-statement string gets the limit per statement.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Decision } from '../../gateway/policy/decision.ts';
import { startGateway, type GatewayHarness, pgError } from '../support/gateway.ts';
import { WireClient, serialize, type Message } from '../support/pgwire.ts';

let h: GatewayHarness;
const TIME_LIMIT_MS = 1500;

before(async () => {
  h = await startGateway({
    setup: `CREATE TABLE big (id int, payload text);
            INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 1000) g;`,
    config: () => ({
      policy: {
        default: 'allow',
        rules: [{ name: 'row-cap', match: {}, action: 'allow', limits: { maxRowsPerStatement: 100 } }],
      },
    }),
    // The policy branch adds `maxStatementMs` to rule limits; until then the real engine's
    // decisions get it here, exactly as the engine will hand it over.
    decider: (engine) => ({
      decideAll(ops) {
        const r = engine.decideAll(ops);
        const d: Decision = r.decision;
        if (d.action === 'deny') return r;
        return { ...r, decision: { ...d, limits: { ...d.limits, maxStatementMs: TIME_LIMIT_MS, timeRule: 'slow-cap' } } };
      },
    }),
  });
});

after(async () => {
  await h?.close();
});

type Err = Message & { code: string; message: string };

test('a cursor read in chunks shares one row limit across its FETCHes', async () => {
  const c = await h.client();
  try {
    await c.query('BEGIN');
    await c.query('DECLARE cur CURSOR FOR SELECT * FROM big ORDER BY id');
    assert.equal((await c.query('FETCH 60 FROM cur')).rows.length, 60);
    const e = await pgError(c.query('FETCH 60 FROM cur'));
    assert.equal(e.code, '54000');
    assert.match(e.message, /row limit reached: rule row-cap allows at most 100 rows/);
    await c.query('ROLLBACK');
    // A new DECLARE of the same name starts a new count.
    await c.query('BEGIN');
    await c.query('DECLARE cur CURSOR FOR SELECT * FROM big ORDER BY id');
    assert.equal((await c.query('FETCH 60 FROM cur')).rows.length, 60);
    await c.query('CLOSE cur');
    await c.query('DECLARE cur CURSOR FOR SELECT * FROM big ORDER BY id');
    assert.equal((await c.query('FETCH FORWARD 90 FROM cur')).rows.length, 90);
    await c.query('ROLLBACK');
  } finally {
    await c.end();
  }
});

test('a WITH HOLD cursor read after COMMIT, in a multi-statement string, and with FETCH ALL is limited too', async () => {
  const c = await h.client();
  try {
    await c.query('DECLARE held CURSOR WITH HOLD FOR SELECT * FROM big ORDER BY id');
    for (let i = 0; i < 3; i++) assert.equal((await c.query('FETCH 30 FROM held')).rows.length, 30);
    const e = await pgError(c.query('FETCH 30 FROM held'));
    assert.equal(e.code, '54000');
    await c.query('CLOSE held');
    const multi = await h.psql('BEGIN;\nDECLARE m CURSOR FOR SELECT * FROM big;\nFETCH 50 FROM m; FETCH 50 FROM m; FETCH 50 FROM m;\nROLLBACK;\n');
    assert.match(multi.stderr, /54000|row limit reached/);
    assert.ok(multi.stdout.split('\n').filter((l) => /^\d+\|row /.test(l)).length <= 100, multi.stdout);
    await c.query('BEGIN');
    await c.query('DECLARE a CURSOR FOR SELECT * FROM big');
    assert.equal((await pgError(c.query('FETCH ALL FROM a'))).code, '54000');
    await c.query('ROLLBACK');
  } finally {
    await c.end();
  }
});

test('SQL PREPARE/EXECUTE and extended-protocol FETCH are limited; a portal is limited across Executes', async () => {
  const c = await h.client();
  try {
    await c.query('PREPARE everything AS SELECT * FROM big');
    assert.equal((await pgError(c.query('EXECUTE everything'))).code, '54000');
    await c.query('BEGIN');
    await c.query('DECLARE x CURSOR FOR SELECT * FROM big ORDER BY id');
    assert.equal((await c.query({ text: 'FETCH 60 FROM x', values: [] })).rows.length, 60);
    assert.equal((await pgError(c.query({ text: 'FETCH 60 FROM x', values: [] }))).code, '54000');
    await c.query('ROLLBACK');
  } finally {
    await c.end();
  }
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    const out = await w.roundtrip([
      serialize.parse({ text: 'SELECT * FROM big ORDER BY id' }),
      serialize.bind({}),
      serialize.execute({ rows: 60 }),
      serialize.execute({ rows: 60 }),
      serialize.sync(),
    ]);
    assert.equal(out.filter((m) => m.name === 'dataRow').length, 100);
    assert.equal((out.find((m) => m.name === 'error') as Err).code, '54000');
  } finally {
    w.end();
  }
});

test('row limits are per statement of a query string: a COPY after a SELECT starts its own count, and is limited itself', async () => {
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    const ok = await w.roundtrip([serialize.query('SELECT * FROM big LIMIT 60; COPY (SELECT * FROM big LIMIT 60) TO STDOUT')]);
    assert.equal(ok.find((m) => m.name === 'error'), undefined, JSON.stringify(ok.find((m) => m.name === 'error')));
    assert.equal(ok.filter((m) => m.name === 'dataRow').length, 60);
    assert.equal(ok.filter((m) => m.name === 'copyData').length, 60);
    const cut = await w.roundtrip([serialize.query('COPY big TO STDOUT')]);
    assert.equal((cut.find((m) => m.name === 'error') as Err).code, '54000');
    assert.equal(cut.filter((m) => m.name === 'copyData').length, 100);
  } finally {
    w.end();
  }
});

test('a statement that runs past the time limit is cancelled with 57014 naming the rule; the session goes on', async () => {
  const c = await h.client();
  try {
    const e = await pgError(c.query('SELECT pg_sleep(60)'));
    assert.equal(e.code, '57014');
    assert.equal(e.message, `Airlock statement time limit reached: rule slow-cap allows at most ${TIME_LIMIT_MS} ms per statement`);
    assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
    const x = await pgError(c.query({ text: 'SELECT pg_sleep($1)', values: [60] }));
    assert.equal(x.code, '57014');
    await c.query('BEGIN');
    assert.equal((await pgError(c.query('SELECT count(*) FROM big, big b2, big b3'))).code, '57014');
    assert.equal((await pgError(c.query('SELECT 1'))).code, '25P02');
    await c.query('ROLLBACK');
    assert.equal((await c.query('SELECT 2 AS two')).rows[0].two, 2);
  } finally {
    await c.end();
  }
  const r = await h.psql('SELECT pg_sleep(60);\nSELECT 42;\n');
  assert.match(r.stderr, /time limit reached: rule slow-cap/);
  assert.equal(r.stdout, '42\n');
});

test('the time limit is per statement of a query string, and only the statement that ran out is cancelled', async () => {
  const ten = Array.from({ length: 10 }, () => 'SELECT pg_sleep(0.25)').join('; ');
  const ok = await h.psql(`${ten};\nSELECT 'all done';\n`);
  assert.doesNotMatch(ok.stderr, /time limit/);
  assert.match(ok.stdout, /all done/);
  const w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
  try {
    const out = await w.roundtrip([
      serialize.parse({ text: "SELECT pg_sleep(0.25), 'first' AS v" }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.parse({ text: "SELECT pg_sleep(60), 'second' AS v" }),
      serialize.bind({}),
      serialize.execute({}),
      serialize.sync(),
    ]);
    const rows = out.filter((m) => m.name === 'dataRow').map((m) => String((m.fields as string[])[1]));
    assert.deepEqual(rows, ['first']);
    const err = out.find((m) => m.name === 'error') as Err;
    assert.equal(err.code, '57014');
    assert.match(err.message, /rule slow-cap/);
  } finally {
    w.end();
  }
});
