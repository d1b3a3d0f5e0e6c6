// Connection startup through the gateway: token authentication, connection selection, TLS
// towards the client, and upstream authentication (SCRAM, MD5) and failures.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import pg from 'pg';
import { startGateway, type GatewayHarness } from '../support/gateway.ts';
import { startPostgres, type RunningPostgres } from '../support/postgres.ts';
import { freePort } from '../support/net.ts';
import { serialize } from '../support/pgwire.ts';
import { tokenSettings } from '../../gateway/auth/settings.ts';

let upstream: RunningPostgres;
let h: GatewayHarness;

before(async () => {
  upstream = await startPostgres();
  h = await startGateway({
    pg: upstream,
    config: (p) => ({
      connections: [
        { name: 'app', type: 'postgres', host: p.host, port: p.port, database: 'postgres', user: p.user, password: { file: 'upstream.pass' } },
        { name: 'dba-only', type: 'postgres', host: p.host, port: p.port, database: 'postgres', user: p.user, password: { file: 'upstream.pass' }, allow: { groups: ['dba'] } },
        { name: 'wrong-password', type: 'postgres', host: p.host, port: p.port, database: 'postgres', user: p.user, password: { env: 'AIRLOCK_TEST_WRONG_PW' } },
      ],
    }),
  });
});

after(async () => {
  await h?.close();
  await upstream?.stop();
});

async function connectError(o: { user: string; password: string; database?: string; port?: number }): Promise<pg.DatabaseError> {
  const c = new pg.Client({ host: '127.0.0.1', port: o.port ?? h.gateway.port, user: o.user, password: o.password, database: o.database ?? 'app' });
  c.on('error', () => {});
  try {
    await c.connect();
  } catch (err) {
    return err as pg.DatabaseError;
  } finally {
    await c.end().catch(() => {});
  }
  assert.fail('connection should have been refused');
}

test('psql connects with a token as password and runs queries as the configured upstream user', async () => {
  const r = await h.psql('SELECT 40 + 2;\nSELECT current_user;\n');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `42\n${upstream.user}\n`);
});

