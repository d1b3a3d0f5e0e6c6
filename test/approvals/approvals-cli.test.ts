// `airlock approvals list/show/approve/reject` as a person runs it (the real CLI in a child
// process) against requests held by the gateway's TemporalApprover, posted to the local channel
// by the real worker: same Update path, same validation, non-zero exit on refusal.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { HoldPosted, HoldRequest } from '../../gateway/approvals/approver.ts';
import { TemporalApprover } from '../../gateway/approvals/temporal-approver.ts';
import { parseConfig } from '../../gateway/config/load.ts';
import { checkProof, signerFromConfig, verificationKeys } from '../../workflows/decision-proof.ts';
import { DECISIONS_YAML, eventually, IDENTITIES, startHarness, type Harness } from '../workflows/harness.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'bin', 'airlock.js');

let h: Harness;
let approver: TemporalApprover;
let configFile: string;
before(async () => {
  h = await startHarness();
  approver = new TemporalApprover({ client: h.temporal.client, taskQueue: h.taskQueue, store: h.store, channelsDescription: 'the local channel' });
  configFile = join(h.dir, 'airlock.yaml');
  writeFileSync(
    configFile,
    `auth: { signingKey: { env: AIRLOCK_TEST_UNUSED_KEY } }
store: { sqlite: airlock.db }
temporal: { address: "${h.temporal.address}", namespace: default, taskQueue: ${h.taskQueue} }
${DECISIONS_YAML}
${IDENTITIES}`,
  );
});
after(async () => {
  await h?.close();
});

async function airlock(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return airlockWith(configFile, ...args);
}

