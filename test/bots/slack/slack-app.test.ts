import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ApprovalView, MessageRef } from '../../../bots/channel.ts';
import { generateKeyPairSync } from 'node:crypto';
import { MemoryApprovals, withoutProof } from '../../support/memory-approvals.ts';
import { decisionSigner } from '../../../workflows/decision-proof.ts';
import { NOT_MAPPED, resolveSlackSecrets, startSlackApp, type RunningSlackApp } from '../../../bots/slack/slack-app.ts';
import { SlackChannel } from '../../../bots/slack/slack-channel.ts';
import { parseConfig, type LoadedConfig } from '../../../gateway/config/load.ts';
import { FakeSlack, blockActionPayload, postInteraction, postSlashCommand, slackSignature, viewSubmissionPayload, type FakeSlackCall } from '../../support/fake-slack.ts';

const SECRET = 'test-signing-secret-8f2c';
const SLACK_KEY = generateKeyPairSync('ed25519');
const signer = decisionSigner('slack', SLACK_KEY.privateKey);

const config = `
auth: { signingKey: { env: AIRLOCK_TEST_SIGNING_KEY } }
identities:
  - { name: alice, groups: [dba], email: Alice@Example.com }
  - { name: bob, groups: [dba] }
  - { name: carol, groups: [dba, sre], email: carol@example.com }
  - { name: dave, groups: [dev], email: dave@example.com }
  - { name: agent-billing, groups: [agents], owner: alice }
slack:
  botToken: { env: AIRLOCK_TEST_SLACK_TOKEN }
  signingSecret: { env: AIRLOCK_TEST_SLACK_SECRET }
  channel: '#db-approvals'
  listen: { host: 127.0.0.1, port: 0 }
  users: { U0BOB: bob }
`;


