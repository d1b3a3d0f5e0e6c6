// Issue 3's acceptance list, end to end: real psql -> the Airlock PostgreSQL gateway -> a held
// statement -> a real Temporal dev server -> the approval worker posting to a fake Slack Web API
// -> signed Slack clicks on the Bolt receiver -> the held statement resumes or is rejected on the
// SAME psql connection. Everything is started from one generated airlock.yaml through the
// production entry points (gateway/app.ts startGateway, workflows/service.ts startApprovalService).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { RunningGateway } from '../../gateway/app.ts';
import { decideUpdate, type ApprovalResult } from '../../workflows/definitions.ts';
import { blockActionPayload, postInteraction, postSlashCommand, viewSubmissionPayload, type FakeMessage, type SignOptions } from '../support/fake-slack.ts';
import { freePort } from '../support/net.ts';
import { finished, startApprovalsStack, waitFor, type ApprovalsStack, type LivePsql } from '../support/approvals-stack.ts';

let stack: ApprovalsStack;

// Generous bounds: a busy 2-core machine, a Temporal dev server and a workflow bundle.
const TEST_TIMEOUT = 240_000;

before(
  async () => {
    stack = await startApprovalsStack({
      setup: `CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
              INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 20) g;
              CREATE TABLE t_expiry (id int PRIMARY KEY, v int NOT NULL);
              CREATE TABLE t_quorum (id int PRIMARY KEY, v int NOT NULL);
              CREATE TABLE t_outage (id int PRIMARY KEY, v int NOT NULL);
              INSERT INTO t_expiry VALUES (1, 1); INSERT INTO t_quorum VALUES (1, 1); INSERT INTO t_outage VALUES (1, 1);
              CREATE TABLE t_preview (id int PRIMARY KEY, v int NOT NULL);
              INSERT INTO t_preview SELECT g, g FROM generate_series(1, 5) g;`,
      identities: [
        { name: 'erin', groups: ['engineers'] },
        { name: 'bob', groups: ['dba'] },
        { name: 'dave', groups: ['dba'], email: 'Dave@Example.com' },
        { name: 'carol', groups: ['dba'] },
        { name: 'agent-1', groups: ['agents'], owner: 'carol' },
      ],
      // bob, carol and the agent by the explicit map; dave by the email on his Slack profile.
      slackUsers: { UBOB0001: 'bob', UCAROL01: 'carol', UAGENT01: 'agent-1' },
      rules: [
        {
          name: 'review-expiry',
          match: { tables: ['public.t_expiry'], statements: ['UpdateStmt'] },
          action: 'review',
          reason: 'expiry drill',
          review: { approvers: ['dba'], timeout: '8s', escalation: [{ after: '2s', mention: ['S0ONCALL1', '@db-oncall'] }] },
        },
        {
          name: 'review-quorum',
          match: { tables: ['public.t_quorum'], statements: ['UpdateStmt'] },
          action: 'review',
          reason: 'four eyes',
          review: { approvers: ['dba'], quorum: 2, timeout: '2m' },
        },
        {
          name: 'review-outage',
          match: { tables: ['public.t_outage'], statements: ['UpdateStmt'] },
          action: 'review',
          reason: 'outage drill',
          review: { approvers: ['dba'], timeout: '6s' },
        },
        {
          name: 'review-preview',
          match: { tables: ['public.t_preview'], statements: ['UpdateStmt'] },
          action: 'review',
          reason: 'preview drill',
          review: { approvers: ['dba'], timeout: '2m', preview: 'dry-run' },
        },
        {
          name: 'review-writes',
          match: { tables: ['public.accounts'], statements: ['UpdateStmt', 'DeleteStmt', 'InsertStmt'] },
          action: 'review',
          reason: 'writes to accounts need a DBA',
          review: { approvers: ['dba'], timeout: '2m', grantTtl: '10m' },
        },
      ],
    });
    stack.slack.addUser('UBOB0001', { name: 'bob' });
    stack.slack.addUser('UDAVE001', { name: 'dave', email: 'dave@example.com' });
    stack.slack.addUser('UCAROL01', { name: 'carol' });
    stack.slack.addUser('UAGENT01', { name: 'agent-1' });
  },
  { timeout: 300_000 },
);

