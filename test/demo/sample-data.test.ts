import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { startPostgres, type RunningPostgres } from '../support/postgres.ts';
import { generateDemoData, seedDemoDatabase, WELL_KNOWN_TEST_CARDS } from '../../gateway/demo/sample-data.ts';

// Independent checks, written from the standards rather than reusing the generator's helpers.
function luhnValid(n: string): boolean {
  if (!/^\d{12,19}$/.test(n)) return false;
  let sum = 0;
  for (let i = 0; i < n.length; i++) {
    let d = Number(n[n.length - 1 - i]);
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

function ibanValid(iban: string): boolean {
  if (!/^[A-Z]{2}\d{2}[A-Z0-9]{10,30}$/.test(iban)) return false;
  const digits = (iban.slice(4) + iban.slice(0, 4)).replace(/[A-Z]/g, (c) => String(c.charCodeAt(0) - 55));
  return BigInt(digits) % 97n === 1n;
}

describe('demo sample data', () => {
  let pgServer: RunningPostgres;
  let client: pg.Client;

  before(async () => {
    pgServer = await startPostgres();
    await pgServer.query('CREATE DATABASE shop');
    client = await pgServer.client('shop');
  });
  after(async () => {
    await client?.end();
    await pgServer?.stop();
  });

  test('the generator is deterministic per seed and differs across seeds', () => {
    assert.deepEqual(generateDemoData(), generateDemoData());
    assert.notDeepEqual(generateDemoData({ seed: 1 }).customers, generateDemoData({ seed: 2 }).customers);
    assert.equal(generateDemoData({ customers: 7 }).customers.length, 7);
    assert.throws(() => generateDemoData({ customers: -1 }), /non-negative integer/);
  });

  test('seeds 200 customers with orders and tickets, every foreign key resolving', async () => {
    await seedDemoDatabase(client);
    const counts = await client.query<{ customers: number; orders: number; tickets: number; orphans: number }>(`
      SELECT (SELECT count(*)::int FROM customers) AS customers,
             (SELECT count(*)::int FROM orders) AS orders,
             (SELECT count(*)::int FROM support_tickets) AS tickets,
             (SELECT count(*)::int FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL)
           + (SELECT count(*)::int FROM support_tickets t LEFT JOIN customers c ON c.id = t.customer_id WHERE c.id IS NULL) AS orphans`);
    const c = counts.rows[0];
    assert.equal(c.customers, 200);
    assert.ok(c.orders >= 200, `orders: ${c.orders}`);
    assert.ok(c.tickets >= 20, `tickets: ${c.tickets}`);
    assert.equal(c.orphans, 0);
    const fks = await client.query<{ conrelid: string }>(`SELECT conrelid::regclass::text AS conrelid FROM pg_constraint WHERE contype = 'f' AND confrelid = 'customers'::regclass ORDER BY 1`);
    assert.deepEqual(fks.rows.map((r) => r.conrelid), ['orders', 'support_tickets']);
  });

  test('sensitive columns hold values detectors recognise: Luhn-valid cards, mod-97 IBANs, SSN-shaped numbers, reserved emails', async () => {
    const { rows } = await client.query<{ card_number: string; iban: string; ssn: string; email: string; phone: string; full_name: string; city: string }>(
      'SELECT card_number, iban, ssn, email, phone, full_name, city FROM customers ORDER BY id',
    );
    const badCards = rows.filter((r) => !luhnValid(r.card_number));
    assert.deepEqual(badCards, []);
    assert.deepEqual(rows.filter((r) => !ibanValid(r.iban)), []);
    assert.deepEqual(rows.filter((r) => !/^(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}$/.test(r.ssn)), []);
    assert.deepEqual(rows.filter((r) => !/^[a-z.]+\d*@example\.(com|org|net)$/.test(r.email)), []);
    assert.deepEqual(rows.filter((r) => !/^(\+1-\d{3}-555-01\d{2}|\+44 7700 900\d{3})$/.test(r.phone)), []);
    assert.equal(new Set(rows.map((r) => r.card_number)).size, rows.length, 'card numbers are distinct');
    assert.ok(rows.some((r) => r.card_number === '4111111111111111'));
    assert.ok(rows.some((r) => r.card_number === '5555555555554444'));
    assert.ok(rows.some((r) => r.iban === 'GB82WEST12345698765432'));
    assert.ok(WELL_KNOWN_TEST_CARDS.every(luhnValid));
    assert.ok(new Set(rows.map((r) => r.city)).size >= 20, 'customers live in many cities');
    assert.ok(new Set(rows.map((r) => r.full_name)).size >= 150, 'names vary');
  });

  test('ticket text leaks emails, phones and card numbers for the content detectors to catch', async () => {
    const { rows } = await client.query<{ body: string }>('SELECT body FROM support_tickets');
    assert.ok(rows.some((r) => /[a-z.]+@example\.(com|org|net)/.test(r.body)), 'an email in free text');
    assert.ok(rows.some((r) => /\+1-\d{3}-555-01\d{2}|\+44 7700 900\d{3}/.test(r.body)), 'a phone number in free text');
  });

  test('seeding again yields the identical database, and new rows get fresh ids', async () => {
    const snapshot = async () =>
      (
        await client.query<{ h: string }>(`SELECT md5(
            (SELECT string_agg(c::text, '|' ORDER BY id) FROM customers c) ||
            (SELECT string_agg(o::text, '|' ORDER BY id) FROM orders o) ||
            (SELECT string_agg(t::text, '|' ORDER BY id) FROM support_tickets t)) AS h`)
      ).rows[0].h;
    const first = await snapshot();
    await client.query("INSERT INTO customers (full_name, email, phone, card_number, ssn, iban, city) VALUES ('Test Person', 't@example.com', '+1-202-555-0100', '4111111111111111', '123-45-6789', 'GB82WEST12345698765432', 'Lisbon')");
    await seedDemoDatabase(client);
    assert.equal(await snapshot(), first);
    const inserted = await client.query<{ id: number }>("INSERT INTO orders (customer_id, amount, status) VALUES (1, 10, 'paid') RETURNING id");
    const max = await client.query<{ m: number }>('SELECT max(id)::int AS m FROM orders WHERE id <> $1', [inserted.rows[0].id]);
    assert.equal(inserted.rows[0].id, max.rows[0].m + 1);
  });

  test('a failed seed leaves the previous data untouched', async () => {
    const before = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM customers');
    // Another session holding a lock makes our DROP wait; a short lock_timeout turns it into an error.
    const other = await pgServer.client('shop');
    try {
      await other.query('BEGIN');
      await other.query('LOCK TABLE orders IN ACCESS SHARE MODE');
      await client.query("SET lock_timeout = '200ms'");
      await assert.rejects(seedDemoDatabase(client, { seed: 99 }), /seeding the demo database failed: .*lock timeout/);
    } finally {
      await other.query('ROLLBACK');
      await other.end();
      await client.query('RESET lock_timeout');
    }
    const after = await client.query<{ n: number; first: string }>('SELECT count(*)::int AS n, (SELECT full_name FROM customers WHERE id = 1) AS first FROM customers');
    assert.equal(after.rows[0].n, before.rows[0].n);
    assert.equal(after.rows[0].first, generateDemoData().customers[0].fullName);
  });
});
