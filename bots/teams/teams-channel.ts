// Microsoft Teams as an approval channel: the approval workflow's activities call this to post
// the request as a proactive Adaptive Card in a team channel (a new thread), keep the card in step
// with the workflow's state, escalate with @mentions, and report into the thread.
//
// One HTTP attempt per call (see connector.ts): Temporal's activity retry policy does the backoff,
// bounded by the approval deadline, after which the operation is rejected (fail closed). Every
// failure is thrown as ChatRetryableError or ChatPermanentError (see errors.ts).
//
// MessageRef: { conversationId: the thread (`19:…@thread.tacv2;messageid=<root>`), activityId:
// the card's message id, serviceUrl: the Bot Connector that owns it }.
import type { ApprovalChannel, ApprovalView, EscalationNotice, MessageRef } from '../channel.ts';
import type { AirlockConfig } from '../../gateway/config/schema.ts';
import { configPath, type LoadedConfig } from '../../gateway/config/load.ts';
import { log as rootLog, type Logger } from '../../gateway/log.ts';
import { BotTokenClient, resolveEndpoints, resolveTeamsCredential, type BotFrameworkEndpoints, type CertificateCredential } from './auth.ts';
import { cardAttachment, chunkText, escapeHtml, renderCard, safeCut, summaryText } from './cards.ts';
import { BotConnector, } from './connector.ts';
import { ChatPermanentError, classifyTeamsError } from './errors.ts';
import { ConversationReferenceStore, channelOf, type InstalledChannel } from './references.ts';

export { ChatPermanentError, ChatRetryableError, classifyTeamsError } from './errors.ts';

export interface TeamsChannelOptions {
  /** Empty: the bot runs without auth (no token on outgoing calls). */
  appId: string;
  appPassword?: string;
  /** Instead of appPassword. */
  certificate?: CertificateCredential;
  tenantId?: string;
  endpoints: BotFrameworkEndpoints;
  /** Bot Connector used when the installation store does not know the channel. */
  serviceUrl: string;
  /** Channel for requests; default: the channel the bot was most recently installed in. */
  channelId?: string;
  /** Channel for escalations when a step names none; default: the request's own thread. */
  escalationChannelId?: string;
  /** Installation references written by the bot app (JSON file). */
  referenceStore?: string;
  /** Session log link: `${sessionUrlBase}/${sessionId}`. */
  sessionUrlBase?: string;
  /** `teams.users` (AAD object id or UPN -> identity), to @mention people on escalation. */
  users?: Record<string, string>;
  identities?: AirlockConfig['identities'];
  /** Per HTTP request; default 10s. */
  timeoutMs?: number;
  logger?: Logger;
}

/** Full statement replies; past this many the thread gets a pointer to the session instead. */
const MAX_TEXT_REPLIES = 4;
/** Teams refuses messages over ~28 KB; escaped HTML grows, so keep pieces well under. */
const REPLY_CHUNK = 12_000;
/** Inline session transcript: head and tail kept, middle elided. */
const TRANSCRIPT_MAX = 16_000;

interface Target {
  channelId: string;
  serviceUrl: string;
  tenantId?: string;
}

export class TeamsChannel implements ApprovalChannel {
  readonly kind = 'teams';
  private readonly connector: BotConnector;
  private readonly log: Logger;
  private readonly refs?: ConversationReferenceStore;

  constructor(private readonly opts: TeamsChannelOptions) {
    this.log = (opts.logger ?? rootLog).child({ component: 'teams' });
    const tokens =
      opts.appId && (opts.appPassword || opts.certificate)
        ? new BotTokenClient({ appId: opts.appId, appPassword: opts.appPassword, certificate: opts.certificate, loginUrl: opts.endpoints.loginUrl, oauthScope: opts.endpoints.oauthScope, timeoutMs: opts.timeoutMs })
        : undefined;
    if (opts.appId && !tokens) throw new Error('teams: an app id without an app password or certificate cannot call the Bot Connector');
    this.connector = new BotConnector({ tokens, timeoutMs: opts.timeoutMs });
    this.refs = opts.referenceStore ? new ConversationReferenceStore(opts.referenceStore) : undefined;
  }

