// `airlock audit ...` and `airlock sessions show <short id>` as an operator and an auditor run them:
// a real process, a real config file with an Ed25519 key and an anchor file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { parseConfig } from '../../gateway/config/load.ts';
import { storeOptions } from '../../gateway/recording/open.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;

function airlock(args: string[]) {
  return run(process.execPath, [bin, ...args], { env: { ...process.env, AIRLOCK_TEST_SIGNING_KEY: 'k'.repeat(48), AIRLOCK_LOG_LEVEL: 'silent' } }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

const day = (d: number) => new Date(Date.UTC(2026, 9, d, 12));

function setup(t: { after(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-audit-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { privateKey } = generateKeyPairSync('ed25519');
  writeFileSync(join(dir, 'audit.key'), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  const yaml = `auth:
  signingKey: { env: AIRLOCK_TEST_SIGNING_KEY }
store:
  sqlite: audit.db
audit:
  signingKey: { file: audit.key }
  retention: 30d
  checkpointEvery: 3
  anchor: { file: anchor.jsonl }
`;
  const cfg = join(dir, 'airlock.yaml');
  writeFileSync(cfg, yaml);
  const loaded = parseConfig(yaml, cfg, dir);
  const store = SqliteStore.open(join(dir, 'audit.db'), storeOptions(loaded));
  const session = (id: string, d: number, text: string) => {
    store.startSession({ id, protocol: 'postgres', identity: 'agent-7', groups: ['agents'], connection: 'shop', clientAddress: '127.0.0.1:5000', startedAt: day(d) });
    store.recordOperation({ sessionId: id, seq: 1, at: day(d), text, kind: 'read', classification: {}, decision: 'allow', maskedColumns: [] });
    store.recordOperation({ sessionId: id, seq: 2, at: day(d), text: 'DROP TABLE customers', kind: 'ddl', classification: {}, decision: 'deny', rule: 'block-destructive-ddl', reason: 'no drops', maskedColumns: [] });
    store.endSession(id, day(d), 'client terminated the session', { toClient: 10, fromClient: 20 });
  };
  session('3f2a9c1e-aaaa-4000-8000-000000000001', 1, "SELECT * FROM customers WHERE email = 'jane.doe@example.com'");
  session('3f2a9c1e-bbbb-4000-8000-000000000002', 2, 'SELECT 2');
  session('77aa0000-cccc-4000-8000-000000000003', 28, 'SELECT 3');
  store.close();
  return { dir, cfg, db: join(dir, 'audit.db') };
}

test('`audit public-key`, `audit verify` on the store and on a tampered copy, with the auditor holding only the public key', async (t) => {
  const { dir, cfg, db } = setup(t);
  const pub = await airlock(['audit', 'public-key', '--config', cfg]);
  assert.equal(pub.code, 0, pub.stderr);
  assert.match(pub.stdout, /^-----BEGIN PUBLIC KEY-----\n[\s\S]+-----END PUBLIC KEY-----\n$/);
  assert.match(pub.stderr, /key id [0-9a-f]{16}/);
  writeFileSync(join(dir, 'audit.pub'), pub.stdout);

  const ok = await airlock(['audit', 'verify', '--config', cfg]);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /^audit chain OK: 12 entries \(#1\.\.#12\), \d+ of \d+ checkpoints verified by signature/);

  const copy = join(dir, 'copy.db');
  copyFileSync(db, copy);
  const raw = new Database(copy);
  raw.prepare(`UPDATE operations SET text = 'SELECT 1' WHERE decision = 'deny' AND session_id LIKE '3f2a9c1e-bbbb%'`).run();
  raw.close();
  // Offline: no config, only the copy, the public key and the anchor file.
  const bad = await airlock(['audit', 'verify', '--db', copy, '--public-key', join(dir, 'audit.pub'), '--anchor', join(dir, 'anchor.jsonl'), '--config', join(dir, 'none.yaml')]);
  assert.equal(bad.code, 1, bad.stdout + bad.stderr);
  assert.match(bad.stdout, /^audit chain FAILED: 1 problem\nfirst: operation 3f2a9c1e-bbbb-4000-8000-000000000002#2: .*text differ from chain entry #\d+/);

  const json = await airlock(['audit', 'verify', '--db', copy, '--public-key', join(dir, 'audit.pub'), '--json', '--config', join(dir, 'none.yaml')]);
  assert.equal(JSON.parse(json.stdout).problems[0].record, 'operation 3f2a9c1e-bbbb-4000-8000-000000000002#2');

  const wrong = generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' });
  writeFileSync(join(dir, 'wrong.pub'), wrong);
  const forged = await airlock(['audit', 'verify', '--config', cfg, '--public-key', join(dir, 'wrong.pub')]);
  assert.equal(forged.code, 1);
  assert.match(forged.stdout, /is not signed by the given key/);
});

test('`audit prune` applies audit.retention or --before, and the pruned store still verifies', async (t) => {
  const { cfg } = setup(t);
  const noCut = await airlock(['audit', 'prune', '--config', cfg, '--before', 'not-a-date']);
  assert.equal(noCut.code, 2);
  assert.match(noCut.stderr, /not a date or a duration/);

  const pruned = await airlock(['audit', 'prune', '--config', cfg, '--before', '2026-10-10']);
  assert.equal(pruned.code, 0, pruned.stderr);
  assert.match(pruned.stdout, /2 sessions, 4 operations, 0 audit events .* signed checkpoint kept/);
  const ok = await airlock(['audit', 'verify', '--config', cfg]);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  const list = await airlock(['sessions', 'list', '--json', '--config', cfg]);
  assert.deepEqual(JSON.parse(list.stdout).map((s: { id: string }) => s.id), ['77aa0000-cccc-4000-8000-000000000003']);

  // audit.retention (30d) from today removes the rest.
  const retention = await airlock(['audit', 'prune', '--config', cfg]);
  assert.equal(retention.code, 0, retention.stderr);
  assert.match(retention.stdout, /1 sessions, 2 operations/);
  const after = await airlock(['audit', 'verify', '--config', cfg]);
  assert.equal(after.code, 0, after.stdout + after.stderr);
});

test('`sessions show` accepts the short ids `sessions list` prints and shows only redacted text', async (t) => {
  const { cfg, dir } = setup(t);
  const list = await airlock(['sessions', 'list', '--config', cfg]);
  assert.equal(list.code, 0, list.stderr);
  const shortId = /^(77aa0000\S*)\s/m.exec(list.stdout)?.[1];
  assert.ok(shortId && shortId.length < 36, list.stdout);
  const show = await airlock(['sessions', 'show', shortId, '--config', cfg]);
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /Session 77aa0000-cccc-4000-8000-000000000003/);

  const pii = await airlock(['sessions', 'show', '3f2a9c1e-a', '--config', cfg]);
  assert.equal(pii.code, 0, pii.stderr);
  assert.match(pii.stdout, /email = '\[redacted:email\]'/);
  assert.ok(!pii.stdout.includes('jane.doe@example.com'));
  assert.ok(!readFileSync(join(dir, 'audit.db')).toString('latin1').includes('jane.doe@example.com'));

  const ambiguous = await airlock(['sessions', 'show', '3f2a', '--config', cfg]);
  assert.equal(ambiguous.code, 2);
  assert.match(ambiguous.stderr, /session id 3f2a is ambiguous: 3f2a9c1e-bbbb-4000-8000-000000000002, 3f2a9c1e-aaaa-4000-8000-000000000001; give more characters/);
  const none = await airlock(['sessions', 'show', 'zz', '--config', cfg]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /no session zz/);
});