after(async () => {
  await stack?.close();
});

// ---------------------------------------------------------------------------------------------


/** The top-level approval request message whose statement contains `fragment`. */
function requestMessage(fragment: string): FakeMessage | undefined {
  return stack.slack.messagesIn(stack.channelId).find((m) => !m.thread_ts && JSON.stringify(m.blocks).includes(fragment));
}

function requestIdOf(m: FakeMessage): string {
  const id = /airlock-[0-9a-f]{16}/.exec(JSON.stringify(m.blocks))?.[0];
  assert.ok(id, 'the request message names its request id');
  return id;
}

function hasButtons(m: FakeMessage): boolean {
  return m.blocks.some((b) => b.type === 'actions');
}

function statusOf(m: FakeMessage): string {
  const b = m.blocks.find((x) => x.block_id === 'airlock_status') as { text?: { text?: string } } | undefined;
  return b?.text?.text ?? '';
}

/** A held psql: started, the client told about the request, and the request visible in Slack. */
async function holdVia(identity: string, sql: string, fragment: string, gw?: RunningGateway): Promise<{ p: LivePsql; msg: FakeMessage; requestId: string }> {
  const p = await stack.psql(identity, sql, gw);
  const msg = await waitFor(() => requestMessage(fragment), `the request for "${fragment}" in Slack`);
  const requestId = requestIdOf(msg);
  await waitFor(() => p.stderr.match(/approval required: request \S+ (posted to|re-attached in)/) || p.exitCode !== undefined, 'the NOTICE on the held connection');
  assert.equal(p.exitCode, undefined, `psql must still be held; stderr: ${p.stderr}`);
  assert.match(p.stderr, new RegExp(`NOTICE: .*approval required: request ${requestId} (posted to|re-attached in) Slack #db-approvals, waiting up to \\d+ minutes?`));
  return { p, msg, requestId };
}

/** The value a button of the posted message carries (the grant button's names its duration too). */
function buttonValue(msg: FakeMessage, action: string): string {
  for (const b of msg.blocks) {
    const elements = (b as { elements?: Array<{ action_id?: string; value?: string }> }).elements ?? [];
    const e = elements.find((x) => x.action_id === action);
    if (e?.value) return e.value;
  }
  return requestIdOf(msg);
}

async function click(userId: string, msg: FakeMessage, action: 'airlock_approve' | 'airlock_approve_grant' | 'airlock_reject', sign: SignOptions = {}): Promise<{ status: number; body: string; triggerId: string }> {
  const { payload, triggerId } = blockActionPayload({ userId, channelId: msg.channel, messageTs: msg.ts, actionId: action, value: buttonValue(msg, action) });
  const res = await postInteraction(stack.slackEventsUrl, stack.signingSecret, payload, sign);
  return { ...res, triggerId };
}

async function approve(userId: string, msg: FakeMessage): Promise<void> {
  const r = await click(userId, msg, 'airlock_approve');
  assert.equal(r.status, 200, r.body);
}

function ephemeralsFor(userId: string): string[] {
  return stack.slack.ephemerals.filter((e) => e.user === userId).map((e) => e.text);
}

/** The Update failed with a refusal whose message (on the failure's cause) matches. */
function refusedWith(re: RegExp): (err: unknown) => boolean {
  return (err) => err instanceof Error && re.test(String((err.cause as Error | undefined)?.message));
}

async function workflowStatus(requestId: string): Promise<string> {
  return (await stack.temporal.client.workflow.getHandle(requestId).describe()).status.name;
}

async function balance(id: number): Promise<number> {
  return (await stack.pg.query(`SELECT balance FROM accounts WHERE id = ${id}`)).rows[0].balance as number;
}

function topLevelPostsFor(requestId: string): number {
  return stack.slack.callsTo('chat.postMessage').filter((c) => !c.params.thread_ts && c.response?.ok === true && JSON.stringify(c.params).includes(requestId)).length;
}

// ---------------------------------------------------------------------------------------------

