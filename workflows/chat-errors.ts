// Turns a chat API error into a Temporal activity failure: retry what may succeed later (5xx,
// 429 with its Retry-After, timeouts, network errors), stop at once on what never will (bad
// token, missing scope, unknown channel), so a broken setup fails closed fast instead of
// retrying until the deadline.
import { ApplicationFailure } from '@temporalio/common';

/** Slack platform errors (`{ ok: false, error }`) that are worth retrying; every other one is permanent. */
const RETRYABLE_SLACK_ERRORS = new Set(['ratelimited', 'rate_limited', 'internal_error', 'fatal_error', 'service_unavailable', 'request_timeout', 'team_added_to_org']);

interface ErrorShape {
  message?: unknown;
  code?: unknown;
  /** Convention for our own channels: `permanent: true` or `retryable: false` = do not retry. */
  permanent?: unknown;
  retryable?: unknown;
  /** Milliseconds to wait before the next attempt (our convention). */
  retryAfterMs?: unknown;
  /** Seconds, as @slack/web-api's WebAPIRateLimitedError carries it. */
  retryAfter?: unknown;
  statusCode?: unknown;
  status?: unknown;
  data?: { error?: unknown };
}

export interface Classified {
  retryable: boolean;
  retryAfterMs?: number;
  message: string;
}

export function classifyChatError(err: unknown): Classified {
  const e: ErrorShape = typeof err === 'object' && err !== null ? (err as ErrorShape) : {};
  const message = err instanceof Error ? err.message : typeof e.message === 'string' ? e.message : String(err);
  const retryAfterMs =
    typeof e.retryAfterMs === 'number' ? e.retryAfterMs : typeof e.retryAfter === 'number' ? e.retryAfter * 1000 : undefined;
  if (e.permanent === true || e.retryable === false) return { retryable: false, message };
  if (e.retryable === true) return { retryable: true, retryAfterMs, message };
  switch (e.code) {
    case 'slack_webapi_rate_limited_error':
    case 'slack_webapi_request_error':
      return { retryable: true, retryAfterMs, message };
    case 'slack_webapi_platform_error': {
      const code = typeof e.data?.error === 'string' ? e.data.error : '';
      return { retryable: RETRYABLE_SLACK_ERRORS.has(code), retryAfterMs, message };
    }
    case 'slack_webapi_http_error':
      break; // decided by statusCode below
    case 'ECONNREFUSED':
    case 'ECONNRESET':
    case 'ETIMEDOUT':
    case 'EAI_AGAIN':
    case 'ENOTFOUND':
    case 'EPIPE':
      return { retryable: true, retryAfterMs, message };
  }
  const status = typeof e.statusCode === 'number' ? e.statusCode : typeof e.status === 'number' ? e.status : undefined;
  if (status !== undefined) {
    const retryable = status >= 500 || status === 429 || status === 408;
    return { retryable, retryAfterMs, message: `${message} (HTTP ${status})` };
  }
  // Unknown errors (a dropped socket, a timeout inside a client library) are usually transient.
  return { retryable: true, retryAfterMs, message };
}

/** The ApplicationFailure an activity should throw for a chat error. */
export function chatFailure(err: unknown, what: string): ApplicationFailure {
  if (err instanceof ApplicationFailure) return err;
  const c = classifyChatError(err);
  return ApplicationFailure.create({
    message: `${what}: ${c.message}`,
    type: c.retryable ? 'ChatUnavailable' : 'ChatRejected',
    nonRetryable: !c.retryable,
    nextRetryDelay: c.retryable && c.retryAfterMs !== undefined && c.retryAfterMs > 0 ? c.retryAfterMs : undefined,
    cause: err instanceof Error ? err : undefined,
  });
}
