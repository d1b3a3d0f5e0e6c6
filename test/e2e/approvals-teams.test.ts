// Issue 6's acceptance list, end to end and with no Azure: real psql -> the Airlock PostgreSQL
// gateway -> a held statement -> a real Temporal dev server -> the approval worker posting to a
// fake Bot Connector (Teams) AND a fake Slack Web API at once -> clicks arriving as signed
// `adaptiveCard/action` invokes on the bot's /api/messages (JWT validated: app id configured) and
// signed Slack block_actions on the Bolt receiver -> the held statement resumes or is rejected on
// the SAME psql connection. Everything is started from one generated airlock.yaml through the
// production entry points (gateway/app.ts startGateway, workflows/service.ts startApprovalService).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TEAMS_MESSAGES_PATH } from '../../bots/teams/teams-app.ts';
import type { ApprovalResult } from '../../workflows/definitions.ts';
import { finished, startApprovalsStack, waitFor, type ApprovalsStack, type LivePsql } from '../support/approvals-stack.ts';
import { FakeBotConnector, cardOf, cardText, type FakeTeamsMessage, type FakeTeamsUser } from '../support/fake-bot-connector.ts';
import { blockActionPayload, postInteraction, type FakeMessage } from '../support/fake-slack.ts';
import { freePort } from '../support/net.ts';

// Generous bounds: a busy 2-core machine, a Temporal dev server and a workflow bundle.
const TEST_TIMEOUT = 240_000;
const APP_ID = '5f0c2a9e-31d4-4a8b-9c61-2b7e0d4f8a13';
const APP_PASSWORD = `teams-secret~${randomBytes(9).toString('base64url')}`;

interface Stack extends ApprovalsStack {
  teams: FakeBotConnector;
  teamsChannelId: string;
  botUrl: string;
}

let s: Stack;
let teams: FakeBotConnector | undefined;
/** Teams users (in the fake's directory) by Airlock identity. */
const tu = {} as Record<'erin' | 'bob' | 'dave' | 'carol', FakeTeamsUser>;

before(
  async () => {
    teams = await FakeBotConnector.start({ appId: APP_ID, appPassword: APP_PASSWORD });
    const teamsChannelId = teams.addChannel();
    // Teams maps by the member's email (TeamsInfo.getMember), carol by the explicit teams.users map.
    tu.erin = teams.addUser({ name: 'Erin', email: 'erin@example.com', userPrincipalName: 'erin@corp.example.com' });
    tu.bob = teams.addUser({ name: 'Bob', email: 'Bob@Example.com', userPrincipalName: 'bob@corp.example.com' });
    tu.dave = teams.addUser({ name: 'Dave', email: 'dave@example.com', userPrincipalName: 'dave@corp.example.com' });
    tu.carol = teams.addUser({ name: 'Carol', userPrincipalName: 'carol@corp.example.com' });
    const teamsPort = await freePort();
    const fake = teams;
    const stack = await startApprovalsStack({
      setup: `CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
        INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 20) g;
        CREATE TABLE t_expiry (id int PRIMARY KEY, v int NOT NULL);
        CREATE TABLE t_quorum (id int PRIMARY KEY, v int NOT NULL);
        INSERT INTO t_expiry VALUES (1, 1); INSERT INTO t_quorum VALUES (1, 1);
        CREATE TABLE t_hc (id int PRIMARY KEY, v int NOT NULL, card text NOT NULL);
        INSERT INTO t_hc SELECT g, g, '4111 1111 1111 1111' FROM generate_series(1, 5) g;`,
      identities: [
        { name: 'erin', groups: ['engineers'], email: 'erin@example.com' },
        { name: 'bob', groups: ['dba'], email: 'bob@example.com' },
        { name: 'dave', groups: ['dba'], email: 'dave@example.com' },
        { name: 'carol', groups: ['dba'] },
      ],
      rules: [
        {
          name: 'review-expiry',
          match: { tables: ['public.t_expiry'], statements: ['UpdateStmt'] },
          action: 'review',
          reason: 'expiry drill',
          review: { approvers: ['dba'], timeout: '8s', escalation: [{ after: '2s', mention: ['dba'] }] },
        },
        {
          name: 'review-quorum',
          match: { tables: ['public.t_quorum'], statements: ['UpdateStmt'] },
          action: 'review',
          reason: 'four eyes',
          review: { approvers: ['dba'], quorum: 2, timeout: '3m' },
        },
        {
          name: 'review-hc',
          match: { tables: ['public.t_hc'], statements: ['UpdateStmt'] },
          action: 'review',
          reason: 'shown with its real effect',
          review: { approvers: ['dba'], timeout: '3m', preview: 'hold-commit' },
        },
        {
          name: 'review-writes',
          match: { tables: ['public.accounts'], statements: ['UpdateStmt', 'DeleteStmt', 'InsertStmt'] },
          action: 'review',
          reason: 'writes to accounts need a DBA',
          review: { approvers: ['dba'], timeout: '3m' },
        },
      ],
      extendConfig: (dir) => {
        writeFileSync(join(dir, 'teams-app.password'), APP_PASSWORD);
        return {
          teams: {
            appId: APP_ID,
            appPassword: { file: 'teams-app.password' },
            tenantId: fake.tenantId,
            serviceUrl: fake.serviceUrl,
            channelId: teamsChannelId,
            referenceStore: 'teams-refs.json',
            listen: { host: '127.0.0.1', port: teamsPort },
            users: { [tu.carol.aadObjectId]: 'carol' },
            botFramework: fake.endpoints,
          },
        };
      },
    });
    // Slack maps by the email on the Slack profile (users.info).
    stack.slack.addUser('UBOB0001', { name: 'bob', email: 'bob@example.com' });
    stack.slack.addUser('UDAVE001', { name: 'dave', email: 'dave@example.com' });
    s = Object.assign(stack, { teams, teamsChannelId, botUrl: `http://127.0.0.1:${teamsPort}${TEAMS_MESSAGES_PATH}` });
  },
  { timeout: 300_000 },
);

