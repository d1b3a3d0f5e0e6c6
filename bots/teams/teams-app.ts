// The Teams side of decisions: a botbuilder bot (CloudAdapter) on `POST /api/messages` that turns
// Approve/Reject clicks into decisions for the approval workflow. It decides nothing itself:
// `decide` (the workflow's validated Update) says yes or no. The clicker's card is answered with
// the new state (or why the click was refused), and the card is rewritten for everyone else.
//
// Every activity's JWT is validated by botbuilder (issuer, audience = app id, signature against
// the channel's OpenID keys, serviceUrl claim) before any handler runs; a missing, forged or
// expired token is answered 401. Only `insecureSkipAuth` (no app id) turns that off, and then
// the listener must be loopback.
//
// Teams app setup: an Azure Bot resource (app id + client secret; MultiTenant or SingleTenant),
// messaging endpoint `https://<public host>/api/messages` (this server, `teams.listen`), the
// Microsoft Teams channel enabled, and a Teams app manifest with the bot in `team` scope;
// install it in the approvals team and the bot records the channel (or set teams.channelId).
//
// Every decision is signed with the Teams decision key (decisions.keys.teams.privateKey) after the
// JWT was validated, naming the approver and the AAD object id: the worker counts only decisions
// it can verify (workflows/decision-proof.ts). Approve is a confirm step on the card (with the
// grant choice when the rule allows reuse); only its Confirm button submits.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import {
  CallerIdConstants,
  CloudAdapter,
  type Activity,
  type InvokeResponse,
  ConfigurationBotFrameworkAuthentication,
  TeamsActivityHandler,
  TeamsInfo,
  type AdaptiveCardInvokeResponse,
  type AdaptiveCardInvokeValue,
  type TurnContext,
} from 'botbuilder';
import { AuthenticationConstants, AuthenticationError } from 'botframework-connector';
import type { ApprovalView, Decide, DecisionRequest, DecisionResult, GrantChoice } from '../channel.ts';
import type { DecisionSigner } from '../../workflows/decision-proof.ts';
import type { AirlockConfig } from '../../gateway/config/schema.ts';
import { configPath, type LoadedConfig } from '../../gateway/config/load.ts';
import { log as rootLog, type Logger } from '../../gateway/log.ts';
import { AirlockCredentialsFactory, BotTokenClient, StrictAuthentication, resolveEndpoints, resolveTeamsCredential, type BotFrameworkEndpoints, type CertificateCredential } from './auth.ts';
import { ADAPTIVE_CARD, GRANT_INPUT, REASON_INPUT, duration, VERB_APPROVE, VERB_REJECT, cardAttachment, renderCard, summaryText, type AdaptiveCard, type CardNotice } from './cards.ts';
import { ConversationReferenceStore } from './references.ts';
import type { IdentityRegistry } from '../../gateway/recording/identity-registry.ts';
import type { AuditEvent } from '../../gateway/recording/store.ts';
import { approversFromIdp, auditRefusal, idpApproverByEmail } from '../../workflows/idp-approvers.ts';


export interface TeamsAppOptions {
  loaded: LoadedConfig;
  decide: Decide;
  /** Signs every decision with the Teams decision key; required (unsigned decisions never count). */
  signer: DecisionSigner | undefined;
  /** Overrides the `teams.appPassword` reference. */
  appPassword?: string;
  /** Overrides the `teams.certificate` references. */
  certificate?: CertificateCredential;
  /** Current state of a request, to show a refused clicker the full card (e.g. a workflow query). */
  lookup?: (requestId: string) => Promise<ApprovalView | undefined>;
  /** approvers.source oidc: where approvers are looked up (the audit store's identity registry). */
  registry?: IdentityRegistry;
  /** Records clicks refused before a decision could be formed (who, why) in the audit store. */
  audit?: (e: AuditEvent) => void;
  /** Overrides `teams.botFramework` endpoints (tests point them at a fake Bot Connector). */
  endpoints?: Partial<BotFrameworkEndpoints>;
  logger?: Logger;
}

export interface RunningTeamsApp {
  /** The port actually bound (config port 0 picks a free one). */
  port: number;
  stop(): Promise<void>;
}

