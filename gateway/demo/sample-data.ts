// Fake but realistic-looking PII for the demo database: customers with card numbers, SSNs,
// IBANs, phones and emails (so column masks and content detectors have something to catch),
// their orders, and support tickets whose free text leaks the same kinds of values.
//
// Everything is synthetic and deterministic (seeded PRNG): names are combinations of common
// given and family names, emails use the reserved example.* domains, phones sit in the ranges
// set aside for fiction (US 555-01xx, UK 07700 900xxx), card numbers are the well-known
// processor test numbers or Luhn-valid numbers under test BINs, and IBANs are well-known
// documentation examples or generated ones with correct mod-97 check digits.
import type pg from 'pg';

export interface DemoCustomer {
  id: number;
  fullName: string;
  email: string;
  phone: string;
  cardNumber: string;
  ssn: string;
  iban: string;
  city: string;
  createdAt: Date;
}

export interface DemoOrder {
  id: number;
  customerId: number;
  /** Decimal string with two places, as PostgreSQL numeric returns it. */
  amount: string;
  status: 'pending' | 'paid' | 'shipped' | 'delivered' | 'refunded' | 'cancelled';
  createdAt: Date;
}

export interface DemoTicket {
  id: number;
  customerId: number;
  subject: string;
  body: string;
  status: 'open' | 'pending' | 'closed';
  createdAt: Date;
}

export interface DemoData {
  customers: DemoCustomer[];
  orders: DemoOrder[];
  tickets: DemoTicket[];
}

export interface DemoDataOptions {
  /** Number of customers; default 200. */
  customers?: number;
  /** PRNG seed; the same seed always yields the same data. */
  seed?: number;
}

export const DEMO_TABLES = ['customers', 'orders', 'support_tickets'] as const;

/** Processor test card numbers (Visa, Mastercard, Amex, Discover, JCB, Diners): never real cards. */
export const WELL_KNOWN_TEST_CARDS = [
  '4111111111111111',
  '5555555555554444',
  '378282246310005',
  '6011111111111117',
  '4012888888881881',
  '5105105105105100',
  '3530111333300000',
  '4242424242424242',
  '30569309025904',
  '371449635398431',
];

/** IBANs printed in standards and bank documentation as examples. */
export const WELL_KNOWN_EXAMPLE_IBANS = [
  'GB82WEST12345698765432',
  'DE89370400440532013000',
  'FR1420041010050500013M02606',
  'NL91ABNA0417164300',
  'GB29NWBK60161331926819',
  'ES9121000418450200051332',
];

const GIVEN_NAMES = [
  'Amelia', 'Oliver', 'Sophia', 'Liam', 'Isabella', 'Noah', 'Mia', 'Lucas', 'Charlotte', 'Ethan',
  'Ava', 'Mateo', 'Harper', 'Leo', 'Evelyn', 'Elijah', 'Chloe', 'Henry', 'Zoe', 'Samuel',
  'Nora', 'Hugo', 'Lena', 'Felix', 'Ines', 'Arjun', 'Priya', 'Kenji', 'Yuki', 'Omar',
  'Layla', 'Diego', 'Lucia', 'Tomas', 'Freya', 'Emil', 'Astrid', 'Rafael', 'Maya', 'Jonas',
  'Clara', 'Theo', 'Aisha', 'Daniel', 'Elena', 'Marco', 'Sara', 'Nikolai', 'Hana', 'Gabriel',
];

const FAMILY_NAMES = [
  'Smith', 'Garcia', 'Müller', 'Rossi', 'Dubois', 'Kowalski', 'Jensen', 'Novak', 'Silva', 'Tanaka',
  'Okafor', 'Nguyen', 'Patel', 'Kim', 'Cohen', 'Andersson', 'Fischer', 'Moreau', 'Costa', 'Ivanova',
  'Walker', 'Bianchi', 'Hernandez', 'Schmidt', 'Martin', 'Lopez', 'Brown', 'Wilson', 'Sato', 'Haddad',
  'Larsen', 'Van Dijk', 'Murphy', "O'Brien", 'Kaur', 'Mendes', 'Becker', 'Lindqvist', 'Popescu', 'Yilmaz',
];