after(async () => {
  await s?.close();
  await teams?.stop();
});

// ---------------------------------------------------------------------------------------------

function psql(identity: string, sql: string): Promise<LivePsql> {
  return s.psql(identity, sql);
}

type Card = ReturnType<typeof cardOf>;

/** The request's field from the card's FactSet. */
/** The verbs a card's buttons submit: Approve's is inside its confirm step. */
function decisionVerbs(card: Card): unknown[] {
  return (card.actions ?? []).flatMap((a) => (a.type === 'Action.ShowCard' ? ((a.card as { actions?: Array<{ verb?: unknown }> }).actions ?? []).map((x) => x.verb) : [a.verb]));
}

function fact(card: Card, title: string): string {
  const fs = card.body.find((b) => b.type === 'FactSet') as { facts: Array<{ title: string; value: string }> } | undefined;
  return fs?.facts.find((f) => f.title === title)?.value ?? '';
}

function statusLine(card: Card): string {
  return String(card.body.find((b) => b.id === 'status')?.text ?? '');
}

function noticeLine(card: Card): string {
  return String(card.body.find((b) => b.id === 'notice')?.text ?? '');
}

/** The card as everyone in the channel sees it now. */
function channelCard(msg: FakeTeamsMessage): Card {
  return cardOf(s.teams.message(msg.id)?.activity);
}

/** The Adaptive Card thread root (in the configured channel) whose statement contains `fragment`. */
function teamsRequest(fragment: string): FakeTeamsMessage | undefined {
  return s.teams.messages.find((m) => m.id === m.threadId && m.channelId === s.teamsChannelId && JSON.stringify(m.activity).includes(fragment));
}

function slackRequest(requestId: string): FakeMessage | undefined {
  return s.slack.messagesIn(s.channelId).find((m) => !m.thread_ts && JSON.stringify(m.blocks).includes(requestId));
}

function slackStatus(m: FakeMessage): string {
  const b = m.blocks.find((x) => x.block_id === 'airlock_status') as { text?: { text?: string } } | undefined;
  return b?.text?.text ?? '';
}

function slackHasButtons(m: FakeMessage): boolean {
  return m.blocks.some((b) => b.type === 'actions');
}