export const TEAMS_MESSAGES_PATH = '/api/messages';
export const NOT_MAPPED = 'your Teams account is not mapped to an Airlock identity';
const MAX_BODY = 1024 * 1024;
/** Teams gives an invoke ~5s before it shows the clicker an error: do not wait longer on the card rewrite. */
const UPDATE_WAIT_MS = 3000;

export type IdentityLookup = { ok: true; identity: string; groups: string[]; via: 'map' | 'email' } | { ok: false; error: string };

export interface Clicker {
  id: string;
  aadObjectId?: string;
  name?: string;
}

/**
 * Maps a Teams user to an Airlock identity: the explicit `teams.users` map (AAD object id or
 * UPN), else the member's email or UPN (TeamsInfo.getMember) matched against `identities[].email`
 * (members of the bot's own tenant only, never guests).
 */
export async function resolveTeamsIdentity(context: TurnContext, config: AirlockConfig, from: Clicker, registry?: IdentityRegistry): Promise<IdentityLookup> {
  if (approversFromIdp(config)) return resolveTeamsIdpIdentity(context, config, from, registry);
  const groupsOf = (name: string): string[] => config.identities.find((i) => i.name === name)?.groups ?? [];
  const users = config.teams?.users ?? {};
  const mapped = (key: string | undefined): string | undefined => {
    if (!key) return undefined;
    const hit = Object.entries(users).find(([k]) => k.toLowerCase() === key.toLowerCase());
    return hit?.[1];
  };
  const direct = mapped(from.aadObjectId);
  if (direct) return { ok: true, identity: direct, groups: groupsOf(direct), via: 'map' };
  let member: { email?: string; userPrincipalName?: string; aadObjectId?: string; userRole?: string; tenantId?: string };
  try {
    member = await TeamsInfo.getMember(context, from.id);
  } catch (err) {
    return { ok: false, error: `could not look up your Teams profile to map it to an Airlock identity (${err instanceof Error ? err.message : String(err)})` };
  }
  const byMap = mapped(member.aadObjectId) ?? mapped(member.userPrincipalName);
  if (byMap) return { ok: true, identity: byMap, groups: groupsOf(byMap), via: 'map' };
  // A guest's email is whatever their home tenant says it is: only the explicit map (by AAD
  // object id, unique across tenants) may turn a guest into an approver.
  if (member.userRole === 'guest') {
    return { ok: false, error: `${NOT_MAPPED}: guest accounts are only accepted through teams.users (ask an admin to add ${from.aadObjectId ?? member.aadObjectId ?? from.id})` };
  }
  const tenant = config.teams?.tenantId;
  if (tenant && member.tenantId && member.tenantId.toLowerCase() !== tenant.toLowerCase()) {
    return { ok: false, error: `${NOT_MAPPED}: your account belongs to another organisation` };
  }
  const wanted = [member.email, member.userPrincipalName].map((s) => s?.trim().toLowerCase()).filter((s): s is string => !!s);
  const match = config.identities.find((i) => i.email && wanted.includes(i.email.trim().toLowerCase()));
  if (!match) {
    const who = member.userPrincipalName ?? member.email ?? from.aadObjectId ?? from.id;
    return { ok: false, error: `${NOT_MAPPED}: ask an admin to add ${who} to teams.users, or to set the email of your Airlock identity` };
  }
  return { ok: true, identity: match.name, groups: match.groups, via: 'email' };
}

/**
 * approvers.source oidc: the member's email (or UPN), as the bot's own tenant's directory reports it
 * (TeamsInfo.getMember; guests never), must be the verified email of a recent IdP sign-in; the
 * groups are that sign-in's. The YAML maps are not consulted.
 */
