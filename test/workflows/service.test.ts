// `airlock worker --config` as operators run it (a child process): with no Slack configured it
// serves the local channel, and a request held by the gateway is posted, decided and answered.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalChannel } from '../../bots/local/local-channel.ts';
import type { HoldPosted } from '../../gateway/approvals/approver.ts';
import { approverFromConfig } from '../../gateway/approvals/from-config.ts';
import { loadConfig } from '../../gateway/config/load.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { connectClient } from '../../workflows/client.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { startTemporal, type TestTemporal } from '../support/temporal.ts';
import { CLI_KEY_FILE, DECISIONS_YAML, eventually, IDENTITIES } from './harness.ts';
import { signerFromConfig } from '../../workflows/decision-proof.ts';

let temporal: TestTemporal;
let dir: string;
let worker: ChildProcess | undefined;
before(async () => {
  temporal = await startTemporal();
  dir = mkdtempSync(join(tmpdir(), 'airlock-worker-'));
});
after(async () => {
  if (worker && worker.exitCode === null) worker.kill('SIGKILL');
  await temporal?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('airlock worker serves the local channel; the gateway approver holds, an approver decides, the worker stops on SIGTERM', async () => {
  const configFile = join(dir, 'airlock.yaml');
  writeFileSync(join(dir, CLI_KEY_FILE), generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
  writeFileSync(
    configFile,
    `auth: { signingKey: { env: AIRLOCK_TEST_UNUSED_KEY } }
store: { sqlite: data/airlock.db }
temporal: { address: "${temporal.address}", namespace: default, taskQueue: service-test }
${DECISIONS_YAML}
${IDENTITIES}`,
  );
  const bin = join(import.meta.dirname, '..', '..', 'bin', 'airlock.js');
  worker = spawn(process.execPath, [bin, 'worker', '--config', configFile], { env: { ...process.env, AIRLOCK_LOG_LEVEL: 'silent' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  worker.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  await eventually(() => stderr.includes('approval worker running') || worker!.exitCode !== null, 90_000, 'the worker to start');
  assert.match(stderr, /approval worker running \(Temporal 127\.0\.0\.1:\d+, namespace default, task queue service-test; approvals via local channel/);

  const loaded = loadConfig(configFile);
  const store = SqliteStore.open(join(dir, 'data', 'airlock.db'));
  const { approver, close } = await approverFromConfig(loaded, store);
  const local = LocalChannel.open(join(dir, 'data', 'airlock.db'));
  try {
    let posted: HoldPosted | undefined;
    const outcome = approver.hold(
      {
        operation: {
          protocol: 'postgres',
          identity: { name: 'alice', groups: ['engineers'] },
          connection: { name: 'prod', clientAddress: '127.0.0.1:1', sessionId: 'svc-1' },
          kind: 'ddl',
          text: 'DROP TABLE audit_old',
          tables: ['public.audit_old'],
          functions: [],
        },
        rule: 'review-ddl',
        reason: 'DDL on prod',
        review: { approvers: ['dba'], quorum: 1, timeoutMs: 60_000, escalation: [], grantTtlMs: 60_000 },
      },
      (p) => (posted = p),
      new AbortController().signal,
    );
    const p = await eventually(() => posted, 15_000, 'posted');
    assert.equal(p.channel, 'the local channel (run `airlock approvals list`)');
    assert.equal(local.list()[0]?.view.requestId, p.requestId);

    const client = await connectClient(loaded);
    // Decisions count only when signed by their source (here the operator's CLI key).
    const signer = signerFromConfig(loaded, 'cli')!;
    const d = await submitDecision(client, store, signer.sign({ requestId: p.requestId, approver: 'bob', approverGroups: ['dba'], decision: 'approve', via: 'test' }, 'test-operator'));
    assert.equal(d.ok, true);
    assert.equal((await outcome).outcome, 'approved');
    await client.connection.close();
  } finally {
    await close();
    local.close();
    store.close();
  }

  worker.kill('SIGTERM');
  const code = await new Promise<number | null>((r) => (worker!.exitCode !== null ? r(worker!.exitCode) : worker!.once('exit', (c) => r(c))));
  assert.equal(code, 0, stderr);
});
