// Garbage from a client ends that client's session with a protocol error (08P01); the gateway
// and every other session keep working.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
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

test('client encodings other than UTF8 are refused, at startup and by SET (single-byte ones too)', async () => {
  const atStartup = await h.psql('SELECT 1;\n', { env: { PGCLIENTENCODING: 'SJIS' } });
  assert.notEqual(atStartup.code, 0);
  assert.match(atStartup.stderr, /client_encoding SJIS is not supported through Airlock/);
  for (const enc of ['BIG5', 'LATIN1']) {
    // The policy refuses the change on the parse tree; the session goes on, still in UTF8.
    const bySet = await h.psql(`SET client_encoding TO '${enc}';\nSHOW client_encoding;\n`);
    assert.match(bySet.stderr, /Airlock denied this statement: rule client-encoding/);
    assert.match(bySet.stdout, /^UTF8$/m);
  }
  await bystanderWorks();
});

test('a statement pipelined behind a refused encoding change runs, in UTF8 (the change never happened)', async () => {
  const w = await login();
  const from = w.messages.length;
  w.send(serialize.query("SET client_encoding TO 'GBK'"), serialize.query("SELECT 'pipelined', current_setting('client_encoding')"));
  const msgs = await w.until((m) => m.name === 'readyForQuery' && w.messages.slice(from).filter((x) => x.name === 'readyForQuery').length === 2, 5000, from);
  const err = msgs.find((m) => m.name === 'error') as unknown as { code: string; message: string };
  assert.equal(err.code, '42501');
  assert.match(err.message, /rule client-encoding/);
  const row = msgs.find((m) => m.name === 'dataRow');
  assert.ok(row, 'the pipelined statement returned its row');
  assert.deepEqual((row.fields as string[]).map(String), ['pipelined', 'UTF8']);
  w.end();
});

/** Writes `total` bytes of filler in 1 MiB pieces, honouring backpressure, until done or the socket closes. */
async function stream(socket: Socket, total: number): Promise<number> {
  const piece = Buffer.alloc(1024 * 1024, 0x20);
  let sent = 0;
  while (sent < total && !socket.destroyed && socket.writable) {
    const ok = socket.write(piece);
    sent += piece.length;
    if (!ok) {
      await new Promise<void>((r) => {
        const done = () => {
          socket.off('drain', done);
          socket.off('close', done);
          r();
        };
        socket.once('drain', done);
        socket.once('close', done);
      });
    }
  }
  return sent;
}

test('a declared 1 GiB message is refused from its header (08P01), and the gateway does not buffer its body', async () => {
  const w = await login();
  const from = w.messages.length;
  const rssBefore = process.memoryUsage().rss;
  w.send(frame('Q', 1 << 30));
  const streaming = stream(w.socket, 256 * 1024 * 1024);
  await expectProtocolError(w, from, /invalid frontend message length 1073741824 for message type 'Q': larger than the limit of 16777216 bytes/);
  const sent = await streaming;
  assert.ok(sent < 256 * 1024 * 1024, `the gateway kept reading ${sent} bytes`);
  const grown = process.memoryUsage().rss - rssBefore;
  assert.ok(grown < 64 * 1024 * 1024, `RSS grew by ${Math.round(grown / 1048576)} MiB`);
  await bystanderWorks();
});

test('every frontend message type is bounded, before and after authentication', async () => {
  for (const t of ['P', 'B', 'd', 'p']) {
    const w = await login();
    const from = w.messages.length;
    w.send(frame(t, 64 * 1024 * 1024));
    await expectProtocolError(w, from, /larger than the limit of 16777216 bytes/);
  }
  // Before authentication: a password message and a startup packet are capped at a few KB.
  const pre = await WireClient.open(h.gateway.port);
  pre.send(serialize.startup({ user: 'alice', database: 'app' }));
  await pre.until((m) => m.name === 'authenticationCleartextPassword');
  const from = pre.messages.length;
  pre.send(frame('p', 1 << 30));
  await expectProtocolError(pre, from, /invalid frontend message length 1073741824/);
  const startup = await WireClient.open(h.gateway.port);
  const big = Buffer.alloc(8);
  big.writeInt32BE(1 << 30, 0);
  big.writeInt32BE(196608, 4);
  startup.send(big);
  const msgs = await startup.until((m) => m.name === 'error');
  assert.match(String((msgs.find((m) => m.name === 'error') as Message & { message: string }).message), /invalid startup packet length 1073741824/);
  await startup.waitClosed();
  await bystanderWorks();
});

test('a message just under the limit still works; listen.postgres.maxMessageBytes changes the limit', async () => {
  const near = await bystander.query(`SELECT length($1::text) AS n`, ['x'.repeat(15 * 1024 * 1024)]);
  assert.equal(near.rows[0].n, 15 * 1024 * 1024);
  const small = await startGateway({ pg: h.pg, config: () => ({ listen: { postgres: { host: '127.0.0.1', port: 0, maxMessageBytes: 65536 } } }) });
  try {
    const w = await WireClient.login(small.gateway.port, { user: 'alice', password: await small.token('alice'), database: 'app' });
    const ok = await w.roundtrip([serialize.query(`SELECT length('${'y'.repeat(60_000)}') AS n`)]);
    assert.ok(ok.some((m) => m.name === 'dataRow'));
    const from = w.messages.length;
    w.send(serialize.query(`SELECT length('${'y'.repeat(70_000)}') AS n`));
    await expectProtocolError(w, from, /larger than the limit of 65536 bytes/);
  } finally {
    await small.close();
  }
});
