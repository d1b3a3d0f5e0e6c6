import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { startPostgres, type RunningPostgres } from '../support/postgres.ts';
import { Catalog, viewColumnOrigins } from '../../gateway/postgres/catalog.ts';

let server: RunningPostgres;
let admin: pg.Client;

before(async () => {
  server = await startPostgres();
  admin = await server.client();
  await admin.query(`
    CREATE EXTENSION citext;
    CREATE SCHEMA app;
    CREATE TABLE app.users (id int PRIMARY KEY, email text, "Full Name" text, dropme int, nick citext);
    ALTER TABLE app.users DROP COLUMN dropme;
    CREATE TABLE app.orders (id int PRIMARY KEY, user_id int, card text);
    CREATE SCHEMA "Sales";
    CREATE TABLE "Sales"."Leads" ("Email" text);
    CREATE VIEW app.contacts AS SELECT id, email AS contact, lower(email) AS lowered, "Full Name" FROM app.users;
    CREATE VIEW app.contacts2 AS SELECT contact AS c FROM app.contacts;
    CREATE VIEW app.unioned AS SELECT email FROM app.users UNION ALL SELECT card FROM app.orders;
    CREATE MATERIALIZED VIEW app.mv AS SELECT email FROM app.users;
    CREATE TYPE app.mood AS ENUM ('ok', 'sad');
    INSERT INTO app.users VALUES (1, 'alice@example.com', 'Alice A', 'Al');
    INSERT INTO app.orders VALUES (10, 1, '4242424242424242');
  `);
});

after(async () => {
  await admin?.end();
  await server?.stop();
});

/** A catalog whose connections and queries are counted. */
function countingCatalog(opts: { ttlMs?: number; now?: () => number } = {}) {
  const stats = { connects: 0, queries: 0, clients: [] as pg.Client[] };
  const catalog = new Catalog({
    ...opts,
    connect: async () => {
      stats.connects++;
      const c = await server.client();
      const query = c.query.bind(c) as (...args: unknown[]) => unknown;
      (c as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
        stats.queries++;
        return query(...args);
      };
      stats.clients.push(c);
      return c;
    },
  });
  return { catalog, stats };
}

/** The RowDescription fields PostgreSQL sends for `sql`. */
async function fieldsOf(sql: string) {
  const r = await admin.query({ text: sql, rowMode: 'array' });
  return r.fields.map((f) => ({ name: f.name, tableOid: f.tableID, columnId: f.columnID }));
}

async function namesOf(catalog: Catalog, sql: string): Promise<Record<string, string[]>> {
  const fields = await fieldsOf(sql);
  const names = await catalog.columnNames(fields);
  return Object.fromEntries(fields.map((f) => [f.name, names.get(`${f.tableOid}:${f.columnId}`) ?? []]));
}

test('resolves result columns by table OID and attnum, whatever the alias', async () => {
  const { catalog } = countingCatalog();
  try {
    assert.deepEqual(await namesOf(catalog, 'SELECT email AS e, id, 1 AS one FROM app.users'), {
      e: ['app.users.email'],
      id: ['app.users.id'],
      one: [],
    });
  } finally {
    await catalog.close();
  }
});

test('SELECT * and joins resolve every column to its own table; names are lower-case', async () => {
  const { catalog } = countingCatalog();
  try {
    assert.deepEqual(await namesOf(catalog, 'SELECT u.*, o.card AS c FROM app.users u JOIN app.orders o ON o.user_id = u.id'), {
      id: ['app.users.id'],
      email: ['app.users.email'],
      'Full Name': ['app.users.full name'],
      nick: ['app.users.nick'],
      c: ['app.orders.card'],
    });
    assert.deepEqual(await namesOf(catalog, 'SELECT "Email" FROM "Sales"."Leads"'), { Email: ['sales.leads.email'] });
  } finally {
    await catalog.close();
  }
});

test('view columns resolve to the base columns they pass through; expressions do not', async () => {
  const { catalog } = countingCatalog();
  try {
    assert.deepEqual(await namesOf(catalog, 'SELECT * FROM app.contacts'), {
      id: ['app.contacts.id', 'app.users.id'],
      contact: ['app.contacts.contact', 'app.users.email'],
      lowered: ['app.contacts.lowered'],
      'Full Name': ['app.contacts.full name', 'app.users.full name'],
    });
    // A view over a view follows the chain down to the table.
    assert.deepEqual(await namesOf(catalog, 'SELECT c FROM app.contacts2'), { c: ['app.contacts2.c', 'app.contacts.contact', 'app.users.email'] });
    // UNION branches have no single origin.
    assert.deepEqual(await namesOf(catalog, 'SELECT email FROM app.unioned'), { email: ['app.unioned.email'] });
    assert.deepEqual(await namesOf(catalog, 'SELECT email FROM app.mv'), { email: ['app.mv.email', 'app.users.email'] });
  } finally {
    await catalog.close();
  }
});

test('one query per batch of unknown relations, then served from cache', async () => {
  const { catalog, stats } = countingCatalog();
  try {
    const fields = await fieldsOf('SELECT u.email, o.card FROM app.users u, app.orders o');
    await catalog.columnNames(fields);
    assert.equal(stats.queries, 1);
    assert.equal(stats.connects, 1);
    await catalog.columnNames(fields);
    await Promise.all([catalog.columnNames(fields), catalog.columnNames(fields)]);
    assert.equal(stats.queries, 1);
    // Concurrent first lookups of the same OID share one query.
    const { catalog: c2, stats: s2 } = countingCatalog();
    try {
      await Promise.all([c2.columnNames(fields), c2.columnNames(fields), c2.columnNames(fields)]);
      assert.equal(s2.queries, 1);
    } finally {
      await c2.close();
    }
  } finally {
    await catalog.close();
  }
});

