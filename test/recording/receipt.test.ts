// Approval receipts through the real CLI: `airlock audit receipt ID` signs what the store holds for
// a decided request; `airlock audit receipt verify FILE --public-key` checks it with the public key
// alone and refuses an edited receipt, a receipt signed by another key, and an undecided request.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseConfig } from '../../gateway/config/load.ts';
import { storeOptions } from '../../gateway/recording/open.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import type { Receipt } from '../../gateway/recording/receipt.ts';

const run = promisify(execFile);
const bin = new URL('../../bin/airlock.js', import.meta.url).pathname;

function airlock(args: string[]) {
  return run(process.execPath, [bin, ...args], { env: { ...process.env, AIRLOCK_TEST_SIGNING_KEY: 'k'.repeat(48), AIRLOCK_LOG_LEVEL: 'silent' } }).then(
    (r) => ({ code: 0, ...r }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

const at = (s: number) => new Date(Date.UTC(2026, 10, 3, 9, 0, s));
const SID = '5b0c1a2e-aaaa-4000-8000-000000000001';

function setup(t: { after(fn: () => void): void }) {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-receipt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { privateKey } = generateKeyPairSync('ed25519');
  writeFileSync(join(dir, 'audit.key'), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  const yaml = 'auth:\n  signingKey: { env: AIRLOCK_TEST_SIGNING_KEY }\nstore:\n  sqlite: audit.db\naudit:\n  signingKey: { file: audit.key }\n';
  const cfg = join(dir, 'airlock.yaml');
  writeFileSync(cfg, yaml);
  const store = SqliteStore.open(join(dir, 'audit.db'), storeOptions(parseConfig(yaml, cfg, dir)));
  // What the gateway and the approval workflow record for a held UPDATE that bob approved.
  store.startSession({ id: SID, protocol: 'postgres', identity: 'agent-7', groups: ['agents'], connection: 'shop', clientAddress: '127.0.0.1:5000', startedAt: at(0) });
  store.recordAudit({ at: at(2), kind: 'approval.decision-refused', subject: 'airlock-req1', actor: 'alice', detail: { decision: 'approve', via: 'cli', error: 'alice owns the requesting agent' } });
  store.recordAudit({ at: at(3), kind: 'approval.decision', subject: 'airlock-req1', actor: 'bob', detail: { decision: 'approve', via: 'slack', status: 'approved', approvers: ['bob'] } });
  store.recordAudit({ at: at(3), kind: 'approval.outcome', subject: 'airlock-req1', actor: undefined, detail: { outcome: 'approved', approvers: ['bob'], identity: 'agent-7', connection: 'shop' } });
  store.recordOperation({ sessionId: SID, seq: 1, at: at(1), text: "UPDATE customers SET city = 'Oslo' WHERE id = 1", kind: 'write', classification: {}, decision: 'review', rule: 'agent-writes-need-a-dba', rows: 1, maskedColumns: [], approval: { requestId: 'airlock-req1', outcome: 'approved', approvers: ['bob'] } });
  store.recordAudit({ at: at(4), kind: 'approval.result', subject: 'airlock-req1', detail: { summary: 'UPDATE 1', tag: 'UPDATE 1', rows: 1, sessionId: SID, at: at(4).toISOString() } });
  store.recordOperation({ sessionId: SID, seq: 2, at: at(5), text: 'DELETE FROM orders WHERE id = 9', kind: 'write', classification: {}, decision: 'review', rule: 'agent-writes-need-a-dba', maskedColumns: [], approval: { requestId: 'airlock-req2', outcome: 'pending', approvers: [] } });
  store.endSession(SID, at(6), 'client terminated the session', { toClient: 10, fromClient: 20 });
  store.close();
  return { dir, cfg };
}

test('a decided request gets a signed receipt that the public key alone verifies', async (t) => {
  const { dir, cfg } = setup(t);
  const r = await airlock(['audit', 'receipt', 'airlock-req1', '-c', cfg]);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout) as Receipt;
  const b = doc.receipt;
  assert.equal(b.type, 'airlock.approval.receipt');
  assert.equal(b.requestId, 'airlock-req1');
  assert.equal(b.operations.length, 1);
  assert.equal(b.operations[0].identity, 'agent-7');
  assert.equal(b.operations[0].connection, 'shop');
  assert.equal(b.operations[0].text, "UPDATE customers SET city = 'Oslo' WHERE id = 1");
  assert.equal(b.operations[0].textDigest, createHash('sha256').update(b.operations[0].text).digest('hex'));
  assert.deepEqual(b.operations[0].ran, { rows: 1, error: null, durationMs: null });
  assert.equal(b.decision.outcome, 'approved');
  assert.deepEqual(b.decision.approvers, ['bob']);
  assert.equal(b.decision.decidedAt, at(3).toISOString());
  assert.deepEqual(b.decision.attempts.map((a) => [a.actor, a.kind, a.via]), [['alice', 'approval.decision-refused', 'cli'], ['bob', 'approval.decision', 'slack']]);
  assert.deepEqual(b.results.map((x) => [x.tag, x.rows, x.sessionId]), [['UPDATE 1', 1, SID]]);
  assert.match(b.sessionLogDigests[SID], /^[0-9a-f]{64}$/);

  const pub = await airlock(['audit', 'public-key', '-c', cfg]);
  writeFileSync(join(dir, 'audit.pub'), pub.stdout);
  writeFileSync(join(dir, 'receipt.json'), r.stdout);
  // The auditor has only the receipt and the public key (no config at all).
  const ok = await airlock(['audit', 'receipt', 'verify', join(dir, 'receipt.json'), '--public-key', join(dir, 'audit.pub'), '-c', join(dir, 'none.yaml')]);
  assert.equal(ok.code, 0, ok.stderr + ok.stdout);
  assert.match(ok.stdout, /receipt for airlock-req1 verified/);

  // Any edit breaks it: the approver's name, the statement, what ran.
  for (const edit of [(d: Receipt) => (d.receipt.decision.approvers = ['mallory']), (d: Receipt) => (d.receipt.operations[0].text = 'UPDATE customers SET city = NULL'), (d: Receipt) => (d.receipt.results[0].rows = 0)]) {
    const copy = JSON.parse(r.stdout) as Receipt;
    edit(copy);
    writeFileSync(join(dir, 'edited.json'), JSON.stringify(copy));
    const bad = await airlock(['audit', 'receipt', 'verify', join(dir, 'edited.json'), '--public-key', join(dir, 'audit.pub')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, /NOT verified: the signature does not match/);
  }

  // Another key does not verify it.
  const other = generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' });
  writeFileSync(join(dir, 'other.pub'), other);
  const wrongKey = await airlock(['audit', 'receipt', 'verify', join(dir, 'receipt.json'), '--public-key', join(dir, 'other.pub')]);
  assert.equal(wrongKey.code, 1);
  assert.match(wrongKey.stdout, /NOT verified: signed by key/);
});

test('no receipt for a pending or unknown request', async (t) => {
  const { cfg } = setup(t);
  const pending = await airlock(['audit', 'receipt', 'airlock-req2', '-c', cfg]);
  assert.equal(pending.code, 2);
  assert.match(pending.stderr, /not decided yet/);
  const unknown = await airlock(['audit', 'receipt', 'airlock-nope', '-c', cfg]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /no approval request airlock-nope/);
});
