// `store: { postgres: ... }` end to end through the real CLI (bin/airlock.js, which registers the
// TypeScript loader itself): the config selects the PostgreSQL store (password from a secret
// file), `sessions list/show` read what a gateway recorded there, and `audit verify` / `audit prune`
// work on the shared database.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../../gateway/config/load.ts';
import { openStore } from '../../gateway/recording/open.ts';
import { PostgresStore } from '../../gateway/recording/postgres-store.ts';
import { postgresBackend } from './backends.ts';

after(() => postgresBackend.stop());

const run = promisify(execFile);
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;

function airlock(args: string[]) {
  return run(process.execPath, [bin, ...args], { env: { ...process.env, AIRLOCK_TEST_SIGNING_KEY: 'k'.repeat(48) } }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

test('a config naming store.postgres opens the PostgreSQL store; the CLI lists, shows, verifies and prunes it', async (t) => {
  const server = await postgresBackend.server();
  await server.query('CREATE DATABASE cli_audit');
  t.after(() => server.query('DROP DATABASE IF EXISTS cli_audit WITH (FORCE)'));
  const dir = mkdtempSync(join(tmpdir(), 'airlock-pgcli-'));
  writeFileSync(join(dir, 'audit-db-password'), server.password + '\n', { mode: 0o600 });
  writeFileSync(join(dir, 'audit.pem'), generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  const config = join(dir, 'airlock.yaml');
  writeFileSync(
    config,
    `auth:\n  signingKey: { env: AIRLOCK_TEST_SIGNING_KEY }\nstore:\n  postgres:\n    host: ${server.host}\n    port: ${server.port}\n    database: cli_audit\n    user: ${server.user}\n    password: { file: audit-db-password }\naudit:\n  signingKey: { file: audit.pem }\n`,
  );

  const loaded = loadConfig(config);
  assert.equal(loaded.config.store.postgres?.tls, false);
  const store = openStore(loaded);
  assert.ok(store instanceof PostgresStore, 'store.postgres selects the PostgreSQL store');
  const day = (d: number) => new Date(Date.UTC(2026, 10, d));
  store.startSession({ id: 'aaaa1111-old', protocol: 'postgres', identity: 'agent-7', groups: ['agents'], connection: 'app', clientAddress: '10.0.0.9:5000', startedAt: day(1) });
  store.recordOperation({ sessionId: 'aaaa1111-old', seq: 1, at: day(1), text: 'DROP TABLE customers', kind: 'ddl', classification: {}, decision: 'deny', rule: 'block-destructive-ddl', reason: 'no drops', maskedColumns: [] });
  store.endSession('aaaa1111-old', day(1), 'client terminated the session', { toClient: 1, fromClient: 2 });
  store.startSession({ id: 'bbbb2222-new', protocol: 'postgres', identity: 'agent-8', groups: ['agents'], connection: 'app', clientAddress: '10.0.0.9:5001', startedAt: new Date() });
  store.recordOperation({ sessionId: 'bbbb2222-new', seq: 1, at: new Date(), text: 'SELECT 1', kind: 'read', classification: {}, decision: 'allow', maskedColumns: [] });
  store.close();

  const list = await airlock(['sessions', 'list', '--config', config]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /agent-7/);
  assert.match(list.stdout, /agent-8/);
  const show = await airlock(['sessions', 'show', 'aaaa', '--config', config]);
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /DROP TABLE customers/);
  assert.match(show.stdout, /block-destructive-ddl/);

  const verify = await airlock(['audit', 'verify', '--config', config]);
  assert.equal(verify.code, 0, verify.stderr + verify.stdout);
  assert.match(verify.stdout, /audit chain OK: 5 entries/);

  const prune = await airlock(['audit', 'prune', '--before', day(10).toISOString(), '--config', config]);
  assert.equal(prune.code, 0, prune.stderr + prune.stdout);
  assert.match(prune.stdout, /1 sessions, 1 operations, 0 audit events/);
  assert.match(prune.stdout, /signed checkpoint kept/);
  const after = await airlock(['sessions', 'list', '--config', config]);
  assert.doesNotMatch(after.stdout, /agent-7/);
  assert.match(after.stdout, /agent-8/);
  const again = await airlock(['audit', 'verify', '--config', config]);
  assert.equal(again.code, 0, again.stderr + again.stdout);

  // Someone edits the shared database directly: verify names the record and fails.
  await server.query(`UPDATE operations SET text = 'SELECT harmless' WHERE session_id = 'bbbb2222-new'`, 'cli_audit');
  const tampered = await airlock(['audit', 'verify', '--config', config]);
  assert.equal(tampered.code, 1);
  assert.match(tampered.stdout, /operation bbbb2222-new#1 was changed: text/);
});
