// The masking layout cache (MaskerFactory.forRowDescriptionCached): column plans kept per mask
// plan and exact RowDescription bytes while every catalog entry they were built from is fresh.
// Socket-free: the catalog connection is an in-memory pg_catalog (the tests change it like DDL
// would) and the catalog clock is the test's. Every invalidation case is written so that a cache
// serving the stale layout would relay an unmasked value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { createMaskerFactory, type FieldInfo, type MaskerFactory } from '../../gateway/postgres/row-masker.ts';
import type { MaskPlan } from '../../gateway/policy/decision.ts';

interface Column { attnum: number; attname: string; typid: number }
interface Table { nspname: string; relname: string; columns: Column[] }

/** Just enough of pg_attribute/pg_class/pg_type for the catalog's queries. */
class FakeCatalogDb {
  readonly tables = new Map<number, Table>();
  readonly types = new Map<number, { typname: string; typcategory: string }>();
  queries = 0;

  connect = async (): Promise<pg.Client> =>
    ({
      query: async ({ text, values }: { text: string; values: unknown[] }) => {
        this.queries++;
        const oids = (values[0] as number[]).map(Number);
        if (text.includes('pg_attribute')) {
          const rows = [];
          for (const oid of oids) {
            const t = this.tables.get(oid);
            for (const c of t?.columns ?? []) rows.push({ relid: String(oid), attnum: c.attnum, nspname: t!.nspname, relname: t!.relname, relkind: 'r', attname: c.attname, typid: String(c.typid), ancestors: null });
          }
          return { rows };
        }
        if (text.includes('pg_type')) return { rows: oids.filter((o) => this.types.has(o)).map((o) => ({ oid: String(o), ...this.types.get(o)! })) };
        if (text.includes('pg_rewrite')) return { rows: [] };
        throw new Error(`unexpected catalog query: ${text}`);
      },
      on: () => undefined,
      end: async () => undefined,
    }) as unknown as pg.Client;
}

const TTL = 30_000;

function setup() {
  const db = new FakeCatalogDb();
  db.tables.set(100, { nspname: 'app', relname: 'users', columns: [{ attnum: 1, attname: 'name', typid: 25 }, { attnum: 2, attname: 'email', typid: 25 }] });
  let now = 1_000_000;
  const clock = { advance: (ms: number) => (now += ms) };
  const factory = createMaskerFactory({ connect: db.connect, hashKey: 'k', cacheTtlMs: TTL, now: () => now });
  return { db, clock, factory };
}

function plan(columns: Array<[string, MaskPlan['columns'][number]['strategy']]>, detectors: MaskPlan['detectors'] = []): MaskPlan {
  return { columns: columns.map(([column, strategy]) => ({ column, strategy, rule: 'r' })), detectors, denyMaskedExpressions: false };
}

/** A RowDescription message for these fields. */
function rowDescription(fields: FieldInfo[]): Buffer {
  const parts = fields.map((f) => {
    const name = Buffer.from(`${f.name}\0`);
    const b = Buffer.alloc(name.length + 18);
    name.copy(b);
    let o = name.length;
    o = b.writeUInt32BE(f.tableOid, o);
    o = b.writeInt16BE(f.columnId, o);
    o = b.writeUInt32BE(f.typeOid, o);
    o = b.writeInt16BE(-1, o);
    o = b.writeInt32BE(-1, o);
    b.writeInt16BE(f.format, o);
    return b;
  });
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(7);
  head[0] = 0x54;
  head.writeInt32BE(6 + body.length, 1);
  head.writeInt16BE(fields.length, 5);
  return Buffer.concat([head, body]);
}

function dataRow(values: string[]): Buffer {
  const cols = values.map((v) => Buffer.from(v));
  const len = 6 + cols.reduce((n, c) => n + 4 + c.length, 0);
  const out = Buffer.alloc(1 + len);
  out[0] = 0x44;
  out.writeInt32BE(len, 1);
  out.writeInt16BE(cols.length, 5);
  let off = 7;
  for (const c of cols) {
    off = out.writeInt32BE(c.length, off);
    off += c.copy(out, off);
  }
  return out;
}