test('a held UPDATE approved by a Slack click runs on the same psql connection; Slack shows the decision, the result and the session log', { timeout: TEST_TIMEOUT }, async () => {
  const { p, msg, requestId } = await holdVia(
    'erin',
    `UPDATE accounts SET balance = balance + 1 WHERE id = 1;
SELECT 'after:' || balance FROM accounts WHERE id = 1;
`,
    'balance + 1 WHERE id = 1',
  );
  assert.ok(hasButtons(msg), 'the request offers Approve and Reject');
  assert.doesNotMatch(p.stdout, /UPDATE/, 'nothing ran before the approval');
  assert.equal(await balance(1), 100);

  await approve('UBOB0001', msg);
  const r = await finished(p, 'approved update');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^UPDATE 1\n(.*\n)*after:101$/m, 'the UPDATE result, then the next statement of the same script');
  assert.equal(await balance(1), 101);

  await waitFor(() => ephemeralsFor('UBOB0001').some((t) => t.includes(`You approved request \`${requestId}\``)), 'the approver told privately');
  await waitFor(() => !hasButtons(msg) && /\*Approved\* by `bob`/.test(statusOf(msg)), 'the message updated: buttons gone, approver named');
  const reply = await waitFor(() => stack.slack.replies(stack.channelId, msg.ts).find((m) => /completed \(UPDATE 1\): 0 rows/.test(m.text)), 'the outcome in the thread');
  assert.match(reply.text, /\d+ ms/);
  const file = await waitFor(
    () => [...stack.slack.files.values()].find((f) => f.completed && f.thread_ts === msg.ts && f.channel_id === stack.channelId),
    'the session log uploaded into the thread',
  );
  assert.ok(stack.slack.callsTo('files.getUploadURLExternal').length > 0 && stack.slack.callsTo('files.completeUploadExternal').length > 0);
  assert.match(file.filename, /^airlock-session-.+\.log$/);
  const log = file.content?.toString('utf8') ?? '';
  assert.match(log, /UPDATE accounts SET balance = balance \+ 1 WHERE id = 1/);
  assert.match(log, /SELECT 'after:' \|\| balance/);
  // The run completes once its follow-ups (outcome reply, session log) are done: eventually, not at once.
  await waitFor(async () => (await workflowStatus(requestId)) === 'COMPLETED', 'the approval run completed');
});

test("the Slack request shows the held UPDATE's dry-run preview and the agent's reason; approving runs it once", { timeout: TEST_TIMEOUT }, async () => {
  const { p, msg, requestId } = await holdVia('agent-1', `/* airlock: reason="rebalance for INC-77" ticket=INC-77 */ UPDATE t_preview SET v = v * 10 WHERE id <= 2;\n`, 'UPDATE t_preview SET v');
  const preview = msg.blocks.find((b) => b.block_id === 'airlock_preview') as { text?: { text?: string } } | undefined;
  assert.match(preview?.text?.text ?? '', /Preview \(dry-run\): dry run: UPDATE 2, rolled back/);
  assert.match(preview?.text?.text ?? '', /id \| v\n-+-\+-+\n1 +\| 10\n2 +\| 20/);
  const details = JSON.stringify(msg.blocks.find((b) => b.block_id === 'airlock_details'));
  assert.ok(details.includes("agent's reason: \\\"rebalance for INC-77\\\" (sql comment)") || details.includes('rebalance for INC-77'), details);
  assert.ok(details.includes("agent's owner: carol"), details);
  assert.deepEqual((await stack.pg.query('SELECT v FROM t_preview WHERE id <= 2 ORDER BY id')).rows, [{ v: 1 }, { v: 2 }], 'the dry run was rolled back');
  await approve('UBOB0001', msg);
  const r = await finished(p, 'approved preview update');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual((await stack.pg.query('SELECT v FROM t_preview WHERE id <= 2 ORDER BY id')).rows, [{ v: 10 }, { v: 20 }]);
  assert.ok(requestId);
});

