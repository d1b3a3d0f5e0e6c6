// Slack failures sorted into "try again later" and "will never work until someone fixes the
// config". Temporal activities retry the first kind with backoff (until the approval deadline,
// then the operation is rejected: fail closed) and give up at once on the second; activity
// options should list `ChatPermanentError` in `nonRetryableErrorTypes` (Temporal uses the
// error's `name` as the failure type). Both also carry `retryable` (and `permanent`) flags, the
// convention workflows/chat-errors.ts reads, plus `retryAfterMs` for its nextRetryDelay.
import {
  WebAPIFileUploadInvalidArgumentsError,
  WebAPIHTTPError,
  WebAPIPlatformError,
  WebAPIRateLimitedError,
  WebAPIRequestError,
} from '@slack/web-api';

export class ChatRetryableError extends Error {
  readonly retryable = true;
  readonly permanent = false;
  /** Slack's Retry-After, when it gave one: the activity's next retry should wait at least this. */
  readonly retryAfterMs?: number;
  constructor(
    message: string,
    readonly code: string,
    opts: { retryAfterMs?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = 'ChatRetryableError';
    this.retryAfterMs = opts.retryAfterMs;
  }
}

export class ChatPermanentError extends Error {
  readonly retryable = false;
  readonly permanent = true;
  constructor(
    message: string,
    readonly code: string,
    opts: { cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = 'ChatPermanentError';
  }
}

/** Platform errors Slack documents as transient (server side); everything else from the platform is ours to fix. */
const transientPlatformErrors = new Set(['ratelimited', 'rate_limited', 'internal_error', 'fatal_error', 'service_unavailable', 'request_timeout']);

const hints: Record<string, string> = {
  invalid_auth: 'the bot token is not valid (check slack.botToken)',
  not_authed: 'no bot token was sent (check slack.botToken)',
  token_revoked: 'the bot token was revoked (reinstall the app and update slack.botToken)',
  token_expired: 'the bot token expired (update slack.botToken)',
  account_inactive: 'the bot user or workspace is deactivated',
  channel_not_found: 'the channel does not exist or the bot cannot see it (check slack.channel)',
  not_in_channel: 'the bot is not a member of the channel (invite it: /invite @airlock)',
  is_archived: 'the channel is archived',
  missing_scope: 'the bot token lacks a required OAuth scope',
  restricted_action: 'a workspace policy forbids the bot from posting there',
};

/** Wraps any error thrown by WebClient into ChatRetryableError or ChatPermanentError. */
export function classifySlackError(err: unknown, what: string): ChatRetryableError | ChatPermanentError {
  if (err instanceof ChatRetryableError || err instanceof ChatPermanentError) return err;
  if (err instanceof WebAPIRateLimitedError) {
    return new ChatRetryableError(`${what}: Slack rate limit, retry after ${err.retryAfter}s`, 'ratelimited', { retryAfterMs: err.retryAfter * 1000, cause: err });
  }
  if (err instanceof WebAPIPlatformError) {
    const code = err.data.error;
    if (transientPlatformErrors.has(code)) {
      const ra = err.data.response_metadata?.retryAfter;
      return new ChatRetryableError(`${what}: Slack error ${code}`, code, { retryAfterMs: ra !== undefined ? ra * 1000 : undefined, cause: err });
    }
    const needed = (err.data as { needed?: string }).needed;
    const hint = hints[code] ? `: ${hints[code]}${needed ? ` (needs ${needed})` : ''}` : '';
    return new ChatPermanentError(`${what}: Slack refused (${code})${hint}`, code, { cause: err });
  }
  if (err instanceof WebAPIHTTPError) {
    const retryable = err.statusCode >= 500 || err.statusCode === 408 || err.statusCode === 429;
    const msg = `${what}: Slack answered HTTP ${err.statusCode}${err.statusMessage ? ` ${err.statusMessage}` : ''}`;
    return retryable ? new ChatRetryableError(msg, `http_${err.statusCode}`, { cause: err }) : new ChatPermanentError(`${msg} (check slack.apiUrl)`, `http_${err.statusCode}`, { cause: err });
  }
  if (err instanceof WebAPIRequestError) {
    const o = err.original;
    const timedOut = o.name === 'TimeoutError' || o.name === 'AbortError';
    return new ChatRetryableError(timedOut ? `${what}: Slack did not answer in time` : `${what}: cannot reach Slack: ${o.message}`, timedOut ? 'timeout' : 'unreachable', { cause: err });
  }
  if (err instanceof WebAPIFileUploadInvalidArgumentsError) return new ChatPermanentError(`${what}: ${err.message}`, 'invalid_arguments', { cause: err });
  // Anything else (a 429 without a usable Retry-After, an upload URL refusing bytes, ...): retry
  // rather than give up; the approval deadline bounds it and then the operation is rejected.
  const message = err instanceof Error ? err.message : String(err);
  return new ChatRetryableError(`${what}: ${message}`, 'unknown', { cause: err });
}