/** What a client would see for one row of `value` in a result with this layout. */
async function relayed(factory: MaskerFactory, frame: Buffer, p: MaskPlan, value: string): Promise<string> {
  let m = factory.forRowDescriptionCached!(frame, p);
  if (m === undefined) {
    // The session's slow path: parse and ask the catalog (parks the session meanwhile).
    const { parseRowDescription } = await import('../../gateway/postgres/masking-api.ts');
    m = await factory.forResult(parseRowDescription(frame, 0, frame.length), p);
  }
  const row = dataRow([value]);
  const out = m ? m.maskDataRow(row) : row;
  const len = out.readInt32BE(7);
  return len < 0 ? 'NULL' : out.toString('utf8', 11, 11 + len);
}

/** relayed() twice: the first fills the catalog cache, the second the layout cache (checked). */
async function warm(factory: MaskerFactory, frame: Buffer, p: MaskPlan, value: string): Promise<string> {
  const first = await relayed(factory, frame, p, value);
  assert.notEqual(factory.forRowDescriptionCached!(frame, p), undefined, 'the layout is cached now');
  assert.equal(await relayed(factory, frame, p, value), first);
  return first;
}

const X = (columnId: number, format: 0 | 1 = 0, typeOid = 25): FieldInfo => ({ name: 'x', tableOid: 100, columnId, typeOid, format });
const EMAIL = plan([['app.users.email', 'redact']]);

test('a repeated layout is answered from the cache: no catalog query, no parse, the same masking', async () => {
  const { db, factory } = setup();
  const frame = rowDescription([X(2)]);
  assert.equal(await relayed(factory, frame, EMAIL, 'a@b.example'), '[redacted]');
  const q = db.queries;
  for (let i = 0; i < 3; i++) {
    // A new MaskPlan object per statement, as decisions carry: the compiled plan is found by content.
    assert.equal(await relayed(factory, Buffer.from(frame), plan([['app.users.email', 'redact']]), 'a@b.example'), '[redacted]');
  }
  assert.equal(db.queries, q);
  // Each result gets its own masker (its own record of what was masked).
  const a = factory.forRowDescriptionCached!(frame, EMAIL)!;
  const b = factory.forRowDescriptionCached!(frame, EMAIL)!;
  assert.notEqual(a, b);
  a.maskDataRow(dataRow(['a@b.example']));
  assert.deepEqual([...a.maskedColumns], ['app.users.email']);
  assert.deepEqual([...b.maskedColumns], []);
});

test('DDL picked up when the catalog entries expire: the cached layout is not served past them', async () => {
  const { db, clock, factory } = setup();
  const frame = rowDescription([X(1)]); // app.users.name: not masked
  assert.equal(await warm(factory, frame, EMAIL, 'x@y.example'), 'x@y.example');
  // Same OID and attnum, but now it IS the email column (renames in another session).
  db.tables.get(100)!.columns = [{ attnum: 1, attname: 'email', typid: 25 }, { attnum: 2, attname: 'old_email', typid: 25 }];
  clock.advance(TTL - 1);
  assert.equal(await relayed(factory, frame, EMAIL, 'x@y.example'), 'x@y.example', 'within the TTL the catalog itself still says name');
  clock.advance(1);
  assert.equal(factory.forRowDescriptionCached!(frame, EMAIL), undefined, 'expired: back to the catalog');
  assert.equal(await relayed(factory, frame, EMAIL, 'x@y.example'), '[redacted]');
});

test('catalog.invalidate() ends every cached layout at once', async () => {
  const { db, factory } = setup();
  const frame = rowDescription([X(1)]);
  assert.equal(await warm(factory, frame, EMAIL, 'x@y.example'), 'x@y.example');
  db.tables.get(100)!.columns = [{ attnum: 1, attname: 'email', typid: 25 }];
  (factory as unknown as { catalog: { invalidate(): void } }).catalog.invalidate();
  assert.equal(factory.forRowDescriptionCached!(frame, EMAIL), undefined);
  assert.equal(await relayed(factory, frame, EMAIL, 'x@y.example'), '[redacted]');
});