  /** Builds the channel from the `teams:` config block, resolving the app password (or certificate) references. */
  static fromConfig(loaded: LoadedConfig, overrides: Partial<TeamsChannelOptions> = {}): TeamsChannel {
    const t = loaded.config.teams;
    if (!t) throw new Error('teams is not configured (add a `teams:` block to the config)');
    return new TeamsChannel({
      appId: t.appId,
      ...resolveTeamsCredential(loaded),
      tenantId: t.tenantId,
      endpoints: resolveEndpoints(t),
      serviceUrl: t.serviceUrl,
      channelId: t.channelId,
      escalationChannelId: t.escalationChannelId,
      referenceStore: configPath(loaded, t.referenceStore),
      sessionUrlBase: t.sessionUrlBase,
      users: t.users,
      identities: loaded.config.identities,
      ...overrides,
    });
  }

  async post(view: ApprovalView): Promise<MessageRef> {
    const target = this.target(this.opts.channelId, 'requests');
    const { card, truncated } = renderCard(view);
    const res = await this.connector.createConversation(
      target.serviceUrl,
      {
        isGroup: true,
        channelData: { channel: { id: target.channelId }, ...(target.tenantId ? { tenant: { id: target.tenantId } } : {}) },
        activity: { type: 'message', summary: summaryText(view), attachments: [cardAttachment(card)] },
        ...(target.tenantId ? { tenantId: target.tenantId } : {}),
        ...(this.opts.appId ? { bot: { id: `28:${this.opts.appId}` } } : {}),
      },
      `posting request ${view.requestId} to Teams channel ${target.channelId}`,
    );
    // Teams answers { id: "<channel>;messageid=<root>", activityId: "<root>" }.
    const activityId = res.activityId ?? /;messageid=(.+)$/.exec(res.id ?? '')?.[1];
    if (!res.id || !activityId) throw new ChatPermanentError(`posting request ${view.requestId}: Teams returned no conversation/activity id`, 'invalid_response');
    const conversationId = res.id.includes(';messageid=') ? res.id : `${res.id};messageid=${activityId}`;
    const ref: MessageRef = { conversationId, activityId, serviceUrl: target.serviceUrl };
    if (truncated) {
      // The card is visible now; failing here would post it twice on retry. The card says the
      // text is truncated, so a missing thread is noticed, not approved blind.
      try {
        await this.postFullText(ref, view);
      } catch (err) {
        this.log.warn({ err, requestId: view.requestId }, 'could not post the full statement into the approval thread');
      }
    }
    return ref;
  }

  async update(ref: MessageRef, view: ApprovalView): Promise<void> {
    const r = checkRef(ref);
    const { card } = renderCard(view);
    await this.connector.updateActivity(r.serviceUrl, r.conversationId, r.activityId, { type: 'message', summary: summaryText(view), attachments: [cardAttachment(card)] }, `updating request ${view.requestId}`);
  }