/** A held psql: started, told about the request, and the card visible in Teams. */
async function hold(identity: string, sql: string, fragment: string): Promise<{ p: LivePsql; card: FakeTeamsMessage; requestId: string }> {
  const p = await psql(identity, sql);
  const card = await waitFor(() => teamsRequest(fragment), `the card for "${fragment}" in Teams`);
  const requestId = fact(cardOf(card.activity), 'Request');
  assert.match(requestId, /^airlock-[0-9a-f]{16}$/, 'the card names its request id');
  await waitFor(() => p.stderr.match(/approval required: request \S+ (posted to|re-attached in)/) || p.exitCode !== undefined, 'the NOTICE on the held connection');
  assert.equal(p.exitCode, undefined, `psql must still be held; stderr: ${p.stderr}`);
  assert.match(p.stderr, new RegExp(`NOTICE: .*approval required: request ${requestId} posted to Slack #db-approvals and Microsoft Teams ${s.teamsChannelId.replace(/[.]/g, '\\.')}`));
  return { p, card, requestId };
}

interface InvokeAnswer {
  status: number;
  card: Card;
  text: string;
}

/** A click on the card's Action.Execute button, as Teams POSTs it to the bot (signed unless `token` says otherwise). */
async function click(user: FakeTeamsUser, msg: FakeTeamsMessage, verb: 'approve' | 'reject', data: Record<string, unknown>, token?: string | null): Promise<{ status: number; body: unknown; text: string }> {
  const activity = s.teams.invokeActivity({ conversationId: `${msg.channelId};messageid=${msg.id}`, replyToId: msg.id, user, verb, data });
  return s.teams.deliver(s.botUrl, activity, token);
}

async function invoke(user: FakeTeamsUser, msg: FakeTeamsMessage, verb: 'approve' | 'reject', data: Record<string, unknown>): Promise<InvokeAnswer> {
  const r = await click(user, msg, verb, data);
  assert.equal(r.status, 200, r.text);
  const body = r.body as { statusCode: number; type: string; value: Card };
  assert.equal(body.statusCode, 200, r.text);
  assert.equal(body.type, 'application/vnd.microsoft.card.adaptive');
  return { status: r.status, card: body.value, text: r.text };
}

async function workflowStatus(requestId: string): Promise<string> {
  return (await s.temporal.client.workflow.getHandle(requestId).describe()).status.name;
}

async function balance(id: number): Promise<number> {
  return (await s.pg.query(`SELECT balance FROM accounts WHERE id = ${id}`)).rows[0].balance as number;
}

/** PUTs of the card made by the bot itself while answering a click (botbuilder's updateActivity carries the conversation reference). */
function botCardRewrites(cardId: string): Array<Record<string, unknown>> {
  return s.teams
    .callsTo('PUT')
    .filter((c) => c.activityId === cardId && c.status === 200 && typeof (c.body as { conversation?: unknown }).conversation === 'object')
    .map((c) => c.body as Record<string, unknown>);
}

// ---------------------------------------------------------------------------------------------

