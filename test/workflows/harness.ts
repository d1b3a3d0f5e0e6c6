// Shared setup for approval tests: a real Temporal dev server, the real SQLite store, the real
// local channel in the same file, and a worker running the real workflow and activities.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import type { DecisionRequest } from '../../bots/channel.ts';
import { signerFromConfig } from '../../workflows/decision-proof.ts';
import { LocalChannel } from '../../bots/local/local-channel.ts';
import { parseConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import type { ApprovalInput } from '../../workflows/definitions.ts';
import { runWorker, type RunningWorker } from '../../workflows/worker.ts';
import { startTemporal, type TestTemporal } from '../support/temporal.ts';

export interface Harness {
  temporal: TestTemporal;
  store: SqliteStore;
  local: LocalChannel;
  loaded: LoadedConfig;
  worker: RunningWorker;
  dir: string;
  dbFile: string;
  taskQueue: string;
  /** Signs a decision with the operator (cli) key, as `airlock approvals approve` does. */
  sign(d: DecisionRequest): DecisionRequest;
  close(): Promise<void>;
}

/** The operator key file the harness config names (decisions.keys.cli), relative to its dir. */
export const CLI_KEY_FILE = 'cli-decision.key';
export const DECISIONS_YAML = `decisions: { keys: { cli: { privateKey: { file: ${CLI_KEY_FILE} } } } }`;

export const IDENTITIES = `
identities:
  - { name: alice, groups: [dba, engineers] }
  - { name: bob, groups: [dba] }
  - { name: dave, groups: [dba] }
  - { name: erin, groups: [oncall] }
  - { name: mallory, groups: [engineers] }
  - { name: carol, groups: [dba] }
  - { name: agent-x, groups: [agents], owner: carol }
`;

export function configFor(dir: string, address: string, taskQueue: string): LoadedConfig {
  const keyFile = join(dir, CLI_KEY_FILE);
  if (!existsSync(keyFile)) writeFileSync(keyFile, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const yaml = `
auth: { signingKey: { env: AIRLOCK_TEST_UNUSED_KEY } }
store: { sqlite: airlock.db }
${DECISIONS_YAML}
temporal: { address: "${address}", namespace: default, taskQueue: ${taskQueue} }
${IDENTITIES}`;
  return parseConfig(yaml, join(dir, 'airlock.yaml'), dir);
}

export async function startHarness(): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-approvals-'));
  const dbFile = join(dir, 'airlock.db');
  const temporal = await startTemporal();
  const taskQueue = `airlock-test-${randomUUID()}`;
  const loaded = configFor(dir, temporal.address, taskQueue);
  const store = SqliteStore.open(dbFile);
  const local = LocalChannel.open(dbFile);
  const signer = signerFromConfig(loaded, 'cli')!;
  let worker: RunningWorker;
  try {
    worker = await runWorker({ loaded, store, channels: [local], connection: temporal.native });
  } catch (err) {
    await temporal.stop();
    throw err;
  }
  return {
    temporal,
    store,
    local,
    loaded,
    worker,
    dir,
    dbFile,
    taskQueue,
    sign: (d) => signer.sign(d, 'test-operator'),
    async close() {
      await worker.shutdown();
      await temporal.stop();
      local.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function approvalInput(overrides: Partial<ApprovalInput> & { identity?: string; owner?: string } = {}): ApprovalInput {
  const { identity, owner, ...rest } = overrides;
  return {
    requestId: `airlock-test-${randomUUID().slice(0, 12)}`,
    operation: {
      protocol: 'postgres',
      connection: 'prod',
      identity: identity ?? 'alice',
      owner,
      groups: ['engineers'],
      text: 'DELETE FROM customers WHERE id = 42',
      kind: 'write',
      tables: ['public.customers'],
      rule: 'review-prod-writes',
      reason: 'writes on prod need a DBA',
      sessionId: 's-1',
    },
    approverGroups: ['dba'],
    quorum: 1,
    timeoutMs: 60_000,
    escalation: [],
    ...rest,
  };
}

/** Polls until `fn` returns a value (not undefined/false) or the time is up. */
export async function eventually<T>(fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
