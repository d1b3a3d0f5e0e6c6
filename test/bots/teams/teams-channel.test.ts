import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ApprovalView, MessageRef } from '../../../bots/channel.ts';
import { TeamsChannel, ChatPermanentError, ChatRetryableError, compactTranscript } from '../../../bots/teams/teams-channel.ts';
import { ConversationReferenceStore } from '../../../bots/teams/references.ts';
import { parseConfig } from '../../../gateway/config/load.ts';
import { classifyChatError } from '../../../workflows/chat-errors.ts';
import { FakeBotConnector, cardOf, cardText } from '../../support/fake-bot-connector.ts';

const APP_ID = '6f1c9a52-0d4e-4c7e-9d1e-2b7c1e0a9f11';
const PASSWORD = 'fake-client-secret~1';

function view(over: Partial<ApprovalView> = {}): ApprovalView {
  return {
    requestId: 'req-7f3a',
    protocol: 'postgres',
    identity: 'agent-billing',
    owner: 'alice',
    connection: 'prod-db',
    text: 'DELETE FROM invoices WHERE id = 7',
    rule: 'review-deletes',
    reason: 'deletes on production are reviewed',
    deadline: '2026-11-25T01:00:00.000Z',
    approverGroups: ['dba'],
    quorum: 1,
    status: 'pending',
    decidedBy: [],
    escalated: false,
    ...over,
  };
}

type Element = Record<string, unknown>;

function texts(activity: Record<string, unknown>): string {
  return String(activity.text ?? '');
}

