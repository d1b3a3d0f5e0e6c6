import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ApprovalView } from '../../../bots/channel.ts';
import { CARD_CODE_MAX, cardDate, chunkText, escapeHtml, neutralizeMarkdown, renderCard, safeCut, summaryText } from '../../../bots/teams/cards.ts';
import { compactTranscript } from '../../../bots/teams/teams-channel.ts';
import { cardText } from '../../support/fake-bot-connector.ts';

function view(over: Partial<ApprovalView> = {}): ApprovalView {
  return {
    requestId: 'req-1',
    protocol: 'postgres',
    identity: 'agent-billing',
    owner: 'alice',
    connection: 'prod-db',
    text: 'DROP TABLE invoices',
    rule: 'review-ddl',
    reason: 'DDL on production',
    deadline: '2026-11-25T01:00:00.000Z',
    approverGroups: ['dba'],
    quorum: 1,
    status: 'pending',
    decidedBy: [],
    escalated: false,
    ...over,
  };
}

describe('Adaptive Card rendering of an approval request', () => {
  test('every final state removes the buttons and says what happened', () => {
    const expired = renderCard(view({ status: 'expired', escalated: true, decidedAt: '2026-11-25T01:00:00Z' })).card;
    assert.equal(expired.actions, undefined);
    assert.match(cardText(expired), /Expired\*\*: no decision by the deadline \(after escalation\); the operation was rejected/);
    assert.match(cardText(expired), /^Expired: postgres on prod-db/);
    const cancelled = renderCard(view({ status: 'cancelled' })).card;
    assert.equal(cancelled.actions, undefined);
    assert.match(cardText(cancelled), /Cancelled\*\*\n\nThe client went away before a decision/);
    const approved = renderCard(view({ status: 'approved', decidedBy: ['carol', 'erin'], decidedAt: '2026-11-25T00:05:00Z', quorum: 2 })).card;
    assert.match(cardText(approved), /Approved\*\* by carol, erin on \{\{DATE\(2026-11-25T00:05:00Z, SHORT\)\}\}/);
    assert.equal(approved.body.find((b) => b.type === 'Input.Text'), undefined);
  });

  test('a pending request keeps its buttons, with partial quorum and escalation shown', () => {
    const { card } = renderCard(view({ decidedBy: ['carol'], quorum: 2, escalated: true }));
    assert.equal(card.actions?.length, 2);
    assert.match(cardText(card), /Approved so far by carol \(1 of 2\)\n\n\*\*Escalated\*\*: no decision yet/);
  });

  test('the statement is cut at the card limit and flagged as truncated', () => {
    const { card, truncated } = renderCard(view({ text: 'x'.repeat(CARD_CODE_MAX + 10) }));
    assert.equal(truncated, true);
    const code = card.body.find((b) => b.type === 'CodeBlock')!;
    assert.equal(code.codeSnippet, `${'x'.repeat(CARD_CODE_MAX)}\n…`);
    assert.equal(renderCard(view()).truncated, false);
  });

  test('text from the request cannot become a link on the card', () => {
    const { card } = renderCard(view({ identity: '[click me](https://evil.example.com)', reason: 'see [docs](http://x)' }));
    const text = cardText(card);
    assert.ok(!text.includes(']('), text);
    assert.match(text, /Who: \[click me\]\u200b\(https:\/\/evil\.example\.com\)/);
    assert.equal(neutralizeMarkdown('[a](b)').replace('\u200b', ''), '[a](b)', 'what a reader sees is unchanged');
  });

  test('dates use the card date functions with second precision; nonsense is shown as is', () => {
    assert.equal(cardDate('2026-11-25T01:00:00.123Z'), '{{DATE(2026-11-25T01:00:00Z, SHORT)}} {{TIME(2026-11-25T01:00:00Z)}} (2026-11-25 01:00:00 UTC)');
    assert.equal(cardDate('soon'), 'soon');
    assert.equal(cardDate(undefined), 'unknown');
  });

  test('summaryText is one short line', () => {
    const s = summaryText(view({ text: 'SELECT\n  1\n'.repeat(100) }));
    assert.ok(s.length <= 300);
    assert.ok(!s.includes('\n'));
    assert.match(s, /^Approval required: agent-billing on prod-db \(postgres\): SELECT 1 SELECT 1/);
  });

  test('chunkText prefers line ends and never splits a surrogate pair', () => {
    assert.deepEqual(chunkText('aaaa\nbbbb\ncccc', 10), ['aaaa\nbbbb', '\ncccc']);
    const emoji = '😀'.repeat(10);
    for (const part of chunkText(emoji, 5)) assert.ok(!/^[\udc00-\udfff]|[\ud800-\udbff]$/.test(part), JSON.stringify(part));
    assert.equal(chunkText(emoji, 5).join(''), emoji);
    assert.deepEqual(chunkText('', 5), ['']);
  });
});

describe('cutting escaped text', () => {
  test('safeCut never splits an HTML entity or a surrogate pair', () => {
    const s = 'abc&amp;def';
    assert.equal(safeCut(s, 5), 3);
    assert.equal(safeCut(s, 8), 8);
    assert.equal(safeCut('a😀b', 2), 1);
    for (const part of chunkText(escapeHtml('<&>'.repeat(50)), 7)) assert.match(part, /^(&(lt|gt|amp);)+$/);
  });

  test('compactTranscript on one huge escaped line keeps whole entities at both cuts', () => {
    const escaped = escapeHtml('<x>&'.repeat(500));
    const { text } = compactTranscript(escaped, 101);
    const [head, tail] = text.split(/\n… \d+ lines omitted …\n/);
    assert.ok(head && tail, text);
    assert.match(head, /^(&(lt|gt|amp);|x)+$/);
    assert.match(tail, /^(&(lt|gt|amp);|x)+$/);
  });
});
