// The socket-free parts of upstream pooling (pool.ts): which statements pin a session to its
// backend, how a lease follows the protocol to know when its backend may go back, and how a
// client's prepared statements are replayed on a backend that lacks them.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { serialize } from 'pg-protocol';
import { initSqlParser } from '../../gateway/policy/sql/classify.ts';
import { LeaseTracker, pinReason, poolKey, StatementRegistry, UNRESETTABLE_PINS } from '../../gateway/postgres/pool.ts';

before(async () => {
  await initSqlParser();
});

test('statements that create session state pin; transaction-scoped ones and plain DML do not', () => {
  const pins: Array<[string, string]> = [
    ["SET search_path = app, public", 'SET/RESET of a session setting'],
    ['RESET ALL', 'SET/RESET of a session setting'],
    ['SET ROLE reporting', 'SET/RESET of a session setting'],
    ['SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE', 'SET/RESET of a session setting'],
    ["SELECT set_config('app.user', 'ann', false)", 'set_config() of a session setting'],
    ["SELECT pg_catalog.set_config('app.user', 'ann', true)", 'set_config() of a session setting'],
    ['LISTEN jobs', 'LISTEN'],
    ['PREPARE q AS SELECT 1', 'SQL PREPARE/DEALLOCATE'],
    ['DEALLOCATE q', 'SQL PREPARE/DEALLOCATE'],
    ['CREATE TEMP TABLE t (v int)', 'temporary object'],
    ['CREATE TEMPORARY VIEW v AS SELECT 1', 'temporary object'],
    ['SELECT 1 AS v INTO TEMP t2', 'temporary object'],
    ['CREATE TABLE pg_temp.t3 (v int)', 'temporary object'],
    ['SELECT pg_advisory_lock(1)', 'session-level advisory lock'],
    ['SELECT pg_try_advisory_lock_shared(1, 2)', 'session-level advisory lock'],
    ['DECLARE c CURSOR WITH HOLD FOR SELECT 1', 'DECLARE ... WITH HOLD'],
    ["LOAD 'auto_explain'", 'LOAD'],
    ["SELECT dblink_connect('c', 'dbname=postgres')", 'dblink connection'],
    ["DO $$ BEGIN PERFORM set_config('a.b', 'c', false); END $$", 'set_config() of a session setting'],
    ["DO $$ BEGIN EXECUTE 'SE' || 'T search_path = x'; END $$", 'DO block'],
    ['SELECT 1; SET statement_timeout = 0', 'SET/RESET of a session setting'],
  ];
  for (const [sql, why] of pins) assert.equal(pinReason(sql), why, sql);
  const free = [
    'SELECT * FROM items WHERE id = $1',
    "UPDATE items SET name = 'x' WHERE id = 1",
    "SET LOCAL statement_timeout = '5s'",
    'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
    'BEGIN',
    'COMMIT',
    'SELECT pg_advisory_xact_lock(1)',
    'DECLARE c CURSOR FOR SELECT 1',
    "SELECT 'temp' AS word",
    'UNLISTEN *',
    'DISCARD ALL',
    'INSERT INTO t SELECT * FROM s',
    // What the session sends upstream in place of a denied statement: it runs nothing.
    '/* Airlock denied this statement; this placeholder fails to parse on purpose */ AIRLOCK_DENIED',
  ];
  for (const sql of free) assert.equal(pinReason(sql), undefined, sql);
  // State DISCARD ALL cannot remove: the backend is closed at the end, not reused.
  assert.ok(UNRESETTABLE_PINS.has('LOAD') && UNRESETTABLE_PINS.has('dblink connection') && UNRESETTABLE_PINS.has('DO block'));
  assert.ok(!UNRESETTABLE_PINS.has('LISTEN'));
});

test('pool keys separate connections, upstream roles and startup settings, not application names', () => {
  const a = poolKey('app', 'agent_ro', { client_encoding: 'UTF8', application_name: 'x' });
  assert.equal(a, poolKey('app', 'agent_ro', { application_name: 'y', client_encoding: 'UTF8' }));
  assert.notEqual(a, poolKey('app', 'agent_rw', { client_encoding: 'UTF8' }));
  assert.notEqual(a, poolKey('other', 'agent_ro', { client_encoding: 'UTF8' }));
  assert.notEqual(a, poolKey('app', 'agent_ro', { client_encoding: 'UTF8', TimeZone: 'UTC' }));
  // No separator confusion between parts.
  assert.notEqual(poolKey('a', 'b,c', {}), poolKey('a,b', 'c', {}));
});

// Backend messages, built by hand.
function be(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const f = Buffer.alloc(5 + body.length);
  f[0] = type.charCodeAt(0);
  f.writeInt32BE(body.length + 4, 1);
  body.copy(f, 5);
  return f;
}
const parseComplete = be('1');
const bindComplete = be('2');
const closeComplete = be('3');
const commandComplete = be('C', Buffer.from('SELECT 1\0'));
const ready = (s: string) => be('Z', Buffer.from(s));
const error = be('E', Buffer.from('SERROR\0C42P05\0Mduplicate\0\0'));

function sendAll(t: LeaseTracker, frames: Buffer[]): Buffer[] {
  const injected: Buffer[] = [];
  for (const f of frames) {
    const inj = t.frontend(f[0], f, 0, f.length);
    if (inj) injected.push(...inj);
  }
  return injected;
}

