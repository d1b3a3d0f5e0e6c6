// Teams (Bot Connector) failures sorted the same way as Slack's: retry later (5xx, 408, 429 with
// its Retry-After, timeouts, network errors) or stop at once (401/403/404 and other 4xx: a wrong
// app password, a bot removed from the team, a deleted conversation). Same error classes as
// Slack, so workflows/chat-errors.ts and `nonRetryableErrorTypes: ['ChatPermanentError']` work
// for both chats.
import { ChatPermanentError, ChatRetryableError } from '../slack/errors.ts';

export { ChatPermanentError, ChatRetryableError };

/** A non-2xx answer from the Bot Connector or the token endpoint. */
export class TeamsHttpError extends Error {
  constructor(
    message: string,
    readonly statusCode: number,
    readonly body: string,
    /** Parsed Retry-After in milliseconds, when the server sent one. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
    this.name = 'TeamsHttpError';
  }
}

const hints: Record<number, string> = {
  401: 'the Bot Connector refused the bot token (check teams.appId / teams.appPassword / teams.tenantId)',
  403: 'the bot is not allowed there (is it installed in the team, and is the channel in that team?)',
  404: 'the conversation or message does not exist (deleted, or the wrong teams.channelId)',
  413: 'the message is too large for Teams',
};

/** Retry-After is seconds or an HTTP date. */
export function parseRetryAfter(v: string | null | undefined, now = Date.now()): number | undefined {
  if (!v) return undefined;
  const s = v.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const t = Date.parse(s);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** Wraps any error from a Bot Connector call into ChatRetryableError or ChatPermanentError. */
export function classifyTeamsError(err: unknown, what: string): ChatRetryableError | ChatPermanentError {
  if (err instanceof ChatRetryableError || err instanceof ChatPermanentError) return err;
  if (err instanceof TeamsHttpError) {
    const s = err.statusCode;
    if (s === 429) {
      const after = err.retryAfterMs !== undefined ? `, retry after ${Math.ceil(err.retryAfterMs / 1000)}s` : '';
      return new ChatRetryableError(`${what}: Teams rate limit${after}`, 'ratelimited', { retryAfterMs: err.retryAfterMs, cause: err });
    }
    if (s >= 500 || s === 408) {
      return new ChatRetryableError(`${what}: Teams answered HTTP ${s}`, `http_${s}`, { retryAfterMs: err.retryAfterMs, cause: err });
    }
    const hint = hints[s] ? `: ${hints[s]}` : '';
    const detail = err.body ? ` (${err.body.slice(0, 200)})` : '';
    return new ChatPermanentError(`${what}: Teams refused with HTTP ${s}${hint}${detail}`, `http_${s}`, { cause: err });
  }
  const e = err as { name?: unknown; code?: unknown; cause?: { code?: unknown; message?: unknown } } | undefined;
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') {
    return new ChatRetryableError(`${what}: Teams did not answer in time`, 'timeout', { cause: err });
  }
  // fetch says only "fetch failed"; the reason (refused, DNS, TLS) is in its cause.
  const causeMsg = typeof e?.cause?.message === 'string' && e.cause.message ? `: ${e.cause.message}` : '';
  const message = `${err instanceof Error ? err.message : String(err)}${causeMsg}`;
  const code = typeof e?.cause?.code === 'string' ? e.cause.code : typeof e?.code === 'string' ? e.code : 'unreachable';
  // fetch failures (refused, reset, DNS) and anything unknown: retry; the deadline bounds it.
  return new ChatRetryableError(`${what}: cannot reach Teams: ${message}${code !== 'unreachable' ? ` (${code})` : ''}`, code, { cause: err });
}