async function resolveTeamsIdpIdentity(context: TurnContext, config: AirlockConfig, from: Clicker, registry: IdentityRegistry | undefined): Promise<IdentityLookup> {
  let member: { email?: string; userPrincipalName?: string; userRole?: string; tenantId?: string };
  try {
    member = await TeamsInfo.getMember(context, from.id);
  } catch (err) {
    return { ok: false, error: `could not look up your Teams profile to match it with the identity provider (${err instanceof Error ? err.message : String(err)})` };
  }
  if (member.userRole === 'guest') return { ok: false, error: `${NOT_MAPPED}: guest accounts cannot approve` };
  const tenant = config.teams?.tenantId;
  if (!tenant || !member.tenantId || member.tenantId.toLowerCase() !== tenant.toLowerCase()) {
    return { ok: false, error: `${NOT_MAPPED}: only members of the organisation's own tenant (teams.tenantId) can approve` };
  }
  const candidates = [...new Set([member.email, member.userPrincipalName].map((s) => s?.trim().toLowerCase()).filter((s): s is string => !!s))];
  if (candidates.length === 0) return { ok: false, error: `${NOT_MAPPED}: your Teams account shows no email or UPN to match with the identity provider` };
  let first: string | undefined;
  for (const c of candidates) {
    const who = idpApproverByEmail(config, registry, c);
    if (who.ok) return { ok: true, identity: who.identity, groups: who.groups, via: 'email' };
    first ??= who.error;
  }
  return { ok: false, error: `${NOT_MAPPED}: ${first}` };
}

interface ClickOutcome {
  /** What the clicker sees. */
  card: AdaptiveCard;
  ok: boolean;
}

class AirlockBot extends TeamsActivityHandler {
  constructor(
    private readonly opts: TeamsAppOptions,
    private readonly refs: ConversationReferenceStore,
    private readonly log: Logger,
  ) {
    super();
    this.onMessage(async (context, next) => {
      await this.onSubmitFallback(context);
      await next();
    });
  }

  /** Installation: remember the channel (and its regional serviceUrl) for proactive posts. */
  protected override async onConversationUpdateActivity(context: TurnContext): Promise<void> {
    const a = context.activity;
    const botId = a.recipient?.id;
    const cd = (a.channelData ?? {}) as { team?: { id?: string; name?: string }; channel?: { id?: string; name?: string }; tenant?: { id?: string } };
    const tenantId = cd.tenant?.id ?? a.conversation?.tenantId;
    if (botId && a.membersAdded?.some((m) => m.id === botId)) {
      if (!this.tenantAllowed(tenantId)) {
        this.log.warn({ tenantId }, 'bot installed in a foreign tenant: not recorded');
      } else if (cd.team?.id) {
        this.refs.upsert({
          conversationId: cd.channel?.id ?? a.conversation.id,
          serviceUrl: a.serviceUrl,
          tenantId,
          teamId: cd.team.id,
          teamName: cd.team.name,
          channelName: cd.channel?.name,
          installedAt: new Date().toISOString(),
        });
        this.log.info({ team: cd.team.name ?? cd.team.id, channel: cd.channel?.id ?? a.conversation.id }, 'bot installed in a team: channel recorded for approval requests');
      } else {
        this.log.info({ conversation: a.conversation?.id }, 'bot added outside a team: approval requests go to team channels only');
      }
    }
    if (botId && a.membersRemoved?.some((m) => m.id === botId)) {
      const teamId = cd.team?.id;
      for (const ch of this.refs.list().filter((c) => (teamId ? c.teamId === teamId : c.conversationId === a.conversation.id))) this.refs.remove(ch.conversationId);
      this.log.info({ team: teamId }, 'bot removed from a team: its channels forgotten');
    }
    await super.onConversationUpdateActivity(context);
  }

  /** Universal Action (Action.Execute): answer with the card the clicker should now see. */
  protected override async onAdaptiveCardInvoke(context: TurnContext, invokeValue: AdaptiveCardInvokeValue): Promise<AdaptiveCardInvokeResponse> {
    const action = invokeValue.action;
    const data = (action.data ?? {}) as Record<string, unknown>;
    const outcome = await this.click(context, action.verb, data, 'invoke');
    return { statusCode: 200, type: ADAPTIVE_CARD, value: outcome.card as unknown as Record<string, unknown> };
  }

  /** Action.Submit fallback: a message whose `value` carries { verb, requestId, reason }. */
  private async onSubmitFallback(context: TurnContext): Promise<void> {
    const value = context.activity.value as Record<string, unknown> | undefined;
    if (!value || typeof value !== 'object' || typeof value.verb !== 'string' || typeof value.requestId !== 'string') return;
    const outcome = await this.click(context, value.verb, value, 'submit');
    if (outcome.ok) return; // the card itself now shows the decision
    // No private answer exists for a Submit in a channel: tell the clicker in the thread.
    const notice = outcome.card.body.find((b) => b.id === 'notice');
    const from = context.activity.from;
    try {
      await context.sendActivity({
        type: 'message',
        text: `<at>${escapeXml(from.name ?? 'you')}</at> ${escapeXml(String(notice?.text ?? 'your decision was not recorded'))}`,
        textFormat: 'xml',
        entities: [{ type: 'mention', text: `<at>${escapeXml(from.name ?? 'you')}</at>`, mentioned: { id: from.id, name: from.name ?? '' } }],
      });
    } catch (err) {
      this.log.warn({ err }, 'could not tell the clicker why the decision was refused');
    }
  }

