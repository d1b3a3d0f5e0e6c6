// Held SSH commands through the real approval path: the gateway's TemporalApprover, a real
// Temporal dev server, the real worker and workflow, and the local approval channel. An approver
// decides with the same call the chat apps and `airlock approvals` use.
import { SSH_EXIT_STATUS } from '../../gateway/enforce/refusal.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TemporalApprover, } from '../../gateway/approvals/temporal-approver.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { renderApproval } from '../../bots/slack/blocks.ts';
import { renderCard } from '../../bots/teams/cards.ts';
import { giveToUser } from '../support/sshd.ts';
import { eventually, startHarness, type Harness } from '../workflows/harness.ts';
import { startSshHarness, type SshHarness } from './harness.ts';

let wf: Harness;
let h: SshHarness;
let work: string;

before(async () => {
  wf = await startHarness();
  const approver = new TemporalApprover({ client: wf.temporal.client, taskQueue: wf.taskQueue, store: wf.store, channelsDescription: 'the local channel' });
  h = await startSshHarness(
    {
      default: 'allow',
      rules: [{ name: 'review-deploys', match: { protocols: ['ssh'], kinds: ['exec'], text: ['^echo deploy\\b'] }, action: 'review', reason: 'deploys need a DBA', review: { approvers: ['dba'], timeout: '5m' } }],
    },
    {},
    approver,
  );
  work = mkdtempSync(join(tmpdir(), 'airlock-ssh-temporal-'));
  giveToUser(h.sshd, work);
});

after(async () => {
  await h?.close();
  await wf?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** The id of the pending request for `cmd` once it is posted to the local channel. */
async function postedRequestId(cmd: string): Promise<string> {
  return eventually(() => wf.local.list().find((r) => r.view.text === cmd)?.view.requestId, 20_000, 'request posted to the local channel');
}

test('a held command is posted to the approval channel, approved by a DBA, then runs', async () => {
  const marker = join(work, 'deployed');
  const cmd = `echo deploy v2 > ${marker}; echo shipped`;
  const p = h.ssh('box', cmd, { auth: { token: await h.token('agent-1') }, timeoutMs: 60_000 });
  const id = await postedRequestId(cmd);
  assert.equal(existsSync(marker), false, 'held, not run');
  const d = await submitDecision(wf.temporal.client, wf.store, wf.sign({ requestId: id, approver: 'bob', approverGroups: ['dba'], decision: 'approve', via: 'test' }));
  assert.ok(d.ok, d.ok ? '' : d.error);
  const r = await p;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), 'shipped\n');
  assert.match(r.stderr, new RegExp(`approval required by rule review-deploys .*request ${id} posted to the local channel, waiting`));
  assert.match(r.stderr, /approved by bob/);
  assert.equal(readFileSync(marker, 'utf8'), 'deploy v2\n');
});

test('a held command rejected in the approval channel does not run and says who and why', async () => {
  const marker = join(work, 'deployed-friday');
  const cmd = `echo deploy friday > ${marker}`;
  const p = h.ssh('box', cmd, { auth: { token: await h.token('agent-1') }, timeoutMs: 60_000 });
  const id = await postedRequestId(cmd);
  const d = await submitDecision(wf.temporal.client, wf.store, wf.sign({ requestId: id, approver: 'bob', approverGroups: ['dba'], decision: 'reject', reason: 'no deploys on Friday', via: 'test' }));
  assert.ok(d.ok, d.ok ? '' : d.error);
  const r = await p;
  assert.equal(r.code, SSH_EXIT_STATUS.rejected);
  assert.match(r.stderr, /rejected by bob: no deploys on Friday/);
  assert.equal(existsSync(marker), false);
});

test("the agent's reason from an AIRLOCK_REASON env request reaches the request (local, Slack and Teams renderings) and the audit; it never reaches the host", async () => {
  const marker = join(work, 'deployed-reason');
  const cmd = `echo deploy v3 > ${marker}; echo "reason:[$AIRLOCK_REASON]"`;
  const p = h.ssh('box', cmd, {
    auth: { token: await h.token('agent-1') },
    extra: ['-o', 'SetEnv=AIRLOCK_REASON="hotfix for carol@example.com" AIRLOCK_TICKET=INC-42'],
    timeoutMs: 60_000,
  });
  const id = await postedRequestId(cmd);
  const view = wf.local.list().find((r) => r.view.requestId === id)!.view;
  const reasonLine = `agent's reason: "hotfix for [redacted:email]" (ssh env)`;
  assert.ok(view.details?.includes(reasonLine), JSON.stringify(view.details));
  assert.ok(view.details?.includes('ticket: INC-42'));
  assert.ok(view.details?.includes("agent's owner: alice"));
  assert.ok(JSON.stringify(renderApproval(view).blocks).includes('hotfix for \\[redacted:email\\]') || JSON.stringify(renderApproval(view).blocks).includes('hotfix for [redacted:email]'));
  assert.ok(JSON.stringify(renderCard(view).card).includes('hotfix for'), 'Teams card carries the reason');
  const d = await submitDecision(wf.temporal.client, wf.store, wf.sign({ requestId: id, approver: 'bob', approverGroups: ['dba'], decision: 'approve', via: 'test' }));
  assert.ok(d.ok, d.ok ? '' : d.error);
  const r = await p;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), 'reason:[]\n', 'AIRLOCK_REASON is for Airlock, not the host (the target does not allow it)');
  const requested = wf.store.listAudit(id).find((e) => e.kind === 'approval.requested');
  assert.ok(JSON.stringify(requested?.detail).includes(reasonLine.replace(/"/g, '\\"')), JSON.stringify(requested?.detail));
  assert.ok(!JSON.stringify(wf.store.listAudit()).includes('carol@example.com'));
});