test('a held statement is posted as an Adaptive Card 1.5 in the Teams channel (who, where, what, why, deadline; Approve/Reject as Action.Execute, a reason input) and as a Block Kit message in Slack', { timeout: TEST_TIMEOUT }, async () => {
  const started = Date.now();
  const { p, card: msg, requestId } = await hold('erin', `UPDATE accounts SET balance = balance + 1 WHERE id = 1;\n`, 'balance + 1 WHERE id = 1');
  assert.equal(msg.channelId, s.teamsChannelId, 'posted in the configured team channel');
  const post = s.teams.calls.find((c) => c.method === 'POST' && c.path === '/v3/conversations' && c.status === 201 && JSON.stringify(c.body).includes(requestId));
  assert.ok(post, 'a proactive new conversation (thread) in the channel');
  assert.match(post.authorization ?? '', /^Bearer fake-bot-token-/, 'the bot called the Bot Connector with its own token');
  assert.ok(s.teams.tokenRequests.some((t) => t.ok && t.clientId === APP_ID && t.method === 'secret'), 'token from the app password');

  const card = cardOf(msg.activity);
  assert.equal(card.type, 'AdaptiveCard');
  assert.equal(card.version, '1.5');
  const text = cardText(card);
  assert.match(text, /Approval required: postgres on app/);
  assert.equal(fact(card, 'Who'), 'erin');
  assert.equal(fact(card, 'Where'), 'app (postgres)');
  assert.equal(fact(card, 'Why'), 'rule review-writes: writes to accounts need a DBA');
  assert.match(fact(card, 'Approvers'), /^1 from dba$/);
  const code = card.body.find((b) => b.type === 'CodeBlock');
  assert.equal(code?.codeSnippet, 'UPDATE accounts SET balance = balance + 1 WHERE id = 1;', 'what: the statement, as a code block');
  assert.equal(code?.language, 'SQL');
  const deadline = /\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC\)/.exec(fact(card, 'Deadline'))?.[1];
  assert.ok(deadline, `the deadline in UTC: ${fact(card, 'Deadline')}`);
  const deadlineMs = Date.parse(`${deadline.replace(' ', 'T')}Z`);
  assert.ok(deadlineMs > started + 2 * 60_000 && deadlineMs < Date.now() + 3 * 60_000 + 1000, 'deadline = request time + the rule timeout (3m)');
  assert.match(statusLine(card), /Waiting for 1 approval/);

  const actions = card.actions ?? [];
  // Approve is a confirm step (ShowCard) whose Confirm button is the Action.Execute; Reject submits directly.
  assert.deepEqual(actions.map((a) => [a.type, a.title]), [['Action.ShowCard', 'Approve…'], ['Action.Execute', 'Reject']]);
  const confirmStep = actions[0].card as { body: Array<Record<string, unknown>>; actions: Array<Record<string, unknown>> };
  assert.deepEqual(confirmStep.actions.map((a) => [a.type, a.verb, (a.data as { requestId?: string }).requestId, a.title]), [['Action.Execute', 'approve', requestId, 'Confirm approval']]);
  assert.match(String(confirmStep.body[0].text), /this exact operation runs on app as/);
  assert.deepEqual([actions[1].verb, (actions[1].data as { requestId?: string }).requestId], ['reject', requestId]);
  assert.equal(actions[1].associatedInputs, 'auto', 'Reject sends the reason input');
  for (const a of [confirmStep.actions[0], actions[1]]) assert.equal((a.fallback as { type?: string }).type, 'Action.Submit', 'a fallback for clients without Universal Actions');
  const reason = card.body.find((b) => b.type === 'Input.Text');
  assert.equal(reason?.id, 'reason');
  assert.match(String(reason?.label), /Reason/);

  // The same request, in the same moment, in Slack.
  const slackMsg = await waitFor(() => slackRequest(requestId), 'the same request in Slack');
  assert.ok(slackHasButtons(slackMsg), 'Slack shows Approve/Reject buttons');
  assert.match(JSON.stringify(slackMsg.blocks), /balance \+ 1 WHERE id = 1/);
  assert.equal(s.teams.messages.filter((m) => m.id === m.threadId && JSON.stringify(m.activity).includes(requestId)).length, 1, 'posted once to Teams');

  // Leave nothing running: the client goes away, the request ends cancelled on both chats.
  p.kill('SIGKILL');
  await finished(p, 'killed psql');
  await waitFor(() => /\*\*Cancelled\*\*/.test(statusLine(channelCard(msg))) && !channelCard(msg).actions, 'the card shows the cancellation');
  await waitFor(() => !slackHasButtons(slackRequest(requestId)!), 'the Slack message shows the cancellation');
  assert.equal(await balance(1), 100);
});

