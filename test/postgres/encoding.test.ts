// The upstream session's client_encoding is UTF8, fixed by Airlock: the policy parses statement
// text as UTF-8, so the server must read the very same bytes the very same way. Whatever a client
// asks for at startup, statement bytes that are not UTF-8, and a server that reports another
// encoding all end in a clear refusal, never in a statement the two parsers read differently.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { WireClient, serialize, type Message } from '../support/pgwire.ts';

let h: GatewayHarness;

before(async () => {
  h = await startGateway({
    // The database's own default would apply to any session that does not say otherwise.
    setup: `ALTER DATABASE postgres SET client_encoding = 'LATIN1';
            CREATE FUNCTION switch_encoding(e text) RETURNS text LANGUAGE sql AS $$ SELECT set_config('client_' || 'encoding', e, false) $$;`,
  });
});

after(async () => {
  await h?.close();
});

async function login(): Promise<WireClient> {
  return WireClient.login(h.gateway.port, { user: 'alice', password: await h.token('alice'), database: 'app' });
}

/** A Query message whose text is raw bytes (not necessarily UTF-8). */
function rawQuery(bytes: Buffer): Buffer {
  const out = Buffer.alloc(5 + bytes.length + 1);
  out[0] = 0x51;
  out.writeInt32BE(4 + bytes.length + 1, 1);
  bytes.copy(out, 5);
  return out;
}

function rawParse(bytes: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from([0]), bytes, Buffer.from([0, 0, 0])]);
  const out = Buffer.alloc(5);
  out[0] = 0x50;
  out.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([out, body]);
}

type ErrorMessage = Message & { code: string; message: string; severity: string };

test('the upstream session runs in UTF8 even when the database default says otherwise (psql and node-postgres)', async () => {
  const viaPsql = await h.psql('SHOW client_encoding;\n');
  assert.equal(viaPsql.stdout, 'UTF8\n', viaPsql.stderr);
  const c = await h.client();
  try {
    assert.equal((await c.query('SHOW client_encoding')).rows[0].client_encoding, 'UTF8');
  } finally {
    await c.end();
  }
});

test('UTF8 aliases are accepted at startup; every other client encoding is refused with a clear error', async () => {
  for (const ok of ['UTF8', 'utf-8', 'unicode']) {
    const r = await h.psql('SHOW client_encoding;\n', { env: { PGCLIENTENCODING: ok } });
    assert.equal(r.stdout, 'UTF8\n', `${ok}: ${r.stderr}`);
  }
  for (const bad of ['LATIN1', 'SJIS', 'mskanji', 'BIG5', 'GBK', 'WIN1252', 'EUC_JP']) {
    const r = await h.psql("SELECT 'not reached';\n", { env: { PGCLIENTENCODING: bad } });
    assert.notEqual(r.code, 0, bad);
    assert.match(r.stderr, new RegExp(`client_encoding ${bad} is not supported through Airlock: sessions always use UTF8`), bad);
    assert.doesNotMatch(r.stdout, /not reached/);
  }
});

test('client_encoding in the startup options (-c client_encoding=...) is refused too', async () => {
  const r = await h.psql("SELECT 'not reached';\n", { env: { PGOPTIONS: '-c client_encoding=SJIS' } });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /client_encoding SJIS is not supported through Airlock/);
  const w = await WireClient.open(h.gateway.port);
  w.send(serialize.startup({ user: 'alice', database: 'app', options: '--client-encoding=BIG5' }));
  const msgs = await w.until((m) => m.name === 'error');
  assert.match(String((msgs.find((m) => m.name === 'error') as ErrorMessage).message), /client_encoding BIG5 is not supported/);
  await w.waitClosed();
});

test('a Query whose bytes are not valid UTF-8 is denied before it is decoded; the session goes on', async () => {
  const w = await login();
  try {
    // SJIS for "表" is 0x95 0x5C: the trail byte is a backslash. As UTF-8 the text is invalid.
    const variants = [
      Buffer.concat([Buffer.from("SELECT E'"), Buffer.from([0x95, 0x5c]), Buffer.from("'; SELECT 'hidden'")]),
      Buffer.from([0x53, 0x45, 0x4c, 0x45, 0x43, 0x54, 0x20, 0xff, 0x31]), // SELECT \xff1
      Buffer.concat([Buffer.from('SELECT 1 /* '), Buffer.from([0xc3]), Buffer.from(' */')]), // truncated sequence
      Buffer.concat([Buffer.from("SELECT '"), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from("'")]), // UTF-16 surrogate
    ];
    for (const v of variants) {
      const out = await w.roundtrip([rawQuery(v)]);
      const err = out.find((m) => m.name === 'error') as ErrorMessage;
      assert.ok(err, JSON.stringify(out.map((m) => m.name)));
      assert.equal(err.code, '42501');
      assert.match(err.message, /not valid UTF-8/);
      assert.ok(!out.some((m) => m.name === 'dataRow'));
    }
    const ok = await w.roundtrip([serialize.query("SELECT 'still here'")]);
    assert.ok(ok.some((m) => m.name === 'dataRow'));
  } finally {
    w.end();
  }
  const ops = h.store.listSessions({ identity: 'alice' }).flatMap((s) => h.store.getSession(s.id)!.operations);
  assert.ok(ops.some((o) => o.decision === 'deny' && o.rule === 'airlock-encoding' && !o.text.includes('\ufffd')));
});

