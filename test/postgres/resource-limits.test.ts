// Resource limits (listen.postgres): one client cannot hurt all. A flood of pipelined Syncs is
// served without stalling other sessions and never queues more than maxPipelinedMessages
// responses; connections beyond maxClientConnections are refused with 53300; a silent client is
// dropped after clientLoginTimeout; refused pre-auth connections are audited at a bounded rate.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { WireClient, serialize, type Message } from '../support/pgwire.ts';

const CAP = 1000;
let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    config: () => ({ listen: { postgres: { host: '127.0.0.1', port: 0, maxClientConnections: 4, clientLoginTimeout: '1s', maxPipelinedMessages: CAP } } }),
  });
});

after(async () => {
  await h?.close();
});

function rawSocket(): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: h.gateway.host, port: h.gateway.port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

function closed(s: Socket, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const t = setTimeout(() => reject(new Error('socket not closed in time')), timeoutMs);
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => {});
    s.once('close', () => {
      clearTimeout(t);
      resolve(Buffer.concat(chunks));
    });
  });
}

/** SQLSTATE of the first ErrorResponse in `b`. */
function sqlstate(b: Buffer): string | undefined {
  if (b[0] !== 0x45) return undefined;
  const fields = b.subarray(5, 1 + b.readInt32BE(1)).toString('utf8').split('\0');
  return fields.find((f) => f.startsWith('C'))?.slice(1);
}

async function login(): Promise<WireClient> {
  return WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
}

test('100k Syncs in one write: another session keeps running statements, the flood is answered in full and the queue never exceeds the cap', async () => {
  const bystander = await h.client();
  const flooder = await login();
  const N = 100_000;
  const sync = serialize.sync();
  // Count ReadyForQuery bytes on the raw socket (decoding 100k messages in the test would be the slow part).
  let received = 0;
  flooder.socket.on('data', (c: Buffer) => (received += c.length));
  const receivedAll = new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`flood not answered in 120 s: ${received} bytes`)), 120_000);
    const check = () => {
      if (received >= N * 6) {
        clearTimeout(t);
        resolve();
      } else setTimeout(check, 50);
    };
    check();
  });
  flooder.send(Buffer.concat(Array.from({ length: N }, () => sync)));
  // The other session works while the flood is being served.
  for (let i = 0; i < 50; i++) {
    const r = await bystander.query('select $1::int as n', [i]);
    assert.equal(r.rows[0].n, i);
  }
  await receivedAll;
  assert.equal(received, N * 6, 'exactly one ReadyForQuery per Sync');
  const session = [...h.gateway.sessions()].find((s) => s.stats().bytesFromClient >= N * 5);
  assert.ok(session, 'the flooding session is still open');
  const high = session.stats().pipelineHigh;
  assert.ok(high <= CAP, `at most ${CAP} responses outstanding, saw ${high}`);
  assert.ok(high >= CAP / 2, `the cap was reached (saw ${high}), so reading paused and resumed`);
  // The flooding session still works afterwards.
  const from = flooder.messages.length;
  flooder.send(serialize.query('select 41 + 1 as x'));
  const msgs = await flooder.until((m) => m.name === 'readyForQuery', 30_000, from);
  assert.ok(msgs.some((m) => m.name === 'dataRow'));
  flooder.socket.destroy();
  await bystander.end();
});

test('more pipelined messages than the cap with no Sync in flight end the session with 54000', async () => {
  const w = await login();
  const parse = serialize.parse({ text: 'select 1' });
  w.send(Buffer.concat(Array.from({ length: CAP * 2 }, () => parse)));
  const msgs = await w.until((m) => m.name === 'error', 30_000);
  const err = msgs.find((m) => m.name === 'error') as Message & { code: string; message: string };
  assert.equal(err.code, '54000');
  assert.match(err.message, /maxPipelinedMessages/);
  await w.waitClosed();
  // Nobody else was hurt.
  const r = await h.psql('select 7');
  assert.equal(r.stdout.trim(), '7');
});

test('a client that does not finish startup is dropped after clientLoginTimeout', async () => {
  const s = await rawSocket();
  await closed(s, 15_000); // 1 s configured; the default would be 60 s
});

test('connections beyond maxClientConnections are refused with 53300', async () => {
  const idle = await Promise.all([rawSocket(), rawSocket(), rawSocket(), rawSocket()]);
  const extra = await rawSocket();
  const answer = await closed(extra, 10_000);
  assert.equal(sqlstate(answer), '53300');
  assert.match(answer.toString('utf8'), /maxClientConnections/);
  for (const s of idle) s.destroy();
  // Once they are gone, clients get in again.
  await new Promise((r) => setTimeout(r, 200));
  const r = await h.psql('select 8');
  assert.equal(r.stdout.trim(), '8');
});

test('refused pre-auth connections are audited at a bounded rate', async () => {
  const before = h.store.listAudit().filter((e) => e.kind === 'postgres.refused').length;
  const garbage = Buffer.from([0, 0, 0, 8, 0, 1, 0, 0]); // protocol 1.0: refused before authentication
  for (let i = 0; i < 120; i++) {
    const s = await rawSocket();
    s.write(garbage);
    const answer = await closed(s, 10_000);
    assert.equal(answer[0], 0x45, 'each client still gets its error');
  }
  const rows = h.store.listAudit().filter((e) => e.kind === 'postgres.refused');
  const added = rows.length - before;
  assert.ok(added >= 1 && added <= 20, `${added} audit rows for 120 refusals`);
});