test('Approve in Teams (a signed adaptiveCard/action invoke) runs the held statement; the clicker gets the updated card, other viewers see it rewritten, and the outcome follows in the thread', { timeout: TEST_TIMEOUT }, async () => {
  const { p, card: msg, requestId } = await hold(
    'erin',
    `UPDATE accounts SET balance = balance + 2 WHERE id = 2;
SELECT 'after:' || balance FROM accounts WHERE id = 2;
`,
    'balance + 2 WHERE id = 2',
  );
  assert.doesNotMatch(p.stdout, /UPDATE/, 'nothing ran before the approval');
  const beforeClick = Date.now();
  const answer = await invoke(tu.bob, msg, 'approve', { requestId });
  const afterClick = Date.now();

  // The invoke answer is the card the clicker sees now.
  assert.equal(answer.card.version, '1.5');
  assert.match(statusLine(answer.card), /^\*\*Approved\*\* by bob on /, 'decided by whom (bob, mapped by the email on his Teams profile)');
  const when = /\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC\)/.exec(statusLine(answer.card))?.[1];
  assert.ok(when, `decided when: ${statusLine(answer.card)}`);
  const whenMs = Date.parse(`${when.replace(' ', 'T')}Z`);
  assert.ok(whenMs >= beforeClick - 1000 && whenMs <= afterClick + 1000, 'the decision time is the click');
  assert.match(noticeLine(answer.card), /You approved this request/);
  assert.equal(answer.card.actions, undefined, 'no buttons once decided');
  assert.ok(!answer.card.body.some((b) => b.type === 'Input.Text'));
  assert.ok(s.teams.calls.some((c) => c.method === 'GET' && c.path.includes('/members/') && c.activityId === tu.bob.id), 'the clicker was looked up (TeamsInfo.getMember)');

  // Everyone else's copy: the bot rewrote the card (updateActivity = PUT) with the decision.
  const rewrite = await waitFor(() => botCardRewrites(msg.id)[0], 'the bot\'s updateActivity of the card');
  assert.match(statusLine(cardOf(rewrite)), /\*\*Approved\*\* by bob/);
  assert.equal(cardOf(rewrite).actions, undefined);

  const r = await finished(p, 'approved update');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^UPDATE 1\n(.*\n)*after:102$/m, 'the UPDATE result, then the next statement of the same script');
  assert.equal(await balance(2), 102);

  await waitFor(() => /\*\*Approved\*\* by bob/.test(statusLine(channelCard(msg))) && !channelCard(msg).actions, 'the channel card shows the approval');
  const reply = await waitFor(() => s.teams.thread(msg.id).find((m) => m.id !== msg.id && /completed \(UPDATE 1\)/.test(String(m.activity.text ?? ''))), 'the outcome as a reply in the thread');
  assert.match(String(reply.activity.text), /\d+ ms/);
  assert.equal(reply.channelId, s.teamsChannelId);
  const result = (await s.temporal.client.workflow.getHandle(requestId).result()) as ApprovalResult;
  assert.equal(result.outcome, 'approved');
  assert.deepEqual(result.approvers, ['bob']);
  assert.ok(s.store.listAudit(requestId).some((e) => e.kind === 'approval.decision' || e.kind === 'approval.outcome'), 'audited');
});

test('Reject with a reason in Teams: psql gets AL001 naming the rejecter and the reason; the session stays usable', { timeout: TEST_TIMEOUT }, async () => {
  const { p, card: msg, requestId } = await hold(
    'erin',
    `\\set VERBOSITY verbose
UPDATE accounts SET balance = balance + 3 WHERE id = 3;
SELECT 'still-usable:' || balance FROM accounts WHERE id = 3;
`,
    'balance + 3 WHERE id = 3',
  );
  // Reject without a reason: refused on the card, nothing decided.
  const empty = await invoke(tu.dave, msg, 'reject', { requestId, reason: '   ' });
  assert.match(noticeLine(empty.card), /Say why you reject it/);
  assert.equal(await workflowStatus(requestId), 'RUNNING');
  assert.equal(p.exitCode, undefined);

  const answer = await invoke(tu.dave, msg, 'reject', { requestId, reason: 'no writes during the audit freeze' });
  assert.match(statusLine(answer.card), /^\*\*Rejected\*\* by dave on .*\n\nReason: no writes during the audit freeze$/s);
  assert.match(noticeLine(answer.card), /You rejected this request/);

  const r = await finished(p, 'rejected update');
  assert.match(r.stderr, /ERROR: {2}AL001: Airlock: approval rejected by dave: no writes during the audit freeze/);
  assert.match(r.stdout, /^still-usable:100$/m);
  assert.equal(await balance(3), 100);
  const result = (await s.temporal.client.workflow.getHandle(requestId).result()) as ApprovalResult;
  assert.equal(result.outcome, 'rejected');
  assert.equal(result.rejectedBy, 'dave');
  await waitFor(() => /\*\*Rejected\*\* by dave/.test(statusLine(channelCard(msg))) && statusLine(channelCard(msg)).includes('audit freeze') && !channelCard(msg).actions, 'the channel card shows the rejection and its reason');
  await waitFor(() => /Rejected/.test(slackStatus(slackRequest(requestId)!)) && !slackHasButtons(slackRequest(requestId)!), 'Slack shows it too');
});