describe('Slack app: Approve/Reject clicks become validated decisions', () => {
  let slack: FakeSlack;
  let loaded: LoadedConfig;
  let app: RunningSlackApp;
  let url: string;
  let channelId: string;
  let poster: SlackChannel;
  // Decisions count only with the Slack app's signature, as on the worker.
  const approvals = new MemoryApprovals(new Map([['slack', SLACK_KEY.publicKey]]));

  before(async () => {
    slack = await FakeSlack.start();
    channelId = slack.addChannel('db-approvals');
    slack.addUser('U0ALICE', { email: 'alice@example.com' });
    slack.addUser('U0BOB');
    slack.addUser('U0CAROL', { email: 'carol@example.com' });
    slack.addUser('U0DAVE', { email: 'dave@example.com' });
    slack.addUser('U0MALLORY', { email: 'mallory@elsewhere.example' });
    loaded = parseConfig(config);
    app = await startSlackApp({ loaded, decide: approvals.decide, signer, pending: async () => [...approvals.requests.values()], botToken: slack.token, signingSecret: SECRET, apiUrl: slack.apiUrl });
    url = `http://127.0.0.1:${app.port}/slack/events`;
    poster = new SlackChannel({ botToken: slack.token, channel: '#db-approvals', apiUrl: slack.apiUrl });
  });
  after(async () => {
    await app?.stop();
    await slack.stop();
  });

  async function request(over: Partial<ApprovalView> & { requestId: string; identity: string }): Promise<MessageRef> {
    return poster.post(approvals.add(over));
  }

  function click(ref: MessageRef, userId: string, actionId: string, value: string): { payload: Record<string, unknown>; triggerId: string } {
    return blockActionPayload({ userId, channelId: ref.channel, messageTs: ref.ts, actionId, value });
  }

  /** The next ephemeral message to `user` sent after this point. */
  function nextEphemeral(user: string): Promise<FakeSlackCall> {
    const mark = slack.calls.length;
    return slack.waitForCall((c) => c.method === 'chat.postEphemeral' && c.params.user === user && slack.calls.indexOf(c) >= mark);
  }

  test('the bot token and signing secret come from the references in the config', () => {
    process.env.AIRLOCK_TEST_SLACK_TOKEN = 'xoxb-from-env';
    delete process.env.AIRLOCK_TEST_SLACK_SECRET;
    try {
      assert.throws(() => resolveSlackSecrets(loaded), /slack\.signingSecret: environment variable AIRLOCK_TEST_SLACK_SECRET is not set/);
      process.env.AIRLOCK_TEST_SLACK_SECRET = 'shh';
      assert.deepEqual(resolveSlackSecrets(loaded), { botToken: 'xoxb-from-env', signingSecret: 'shh' });
    } finally {
      delete process.env.AIRLOCK_TEST_SLACK_TOKEN;
      delete process.env.AIRLOCK_TEST_SLACK_SECRET;
    }
  });

  test('startup checks the bot token with auth.test and refuses a wrong one', async () => {
    await assert.rejects(
      startSlackApp({ loaded, decide: approvals.decide, signer, botToken: 'xoxb-wrong', signingSecret: SECRET, apiUrl: slack.apiUrl }),
      /bot token was refused/,
    );
  });

  test('an Approve click by a user mapped by email (users.info) approves as that identity', async () => {
    const ref = await request({ requestId: 'req-email', identity: 'dave' });
    const feedback = nextEphemeral('U0ALICE');
    const res = await postInteraction(url, SECRET, click(ref, 'U0ALICE', 'airlock_approve', 'req-email').payload);
    assert.equal(res.status, 200);
    const eph = await feedback;
    assert.deepEqual(withoutProof(approvals.attempts.at(-1)), { requestId: 'req-email', approver: 'alice', approverGroups: ['dba'], decision: 'approve', reason: undefined, via: 'slack:U0ALICE' });
    assert.ok(slack.callsTo('users.info').some((c) => c.params.user === 'U0ALICE'), 'looked up by email');
    assert.equal(eph.params.channel, channelId);
    assert.match(String(eph.params.text), /You approved request `req-email`: it is approved/);
    assert.equal(approvals.requests.get('req-email')?.status, 'approved');
  });

  test('an Approve click by a user in the explicit slack.users map approves without a profile lookup', async () => {
    const ref = await request({ requestId: 'req-map', identity: 'agent-billing', owner: 'alice', quorum: 2 });
    const lookups = slack.callsTo('users.info').length;
    const feedback = nextEphemeral('U0BOB');
    await postInteraction(url, SECRET, click(ref, 'U0BOB', 'airlock_approve', 'req-map').payload);
    const eph = await feedback;
    assert.deepEqual(withoutProof(approvals.attempts.at(-1)), { requestId: 'req-map', approver: 'bob', approverGroups: ['dba'], decision: 'approve', reason: undefined, via: 'slack:U0BOB' });
    assert.equal(slack.callsTo('users.info').length, lookups);
    assert.match(String(eph.params.text), /Your approval of request `req-map` is recorded \(1 of 2\)/);
  });

  test('self-approval is refused with a private message to the clicker', async () => {
    const ref = await request({ requestId: 'req-self', identity: 'carol', approverGroups: ['sre'] });
    const feedback = nextEphemeral('U0CAROL');
    await postInteraction(url, SECRET, click(ref, 'U0CAROL', 'airlock_approve', 'req-self').payload);
    const eph = await feedback;
    assert.match(String(eph.params.text), /was not accepted: carol requested this operation and cannot approve it \(no self-approval\)/);
    assert.equal(approvals.requests.get('req-self')?.status, 'pending');
    assert.equal(slack.messagesIn(channelId).find((m) => m.ts === ref.ts)?.edits, 0, 'the message is the workflow\'s to update, not the click handler\'s');
  });

  test("the owner of the requesting agent cannot approve the agent's request", async () => {
    const ref = await request({ requestId: 'req-owner', identity: 'agent-billing', owner: 'alice' });
    const feedback = nextEphemeral('U0ALICE');
    await postInteraction(url, SECRET, click(ref, 'U0ALICE', 'airlock_approve', 'req-owner').payload);
    assert.match(String((await feedback).params.text), /alice owns the requesting agent agent-billing/);
    assert.equal(approvals.requests.get('req-owner')?.status, 'pending');
  });

  test('someone outside the approver groups is refused', async () => {
    const ref = await request({ requestId: 'req-group', identity: 'carol' });
    const feedback = nextEphemeral('U0DAVE');
    await postInteraction(url, SECRET, click(ref, 'U0DAVE', 'airlock_approve', 'req-group').payload);
    assert.match(String((await feedback).params.text), /dave is not in an approver group/);
  });

  test('an unmapped Slack user is refused; the attempt still reaches the workflow (to be audited) with no approver', async () => {
    const ref = await request({ requestId: 'req-unmapped', identity: 'dave' });
    const before = approvals.attempts.length;
    const feedback = nextEphemeral('U0MALLORY');
    await postInteraction(url, SECRET, click(ref, 'U0MALLORY', 'airlock_approve', 'req-unmapped').payload);
    const eph = await feedback;
    assert.ok(String(eph.params.text).includes(NOT_MAPPED), String(eph.params.text));
    assert.match(String(eph.params.text), /U0MALLORY/);
    assert.equal(approvals.attempts.length, before + 1);
    assert.deepEqual(withoutProof(approvals.attempts.at(-1)), { requestId: 'req-unmapped', approver: '', approverGroups: [], decision: 'approve', reason: undefined, via: 'slack:U0MALLORY' });
    assert.equal(approvals.attempts.at(-1)?.proof?.channelUser, 'U0MALLORY');
    assert.equal(approvals.requests.get('req-unmapped')?.status, 'pending');
  });

  test('the grant choice is explicit: Approve once, and Approve for <grantTtl> with a confirm that says it becomes reusable', async () => {
    const ref = await request({ requestId: 'req-grant', identity: 'dave', grantTtlMs: 600_000, parameters: ["'Berlin'", '42'], details: ['tables: public.customers', 'session s-12 from 10.0.0.7'], waiting: 2 });
    const msg = slack.messages.find((m) => m.ts === ref.ts)!;
    const actions = msg.blocks.find((b) => b.type === 'actions') as unknown as { elements: Array<{ action_id: string; text: { text: string }; value: string; confirm?: { text: { text: string } } }> };
    assert.deepEqual(actions.elements.map((e) => e.text.text), ['Approve once', 'Approve for 10 minutes', 'Reject']);
    assert.match(actions.elements[1].confirm!.text.text, /becomes reusable/);
    assert.match(actions.elements[0].confirm!.text.text, /runs once/);
    const all = JSON.stringify(msg.blocks);
    assert.match(all, /\$1 = 'Berlin'/);
    assert.match(all, /session s-12 from 10\.0\.0\.7/);
    assert.match(all, /2 sessions are waiting/);

    const feedback = nextEphemeral('U0ALICE');
    await postInteraction(url, SECRET, click(ref, 'U0ALICE', 'airlock_approve_grant', actions.elements[1].value).payload);
    await feedback;
    const d = approvals.attempts.at(-1)!;
    assert.deepEqual(d.grant, { forMs: 600_000 });
    assert.equal(d.requestId, 'req-grant');

    // A rule without grantTtl: approve-once only, no grant button.
    const plain = await request({ requestId: 'req-once', identity: 'dave' });
    const plainActions = slack.messages.find((m) => m.ts === plain.ts)!.blocks.find((b) => b.type === 'actions') as unknown as { elements: Array<{ text: { text: string } }> };
    assert.deepEqual(plainActions.elements.map((e) => e.text.text), ['Approve once', 'Reject']);
  });

  test('/airlock pending lists pending requests to a mapped user, privately; the request must carry Slack\'s signature', async () => {
    await request({ requestId: 'req-listed', identity: 'dave', text: 'UPDATE t SET x = 1 WHERE id = 9' });
    const ok = await postSlashCommand(url, SECRET, { command: '/airlock', text: 'pending', userId: 'U0BOB', channelId });
    assert.equal(ok.status, 200);
    const answer = JSON.parse(ok.body) as { response_type: string; text: string };
    assert.equal(answer.response_type, 'ephemeral');
    assert.match(answer.text, /pending approval request/);
    assert.match(answer.text, /`req-listed` `dave` on `prod-db`: `UPDATE t SET x = 1 WHERE id = 9`/);
    assert.doesNotMatch(answer.text, /req-email/, 'decided requests are not listed');

    const forged = await postSlashCommand(url, SECRET, { command: '/airlock', text: 'pending', userId: 'U0BOB', channelId }, { secret: 'wrong' });
    assert.equal(forged.status, 401);
    const unmapped = await postSlashCommand(url, SECRET, { command: '/airlock', text: 'pending', userId: 'U0MALLORY', channelId });
    assert.match((JSON.parse(unmapped.body) as { text: string }).text, new RegExp(NOT_MAPPED));
    const help = await postSlashCommand(url, SECRET, { command: '/airlock', text: 'dance', userId: 'U0BOB', channelId });
    assert.match((JSON.parse(help.body) as { text: string }).text, /Usage: `\/airlock pending`/);
  });

  test('Reject opens a modal asking for a reason; submitting it rejects with that reason', async () => {
    const ref = await request({ requestId: 'req-reject', identity: 'dave' });
    const { payload, triggerId } = click(ref, 'U0CAROL', 'airlock_reject', 'req-reject');
    const opened = slack.waitForCall((c) => c.method === 'views.open' && c.params.trigger_id === triggerId);
    assert.equal((await postInteraction(url, SECRET, payload)).status, 200);
    await opened;
    const modal = slack.views.find((v) => v.trigger_id === triggerId)!.view as { callback_id: string; private_metadata: string; blocks: Array<{ type: string; block_id?: string; element?: { type: string; action_id: string } }> };
    const input = modal.blocks.find((b) => b.type === 'input');
    assert.equal(input?.element?.type, 'plain_text_input');
    assert.deepEqual(JSON.parse(modal.private_metadata), { requestId: 'req-reject', channel: channelId, ts: ref.ts });
    assert.equal(approvals.requests.get('req-reject')?.status, 'pending', 'opening the form decides nothing');

    // A blank reason is sent back to the form, not to the workflow.
    const before = approvals.attempts.length;
    const blank = await postInteraction(url, SECRET, viewSubmissionPayload({ userId: 'U0CAROL', callbackId: modal.callback_id, privateMetadata: modal.private_metadata, values: { [input!.block_id!]: { [input!.element!.action_id]: '   ' } } }));
    assert.equal(blank.status, 200);
    assert.equal(JSON.parse(blank.body).response_action, 'errors');
    assert.equal(approvals.attempts.length, before);

    const feedback = nextEphemeral('U0CAROL');
    const sub = await postInteraction(url, SECRET, viewSubmissionPayload({ userId: 'U0CAROL', callbackId: modal.callback_id, privateMetadata: modal.private_metadata, values: { [input!.block_id!]: { [input!.element!.action_id]: 'no deletes during the freeze' } } }));
    assert.equal(sub.status, 200);
    const eph = await feedback;
    assert.deepEqual(withoutProof(approvals.attempts.at(-1)), { requestId: 'req-reject', approver: 'carol', approverGroups: ['dba', 'sre'], decision: 'reject', reason: 'no deletes during the freeze', via: 'slack:U0CAROL' });
    assert.match(String(eph.params.text), /You rejected request `req-reject`/);
    assert.equal(eph.params.channel, channelId);
    assert.equal(approvals.requests.get('req-reject')?.status, 'rejected');
  });

  test('a click on an already decided request is refused', async () => {
    const feedback = nextEphemeral('U0BOB');
    const ref = { channel: channelId, ts: slack.messagesIn(channelId)[0].ts };
    await postInteraction(url, SECRET, click(ref, 'U0BOB', 'airlock_approve', 'req-email').payload);
    assert.match(String((await feedback).params.text), /req-email is no longer pending \(approved by alice\)/);
  });

  test('when the decision cannot be submitted the clicker is told nothing was decided', async () => {
    const ref = await request({ requestId: 'req-down', identity: 'dave' });
    approvals.failWith = new Error('Temporal is unreachable');
    try {
      const feedback = nextEphemeral('U0ALICE');
      await postInteraction(url, SECRET, click(ref, 'U0ALICE', 'airlock_approve', 'req-down').payload);
      assert.match(String((await feedback).params.text), /Could not record your decision on `req-down`: Temporal is unreachable\. Nothing was decided/);
    } finally {
      approvals.failWith = undefined;
    }
    assert.equal(approvals.requests.get('req-down')?.status, 'pending');
  });

  describe('requests not signed by Slack are refused with 401 before any handler runs', () => {
    let ref: MessageRef;
    before(async () => {
      ref = await request({ requestId: 'req-forged', identity: 'dave' });
    });

    const cases: Array<[string, () => Parameters<typeof postInteraction>[3]]> = [
      ['unsigned', () => ({ unsigned: true })],
      ['stale timestamp (6 minutes old), correctly signed', () => ({ timestamp: Math.floor(Date.now() / 1000) - 6 * 60 })],
      ['signed with the wrong secret', () => ({ secret: 'not-the-secret' })],
      ['garbage signature', () => ({ signature: 'v0=deadbeef' })],
      ['signature of another body', () => ({ signature: slackSignature(SECRET, Math.floor(Date.now() / 1000), 'payload=%7B%7D') })],
    ];
    for (const [name, opts] of cases) {
      test(name, async () => {
        const before = { attempts: approvals.attempts.length, calls: slack.calls.length };
        const res = await postInteraction(url, SECRET, click(ref, 'U0BOB', 'airlock_approve', 'req-forged').payload, opts());
        assert.equal(res.status, 401);
        await new Promise((r) => setTimeout(r, 100));
        assert.equal(approvals.attempts.length, before.attempts, 'no decision submitted');
        assert.equal(slack.calls.length, before.calls, 'no Slack call made on its behalf');
        assert.equal(approvals.requests.get('req-forged')?.status, 'pending');
      });
    }

    test('the same click, correctly signed, is accepted (the refusals above are about the signature)', async () => {
      const feedback = nextEphemeral('U0BOB');
      const res = await postInteraction(url, SECRET, click(ref, 'U0BOB', 'airlock_approve', 'req-forged').payload);
      assert.equal(res.status, 200);
      await feedback;
      assert.equal(approvals.requests.get('req-forged')?.status, 'approved');
    });
  });
});
