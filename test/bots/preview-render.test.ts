// A held write's preview and the agent's reason as each chat shows them: compact, masked values
// only, markup in values neutralised.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ApprovalView } from '../../bots/channel.ts';
import { previewTable } from '../../bots/preview-text.ts';
import { renderApproval } from '../../bots/slack/blocks.ts';
import { renderCard } from '../../bots/teams/cards.ts';

const view: ApprovalView = {
  requestId: 'airlock-1',
  protocol: 'postgres',
  identity: 'agent-1',
  owner: 'alice',
  connection: 'app',
  text: "UPDATE dr SET owner = 'x' WHERE id <= 2",
  rule: 'dry-dr',
  reason: 'writes to dr',
  deadline: new Date(Date.now() + 600_000).toISOString(),
  approverGroups: ['dba'],
  quorum: 1,
  status: 'pending',
  decidedBy: [],
  escalated: false,
  details: [`agent's reason: "clean up *dupes* <!here>" (sql comment)`, "agent's owner: alice", 'before this: 2 read; tables public.dr'],
  preview: {
    kind: 'dry-run',
    summary: 'dry run: UPDATE 2, rolled back; sample of rows as written (after)',
    rows: 2,
    sample: [
      ['id', 'owner', 'secret'],
      ['1', 'x', '[redacted]'],
      ['2', 'x', '[redacted]'],
    ],
  },
};

test('the sample is an aligned table: header, rule, rows', () => {
  assert.equal(previewTable(view.preview!), ['id | owner | secret', '---+-------+-----------', '1  | x     | [redacted]', '2  | x     | [redacted]'].join('\n'));
});

test('long cells and many rows are cut', () => {
  const t = previewTable({ kind: 'dry-run', summary: 's', sample: [['v'], ...Array.from({ length: 9 }, () => ['y'.repeat(100)])] });
  assert.ok(t.split('\n').every((l) => l.length <= 30), t);
  assert.match(t, /… 3 more sample rows$/);
});

test('Slack: a preview section with the summary and the table; the reason in the details, mrkdwn escaped', () => {
  const { blocks } = renderApproval(view);
  const preview = blocks.find((b) => (b as { block_id?: string }).block_id === "airlock_preview") as unknown as { text: { text: string } } | undefined;
  assert.ok(preview, JSON.stringify(blocks));
  assert.match(preview.text.text, /^\*Preview \(dry-run\): dry run: UPDATE 2, rolled back/);
  assert.ok(preview.text.text.includes('```id | owner | secret\n'));
  const details = blocks.find((b) => (b as { block_id?: string }).block_id === "airlock_details") as unknown as { text: { text: string } };
  assert.ok(details.text.text.includes("agent's reason"));
  assert.ok(!details.text.text.includes('<!here>'), 'no mention injection from the reason');
});

test('Teams: preview title and a monospace sample; the reason in the details', () => {
  const { card } = renderCard(view);
  const body = card.body as Array<{ id?: string; text?: string; fontType?: string }>;
  const title = body.find((b) => b.id === 'preview');
  const sample = body.find((b) => b.id === 'preview-sample');
  assert.match(title?.text ?? '', /Preview \(dry-run\)/);
  assert.equal(sample?.fontType, 'Monospace');
  assert.ok(sample?.text?.includes('[redacted]'));
  assert.ok(body.find((b) => b.id === 'details')?.text?.includes("agent's reason"));
});
