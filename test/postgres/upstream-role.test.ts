// Class 9 of issue 10: the gateway refuses to start with a dangerous upstream login (superuser,
// a member of a superuser role, of pg_execute_server_program / pg_read_server_files /
// pg_write_server_files) unless the connection says allowSuperuser: true. Real PostgreSQL, real
// `startGateway` from gateway/app.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { stringify } from 'yaml';
import { startGateway } from '../../gateway/app.ts';
import { FailClosedApprover } from '../../gateway/approvals/approver.ts';
import { loadConfig } from '../../gateway/config/load.ts';
import { checkUpstreamRoles } from '../../gateway/postgres/upstream-role.ts';
import { createLeastPrivilegeRole } from '../../gateway/demo/embedded-postgres.ts';
import { startPostgres, type RunningPostgres } from '../support/postgres.ts';

let upstream: RunningPostgres;
let dir: string;

before(async () => {
  upstream = await startPostgres();
  dir = mkdtempSync(join(tmpdir(), 'airlock-role-'));
  const admin = await upstream.client();
  try {
    await admin.query('CREATE TABLE t (id int)');
    await createLeastPrivilegeRole(admin, 'least', 'pw-least', ['t']);
    await admin.query(`CREATE ROLE file_reader LOGIN PASSWORD 'pw-reader'`);
    await admin.query('GRANT pg_read_server_files TO file_reader');
    await admin.query(`CREATE ROLE shell LOGIN PASSWORD 'pw-shell'`);
    await admin.query(`CREATE ROLE ops NOLOGIN`);
    await admin.query('GRANT pg_execute_server_program TO ops');
    await admin.query('GRANT ops TO shell'); // indirect membership counts
    await admin.query(`CREATE ROLE admins NOLOGIN SUPERUSER`);
    await admin.query(`CREATE ROLE sneaky LOGIN PASSWORD 'pw-sneaky'`);
    await admin.query('GRANT admins TO sneaky'); // can SET ROLE admins
  } finally {
    await admin.end();
  }
});

after(async () => {
  await upstream?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function config(user: string, password: string, extra: Record<string, unknown> = {}) {
  const sub = mkdtempSync(join(dir, 'c-'));
  writeFileSync(join(sub, 'signing.key'), randomBytes(48).toString('base64'));
  writeFileSync(join(sub, 'db.pass'), password);
  const file = join(sub, 'airlock.yaml');
  writeFileSync(
    file,
    stringify({
      listen: { postgres: { host: '127.0.0.1', port: 0 } },
      auth: { signingKey: { file: 'signing.key' } },
      store: { sqlite: 'airlock.db' },
      connections: [{ name: 'app', type: 'postgres', host: upstream.host, port: upstream.port, database: 'postgres', user, password: { file: 'db.pass' }, tls: 'disable', ...extra }],
    }),
  );
  return loadConfig(file);
}

test('a superuser upstream login stops the gateway from starting, with a message that says why and what to do', async () => {
  const loaded = config(upstream.user, upstream.password);
  await assert.rejects(startGateway(loaded, { approver: new FailClosedApprover() }), (err: Error) => {
    assert.match(err.message, /connection app: the upstream role postgres is a superuser/);
    assert.match(err.message, /COPY \.\.\. TO PROGRAM/);
    assert.match(err.message, /allowSuperuser: true/);
    return true;
  });
});

test('members of the server-program / server-file roles and of superuser roles are refused too', async () => {
  await assert.rejects(checkUpstreamRoles(config('file_reader', 'pw-reader')), /file_reader is a member of pg_read_server_files/);
  await assert.rejects(checkUpstreamRoles(config('shell', 'pw-shell')), /shell is a member of pg_execute_server_program/);
  await assert.rejects(checkUpstreamRoles(config('sneaky', 'pw-sneaky')), /sneaky can SET ROLE to the superuser role\(s\) admins/);
});

test('allowSuperuser: true starts anyway and says so; a least-privilege role starts quietly', async () => {
  const warnings: string[] = [];
  const roles = await checkUpstreamRoles(config(upstream.user, upstream.password, { allowSuperuser: true }), { warn: (m) => warnings.push(m) });
  assert.equal(roles.get('app')?.superuser, true);
  assert.match(warnings.join('\n'), /postgres is a superuser; allowed by allowSuperuser: true/);

  const loaded = config('least', 'pw-least');
  const gw = await startGateway(loaded, { approver: new FailClosedApprover() });
  try {
    assert.equal(gw.listeners[0].protocol, 'postgres');
  } finally {
    await gw.close();
  }
  const quiet: string[] = [];
  const least = await checkUpstreamRoles(loaded, { warn: (m) => quiet.push(m) });
  assert.deepEqual(least.get('app'), { role: 'least', superuser: false, superuserMemberships: [], dangerousMemberships: [], createRoleGrantsAny: false, readOnlyDefault: false });
  assert.deepEqual(quiet, []);
});

test('a readOnly connection needs a role that defaults to read-only transactions', async () => {
  await assert.rejects(checkUpstreamRoles(config('least', 'pw-least', { readOnly: true })), /connection app is readOnly, but its upstream role least does not default to read-only transactions; run ALTER ROLE least SET default_transaction_read_only = on/);
  const admin = await upstream.client();
  try {
    await createLeastPrivilegeRole(admin, 'reader', 'pw-ro', ['t']);
    await admin.query('ALTER ROLE reader SET default_transaction_read_only = on');
  } finally {
    await admin.end();
  }
  const roles = await checkUpstreamRoles(config('reader', 'pw-ro', { readOnly: true }));
  assert.equal(roles.get('app')?.readOnlyDefault, true);
});

test('an upstream that cannot be checked does not start (fail closed), after the retry window', async () => {
  const loaded = config('nobody', 'wrong');
  await assert.rejects(checkUpstreamRoles(loaded, { waitMs: 0 }), /cannot check the upstream role/);
});
