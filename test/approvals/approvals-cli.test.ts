// `airlock approvals list/show/approve/reject` as a person runs it (the real CLI in a child
// process) against requests held by the gateway's TemporalApprover, posted to the local channel
// by the real worker: same Update path, same validation, non-zero exit on refusal.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { HoldPosted, HoldRequest } from '../../gateway/approvals/approver.ts';
import { TemporalApprover } from '../../gateway/approvals/temporal-approver.ts';
import { eventually, IDENTITIES, startHarness, type Harness } from '../workflows/harness.ts';

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
${IDENTITIES}`,
  );
});
after(async () => {
  await h?.close();
});

async function airlock(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args, '--config', configFile], { env: { ...process.env, AIRLOCK_LOG_LEVEL: 'silent' }, timeout: 60_000 });
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
    assert.match(stranger.stderr, /refused: nobody is not in an approver group.*\(nobody is not listed under identities: in /);

    const ok = await airlock('approvals', 'approve', requestId, '--as', 'bob');
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`${requestId}: approved by bob`));
    assert.deepEqual(await held.outcome, { outcome: 'approved', requestId, approvers: ['bob'], viaGrant: false });

    const again = await airlock('approvals', 'approve', requestId, '--as', 'dave');
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no longer pending \(approved by bob\)/);

    const audit = h.store.listAudit(requestId);
    assert.equal(audit.filter((e) => e.kind === 'approval.decision-refused').length, 3);
    assert.equal(audit.filter((e) => e.kind === 'approval.decision' && e.actor === 'bob' && e.detail.via === 'cli').length, 1);
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
});
