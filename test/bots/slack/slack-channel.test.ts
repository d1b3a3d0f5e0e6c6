import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ApprovalView } from '../../../bots/channel.ts';
import { ChatPermanentError, ChatRetryableError, SlackChannel } from '../../../bots/slack/slack-channel.ts';
import { classifyChatError } from '../../../workflows/chat-errors.ts';
import { FakeSlack, type FakeMessage, type SlackBlock } from '../../support/fake-slack.ts';

function view(over: Partial<ApprovalView> = {}): ApprovalView {
  return {
    requestId: 'req-7f3a',
    protocol: 'postgres',
    identity: 'agent-billing',
    owner: 'alice',
    connection: 'prod-db',
    text: 'DELETE FROM invoices WHERE created_at < now() - interval \'7 years\'',
    rule: 'review-deletes',
    reason: 'deletes on production need a second pair of eyes',
    deadline: '2026-11-25T00:15:00.000Z',
    approverGroups: ['dba', 'sre'],
    quorum: 1,
    status: 'pending',
    decidedBy: [],
    escalated: false,
    ...over,
  };
}

/** Every text in a message (or only the mrkdwn ones, which Slack parses for mentions). */
function allText(blocks: SlackBlock[], only?: 'mrkdwn'): string {
  const out: string[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if (typeof o.text === 'string' && (!only || o.type === only)) out.push(o.text);
      for (const [k, x] of Object.entries(o)) if (k !== 'text' || typeof x !== 'string') walk(x);
    }
  };
  walk(blocks);
  return out.join('\n');
}

function field(msg: FakeMessage, label: string): string {
  const section = msg.blocks.find((b) => b.block_id === 'airlock_request') as unknown as { fields: Array<{ text: string }> };
  const f = section.fields.find((x) => x.text.startsWith(`*${label}*`));
  assert.ok(f, `field ${label} present`);
  return f.text;
}

function buttons(msg: FakeMessage): Array<Record<string, unknown>> {
  const actions = msg.blocks.find((b) => b.type === 'actions') as { elements: Array<Record<string, unknown>> } | undefined;
  return actions?.elements ?? [];
}