async function airlockWith(config: string | undefined, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args, ...(config ? ['--config', config] : [])], { env: { ...process.env, AIRLOCK_LOG_LEVEL: 'silent' }, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

function hold(text: string) {
  const req: HoldRequest = {
    operation: {
      protocol: 'postgres',
      identity: { name: 'agent-x', groups: ['agents'], owner: 'carol' },
      connection: { name: 'prod', clientAddress: '127.0.0.1:1', sessionId: `cli-${text.length}` },
      kind: 'write',
      text,
      tables: ['public.customers'],
      functions: [],
    },
    rule: 'review-prod-writes',
    reason: 'writes on prod need a DBA',
    review: { approvers: ['dba'], quorum: 1, timeoutMs: 120_000, escalation: [], grantTtlMs: 60_000 },
  };
  let posted: HoldPosted | undefined;
  const outcome = approver.hold(req, (p) => (posted = p), new AbortController().signal);
  return { outcome, posted: () => eventually(() => posted, 10_000, 'request posted') };
}

describe('airlock approvals (local channel)', () => {
  test('list shows the pending request; approve refuses the agent owner, then an approver approves it', async () => {
    const held = hold('DELETE FROM customers WHERE id = 1');
    const { requestId } = await held.posted();

    const list = await airlock('approvals', 'list');
    assert.equal(list.code, 0, list.stderr);
    const row = list.stdout.split('\n').find((l) => l.startsWith(requestId));
    assert.ok(row, `a row for ${requestId} in:\n${list.stdout}`);
    assert.match(row, /pending .*agent-x \(owner carol\)\s+prod\s+review-prod-writes\s+0\/1\s+\S+\s+DELETE FROM customers WHERE id = 1/);
    assert.match(list.stdout, /approve: airlock approvals approve <ID> --as <NAME>/);

    const owner = await airlock('approvals', 'approve', requestId, '--as', 'carol');
    assert.equal(owner.code, 1);
    assert.match(owner.stderr, /refused: carol owns the requesting agent agent-x and cannot approve its requests/);

    const stranger = await airlock('approvals', 'approve', requestId, '--as', 'nobody');
    assert.equal(stranger.code, 1);
    assert.match(stranger.stderr, /refused: nobody is not a configured identity \(nobody is not listed under identities: in /);

    const ok = await airlock('approvals', 'approve', requestId, '--as', 'bob');
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`${requestId}: approved by bob`));
    assert.deepEqual(await held.outcome, { outcome: 'approved', requestId, approvers: ['bob'], viaGrant: false });

    const again = await airlock('approvals', 'approve', requestId, '--as', 'dave');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no longer pending \(approved by bob\)/);

    const audit = h.store.listAudit(requestId);
    assert.equal(audit.filter((e) => e.kind === 'approval.decision-refused').length, 3);
    // Audited by the workflow itself, with the verified source: the operator-key-signed CLI.
    const accepted = audit.filter((e) => e.kind === 'approval.decision' && e.actor === 'bob');
    assert.equal(accepted.length, 1);
    assert.match(String(accepted[0].detail.via), /^cli:/);
    assert.equal(accepted[0].detail.source, 'cli');
  });

  test('reject needs a reason, and the requester gets who and why; show prints the thread', async () => {
    const held = hold('TRUNCATE customers');
    const { requestId } = await held.posted();

    const noReason = await airlock('approvals', 'reject', requestId, '--as', 'bob');
    assert.notEqual(noReason.code, 0);
    assert.match(noReason.stderr, /--reason/);

    const r = await airlock('approvals', 'reject', requestId, '--as', 'bob', '--reason', 'use a soft delete');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /rejected by bob: use a soft delete/);
    assert.deepEqual(await held.outcome, { outcome: 'rejected', requestId, by: 'bob', reason: 'use a soft delete' });

    await eventually(() => h.local.get(requestId)?.request.view.status === 'rejected', 10_000, 'message updated');
    const show = await airlock('approvals', 'show', requestId);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /status\s+rejected \(bob\): use a soft delete/);
    assert.match(show.stdout, /posted\s+agent-x wants to run on prod: TRUNCATE customers/);

    const pending = await airlock('approvals', 'list');
    assert.equal(pending.code, 0);
    assert.equal(pending.stdout, 'no pending approval requests\n');
    const all = await airlock('approvals', 'list', '--all');
    assert.match(all.stdout, new RegExp(`${requestId}\\s+rejected`));
  });

  test('decisions are signed with the operator key: without it nothing is sent, with a wrong one the worker refuses and audits', async () => {
    const held = hold('DELETE FROM customers WHERE id = 77');
    const { requestId } = await held.posted();
    const base = `auth: { signingKey: { env: AIRLOCK_TEST_UNUSED_KEY } }
store: { sqlite: airlock.db }
temporal: { address: "${h.temporal.address}", namespace: default, taskQueue: ${h.taskQueue} }
${IDENTITIES}`;
    const keyless = join(h.dir, 'keyless.yaml');
    writeFileSync(keyless, base);
    const none = await airlockWith(keyless, 'approvals', 'approve', requestId, '--as', 'bob');
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no operator key \(decisions\.keys\.cli\.privateKey/);

    writeFileSync(join(h.dir, 'rogue.key'), generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const rogue = join(h.dir, 'rogue.yaml');
    writeFileSync(rogue, `${base}\ndecisions: { keys: { cli: { privateKey: { file: rogue.key } } } }\n`);
    const forged = await airlockWith(rogue, 'approvals', 'approve', requestId, '--as', 'bob');
    assert.equal(forged.code, 1);
    assert.match(forged.stderr, /refused: bad signature/);
    await eventually(() => h.store.listAudit(requestId).find((e) => e.kind === 'approval.decision-refused' && /bad signature/.test(String(e.detail.error))), 10_000, 'the forged attempt audited');
    assert.equal(h.local.get(requestId)?.request.view.status, 'pending');

    // A short id (a unique prefix, as people copy it) works, and the grant choice reaches the worker.
    const prefix = requestId.slice(0, requestId.length - 4);
    const show = await airlock('approvals', 'show', prefix);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, new RegExp(`request\\s+${requestId}`));
    const noFor = await airlock('approvals', 'approve', prefix, '--as', 'bob', '--runs', '2');
    assert.notEqual(noFor.code, 0);
    assert.match(noFor.stderr, /--runs needs --for/);
    const grant = await airlock('approvals', 'approve', prefix, '--as', 'bob', '--for', '10m');
    assert.equal(grant.code, 1);
    const refusedGrant = await eventually(() => h.store.listAudit(requestId).find((e) => e.kind === 'approval.decision-refused' && e.actor === 'bob' && (e.detail.grant as { forMs?: number } | undefined)?.forMs === 600_000), 10_000, 'the grant choice in the audited decision');
    assert.match(String(refusedGrant.detail.error), /grant|approve-once/);

    const ok = await airlock('approvals', 'approve', prefix, '--as', 'bob');
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`${requestId}: approved by bob; the held operation runs now \\(once\\)`));
    assert.equal((await held.outcome).outcome, 'approved');
  });

  test('keygen writes a decision key pair: the private half signs, the public half verifies, nothing is overwritten', async () => {
    const file = join(h.dir, 'ops-decision.key');
    const r = await airlockWith(undefined, 'approvals', 'keygen', file);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /decisions:\n  keys:\n    cli: \{ privateKey: \{ file: /);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const again = await airlockWith(undefined, 'approvals', 'keygen', file);
    assert.notEqual(again.code, 0, 'an existing key is never overwritten');
    const signerSide = parseConfig(`auth: { signingKey: { env: X } }\ndecisions: { keys: { cli: { privateKey: { file: ops-decision.key } } } }\n`, join(h.dir, 'a.yaml'), h.dir);
    const workerSide = parseConfig(`auth: { signingKey: { env: X } }\ndecisions: { keys: { cli: { publicKey: ops-decision.key.pub } } }\n`, join(h.dir, 'b.yaml'), h.dir);
    const d = signerFromConfig(signerSide, 'cli')!.sign({ requestId: 'r-1', approver: 'bob', approverGroups: [], decision: 'approve', via: 'cli' }, 'ops');
    assert.equal(signerFromConfig(workerSide, 'cli'), undefined, 'the worker side cannot sign');
    assert.equal(checkProof(verificationKeys(workerSide), 'r-1', d, { now: Date.now(), maxAgeMs: 60_000, notBefore: 0 }).ok, true);
    assert.equal(checkProof(verificationKeys(workerSide), 'r-2', d, { now: Date.now(), maxAgeMs: 60_000, notBefore: 0 }).ok, false, 'bound to its request id');
  });
});