test('entries expire after the TTL, so DDL is picked up', async () => {
  let now = 1_000_000;
  const { catalog } = countingCatalog({ ttlMs: 10_000, now: () => now });
  try {
    await admin.query('CREATE TABLE app.renamed (a text)');
    const fields = await fieldsOf('SELECT a FROM app.renamed');
    assert.deepEqual((await catalog.columnNames(fields)).get(`${fields[0].tableOid}:1`), ['app.renamed.a']);
    await admin.query('ALTER TABLE app.renamed RENAME COLUMN a TO b');
    now += 5_000;
    assert.deepEqual((await catalog.columnNames(fields)).get(`${fields[0].tableOid}:1`), ['app.renamed.a'], 'still cached');
    now += 6_000;
    assert.deepEqual((await catalog.columnNames(fields)).get(`${fields[0].tableOid}:1`), ['app.renamed.b']);
  } finally {
    await catalog.close();
  }
});

test('unknown OIDs resolve to no names', async () => {
  const { catalog } = countingCatalog();
  try {
    const names = await catalog.columnNames([{ tableOid: 4_000_000_000, columnId: 1 }]);
    assert.deepEqual(names.get('4000000000:1'), []);
  } finally {
    await catalog.close();
  }
});

test('tables by name give ordered columns without dropped ones; unknown tables throw', async () => {
  const { catalog } = countingCatalog();
  try {
    const rel = await catalog.table('app.users');
    assert.equal(rel.name, 'app.users');
    assert.deepEqual(rel.columns.map((c) => c.qualified), ['app.users.id', 'app.users.email', 'app.users.full name', 'app.users.nick']);
    assert.deepEqual(rel.columns.map((c) => c.attnum), [1, 2, 3, 5]);
    assert.equal((await catalog.table('"Sales"."Leads"')).name, 'sales.leads');
    // A lower-cased mixed-case name still resolves when it is unambiguous.
    assert.equal((await catalog.table('sales.leads')).name, 'sales.leads');
    await assert.rejects(catalog.table('app.nope'), /table "app.nope" is not in the catalog/);
  } finally {
    await catalog.close();
  }
});

test('types: name and category for non-built-in types', async () => {
  const { catalog } = countingCatalog();
  try {
    const r = await admin.query(`SELECT 'app.mood'::regtype::oid::int AS mood, 'citext'::regtype::oid::int AS citext`);
    const types = await catalog.types([r.rows[0].mood, r.rows[0].citext, 4_000_000_000]);
    assert.deepEqual(types.get(r.rows[0].citext), { oid: r.rows[0].citext, name: 'citext', category: 'S' });
    assert.equal(types.get(r.rows[0].mood)?.category, 'E');
    assert.equal(types.get(4_000_000_000), undefined);
  } finally {
    await catalog.close();
  }
});

test('a dropped catalog connection is replaced transparently', async () => {
  const { catalog, stats } = countingCatalog();
  try {
    await catalog.columnNames(await fieldsOf('SELECT id FROM app.users'));
    const pid = (stats.clients[0] as unknown as { processID: number }).processID;
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    const fields = await fieldsOf('SELECT card FROM app.orders');
    assert.deepEqual((await catalog.columnNames(fields)).get(`${fields[0].tableOid}:3`), ['app.orders.card']);
    assert.equal(stats.connects, 2);
  } finally {
    await catalog.close();
  }
});

test('fails closed: an unreachable catalog rejects with a clear error', async () => {
  const catalog = new Catalog({ connect: () => Promise.reject(new Error('connection refused')) });
  await assert.rejects(catalog.columnNames([{ tableOid: 16384, columnId: 1 }]), /^Error: masking catalog lookup failed \(relations\): connection refused$/);
  await assert.rejects(catalog.table('app.users'), /masking catalog lookup failed/);
});

test('fails closed: a catalog that never answers times out', async () => {
  const catalog = new Catalog({ connect: () => new Promise<pg.Client>(() => {}), timeoutMs: 200 });
  const t0 = Date.now();
  await assert.rejects(catalog.columnNames([{ tableOid: 16384, columnId: 1 }]), /masking catalog lookup failed \(relations\): no answer within 200 ms/);
  assert.ok(Date.now() - t0 < 2_000);
});

test('viewColumnOrigins reads only the top-level target list', () => {
  const tree =
    '({QUERY :rtable ({RANGETBLENTRY :subquery {QUERY :targetList ({TARGETENTRY :resno 1 :resorigtbl 99 :resorigcol 9 :resjunk false})}}) ' +
    ':targetList ({TARGETENTRY :expr {VAR :varno 1} :resno 1 :resname a\\ b :resorigtbl 16385 :resorigcol 2 :resjunk false} ' +
    '{TARGETENTRY :expr {FUNCEXPR :args ({VAR :varno 1})} :resno 2 :resname c :resorigtbl 0 :resorigcol 0 :resjunk false}) :override 0})';
  assert.deepEqual([...viewColumnOrigins(tree)], [[1, [16385, 2]]]);
});