  private tenantAllowed(tenantId: string | undefined): boolean {
    const want = this.opts.loaded.config.teams?.tenantId;
    return !want || tenantId?.toLowerCase() === want.toLowerCase();
  }

  private async click(context: TurnContext, verb: string, data: Record<string, unknown>, how: 'invoke' | 'submit'): Promise<ClickOutcome> {
    const a = context.activity;
    const requestId = typeof data.requestId === 'string' ? data.requestId.trim() : '';
    const reasonRaw = data[REASON_INPUT];
    const reason = typeof reasonRaw === 'string' ? reasonRaw.trim() : '';
    const from: Clicker = { id: a.from?.id ?? '', aadObjectId: a.from?.aadObjectId, name: a.from?.name };
    const refuse = async (text: string, tone: CardNotice['tone'] = 'attention'): Promise<ClickOutcome> => ({ card: await this.cardFor(requestId, { text, tone }), ok: false });

    if (!requestId || (verb !== VERB_APPROVE && verb !== VERB_REJECT)) return refuse('This card is damaged (no request id or unknown action); nothing was decided.');
    const decision = verb === VERB_APPROVE ? 'approve' : 'reject';
    const tenantId = (a.channelData as { tenant?: { id?: string } } | undefined)?.tenant?.id ?? a.conversation?.tenantId;
    if (!this.tenantAllowed(tenantId)) {
      this.log.warn({ tenantId, requestId }, 'decision from a foreign tenant refused');
      return refuse('This bot only accepts decisions from its own organisation; nothing was decided.');
    }

    const grantRaw = data[GRANT_INPUT];
    let grant: GrantChoice | undefined;
    if (decision === 'approve' && typeof grantRaw === 'string' && grantRaw !== '' && grantRaw !== 'once') {
      const forMs = Number(grantRaw);
      if (!Number.isInteger(forMs) || forMs <= 0) return refuse('This card is damaged (unknown grant choice); nothing was decided.');
      grant = { forMs };
    }
    const signer = this.opts.signer;
    const channelUser = from.aadObjectId ?? from.id;
    const who = await resolveTeamsIdentity(context, this.opts.loaded.config, from, this.opts.registry);
    if (!who.ok) {
      this.log.info({ teamsUser: channelUser, requestId, decision }, 'decision from an unmapped Teams user refused');
      auditRefusal(this.opts.audit, requestId, `teams:${channelUser}`, decision, who.error);
      // Still sent (signed, with no approver) so the workflow audits the attempt; it is refused there.
      if (signer) await this.opts.decide(signer.sign({ requestId, approver: '', approverGroups: [], decision, via: `teams:${channelUser}` }, channelUser)).catch(() => undefined);
      return refuse(who.error);
    }
    if (!signer) return refuse('This Teams app has no decision key (decisions.keys.teams.privateKey), so it cannot vouch for you; nothing was decided. Tell an Airlock admin.');
    const d: DecisionRequest = signer.sign(
      { requestId, approver: who.identity, approverGroups: who.groups, decision, ...(reason ? { reason: reason.slice(0, 1000) } : {}), ...(grant ? { grant } : {}), via: `teams:${channelUser}` },
      channelUser,
    );
    if (decision === 'reject' && !reason) {
      // Sent anyway (the workflow refuses and audits it); the clicker is told how to fix it.
      await this.opts.decide(d).catch(() => undefined);
      return refuse('Say why you reject it: type a reason in the box, then click Reject. The requester sees it.', 'warning');
    }
    let res: DecisionResult;
    try {
      res = await this.opts.decide(d);
    } catch (err) {
      // Fail closed: nothing was decided; say so rather than leave the clicker guessing.
      this.log.error({ err, requestId, approver: who.identity }, 'decision could not be submitted');
      return refuse(`Could not record your decision: ${err instanceof Error ? err.message : String(err)}. Nothing was decided; try again.`, 'warning');
    }
    if (!res.ok) {
      this.log.info({ requestId, approver: who.identity, decision, error: res.error }, 'decision refused');
      return refuse(`Your ${decision === 'approve' ? 'approval' : 'rejection'} was not accepted: ${res.error}`);
    }
    this.log.info({ requestId, approver: who.identity, decision, status: res.view.status, how }, 'decision accepted');
    await this.rewriteForEveryone(context, res.view);
    const view = res.view;
    const confirmation =
      decision === 'reject'
        ? 'You rejected this request. The requester is told why.'
        : view.status === 'approved'
          ? `You approved this request: the operation runs now${view.grant ? `, and stays approved for ${duration(view.grant.forMs)}` : ' (once)'}.`
          : `Your approval is recorded (${view.decidedBy.length} of ${view.quorum}); waiting for more approvers.`;
    return { card: renderCard(view, { text: confirmation, tone: 'good' }).card, ok: true };
  }

