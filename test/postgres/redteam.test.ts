// Red-team round 2: bypasses found against the merged gateway, each reproduced end to end with
// psql / node-postgres / raw protocol messages against a real PostgreSQL, then fixed by class.
// See docs/threat-model.md, "Red-team log".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';

let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    setup: `CREATE TABLE customers (id int PRIMARY KEY, full_name text, email text, ssn text);
            INSERT INTO customers VALUES (1, 'Ann Lee', 'ann@example.com', '123-45-6789'), (2, 'Bob Roe', 'bob@example.org', '987-65-4321');
            -- Masks are configured on the parents; the children hold the rows.
            CREATE TABLE accounts (id int, email text) PARTITION BY RANGE (id);
            CREATE TABLE accounts_low PARTITION OF accounts FOR VALUES FROM (0) TO (100) PARTITION BY RANGE (id);
            CREATE TABLE accounts_low_a PARTITION OF accounts_low FOR VALUES FROM (0) TO (50);
            INSERT INTO accounts VALUES (1, 'pat@example.com');
            CREATE TABLE vip_customers (tier int) INHERITS (customers);
            INSERT INTO vip_customers VALUES (9, 'Ivy Poe', 'ivy@example.com', '555-55-5555', 1);
            CREATE VIEW vip_view AS SELECT id, email FROM vip_customers;`,
    config: (upstream) => ({
      connections: [
        { name: 'app', type: 'postgres', host: upstream.host, port: upstream.port, database: 'postgres', user: upstream.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true },
      ],
      masking: {
        hashKey: { file: 'hash.key' },
        columns: [
          { column: 'public.customers.email', strategy: 'redact' },
          { column: 'public.customers.ssn', strategy: 'redact' },
          { column: 'public.accounts.email', strategy: 'redact' },
        ],
      },
      policy: {
        profile: 'recommended',
        default: 'deny',
        rules: [
          { name: 'agent-reads', match: { groups: ['agents'], kinds: ['read'] }, action: 'allow', limits: { maxRowsPerStatement: 50 } },
          { name: 'agent-session', match: { groups: ['agents'], kinds: ['transaction', 'utility'] }, action: 'allow' },
          { name: 'agent-writes', match: { groups: ['agents'], kinds: ['write'] }, action: 'review', review: { approvers: ['dba'] } },
        ],
      },
    }),
  });
});

after(async () => {
  await h?.close();
});

const agent = { user: 'agent-1' };
const RAW = /ann@example\.com|bob@example\.org|123-45-6789|987-65-4321|pat@example\.com|ivy@example\.com|555-55-5555/;

test('attribute notation (`c.to_json`) is a function call on the whole row: refused where masks apply', async () => {
  const r = await h.psql(
    [
      'SELECT c.to_json FROM customers c;',
      'SELECT customers.row_to_json FROM customers;',
      'SELECT public.customers.to_jsonb FROM customers;',
      'SELECT c.quote_literal, c.concat, c.record_out FROM customers c;',
      'SELECT x.json_build_array FROM (SELECT * FROM customers) x;',
      'SELECT (SELECT c.to_json) FROM customers c;',
      "SELECT id FROM customers c WHERE c.to_json::text LIKE '%ann@%';",
      'SELECT c.id, c.email FROM customers c ORDER BY c.id;',
    ].join('\n'),
    agent,
  );
  assert.doesNotMatch(r.stdout + r.stderr, RAW);
  assert.equal((r.stderr.match(/rule masked-expression/g) ?? []).length, 7, r.stderr);
  assert.equal(r.stdout.trim(), '1|[redacted]\n2|[redacted]\n9|[redacted]', 'plain qualified columns still read, masked');
});

test('partitions and inheritance children carry the masks of their ancestors (rows and COPY)', async () => {
  const r = await h.psql(
    [
      'SELECT email FROM accounts_low_a;',
      'SELECT * FROM accounts_low;',
      'SELECT * FROM vip_customers;',
      'SELECT * FROM vip_view;',
      'COPY accounts_low_a TO STDOUT;',
      'COPY vip_customers (email, ssn, tier) TO STDOUT WITH (FORMAT csv);',
      'SELECT email FROM accounts;',
    ].join('\n'),
    agent,
  );
  assert.doesNotMatch(r.stdout + r.stderr, RAW);
  assert.equal(r.stderr, '');
  assert.deepEqual(r.stdout.trim().split('\n'), [
    '[redacted]',
    '1|[redacted]',
    '9|Ivy Poe|[redacted]|[redacted]|1',
    '9|[redacted]',
    '1\t[redacted]',
    '"[redacted]","[redacted]",1',
    '[redacted]',
  ]);
});

test('ORDER BY / GROUP BY / DISTINCT ON by position use the masked value: refused like ORDER BY email', async () => {
  const r = await h.psql(
    [
      'SELECT id, email FROM customers ORDER BY 2;',
      'SELECT id, email FROM customers ORDER BY 1;',
      'SELECT email, count(*) FROM customers GROUP BY 1;',
      'SELECT DISTINCT ON (1) ssn FROM customers;',
    ].join('\n'),
    agent,
  );
  assert.equal((r.stderr.match(/rule masked-expression/g) ?? []).length, 3, r.stderr);
  assert.match(r.stdout, /^1\|\[redacted\]$/m, 'ordering by a column that is not masked still works');
});