const CITIES = [
  'Lisbon', 'Porto', 'Madrid', 'Barcelona', 'Lyon', 'Paris', 'Berlin', 'Hamburg', 'Munich', 'Amsterdam',
  'Rotterdam', 'Brussels', 'Copenhagen', 'Stockholm', 'Oslo', 'Helsinki', 'Dublin', 'Manchester', 'Leeds', 'Edinburgh',
  'London', 'Milan', 'Turin', 'Vienna', 'Prague', 'Warsaw', 'Kraków', 'Zurich', 'Geneva', 'Austin',
  'Denver', 'Portland', 'Toronto', 'Montreal', 'Boston', 'Chicago', 'Seattle', 'Melbourne', 'Auckland', 'Singapore',
];

const EMAIL_DOMAINS = ['example.com', 'example.org', 'example.net'];
const ORDER_STATUSES: DemoOrder['status'][] = ['pending', 'paid', 'paid', 'shipped', 'shipped', 'delivered', 'delivered', 'delivered', 'refunded', 'cancelled'];
const TICKET_STATUSES: DemoTicket['status'][] = ['open', 'open', 'pending', 'closed', 'closed'];

/** Fixed reference instant so the data does not depend on when the demo runs. */
const EPOCH = Date.UTC(2026, 0, 1);
const DAY = 86_400_000;

/** mulberry32: tiny, fast, good enough for sample data, and identical on every platform (the tests' generated inputs use it too). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Random {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = prng(seed);
  }
  float(): number {
    return this.next();
  }
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)];
  }
  digits(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += String(this.int(0, 9));
    return s;
  }
}

/** The Luhn check digit that makes `partial` + digit valid. */
export function luhnCheckDigit(partial: string): string {
  let sum = 0;
  // Walking from the right, the digit next to the (future) check digit is doubled.
  for (let i = partial.length - 1, double = true; i >= 0; i--, double = !double) {
    let d = partial.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return String((10 - (sum % 10)) % 10);
}

/** IBAN check digits (ISO 13616 mod-97) for a country code and BBAN. */
export function ibanCheckDigits(country: string, bban: string): string {
  const rearranged = `${bban}${country}00`.toUpperCase();
  let rem = 0;
  for (const ch of rearranged) {
    const v = ch >= 'A' && ch <= 'Z' ? String(ch.charCodeAt(0) - 55) : ch;
    for (const d of v) rem = (rem * 10 + (d.charCodeAt(0) - 48)) % 97;
  }
  return String(98 - rem).padStart(2, '0');
}

function cardNumber(r: Random): string {
  // Test BINs: Visa 400000, Mastercard 520082 (16 digits), Amex 378282 (15 digits).
  const kind = r.int(0, 9);
  const prefix = kind < 6 ? '400000' : kind < 9 ? '520082' : '378282';
  const length = prefix.startsWith('3') ? 15 : 16;
  const partial = prefix + r.digits(length - prefix.length - 1);
  return partial + luhnCheckDigit(partial);
}

function iban(r: Random): string {
  if (r.float() < 0.6) {
    const bban = r.pick(['WEST', 'NWBK', 'DEMO', 'TEST']) + r.digits(6) + r.digits(8);
    return `GB${ibanCheckDigits('GB', bban)}${bban}`;
  }
  const bban = r.digits(8) + r.digits(10);
  return `DE${ibanCheckDigits('DE', bban)}${bban}`;
}

function ssn(r: Random): string {
  // Valid format: area 001-899 but never 666, group 01-99, serial 0001-9999.
  let area = r.int(1, 899);
  if (area === 666) area = 667;
  return `${String(area).padStart(3, '0')}-${String(r.int(1, 99)).padStart(2, '0')}-${String(r.int(1, 9999)).padStart(4, '0')}`;
}

function phone(r: Random): string {
  if (r.float() < 0.6) return `+1-${r.pick(['202', '312', '415', '512', '617', '720'])}-555-01${r.digits(2)}`;
  return `+44 7700 900${r.digits(3)}`;
}

function emailLocal(fullName: string): string {
  return fullName
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/[^a-z ]/g, '')
    .trim()
    .replace(/\s+/g, '.');
}

function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10);
}