test('Reject asks for a reason; psql gets AL001 naming who rejected and why, and the session stays usable', { timeout: TEST_TIMEOUT }, async () => {
  const { p, msg, requestId } = await holdVia(
    'erin',
    `\\set VERBOSITY verbose
UPDATE accounts SET balance = balance + 2 WHERE id = 2;
SELECT 'still-usable:' || balance FROM accounts WHERE id = 2;
`,
    'balance + 2 WHERE id = 2',
  );
  const c = await click('UDAVE001', msg, 'airlock_reject');
  assert.equal(c.status, 200, c.body);
  const opened = await waitFor(() => stack.slack.views.find((v) => v.trigger_id === c.triggerId), 'the rejection form opened with the click trigger');
  assert.equal(p.exitCode, undefined, 'opening the form decides nothing');

  const submitted = await postInteraction(
    stack.slackEventsUrl,
    stack.signingSecret,
    viewSubmissionPayload({
      userId: 'UDAVE001',
      callbackId: String(opened.view.callback_id),
      privateMetadata: String(opened.view.private_metadata),
      values: { airlock_reason: { reason: 'no writes during the audit freeze' } },
    }),
  );
  assert.equal(submitted.status, 200, submitted.body);

  const r = await finished(p, 'rejected update');
  assert.match(r.stderr, /ERROR: {2}AL001: Airlock: approval rejected by dave: no writes during the audit freeze/, 'dave was mapped by the email on his Slack profile');
  assert.match(r.stdout, /^still-usable:100$/m);
  assert.equal(await balance(2), 100);
  assert.ok(stack.slack.callsTo('users.info').some((x) => x.params.user === 'UDAVE001'));
  await waitFor(() => !hasButtons(msg) && /\*Rejected\* by `dave`/.test(statusOf(msg)) && statusOf(msg).includes('no writes during the audit freeze'), 'the message shows the rejection and its reason');
  const result = (await stack.temporal.client.workflow.getHandle(requestId).result()) as ApprovalResult;
  assert.equal(result.outcome, 'rejected');
  assert.equal(result.rejectedBy, 'dave');
});

test('nobody answers: the escalation channel is told (mentioning the group), then the request expires and psql gets the expiry error', { timeout: TEST_TIMEOUT }, async () => {
  const { p, msg, requestId } = await holdVia(
    'erin',
    `\\set VERBOSITY verbose
UPDATE t_expiry SET v = v + 1 WHERE id = 1;
SELECT 'after-expiry';
`,
    'UPDATE t_expiry SET v = v + 1',
  );
  const escalation = await waitFor(
    () => stack.slack.messagesIn(stack.escalationChannelId).find((m) => m.text.includes(requestId)),
    'the escalation message in #db-escalations',
  );
  assert.match(escalation.text, /<!subteam\^S0ONCALL1> @db-oncall/);
  assert.match(escalation.text, /erin on app, rule review-expiry/);

  const r = await finished(p, 'expiring update');
  assert.match(r.stderr, new RegExp(`ERROR: {2}AL002: Airlock: approval request ${requestId} expired: no decision within 8s, after escalation`));
  assert.match(r.stdout, /^after-expiry$/m);
  assert.equal((await stack.pg.query('SELECT v FROM t_expiry WHERE id = 1')).rows[0].v, 1);
  await waitFor(() => !hasButtons(msg) && /\*Expired\*.*\(after escalation\)/.test(statusOf(msg)), 'the message shows the expiry');
  assert.ok(stack.slack.replies(stack.channelId, msg.ts).some((m) => m.text.includes('Escalated to')), 'the request thread links the escalation');
});

