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
            INSERT INTO customers VALUES (1, 'Ann Lee', 'ann@example.com', '123-45-6789'), (2, 'Bob Roe', 'bob@example.org', '987-65-4321');`,
    config: (upstream) => ({
      connections: [
        { name: 'app', type: 'postgres', host: upstream.host, port: upstream.port, database: 'postgres', user: upstream.user, password: { file: 'upstream.pass' }, tls: 'prefer', allowSuperuser: true },
      ],
      masking: {
        hashKey: { file: 'hash.key' },
        columns: [
          { column: 'public.customers.email', strategy: 'redact' },
          { column: 'public.customers.ssn', strategy: 'redact' },
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
const RAW = /ann@example\.com|bob@example\.org|123-45-6789|987-65-4321/;

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
  assert.equal(r.stdout.trim(), '1|[redacted]\n2|[redacted]', 'plain qualified columns still read, masked');
});