  async escalate(ref: MessageRef, view: ApprovalView, step: EscalationNotice): Promise<void> {
    const r = checkRef(ref);
    // The card first (idempotent under retries), then the notification. A card that can no
    // longer be edited (message deleted) must not stop the escalation itself.
    try {
      await this.update(ref, { ...view, escalated: true });
    } catch (err) {
      if (!(err instanceof ChatPermanentError)) throw err;
      this.log.warn({ code: err.code, requestId: view.requestId }, 'escalating without updating the request card');
    }
    const { html, entities } = this.mentions(step.mention);
    const summary = `${escapeHtml(view.identity)} on ${escapeHtml(view.connection)}, rule ${escapeHtml(view.rule)}`;
    const deadline = escapeHtml(utc(view.deadline));
    const requested = step.channel && /^19:/.test(step.channel) ? step.channel : undefined;
    const elsewhere = requested ?? this.opts.escalationChannelId;
    const here = channelOf(r.conversationId);
    if (!elsewhere || channelOf(elsewhere) === here) {
      await this.connector.sendToConversation(
        r.serviceUrl,
        r.conversationId,
        { type: 'message', textFormat: 'xml', text: `🚨 ${html} approval request <b>${escapeHtml(view.requestId)}</b> (${summary}) is still waiting; it expires ${deadline}.`, entities },
        `escalating request ${view.requestId}`,
      );
      return;
    }
    const target = this.target(elsewhere, 'escalations');
    const posted = await this.connector.createConversation(
      target.serviceUrl,
      {
        isGroup: true,
        channelData: { channel: { id: target.channelId }, ...(target.tenantId ? { tenant: { id: target.tenantId } } : {}) },
        activity: { type: 'message', textFormat: 'xml', text: `🚨 ${html} approval request <b>${escapeHtml(view.requestId)}</b> (${summary}) has had no decision; it expires ${deadline}. The card is in the approvals channel.`, entities },
        ...(target.tenantId ? { tenantId: target.tenantId } : {}),
      },
      `escalating request ${view.requestId} to ${target.channelId}`,
    );
    try {
      await this.connector.sendToConversation(r.serviceUrl, r.conversationId, { type: 'message', textFormat: 'xml', text: `Escalated to ${escapeHtml(step.mention.join(', '))} in the escalation channel.` }, 'escalation note');
    } catch (err) {
      this.log.warn({ err: classifyTeamsError(err, 'escalation note'), requestId: view.requestId, posted: posted.id }, 'escalated, but the note in the request thread failed');
    }
  }

  async reply(ref: MessageRef, text: string): Promise<void> {
    const r = checkRef(ref);
    const escaped = escapeHtml(text);
    const cut = escaped.length > REPLY_CHUNK ? `${escaped.slice(0, safeCut(escaped, REPLY_CHUNK))}…` : escaped;
    const body = cut.replace(/\n/g, '<br>');
    await this.connector.sendToConversation(r.serviceUrl, r.conversationId, { type: 'message', textFormat: 'xml', text: body }, 'replying in the approval thread');
  }

  /**
   * Teams bots cannot upload files into channels (only into 1:1 chats, through consent cards), so
   * the log goes inline: head and tail when long, with a link to the full session in Airlock.
   */
  async attachLog(ref: MessageRef, filename: string, content: string): Promise<void> {
    const r = checkRef(ref);
    const sessionId = /^airlock-session-(.+)\.log$/.exec(filename)?.[1];
    const lines = content.split('\n').length - (content.endsWith('\n') ? 1 : 0);
    // Escaped first, so the size limit holds for what is sent (cuts fall on line ends or before an entity).
    const transcript = compactTranscript(escapeHtml(content), TRANSCRIPT_MAX);
    const where = sessionId
      ? this.opts.sessionUrlBase
        ? `<a href="${escapeHtml(`${this.opts.sessionUrlBase.replace(/\/+$/, '')}/${encodeURIComponent(sessionId)}`)}">Open session ${escapeHtml(sessionId)} in Airlock</a>`
        : `Full log: <code>airlock sessions show ${escapeHtml(sessionId)}</code>`
      : `File: ${escapeHtml(filename)}`;
    const text = `<b>Session log</b> ${escapeHtml(filename)} (${lines} lines, ${Buffer.byteLength(content)} bytes)${transcript.elided ? `, ${transcript.elided} lines omitted below` : ''}. ${where}<pre>${transcript.text}</pre>`;
    await this.connector.sendToConversation(r.serviceUrl, r.conversationId, { type: 'message', textFormat: 'xml', text }, `posting ${filename} to the approval thread`);
  }

  /** The statement that did not fit on the card, as preformatted replies. */
  private async postFullText(ref: MessageRef, view: ApprovalView): Promise<void> {
    const r = checkRef(ref);
    const parts = chunkText(escapeHtml(view.text), REPLY_CHUNK);
    if (parts.length > MAX_TEXT_REPLIES) {
      await this.connector.sendToConversation(
        r.serviceUrl,
        r.conversationId,
        { type: 'message', textFormat: 'xml', text: `The full text (${view.text.length} characters) is too long for Teams; see it in the session recording (<code>airlock sessions list</code>). Do not approve what you have not read.` },
        'posting the full statement',
      );
      return;
    }
    for (let i = 0; i < parts.length; i++) {
      const label = parts.length > 1 ? `Full text (part ${i + 1} of ${parts.length}):` : 'Full text:';
      await this.connector.sendToConversation(r.serviceUrl, r.conversationId, { type: 'message', textFormat: 'xml', text: `${label}<pre>${parts[i]}</pre>` }, 'posting the full statement');
    }
  }