test('nobody answers: the escalation @mentions the approver group in the Teams thread, then the card shows the expiry and psql gets the rejection', { timeout: TEST_TIMEOUT }, async () => {
  const { p, card: msg, requestId } = await hold(
    'erin',
    `\\set VERBOSITY verbose
UPDATE t_expiry SET v = v + 1 WHERE id = 1;
SELECT 'after-expiry';
`,
    'UPDATE t_expiry SET v = v + 1',
  );
  const escalation = await waitFor(
    () => s.teams.thread(msg.id).find((m) => m.id !== msg.id && String(m.activity.text ?? '').includes('🚨')),
    'the escalation in the request thread',
  );
  const text = String(escalation.activity.text);
  assert.match(text, /@dba \(<at>carol<\/at>\)/, 'the group, with its members mapped in teams.users @mentioned');
  assert.ok(text.includes(requestId));
  assert.match(text, /erin on app, rule review-expiry/);
  const entities = escalation.activity.entities as Array<{ type: string; text: string; mentioned: { id: string; name: string } }>;
  assert.deepEqual(entities.map((e) => [e.type, e.text, e.mentioned.id]), [['mention', '<at>carol</at>', tu.carol.aadObjectId]]);
  assert.equal(escalation.channelId, s.teamsChannelId);

  const r = await finished(p, 'expiring update');
  assert.match(r.stderr, new RegExp(`ERROR: {2}AL002: Airlock: approval request ${requestId} expired: no decision within 8s, after escalation`));
  assert.match(r.stdout, /^after-expiry$/m);
  assert.equal((await s.pg.query('SELECT v FROM t_expiry WHERE id = 1')).rows[0].v, 1);
  await waitFor(() => /\*\*Expired\*\*.*\(after escalation\)/.test(statusLine(channelCard(msg))) && !channelCard(msg).actions, 'the card shows the expiry after escalation, without buttons');

  // A click on the stale card decides nothing and says why.
  const late = await invoke(tu.bob, msg, 'approve', { requestId });
  assert.match(noticeLine(late.card), /no longer pending \(expired\)/);
});

test('self-approval in Teams is refused: the clicker\'s card says why, the request stays pending until a valid approver decides', { timeout: TEST_TIMEOUT }, async () => {
  const { p, card: msg, requestId } = await hold(
    'erin',
    `UPDATE accounts SET balance = balance + 5 WHERE id = 5;
SELECT 'after:' || balance FROM accounts WHERE id = 5;
`,
    'balance + 5 WHERE id = 5',
  );
  const putsBefore = s.teams.callsTo('PUT').filter((c) => c.activityId === msg.id).length;
  const answer = await invoke(tu.erin, msg, 'approve', { requestId });
  assert.match(noticeLine(answer.card), /Your approval was not accepted: erin requested this operation and cannot approve it \(no self-approval\)/);
  assert.match(statusLine(answer.card), /Waiting for 1 approval/, 'the card shows the request still pending');
  assert.deepEqual(
    decisionVerbs(answer.card),
    ['approve', 'reject'],
    'buttons stay',
  );

  assert.equal(await workflowStatus(requestId), 'RUNNING');
  assert.equal(p.exitCode, undefined, 'still held');
  assert.equal(await balance(5), 100);
  assert.equal(s.teams.callsTo('PUT').filter((c) => c.activityId === msg.id).length, putsBefore, 'the channel card was not touched');
  assert.match(statusLine(channelCard(msg)), /Waiting for 1 approval/);
  assert.ok(
    s.store.listAudit(requestId).some((e) => e.kind === 'approval.decision-refused' && e.actor === 'erin'),
    'the refused attempt is audited',
  );

  await invoke(tu.carol, msg, 'approve', { requestId }); // carol: mapped through teams.users
  const r = await finished(p, 'approved after the refusal');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^after:105$/m);
});

