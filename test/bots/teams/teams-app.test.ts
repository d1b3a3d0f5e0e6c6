import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ApprovalView, MessageRef } from '../../../bots/channel.ts';
import { generateKeyPairSync } from 'node:crypto';
import { MemoryApprovals, withoutProof } from '../../support/memory-approvals.ts';
import { decisionSigner } from '../../../workflows/decision-proof.ts';
import { NOT_MAPPED, startTeamsApp, type RunningTeamsApp } from '../../../bots/teams/teams-app.ts';
import { TeamsChannel } from '../../../bots/teams/teams-channel.ts';
import { parseConfig, type LoadedConfig } from '../../../gateway/config/load.ts';
import { FakeBotConnector, cardOf, cardText, type FakeTeamsUser } from '../../support/fake-bot-connector.ts';

const APP_ID = '0b7e51c2-94d1-4d0a-a3a5-7c2f3b9e6d21';
const PASSWORD = 'teams-app-secret~2';
const TEAMS_KEY = generateKeyPairSync('ed25519');
const signer = decisionSigner('teams', TEAMS_KEY.privateKey);


interface InvokeAnswer {
  statusCode: number;
  type: string;
  value: { body: Array<Record<string, unknown>>; actions?: Array<Record<string, unknown>>; version: string };
}

