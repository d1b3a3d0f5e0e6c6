// Approvers in Slack and Teams are the identities of the company's IdP (approvers.source: oidc):
// people sign in with `airlock login` against a REAL OpenID provider (oidc-provider, with group
// claims), the token exchange records them in the audit store's identity registry, and a chat
// click counts only when the chat account's verified email matches a recent sign-in, with the
// groups that sign-in carried. Slack clicks go through the real Bolt app (signed requests to a
// fake Slack Web API), a real Temporal dev server and the real approval worker; Teams clicks go
// through the real bot against the fake Bot Connector (JWT-signed activities).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { parseConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { AuthEndpoints } from '../../gateway/auth/endpoints.ts';
import { AuthStateStore } from '../../gateway/auth/revocation.ts';
import { generateSigningKey } from '../../gateway/auth/keys.ts';
import { login } from '../../gateway/auth/login.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { startSlackApp, type RunningSlackApp } from '../../bots/slack/slack-app.ts';
import { SlackChannel } from '../../bots/slack/slack-channel.ts';
import { startTeamsApp, type RunningTeamsApp } from '../../bots/teams/teams-app.ts';
import { TeamsChannel } from '../../bots/teams/teams-channel.ts';
import { createActivities } from '../../workflows/activities.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { signerFromConfig, verificationKeys } from '../../workflows/decision-proof.ts';
import { startApproval } from '../../workflows/start.ts';
import { runWorker, type RunningWorker } from '../../workflows/worker.ts';
import { stateQuery } from '../../workflows/definitions.ts';
import { approvalInput, eventually } from '../workflows/harness.ts';
import { MemoryApprovals } from '../support/memory-approvals.ts';
import { FakeSlack, blockActionPayload, postInteraction, type FakeSlackCall } from '../support/fake-slack.ts';
import { FakeBotConnector, cardText, type FakeTeamsUser } from '../support/fake-bot-connector.ts';
import { browse, startIdp, type TestIdp } from '../support/oidc-idp.ts';
import { startTemporal, type TestTemporal } from '../support/temporal.ts';

const SECRET = 'test-signing-secret-idp-3f1a';
const TEAMS_APP_ID = '5d0c4e57-1f7a-4d4e-9b2a-0c3e6f7a8b91';
const TEAMS_PASSWORD = 'teams-idp-secret~1';

const dir = mkdtempSync(join(tmpdir(), 'airlock-idp-approvers-'));
let idp: TestIdp;
let state: AuthStateStore;
let store: SqliteStore;
let airlock: http.Server;
let airlockUrl: string;
let slack: FakeSlack;
let fakeTeams: FakeBotConnector;
let temporal: TestTemporal;
let worker: RunningWorker;
let loaded: LoadedConfig;
let slackApp: RunningSlackApp;
let channelId: string;
const taskQueue = `airlock-idp-${randomUUID()}`;

function yaml(opts: { maxAge: string; teams?: string }): string {
  return `
auth:
  keys: [{ id: a1, privateKey: { file: airlock.pem } }]
  exchange:
    issuers:
      - { name: corp, issuer: "${idp.issuer}", jwksUrl: "${idp.issuer}/jwks", audience: airlock-cli, kind: human, replay: allow, algorithms: [RS256], usernameClaim: sub }
approvers: { source: oidc, maxAge: ${opts.maxAge} }
store: { sqlite: airlock.db }
decisions: { keys: { slack: { privateKey: { file: slack-decision.key } }, teams: { privateKey: { file: teams-decision.key } } } }
temporal: { address: "${temporal.address}", namespace: default, taskQueue: ${taskQueue} }
identities:
  # The YAML says dave is bob, a DBA: with approvers.source oidc it is not consulted.
  - { name: bob, groups: [dba], email: dave@example.com }
slack:
  botToken: { env: AIRLOCK_TEST_IDP_SLACK_TOKEN }
  signingSecret: { env: AIRLOCK_TEST_IDP_SLACK_SECRET }
  channel: '#db-approvals'
  listen: { host: 127.0.0.1, port: 0 }
  users: { U0DAVE: bob }
${opts.teams ?? ''}`;
}

/** `airlock login` as the person would run it, the IdP's pages walked by an HTTP client. */
async function signIn(account: string): Promise<void> {
  let driven: Promise<unknown> | undefined;
  await login({
    issuer: idp.issuer,
    clientId: 'airlock-cli',
    airlockUrl,
    scopes: 'openid email groups',
    device: false,
    prompt: () => undefined,
    onAuthorizationUrl: (u) => void (driven = browse(u, { login: account, password: 'any' })),
  });
  await driven;
}

