// Decisions nobody can forge: the approval workflow on a real Temporal dev server counts a
// decision only when its proof of origin verifies on the worker, resolves the approver's groups
// from the worker's own config, and audits every attempt (accepted or refused) from inside the
// workflow's path, including Updates sent straight through the Temporal client.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { LocalChannel } from '../../bots/local/local-channel.ts';
import type { DecisionRequest } from '../../bots/channel.ts';
import { parseConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { decisionSigner, signerFromConfig, type DecisionSigner } from '../../workflows/decision-proof.ts';
import { decideUpdate, stateQuery, type ApprovalResult } from '../../workflows/definitions.ts';
import { startApproval } from '../../workflows/start.ts';
import { runWorker, type RunningWorker } from '../../workflows/worker.ts';
import { startTemporal, type TestTemporal } from '../support/temporal.ts';
import { IDENTITIES, approvalInput, eventually } from './harness.ts';

const pem = (k: KeyObject) => k.export({ type: 'pkcs8', format: 'pem' }).toString();

let temporal: TestTemporal;
let store: SqliteStore;
let local: LocalChannel;
let worker: RunningWorker;
let loaded: LoadedConfig;
let dir: string;
let taskQueue: string;
let cli: DecisionSigner;
let slack: DecisionSigner;
let cliPrivate: KeyObject;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-decision-proof-'));
  const cliKey = generateKeyPairSync('ed25519');
  cliPrivate = cliKey.privateKey;
  const slackKey = generateKeyPairSync('ed25519');
  writeFileSync(join(dir, 'cli.key'), pem(cliKey.privateKey));
  // The worker holds only Slack's public key; the private half lives with the Slack app.
  writeFileSync(join(dir, 'slack.pub'), slackKey.publicKey.export({ type: 'spki', format: 'pem' }).toString());
  temporal = await startTemporal();
  taskQueue = `airlock-proof-${randomUUID()}`;
  loaded = parseConfig(
    `
auth: { signingKey: { env: AIRLOCK_TEST_UNUSED_KEY } }
store: { sqlite: airlock.db }
temporal: { address: "${temporal.address}", namespace: default, taskQueue: ${taskQueue} }
decisions:
  keys:
    cli: { privateKey: { file: cli.key } }
    slack: { publicKey: slack.pub }
slack:
  botToken: { env: AIRLOCK_TEST_UNUSED_TOKEN }
  signingSecret: { env: AIRLOCK_TEST_UNUSED_SECRET }
  channel: "#db"
  users: { U0BOB: bob }
${IDENTITIES}`,
    join(dir, 'airlock.yaml'),
    dir,
  );
  store = SqliteStore.open(join(dir, 'airlock.db'));
  local = LocalChannel.open(join(dir, 'airlock.db'));
  worker = await runWorker({ loaded, store, channels: [local], connection: temporal.native });
  cli = signerFromConfig(loaded, 'cli')!;
  slack = decisionSigner('slack', slackKey.privateKey);
});