test('the upstream sees the identity in application_name, and never gets the client user', async () => {
  const r = await h.psql('SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid();\n', { application_name: 'report-bot' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'report-bot (airlock:alice)');
});

test('a token signed with another key is refused with 28P01', async () => {
  const forged = await new SignJWT({ groups: ['dba'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setIssuer('airlock').setAudience('airlock')
    .setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode('x'.repeat(48)));
  const e = await connectError({ user: 'alice', password: forged });
  assert.equal(e.code, '28P01');
  assert.match(e.message, /not a valid Airlock token/);
});

test('an expired token is refused with 28P01 and says it expired', async () => {
  const key = tokenSettings(h.loaded).key;
  const now = Math.floor(Date.now() / 1000);
  const expired = await new SignJWT({ groups: ['dba'] }).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setIssuer('airlock').setAudience('airlock')
    .setIssuedAt(now - 600).setExpirationTime(now - 60).sign(new TextEncoder().encode(key));
  const e = await connectError({ user: 'alice', password: expired });
  assert.equal(e.code, '28P01');
  assert.match(e.message, /token has expired/);
});

test('a token issued to another identity than the user is refused', async () => {
  const e = await connectError({ user: 'alice', password: await h.token('agent-1') });
  assert.equal(e.code, '28P01');
  assert.match(e.message, /issued to "agent-1", not to user "alice"/);
});

test('psql shows the refusal reason for a wrong password', async () => {
  const r = await h.psql('SELECT 1;\n', { token: 'not-a-token' });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Airlock token rejected for user "alice"/);
});

test('an unknown connection name is 3D000', async () => {
  const e = await connectError({ user: 'alice', password: await h.token('alice'), database: 'nope' });
  assert.equal(e.code, '3D000');
  assert.equal(e.message, 'connection "nope" is not configured in Airlock');
});

test('connection allow lists are enforced by group', async () => {
  const denied = await connectError({ user: 'agent-1', password: await h.token('agent-1'), database: 'dba-only' });
  assert.equal(denied.code, '28000');
  assert.match(denied.message, /"agent-1" is not allowed to use connection "dba-only"/);
  const r = await h.psql('SELECT 1;\n', { dbname: 'dba-only' });
  assert.equal(r.stdout, '1\n', r.stderr);
});

test('an upstream that is down gives 08001 naming the connection and address', async () => {
  const port = await freePort();
  const down = await startGateway({
    pg: upstream,
    config: () => ({ connections: [{ name: 'gone', type: 'postgres', host: '127.0.0.1', port, database: 'postgres', user: 'postgres', password: { file: 'upstream.pass' } }] }),
  });
  try {
    const e = await connectError({ user: 'alice', password: await down.token('alice'), database: 'gone', port: down.gateway.port });
    assert.equal(e.code, '08001');
    assert.equal(e.message, `upstream database for connection "gone" is unreachable: ECONNREFUSED 127.0.0.1:${port}`);
  } finally {
    await down.close();
  }
});

test('an upstream connection with tls: require refuses a server without TLS (08001)', async () => {
  const g = await startGateway({
    pg: upstream,
    config: (p) => ({ connections: [{ name: 'app', type: 'postgres', host: p.host, port: p.port, database: 'postgres', user: p.user, password: { file: 'upstream.pass' }, tls: 'require' }] }),
  });
  try {
    const e = await connectError({ user: 'alice', password: await g.token('alice'), port: g.gateway.port });
    assert.equal(e.code, '08001');
    assert.equal(e.message, 'upstream database for connection "app" does not support TLS, but the connection requires it (tls: require)');
  } finally {
    await g.close();
  }
});

test('upstream TLS: tls: require encrypts the upstream connection (SCRAM with channel binding)', async () => {
  const tlsPg = await startPostgres();
  try {
    const dataDir = (await tlsPg.query('SHOW data_directory')).rows[0].data_directory as string;
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', join(dataDir, 'server.key'), '-out', join(dataDir, 'server.crt')], { stdio: 'ignore' });
    chmodSync(join(dataDir, 'server.key'), 0o600);
    const owner = statSync(dataDir);
    chownSync(join(dataDir, 'server.key'), owner.uid, owner.gid);
    chownSync(join(dataDir, 'server.crt'), owner.uid, owner.gid);
    await tlsPg.query('ALTER SYSTEM SET ssl = on');
    await tlsPg.query('SELECT pg_reload_conf()');
    const g = await startGateway({
      pg: tlsPg,
      config: (p) => ({ connections: [{ name: 'app', type: 'postgres', host: p.host, port: p.port, database: 'postgres', user: p.user, password: { file: 'upstream.pass' }, tls: 'require' }] }),
    });
    try {
      const r = await g.psql('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();\n');
      assert.equal(r.stdout, 't\n', r.stderr);
    } finally {
      await g.close();
    }
  } finally {
    await tlsPg.stop();
  }
});

test('upstream authentication failure is 08006 and never shows the upstream password', async () => {
  process.env.AIRLOCK_TEST_WRONG_PW = 'definitely-wrong-password';
  const e = await connectError({ user: 'alice', password: await h.token('alice'), database: 'wrong-password' });
  assert.equal(e.code, '08006');
  assert.match(e.message, /upstream database for connection "wrong-password" refused the connection: password authentication failed/);
  assert.doesNotMatch(e.message, /definitely-wrong-password/);
  assert.doesNotMatch(e.message, new RegExp(upstream.password));
});

test('upstream MD5 authentication works (role with an md5 password, md5 pg_hba)', async () => {
  const md5pg = await startPostgres({ authMethod: 'md5' });
  try {
    await md5pg.query("SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5-secret-pw'");
    const stored = await md5pg.query("SELECT rolpassword FROM pg_authid WHERE rolname = 'md5user'");
    assert.match(stored.rows[0].rolpassword, /^md5/);
    const g = await startGateway({
      pg: md5pg,
      setup: 'SELECT 1',
      config: (p, dir) => {
        writeFileSync(join(dir, 'md5.pass'), 'md5-secret-pw');
        return { connections: [{ name: 'app', type: 'postgres', host: p.host, port: p.port, database: 'postgres', user: 'md5user', password: { file: 'md5.pass' } }] };
      },
    });
    try {
      const r = await g.psql('SELECT current_user;\n');
      assert.equal(r.stdout, 'md5user\n', r.stderr);
    } finally {
      await g.close();
    }
  } finally {
    await md5pg.stop();
  }
});

test('upstream SCRAM-SHA-256 authentication works (the default server setup)', async () => {
  const stored = await upstream.query("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'");
  assert.match(stored.rows[0].rolpassword, /^SCRAM-SHA-256\$/);
  const r = await h.psql('SELECT 1;\n');
  assert.equal(r.stdout, '1\n', r.stderr);
});

test('TLS: clients negotiate TLS via SSLRequest; when required, plaintext clients are refused', async () => {
  const g = await startGateway({
    pg: upstream,
    config: (_p, dir) => {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
      return { listen: { postgres: { host: '127.0.0.1', port: 0, tls: { cert: 'cert.pem', key: 'key.pem', required: true } } } };
    },
  });
  try {
    const ok = await g.psql('\\conninfo\nSELECT 1;\n', { sslmode: 'require' });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /SSL connection \(protocol: TLSv1\.[23]/);
    assert.match(ok.stdout, /\n1\n$/);
    const refused = await g.psql('SELECT 1;\n', { sslmode: 'disable' });
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /TLS is required/);
    // Plaintext bytes pipelined behind SSLRequest would bypass TLS (CVE-2021-23214): refused.
    const answer = await new Promise<Buffer>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port: g.gateway.port }, () => {
        const ssl = Buffer.alloc(8);
        ssl.writeInt32BE(8, 0);
        ssl.writeInt32BE(80877103, 4);
        s.write(Buffer.concat([ssl, serialize.startup({ user: 'alice', database: 'app' })]));
      });
      const got: Buffer[] = [];
      s.on('data', (d: Buffer) => got.push(d));
      s.on('error', reject);
      s.on('close', () => resolve(Buffer.concat(got)));
    });
    assert.equal(String.fromCharCode(answer[0]), 'E');
    assert.match(answer.toString('latin1'), /received unencrypted data after SSL request/);
  } finally {
    await g.close();
  }
});

test('without TLS configured, sslmode=prefer falls back to plaintext and sslmode=require fails', async () => {
  const prefer = await h.psql('SELECT 1;\n', { sslmode: 'prefer' });
  assert.equal(prefer.stdout, '1\n', prefer.stderr);
  const req = await h.psql('SELECT 1;\n', { sslmode: 'require' });
  assert.notEqual(req.code, 0);
  assert.match(req.stderr, /server does not support SSL/);
});

test('refused connections are recorded in the audit log', async () => {
  await connectError({ user: 'alice', password: 'garbage' });
  const events = h.store.listAudit('alice').filter((e) => e.kind === 'postgres.refused');
  assert.ok(events.some((e) => String(e.detail.reason).includes('Airlock token rejected')), JSON.stringify(events));
});
