// Slack as an approval channel: the approval workflow's activities call this to post the request,
// keep the message in step with the workflow's state, escalate, and report into the thread.
//
// Retries: WebClient's own retry loop is switched off (`retries: 0`, rate-limited calls rejected
// instead of slept on). The default would retry for ~30 minutes inside one activity attempt and
// blow through a 15-minute approval deadline; Temporal's activity retry policy does the backoff
// instead, bounded by the workflow's deadline, after which the operation is rejected (fail
// closed). Every failure is thrown as ChatRetryableError or ChatPermanentError (see errors.ts).
import { WebClient, LogLevel } from '@slack/web-api';
import type { ApprovalChannel, ApprovalView, EscalationNotice, MessageRef } from '../channel.ts';
import { resolveSecret, type LoadedConfig } from '../../gateway/config/load.ts';
import { log as rootLog, type Logger } from '../../gateway/log.ts';
import { CODE_MAX, chunkCode, escapeMrkdwn, formatMention, renderApproval, slackDate } from './blocks.ts';
import { ChatPermanentError, classifySlackError } from './errors.ts';
import { slackLogger } from './logger.ts';

export { ChatPermanentError, ChatRetryableError, classifySlackError } from './errors.ts';

export interface SlackChannelOptions {
  botToken: string;
  /** Where requests are posted: a channel id (C…) or name (#db-approvals). */
  channel: string;
  /** Where escalations go when a step names no channel; default: the request's own channel. */
  escalationChannel?: string;
  /** Web API base URL (tests point it at a fake); default https://slack.com/api/. */
  apiUrl?: string;
  /** Escalation mention name -> Slack ids (user groups S…, users U…), so a mention reaches people (`slack.mentions`). */
  mentions?: Record<string, string[]>;
  /** Per HTTP request; a hung Slack must fail the attempt well inside the activity timeout. Default 10s. */
  timeoutMs?: number;
  logger?: Logger;
}

/** Thread replies carrying the full statement; past this many it is uploaded as a file instead. */
const MAX_TEXT_REPLIES = 6;
/** chat.postMessage `text` limit is 40,000; leave room for the escaping. */
const REPLY_MAX = 38_000;

export class SlackChannel implements ApprovalChannel {
  readonly kind = 'slack';
  private readonly client: WebClient;
  private readonly log: Logger;

  constructor(private readonly opts: SlackChannelOptions) {
    this.log = (opts.logger ?? rootLog).child({ component: 'slack' });
    this.client = new WebClient(opts.botToken, {
      slackApiUrl: opts.apiUrl,
      retryConfig: { retries: 0 },
      rejectRateLimitedCalls: true,
      timeout: opts.timeoutMs ?? 10_000,
      logger: slackLogger(this.log),
      logLevel: LogLevel.WARN,
    });
  }

  /** Builds the channel from the `slack:` config block, resolving the bot token reference. */
  static fromConfig(loaded: LoadedConfig, overrides: Partial<SlackChannelOptions> = {}): SlackChannel {
    const s = loaded.config.slack;
    if (!s) throw new Error('slack is not configured (add a `slack:` block to the config)');
    return new SlackChannel({
      botToken: resolveSecret(s.botToken, loaded.baseDir, 'slack.botToken'),
      channel: s.channel,
      escalationChannel: s.escalationChannel,
      apiUrl: s.apiUrl,
      mentions: s.mentions,
      ...overrides,
    });
  }

  async post(view: ApprovalView): Promise<MessageRef> {
    const msg = renderApproval(view);
    const channel = view.channel ?? this.opts.channel;
    const res = await this.call(`posting request ${view.requestId} to ${channel}`, () =>
      this.client.chat.postMessage({ channel, text: msg.text, blocks: msg.blocks, unfurl_links: false, unfurl_media: false }),
    );
    if (!res.channel || !res.ts) throw new ChatPermanentError(`posting request ${view.requestId}: Slack returned no channel/ts`, 'invalid_response');
    const ref: MessageRef = { channel: res.channel, ts: res.ts };
    if (msg.truncated) {
      // The request is visible now; failing here would make the activity post it again. The
      // message itself says the text is truncated, so a missing thread is noticed, not approved blind.
      try {
        await this.postFullText(ref, view);
      } catch (err) {
        this.log.warn({ err, requestId: view.requestId }, 'could not post the full statement into the approval thread');
      }
    }
    return ref;
  }

  async update(ref: MessageRef, view: ApprovalView): Promise<void> {
    const { channel, ts } = checkRef(ref);
    const msg = renderApproval(view);
    await this.call(`updating request ${view.requestId}`, () => this.client.chat.update({ channel, ts, text: msg.text, blocks: msg.blocks }));
  }

