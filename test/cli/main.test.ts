// The `airlock` command line as a user runs it: a real process, a real config file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { verifyToken } from '../../gateway/auth/tokens.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;
const key = 'k'.repeat(48);

function airlock(args: string[], env: Record<string, string> = {}) {
  return run(process.execPath, [bin, ...args], { env: { ...process.env, AIRLOCK_TEST_SIGNING_KEY: key, ...env } }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

function configDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-cli-'));
  writeFileSync(
    join(dir, 'airlock.yaml'),
    `auth:\n  signingKey: { env: AIRLOCK_TEST_SIGNING_KEY }\n  defaultTtl: 5m\nstore:\n  sqlite: audit.db\nidentities:\n  - { name: agent-7, groups: [agents], owner: alice }\n`,
  );
  return dir;
}

test('`airlock token` mints a short-lived token with the identity\'s configured groups and owner', async () => {
  const dir = configDir();
  const r = await airlock(['token', '--config', join(dir, 'airlock.yaml'), '--identity', 'agent-7']);
  assert.equal(r.code, 0, r.stderr);
  const id = await verifyToken({ issuer: 'airlock', audience: 'airlock', key, defaultTtlMs: 0, maxTtlMs: 0 }, r.stdout.trim());
  assert.equal(id.name, 'agent-7');
  assert.deepEqual(id.groups, ['agents']);
  assert.equal(id.owner, 'alice');
  const ttl = id.expiresAt.getTime() - Date.now();
  assert.ok(ttl > 4 * 60_000 && ttl <= 5 * 60_000, `default TTL comes from auth.defaultTtl, got ${ttl}ms`);
});

test('`airlock token` refuses a TTL above auth.maxTtl', async () => {
  const dir = configDir();
  const r = await airlock(['token', '--config', join(dir, 'airlock.yaml'), '--identity', 'x', '--ttl', '3h']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /exceeds the configured maximum/);
});

test('a broken config is reported with the file and the path, exit status 2', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-cli-'));
  writeFileSync(join(dir, 'airlock.yaml'), 'auth:\n  signingKey: inline-secret\n');
  const r = await airlock(['token', '--config', join(dir, 'airlock.yaml'), '--identity', 'x']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, new RegExp(`airlock: invalid config ${join(dir, 'airlock.yaml').replace(/[.]/g, '\\.')}`));
  assert.match(r.stderr, /auth\.signingKey/);
});

test('`airlock sessions list` and `show` print recorded sessions for people and as JSON', async () => {
  const dir = configDir();
  const store = SqliteStore.open(join(dir, 'audit.db'));
  const started = new Date('2026-01-02T03:04:05Z');
  store.startSession({ id: 'sess-1', protocol: 'postgres', identity: 'agent-7', groups: ['agents'], connection: 'app', clientAddress: '127.0.0.1:5000', startedAt: started });
  store.recordOperation({ sessionId: 'sess-1', seq: 1, at: started, text: 'DROP TABLE customers', kind: 'ddl', classification: {}, decision: 'deny', rule: 'block-destructive-ddl', reason: 'no drops', maskedColumns: [] });
  store.endSession('sess-1', new Date(started.getTime() + 1000), 'client terminated the session', { toClient: 10, fromClient: 20 });
  store.close();
  const cfg = join(dir, 'airlock.yaml');
  const list = await airlock(['sessions', 'list', '--config', cfg]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /agent-7/);
  const json = await airlock(['sessions', 'list', '--json', '--config', cfg]);
  assert.equal(JSON.parse(json.stdout)[0].id, 'sess-1');
  const show = await airlock(['sessions', 'show', 'sess-1', '--config', cfg]);
  assert.match(show.stdout, /DENY[\s\S]*block-destructive-ddl[\s\S]*DROP TABLE customers/);
  const missing = await airlock(['sessions', 'show', 'nope', '--config', cfg]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /no session nope/);
});