const TICKET_TEMPLATES: ((c: DemoCustomer, o: DemoOrder | undefined, r: Random) => { subject: string; body: string })[] = [
  (c, o) => ({
    subject: 'Charged twice',
    body: `Hi, I was charged twice for order ${o ? `#${o.id}` : 'last week'}. The card is ${c.cardNumber.replace(/(\d{4})(?=\d)/g, '$1 ')}. Please refund one of them. - ${c.fullName}`,
  }),
  (c) => ({
    subject: 'Update my contact details',
    body: `Please change my email to ${emailLocal(c.fullName).split('.')[0]}.new@example.net and my phone to ${c.phone}. Thanks, ${c.fullName.split(' ')[0]}`,
  }),
  (c) => ({
    subject: 'Refund to bank account',
    body: `Could you send the refund to my account ${c.iban} instead of the card? My SSN is ${c.ssn} if you need to verify me.`,
  }),
  (c, o) => ({
    subject: 'Where is my parcel?',
    body: `Order ${o ? `#${o.id} from ${isoDay(o.createdAt)}` : 'from last month'} has not arrived in ${c.city}. Call me on ${c.phone} or write to ${c.email}.`,
  }),
  (c) => ({
    subject: 'Integration broken',
    body: `Our script stopped working after the update. Logs show key AKIAIOSFODNN7EXAMPLE being rejected. Contact ${c.email}.`,
  }),
  (c, _o, r) => ({
    subject: 'Cannot log in',
    body: `I have been getting "invalid password" for ${r.int(2, 9)} days. I am ${c.fullName}, born in ${r.int(1950, 2004)}, reachable at ${c.phone}.`,
  }),
];

/** The demo data set: pure and deterministic for a given seed and size. */
export function generateDemoData(opts: DemoDataOptions = {}): DemoData {
  const count = opts.customers ?? 200;
  if (!Number.isInteger(count) || count < 0) throw new Error(`customers must be a non-negative integer, got ${count}`);
  const r = new Random(opts.seed ?? 20261124);
  const customers: DemoCustomer[] = [];
  const emails = new Set<string>();
  const cards = new Set<string>();
  for (let id = 1; id <= count; id++) {
    const fullName = `${r.pick(GIVEN_NAMES)} ${r.pick(FAMILY_NAMES)}`;
    const domain = r.pick(EMAIL_DOMAINS);
    let email = `${emailLocal(fullName)}@${domain}`;
    for (let n = 2; emails.has(email); n++) email = `${emailLocal(fullName)}${n}@${domain}`;
    emails.add(email);
    let card = id <= WELL_KNOWN_TEST_CARDS.length ? WELL_KNOWN_TEST_CARDS[id - 1] : cardNumber(r);
    while (cards.has(card)) card = cardNumber(r);
    cards.add(card);
    customers.push({
      id,
      fullName,
      email,
      phone: phone(r),
      cardNumber: card,
      ssn: ssn(r),
      iban: id <= WELL_KNOWN_EXAMPLE_IBANS.length ? WELL_KNOWN_EXAMPLE_IBANS[id - 1] : iban(r),
      city: r.pick(CITIES),
      createdAt: new Date(EPOCH - r.int(30, 900) * DAY + r.int(0, DAY / 1000 - 1) * 1000),
    });
  }

  const orders: DemoOrder[] = [];
  for (const c of customers) {
    const n = r.int(0, 5);
    for (let i = 0; i < n; i++) {
      const after = Math.max(1, Math.floor((EPOCH - c.createdAt.getTime()) / 1000));
      orders.push({
        id: 0,
        customerId: c.id,
        amount: (r.int(499, 95_000) / 100).toFixed(2),
        status: r.pick(ORDER_STATUSES),
        createdAt: new Date(c.createdAt.getTime() + r.int(0, after) * 1000),
      });
    }
  }
  // Ids in time order, as a real sequence would have given them.
  orders.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.customerId - b.customerId);
  orders.forEach((o, i) => (o.id = i + 1));

  const tickets: DemoTicket[] = [];
  const byCustomer = new Map<number, DemoOrder[]>();
  for (const o of orders) byCustomer.set(o.customerId, [...(byCustomer.get(o.customerId) ?? []), o]);
  for (const c of customers) {
    if (r.float() >= 0.3) continue;
    const own = byCustomer.get(c.id) ?? [];
    const o = own.length ? r.pick(own) : undefined;
    const t = r.pick(TICKET_TEMPLATES)(c, o, r);
    const from = Math.max(c.createdAt.getTime(), o?.createdAt.getTime() ?? 0);
    tickets.push({ id: 0, customerId: c.id, subject: t.subject, body: t.body, status: r.pick(TICKET_STATUSES), createdAt: new Date(from + r.int(1, 20 * 24 * 3600) * 1000) });
  }
  tickets.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.customerId - b.customerId);
  tickets.forEach((t, i) => (t.id = i + 1));
  return { customers, orders, tickets };
}