  /** Other viewers see the new state too (the clicker's copy comes from the invoke answer). */
  private async rewriteForEveryone(context: TurnContext, view: ApprovalView): Promise<void> {
    const id = context.activity.replyToId;
    if (!id) {
      this.log.warn({ requestId: view.requestId }, 'click without replyToId: the card is left to the workflow to update');
      return;
    }
    const update = context
      .updateActivity({ id, type: 'message', summary: summaryText(view), attachments: [cardAttachment(renderCard(view).card)] })
      .then(() => true)
      .catch((err: unknown) => {
        // The workflow's own update activity rewrites it too; this one is for immediacy.
        this.log.warn({ err, requestId: view.requestId }, 'could not update the card for other viewers');
        return false;
      });
    const timer = new Promise<false>((r) => setTimeout(() => r(false), UPDATE_WAIT_MS).unref());
    await Promise.race([update, timer]);
  }

  private async cardFor(requestId: string, notice: CardNotice): Promise<AdaptiveCard> {
    let view: ApprovalView | undefined;
    if (requestId && this.opts.lookup) {
      try {
        view = await this.opts.lookup(requestId);
      } catch (err) {
        this.log.warn({ err, requestId }, 'could not look up the request to redraw its card');
      }
    }
    if (view) return renderCard(view, notice).card;
    // Without the request's state, a small card that says what happened; the channel's copy is unchanged.
    return {
      type: 'AdaptiveCard',
      $schema: 'http://adaptivecards.io/schemas/adaptive-card.json',
      version: '1.5',
      body: [
        { type: 'TextBlock', text: requestId ? `Request ${requestId}` : 'Airlock approval', size: 'Large', weight: 'Bolder', wrap: true },
        { type: 'TextBlock', id: 'notice', text: notice.text, color: notice.tone === 'warning' ? 'Warning' : 'Attention', weight: 'Bolder', wrap: true },
        { type: 'TextBlock', text: 'Nothing changed on the request; reopen the conversation to see its current state.', isSubtle: true, wrap: true },
      ],
    };
  }
}

/** CloudAdapter with authentication done up front, so a refused token is a clean 401 (no console dump). */
class AirlockAdapter extends CloudAdapter {
  async handle(authHeader: string, activity: Activity, logic: (context: TurnContext) => Promise<void>): Promise<InvokeResponse | undefined> {
    const authenticated = await this.botFrameworkAuthentication.authenticateRequest(activity, authHeader);
    return this.processActivity(authenticated, activity, logic);
  }
}