test('a Parse whose text is not valid UTF-8 is denied; the pipeline skips to Sync as after any error', async () => {
  const w = await login();
  try {
    const out = await w.roundtrip([rawParse(Buffer.concat([Buffer.from("SELECT E'"), Buffer.from([0x95, 0x5c]), Buffer.from("'")])), serialize.bind({}), serialize.execute({}), serialize.sync()]);
    const err = out.find((m) => m.name === 'error') as ErrorMessage;
    assert.equal(err.code, '42501');
    assert.match(err.message, /not valid UTF-8/);
    assert.deepEqual(out.map((m) => m.name), ['error', 'readyForQuery']);
    const after = await w.roundtrip([serialize.parse({ text: 'SELECT 2' }), serialize.bind({}), serialize.execute({}), serialize.sync()]);
    assert.ok(after.some((m) => m.name === 'dataRow'));
  } finally {
    w.end();
  }
});

test('statement and portal names must be UTF-8 too (two invalid names must not look alike to Airlock)', async () => {
  const w = await login();
  const from = w.messages.length;
  const body = Buffer.concat([Buffer.from([0xff, 0]), Buffer.from('SELECT 1\0'), Buffer.from([0, 0])]);
  const head = Buffer.alloc(5);
  head[0] = 0x50;
  head.writeInt32BE(4 + body.length, 1);
  w.send(Buffer.concat([head, body]), serialize.sync());
  const msgs = await w.until((m) => m.name === 'error', 5000, from);
  const err = msgs.find((m) => m.name === 'error') as ErrorMessage;
  assert.equal(err.code, '08P01');
  assert.match(err.message, /not valid UTF-8/);
  await w.waitClosed();
});

test('a ParameterStatus reporting any encoding but UTF8 ends the session before anything else is relayed', async () => {
  // set_config inside a function: invisible to any reading of the statement text.
  for (const enc of ['LATIN1', 'SJIS', 'WIN1252']) {
    const w = await login();
    const from = w.messages.length;
    w.send(serialize.query(`SELECT switch_encoding('${enc}')`), serialize.query("SELECT 'pipelined'"));
    await w.waitClosed();
    const msgs = w.messages.slice(from);
    const err = msgs.find((m) => m.name === 'error') as ErrorMessage;
    assert.ok(err, JSON.stringify(msgs.map((m) => m.name)));
    assert.equal(err.code, '22023');
    assert.equal(err.severity, 'FATAL');
    assert.match(err.message, new RegExp(`client_encoding ${enc} is not supported through Airlock`));
    const at = msgs.indexOf(err);
    assert.ok(!msgs.slice(at + 1).some((m) => m.name !== 'error'), `nothing after the error: ${JSON.stringify(msgs.map((m) => m.name))}`);
    assert.ok(!msgs.some((m) => m.name === 'parameterStatus'), 'the encoding change itself is not relayed');
    assert.ok(!msgs.some((m) => m.name === 'readyForQuery'));
    assert.ok(!msgs.some((m) => m.name === 'dataRow' && String((m.fields as string[])[0]) === 'pipelined'));
  }
  const r = await h.psql("SELECT switch_encoding('UTF8');\nSELECT 'fine';\n");
  assert.equal(r.stdout, 'UTF8\nfine\n', r.stderr);
});

test('non-ASCII text pipelined behind code that changes the encoding never reaches the server in that encoding', async () => {
  const marker = `probe_${Date.now()}`;
  const sjisTrap = Buffer.from(`SELECT '${marker} ソ' AS x`, 'utf8');
  const ran = (msgs: Message[]) => msgs.some((m) => m.name === 'dataRow' && String((m.fields as string[])[0]).includes(marker));
  const names = (msgs: Message[]) => JSON.stringify(msgs.map((m) => m.name));

  // Simple protocol: the second statement waits for the first one's ReadyForQuery, where the
  // server reports the new encoding and the session ends before the second is ever sent.
  let w = await login();
  let from = w.messages.length;
  w.send(serialize.query("SELECT switch_encoding('SJIS')"), rawQuery(sjisTrap));
  await w.waitClosed();
  let msgs = w.messages.slice(from);
  assert.ok(msgs.some((m) => m.name === 'error' && (m as ErrorMessage).code === '22023'), names(msgs));
  assert.ok(!ran(msgs), 'the pipelined statement did not run');

  // Extended protocol with no Sync in between: no ReadyForQuery can come, so it is refused at
  // once; the pipeline fails, its implicit transaction (and the encoding change) rolls back.
  w = await login();
  from = w.messages.length;
  w.send(serialize.parse({ text: "SELECT switch_encoding('SJIS')" }), serialize.bind({}), serialize.execute({}), rawParse(sjisTrap), serialize.bind({}), serialize.execute({}), serialize.sync());
  msgs = await w.until((m) => m.name === 'readyForQuery', 10_000, from);
  const err = msgs.find((m) => m.name === 'error') as ErrorMessage | undefined;
  assert.match(err?.message ?? '', /non-ASCII characters may not follow an executed statement in the same pipeline before Sync/, names(msgs));
  assert.ok(!ran(msgs));
  from = w.messages.length;
  w.send(serialize.query('SHOW client_encoding'));
  msgs = await w.until((m) => m.name === 'readyForQuery', 10_000, from);
  const shown = msgs.find((m) => m.name === 'dataRow');
  assert.ok(shown, names(msgs));
  assert.equal(String((shown.fields as string[])[0]), 'UTF8');
  w.end();

  // ASCII statements keep pipelining, and non-ASCII ones after a Sync just wait their turn.
  const r = await h.psql("SELECT 'ascii only';\nSELECT 'naïve';\n");
  assert.equal(r.stdout, 'ascii only\nnaïve\n', r.stderr);
});
