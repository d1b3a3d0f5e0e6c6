// The few Bot Connector REST calls the approval activities make (v3 conversations API), with no
// retries of its own: one HTTP attempt per call, bounded by a timeout, errors classified as
// retryable or permanent. Temporal's activity retry policy does the backoff, bounded by the
// approval deadline (fail closed), as for Slack. botbuilder's ConnectorClient is not used here
// because its pipeline retries 5xx/429 internally (sleeping on Retry-After inside one attempt).
import type { BotTokenClient } from './auth.ts';
import { TeamsHttpError, classifyTeamsError, parseRetryAfter } from './errors.ts';

/** A Bot Framework activity as we send it; loose where Teams is (attachments, entities, channelData). */
export interface OutgoingActivity {
  type: 'message';
  id?: string;
  text?: string;
  textFormat?: 'plain' | 'markdown' | 'xml';
  summary?: string;
  attachments?: Array<{ contentType: string; content: unknown }>;
  entities?: Array<Record<string, unknown>>;
  channelData?: Record<string, unknown>;
}

export interface ConversationParameters {
  isGroup: boolean;
  channelData: Record<string, unknown>;
  activity: OutgoingActivity;
  tenantId?: string;
  bot?: { id: string; name?: string };
}

export interface TeamsMember {
  id: string;
  name?: string;
  aadObjectId?: string;
  email?: string;
  userPrincipalName?: string;
  tenantId?: string;
}

export interface ConnectorOptions {
  /** Sends `Authorization: Bearer` with the bot's token; absent when the bot runs without auth. */
  tokens?: BotTokenClient;
  /** Per HTTP request, default 10s: a hung Bot Connector must fail the attempt inside the activity timeout. */
  timeoutMs?: number;
}

export class BotConnector {
  constructor(private readonly opts: ConnectorOptions = {}) {}

  /** POST /v3/conversations: a new thread in a channel (or a chat). */
  createConversation(serviceUrl: string, params: ConversationParameters, what: string): Promise<{ id: string; activityId?: string; serviceUrl?: string }> {
    return this.call(serviceUrl, 'POST', '/v3/conversations', params, what);
  }

  /** POST /v3/conversations/{id}/activities; with `;messageid=` in the id this lands in that thread. */
  sendToConversation(serviceUrl: string, conversationId: string, activity: OutgoingActivity, what: string): Promise<{ id?: string }> {
    return this.call(serviceUrl, 'POST', `/v3/conversations/${encodeURIComponent(conversationId)}/activities`, activity, what);
  }

  /** POST /v3/conversations/{id}/activities/{activityId}: a reply to that message. */
  replyToActivity(serviceUrl: string, conversationId: string, activityId: string, activity: OutgoingActivity, what: string): Promise<{ id?: string }> {
    return this.call(serviceUrl, 'POST', `/v3/conversations/${encodeURIComponent(conversationId)}/activities/${encodeURIComponent(activityId)}`, { ...activity, replyToId: activityId }, what);
  }

  /** PUT /v3/conversations/{id}/activities/{activityId}: rewrites a message the bot sent. */
  updateActivity(serviceUrl: string, conversationId: string, activityId: string, activity: OutgoingActivity, what: string): Promise<{ id?: string }> {
    return this.call(serviceUrl, 'PUT', `/v3/conversations/${encodeURIComponent(conversationId)}/activities/${encodeURIComponent(activityId)}`, { ...activity, id: activityId }, what);
  }

  /** GET /v3/conversations/{id}/members/{userId} (what TeamsInfo.getMember calls). */
  getMember(serviceUrl: string, conversationId: string, userId: string, what: string): Promise<TeamsMember> {
    return this.call(serviceUrl, 'GET', `/v3/conversations/${encodeURIComponent(conversationId)}/members/${encodeURIComponent(userId)}`, undefined, what);
  }

  private async call<T>(serviceUrl: string, method: 'GET' | 'POST' | 'PUT', path: string, body: unknown, what: string): Promise<T> {
    try {
      const headers: Record<string, string> = { accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json; charset=utf-8';
      if (this.opts.tokens) headers.authorization = `Bearer ${await this.opts.tokens.token()}`;
      const res = await fetch(`${serviceUrl.replace(/\/+$/, '')}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.opts.timeoutMs ?? 10_000),
      });
      const text = await res.text();
      if (!res.ok) {
        // A refused token may just be stale (rotated secret, clock skew): fetch a fresh one next attempt.
        if (res.status === 401) this.opts.tokens?.invalidate();
        throw new TeamsHttpError(`${method} ${path}: HTTP ${res.status}`, res.status, text, parseRetryAfter(res.headers.get('retry-after')));
      }
      if (!text) return {} as T;
      try {
        return JSON.parse(text) as T;
      } catch {
        throw new TeamsHttpError(`${method} ${path}: the answer is not JSON`, 502, text.slice(0, 200));
      }
    } catch (err) {
      throw classifyTeamsError(err, what);
    }
  }
}
