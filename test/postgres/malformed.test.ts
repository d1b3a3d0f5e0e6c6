// Garbage from a client ends that client's session with a protocol error (08P01); the gateway
// and every other session keep working.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type pg from 'pg';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { WireClient, serialize, type Message } from '../support/pgwire.ts';

let h: GatewayHarness;
let bystander: pg.Client;

before(async () => {
  h = await startGateway();
  bystander = await h.client();
});

after(async () => {
  await bystander?.end();
  await h?.close();
});

async function login(): Promise<WireClient> {
  return WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
}

function frame(type: string, length: number, body = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(5);
  b.write(type, 0, 'latin1');
  b.writeInt32BE(length, 1);
  return Buffer.concat([b, body]);
}

async function expectProtocolError(w: WireClient, from: number, pattern: RegExp): Promise<void> {
  const msgs = await w.until((m) => m.name === 'error', 5000, from);
  const err = msgs.find((m) => m.name === 'error') as Message & { code: string; message: string; severity: string };
  assert.equal(err.code, '08P01');
  assert.equal(err.severity, 'FATAL');
  assert.match(err.message, pattern);
  await w.waitClosed();
}

async function bystanderWorks(): Promise<void> {
  assert.equal((await bystander.query('SELECT 1 AS one')).rows[0].one, 1);
}

test('a message length below 4 ends the session with 08P01', async () => {
  const w = await login();
  const from = w.messages.length;
  w.send(frame('Q', 3));
  await expectProtocolError(w, from, /invalid frontend message length 3/);
  await bystanderWorks();
});

test('an unknown message type ends the session with 08P01', async () => {
  const w = await login();
  const from = w.messages.length;
  w.send(frame('!', 4));
  await expectProtocolError(w, from, /invalid frontend message type '!'/);
  await bystanderWorks();
});

test('a 1 GiB+ length ends the session at once, without buffering it', async () => {
  const w = await login();
  const from = w.messages.length;
  w.send(frame('Q', 0x7fff0000, Buffer.from('SELECT 1')));
  await expectProtocolError(w, from, /invalid frontend message length 2147418112/);
  await bystanderWorks();
});

test('a query message without its terminator is a protocol error', async () => {
  const w = await login();
  const from = w.messages.length;
  w.send(frame('Q', 12, Buffer.from('SELECT 1')));
  await expectProtocolError(w, from, /missing string terminator/);
  await bystanderWorks();
});

test('a truncated frame followed by a close ends only that session', async () => {
  const w = await login();
  w.socket.end(frame('Q', 100, Buffer.from('SELECT')));
  await w.waitClosed();
  await bystanderWorks();
  const sessions = h.store.listSessions({ identity: 'alice' });
  assert.ok(sessions.some((s) => s.endReason === 'client disconnected'), JSON.stringify(sessions.map((s) => s.endReason)));
});

test('garbage instead of a startup packet is refused and the listener keeps accepting', async () => {
  for (const garbage of [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), Buffer.from([0, 0, 0, 2]), Buffer.from([0, 0, 0, 8, 0, 9, 0, 0])]) {
    await new Promise<void>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: h.gateway.port }, () => s.write(garbage));
      s.on('data', () => {});
      s.on('error', () => resolve());
      s.on('close', () => resolve());
    });
  }
  await bystanderWorks();
  const fresh = await h.psql('SELECT 3;\n');
  assert.equal(fresh.stdout, '3\n');
});

test('a password message of the wrong type during startup is refused', async () => {
  const w = await WireClient.open(h.gateway.port);
  w.send(serialize.startup({ user: 'alice', database: 'app' }));
  await w.until((m) => m.name === 'authenticationCleartextPassword');
  const from = w.messages.length;
  w.send(serialize.query('SELECT 1'));
  await expectProtocolError(w, from, /expected a password message/);
});

test('client encodings that could hide a quote from the policy parser are refused, at startup and by SET', async () => {
  const atStartup = await h.psql('SELECT 1;\n', { env: { PGCLIENTENCODING: 'SJIS' } });
  assert.notEqual(atStartup.code, 0);
  assert.match(atStartup.stderr, /client_encoding SJIS is not supported through Airlock/);
  const bySet = await h.psql("SET client_encoding TO 'BIG5';\nSELECT 'not reached';\n");
  assert.match(bySet.stderr, /client_encoding BIG5 is not supported through Airlock; the session was closed/);
  assert.doesNotMatch(bySet.stdout, /not reached/);
  const safe = await h.psql("SET client_encoding TO 'LATIN1';\nSELECT 'fine';\n");
  assert.equal(safe.stdout, 'SET\nfine\n', safe.stderr);
  await bystanderWorks();
});

test('statements pipelined behind an encoding change wait for it (no race with the encoding check)', async () => {
  const w = await login();
  const from = w.messages.length;
  w.send(serialize.query("SET client_encoding TO 'GBK'"), serialize.query("SELECT 'pipelined'"));
  const msgs = await w.until((m) => m.name === 'error', 5000, from);
  assert.ok(!msgs.some((m) => m.name === 'dataRow'), 'the pipelined statement must not run');
  await w.waitClosed();
});