describe('TeamsChannel: requests as Adaptive Cards through the Bot Connector', () => {
  let fake: FakeBotConnector;
  let channelId: string;
  let escalationId: string;
  let teams: TeamsChannel;
  let dir: string;

  before(async () => {
    fake = await FakeBotConnector.start({ appId: APP_ID, appPassword: PASSWORD });
    channelId = fake.addChannel();
    escalationId = fake.addChannel();
    dir = mkdtempSync(join(tmpdir(), 'airlock-teams-'));
    teams = new TeamsChannel({
      appId: APP_ID,
      appPassword: PASSWORD,
      tenantId: fake.tenantId,
      endpoints: fake.endpoints,
      serviceUrl: fake.serviceUrl,
      channelId,
      users: { 'c0ffee00-0000-4000-8000-00000000ca01': 'carol', 'dave@example.com': 'dave' },
      identities: [
        { name: 'alice', groups: ['dba'] },
        { name: 'carol', groups: ['dba', 'sre'] },
        { name: 'dave', groups: ['sre'] },
        { name: 'erin', groups: ['dba'] },
      ],
      timeoutMs: 400,
    });
  });
  after(async () => {
    await fake.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('post creates a thread in the configured channel carrying an Adaptive Card 1.5 with who, where, what, why, deadline and approvers', async () => {
    const ref = await teams.post(view({ quorum: 2, approverGroups: ['dba', 'sre'] }));
    assert.equal(ref.serviceUrl, fake.serviceUrl);
    assert.match(ref.conversationId, new RegExp(`^${channelId.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')};messageid=${ref.activityId}$`));

    const create = fake.callsTo('POST').find((c) => c.path === '/v3/conversations');
    assert.ok(create, 'POST /v3/conversations');
    const params = create.body as { isGroup: boolean; channelData: { channel: { id: string }; tenant: { id: string } }; activity: Record<string, unknown> };
    assert.equal(params.isGroup, true);
    assert.equal(params.channelData.channel.id, channelId);
    assert.equal(params.channelData.tenant.id, fake.tenantId);
    // The bot's own token, obtained with client credentials for the Bot Connector scope.
    assert.match(create.authorization ?? '', /^Bearer fake-bot-token-/);
    assert.deepEqual(fake.tokenRequests[0], { tenant: 'botframework.com', clientId: APP_ID, scope: 'https://api.botframework.com/.default', ok: true, method: 'secret' });

    const card = cardOf(params.activity);
    assert.equal(card.type, 'AdaptiveCard');
    assert.equal(card.version, '1.5');
    const text = cardText(card);
    assert.match(text, /Approval required: postgres on prod-db/);
    assert.match(text, /Who: agent-billing \(agent of alice\)/);
    assert.match(text, /Where: prod-db \(postgres\)/);
    assert.match(text, /Why: rule review-deletes: deletes on production are reviewed/);
    assert.match(text, /Deadline: \{\{DATE\(2026-11-25T01:00:00Z, SHORT\)\}\} \{\{TIME\(2026-11-25T01:00:00Z\)\}\}/);
    assert.match(text, /Approvers: 2 from dba, sre/);
    assert.match(text, /Request: req-7f3a/);

    const code = card.body.find((b) => b.type === 'CodeBlock') as Element;
    assert.equal(code.codeSnippet, 'DELETE FROM invoices WHERE id = 7');
    assert.equal(code.language, 'SQL');
    assert.deepEqual((code.fallback as Element).fontType, 'Monospace');

    const reason = card.body.find((b) => b.type === 'Input.Text') as Element;
    assert.equal(reason.id, 'reason');

    const actions = card.actions ?? [];
    // Approve is a confirm step (a ShowCard) whose only button submits; Reject submits with the reason.
    assert.deepEqual(actions.map((a) => [a.type, a.title]), [['Action.ShowCard', 'Approve…'], ['Action.Execute', 'Reject']]);
    const confirm = actions[0].card as { body: Element[]; actions: Element[] };
    assert.deepEqual(confirm.actions.map((a) => [a.type, a.verb, a.data, a.title]), [['Action.Execute', 'approve', { requestId: 'req-7f3a' }, 'Confirm approval']]);
    assert.match(String(confirm.body[0].text), /this exact operation runs on/);
    assert.equal(confirm.actions[0].associatedInputs, 'auto');
    assert.deepEqual((confirm.actions[0].fallback as Element).data, { verb: 'approve', requestId: 'req-7f3a' });
    assert.deepEqual([actions[1].verb, actions[1].data, actions[1].associatedInputs], ['reject', { requestId: 'req-7f3a' }, 'auto']);
    assert.equal((actions[1].fallback as Element).type, 'Action.Submit');
    assert.deepEqual((actions[1].fallback as Element).data, { verb: 'reject', requestId: 'req-7f3a' });
    // The fake stored it as the root of a new thread.
    assert.equal(fake.message(ref.activityId)?.threadId, ref.activityId);
  });

  test('a statement too long for the card is truncated there and posted in full in the thread, HTML-escaped', async () => {
    const long = `UPDATE t SET note = '<b>x</b> & y' WHERE id IN (${Array.from({ length: 900 }, (_, i) => i).join(', ')})`;
    const ref = await teams.post(view({ requestId: 'req-long', text: long }));
    const card = cardOf(fake.message(ref.activityId)!.activity);
    const code = card.body.find((b) => b.type === 'CodeBlock') as Element;
    assert.ok(String(code.codeSnippet).length < long.length);
    assert.match(cardText(card), /Truncated \(\d+ characters\): the full text is in the thread/);
    const replies = fake.thread(ref.activityId).filter((m) => m.id !== ref.activityId);
    assert.equal(replies.length, 1);
    assert.equal(replies[0].activity.textFormat, 'xml');
    assert.ok(texts(replies[0].activity).includes('&lt;b&gt;x&lt;/b&gt; &amp; y'));
    assert.ok(texts(replies[0].activity).includes('899)'));
  });

  test('update rewrites the card in its decided state: who, when, why, and no buttons or reason box', async () => {
    const ref = await teams.post(view({ requestId: 'req-upd' }));
    await teams.update(ref, view({ requestId: 'req-upd', status: 'rejected', decidedBy: ['carol'], decidedAt: '2026-11-25T00:10:00.000Z', decisionReason: 'not during the freeze' }));
    const put = fake.callsTo('PUT').at(-1)!;
    assert.equal(put.conversationId, ref.conversationId);
    assert.equal(put.activityId, ref.activityId);
    const msg = fake.message(ref.activityId)!;
    assert.equal(msg.edits, 1);
    const card = cardOf(msg.activity);
    assert.equal(card.actions, undefined);
    assert.equal(card.body.find((b) => b.type === 'Input.Text'), undefined);
    assert.match(cardText(card), /Rejected\*\* by carol on \{\{DATE\(2026-11-25T00:10:00Z, SHORT\)\}\}/);
    assert.match(cardText(card), /Reason: not during the freeze/);
  });

  test('escalate marks the card escalated and mentions the group in the thread, with <at> entities for mapped members', async () => {
    const ref = await teams.post(view({ requestId: 'req-esc' }));
    await teams.escalate(ref, view({ requestId: 'req-esc' }), { mention: ['@dba', 'dave', '@nobody-mapped'] });
    const card = cardOf(fake.message(ref.activityId)!.activity);
    assert.match(cardText(card), /Escalated\*\*: no decision yet/);
    assert.ok(card.actions?.length, 'still decidable after escalation');
    const reply = fake.thread(ref.activityId).find((m) => m.id !== ref.activityId)!;
    const text = texts(reply.activity);
    assert.match(text, /@dba \(<at>carol<\/at>\) <at>dave<\/at> @nobody-mapped approval request <b>req-esc<\/b>/);
    assert.match(text, /expires 2026-11-25 01:00:00 UTC/);
    assert.deepEqual(reply.activity.entities, [
      { type: 'mention', text: '<at>carol</at>', mentioned: { id: 'c0ffee00-0000-4000-8000-00000000ca01', name: 'carol' } },
      { type: 'mention', text: '<at>dave</at>', mentioned: { id: 'dave@example.com', name: 'dave' } },
    ]);
  });

  test('escalate to another channel starts a thread there and leaves a note in the request thread', async () => {
    const ref = await teams.post(view({ requestId: 'req-esc2' }));
    await teams.escalate(ref, view({ requestId: 'req-esc2' }), { mention: ['dba'], channel: escalationId });
    const there = fake.messages.filter((m) => m.channelId === escalationId);
    assert.equal(there.length, 1);
    assert.match(texts(there[0].activity), /<at>carol<\/at>.*req-esc2.*has had no decision/);
    const note = fake.thread(ref.activityId).find((m) => m.id !== ref.activityId)!;
    assert.match(texts(note.activity), /Escalated to dba in the escalation channel/);
  });

  test('reply posts the outcome in the thread, escaped', async () => {
    const ref = await teams.post(view({ requestId: 'req-reply' }));
    await teams.reply(ref, 'Ran: DELETE 1 in 12 ms\nmasked: <email>');
    const r = fake.thread(ref.activityId).find((m) => m.id !== ref.activityId)!;
    assert.equal(texts(r.activity), 'Ran: DELETE 1 in 12 ms<br>masked: &lt;email&gt;');
  });

  test('attachLog posts an inline transcript (head and tail when long) and how to see the whole session', async () => {
    const ref = await teams.post(view({ requestId: 'req-log' }));
    const log = Array.from({ length: 3000 }, (_, i) => `00:00:${String(i % 60).padStart(2, '0')} #${i} SELECT ${i} <ok>`).join('\n');
    await teams.attachLog(ref, 'airlock-session-s-42.log', log);
    const r = fake.thread(ref.activityId).find((m) => m.id !== ref.activityId)!;
    const text = texts(r.activity);
    assert.match(text, /^<b>Session log<\/b> airlock-session-s-42\.log \(3000 lines, \d+ bytes\), \d+ lines omitted below\. Full log: <code>airlock sessions show s-42<\/code><pre>/);
    assert.ok(text.includes('#0 SELECT 0 &lt;ok&gt;'), 'head kept');
    assert.ok(text.includes('#2999 SELECT 2999'), 'tail kept');
    assert.ok(!text.includes('#1500 SELECT'), 'middle elided');
    assert.ok(text.length < 24_000, `fits a Teams message (${text.length})`);

    const linked = new TeamsChannel({ appId: APP_ID, appPassword: PASSWORD, endpoints: fake.endpoints, serviceUrl: fake.serviceUrl, channelId, sessionUrlBase: 'https://airlock.example.com/sessions/' });
    await linked.attachLog(ref, 'airlock-session-s-43.log', 'one line\n');
    const r2 = fake.thread(ref.activityId).at(-1)!;
    assert.match(texts(r2.activity), /<a href="https:\/\/airlock\.example\.com\/sessions\/s-43">Open session s-43 in Airlock<\/a><pre>one line\n<\/pre>/);
  });

  test('compactTranscript keeps short logs whole and cuts long ones at line ends', () => {
    assert.deepEqual(compactTranscript('a\nb\n', 100), { text: 'a\nb\n', elided: 0 });
    const long = Array.from({ length: 100 }, (_, i) => `line ${i}`).join('\n');
    const c = compactTranscript(long, 200);
    assert.ok(c.elided > 50);
    assert.match(c.text, /^line 0\n/);
    assert.match(c.text, /line 99$/);
    assert.match(c.text, new RegExp(`… ${c.elided} lines omitted …`));
  });

  describe('Bot Connector failures are classified for the activity retry policy', () => {
    test('HTTP 500 is retryable', async () => {
      fake.failNext(1, { kind: 'http', status: 500 });
      const err = await teams.post(view()).catch((e: unknown) => e);
      assert.ok(err instanceof ChatRetryableError, String(err));
      assert.equal(err.code, 'http_500');
      assert.equal(classifyChatError(err).retryable, true);
    });

    test('HTTP 429 is retryable after the Retry-After it gave', async () => {
      fake.failNext(1, { kind: 'rate-limit', retryAfterSeconds: 7 });
      const err = await teams.post(view()).catch((e: unknown) => e);
      assert.ok(err instanceof ChatRetryableError);
      assert.equal(err.retryAfterMs, 7000);
      assert.equal(classifyChatError(err).retryAfterMs, 7000);
    });

    test('a Bot Connector that does not answer times out, retryable', async () => {
      fake.failNext(1, { kind: 'hang' });
      const started = Date.now();
      const err = await teams.post(view()).catch((e: unknown) => e);
      assert.ok(err instanceof ChatRetryableError);
      assert.equal(err.code, 'timeout');
      assert.ok(Date.now() - started < 3000);
    });

    test('a Bot Connector that cannot be reached is retryable', async () => {
      const closed = createServer();
      await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
      const { port } = closed.address() as AddressInfo;
      await new Promise<void>((r) => closed.close(() => r()));
      const down = new TeamsChannel({ appId: '', endpoints: fake.endpoints, serviceUrl: `http://127.0.0.1:${port}/`, channelId });
      const err = await down.post(view()).catch((e: unknown) => e);
      assert.ok(err instanceof ChatRetryableError, String(err));
      assert.equal(err.code, 'ECONNREFUSED');
      assert.match(err.message, /cannot reach Teams: fetch failed: connect ECONNREFUSED/);
      assert.equal(classifyChatError(err).retryable, true);
    });

    test('HTTP 403 and 404 are permanent', async () => {
      fake.failNext(1, { kind: 'http', status: 403 });
      const e403 = await teams.post(view()).catch((e: unknown) => e);
      assert.ok(e403 instanceof ChatPermanentError);
      assert.match(e403.message, /installed in the team/);
      assert.equal(classifyChatError(e403).retryable, false);
      const e404 = await teams.update({ conversationId: `${channelId};messageid=404404`, activityId: '404404', serviceUrl: fake.serviceUrl }, view()).catch((e: unknown) => e);
      assert.ok(e404 instanceof ChatPermanentError);
      assert.equal(e404.code, 'http_404');
    });

    test('a wrong app password is permanent (401 from the token endpoint)', async () => {
      const wrong = new TeamsChannel({ appId: APP_ID, appPassword: 'not-the-secret', endpoints: fake.endpoints, serviceUrl: fake.serviceUrl, channelId });
      const err = await wrong.post(view()).catch((e: unknown) => e);
      assert.ok(err instanceof ChatPermanentError, String(err));
      assert.equal(err.code, 'http_401');
      assert.match(err.message, /teams\.appPassword/);
      assert.equal(classifyChatError(err).retryable, false);
    });

    test('a token the Bot Connector refuses is permanent (401)', async () => {
      fake.failNext(1, { kind: 'http', status: 401 });
      const err = await teams.post(view()).catch((e: unknown) => e);
      assert.ok(err instanceof ChatPermanentError);
      assert.equal(err.code, 'http_401');
    });

    test('an unknown channel is permanent, and a damaged reference is refused without a call', async () => {
      const lost = new TeamsChannel({ appId: APP_ID, appPassword: PASSWORD, endpoints: fake.endpoints, serviceUrl: fake.serviceUrl, channelId: '19:gone@thread.tacv2' });
      const err = await lost.post(view()).catch((e: unknown) => e);
      assert.ok(err instanceof ChatPermanentError);
      const before = fake.calls.length;
      const bad = await teams.update({ channel: 'C1', ts: '1.2' } as MessageRef, view()).catch((e: unknown) => e);
      assert.ok(bad instanceof ChatPermanentError);
      assert.equal(bad.code, 'invalid_ref');
      assert.equal(fake.calls.length, before);
    });
  });

  test('without a configured channel, requests go to the channel the bot was installed in; with neither, a permanent error', async () => {
    const store = join(dir, 'refs.json');
    const none = new TeamsChannel({ appId: APP_ID, appPassword: PASSWORD, endpoints: fake.endpoints, serviceUrl: 'http://127.0.0.1:1/', referenceStore: store });
    const err = await none.post(view()).catch((e: unknown) => e);
    assert.ok(err instanceof ChatPermanentError);
    assert.equal(err.code, 'no_channel');
    // The serviceUrl recorded at installation wins over the configured default (unreachable here).
    new ConversationReferenceStore(store).upsert({ conversationId: escalationId, serviceUrl: fake.serviceUrl, tenantId: fake.tenantId, teamId: 'team-1', installedAt: new Date().toISOString() });
    const ref = await none.post(view({ requestId: 'req-installed' }));
    assert.equal(fake.message(ref.activityId)?.channelId, escalationId);
  });

  test('fromConfig reads the teams block and resolves the app password reference', async () => {
    process.env.AIRLOCK_TEST_TEAMS_PASSWORD = PASSWORD;
    const loaded = parseConfig(
      `
auth: { signingKey: { env: AIRLOCK_TEST_SIGNING_KEY } }
teams:
  appId: ${APP_ID}
  appPassword: { env: AIRLOCK_TEST_TEAMS_PASSWORD }
  tenantId: ${fake.tenantId}
  serviceUrl: ${fake.serviceUrl}
  channelId: '${channelId}'
  botFramework: { loginUrl: '${fake.loginUrl()}', openIdMetadataUrl: '${fake.openIdMetadataUrl}' }
`,
      '<test>',
      dir,
    );
    const ch = TeamsChannel.fromConfig(loaded);
    assert.equal(ch.kind, 'teams');
    const ref = await ch.post(view({ requestId: 'req-config' }));
    assert.equal(fake.message(ref.activityId)?.channelId, channelId);
    delete process.env.AIRLOCK_TEST_TEAMS_PASSWORD;
    assert.throws(() => TeamsChannel.fromConfig(loaded), /AIRLOCK_TEST_TEAMS_PASSWORD/);
  });

  test('the config refuses a teams block that could not authenticate', () => {
    const bad = (block: string): string => `auth: { signingKey: { env: X } }\nteams:\n${block}`;
    assert.throws(() => parseConfig(bad(`  appId: ''\n`)), /teams\.appId: an app id is required/);
    assert.throws(() => parseConfig(bad(`  appId: abc\n`)), /teams\.appPassword/);
    assert.throws(() => parseConfig(bad(`  appId: abc\n  appPassword: { env: P }\n  appType: SingleTenant\n`)), /teams\.tenantId: a SingleTenant bot needs tenantId/);
    const ok = parseConfig(bad(`  appId: ''\n  insecureSkipAuth: true\n`));
    assert.equal(ok.config.teams?.listen.port, 3978);
    assert.equal(ok.config.teams?.appType, 'MultiTenant');
  });
});

describe('TeamsChannel: certificate credential instead of a client secret', () => {
  const fixtures = new URL('./fixtures/', import.meta.url);
  const certPem = readFileSync(new URL('bot-cert.pem', fixtures), 'utf8');
  const keyPem = readFileSync(new URL('bot-cert-key.pem', fixtures), 'utf8');

  test('the bot signs a client assertion with its certificate key and gets its token with it', async () => {
    const fake = await FakeBotConnector.start({ appId: APP_ID, tenantId: '5a1e0000-0000-4000-8000-00000000beef' });
    try {
      fake.addCertificate(certPem);
      const channelId = fake.addChannel();
      const dir = mkdtempSync(join(tmpdir(), 'airlock-teams-cert-'));
      try {
        writeFileSync(join(dir, 'bot.pem'), certPem);
        writeFileSync(join(dir, 'bot.key'), keyPem);
        const loaded = parseConfig(
          `
auth: { signingKey: { env: AIRLOCK_TEST_SIGNING_KEY } }
teams:
  appId: ${APP_ID}
  appType: SingleTenant
  tenantId: ${fake.tenantId}
  certificate: { cert: bot.pem, key: { file: bot.key } }
  serviceUrl: ${fake.serviceUrl}
  channelId: '${channelId}'
  botFramework: { loginUrl: '${fake.loginUrl(fake.tenantId)}' }
`,
          '<test>',
          dir,
        );
        const ref = await TeamsChannel.fromConfig(loaded).post(view({ requestId: 'req-cert' }));
        assert.equal(fake.message(ref.activityId)?.channelId, channelId);
        assert.deepEqual(fake.tokenRequests, [{ tenant: fake.tenantId, clientId: APP_ID, scope: 'https://api.botframework.com/.default', ok: true, method: 'certificate' }]);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    } finally {
      await fake.stop();
    }
  });

  test('a certificate the app registration does not know gets no token: permanent', async () => {
    const fake = await FakeBotConnector.start({ appId: APP_ID });
    try {
      const channelId = fake.addChannel();
      const ch = new TeamsChannel({ appId: APP_ID, certificate: { certPem, keyPem }, endpoints: fake.endpoints, serviceUrl: fake.serviceUrl, channelId });
      const err = await ch.post(view()).catch((e: unknown) => e);
      assert.ok(err instanceof ChatPermanentError, String(err));
      assert.equal(fake.tokenRequests[0]?.method, 'certificate');
      assert.equal(fake.tokenRequests[0]?.ok, false);
      assert.equal(fake.callsTo('POST').length, 0);
    } finally {
      await fake.stop();
    }
  });

  test('a key that does not match the certificate is refused at construction', () => {
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    assert.throws(() => new TeamsChannel({ appId: APP_ID, certificate: { certPem, keyPem: other }, endpoints: { openIdMetadataUrl: 'http://x/', tokenIssuer: 'x', loginUrl: 'http://x/', oauthScope: 'x' }, serviceUrl: 'http://x/' }), /does not belong to the certificate/);
  });
});