/** What botbuilder's request validation does to incoming timestamps. */
function fixDates(a: Activity): void {
  const raw = a as unknown as Record<string, unknown>;
  for (const [k, rawKey] of [
    ['timestamp', 'rawTimestamp'],
    ['expiration', 'rawExpiration'],
    ['localTimestamp', 'rawLocalTimestamp'],
  ] as const) {
    if (typeof raw[k] === 'string') {
      raw[rawKey] = raw[k];
      raw[k] = new Date(raw[k] as string);
    }
  }
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

export async function startTeamsApp(opts: TeamsAppOptions): Promise<RunningTeamsApp> {
  const t = opts.loaded.config.teams;
  if (!t) throw new Error('teams is not configured (add a `teams:` block to the config)');
  const log = (opts.logger ?? rootLog).child({ component: 'teams-app' });
  if (!opts.signer || opts.signer.source !== 'teams') throw new Error('decisions.keys.teams.privateKey is not configured: the Teams app must sign the decisions it relays');
  if (!t.appId) {
    if (!t.insecureSkipAuth) throw new Error('teams.appId is empty: incoming activities could not be authenticated');
    if (!isLoopback(t.listen.host)) throw new Error(`teams.insecureSkipAuth: refusing to listen on ${t.listen.host} without authentication (loopback only)`);
    log.warn('teams: authentication is OFF (insecureSkipAuth); anyone who can reach the listener can decide');
  }
  const credential = opts.appPassword || opts.certificate ? { appPassword: opts.appPassword, certificate: opts.certificate } : resolveTeamsCredential(opts.loaded);
  if (t.appId && !credential.appPassword && !credential.certificate) throw new Error('teams.appPassword (or teams.certificate) is required when teams.appId is set');
  const ep: BotFrameworkEndpoints = { ...resolveEndpoints(t), ...opts.endpoints };
  const tokens = t.appId ? new BotTokenClient({ appId: t.appId, ...credential, loginUrl: ep.loginUrl, oauthScope: ep.oauthScope, timeoutMs: 5000 }) : undefined;

  const auth = new StrictAuthentication(
    new ConfigurationBotFrameworkAuthentication(
      {
        MicrosoftAppId: t.appId,
        MicrosoftAppTenantId: t.tenantId,
        ValidateAuthority: true,
        ToBotFromChannelOpenIdMetadataUrl: ep.openIdMetadataUrl,
        ToBotFromChannelTokenIssuer: ep.tokenIssuer,
        ToChannelFromBotLoginUrl: ep.loginUrl,
        ToChannelFromBotOAuthScope: ep.oauthScope,
        ToBotFromEmulatorOpenIdMetadataUrl: AuthenticationConstants.ToBotFromEmulatorOpenIdMetadataUrl,
        OAuthUrl: AuthenticationConstants.OAuthUrl,
        CallerId: CallerIdConstants.PublicAzureChannel,
      },
      new AirlockCredentialsFactory(t.appId, tokens),
    ),
  );
  const adapter = new AirlockAdapter(auth);
  adapter.onTurnError = async (context, err) => {
    log.error({ err, activity: context.activity?.type, name: context.activity?.name }, 'teams turn failed');
  };
  const refs = new ConversationReferenceStore(configPath(opts.loaded, t.referenceStore));
  const bot = new AirlockBot(opts, refs, log);

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err }, 'teams request failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0];
    if (path !== TEAMS_MESSAGES_PATH) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { allow: 'POST', 'content-type': 'text/plain' }).end('method not allowed');
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > MAX_BODY) {
        res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end('activity too large');
        req.destroy();
        return;
      }
      chunks.push(c as Buffer);
    }
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('the body is not JSON');
      return;
    }
    const activity = body as Activity;
    if (typeof activity !== 'object' || activity === null || Array.isArray(activity) || typeof activity.type !== 'string') {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('not an activity (no type)');
      return;
    }
    fixDates(activity);
    const header = req.headers.authorization ?? '';
    let answer: InvokeResponse | undefined;
    try {
      answer = await adapter.handle(header, activity, (context) => bot.run(context));
    } catch (err) {
      if (err instanceof AuthenticationError) {
        // Logged without the token; an unauthenticated probe is not worth a stack trace.
        log.warn({ from: req.socket.remoteAddress, type: activity.type, reason: err.message }, 'teams activity refused: missing or invalid token');
        res.writeHead(401, { 'content-type': 'text/plain' }).end('unauthorized');
        return;
      }
      throw err;
    }
    if (answer?.body === undefined) {
      res.writeHead(answer?.status ?? 200).end();
    } else {
      res.writeHead(answer.status, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(answer.body));
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(t.listen.port, t.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : t.listen.port;
  log.info({ host: t.listen.host, port, path: TEAMS_MESSAGES_PATH, auth: t.appId ? 'jwt' : 'none' }, 'teams app listening');
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