test('the requester and the agent\'s owner cannot approve; the statement stays held until a valid approver does', { timeout: TEST_TIMEOUT }, async () => {
  const { p, msg, requestId } = await holdVia(
    'agent-1',
    `UPDATE accounts SET balance = balance + 4 WHERE id = 4;
SELECT 'after:' || balance FROM accounts WHERE id = 4;
`,
    'balance + 4 WHERE id = 4',
  );
  assert.match(JSON.stringify(msg.blocks), /`agent-1` \(agent of `carol`\)/);

  await approve('UCAROL01', msg);
  await waitFor(() => ephemeralsFor('UCAROL01').find((t) => t.includes('carol owns the requesting agent agent-1 and cannot approve its requests')), 'the owner refused privately');
  await approve('UAGENT01', msg);
  await waitFor(() => ephemeralsFor('UAGENT01').find((t) => t.includes('agent-1 requested this operation and cannot approve it (no self-approval)')), 'the requester refused privately');

  assert.equal(p.exitCode, undefined, 'still held');
  assert.equal(await workflowStatus(requestId), 'RUNNING');
  assert.ok(hasButtons(msg));
  assert.equal(await balance(4), 100);
  const refused = stack.store.listAudit(requestId).filter((e) => e.kind === 'approval.decision-refused').map((e) => e.actor);
  assert.deepEqual(refused.sort(), ['agent-1', 'carol'], 'refused attempts are audited');

  await approve('UBOB0001', msg);
  const r = await finished(p, 'approved after refusals');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^UPDATE 1$/m);
  assert.match(r.stdout, /^after:104$/m);
});

test('a quorum of two: the first approval leaves it pending (1 of 2), the same approver cannot count twice, a second distinct approver releases it', { timeout: TEST_TIMEOUT }, async () => {
  const { p, msg, requestId } = await holdVia(
    'erin',
    `UPDATE t_quorum SET v = v + 1 WHERE id = 1;
SELECT 'quorum-after:' || v FROM t_quorum WHERE id = 1;
`,
    'UPDATE t_quorum SET v = v + 1',
  );
  await approve('UBOB0001', msg);
  await waitFor(() => ephemeralsFor('UBOB0001').find((t) => t.includes(`Your approval of request \`${requestId}\` is recorded (1 of 2)`)), 'bob told his vote counts 1 of 2');
  await waitFor(() => /Approved so far by `bob` \(1 of 2\)/.test(statusOf(msg)), 'the message shows 1 of 2');
  assert.ok(hasButtons(msg), 'buttons stay for the next approver');
  assert.equal(p.exitCode, undefined, 'still held after one approval');
  assert.equal(await workflowStatus(requestId), 'RUNNING');

  await approve('UBOB0001', msg);
  await waitFor(() => ephemeralsFor('UBOB0001').find((t) => t.includes('bob already approved; quorum needs 2 distinct approvers')), 'a second vote by bob refused');
  assert.equal(p.exitCode, undefined);

  await approve('UDAVE001', msg);
  const r = await finished(p, 'quorum update');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^UPDATE 1$/m);
  assert.match(r.stdout, /^quorum-after:2$/m);
  const result = (await stack.temporal.client.workflow.getHandle(requestId).result()) as ApprovalResult;
  assert.equal(result.outcome, 'approved');
  assert.deepEqual(result.approvers, ['bob', 'dave']);
  await waitFor(() => !hasButtons(msg) && /\*Approved\* by `bob`, `dave`/.test(statusOf(msg)), 'the message names both approvers');
});

test('psql killed while held: the workflow ends cancelled and the Slack message says so', { timeout: TEST_TIMEOUT }, async () => {
  const { p, msg, requestId } = await holdVia('erin', `UPDATE accounts SET balance = balance + 6 WHERE id = 6;\n`, 'balance + 6 WHERE id = 6');
  p.kill('SIGKILL');
  await finished(p, 'killed psql');

  const result = await waitFor(async () => {
    const h = stack.temporal.client.workflow.getHandle(requestId);
    if ((await h.describe()).status.name !== 'COMPLETED') return undefined;
    return (await h.result()) as ApprovalResult;
  }, 'the workflow to complete');
  assert.equal(result.outcome, 'cancelled');
  assert.match(result.reason ?? '', /cancelled by the client/);
  await waitFor(() => !hasButtons(msg) && /\*Cancelled\*/.test(statusOf(msg)), 'the message shows the cancellation');

  await approve('UBOB0001', msg);
  await waitFor(() => ephemeralsFor('UBOB0001').find((t) => t.includes(`request ${requestId} is no longer pending (cancelled)`)), 'a late click is refused');
  assert.equal(await balance(6), 100);
});

