// The Slack side of decisions: a Bolt app on an HTTP receiver that turns Approve/Reject clicks into
// decisions for the approval workflow. It decides nothing itself: `decide` (the workflow's
// validated Update) says yes or no, and the workflow's activity updates the message, so Slack
// never shows a state the workflow does not have. The clicker gets private (ephemeral) feedback.
//
// Bolt's HTTPReceiver verifies every request's signature (HMAC-SHA256 with the signing secret)
// and refuses unsigned, forged or stale (> 5 minutes) requests with 401 before any handler runs.
//
// Slack app setup: Interactivity on, Request URL `https://<public host>/slack/events` (this
// server, `slack.listen`); bot scopes chat:write (post/update/ephemeral), users:read and
// users:read.email (mapping by email), files:write (session logs); invite the bot to the approval
// and escalation channels; a slash command `/airlock` with the same Request URL (`/airlock
// pending` lists pending requests). Socket Mode is not supported: Slack must reach the request URL.
//
// Every decision is signed with the Slack decision key (decisions.keys.slack.privateKey) after
// Slack's signature was verified, naming the approver and the Slack user id: the worker counts
// only decisions it can verify (workflows/decision-proof.ts).
import type { Server } from 'node:http';
import { App, HTTPReceiver, type BlockButtonAction, type ViewSubmitAction } from '@slack/bolt';
import type { WebClient } from '@slack/web-api';
import type { ApprovalView, Decide, DecisionRequest, DecisionResult, GrantChoice } from '../channel.ts';
import type { DecisionSigner } from '../../workflows/decision-proof.ts';
import type { AirlockConfig } from '../../gateway/config/schema.ts';
import { resolveSecret, type LoadedConfig } from '../../gateway/config/load.ts';
import { log as rootLog, type Logger } from '../../gateway/log.ts';
import { APPROVE_ACTION, APPROVE_GRANT_ACTION, REASON_ACTION, REASON_BLOCK, REJECT_ACTION, REJECT_MODAL, humanDuration, parseGrantValue, pendingList, rejectModal } from './blocks.ts';
import { classifySlackError } from './errors.ts';
import { slackLogger } from './logger.ts';
import type { IdentityRegistry } from '../../gateway/recording/identity-registry.ts';
import type { AuditEvent } from '../../gateway/recording/store.ts';
import { approversFromIdp, auditRefusal, idpApproverByEmail } from '../../workflows/idp-approvers.ts';


export interface SlackAppOptions {
  loaded: LoadedConfig;
  decide: Decide;
  botToken: string;
  signingSecret: string;
  /** Signs every decision with the Slack decision key; required (unsigned decisions never count). */
  signer: DecisionSigner | undefined;
  /** Pending requests for `/airlock pending` (a Temporal visibility query in production). */
  pending?: () => Promise<ApprovalView[]>;
  /** approvers.source oidc: where approvers are looked up (the audit store's identity registry). */
  registry?: IdentityRegistry;
  /** Records clicks refused before a decision could be formed (who, why) in the audit store. */
  audit?: (e: AuditEvent) => void;
  /** Overrides `slack.apiUrl` (tests point it at a fake Slack). */
  apiUrl?: string;
  logger?: Logger;
}

export interface RunningSlackApp {
  /** The port actually bound (config port 0 picks a free one). */
  port: number;
  stop(): Promise<void>;
}

export const SLACK_EVENTS_PATH = '/slack/events';

export const NOT_MAPPED = 'your Slack account is not mapped to an Airlock identity';

export type IdentityLookup = { ok: true; identity: string; groups: string[]; via: 'map' | 'email' } | { ok: false; error: string };

/**
 * Maps a Slack user to an Airlock identity: the explicit `slack.users` map first, else the email on
 * the user's Slack profile (users.info, needs `users:read.email`) matched against `identities[].email`.
 */