after(async () => {
  await worker?.shutdown();
  await temporal?.stop();
  local?.close();
  store?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function request(overrides: Parameters<typeof approvalInput>[0] = {}) {
  const input = approvalInput(overrides);
  const handle = await startApproval(temporal.client, taskQueue, input);
  await eventually(() => local.get(input.requestId), 10_000, 'the request to be posted');
  return { handle, id: input.requestId };
}

function decision(requestId: string, approver: string, over: Partial<DecisionRequest> = {}): DecisionRequest {
  return { requestId, approver, approverGroups: [], decision: 'approve', via: 'cli', ...over };
}

function audits(id: string, kind: string) {
  return store.listAudit(id).filter((e) => e.kind === kind);
}

async function refusedAudit(id: string, pattern: RegExp) {
  return eventually(() => audits(id, 'approval.decision-refused').find((e) => pattern.test(String(e.detail.error))), 10_000, `a refused-decision audit matching ${pattern}`);
}

describe('decision proof', () => {
  test('a forged Update sent with the Temporal client (made-up approver, claimed dba group, no proof) is refused and audited', async () => {
    const { id, handle } = await request();
    await assert.rejects(
      handle.executeUpdate(decideUpdate, { args: [{ approver: 'ghost', approverGroups: ['dba'], decision: 'approve', via: 'slack:U0GHOST' }] }),
      (err: unknown) => err instanceof WorkflowUpdateFailedError && /unsigned decision/.test(String((err.cause as Error | undefined)?.message)),
    );
    const row = await refusedAudit(id, /unsigned decision/);
    assert.equal(row.detail.approver, 'ghost');
    assert.deepEqual(row.detail.approverGroups, ['dba']);
    assert.equal(row.detail.via, 'unverified');
    assert.equal((await handle.query(stateQuery)).status, 'pending');
    assert.equal(audits(id, 'approval.decision').length, 0);
  });

  test('a proof signed with an unknown key, or altered after signing, is refused and audited', async () => {
    const { id, handle } = await request();
    const rogue = decisionSigner('cli', generateKeyPairSync('ed25519').privateKey);
    const r1 = await submitDecision(temporal.client, store, rogue.sign(decision(id, 'bob'), 'ops'));
    assert.equal(r1.ok, false);
    assert.match(r1.ok ? '' : r1.error, /bad signature/);
    // Valid proof for mallory, approver swapped to bob afterwards.
    const signed = cli.sign(decision(id, 'mallory'), 'ops');
    const r2 = await submitDecision(temporal.client, store, { ...signed, approver: 'bob' });
    assert.match(r2.ok ? '' : r2.error, /bad signature/);
    // Teams has no key on this worker.
    const teams = decisionSigner('teams', generateKeyPairSync('ed25519').privateKey);
    const r3 = await submitDecision(temporal.client, store, teams.sign(decision(id, 'bob'), 'aad-bob'));
    assert.match(r3.ok ? '' : r3.error, /no decision key for source "teams"/);
    await refusedAudit(id, /bad signature/);
    await refusedAudit(id, /no decision key/);
    assert.equal((await handle.query(stateQuery)).status, 'pending');
  });

  test('a correctly signed decision by someone whose configured groups lack the approver group is refused, whatever groups the caller claims', async () => {
    const { id, handle } = await request();
    const r = await submitDecision(temporal.client, store, cli.sign(decision(id, 'mallory', { approverGroups: ['dba'] }), 'ops'));
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.error, /mallory is not in an approver group .*mallory is in: engineers/);
    const row = await refusedAudit(id, /not in an approver group/);
    assert.equal(row.actor, 'mallory');
    assert.deepEqual(row.detail.approverGroups, ['dba']); // what was claimed
    assert.deepEqual((row.detail.verified as { groups: string[] }).groups, ['engineers']); // what the config says
    assert.equal((await handle.query(stateQuery)).status, 'pending');
    // A Slack user mapped to bob cannot sign as carol.
    const r2 = await submitDecision(temporal.client, store, slack.sign(decision(id, 'carol'), 'U0BOB'));
    assert.match(r2.ok ? '' : r2.error, /U0BOB is mapped to bob, not carol/);
    // A name unknown to the worker's config is refused even when signed.
    const r3 = await submitDecision(temporal.client, store, cli.sign(decision(id, 'ghost', { approverGroups: ['dba'] }), 'ops'));
    assert.match(r3.ok ? '' : r3.error, /ghost is not a configured identity/);
  });

  test('a valid signed decision counts; the audit and history say where it came from', async () => {
    const { id, handle } = await request();
    const r = await submitDecision(temporal.client, store, slack.sign(decision(id, 'bob', { approverGroups: [] }), 'U0BOB'));
    assert.equal(r.ok, true, r.ok ? '' : r.error);
    const result: ApprovalResult = await handle.result();
    assert.equal(result.outcome, 'approved');
    assert.deepEqual(result.approvers, ['bob']);
    const row = await eventually(() => audits(id, 'approval.decision')[0], 10_000, 'the decision audit');
    assert.equal(row.actor, 'bob');
    assert.equal(row.detail.via, 'slack:U0BOB');
    assert.equal(row.detail.source, 'slack');
    assert.deepEqual(row.detail.groups, ['dba']);
  });

  test('a replayed proof is refused and audited, within the run and into a later run of the same request id', async () => {
    const { id, handle } = await request({ quorum: 2 });
    const bob = cli.sign(decision(id, 'bob'), 'ops');
    assert.equal((await submitDecision(temporal.client, store, bob)).ok, true);
    const replay = await submitDecision(temporal.client, store, bob);
    assert.equal(replay.ok, false);
    assert.match(replay.ok ? '' : replay.error, /replayed decision proof/);
    await refusedAudit(id, /replayed decision proof/);
    const dave = cli.sign(decision(id, 'dave'), 'ops');
    assert.equal((await submitDecision(temporal.client, store, dave)).ok, true);
    assert.equal((await handle.result()).outcome, 'approved');

    // Same operation again (same request id, new run): yesterday's proofs do not approve it.
    const again = await startApproval(temporal.client, taskQueue, { ...approvalInput({ quorum: 1 }), requestId: id });
    await eventually(async () => (await again.query(stateQuery).catch(() => undefined))?.status === 'pending', 10_000, 'the new run');
    const r = await submitDecision(temporal.client, store, dave);
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.error, /predates this request/);
    assert.equal((await again.query(stateQuery)).status, 'pending');
  });

  test('a stale proof (signed with the right key too long ago) is refused', async () => {
    const { id } = await request();
    const late = decisionSigner('cli', cliPrivate, () => Date.now() - 10 * 60_000);
    const r = await submitDecision(temporal.client, store, late.sign(decision(id, 'bob'), 'ops'));
    assert.match(r.ok ? '' : r.error, /stale decision proof/);
    await refusedAudit(id, /stale decision proof/);
  });

  test('with no worker running, a decision fails at its deadline with a clear error, is audited, and a worker started later does not apply it', async () => {
    const queue = `airlock-noworker-${randomUUID()}`;
    const input = approvalInput();
    const handle = await startApproval(temporal.client, queue, input);
    const quick = decisionSigner('cli', cliPrivate, Date.now, 1500);
    const started = Date.now();
    const r = await submitDecision(temporal.client, store, quick.sign(decision(input.requestId, 'bob'), 'ops'));
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.error, /^no Airlock worker answered within 1\.5 s .*: the decision was not applied, and it cannot apply later/);
    assert.ok(Date.now() - started < 10_000, 'answered at the deadline, not hanging');
    await refusedAudit(input.requestId, /no Airlock worker answered/);
    // The worker comes back: whatever Temporal kept of the decision does not count now.
    const late = await runWorker({ loaded: { ...loaded, config: { ...loaded.config, temporal: { ...loaded.config.temporal!, taskQueue: queue } } }, store, channels: [local], connection: temporal.native });
    try {
      await eventually(() => local.get(input.requestId), 20_000, 'the request posted once a worker runs');
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal((await handle.query(stateQuery)).status, 'pending');
      assert.equal(audits(input.requestId, 'approval.decision').length, 0, 'no decision was accepted');
      // And a decision made now, with a worker, counts as usual.
      const ok = await submitDecision(temporal.client, store, cli.sign(decision(input.requestId, 'bob'), 'ops'));
      assert.equal(ok.ok, true, ok.ok ? '' : ok.error);
    } finally {
      await late.shutdown();
    }
  });

  test('concurrent decisions are serialized: a duplicate approver never counts twice toward the quorum', async () => {
    const { id, handle } = await request({ quorum: 2 });
    const attempts = await Promise.all([
      submitDecision(temporal.client, store, cli.sign(decision(id, 'bob'), 'ops')),
      submitDecision(temporal.client, store, cli.sign(decision(id, 'bob'), 'ops')),
      submitDecision(temporal.client, store, cli.sign(decision(id, 'bob'), 'ops')),
    ]);
    assert.equal(attempts.filter((a) => a.ok).length, 1);
    assert.equal((await handle.query(stateQuery)).status, 'pending');
    assert.deepEqual((await handle.query(stateQuery)).decidedBy, ['bob']);
    const [d, c] = await Promise.all([
      submitDecision(temporal.client, store, cli.sign(decision(id, 'dave'), 'ops')),
      submitDecision(temporal.client, store, cli.sign(decision(id, 'carol', { decision: 'reject', reason: 'not today' }), 'ops')),
    ]);
    // Exactly one of the racing decisions closed the request; the other was told it is closed.
    assert.equal([d, c].filter((x) => x.ok).length, 1);
    const result = await handle.result();
    if (d.ok) assert.deepEqual({ outcome: result.outcome, approvers: [...result.approvers].sort() }, { outcome: 'approved', approvers: ['bob', 'dave'] });
    else assert.deepEqual({ outcome: result.outcome, by: result.rejectedBy }, { outcome: 'rejected', by: 'carol' });
    const loser = d.ok ? c : d;
    assert.match(loser.ok ? '' : loser.error, /no longer pending/);
  });

  test('the grant choice is covered by the signature and bounded by the rule', async () => {
    const { id, handle } = await request();
    const signed = cli.sign(decision(id, 'bob', { grant: { forMs: 60_000 } }), 'ops');
    const widened = await submitDecision(temporal.client, store, { ...signed, grant: { forMs: 3_600_000 } });
    assert.match(widened.ok ? '' : widened.error, /bad signature/);
    // This request's rule gives no grantTtl: approve-once only.
    const r = await submitDecision(temporal.client, store, signed);
    assert.match(r.ok ? '' : r.error, /approve-once only/);
    assert.equal((await handle.query(stateQuery)).status, 'pending');
  });

  test('a rejection is searchable by its rejecter (AirlockRejecter)', async () => {
    const { id, handle } = await request();
    const r = await submitDecision(temporal.client, store, cli.sign(decision(id, 'dave', { decision: 'reject', reason: 'not during the freeze' }), 'ops'));
    assert.equal(r.ok, true, r.ok ? '' : r.error);
    assert.equal((await handle.result()).rejectedBy, 'dave');
    const ids = await eventually(async () => {
      const found: string[] = [];
      for await (const w of temporal.client.workflow.list({ query: `AirlockRejecter = "dave" AND WorkflowId = "${id}"` })) found.push(w.workflowId);
      return found.length > 0 ? found : undefined;
    }, 15_000, 'the rejecter in visibility');
    assert.deepEqual(ids, [id]);
  });
});
