// `airlock sessions list` prints the shortest unique prefix of each session id; `sessions show`
// accepts exactly those (and any unique prefix), and says when a prefix is ambiguous.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;

function airlock(args: string[]) {
  return run(process.execPath, [bin, ...args], { env: { ...process.env, AIRLOCK_TEST_SIGNING_KEY: 'k'.repeat(48) } }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

test('a short session id from `sessions list` works with `sessions show`; an ambiguous prefix is refused with the candidates', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-cli-prefix-'));
  const cfg = join(dir, 'airlock.yaml');
  writeFileSync(cfg, `auth:\n  signingKey: { env: AIRLOCK_TEST_SIGNING_KEY }\nstore:\n  sqlite: audit.db\n`);
  const store = SqliteStore.open(join(dir, 'audit.db'));
  const at = new Date('2026-01-02T03:04:05Z');
  for (const [id, text] of [
    ['5b1f0c2e-1111-4aaa-8bbb-000000000001', 'SELECT 1'],
    ['5b1f0c2e-2222-4aaa-8bbb-000000000002', 'SELECT 2'],
    ['9e77d310-3333-4aaa-8bbb-000000000003', 'SELECT 3'],
  ] as const) {
    store.startSession({ id, protocol: 'postgres', identity: 'agent-7', groups: ['agents'], connection: 'app', clientAddress: '127.0.0.1:5000', startedAt: at });
    store.recordOperation({ sessionId: id, seq: 1, at, text, kind: 'read', classification: {}, decision: 'allow', maskedColumns: [] });
    store.endSession(id, new Date(at.getTime() + 1000), 'client terminated the session', { toClient: 1, fromClient: 1 });
  }
  store.close();

  const list = await airlock(['sessions', 'list', '--config', cfg]);
  assert.equal(list.code, 0, list.stderr);
  const shown = list.stdout.split('\n').map((l) => l.split(/\s+/)[0]).filter((w) => /^[0-9a-f]{3,}/.test(w));
  assert.equal(shown.length, 3);
  for (const short of shown) {
    assert.ok(short.length < 36, `a short id: ${short}`);
    const show = await airlock(['sessions', 'show', short, '--config', cfg]);
    assert.equal(show.code, 0, `sessions show ${short}: ${show.stderr}`);
  }
  const third = await airlock(['sessions', 'show', '9e7', '--config', cfg]);
  assert.match(third.stdout, /SELECT 3/);
  const ambiguous = await airlock(['sessions', 'show', '5b1f', '--config', cfg]);
  assert.equal(ambiguous.code, 2);
  assert.match(ambiguous.stderr, /ambiguous: 5b1f0c2e-.*5b1f0c2e-/);
});
