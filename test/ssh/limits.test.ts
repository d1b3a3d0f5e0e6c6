// Resource limits of the SSH listener (ssh.listen): connections beyond maxClientConnections are
// told so and cut before any key exchange, silent clients are cut at clientLoginTimeout, a
// connection may hold only maxChannelsPerConnection channels, an SFTP packet larger than
// maxMessageBytes closes its channel before it is relayed. Every limit reached is a metric, and
// refusals before login are logged and audited at a bounded rate. Real sshd, real ssh client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import ssh2, { type ClientChannel, type Client as SshClient } from 'ssh2';
import { GatewayMetrics } from '../../gateway/observability/metrics.ts';
import { startSshHarness, type SshHarness } from './harness.ts';

const MAX_CONNECTIONS = 205;
const LOGIN_TIMEOUT_MS = 3_000;
const MAX_CHANNELS = 3;

let h: SshHarness;
const metrics = new GatewayMetrics();

before(async () => {
  h = await startSshHarness({ default: 'allow', rules: [] }, {}, undefined, {
    metrics,
    listen: { maxClientConnections: MAX_CONNECTIONS, clientLoginTimeout: `${LOGIN_TIMEOUT_MS}ms`, maxChannelsPerConnection: MAX_CHANNELS },
  });
});

after(async () => {
  await h?.close();
});

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const sel = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
  const line = (await metrics.text()).split('\n').find((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
  if (!line) return 0;
  assert.ok(line.includes(sel.split(',')[0]));
  return Number(line.split(' ').pop());
}

/** Opens `n` TCP connections that never speak; resolves when all are connected. */
async function silent(n: number): Promise<Array<{ socket: Socket; closedAt: Promise<number> }>> {
  return Promise.all(
    Array.from({ length: n }, () => {
      return new Promise<{ socket: Socket; closedAt: Promise<number> }>((resolve, reject) => {
        const socket = connect(h.gateway.port, '127.0.0.1');
        socket.on('error', () => undefined);
        socket.on('data', () => undefined);
        const closedAt = new Promise<number>((r) => socket.once('close', () => r(Date.now())));
        socket.once('connect', () => resolve({ socket, closedAt }));
        socket.once('error', reject);
      });
    }),
  );
}

async function login(): Promise<SshClient> {
  const token = await h.token('alice');
  const c = new ssh2.Client();
  await new Promise<void>((resolve, reject) => {
    c.once('ready', () => resolve());
    c.once('error', reject);
    c.connect({
      host: '127.0.0.1',
      port: h.gateway.port,
      username: 'box',
      password: token,
      hostVerifier: (key: Buffer) => `${h.gateway.hostPublicKey.split(' ')[0]} ${key.toString('base64')}` === h.gateway.hostPublicKey,
    });
  });
  c.on('error', () => undefined);
  return c;
}

function exec(c: SshClient, cmd: string): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    c.exec(cmd, (err, ch) => {
      if (err) return reject(err);
      let out = '';
      let code: number | null = null;
      ch.on('data', (b: Buffer) => (out += b.toString()));
      ch.stderr.on('data', () => undefined);
      ch.on('exit', (c2: number | null) => (code = c2));
      ch.on('close', () => resolve({ out, code }));
    });
  });
}

test('200 silent connections are cut at clientLoginTimeout; real ssh logins keep working meanwhile; counted, audited at a bounded rate', async () => {
  const auditBefore = h.store.listAudit().filter((e) => e.kind === 'ssh.refused').length;
  const opened = Date.now();
  const conns = await silent(200);
  const r = await h.ssh('box', 'echo still-serving');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString().trim(), 'still-serving');
  const closed = await Promise.all(conns.map((c) => c.closedAt));
  for (const at of closed) {
    assert.ok(at - opened >= LOGIN_TIMEOUT_MS - 200, `cut after ${at - opened} ms, before the login timeout`);
    assert.ok(at - opened < LOGIN_TIMEOUT_MS + 5_000, `cut only after ${at - opened} ms`);
  }
  assert.equal(await metric('airlock_limits_hit_total', { protocol: 'ssh', limit: 'clientLoginTimeout' }), 200);
  assert.equal(await metric('airlock_refused_connections_total', { protocol: 'ssh', reason: 'clientLoginTimeout' }), 200);
  const rows = h.store.listAudit().filter((e) => e.kind === 'ssh.refused').length - auditBefore;
  assert.ok(rows >= 1 && rows <= 20, `${rows} audit rows for 200 refusals`);
  const again = await h.ssh('box', 'echo after');
  assert.equal(again.code, 0, again.stderr);
});

test('a connection beyond maxClientConnections is refused with a message, and existing sessions keep working', async () => {
  const existing = await login();
  const filler = await silent(MAX_CONNECTIONS - 1);
  try {
    const r = await h.ssh('box', 'echo should-not-run');
    assert.equal(r.code, 255);
    assert.match(r.stderr, /too many connections: the gateway accepts at most 205 \(ssh\.listen\.maxClientConnections\)/);
    assert.doesNotMatch(r.stdout.toString(), /should-not-run/);
    const e = await exec(existing, 'echo existing-works');
    assert.equal(e.out.trim(), 'existing-works');
    assert.equal(e.code, 0);
    assert.ok((await metric('airlock_limits_hit_total', { protocol: 'ssh', limit: 'maxClientConnections' })) >= 1);
  } finally {
    for (const f of filler) f.socket.destroy();
    await Promise.all(filler.map((f) => f.closedAt));
    existing.end();
  }
  const r = await h.ssh('box', 'echo room-again');
  assert.equal(r.code, 0, r.stderr);
});

test('channels beyond maxChannelsPerConnection are refused with the reason; the open ones finish', async () => {
  const c = await login();
  try {
    const running = Array.from({ length: MAX_CHANNELS }, () => exec(c, 'sleep 1; echo done'));
    await new Promise((r) => setTimeout(r, 300));
    await assert.rejects(exec(c, 'echo one-too-many'), /at most 3 channels may be open on one connection/);
    for (const d of await Promise.all(running)) assert.equal(d.out.trim(), 'done');
    // Closed channels free their slots.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await exec(c, 'echo again')).out.trim(), 'again');
    assert.ok((await metric('airlock_limits_hit_total', { protocol: 'ssh', limit: 'maxChannelsPerConnection' })) >= 1);
  } finally {
    c.end();
  }
});

test('an SFTP packet declaring more than maxMessageBytes closes the channel before it is relayed', async () => {
  const c = await login();
  try {
    const ch = await new Promise<ClientChannel>((resolve, reject) => c.subsys('sftp', (err, s) => (err ? reject(err) : resolve(s))));
    ch.stderr.on('data', () => undefined);
    const closed = new Promise<void>((r) => ch.once('close', () => r()));
    const version = new Promise<Buffer>((r) => ch.once('data', (d: Buffer) => r(d)));
    ch.write(Buffer.from([0, 0, 0, 5, 1, 0, 0, 0, 3])); // INIT v3
    assert.equal((await version)[4], 2); // VERSION
    const huge = Buffer.alloc(4 + 1 + 4 + 1000);
    huge.writeUInt32BE(100 * 1024 * 1024, 0); // a WRITE declaring 100 MiB
    huge.writeUInt8(6, 4);
    huge.writeUInt32BE(7, 5);
    ch.write(huge);
    await closed;
    assert.equal(await metric('airlock_limits_hit_total', { protocol: 'ssh', limit: 'maxMessageBytes' }), 1);
    // The connection itself stays usable.
    assert.equal((await exec(c, 'echo fine')).out.trim(), 'fine');
  } finally {
    c.end();
  }
});