test('quorum of two across Slack and Teams on the same request: bob approves in Slack, dave in Teams; released only after the second, both messages updated', { timeout: TEST_TIMEOUT }, async () => {
  const { p, card: msg, requestId } = await hold(
    'erin',
    `UPDATE t_quorum SET v = v + 1 WHERE id = 1;
SELECT 'quorum-after:' || v FROM t_quorum WHERE id = 1;
`,
    'UPDATE t_quorum SET v = v + 1',
  );
  const slackMsg = await waitFor(() => slackRequest(requestId), 'the request in Slack');
  const { payload } = blockActionPayload({ userId: 'UBOB0001', channelId: slackMsg.channel, messageTs: slackMsg.ts, actionId: 'airlock_approve', value: requestId });
  const clicked = await postInteraction(s.slackEventsUrl, s.signingSecret, payload);
  assert.equal(clicked.status, 200, clicked.body);

  // One of two: both chats show it, the statement stays held.
  await waitFor(() => /Approved so far by bob \(1 of 2\)/.test(statusLine(channelCard(msg))), 'the Teams card shows 1 of 2');
  await waitFor(() => /bob.*\(1 of 2\)/.test(slackStatus(slackRequest(requestId)!)), 'the Slack message shows 1 of 2');
  assert.deepEqual(decisionVerbs(channelCard(msg)), ['approve', 'reject'], 'buttons stay for the next approver');
  assert.equal(p.exitCode, undefined, 'still held after one approval');
  assert.equal(await workflowStatus(requestId), 'RUNNING');

  // bob cannot count twice by clicking in the other chat.
  const twice = await invoke(tu.bob, msg, 'approve', { requestId });
  assert.match(noticeLine(twice.card), /bob already approved; quorum needs 2 distinct approvers/);
  assert.equal(p.exitCode, undefined);

  const answer = await invoke(tu.dave, msg, 'approve', { requestId });
  assert.match(statusLine(answer.card), /^\*\*Approved\*\* by bob, dave on /);
  assert.match(noticeLine(answer.card), /You approved this request/);
  const r = await finished(p, 'quorum update');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^UPDATE 1$/m);
  assert.match(r.stdout, /^quorum-after:2$/m);
  const result = (await s.temporal.client.workflow.getHandle(requestId).result()) as ApprovalResult;
  assert.equal(result.outcome, 'approved');
  assert.deepEqual(result.approvers, ['bob', 'dave']);
  assert.deepEqual(result.refs.map((x) => x.kind).sort(), ['slack', 'teams']);

  await waitFor(() => /\*\*Approved\*\* by bob, dave/.test(statusLine(channelCard(msg))) && !channelCard(msg).actions, 'the Teams card names both approvers');
  await waitFor(() => {
    const m = slackRequest(requestId)!;
    return !slackHasButtons(m) && /Approved\* by `bob`, `dave`/.test(slackStatus(m));
  }, 'the Slack message names both approvers');
});

test('invokes with a forged token or no token are refused with 401 (an app id is configured) and decide nothing', { timeout: TEST_TIMEOUT }, async () => {
  const { p, card: msg, requestId } = await hold(
    'erin',
    `UPDATE accounts SET balance = balance + 7 WHERE id = 7;
SELECT 'after:' || balance FROM accounts WHERE id = 7;
`,
    'balance + 7 WHERE id = 7',
  );
  const membersBefore = s.teams.callsTo('GET').length;
  const attempts: Array<[string, string | null]> = [
    ['forged (signed by a key the channel does not publish)', await s.teams.channelToken({ forged: true })],
    ['missing', null],
    ['for another bot (wrong audience)', await s.teams.channelToken({ audience: 'another-app-id' })],
    ['expired', await s.teams.channelToken({ expiresInSeconds: -3600 })],
  ];
  for (const [what, token] of attempts) {
    const r = await click(tu.bob, msg, 'approve', { requestId }, token);
    assert.equal(r.status, 401, `${what}: ${r.status} ${r.text}`);
    assert.doesNotMatch(r.text, /AdaptiveCard|Approved/, `${what}: no card in the answer`);
  }
  assert.equal(s.teams.callsTo('GET').length, membersBefore, 'no handler ran (no member lookup)');
  assert.equal(await workflowStatus(requestId), 'RUNNING');
  assert.ok(!s.store.listAudit(requestId).some((e) => e.kind.startsWith('approval.decision')), 'no decision attempt reached the workflow');
  assert.equal(p.exitCode, undefined, 'still held');
  assert.equal(await balance(7), 100);
  assert.deepEqual(decisionVerbs(channelCard(msg)), ['approve', 'reject']);

  // The same click, properly signed, is accepted.
  await invoke(tu.bob, msg, 'approve', { requestId });
  const r = await finished(p, 'approved after forged clicks');
  assert.match(r.stdout, /^after:107$/m);
});