describe('Teams app: Adaptive Card clicks become validated decisions', () => {
  let fake: FakeBotConnector;
  let loaded: LoadedConfig;
  let app: RunningTeamsApp;
  let url: string;
  let channelId: string;
  let poster: TeamsChannel;
  let dir: string;
  // Decisions count only with the Teams app's signature, as on the worker.
  const approvals = new MemoryApprovals(new Map([['teams', TEAMS_KEY.publicKey]]));
  let alice: FakeTeamsUser;
  let bob: FakeTeamsUser;
  let carol: FakeTeamsUser;
  let erin: FakeTeamsUser;
  let dave: FakeTeamsUser;
  let mallory: FakeTeamsUser;

  before(async () => {
    fake = await FakeBotConnector.start({ appId: APP_ID, appPassword: PASSWORD });
    channelId = fake.addChannel();
    alice = fake.addUser({ name: 'Alice', email: 'alice@example.com', userPrincipalName: 'alice@example.com' });
    bob = fake.addUser({ name: 'Bob', userPrincipalName: 'bob@corp.example.com' });
    carol = fake.addUser({ name: 'Carol', email: 'Carol@Example.com', userPrincipalName: 'carol@corp.example.com' });
    // Erin has no mailbox email: mapped by her UPN.
    erin = fake.addUser({ name: 'Erin', userPrincipalName: 'erin@example.com' });
    dave = fake.addUser({ name: 'Dave', email: 'dave@example.com' });
    mallory = fake.addUser({ name: 'Mallory', email: 'mallory@elsewhere.example' });
    dir = mkdtempSync(join(tmpdir(), 'airlock-teams-app-'));
    process.env.AIRLOCK_TEST_TEAMS_APP_PASSWORD = PASSWORD;
    loaded = parseConfig(
      `
auth: { signingKey: { env: AIRLOCK_TEST_SIGNING_KEY } }
identities:
  - { name: alice, groups: [dba], email: alice@example.com }
  - { name: bob, groups: [dba] }
  - { name: carol, groups: [dba, sre], email: carol@example.com }
  - { name: erin, groups: [dba], email: erin@example.com }
  - { name: dave, groups: [dev], email: dave@example.com }
  - { name: agent-billing, groups: [agents], owner: alice }
teams:
  appId: ${APP_ID}
  appPassword: { env: AIRLOCK_TEST_TEAMS_APP_PASSWORD }
  tenantId: ${fake.tenantId}
  serviceUrl: ${fake.serviceUrl}
  referenceStore: teams-refs.json
  listen: { host: 127.0.0.1, port: 0 }
  users: { '${bob.aadObjectId}': bob }
  botFramework:
    openIdMetadataUrl: '${fake.openIdMetadataUrl}'
    loginUrl: '${fake.loginUrl()}'
`,
      join(dir, 'airlock.yaml'),
      dir,
    );
    app = await startTeamsApp({ loaded, decide: approvals.decide, signer, lookup: approvals.lookup });
    url = `http://127.0.0.1:${app.port}/api/messages`;
    poster = TeamsChannel.fromConfig(loaded);
  });
  after(async () => {
    await app?.stop();
    await fake.stop();
    rmSync(dir, { recursive: true, force: true });
    delete process.env.AIRLOCK_TEST_TEAMS_APP_PASSWORD;
  });

  async function request(over: Partial<ApprovalView> & { requestId: string; identity: string }): Promise<MessageRef> {
    return poster.post(approvals.add(over));
  }

  async function click(ref: MessageRef, user: FakeTeamsUser, verb: string, data: Record<string, unknown> = {}, opts: { tenantId?: string; token?: string | null } = {}): Promise<{ status: number; answer: InvokeAnswer }> {
    const activity = fake.invokeActivity({ conversationId: ref.conversationId, replyToId: ref.activityId, user, verb, data, tenantId: opts.tenantId });
    const res = await fake.deliver(url, activity, opts.token);
    return { status: res.status, answer: res.body as InvokeAnswer };
  }

  function cardNow(ref: MessageRef): ReturnType<typeof cardOf> {
    return cardOf(fake.message(ref.activityId)!.activity);
  }

  test('installing the bot in a team records the channel; requests then go there without a configured channel id', async () => {
    const res = await fake.deliver(url, fake.installActivity(channelId, 'team-ops'));
    assert.equal(res.status, 200);
    const stored = JSON.parse(readFileSync(join(dir, 'teams-refs.json'), 'utf8')) as { channels: Array<Record<string, unknown>> };
    assert.equal(stored.channels.length, 1);
    assert.equal(stored.channels[0].conversationId, channelId);
    assert.equal(stored.channels[0].serviceUrl, fake.serviceUrl);
    assert.equal(stored.channels[0].teamId, 'team-ops');
    const ref = await request({ requestId: 'r-install', identity: 'agent-billing', owner: 'alice' });
    assert.equal(fake.message(ref.activityId)?.channelId, channelId);

    // Removed from another team: this team's channel stays.
    const { membersAdded, ...other } = fake.installActivity(fake.addChannel(), 'team-other');
    assert.ok(membersAdded);
    await fake.deliver(url, { ...other, membersRemoved: [{ id: `28:${APP_ID}` }], channelData: { ...(other.channelData as object), team: { id: 'team-other' }, eventType: 'teamMemberRemoved' } });
    assert.equal((JSON.parse(readFileSync(join(dir, 'teams-refs.json'), 'utf8')) as { channels: unknown[] }).channels.length, 1);
  });

  test('removing the bot from the team forgets its channel', async () => {
    const teamChannel = fake.addChannel();
    await fake.deliver(url, fake.installActivity(teamChannel, 'team-gone'));
    const count = (): number => (JSON.parse(readFileSync(join(dir, 'teams-refs.json'), 'utf8')) as { channels: unknown[] }).channels.length;
    assert.equal(count(), 2);
    const { membersAdded, ...rest } = fake.installActivity(teamChannel, 'team-gone');
    assert.ok(membersAdded);
    const res = await fake.deliver(url, { ...rest, membersRemoved: [{ id: `28:${APP_ID}` }], channelData: { ...(rest.channelData as object), eventType: 'teamMemberRemoved' } });
    assert.equal(res.status, 200);
    assert.equal(count(), 1);
  });

  test('approve: the clicker is mapped by email, decide gets the identity, the invoke answers with the decided card and everyone sees it updated', async () => {
    const ref = await request({ requestId: 'r-approve', identity: 'agent-billing', owner: 'alice' });
    const { status, answer } = await click(ref, carol, 'approve', { requestId: 'r-approve' });
    assert.equal(status, 200);
    assert.equal(answer.statusCode, 200);
    assert.equal(answer.type, 'application/vnd.microsoft.card.adaptive');
    assert.equal(answer.value.version, '1.5');
    assert.match(cardText(answer.value), /Approved\*\* by carol on \{\{DATE\(/);
    assert.match(cardText(answer.value), /You approved this request: the operation runs now/);
    assert.equal(answer.value.actions, undefined, 'no buttons once decided');

    const d = approvals.attempts.at(-1)!;
    assert.equal(d.proof?.channelUser, carol.aadObjectId);
    assert.deepEqual(withoutProof(d), { requestId: 'r-approve', approver: 'carol', approverGroups: ['dba', 'sre'], decision: 'approve', via: `teams:${carol.aadObjectId}` });
    // TeamsInfo.getMember went to the Bot Connector, with the bot's token.
    const member = fake.calls.find((c) => c.method === 'GET' && c.path.endsWith(`/members/${encodeURIComponent(carol.id)}`));
    assert.ok(member, 'members lookup');
    assert.match(member.authorization ?? '', /^Bearer fake-bot-token-/);

    const put = await fake.waitForCall((c) => c.method === 'PUT' && c.activityId === ref.activityId);
    assert.equal(put.status, 200);
    const shared = cardNow(ref);
    assert.match(cardText(shared), /Approved\*\* by carol/);
    assert.doesNotMatch(cardText(shared), /You approved/, 'the clicker-only confirmation is not shown to everyone');
    assert.equal(shared.actions, undefined);
  });

  test('Approve is a confirm step with the grant choice when the rule allows reuse; the choice arrives, signed, in the decision', async () => {
    const ref = await request({ requestId: 'r-grant', identity: 'agent-billing', owner: 'alice', grantTtlMs: 600_000, quorum: 2 });
    const card = cardNow(ref);
    const step = card.actions?.[0] as { type: string; card: { body: Array<Record<string, unknown>>; actions: Array<Record<string, unknown>> } };
    assert.equal(step.type, 'Action.ShowCard');
    const choice = step.card.body.find((b) => b.type === 'Input.ChoiceSet') as { id: string; value: string; choices: Array<{ title: string; value: string }> };
    assert.equal(choice.value, 'once', 'approve-once is the default');
    assert.deepEqual(choice.choices.map((c) => c.value), ['once', '600000']);
    assert.match(choice.choices[1].title, /For 10 minutes: the approval becomes reusable/);

    await click(ref, carol, 'approve', { requestId: 'r-grant', grant: '600000' });
    const d = approvals.attempts.at(-1)!;
    assert.deepEqual(d.grant, { forMs: 600_000 });
    assert.ok(d.proof, 'signed, so the grant cannot be widened on the way');
    await click(ref, erin, 'approve', { requestId: 'r-grant', grant: 'once' });
    assert.equal(approvals.attempts.at(-1)?.grant, undefined);
    // A rule without grantTtl offers no choice.
    const plain = await request({ requestId: 'r-nogrant', identity: 'agent-billing', owner: 'alice' });
    const plainStep = cardNow(plain).actions?.[0] as { card: { body: Array<Record<string, unknown>> } };
    assert.equal(plainStep.card.body.some((b) => b.type === 'Input.ChoiceSet'), false);
    const bad = await click(plain, carol, 'approve', { requestId: 'r-nogrant', grant: 'forever' });
    assert.match(cardText(bad.answer.value), /unknown grant choice/);
  });

  test('reject with a reason: mapped through teams.users, the reason reaches decide and the card', async () => {
    const ref = await request({ requestId: 'r-reject', identity: 'agent-billing', owner: 'alice' });
    const { answer } = await click(ref, bob, 'reject', { requestId: 'r-reject', reason: '  not during the freeze ' });
    assert.match(cardText(answer.value), /Rejected\*\* by bob/);
    assert.match(cardText(answer.value), /Reason: not during the freeze/);
    const d = approvals.attempts.at(-1)!;
    assert.equal(d.approver, 'bob');
    assert.equal(d.decision, 'reject');
    assert.equal(d.reason, 'not during the freeze');
    await fake.waitForCall((c) => c.method === 'PUT' && c.activityId === ref.activityId);
    assert.match(cardText(cardNow(ref)), /Reason: not during the freeze/);
    // bob was mapped by his AAD object id: no member lookup for him.
    assert.equal(fake.calls.filter((c) => c.path.endsWith(`/members/${encodeURIComponent(bob.id)}`)).length, 0);
  });

  test('reject without a reason is sent back to the clicker (and audited as a refused attempt); nothing is decided', async () => {
    const ref = await request({ requestId: 'r-noreason', identity: 'agent-billing', owner: 'alice' });
    const n = approvals.attempts.length;
    const { answer } = await click(ref, carol, 'reject', { requestId: 'r-noreason', reason: '   ' });
    // The attempt reaches the workflow (refused there, and audited); nothing is decided.
    assert.equal(approvals.attempts.length, n + 1);
    assert.equal(approvals.requests.get('r-noreason')?.status, 'pending');
    assert.match(cardText(answer.value), /Say why you reject it/);
    assert.ok(answer.value.actions?.length, 'the buttons stay so the clicker can try again');
  });

  test('self-approval by the agent owner is refused and the card says why; the shared card is untouched', async () => {
    const ref = await request({ requestId: 'r-self', identity: 'agent-billing', owner: 'alice' });
    const puts = fake.callsTo('PUT').length;
    const { answer } = await click(ref, alice, 'approve', { requestId: 'r-self' });
    assert.equal(approvals.attempts.at(-1)?.approver, 'alice');
    assert.match(cardText(answer.value), /Your approval was not accepted: alice owns the requesting agent agent-billing and cannot approve its requests/);
    assert.match(cardText(answer.value), /Waiting for 1 approval/);
    assert.ok(answer.value.actions?.length);
    assert.equal(approvals.requests.get('r-self')?.status, 'pending');
    assert.equal(fake.callsTo('PUT').length, puts);
  });

  test('quorum of two: the first approval keeps the card open (1 of 2), the second approves it', async () => {
    const ref = await request({ requestId: 'r-quorum', identity: 'agent-billing', owner: 'alice', quorum: 2 });
    const first = await click(ref, carol, 'approve', { requestId: 'r-quorum' });
    assert.match(cardText(first.answer.value), /Your approval is recorded \(1 of 2\)/);
    assert.match(cardText(first.answer.value), /Approved so far by carol \(1 of 2\)/);
    assert.ok(first.answer.value.actions?.length);
    const again = await click(ref, carol, 'approve', { requestId: 'r-quorum' });
    assert.match(cardText(again.answer.value), /carol already approved/);
    // Erin is mapped through her user principal name.
    const second = await click(ref, erin, 'approve', { requestId: 'r-quorum' });
    assert.match(cardText(second.answer.value), /Approved\*\* by carol, erin/);
    assert.equal(approvals.requests.get('r-quorum')?.status, 'approved');
  });

  test('an unmapped user, or one outside the approver groups, is refused', async () => {
    const ref = await request({ requestId: 'r-unmapped', identity: 'agent-billing', owner: 'alice' });
    const n = approvals.attempts.length;
    const m = await click(ref, mallory, 'approve', { requestId: 'r-unmapped' });
    // Sent anyway, signed with no approver, so the workflow audits the attempt (and refuses it).
    assert.equal(approvals.attempts.length, n + 1);
    assert.equal(approvals.attempts.at(-1)?.approver, '');
    assert.equal(approvals.attempts.at(-1)?.proof?.channelUser, mallory.aadObjectId);
    assert.ok(cardText(m.answer.value).includes(NOT_MAPPED));
    assert.match(cardText(m.answer.value), /mallory@elsewhere\.example|teams\.users/);
    const d = await click(ref, dave, 'approve', { requestId: 'r-unmapped' });
    assert.match(cardText(d.answer.value), /dave is not in an approver group for this request \(needs one of: dba;/);
  });

  test('when the decision cannot be submitted (Temporal down), the clicker is told nothing was decided', async () => {
    const ref = await request({ requestId: 'r-down', identity: 'agent-billing', owner: 'alice' });
    const puts = fake.callsTo('PUT').length;
    approvals.failWith = new Error('Temporal is unreachable');
    try {
      const { status, answer } = await click(ref, carol, 'approve', { requestId: 'r-down' });
      assert.equal(status, 200);
      assert.match(cardText(answer.value), /Could not record your decision: Temporal is unreachable\. Nothing was decided; try again\./);
      assert.ok(answer.value.actions?.length);
    } finally {
      approvals.failWith = undefined;
    }
    assert.equal(fake.callsTo('PUT').length, puts);
    assert.equal(approvals.requests.get('r-down')?.status, 'pending');
  });

  test('a guest whose home tenant claims an approver\'s email is not mapped by that email', async () => {
    const guest = fake.addUser({ name: 'Carol (guest)', email: 'carol@example.com', userPrincipalName: 'carol_evil.example#EXT#@ops.onmicrosoft.com', userRole: 'guest' });
    const ref = await request({ requestId: 'r-guest', identity: 'agent-billing', owner: 'alice' });
    const n = approvals.attempts.length;
    const { answer } = await click(ref, guest, 'approve', { requestId: 'r-guest' });
    assert.equal(approvals.attempts.length, n + 1);
    assert.equal(approvals.attempts.at(-1)?.approver, '', 'audited as an unmapped attempt, not as carol');
    assert.match(cardText(answer.value), /guest accounts are only accepted through teams\.users/);
  });

  test('a click from another tenant is refused before any lookup', async () => {
    const ref = await request({ requestId: 'r-tenant', identity: 'agent-billing', owner: 'alice' });
    const n = approvals.attempts.length;
    const { answer } = await click(ref, carol, 'approve', { requestId: 'r-tenant' }, { tenantId: '00000000-0000-4000-8000-0000000000ff' });
    assert.equal(approvals.attempts.length, n);
    assert.match(cardText(answer.value), /only accepts decisions from its own organisation/);
  });

  test('the Action.Submit fallback decides the same way and updates the card', async () => {
    const ref = await request({ requestId: 'r-submit', identity: 'agent-billing', owner: 'alice' });
    const res = await fake.deliver(url, fake.submitActivity({ conversationId: ref.conversationId, replyToId: ref.activityId, user: carol, value: { verb: 'reject', requestId: 'r-submit', reason: 'wrong table' } }));
    assert.equal(res.status, 200);
    assert.deepEqual(
      { approver: approvals.attempts.at(-1)?.approver, decision: approvals.attempts.at(-1)?.decision, reason: approvals.attempts.at(-1)?.reason },
      { approver: 'carol', decision: 'reject', reason: 'wrong table' },
    );
    await fake.waitForCall((c) => c.method === 'PUT' && c.activityId === ref.activityId);
    assert.match(cardText(cardNow(ref)), /Rejected\*\* by carol/);
    // A refused Submit is answered in the thread, mentioning the clicker.
    const ref2 = await request({ requestId: 'r-submit2', identity: 'agent-billing', owner: 'alice' });
    await fake.deliver(url, fake.submitActivity({ conversationId: ref2.conversationId, replyToId: ref2.activityId, user: alice, value: { verb: 'approve', requestId: 'r-submit2' } }));
    const note = await fake.waitForCall((c) => c.method === 'POST' && c.conversationId === ref2.conversationId);
    assert.match(String((note.body as { text?: string }).text), /<at>Alice<\/at> Your approval was not accepted: alice owns the requesting agent/);
  });

  describe('incoming activities must carry a valid Bot Framework token', () => {
    async function refusedWith(token: string | null): Promise<void> {
      const requestId = `r-auth-${approvals.requests.size}`;
      const ref = await request({ requestId, identity: 'agent-billing', owner: 'alice' });
      const n = approvals.attempts.length;
      const puts = fake.callsTo('PUT').length;
      const activity = fake.invokeActivity({ conversationId: ref.conversationId, replyToId: ref.activityId, user: carol, verb: 'approve', data: { requestId } });
      const res = await fake.deliver(url, activity, token);
      assert.equal(res.status, 401, res.text);
      assert.equal(approvals.attempts.length, n, 'decide was not called');
      assert.equal(fake.callsTo('PUT').length, puts);
    }

    test('a missing token is refused with 401', async () => {
      await refusedWith(null);
    });

    test('a token signed by another key (same kid) is refused with 401', async () => {
      await refusedWith(await fake.channelToken({ forged: true }));
    });

    test('a token for another bot, an expired token, a foreign issuer or a serviceUrl mismatch are refused with 401', async () => {
      await refusedWith(await fake.channelToken({ audience: 'another-app-id' }));
      await refusedWith(await fake.channelToken({ expiresInSeconds: -3600 }));
      await refusedWith(await fake.channelToken({ issuer: 'https://evil.example.com' }));
      await refusedWith(await fake.channelToken({ serviceUrl: 'https://smba.evil.example.com/' }));
      await refusedWith('not-a-jwt');
    });

    test('a valid token is accepted (the same request that was refused above)', async () => {
      const ref = await request({ requestId: 'r-auth-ok', identity: 'agent-billing', owner: 'alice' });
      const { status, answer } = await click(ref, carol, 'approve', { requestId: 'r-auth-ok' });
      assert.equal(status, 200);
      assert.match(cardText(answer.value), /Approved\*\* by carol/);
    });
  });

  test('without a lookup, a refused clicker still gets a card that says why', async () => {
    const bare = await startTeamsApp({ loaded, decide: approvals.decide, signer });
    try {
      const ref = await request({ requestId: 'r-nolookup', identity: 'agent-billing', owner: 'alice' });
      const activity = fake.invokeActivity({ conversationId: ref.conversationId, replyToId: ref.activityId, user: alice, verb: 'approve', data: { requestId: 'r-nolookup' } });
      const res = await fake.deliver(`http://127.0.0.1:${bare.port}/api/messages`, activity);
      const answer = res.body as InvokeAnswer;
      assert.equal(answer.type, 'application/vnd.microsoft.card.adaptive');
      assert.match(cardText(answer.value), /^Request r-nolookup\nYour approval was not accepted: alice owns the requesting agent agent-billing/);
    } finally {
      await bare.stop();
    }
  });

  test('only POST /api/messages is served, and a body that is not JSON is a 400', async () => {
    assert.equal((await fetch(`http://127.0.0.1:${app.port}/other`, { method: 'POST' })).status, 404);
    assert.equal((await fetch(url)).status, 405);
    assert.equal((await fetch(url, { method: 'POST', body: '{nope', headers: { 'content-type': 'application/json' } })).status, 400);
  });

  test('without an app id the app starts only with insecureSkipAuth, and only on loopback', async () => {
    const cfg = (extra: string): LoadedConfig =>
      parseConfig(`auth: { signingKey: { env: X } }\nteams:\n  appId: ''\n  insecureSkipAuth: true\n  serviceUrl: ${fake.serviceUrl}\n  referenceStore: ${join(dir, 'x.json')}\n${extra}`);
    await assert.rejects(startTeamsApp({ loaded: cfg(`  listen: { host: 0.0.0.0, port: 0 }\n`), decide: approvals.decide, signer }), /loopback only/);
    const local = await startTeamsApp({ loaded: cfg(`  listen: { host: 127.0.0.1, port: 0 }\n`), decide: approvals.decide, signer });
    try {
      const res = await fake.deliver(`http://127.0.0.1:${local.port}/api/messages`, fake.installActivity(channelId), null);
      assert.equal(res.status, 200);
    } finally {
      await local.stop();
    }
  });
});