const SCHEMA = `
DROP TABLE IF EXISTS support_tickets, orders, customers CASCADE;

CREATE TABLE customers (
  id          integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  full_name   text NOT NULL,
  email       text NOT NULL UNIQUE,
  phone       text NOT NULL,
  card_number text NOT NULL,
  ssn         text NOT NULL,
  iban        text NOT NULL,
  city        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customers IS 'Airlock demo: synthetic people, test card numbers and example IBANs; nobody real.';

-- Deleting a customer takes their orders and tickets with them, so an approved DELETE in the
-- demo succeeds instead of tripping over a foreign key.
CREATE TABLE orders (
  id          integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
  amount      numeric(10, 2) NOT NULL CHECK (amount >= 0),
  status      text NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'refunded', 'cancelled')),
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_customer_id ON orders (customer_id);

CREATE TABLE support_tickets (
  id          integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
  subject     text NOT NULL,
  body        text NOT NULL,
  status      text NOT NULL CHECK (status IN ('open', 'pending', 'closed')),
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX support_tickets_customer_id ON support_tickets (customer_id);
`;

/** PostgreSQL allows 65535 bind parameters per statement; stay well below. */
const MAX_PARAMS = 30_000;

async function insertRows(client: pg.Client, table: string, columns: string[], rows: unknown[][]): Promise<void> {
  const perBatch = Math.max(1, Math.floor(MAX_PARAMS / columns.length));
  for (let start = 0; start < rows.length; start += perBatch) {
    const batch = rows.slice(start, start + perBatch);
    const params: unknown[] = [];
    const tuples = batch.map((row) => `(${row.map((v) => (params.push(v), `$${params.length}`)).join(', ')})`);
    await client.query(`INSERT INTO ${table} (${columns.join(', ')}) VALUES ${tuples.join(', ')}`, params);
  }
}

/**
 * Creates (replacing any previous demo tables) and fills customers, orders and support_tickets
 * in one transaction: run it twice and you get the same database. Identity sequences continue
 * after the seeded ids, so the demo can insert new rows.
 */
export async function seedDemoDatabase(client: pg.Client, opts: DemoDataOptions = {}): Promise<DemoData> {
  const data = generateDemoData(opts);
  await client.query('BEGIN');
  try {
    // "table does not exist, skipping" notices on the first run are noise.
    await client.query('SET LOCAL client_min_messages = warning');
    await client.query(SCHEMA);
    await insertRows(
      client,
      'customers',
      ['id', 'full_name', 'email', 'phone', 'card_number', 'ssn', 'iban', 'city', 'created_at'],
      data.customers.map((c) => [c.id, c.fullName, c.email, c.phone, c.cardNumber, c.ssn, c.iban, c.city, c.createdAt]),
    );
    await insertRows(
      client,
      'orders',
      ['id', 'customer_id', 'amount', 'status', 'created_at'],
      data.orders.map((o) => [o.id, o.customerId, o.amount, o.status, o.createdAt]),
    );
    await insertRows(
      client,
      'support_tickets',
      ['id', 'customer_id', 'subject', 'body', 'status', 'created_at'],
      data.tickets.map((t) => [t.id, t.customerId, t.subject, t.body, t.status, t.createdAt]),
    );
    for (const table of DEMO_TABLES) {
      await client.query(`SELECT setval(pg_get_serial_sequence('${table}', 'id'), coalesce(max(id), 0) + 1, false) FROM ${table}`);
    }
    await client.query('ANALYZE customers, orders, support_tickets');
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw new Error(`seeding the demo database failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
  return data;
}
