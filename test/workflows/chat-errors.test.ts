// Which chat failures the approval activities retry (and how soon) and which fail at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatPermanentError, ChatRetryableError } from '../../bots/slack/errors.ts';
import { chatFailure, classifyChatError } from '../../workflows/chat-errors.ts';

test('Slack channel errors: rate limits retry after Retry-After, bad tokens never retry', () => {
  const limited = chatFailure(new ChatRetryableError('Slack rate limit, retry after 7s', 'ratelimited', { retryAfterMs: 7000 }), 'post request via slack');
  assert.equal(limited.nonRetryable, false);
  assert.equal(limited.nextRetryDelay, 7000);
  assert.equal(limited.type, 'ChatUnavailable');
  assert.match(limited.message, /^post request via slack: Slack rate limit/);

  const badToken = chatFailure(new ChatPermanentError('Slack refused (invalid_auth)', 'invalid_auth'), 'post request via slack');
  assert.equal(badToken.nonRetryable, true);
  assert.equal(badToken.type, 'ChatRejected');
});

test('raw @slack/web-api shaped errors and HTTP statuses are classified too', () => {
  assert.equal(classifyChatError({ code: 'slack_webapi_platform_error', message: 'x', data: { error: 'invalid_auth' } }).retryable, false);
  assert.equal(classifyChatError({ code: 'slack_webapi_platform_error', message: 'x', data: { error: 'internal_error' } }).retryable, true);
  assert.deepEqual(classifyChatError({ code: 'slack_webapi_rate_limited_error', message: 'slow down', retryAfter: 3 }), { retryable: true, retryAfterMs: 3000, message: 'slow down' });
  assert.equal(classifyChatError({ statusCode: 503, message: 'unavailable' }).retryable, true);
  assert.equal(classifyChatError({ statusCode: 429, message: 'busy' }).retryable, true);
  assert.equal(classifyChatError({ statusCode: 401, message: 'unauthorized' }).retryable, false);
  assert.equal(classifyChatError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' })).retryable, true);
  // Unknown failures are assumed transient: the approval deadline bounds the retries.
  assert.equal(classifyChatError(new Error('socket hang up')).retryable, true);
  assert.equal(classifyChatError(Object.assign(new Error('bad ref'), { permanent: true })).retryable, false);
});