export async function resolveSlackIdentity(client: WebClient, config: AirlockConfig, userId: string, registry?: IdentityRegistry): Promise<IdentityLookup> {
  if (approversFromIdp(config)) return resolveSlackIdpIdentity(client, config, userId, registry);
  const groupsOf = (name: string): string[] => config.identities.find((i) => i.name === name)?.groups ?? [];
  const mapped = config.slack?.users[userId];
  if (mapped) return { ok: true, identity: mapped, groups: groupsOf(mapped), via: 'map' };
  let email: string | undefined;
  try {
    const res = await client.users.info({ user: userId });
    if (res.user?.deleted || res.user?.is_bot) return { ok: false, error: `${NOT_MAPPED} (deactivated or bot accounts cannot decide)` };
    email = res.user?.profile?.email;
  } catch (err) {
    return { ok: false, error: `could not look up your Slack profile to map it to an Airlock identity (${classifySlackError(err, 'users.info').message})` };
  }
  const wanted = email?.trim().toLowerCase();
  const match = wanted ? config.identities.find((i) => i.email?.trim().toLowerCase() === wanted) : undefined;
  if (!match) {
    return {
      ok: false,
      error: `${NOT_MAPPED}: ask an admin to add your Slack user id ${userId} to slack.users, or to set the email of your Airlock identity${email ? ` to ${email}` : ''}`,
    };
  }
  return { ok: true, identity: match.name, groups: match.groups, via: 'email' };
}

/**
 * approvers.source oidc: the Slack account's email, confirmed by Slack (`is_email_confirmed`), must
 * be the verified email of a recent IdP sign-in; the groups are that sign-in's. The YAML maps are
 * not consulted: an admin's slack.users entry cannot make someone an approver.
 */
async function resolveSlackIdpIdentity(client: WebClient, config: AirlockConfig, userId: string, registry: IdentityRegistry | undefined): Promise<IdentityLookup> {
  let user: { deleted?: boolean; is_bot?: boolean; is_email_confirmed?: boolean; is_restricted?: boolean; is_ultra_restricted?: boolean; is_stranger?: boolean; profile?: { email?: string } } | undefined;
  try {
    user = (await client.users.info({ user: userId })).user;
  } catch (err) {
    return { ok: false, error: `could not look up your Slack profile to match it with the identity provider (${classifySlackError(err, 'users.info').message})` };
  }
  if (!user || user.deleted || user.is_bot) return { ok: false, error: `${NOT_MAPPED} (deactivated or bot accounts cannot decide)` };
  // Guests and people of other workspaces (Slack Connect) are vouched for by nobody here, as Teams guests.
  if (user.is_restricted || user.is_ultra_restricted || user.is_stranger) return { ok: false, error: `${NOT_MAPPED}: guest and external accounts cannot approve` };
  const email = user.profile?.email?.trim();
  if (!email) return { ok: false, error: `${NOT_MAPPED}: your Slack profile shows no email (the app needs users:read.email) to match with the identity provider` };
  if (user.is_email_confirmed !== true) return { ok: false, error: `${NOT_MAPPED}: Slack has not confirmed the email ${email} of your account; confirm it in Slack first` };
  const who = idpApproverByEmail(config, registry, email);
  if (!who.ok) return { ok: false, error: `${NOT_MAPPED}: ${who.error}` };
  return { ok: true, identity: who.identity, groups: who.groups, via: 'email' };
}

interface ModalMeta {
  requestId: string;
  channel: string;
  ts: string;
}

function parseMeta(s: string): ModalMeta | undefined {
  try {
    const v = JSON.parse(s) as Partial<ModalMeta>;
    if (typeof v.requestId === 'string' && v.requestId && typeof v.channel === 'string' && typeof v.ts === 'string') return { requestId: v.requestId, channel: v.channel, ts: v.ts };
  } catch {
    // fall through: a damaged form is refused below
  }
  return undefined;
}

function successText(d: DecisionRequest, view: ApprovalView): string {
  if (d.decision === 'reject') return `:x: You rejected request \`${d.requestId}\`. The requester is told why.`;
  if (view.status === 'approved') {
    const reuse = view.grant ? ` It stays approved for ${humanDuration(view.grant.forMs)}${view.grant.runs ? ` (at most ${view.grant.runs} runs)` : ''}.` : ' It runs once.';
    return `:white_check_mark: You approved request \`${d.requestId}\`: it is approved and the operation runs now.${reuse}`;
  }
  return `:ballot_box_with_check: Your approval of request \`${d.requestId}\` is recorded (${view.decidedBy.length} of ${view.quorum}); waiting for more approvers.`;
}