test('Slack down (every chat.postMessage fails with 500): the statement is rejected by the deadline, fail closed, with the reason', { timeout: TEST_TIMEOUT }, async () => {
  stack.slack.failNext(1_000_000, { kind: 'http', status: 500 }, 'chat.postMessage');
  try {
    const before = stack.slack.callsTo('chat.postMessage').length;
    const started = Date.now();
    const p = await stack.psql(
      'erin',
      `\\set VERBOSITY verbose
UPDATE t_outage SET v = v + 1 WHERE id = 1;
SELECT 'after-outage';
`,
    );
    const r = await finished(p, 'update during the Slack outage');
    const elapsed = Date.now() - started;
    assert.match(r.stderr, /ERROR: {2}AL003: Airlock: approval could not be obtained \(rule review-outage\): could not post the approval request by the deadline \(post request via slack: .*Slack answered HTTP 500.*\); failing closed/);
    assert.match(r.stderr, /approval required: request \S+ created, posting to Slack/, 'told at once that a request was made');
    assert.doesNotMatch(r.stderr, /approval required: request \S+ posted to/, 'never told it was posted');
    assert.match(r.stdout, /^after-outage$/m, 'the session stays usable');
    assert.ok(elapsed < 60_000, `rejected at the 6s deadline, not later (took ${elapsed} ms)`);
    assert.ok(stack.slack.callsTo('chat.postMessage').length - before >= 2, 'posting was retried');
    assert.equal((await stack.pg.query('SELECT v FROM t_outage WHERE id = 1')).rows[0].v, 1);
  } finally {
    stack.slack.clearFaults();
  }
});

test('a second gateway holding the same statement re-attaches to the same request: one Slack post; approve-once releases exactly one of them', { timeout: TEST_TIMEOUT }, async () => {
  const gwB = await stack.startGateway();
  const sql = (tag: string) => `UPDATE accounts SET balance = balance + 8 WHERE id = 8;\nSELECT '${tag}-after:' || balance FROM accounts WHERE id = 8;\n`;
  const a = await holdVia('erin', sql('a'), 'balance + 8 WHERE id = 8');
  const b = await stack.psql('erin', sql('b'), gwB);
  await waitFor(() => b.stderr.match(/approval required: request \S+ (posted to|re-attached in)/) || b.exitCode !== undefined, 'the NOTICE on gateway B');
  assert.match(b.stderr, new RegExp(`approval required: request ${a.requestId} re-attached in Slack #db-approvals`));
  assert.equal(topLevelPostsFor(a.requestId), 1, 'posted once');

  const before = await balance(8);
  await approve('UBOB0001', a.msg);
  const [ra, rb] = await Promise.all([finished(a.p, 'gateway A'), finished(b, 'gateway B')]);
  const ran = [ra, rb].filter((r) => /^UPDATE 1$/m.test(r.stdout));
  const refused = [ra, rb].filter((r) => /ERROR: .*approval request \S+ was cancelled: .*approved once/.test(r.stderr));
  assert.equal(ran.length, 1, 'one approval, one run');
  assert.equal(refused.length, 1, `the other session is told the approval covered another one: ${ra.stderr} ${rb.stderr}`);
  assert.equal(await balance(8), before + 8);
  assert.equal(topLevelPostsFor(a.requestId), 1);
});

test('a gateway process that crashes while a statement is held: the retry through another gateway re-attaches to the pending request', { timeout: TEST_TIMEOUT }, async () => {
  const proc = await stack.spawnGateway();
  const sql = `UPDATE accounts SET balance = balance + 11 WHERE id = 11;\nSELECT 'after:' || balance FROM accounts WHERE id = 11;\n`;
  const first = await stack.psql('erin', sql, proc.port);
  const msg = await waitFor(() => requestMessage('balance + 11 WHERE id = 11'), 'the request posted by the gateway process');
  const requestId = requestIdOf(msg);
  await waitFor(() => first.stderr.includes(`approval required: request ${requestId} posted to`), 'the NOTICE from the gateway process');

  await proc.crash();
  const lost = await finished(first, 'psql on the crashed gateway');
  assert.notEqual(lost.code, 0, 'the client lost its connection');
  assert.doesNotMatch(lost.stdout, /UPDATE/);
  assert.equal(await workflowStatus(requestId), 'RUNNING', 'a crash cancels nothing: the request is still pending');

  const retry = await stack.psql('erin', sql);
  await waitFor(() => retry.stderr.match(/approval required: request \S+ (posted to|re-attached in)/) || retry.exitCode !== undefined, 'the NOTICE on the retry');
  assert.match(retry.stderr, new RegExp(`approval required: request ${requestId} re-attached in Slack #db-approvals`));
  assert.equal(topLevelPostsFor(requestId), 1, 'not posted twice');

  await approve('UBOB0001', msg);
  const r = await finished(retry, 'the retry');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^UPDATE 1$/m);
  assert.match(r.stdout, /^after:111$/m);
  assert.equal(topLevelPostsFor(requestId), 1);
});