/** Feeds backend frames; returns the types that reach the client. */
function receive(t: LeaseTracker, frames: Buffer[]): string[] {
  return frames.filter((f) => t.backend(f[0], f, 0)).map((f) => String.fromCharCode(f[0]));
}

test('a lease is idle only at ReadyForQuery idle with nothing outstanding and no open extended group', () => {
  const t = new LeaseTracker(new StatementRegistry());
  assert.equal(t.idle, true);
  sendAll(t, [serialize.query('BEGIN')]);
  assert.equal(t.idle, false);
  receive(t, [commandComplete, ready('T')]);
  assert.equal(t.idle, false, 'inside a transaction block');
  sendAll(t, [serialize.query('COMMIT')]);
  receive(t, [commandComplete, ready('I')]);
  assert.equal(t.idle, true);
  // Parse without Sync: the extended group is open, the backend stays.
  sendAll(t, [serialize.parse({ text: 'SELECT 1' }), serialize.bind({}), serialize.execute({}), serialize.flush()]);
  receive(t, [parseComplete, bindComplete, commandComplete]);
  assert.equal(t.idle, false);
  sendAll(t, [serialize.sync()]);
  assert.equal(t.idle, false, 'Sync sent, ReadyForQuery not yet received');
  receive(t, [ready('I')]);
  assert.equal(t.idle, true);
  // Two pipelined queries: idle only after both answers.
  sendAll(t, [serialize.query('SELECT 1'), serialize.query('SELECT 2')]);
  receive(t, [commandComplete, ready('I')]);
  assert.equal(t.idle, false);
  receive(t, [commandComplete, ready('I')]);
  assert.equal(t.idle, true);
});

test('a named statement is replayed once on a new backend, and its ParseComplete never reaches the client', () => {
  const reg = new StatementRegistry();
  const first = new LeaseTracker(reg);
  const parse = serialize.parse({ name: 's1', text: 'SELECT $1::int' });
  sendAll(first, [parse, serialize.sync()]);
  assert.deepEqual(receive(first, [parseComplete, ready('I')]), ['1', 'Z']);
  assert.deepEqual(reg.get('s1'), parse, 'registered when the server confirmed it');

  const second = new LeaseTracker(reg);
  const injected = sendAll(second, [serialize.bind({ statement: 's1', values: ['1'] }), serialize.execute({}), serialize.bind({ statement: 's1', values: ['2'] }), serialize.execute({}), serialize.sync()]);
  assert.deepEqual(injected, [parse], 'one replay before the first Bind');
  assert.deepEqual(receive(second, [parseComplete, bindComplete, commandComplete, bindComplete, commandComplete, ready('I')]), ['2', 'C', '2', 'C', 'Z']);
  assert.equal(second.idle, true);
});

test('redefining a name the client already has fails as without pooling (the old one is replayed first)', () => {
  const reg = new StatementRegistry();
  const old = serialize.parse({ name: 's1', text: 'SELECT 1' });
  reg.set('s1', old);
  const t = new LeaseTracker(reg);
  const injected = sendAll(t, [serialize.parse({ name: 's1', text: 'SELECT 2' }), serialize.sync()]);
  assert.deepEqual(injected, [old]);
  assert.deepEqual(receive(t, [parseComplete, error, ready('I')]), ['E', 'Z']);
  assert.deepEqual(reg.get('s1'), old, 'the failed Parse did not replace the statement');
  // The backend still has s1 (the replayed one): no second replay.
  assert.deepEqual(sendAll(t, [serialize.bind({ statement: 's1' }), serialize.sync()]), []);
});

test('failed or skipped Parses are forgotten; Close removes a statement; a simple Query drops the unnamed one', () => {
  const reg = new StatementRegistry();
  const t = new LeaseTracker(reg);
  sendAll(t, [serialize.parse({ name: 'bad', text: 'SELEKT' }), serialize.parse({ name: 'skipped', text: 'SELECT 1' }), serialize.sync()]);
  receive(t, [be('E', Buffer.from('SERROR\0C42601\0Msyntax\0\0')), ready('I')]);
  assert.equal(reg.get('bad'), undefined);
  assert.equal(reg.get('skipped'), undefined);
  assert.equal(t.idle, true);

  sendAll(t, [serialize.parse({ name: 'keep', text: 'SELECT 1' }), serialize.parse({ text: 'SELECT 2' }), serialize.sync()]);
  receive(t, [parseComplete, parseComplete, ready('I')]);
  assert.ok(reg.get('keep') && reg.get(''));
  sendAll(t, [serialize.close({ type: 'S', name: 'keep' }), serialize.sync()]);
  receive(t, [closeComplete, ready('I')]);
  assert.equal(reg.get('keep'), undefined);
  sendAll(t, [serialize.query('SELECT 3')]);
  receive(t, [commandComplete, ready('I')]);
  assert.equal(reg.get(''), undefined, 'a simple Query destroys the unnamed statement');
});

test('the unnamed statement is replayed for a Bind in a later transaction (it lives until replaced)', () => {
  const reg = new StatementRegistry();
  const a = new LeaseTracker(reg);
  const p = serialize.parse({ text: 'SELECT 42' });
  sendAll(a, [p, serialize.sync()]);
  receive(a, [parseComplete, ready('I')]);
  const b = new LeaseTracker(reg);
  assert.deepEqual(sendAll(b, [serialize.bind({}), serialize.execute({}), serialize.sync()]), [p]);
  assert.deepEqual(receive(b, [parseComplete, bindComplete, commandComplete, ready('I')]), ['2', 'C', 'Z']);
});