test('a layout lives no longer than the shortest-lived entry it used (an unknown table is re-checked within 2 s)', async () => {
  const { db, clock, factory } = setup();
  // A table the catalog cannot see yet (created in the client's uncommitted transaction): no rule matches.
  const frame = rowDescription([{ name: 'x', tableOid: 200, columnId: 1, typeOid: 25, format: 0 }]);
  const p = plan([['app.users.email', 'redact'], ['app.late.secret', 'redact']]);
  assert.equal(await warm(factory, frame, p, 'top secret'), 'top secret');
  db.tables.set(200, { nspname: 'app', relname: 'late', columns: [{ attnum: 1, attname: 'secret', typid: 25 }] }); // committed
  clock.advance(2_000);
  assert.equal(factory.forRowDescriptionCached!(frame, p), undefined, 'the negative entry expired, so did the layout built on it');
  assert.equal(await relayed(factory, frame, p, 'top secret'), '[redacted]');
});

test('a user-defined type: the layout follows the type entry too', async () => {
  const { db, clock, factory } = setup();
  db.types.set(90_000, { typname: 'label', typcategory: 'U' }); // class other: detectors skip table columns of it
  db.tables.get(100)!.columns.push({ attnum: 3, attname: 'tag', typid: 90_000 });
  const frame = rowDescription([X(3, 0, 90_000)]);
  const p = plan([], [{ detector: 'email', strategy: 'redact', rule: 'r' }]);
  assert.equal(await warm(factory, frame, p, 'x@y.example'), 'x@y.example');
  db.types.set(90_000, { typname: 'label', typcategory: 'S' }); // now a string type: detectors apply
  clock.advance(TTL);
  assert.equal(factory.forRowDescriptionCached!(frame, p), undefined);
  assert.equal(await relayed(factory, frame, p, 'x@y.example'), '[redacted:email]');
});

test('result formats are part of the layout: text and binary of the same column are cached apart', async () => {
  const { factory } = setup();
  // A derived column (no table) of a non-text type: detectors look at it in text format only.
  const derived = (format: 0 | 1): FieldInfo => ({ name: 'x', tableOid: 0, columnId: 0, typeOid: 1082, format });
  const p = plan([], [{ detector: 'email', strategy: 'redact', rule: 'r' }]);
  assert.equal(factory.forRowDescriptionCached!(rowDescription([derived(1)]), p), null, 'binary: nothing to mask');
  assert.equal(await warm(factory, rowDescription([derived(0)]), p, 'x@y.example'), 'NULL', 'text: a hit in a non-text value nulls it');
  assert.equal(factory.forRowDescriptionCached!(rowDescription([derived(1)]), p), null);
});

test('the mask plan is part of the key: another plan gets its own layout', async () => {
  const { factory } = setup();
  const frame = rowDescription([X(1)]);
  assert.equal(await warm(factory, frame, EMAIL, 'v'), 'v');
  assert.equal(await relayed(factory, frame, plan([['app.users.name', 'null']]), 'v'), 'NULL');
  assert.equal(await relayed(factory, frame, plan([['app.users.name', 'redact']]), 'v'), '[redacted]', 'same column, another strategy');
  assert.equal(await relayed(factory, frame, plan([['app.users.name', 'redact'], ['app.users.name', 'null']]), 'v'), 'NULL', 'the strongest rule wins, as without the cache');
  assert.equal(await relayed(factory, frame, EMAIL, 'v'), 'v');
});

test('the cache is bounded: past its limits layouts are dropped and rebuilt, never mixed up', async () => {
  const { factory } = setup();
  const frame = (i: number) => rowDescription([{ name: `c${i}`, tableOid: 100, columnId: 1 + (i % 2), typeOid: 25, format: 0 }]);
  await relayed(factory, frame(0), EMAIL, 'v'); // fills the catalog cache
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 1500; i++) assert.equal(await relayed(factory, frame(i), EMAIL, 'v'), i % 2 === 1 ? '[redacted]' : 'v', `layout ${i}`);
  }
  // Very wide layouts (a 1600-column RowDescription is ~40 KiB) count against a byte budget.
  const wide = (i: number) => rowDescription(Array.from({ length: 1600 }, (_, k) => ({ name: `w${i}_${k}`, tableOid: 100, columnId: 2, typeOid: 25, format: 0 as const })));
  for (let i = 0; i < 120; i++) {
    const m = factory.forRowDescriptionCached!(wide(i), EMAIL)!;
    const row = dataRow(Array.from({ length: 1600 }, () => 'v'));
    const out = m.maskDataRow(row);
    assert.equal(out.readInt32BE(7), '[redacted]'.length);
  }
  assert.equal(await relayed(factory, frame(1), EMAIL, 'v'), '[redacted]');
});