  private target(channelId: string | undefined, what: string): Target {
    let installed: InstalledChannel | undefined;
    try {
      installed = channelId ? this.refs?.find(channelId) : this.refs?.latest();
    } catch (err) {
      if (!channelId) throw new ChatPermanentError(`no Teams channel for ${what}: ${err instanceof Error ? err.message : String(err)}`, 'no_channel');
      this.log.warn({ err }, 'installation store unreadable; using the configured service URL');
    }
    const id = channelId ?? installed?.conversationId;
    if (!id) {
      throw new ChatPermanentError(`no Teams channel for ${what}: set teams.channelId, or add the bot to a team so it learns its channel`, 'no_channel');
    }
    return { channelId: channelOf(id), serviceUrl: installed?.serviceUrl ?? this.opts.serviceUrl, tenantId: this.opts.tenantId ?? installed?.tenantId };
  }

  /**
   * `<at>` mentions for mapped people: a name that is an identity, or a group whose members are
   * mapped in `teams.users`; anything else stays plain text (@name), which notifies nobody.
   */
  private mentions(names: string[]): { html: string; entities: Array<Record<string, unknown>> } {
    const users = this.opts.users ?? {};
    const byIdentity = new Map<string, string>();
    for (const [teamsId, identity] of Object.entries(users)) if (!byIdentity.has(identity)) byIdentity.set(identity, teamsId);
    const identities = this.opts.identities ?? [];
    const entities: Array<Record<string, unknown>> = [];
    const mentioned = new Set<string>();
    const at = (identity: string): string | undefined => {
      const id = byIdentity.get(identity);
      if (!id) return undefined;
      const text = `<at>${escapeHtml(identity)}</at>`;
      if (!mentioned.has(id)) {
        mentioned.add(id);
        entities.push({ type: 'mention', text, mentioned: { id, name: identity } });
      }
      return text;
    };
    const parts = names.map((raw) => {
      const bare = raw.trim().replace(/^@/, '');
      const direct = at(bare);
      if (direct) return direct;
      const members = identities.filter((i) => i.groups.includes(bare)).map((i) => at(i.name)).filter((x): x is string => x !== undefined);
      return members.length ? `@${escapeHtml(bare)} (${members.join(', ')})` : `@${escapeHtml(bare)}`;
    });
    return { html: parts.join(' '), entities };
  }
}

function utc(iso: string): string {
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? iso : new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

/** Head and tail of a long log, cut at line boundaries (or, in one huge line, before an entity). */
export function compactTranscript(content: string, max: number): { text: string; elided: number } {
  if (content.length <= max) return { text: content, elided: 0 };
  const half = Math.floor(max / 2);
  const headEnd = Math.max(content.lastIndexOf('\n', half), 0) || safeCut(content, half);
  const tailStart = content.indexOf('\n', content.length - half);
  let start = tailStart === -1 ? content.length - half : tailStart + 1;
  const amp = content.lastIndexOf('&', start - 1);
  if (tailStart === -1 && amp !== -1 && start - amp <= 8 && content.indexOf(';', amp) >= start) start = content.indexOf(';', amp) + 1;
  const elided = content.slice(headEnd, start).split('\n').length - 1;
  return { text: `${content.slice(0, headEnd)}\n… ${elided} lines omitted …\n${content.slice(start)}`, elided };
}

function checkRef(ref: MessageRef): { conversationId: string; activityId: string; serviceUrl: string } {
  const { conversationId, activityId, serviceUrl } = ref;
  if (!conversationId || !activityId || !serviceUrl) throw new ChatPermanentError(`not a Teams message reference: ${JSON.stringify(ref)}`, 'invalid_ref');
  return { conversationId, activityId, serviceUrl };
}