test('at session end the session log reaches the Teams thread as an inline transcript (Teams bots cannot upload files to channels)', { timeout: TEST_TIMEOUT }, async () => {
  const { p, card: msg, requestId } = await hold(
    'erin',
    `SELECT 'before:' || balance FROM accounts WHERE id = 8;
UPDATE accounts SET balance = balance + 8 WHERE id = 8;
SELECT 'after:' || balance FROM accounts WHERE id = 8;
`,
    'balance + 8 WHERE id = 8',
  );
  await invoke(tu.dave, msg, 'approve', { requestId });
  const r = await finished(p, 'approved session');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^after:108$/m);

  const log = await waitFor(() => s.teams.thread(msg.id).find((m) => String(m.activity.text ?? '').includes('Session log')), 'the session log in the Teams thread');
  const text = String(log.activity.text);
  assert.equal(log.activity.textFormat, 'xml');
  assert.equal(log.activity.attachments, undefined, 'inline, not a file');
  assert.match(text, /<b>Session log<\/b> airlock-session-.+\.log \(\d+ lines, \d+ bytes\)/);
  const sessionId = /airlock-session-(.+?)\.log/.exec(text)?.[1];
  assert.ok(sessionId);
  assert.ok(text.includes(`<code>airlock sessions show ${sessionId}</code>`), 'points at the full session');
  const pre = /<pre>([\s\S]*)<\/pre>/.exec(text)?.[1] ?? '';
  assert.match(pre, /SELECT 'before:' \|\| balance FROM accounts WHERE id = 8/);
  assert.match(pre, /UPDATE accounts SET balance = balance \+ 8 WHERE id = 8/);
  assert.match(pre, /SELECT 'after:' \|\| balance FROM accounts WHERE id = 8/);
  assert.match(pre, new RegExp(requestId), 'the approval trail is in the transcript');
  assert.match(pre, /dave/);
  // Slack, on the same request, got the log as a file in its thread.
  const slackMsg = slackRequest(requestId)!;
  await waitFor(() => [...s.slack.files.values()].find((f) => f.completed && f.thread_ts === slackMsg.ts), 'the session log uploaded into the Slack thread');
});

test('a parameterized UPDATE held with hold-commit: the card shows the exact effect (masked sample) and the reason from application_name; Approve commits it, and the audit keeps the context', { timeout: TEST_TIMEOUT }, async () => {
  // node-postgres (extended protocol) with the reason in application_name, as an agent framework would set it.
  const ci = Object.fromEntries((await s.conninfo('erin')).split(' ').map((kv) => kv.split('=') as [string, string]));
  const c = new pg.Client({ host: ci.host, port: Number(ci.port), database: ci.dbname, user: ci.user, password: ci.password, application_name: 'airlock: reason="fix INC-9" ticket=INC-9' });
  await c.connect();
  try {
    const running = c.query('UPDATE t_hc SET v = v + $1 WHERE id <= $2', [100, 2]);
    const msg = await waitFor(() => teamsRequest('UPDATE t_hc SET v = v + $1'), 'the hold-commit card in Teams');
    const card = cardOf(msg.activity);
    const requestId = fact(card, 'Request');
    const text = cardText(card);
    assert.match(text, /ran in a transaction Airlock holds open: UPDATE 2/, text);
    assert.match(text, /101/, 'the sample shows the rows as written');
    assert.ok(!text.includes('4111 1111 1111 1111'), 'the card number is masked in the sample');
    assert.match(text, /agent's reason: "fix INC-9" \(application_name\)/, text);
    assert.deepEqual((await s.pg.query('SELECT v FROM t_hc WHERE id <= 2 ORDER BY id')).rows, [{ v: 1 }, { v: 2 }], 'not committed before approval');
    await invoke(tu.bob, msg, 'approve', { requestId });
    const r = await running;
    assert.equal(r.rowCount, 2);
    assert.deepEqual((await s.pg.query('SELECT v FROM t_hc WHERE id <= 2 ORDER BY id')).rows, [{ v: 101 }, { v: 102 }]);
    const ctx = await waitFor(() => s.store.listAudit(requestId).find((e) => e.kind === 'approval.context'), 'the approval context in the audit');
    assert.equal((ctx.detail.context as { reason?: string }).reason, 'fix INC-9');
    assert.equal((ctx.detail.preview as { kind?: string }).kind, 'hold-commit');
  } finally {
    await c.end();
  }
});