before(async () => {
  process.env.XDG_CONFIG_HOME = join(dir, 'xdg');
  idp = await startIdp(
    {
      alice: { email: 'Alice@Example.com', email_verified: true, groups: ['dba'] },
      dave: { email: 'dave@example.com', email_verified: true, groups: ['dev'] },
      mallory: { email: 'mallory@example.com', email_verified: false, groups: ['dba'] },
    },
    [{ client_id: 'airlock-cli', application_type: 'native', token_endpoint_auth_method: 'none', redirect_uris: ['http://127.0.0.1/callback'] }],
  );
  writeFileSync(join(dir, 'airlock.pem'), generateSigningKey('ES256').privateKey);
  for (const s of ['slack', 'teams']) writeFileSync(join(dir, `${s}-decision.key`), generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
  slack = await FakeSlack.start();
  channelId = slack.addChannel('db-approvals');
  slack.addUser('U0ALICE', { email: 'alice@example.com' });
  slack.addUser('U0DAVE', { email: 'dave@example.com' });
  slack.addUser('U0MALLORY', { email: 'mallory@example.com' });
  slack.addUser('U0NOBODY', { email: 'nobody@example.com' });
  // Claims alice's address, but Slack never confirmed it.
  slack.addUser('U0EVE', { email: 'alice@example.com', emailConfirmed: false });
  // A guest account with alice's (confirmed) address.
  slack.addUser('U0GUEST', { email: 'alice@example.com', guest: true });
  process.env.AIRLOCK_TEST_IDP_SLACK_TOKEN = slack.token;
  process.env.AIRLOCK_TEST_IDP_SLACK_SECRET = SECRET;
  fakeTeams = await FakeBotConnector.start({ appId: TEAMS_APP_ID, appPassword: TEAMS_PASSWORD });
  temporal = await startTemporal();
  loaded = parseConfig(yaml({ maxAge: '1h' }), join(dir, 'airlock.yaml'), dir);

  store = SqliteStore.open(join(dir, 'airlock.db'));
  state = AuthStateStore.open(join(dir, 'auth.db'));
  const endpoints = new AuthEndpoints(loaded, state, undefined, store);
  airlock = http.createServer((req, res) => void endpoints.handle(req, res).then((done) => done || res.writeHead(404).end()));
  await new Promise<void>((r) => airlock.listen(0, '127.0.0.1', r));
  airlockUrl = `http://127.0.0.1:${(airlock.address() as AddressInfo).port}`;

  worker = await runWorker({ loaded, store, channels: [SlackChannel.fromConfig(loaded, { apiUrl: slack.apiUrl })], connection: temporal.native });
  slackApp = await startSlackApp({
    loaded,
    decide: (d) => submitDecision(temporal.client, store, d),
    signer: signerFromConfig(loaded, 'slack'),
    registry: store,
    audit: (e) => store.recordAudit(e),
    botToken: slack.token,
    signingSecret: SECRET,
    apiUrl: slack.apiUrl,
  });
});

after(async () => {
  await slackApp?.stop();
  await worker?.shutdown();
  await temporal?.stop();
  await slack?.stop();
  await fakeTeams?.stop();
  airlock?.closeAllConnections();
  airlock?.close();
  await idp?.close();
  state?.close();
  store?.close();
  delete process.env.AIRLOCK_TEST_IDP_SLACK_TOKEN;
  delete process.env.AIRLOCK_TEST_IDP_SLACK_SECRET;
  rmSync(dir, { recursive: true, force: true });
});

describe('Slack: clicks through the real worker, approvers from the IdP', () => {
  /** A pending request (requested by someone else), posted to Slack by the worker. */
  async function request(): Promise<{ requestId: string; ts: string }> {
    const input = approvalInput({ identity: 'requester' });
    await startApproval(temporal.client, taskQueue, input);
    const msg = await eventually(() => slack.messagesIn(channelId).find((m) => JSON.stringify(m.blocks ?? m.text).includes(input.requestId)), 30_000, 'the request posted to Slack');
    return { requestId: input.requestId, ts: msg.ts };
  }

  async function click(user: string, r: { requestId: string; ts: string }): Promise<string> {
    const mark = slack.calls.length;
    const eph = slack.waitForCall((c: FakeSlackCall) => c.method === 'chat.postEphemeral' && c.params.user === user && slack.calls.indexOf(c) >= mark, 20_000);
    const res = await postInteraction(`http://127.0.0.1:${slackApp.port}/slack/events`, SECRET, blockActionPayload({ userId: user, channelId, messageTs: r.ts, actionId: 'airlock_approve', value: r.requestId }).payload);
    assert.equal(res.status, 200);
    return String((await eph).params.text);
  }

  const refusals = (requestId: string) => store.listAudit(requestId).filter((e) => e.kind === 'approval.decision-refused');
  const status = async (requestId: string) => (await temporal.client.workflow.getHandle(requestId).query(stateQuery)).status;

  test('signing in records the IdP identity: verified email, the group claim, when the IdP vouched', async () => {
    await signIn('alice');
    await signIn('dave');
    await signIn('mallory');
    const [alice] = store.findIdpIdentities({ email: 'ALICE@example.com' });
    assert.deepEqual({ identity: alice.identity, email: alice.email, emailVerified: alice.emailVerified, groups: alice.groups, issuer: alice.issuer, via: alice.via }, { identity: 'alice', email: 'alice@example.com', emailVerified: true, groups: ['dba'], issuer: idp.issuer, via: 'login' });
    assert.ok(Date.now() - alice.verifiedAt.getTime() < 60_000);
    assert.equal(store.findIdpIdentities({ identity: 'mallory' })[0].emailVerified, false);
  });

  test("a user whose IdP groups lack the approver group is refused (the YAML mapping to a DBA does not count), told why, and audited", async () => {
    const r = await request();
    const text = await click('U0DAVE', r);
    assert.match(text, /not accepted: dave is not in an approver group for this request \(needs one of: dba; dave is in: dev\)/);
    const refused = await eventually(() => refusals(r.requestId).find((e) => e.actor === 'dave'), 10_000, 'the refusal in the audit store');
    assert.match(String(refused.detail.error), /not in an approver group/);
    assert.equal(await status(r.requestId), 'pending');

    // A user in the group approves, as the IdP identity with the IdP's groups.
    const ok = await click('U0ALICE', r);
    assert.match(ok, /You approved request/);
    assert.equal(await status(r.requestId), 'approved');
    const accepted = store.listAudit(r.requestId).find((e) => e.kind === 'approval.decision');
    assert.equal(accepted?.actor, 'alice');
  });

  test('an unknown email, an email Slack has not confirmed, an email the IdP has not verified, and a guest account are refused, told why, and audited', async () => {
    const r = await request();
    assert.match(await click('U0NOBODY', r), /not mapped to an Airlock identity: no sign-in at the identity provider is known for nobody@example\.com/);
    assert.match(await click('U0EVE', r), /Slack has not confirmed the email alice@example\.com/);
    assert.match(await click('U0MALLORY', r), /identity provider has not verified the email of mallory@example\.com/);
    assert.match(await click('U0GUEST', r), /guest and external accounts cannot approve/);
    const byUs = await eventually(() => {
      const rs = refusals(r.requestId).filter((e) => e.detail.stage === 'approver-identity');
      return rs.length === 4 && rs;
    }, 10_000, 'four identity refusals in the audit store');
    assert.deepEqual(byUs.map((e) => e.actor).sort(), ['unverified:slack:U0EVE', 'unverified:slack:U0GUEST', 'unverified:slack:U0MALLORY', 'unverified:slack:U0NOBODY']);
    assert.match(String(byUs.find((e) => e.actor === 'unverified:slack:U0EVE')?.detail.error), /not confirmed/);
    assert.equal(await status(r.requestId), 'pending');
  });

  test('a stale registry entry (older than approvers.maxAge) is refused, in the chat app and again in the worker', async () => {
    const staleLoaded = parseConfig(yaml({ maxAge: '1ms' }), join(dir, 'airlock.yaml'), dir);
    const app = await startSlackApp({ loaded: staleLoaded, decide: (d) => submitDecision(temporal.client, store, d), signer: signerFromConfig(staleLoaded, 'slack'), registry: store, audit: (e) => store.recordAudit(e), botToken: slack.token, signingSecret: SECRET, apiUrl: slack.apiUrl });
    try {
      const r = await request();
      const mark = slack.calls.length;
      const eph = slack.waitForCall((c) => c.method === 'chat.postEphemeral' && c.params.user === 'U0ALICE' && slack.calls.indexOf(c) >= mark, 20_000);
      await postInteraction(`http://127.0.0.1:${app.port}/slack/events`, SECRET, blockActionPayload({ userId: 'U0ALICE', channelId, messageTs: r.ts, actionId: 'airlock_approve', value: r.requestId }).payload);
      assert.match(String((await eph).params.text), /last sign-in of alice@example\.com at the identity provider \(.+\) is older than approvers\.maxAge \(1ms\): sign in again/);
      assert.ok(refusals(r.requestId).some((e) => e.actor === 'unverified:slack:U0ALICE' && /older than approvers\.maxAge/.test(String(e.detail.error))));
      assert.equal(await status(r.requestId), 'pending');
    } finally {
      await app.stop();
    }
    // The worker does not take the chat app's word for it: a decision signed for alice is refused too.
    const acts = createActivities({ channels: [], store, decisions: { config: staleLoaded.config, keys: verificationKeys(staleLoaded), maxAgeMs: 60_000 } });
    const d = signerFromConfig(staleLoaded, 'slack')!.sign({ requestId: 'r-stale', approver: 'alice', approverGroups: ['dba'], decision: 'approve', via: 'slack:U0ALICE' }, 'U0ALICE');
    const v = await acts.verifyDecision('r-stale', d, 0);
    assert.equal(v.ok, false);
    assert.match(!v.ok ? v.error : '', /older than approvers\.maxAge/);
    // With the configured max age the same decision resolves to the IdP's groups, not the claimed ones.
    const fresh = createActivities({ channels: [], store, decisions: { config: loaded.config, keys: verificationKeys(loaded), maxAgeMs: 60_000 } });
    const claimsMore = signerFromConfig(loaded, 'slack')!.sign({ requestId: 'r-fresh', approver: 'dave', approverGroups: ['dba'], decision: 'approve', via: 'slack:U0DAVE' }, 'U0DAVE');
    const dv = await fresh.verifyDecision('r-fresh', claimsMore, 0);
    assert.deepEqual(dv.ok && dv.groups, ['dev']);
  });
});

describe('Teams: the member\'s email from the Bot Connector must match a recent IdP sign-in', () => {
  let app: RunningTeamsApp;
  let teamsLoaded: LoadedConfig;
  let url: string;
  let poster: TeamsChannel;
  const approvals = new MemoryApprovals();
  let alice: FakeTeamsUser;
  let dave: FakeTeamsUser;
  let nobody: FakeTeamsUser;

  before(async () => {
    const teamsChannel = fakeTeams.addChannel();
    alice = fakeTeams.addUser({ name: 'Alice', email: 'alice@example.com', userPrincipalName: 'alice@corp.example.com' });
    dave = fakeTeams.addUser({ name: 'Dave', email: 'dave@example.com', userPrincipalName: 'dave@corp.example.com' });
    nobody = fakeTeams.addUser({ name: 'Nobody', userPrincipalName: 'nobody@corp.example.com' });
    process.env.AIRLOCK_TEST_IDP_TEAMS_PASSWORD = TEAMS_PASSWORD;
    teamsLoaded = parseConfig(
      yaml({
        maxAge: '1h',
        teams: `teams:
  appId: ${TEAMS_APP_ID}
  appPassword: { env: AIRLOCK_TEST_IDP_TEAMS_PASSWORD }
  tenantId: ${fakeTeams.tenantId}
  serviceUrl: ${fakeTeams.serviceUrl}
  channelId: '${teamsChannel}'
  referenceStore: teams-refs.json
  listen: { host: 127.0.0.1, port: 0 }
  botFramework:
    openIdMetadataUrl: '${fakeTeams.openIdMetadataUrl}'
    loginUrl: '${fakeTeams.loginUrl()}'
`,
      }),
      join(dir, 'airlock.yaml'),
      dir,
    );
    app = await startTeamsApp({ loaded: teamsLoaded, decide: approvals.decide, signer: signerFromConfig(teamsLoaded, 'teams'), lookup: approvals.lookup, registry: store, audit: (e) => store.recordAudit(e) });
    url = `http://127.0.0.1:${app.port}/api/messages`;
    poster = TeamsChannel.fromConfig(teamsLoaded);
  });
  after(async () => {
    await app?.stop();
    delete process.env.AIRLOCK_TEST_IDP_TEAMS_PASSWORD;
  });

  async function clickCard(requestId: string, user: FakeTeamsUser): Promise<string> {
    const ref = await poster.post(approvals.requests.get(requestId) ?? approvals.add({ requestId, identity: 'requester' }));
    const activity = fakeTeams.invokeActivity({ conversationId: ref.conversationId, replyToId: ref.activityId, user, verb: 'approve', data: { requestId } });
    const res = await fakeTeams.deliver(url, activity);
    assert.equal(res.status, 200);
    return cardText((res.body as { value: Parameters<typeof cardText>[0] }).value);
  }

  test('a member outside the approver group (per the IdP) is refused; an unknown one is refused and audited; a member in the group approves', async () => {
    approvals.add({ requestId: 't-1', identity: 'requester' });
    assert.match(await clickCard('t-1', dave), /dave is not in an approver group for this request \(needs one of: dba; dave is in: dev\)/);
    assert.deepEqual(approvals.attempts.at(-1)?.approverGroups, ['dev']);
    assert.match(await clickCard('t-1', nobody), /no sign-in at the identity provider is known for nobody@corp\.example\.com/);
    assert.ok(store.listAudit('t-1').some((e) => e.kind === 'approval.decision-refused' && e.actor === `unverified:teams:${nobody.aadObjectId}`));
    assert.match(await clickCard('t-1', alice), /You approved this request/);
    assert.equal(approvals.requests.get('t-1')?.status, 'approved');
    assert.equal(approvals.attempts.at(-1)?.approver, 'alice');
  });
});
