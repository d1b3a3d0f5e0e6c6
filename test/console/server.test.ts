// The console's server without a browser: recordings are served only from the recordings
// directories (a forged path or a symlink out is refused), static files only from the asset list,
// and `airlock gateway` starts the console when console.enabled.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { startGateway } from '../../gateway/app.ts';
import { tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { loadConfig } from '../../gateway/config/load.ts';
import { consoleOptions, startConsole } from '../../gateway/console/server.ts';
import { AsciicastWriter } from '../../gateway/ssh/asciicast.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { LocalChannel } from '../../bots/local/local-channel.ts';

function setup(t: { after(fn: () => void): void }, extra: Record<string, unknown> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-console-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'signing.key'), 'k'.repeat(48));
  const file = join(dir, 'airlock.yaml');
  writeFileSync(file, stringify({ auth: { signingKey: { file: 'signing.key' } }, store: { sqlite: 'airlock.db' }, ...extra }));
  return { dir, loaded: loadConfig(file) };
}

test('recordings are served only for operations that name a .cast file inside a recordings directory', async (t) => {
  const { dir, loaded } = setup(t);
  const store = SqliteStore.open(join(dir, 'airlock.db'));
  t.after(() => store.close());
  const good = join(dir, 'recordings', 'good.cast');
  const w = new AsciicastWriter(good, { width: 80, height: 24 });
  w.output(Buffer.from('hello\r\n'));
  await w.close();
  const outside = join(dir, 'secret.cast');
  writeFileSync(outside, '{"version":2,"width":80,"height":24}\n[0.1,"o","top secret"]\n');
  symlinkSync(outside, join(dir, 'recordings', 'link.cast'));
  mkdirSync(join(dir, 'recordings-evil'));
  writeFileSync(join(dir, 'recordings-evil', 'x.cast'), 'x');
  const paths = [good, outside, join(dir, 'recordings', 'link.cast'), join(dir, 'recordings', '..', 'secret.cast'), join(dir, 'recordings-evil', 'x.cast'), '/etc/passwd'];
  store.startSession({ id: 's1', protocol: 'ssh', identity: 'alice', groups: ['ops'], connection: 'box', clientAddress: '127.0.0.1:1', startedAt: new Date() });
  paths.forEach((p, i) => store.recordOperation({ sessionId: 's1', seq: i + 1, at: new Date(), text: 'shell', kind: 'shell', classification: { recording: p }, decision: 'allow', maskedColumns: [] }));
  store.flush();
  const con = await startConsole(consoleOptions(loaded, store));
  t.after(() => con.close());
  const token = await mintToken(tokenSettings(loaded), { name: 'audrey', groups: ['auditors'] });
  const get = (path: string) => fetch(con.url + path, { headers: { authorization: `Bearer ${token}` } });
  const timeline = (await (await get('api/sessions/s1')).json()) as { recordings: number[]; operations: { classification: { recording: string } }[] };
  assert.deepEqual(timeline.recordings, [1]);
  assert.deepEqual(timeline.operations.map((o) => o.classification.recording), ['available', 'missing', 'missing', 'missing', 'missing', 'missing'], 'host paths are not shown');
  const cast = await get('api/sessions/s1/recordings/1');
  assert.equal(cast.status, 200);
  assert.match(await cast.text(), /hello/);
  for (let seq = 2; seq <= paths.length; seq++) assert.equal((await get(`api/sessions/s1/recordings/${seq}`)).status, 404, paths[seq - 1]);
  assert.equal((await get('api/sessions/s1/recordings/..%2F..%2Fsecret.cast')).status, 404);
  assert.equal((await fetch(con.url + '../airlock.yaml')).status, 404);
  assert.equal((await fetch(con.url + 'signing.key')).status, 404);
  assert.equal((await fetch(con.url + 'player/asciinema-player.min.js')).status, 200);
});

test('`airlock gateway` starts the console when console.enabled, and the audit sinks', async (t) => {
  const { loaded, dir } = setup(t, { console: { enabled: true, listen: { host: '127.0.0.1', port: 0 } }, audit: { sinks: [{ type: 'file', name: 'siem', path: 'siem.jsonl' }] } });
  const gw = await startGateway(loaded);
  t.after(() => gw.close());
  const c = gw.listeners.find((l) => l.protocol === 'console');
  assert.ok(c, JSON.stringify(gw.listeners));
  const page = await fetch(`http://127.0.0.1:${c.port}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
  const token = await mintToken(tokenSettings(loaded), { name: 'audrey', groups: ['auditors'] });
  const v = await fetch(`http://127.0.0.1:${c.port}/api/verify`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(((await v.json()) as { ok: boolean }).ok, true);
  // The sink follows the journal: a session recorded through the gateway's store reaches the file.
  gw.store.startSession({ id: 'gw-1', protocol: 'postgres', identity: 'alice', groups: [], connection: 'app', clientAddress: '127.0.0.1:1', startedAt: new Date() });
  for (let i = 0; i < 500 && gw.auditSinkStatus?.()[0]?.position !== 1; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(gw.auditSinkStatus?.().map((s) => [s.name, s.position, s.lag]), [['siem', 1, 0]]);
  assert.match(readFileSync(join(dir, 'siem.jsonl'), 'utf8'), /"class_uid":3002/);
});

test('pending requests posted in the local approval channel are listed, redacted; a decided one moves to past', async (t) => {
  const { dir, loaded } = setup(t);
  const store = SqliteStore.open(join(dir, 'airlock.db'));
  t.after(() => store.close());
  const channel = LocalChannel.open(join(dir, 'airlock.db'));
  t.after(() => channel.close());
  const view = {
    requestId: 'airlock-pend1', protocol: 'postgres', identity: 'agent-7', owner: 'alice', connection: 'shop',
    text: "UPDATE customers SET note = 'x' WHERE email = 'jane.doe@example.com'", rule: 'writes-need-a-dba', reason: 'writes need a DBA',
    deadline: new Date(Date.now() + 600_000).toISOString(), approverGroups: ['dba'], quorum: 1, status: 'pending' as const, decidedBy: [], escalated: false,
  };
  await channel.post(view);
  const con = await startConsole(consoleOptions(loaded, store));
  t.after(() => con.close());
  const token = await mintToken(tokenSettings(loaded), { name: 'audrey', groups: ['auditors'] });
  const list = async (status: string) =>
    ((await (await fetch(`${con.url}api/approvals?status=${status}`, { headers: { authorization: `Bearer ${token}` } })).json()) as { requests: { requestId: string; status: string; posted?: { text: string; identity: string } }[] }).requests;
  const pending = await list('pending');
  assert.deepEqual(pending.map((r) => r.requestId), ['airlock-pend1']);
  assert.equal(pending[0].posted?.identity, 'agent-7');
  assert.match(pending[0].posted?.text ?? '', /UPDATE customers/);
  assert.ok(!JSON.stringify(pending).includes('jane.doe@example.com'), 'channel text is redacted like the store');
  store.recordAudit({ at: new Date(), kind: 'approval.outcome', subject: 'airlock-pend1', actor: 'bob', detail: { outcome: 'rejected', rejectedBy: 'bob' } });
  store.flush();
  assert.deepEqual(await list('pending'), []);
  assert.deepEqual((await list('decided')).map((r) => [r.requestId, r.status]), [['airlock-pend1', 'rejected']]);
});