  async escalate(ref: MessageRef, view: ApprovalView, step: EscalationNotice): Promise<void> {
    const { channel, ts } = checkRef(ref);
    const target = step.channel ?? this.opts.escalationChannel ?? channel;
    const mentions = step.mention.flatMap((m) => this.opts.mentions?.[m.trim().replace(/^@/, '')] ?? [m]).map(formatMention).join(' ');
    const summary = `${escapeMrkdwn(view.identity)} on ${escapeMrkdwn(view.connection)}, rule ${escapeMrkdwn(view.rule)}`;
    const deadline = slackDate(view.deadline);
    // The message first (idempotent under activity retries), then the notifications. A message
    // that can no longer be edited (deleted by someone) must not stop the escalation itself.
    try {
      await this.update(ref, { ...view, escalated: true });
    } catch (err) {
      if (!(err instanceof ChatPermanentError)) throw err;
      this.log.warn({ code: err.code, requestId: view.requestId }, 'escalating without updating the request message');
    }
    if (this.sameChannel(target, channel, view)) {
      // Broadcast the thread reply so it shows in the channel and pings the group there.
      await this.call(`escalating request ${view.requestId}`, () =>
        this.client.chat.postMessage({
          channel,
          thread_ts: ts,
          reply_broadcast: true,
          text: `:rotating_light: ${mentions} approval request ${escapeMrkdwn(view.requestId)} (${summary}) is still waiting; it expires ${deadline}.`,
        }),
      );
      return;
    }
    let link = '';
    try {
      const p = await this.client.chat.getPermalink({ channel, message_ts: ts });
      if (p.permalink) link = ` <${p.permalink}|Open the request>`;
    } catch (err) {
      this.log.warn({ err: classifySlackError(err, 'permalink'), requestId: view.requestId }, 'no permalink for the escalation message');
    }
    const posted = await this.call(`escalating request ${view.requestId} to ${target}`, () =>
      this.client.chat.postMessage({
        channel: target,
        text: `:rotating_light: ${mentions} approval request ${escapeMrkdwn(view.requestId)} (${summary}) has had no decision; it expires ${deadline}.${link}`,
        unfurl_links: false,
      }),
    );
    try {
      await this.client.chat.postMessage({ channel, thread_ts: ts, text: `Escalated to ${mentions} in <#${posted.channel ?? target}>.` });
    } catch (err) {
      this.log.warn({ err: classifySlackError(err, 'escalation note'), requestId: view.requestId }, 'escalated, but the note in the request thread failed');
    }
  }

  async reply(ref: MessageRef, text: string): Promise<void> {
    const { channel, ts } = checkRef(ref);
    const body = escapeMrkdwn(text);
    await this.call('replying in the approval thread', () =>
      this.client.chat.postMessage({ channel, thread_ts: ts, text: body.length > REPLY_MAX ? `${body.slice(0, REPLY_MAX)}…` : body }),
    );
  }

  async attachLog(ref: MessageRef, filename: string, content: string): Promise<void> {
    const { channel, ts } = checkRef(ref);
    await this.call(`uploading ${filename} to the approval thread`, () =>
      this.client.files.uploadV2({ channel_id: channel, thread_ts: ts, filename, title: filename, content, initial_comment: 'Session log' }),
    );
  }

  /** The statement that did not fit, as code-block replies, or as a file when it is very long. */
  private async postFullText(ref: MessageRef, view: ApprovalView): Promise<void> {
    const { channel, ts } = checkRef(ref);
    const parts = chunkCode(view.text, CODE_MAX);
    if (parts.length > MAX_TEXT_REPLIES) {
      await this.call('uploading the full statement', () =>
        this.client.files.uploadV2({
          channel_id: channel,
          thread_ts: ts,
          filename: `${view.requestId}.${view.protocol === 'postgres' ? 'sql' : 'txt'}`,
          title: 'Full text of the held operation',
          content: view.text,
          initial_comment: `Full text (${view.text.length} characters)`,
        }),
      );
      return;
    }
    for (let i = 0; i < parts.length; i++) {
      const label = parts.length > 1 ? `Full text (part ${i + 1} of ${parts.length}):` : 'Full text:';
      const fenced = escapeMrkdwn(parts[i]).replace(/```/g, '`\u200b`\u200b`');
      await this.call('posting the full statement', () => this.client.chat.postMessage({ channel, thread_ts: ts, text: `${label}\n\`\`\`${fenced}\`\`\`` }));
    }
  }

  private sameChannel(target: string, channelId: string, view: ApprovalView): boolean {
    // The request was posted to the rule's channel or the configured one, so its name means the same channel.
    const bare = (c: string): string => c.replace(/^#/, '');
    return bare(target) === channelId || bare(target) === bare(view.channel ?? this.opts.channel);
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const e = classifySlackError(err, what);
      this.log.warn({ code: e.code, retryable: e.retryable }, e.message);
      throw e;
    }
  }
}

function checkRef(ref: MessageRef): { channel: string; ts: string } {
  const { channel, ts } = ref;
  if (!channel || !ts) throw new ChatPermanentError(`not a Slack message reference: ${JSON.stringify(ref)}`, 'invalid_ref');
  return { channel, ts };
}
