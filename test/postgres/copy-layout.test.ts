// A query string with several COPY ... TO STDOUT: each CopyOutResponse is masked with the column
// layout and format of its own COPY statement, not the first one's.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { WireClient, serialize, type Message } from '../support/pgwire.ts';

let h: GatewayHarness;
let w: WireClient;

before(async () => {
  h = await startGateway({
    setup: `CREATE TABLE items (id int, label text);
            INSERT INTO items VALUES (1, 'one'), (2, 'two');
            CREATE TABLE customers (id int, email text, note text);
            INSERT INTO customers VALUES (1, 'ann@example.com', 'vip'), (2, 'bob@example.org', 'plain');`,
    config: () => ({
      masking: { hashKey: { file: 'hash.key' }, columns: [{ column: 'public.customers.email', strategy: 'redact' }] },
      policy: { default: 'allow', rules: [] },
    }),
  });
  w = await WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
});

after(async () => {
  w?.end();
  await h?.close();
});

/** The CopyData lines of each COPY in the answer, in order. */
async function copies(sql: string): Promise<string[][]> {
  const out = await w.roundtrip([serialize.query(sql)]);
  const err = out.find((m) => m.name === 'error') as (Message & { message: string }) | undefined;
  assert.equal(err, undefined, err?.message);
  const result: string[][] = [];
  for (const m of out) {
    if (m.name === 'copyOutResponse') result.push([]);
    else if (m.name === 'copyData') result[result.length - 1].push(Buffer.from(m.chunk as Uint8Array).toString('utf8'));
  }
  return result;
}

function noEmail(lines: string[][]): void {
  const all = lines.flat().join('');
  assert.doesNotMatch(all, /ann@example\.com|bob@example\.org/, all);
}

test('a second COPY of another table is masked with its own columns', async () => {
  const got = await copies('COPY items TO STDOUT; COPY customers TO STDOUT');
  assert.deepEqual(got[0], ['1\tone\n', '2\ttwo\n']);
  assert.deepEqual(got[1], ['1\t[redacted]\tvip\n', '2\t[redacted]\tplain\n']);
});

test('a second COPY with another column list is masked by its own list', async () => {
  const got = await copies('COPY customers (id, note) TO STDOUT; COPY customers (email, id) TO STDOUT; COPY customers (note, email) TO STDOUT');
  assert.deepEqual(got[0], ['1\tvip\n', '2\tplain\n']);
  assert.deepEqual(got[1], ['[redacted]\t1\n', '[redacted]\t2\n']);
  assert.deepEqual(got[2], ['vip\t[redacted]\n', 'plain\t[redacted]\n']);
  noEmail(got);
});

test('a second COPY with another format (csv, delimiter, header) is parsed in that format', async () => {
  const got = await copies("COPY customers (id) TO STDOUT; COPY customers TO STDOUT (FORMAT csv, HEADER); COPY customers (note, email) TO STDOUT (DELIMITER '|')");
  assert.deepEqual(got[1], ['id,email,note\n', '1,"[redacted]",vip\n', '2,"[redacted]",plain\n']);
  assert.deepEqual(got[2], ['vip|[redacted]\n', 'plain|[redacted]\n']);
  noEmail(got);
});

test('statements between the COPYs do not shift the count', async () => {
  const got = await copies("SELECT 1; COPY items TO STDOUT; SET application_name = 'x'; COPY customers (email) TO STDOUT; SELECT 2");
  assert.deepEqual(got[0], ['1\tone\n', '2\ttwo\n']);
  assert.deepEqual(got[1], ['[redacted]\n', '[redacted]\n']);
});