function unescapeHtml(s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

describe('SlackChannel against a fake Slack Web API', () => {
  let slack: FakeSlack;
  let approvals: string;
  let escalations: string;
  let channel: SlackChannel;

  before(async () => {
    slack = await FakeSlack.start();
    approvals = slack.addChannel('db-approvals');
    escalations = slack.addChannel('db-escalations');
  });
  after(async () => {
    await slack.stop();
  });
  beforeEach(() => {
    channel = new SlackChannel({ botToken: slack.token, channel: '#db-approvals', escalationChannel: '#db-escalations', apiUrl: slack.apiUrl, timeoutMs: 500 });
  });

  test('post shows who, where, what, why, deadline, approvers and Approve/Reject buttons', async () => {
    const ref = await channel.post(view());
    assert.equal(ref.channel, approvals, 'the ref names the channel id, which chat.update needs');
    const msg = slack.messagesIn(approvals).find((m) => m.ts === ref.ts);
    assert.ok(msg);
    assert.equal(msg.blocks[0].type, 'header');
    assert.match(allText([msg.blocks[0]]), /Approval required: postgres on prod-db/);
    assert.match(field(msg, 'Who'), /`agent-billing` \(agent of `alice`\)/);
    assert.match(field(msg, 'Where'), /`prod-db` \(postgres\)/);
    assert.match(field(msg, 'Why'), /rule `review-deletes`: deletes on production need a second pair of eyes/);
    assert.match(field(msg, 'Deadline'), /^\*Deadline\*\n<!date\^1795565700\^\{date_short_pretty\} at \{time\}\|2026-11-25T00:15:00.000Z>$/);
    assert.match(field(msg, 'Approvers needed'), /1 from `dba`, `sre`/);
    const what = allText(msg.blocks.filter((b) => b.block_id === 'airlock_what'));
    assert.ok(what.includes("```DELETE FROM invoices WHERE created_at &lt; now() - interval '7 years'```"), what);
    const [approve, reject] = buttons(msg);
    assert.deepEqual(
      { id: approve.action_id, style: approve.style, value: approve.value },
      { id: 'airlock_approve', style: 'primary', value: 'req-7f3a' },
    );
    assert.deepEqual({ id: reject.action_id, style: reject.style, value: reject.value }, { id: 'airlock_reject', style: 'danger', value: 'req-7f3a' });
    assert.match(msg.text, /Approval required: agent-billing on prod-db/, 'a plain fallback text for notifications');
    assert.equal(slack.replies(approvals, ref.ts).length, 0, 'short statements need no thread');
  });

  test("a rule's own channel (review.channel) takes the request instead of the configured one", async () => {
    const payments = slack.addChannel('payments-approvals');
    const ref = await channel.post(view({ channel: '#payments-approvals' }));
    assert.equal(ref.channel, payments);
    assert.ok(slack.messagesIn(payments).some((m) => m.ts === ref.ts));
    assert.ok(!slack.messagesIn(approvals).some((m) => m.ts === ref.ts));
  });

  test('mrkdwn control sequences in the statement are escaped, so a statement cannot ping the channel', async () => {
    const ref = await channel.post(view({ text: "SELECT '<!channel>' , 1 & 2 ``` x", identity: '<@U123>' }));
    const msg = slack.messagesIn(approvals).find((m) => m.ts === ref.ts)!;
    const text = allText(msg.blocks, 'mrkdwn') + msg.text;
    assert.ok(text.length > 200, 'the mrkdwn texts were collected');
    assert.ok(!text.includes('<!channel>'));
    assert.ok(!text.includes('<@U123>'));
    assert.ok(text.includes('&lt;!channel&gt;'));
    const what = allText(msg.blocks.filter((b) => b.block_id === 'airlock_what'));
    assert.equal(what.match(/```/g)?.length, 2, 'a ``` inside the statement does not close the code block');
  });

  test('a long statement is truncated to fit Slack and posted in full as thread replies', async () => {
    const lines = Array.from({ length: 100 }, (_, i) => `INSERT INTO audit_log (id, note) VALUES (${i}, 'row <${i}> & more');`);
    const text = lines.join('\n');
    const ref = await channel.post(view({ text }));
    const msg = slack.messagesIn(approvals).find((m) => m.ts === ref.ts)!;
    const what = msg.blocks.find((b) => b.block_id === 'airlock_what') as unknown as { text: { text: string } };
    assert.ok(what.text.text.length <= 3000, `section text within Slack's 3000 limit (${what.text.text.length})`);
    assert.match(what.text.text, /Truncated \(\d+ characters\): the full text is in the thread/);
    const replies = slack.replies(approvals, ref.ts);
    assert.ok(replies.length >= 2, 'split over several replies');
    const rebuilt = replies
      .map((r) => {
        const m = /```([\s\S]*)```$/.exec(r.text);
        assert.ok(m, r.text.slice(0, 80));
        return unescapeHtml(m[1]);
      })
      .join('');
    assert.equal(rebuilt, text, 'the thread carries the statement exactly');
    for (const r of replies) assert.ok(r.text.length < 4000);
  });

  test('a huge statement goes into the thread as a file', async () => {
    const text = `COPY t FROM STDIN;\n${'x'.repeat(40_000)}\n`;
    const ref = await channel.post(view({ text, requestId: 'req-huge' }));
    const file = [...slack.files.values()].find((f) => f.filename === 'req-huge.sql');
    assert.ok(file, 'uploaded');
    assert.equal(file.content?.toString('utf8'), text);
    assert.deepEqual({ ch: file.channel_id, ts: file.thread_ts, done: file.completed }, { ch: approvals, ts: ref.ts, done: true });
  });

  test('update after approval removes the buttons and says who decided and when', async () => {
    const ref = await channel.post(view({ quorum: 2 }));
    await channel.update(ref, view({ quorum: 2, decidedBy: ['bob'] }));
    let msg = slack.messagesIn(approvals).find((m) => m.ts === ref.ts)!;
    assert.equal(buttons(msg).length, 2, 'partial quorum keeps the buttons for the next approver');
    assert.match(allText(msg.blocks), /Approved so far by `bob` \(1 of 2\)/);

    await channel.update(ref, view({ quorum: 2, status: 'approved', decidedBy: ['bob', 'carol'], decidedAt: '2026-11-24T23:01:02.000Z', decisionReason: 'checked the backup' }));
    msg = slack.messagesIn(approvals).find((m) => m.ts === ref.ts)!;
    assert.equal(buttons(msg).length, 0);
    assert.equal(msg.edits, 2);
    const t = allText(msg.blocks);
    assert.match(t, /Approved\* by `bob`, `carol` <!date\^1795561262\^/);
    assert.match(t, /checked the backup/);
    assert.match(allText([msg.blocks[0]]), /^Approved: postgres on prod-db/);
  });

  test('rejected, expired, cancelled and escalated states are shown', async () => {
    const ref = await channel.post(view());
    const cases: Array<[Partial<ApprovalView>, RegExp, number]> = [
      [{ escalated: true }, /Escalated\*: no decision yet/, 2],
      [{ status: 'rejected', decidedBy: ['carol'], decidedAt: '2026-11-24T23:00:00Z', decisionReason: 'not during the freeze' }, /Rejected\* by `carol` <!date.*\n>not during the freeze/, 0],
      [{ status: 'expired', escalated: true }, /Expired\*: no decision by the deadline \(after escalation\); the operation was rejected/, 0],
      [{ status: 'cancelled', decisionReason: 'client disconnected' }, /Cancelled\*[\s\S]*client disconnected/, 0],
    ];
    for (const [over, re, nButtons] of cases) {
      await channel.update(ref, view(over));
      const msg = slack.messagesIn(approvals).find((m) => m.ts === ref.ts)!;
      assert.match(allText(msg.blocks), re);
      assert.equal(buttons(msg).length, nButtons, JSON.stringify(over));
    }
  });

  test('escalate mentions the group in the escalation channel, links back, notes it in the thread and marks the request', async () => {
    const ref = await channel.post(view());
    await channel.escalate(ref, view(), { mention: ['S0123ABCD', 'dba-leads'] });
    const esc = slack.messagesIn(escalations);
    assert.equal(esc.length, 1);
    assert.match(esc[0].text, /<!subteam\^S0123ABCD> @dba-leads approval request req-7f3a/);
    assert.ok(esc[0].text.includes(`https://fake.slack.com/archives/${approvals}/p${ref.ts.replace('.', '')}`), esc[0].text);
    const note = slack.replies(approvals, ref.ts);
    assert.equal(note.length, 1);
    assert.match(note[0].text, new RegExp(`Escalated to <!subteam\\^S0123ABCD> @dba-leads in <#${escalations}>`));
    const msg = slack.messagesIn(approvals).find((m) => m.ts === ref.ts)!;
    assert.match(allText(msg.blocks), /Escalated/);
    assert.equal(buttons(msg).length, 2, 'still decidable');
  });

  test('escalation mentions reach people: group names mapped by slack.mentions become user-group and user pings', async () => {
    const mapped = new SlackChannel({ botToken: slack.token, channel: '#db-approvals', escalationChannel: '#db-escalations', apiUrl: slack.apiUrl, mentions: { dba: ['S0DBA0001'], 'dba-leads': ['U0LEAD001', 'U0LEAD002'] } });
    const ref = await mapped.post(view());
    const before = slack.messagesIn(escalations).length;
    await mapped.escalate(ref, view(), { mention: ['dba', '@dba-leads', 'unmapped'] });
    const esc = slack.messagesIn(escalations).slice(before);
    assert.match(esc[0].text, /^:rotating_light: <!subteam\^S0DBA0001> <@U0LEAD001> <@U0LEAD002> @unmapped approval request/);
  });

  test('a step channel overrides the configured escalation channel; with none, the thread is broadcast', async () => {
    const oncall = slack.addChannel('oncall');
    const ref = await channel.post(view());
    await channel.escalate(ref, view(), { mention: ['@sre-oncall'], channel: '#oncall' });
    assert.match(slack.messagesIn(oncall)[0].text, /@sre-oncall/);

    const plain = new SlackChannel({ botToken: slack.token, channel: '#db-approvals', apiUrl: slack.apiUrl });
    const ref2 = await plain.post(view());
    await plain.escalate(ref2, view(), { mention: ['W0123ABCD'] });
    const [r] = slack.replies(approvals, ref2.ts);
    assert.equal(r.reply_broadcast, true);
    assert.match(r.text, /<@W0123ABCD>/);
  });

  test('escalation still goes out when the request message was deleted', async () => {
    const before = slack.messagesIn(escalations).length;
    await channel.escalate({ channel: approvals, ts: '1.000001' }, view(), { mention: ['dba-leads'] });
    const esc = slack.messagesIn(escalations);
    assert.equal(esc.length, before + 1);
    assert.match(esc.at(-1)!.text, /@dba-leads approval request req-7f3a/);
  });

  test('reply posts into the request thread', async () => {
    const ref = await channel.post(view());
    await channel.reply(ref, 'ran: DELETE 42 in 18 ms; masked columns: none <ok>');
    const [r] = slack.replies(approvals, ref.ts);
    assert.equal(r.text, 'ran: DELETE 42 in 18 ms; masked columns: none &lt;ok&gt;');
    assert.equal(r.thread_ts, ref.ts);
  });

  test('attachLog uploads the session log into the thread, bytes intact', async () => {
    const ref = await channel.post(view());
    const content = `{"version":2}\n${'[1.0, "o", "héllo ✓ 日本"]\n'.repeat(2000)}`;
    await channel.attachLog(ref, 'session-42.log', content);
    const steps = slack.calls.slice(-3).map((c) => c.method);
    assert.deepEqual(steps, ['files.getUploadURLExternal', 'upload', 'files.completeUploadExternal']);
    const file = [...slack.files.values()].find((f) => f.filename === 'session-42.log');
    assert.ok(file?.content);
    assert.equal(file.content.toString('utf8'), content);
    assert.equal(file.length, Buffer.byteLength(content));
    assert.deepEqual({ ch: file.channel_id, ts: file.thread_ts, done: file.completed }, { ch: approvals, ts: ref.ts, done: true });
  });

  test('HTTP 500 is a retryable error', async () => {
    slack.failNext(1, { kind: 'http', status: 503 }, 'chat.postMessage');
    await assert.rejects(channel.post(view()), (e: unknown) => e instanceof ChatRetryableError && e.name === 'ChatRetryableError' && /HTTP 503/.test(e.message));
    assert.ok(await channel.post(view()), 'works again once Slack recovers');
  });

  test('429 is retryable, carries Retry-After, and is not slept on inside the call', async () => {
    slack.failNext(1, { kind: 'rate-limit', retryAfterSeconds: 30 }, 'chat.update');
    const ref = await channel.post(view());
    const t0 = Date.now();
    await assert.rejects(channel.update(ref, view()), (e: unknown) => e instanceof ChatRetryableError && e.retryAfterMs === 30_000);
    assert.ok(Date.now() - t0 < 2000, 'Temporal does the waiting, not the WebClient');
  });

  test('a Slack that does not answer is a retryable timeout', async () => {
    slack.failNext(1, { kind: 'hang' }, 'chat.postMessage');
    const t0 = Date.now();
    await assert.rejects(channel.post(view()), (e: unknown) => e instanceof ChatRetryableError && e.code === 'timeout');
    assert.ok(Date.now() - t0 < 3000);
  });

  test('a transient platform error is retryable', async () => {
    slack.failNext(1, { kind: 'error', error: 'internal_error' }, 'chat.postMessage');
    await assert.rejects(channel.post(view()), ChatRetryableError);
  });

  test('a wrong token is a permanent error that says what to fix', async () => {
    const bad = new SlackChannel({ botToken: 'xoxb-wrong', channel: '#db-approvals', apiUrl: slack.apiUrl });
    await assert.rejects(bad.post(view()), (e: unknown) => e instanceof ChatPermanentError && e.name === 'ChatPermanentError' && e.code === 'invalid_auth' && /slack\.botToken/.test(e.message));
  });

  test('a missing channel or a channel the bot is not in is permanent', async () => {
    slack.addChannel('private-ops', { botIsMember: false });
    const missing = new SlackChannel({ botToken: slack.token, channel: '#nope', apiUrl: slack.apiUrl });
    await assert.rejects(missing.post(view()), (e: unknown) => e instanceof ChatPermanentError && e.code === 'channel_not_found');
    const notIn = new SlackChannel({ botToken: slack.token, channel: '#private-ops', apiUrl: slack.apiUrl });
    await assert.rejects(notIn.post(view()), (e: unknown) => e instanceof ChatPermanentError && /invite/.test(e.message));
  });

  test('an unreachable Slack is retryable', async () => {
    const gone = new SlackChannel({ botToken: slack.token, channel: '#db-approvals', apiUrl: 'http://127.0.0.1:1/api/' });
    await assert.rejects(gone.post(view()), (e: unknown) => e instanceof ChatRetryableError && e.code === 'unreachable');
  });

  test("the approval activities' classifier reads these errors as intended", async () => {
    slack.failNext(1, { kind: 'rate-limit', retryAfterSeconds: 12 }, 'chat.postMessage');
    const limited = await channel.post(view()).catch((e: unknown) => e);
    assert.deepEqual({ ...classifyChatError(limited), message: '' }, { retryable: true, retryAfterMs: 12_000, message: '' });
    slack.failNext(1, { kind: 'http', status: 502 }, 'chat.postMessage');
    assert.equal(classifyChatError(await channel.post(view()).catch((e: unknown) => e)).retryable, true);
    const bad = new SlackChannel({ botToken: 'xoxb-wrong', channel: '#db-approvals', apiUrl: slack.apiUrl });
    assert.equal(classifyChatError(await bad.post(view()).catch((e: unknown) => e)).retryable, false, 'a bad token fails closed at once');
  });

  test('a malformed message reference is refused before calling Slack', async () => {
    const before = slack.calls.length;
    await assert.rejects(channel.reply({ channel: approvals }, 'x'), ChatPermanentError);
    assert.equal(slack.calls.length, before);
  });
});