test('a restarted gateway runs a retry within a reusable grant the approver chose, without a second request', { timeout: TEST_TIMEOUT }, async () => {
  const first = await stack.startGateway();
  const sql = `UPDATE accounts SET balance = balance + 7 WHERE id = 7;\n`;
  const { p, msg, requestId } = await holdVia('erin', sql, 'balance + 7 WHERE id = 7', first);
  // "Approve for <grantTtl>": the approver explicitly makes the approval reusable.
  const g = await click('UBOB0001', msg, 'airlock_approve_grant');
  assert.equal(g.status, 200, g.body);
  assert.match((await finished(p, 'first run')).stdout, /^UPDATE 1$/m);
  await first.close(); // the gateway goes away (restart)

  const restarted = await stack.startGateway();
  const retry = await stack.psql('erin', `${sql}SELECT 'retry-after:' || balance FROM accounts WHERE id = 7;\n`, restarted);
  const r = await finished(retry, 'retry through the restarted gateway');
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /approval required/, 'no second request');
  assert.match(r.stdout, /^UPDATE 1$/m);
  assert.match(r.stdout, /^retry-after:114$/m);
  assert.match(r.stderr, new RegExp(`running under reusable approval ${requestId} \\(use 2, valid until `), 'the client is told it ran under a grant');
  assert.equal(topLevelPostsFor(requestId), 1);
  assert.ok(stack.store.listAudit(requestId).some((e) => e.kind === 'approval.grant-used'));
});

test('unsigned, stale and badly signed Slack requests are refused with 401 and decide nothing', { timeout: TEST_TIMEOUT }, async () => {
  const { p, msg, requestId } = await holdVia(
    'erin',
    `UPDATE accounts SET balance = balance + 9 WHERE id = 9;
SELECT 'after:' || balance FROM accounts WHERE id = 9;
`,
    'balance + 9 WHERE id = 9',
  );
  const ephemeralsBefore = stack.slack.ephemerals.length;
  const attempts: Array<[string, SignOptions]> = [
    ['unsigned', { unsigned: true }],
    ['stale (6 minutes old)', { timestamp: Math.floor(Date.now() / 1000) - 6 * 60 }],
    ['signed with the wrong secret', { secret: 'not-the-signing-secret' }],
    ['forged signature', { signature: `v0=${'0'.repeat(64)}` }],
  ];
  for (const [what, sign] of attempts) {
    const r = await click('UBOB0001', msg, 'airlock_approve', sign);
    assert.equal(r.status, 401, `${what}: ${r.status} ${r.body}`);
  }
  assert.equal(stack.slack.ephemerals.length, ephemeralsBefore, 'no handler ran');
  assert.equal(await workflowStatus(requestId), 'RUNNING');
  assert.ok(hasButtons(msg));
  assert.equal(p.exitCode, undefined, 'still held');
  assert.ok(!stack.store.listAudit(requestId).some((e) => e.kind.startsWith('approval.decision')), 'no decision attempt reached the workflow');

  await approve('UBOB0001', msg);
  const r = await finished(p, 'approved after forged clicks');
  assert.match(r.stdout, /^UPDATE 1$/m);
  assert.match(r.stdout, /^after:109$/m);
});