/** The bot token and signing secret named by the `slack:` block (env or file references). */
export function resolveSlackSecrets(loaded: LoadedConfig): { botToken: string; signingSecret: string } {
  const s = loaded.config.slack;
  if (!s) throw new Error('slack is not configured (add a `slack:` block to the config)');
  return {
    botToken: resolveSecret(s.botToken, loaded.baseDir, 'slack.botToken'),
    signingSecret: resolveSecret(s.signingSecret, loaded.baseDir, 'slack.signingSecret'),
  };
}

export async function startSlackApp(opts: SlackAppOptions): Promise<RunningSlackApp> {
  const slack = opts.loaded.config.slack;
  if (!slack) throw new Error('slack is not configured (add a `slack:` block to the config)');
  if (!opts.signingSecret) throw new Error('slack.signingSecret is empty: Slack requests cannot be verified');
  const signer = opts.signer;
  if (!signer || signer.source !== 'slack') throw new Error('decisions.keys.slack.privateKey is not configured: the Slack app must sign the decisions it relays');
  const log = (opts.logger ?? rootLog).child({ component: 'slack-app' });
  const logger = slackLogger(log);

  const receiver = new HTTPReceiver({ signingSecret: opts.signingSecret, endpoints: SLACK_EVENTS_PATH, logger });
  const app = new App({
    token: opts.botToken,
    receiver,
    logger,
    deferInitialization: true,
    // Interactive path: the clicker is waiting, so retry briefly and give up quickly.
    clientOptions: {
      slackApiUrl: opts.apiUrl ?? slack.apiUrl,
      retryConfig: { retries: 2, factor: 2, minTimeout: 200, maxTimeout: 1000 },
      rejectRateLimitedCalls: true,
      timeout: 5000,
    },
  });
  // auth.test now, so a wrong bot token stops startup instead of failing the first click.
  try {
    await app.init();
  } catch (err) {
    throw new Error(`slack: the bot token was refused or Slack is unreachable: ${err instanceof Error ? err.message : String(err)}`);
  }

  const tell = async (client: WebClient, channel: string | undefined, user: string, text: string): Promise<void> => {
    if (!channel) {
      log.warn({ user }, 'no channel to send feedback to');
      return;
    }
    try {
      await client.chat.postEphemeral({ channel, user, text });
    } catch (err) {
      log.warn({ err: classifySlackError(err, 'chat.postEphemeral'), user }, 'could not send ephemeral feedback');
    }
  };

  const submit = async (
    client: WebClient,
    userId: string,
    channel: string | undefined,
    requestId: string,
    decision: 'approve' | 'reject',
    reason?: string,
    grant?: GrantChoice,
  ): Promise<void> => {
    const who = await resolveSlackIdentity(client, opts.loaded.config, userId, opts.registry);
    if (!who.ok) {
      log.info({ slackUser: userId, requestId, decision }, 'decision from an unmapped Slack user refused');
      auditRefusal(opts.audit, requestId, `slack:${userId}`, decision, who.error);
      // Still sent (signed, with no approver) so the workflow audits the attempt; it is refused there.
      await opts.decide(signer.sign({ requestId, approver: '', approverGroups: [], decision, reason, via: `slack:${userId}` }, userId)).catch(() => undefined);
      await tell(client, channel, userId, `:no_entry: ${who.error}`);
      return;
    }
    const d: DecisionRequest = signer.sign(
      { requestId, approver: who.identity, approverGroups: who.groups, decision, reason, via: `slack:${userId}`, ...(grant ? { grant } : {}) },
      userId,
    );
    let res: DecisionResult;
    try {
      res = await opts.decide(d);
    } catch (err) {
      // Fail closed: nothing was decided; say so rather than leave the clicker guessing.
      log.error({ err, requestId, approver: who.identity }, 'decision could not be submitted');
      await tell(client, channel, userId, `:warning: Could not record your decision on \`${requestId}\`: ${err instanceof Error ? err.message : String(err)}. Nothing was decided; try again.`);
      return;
    }
    if (!res.ok) {
      log.info({ requestId, approver: who.identity, decision, error: res.error }, 'decision refused');
      await tell(client, channel, userId, `:no_entry: Your ${decision === 'approve' ? 'approval' : 'rejection'} of \`${requestId}\` was not accepted: ${res.error}`);
      return;
    }
    log.info({ requestId, approver: who.identity, decision, status: res.view.status }, 'decision accepted');
    await tell(client, channel, userId, successText(d, res.view));
  };

  app.action<BlockButtonAction>(APPROVE_ACTION, async ({ ack, body, action, client }) => {
    await ack();
    await submit(client, body.user.id, body.channel?.id ?? body.container?.channel_id, action.value ?? '', 'approve');
  });

  app.action<BlockButtonAction>(APPROVE_GRANT_ACTION, async ({ ack, body, action, client }) => {
    await ack();
    const channel = body.channel?.id ?? body.container?.channel_id;
    const g = parseGrantValue(action.value);
    if (!g) {
      await tell(client, channel, body.user.id, ':warning: This button is damaged; nothing was decided. Use Approve once, or ask for a new request.');
      return;
    }
    await submit(client, body.user.id, channel, g.requestId, 'approve', undefined, { forMs: g.forMs });
  });

  // `/airlock pending`: Slack signs slash commands like interactions, so the receiver has verified it.
  app.command('/airlock', async ({ ack, command, client }) => {
    const sub = command.text.trim().toLowerCase();
    if (sub !== 'pending' && sub !== '') {
      await ack({ response_type: 'ephemeral', text: 'Usage: `/airlock pending` lists the approval requests waiting for a decision.' });
      return;
    }
    const who = await resolveSlackIdentity(client, opts.loaded.config, command.user_id, opts.registry);
    if (!who.ok) {
      await ack({ response_type: 'ephemeral', text: `:no_entry: ${who.error}` });
      return;
    }
    if (!opts.pending) {
      await ack({ response_type: 'ephemeral', text: 'Listing pending requests is not available on this Airlock.' });
      return;
    }
    let text: string;
    try {
      text = pendingList(await opts.pending());
    } catch (err) {
      log.warn({ err }, 'could not list pending requests');
      text = `:warning: Could not list pending requests: ${err instanceof Error ? err.message : String(err)}`;
    }
    await ack({ response_type: 'ephemeral', text });
  });

  app.action<BlockButtonAction>(REJECT_ACTION, async ({ ack, body, action, client }) => {
    await ack();
    const channel = body.channel?.id ?? body.container?.channel_id ?? '';
    const ts = body.message?.ts ?? body.container?.message_ts ?? '';
    // The trigger expires 3s after the click: open the form first, map the user on submission.
    try {
      await client.views.open({ trigger_id: body.trigger_id, view: rejectModal(action.value ?? '', channel, ts) });
    } catch (err) {
      const e = classifySlackError(err, 'views.open');
      log.warn({ err: e, requestId: action.value }, 'could not open the rejection form');
      await tell(client, channel, body.user.id, `:warning: Could not open the rejection form (${e.message}); click Reject again.`);
    }
  });

  app.view<ViewSubmitAction>(REJECT_MODAL, async ({ ack, body, view, client }) => {
    const meta = parseMeta(view.private_metadata);
    const reason = view.state.values[REASON_BLOCK]?.[REASON_ACTION]?.value?.trim() ?? '';
    if (!meta) {
      await ack({ response_action: 'errors', errors: { [REASON_BLOCK]: 'This form is damaged; click Reject on the request again.' } });
      return;
    }
    if (!reason) {
      await ack({ response_action: 'errors', errors: { [REASON_BLOCK]: 'Say why you reject it; the requester sees this.' } });
      return;
    }
    await ack();
    await submit(client, body.user.id, meta.channel, meta.requestId, 'reject', reason);
  });

  app.error(async (err) => {
    log.error({ err }, 'slack app error');
  });

  const server = (await app.start({ port: slack.listen.port, host: slack.listen.host })) as Server;
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : slack.listen.port;
  log.info({ host: slack.listen.host, port, path: SLACK_EVENTS_PATH }, 'slack app listening');
  return {
    port,
    stop: async () => {
      await app.stop();
    },
  };
}