test('Temporal unreachable: review statements are rejected promptly (fail closed) while allowed statements keep working', { timeout: TEST_TIMEOUT }, async () => {
  const dead = await freePort();
  const loaded = stack.variant('dead-temporal', (c) => ({ ...c, temporal: { ...c.temporal, address: `127.0.0.1:${dead}` } }));
  const gw = await stack.startGateway(loaded);
  const started = Date.now();
  const p = await stack.psql(
    'erin',
    `\\set VERBOSITY verbose
SELECT 'before:' || balance FROM accounts WHERE id = 10;
UPDATE accounts SET balance = balance + 10 WHERE id = 10;
SELECT 'alive:' || balance FROM accounts WHERE id = 10;
`,
    gw,
  );
  const r = await finished(p, 'Temporal down');
  const elapsed = Date.now() - started;
  assert.match(r.stderr, /ERROR: {2}AL003: Airlock: approval could not be obtained \(rule review-writes\): approval required by rule review-writes, but the approval service \(Temporal\) is unreachable or refused the request: .+; failing closed/);
  assert.match(r.stdout, /^before:100\n(.*\n)*alive:100$/m);
  assert.ok(elapsed < 30_000, `rejected promptly (took ${elapsed} ms)`);
  assert.equal(await balance(10), 100);
  assert.equal(requestMessage('balance + 10 WHERE id = 10'), undefined, 'nothing was posted');
});

test('a decision forged through the Temporal client (made-up approver, claimed dba group, no or a bad proof) releases nothing and is audited; a Slack click then does', { timeout: TEST_TIMEOUT }, async () => {
  const { p, msg, requestId } = await holdVia(
    'agent-1',
    `UPDATE accounts SET balance = balance + 7 WHERE id = 17;
SELECT 'after:' || balance FROM accounts WHERE id = 17;
`,
    'balance + 7 WHERE id = 17',
  );
  const handle = stack.temporal.client.workflow.getHandle(requestId);
  // Exactly what `temporal workflow update execute --name decide` sends.
  await assert.rejects(handle.executeUpdate(decideUpdate, { args: [{ approver: 'mallory', approverGroups: ['dba'], decision: 'approve', via: 'slack:UFAKE' }] }), refusedWith(/unsigned decision/));
  // A well-formed proof with a made-up signature.
  const bogus = {
    approver: 'bob',
    approverGroups: ['dba'],
    decision: 'approve' as const,
    via: 'slack:UBOB0001',
    proof: { source: 'slack' as const, channelUser: 'UBOB0001', signedAt: Date.now(), nonce: 'n'.repeat(22), signature: Buffer.alloc(64, 7).toString('base64') },
  };
  await assert.rejects(handle.executeUpdate(decideUpdate, { args: [bogus] }), refusedWith(/bad signature/));

  const refused = await waitFor(() => {
    const rows = stack.store.listAudit(requestId).filter((e) => e.kind === 'approval.decision-refused');
    return rows.length >= 2 ? rows : undefined;
  }, 'both forged attempts audited by the workflow');
  assert.deepEqual(refused.map((e) => e.actor).sort(), ['unverified:bob', 'unverified:mallory']);
  assert.ok(refused.every((e) => e.detail.via === 'unverified'));
  assert.equal(p.exitCode, undefined, 'still held');
  assert.equal(await balance(17), 100);
  assert.equal(await workflowStatus(requestId), 'RUNNING');

  // `/airlock pending` (signed by Slack like every request) lists it, from Temporal's visibility.
  await waitFor(async () => {
    const res = await postSlashCommand(stack.slackEventsUrl, stack.signingSecret, { command: '/airlock', text: 'pending', userId: 'UBOB0001', channelId: stack.channelId });
    return res.status === 200 && (JSON.parse(res.body) as { text: string }).text.includes(requestId);
  }, '/airlock pending to list the held request');

  await approve('UBOB0001', msg);
  const r = await finished(p, 'approved by a signed Slack click');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^after:107$/m);
  const accepted = stack.store.listAudit(requestId).find((e) => e.kind === 'approval.decision');
  assert.equal(accepted?.actor, 'bob');
  assert.equal(accepted?.detail.via, 'slack:UBOB0001', 'via is the verified source');
  const rejecterSearchable = await stack.temporal.client.workflow.count(`AirlockRejecter = "nobody"`);
  assert.equal(rejecterSearchable.count, 0, 'AirlockRejecter is a registered search attribute');
});
