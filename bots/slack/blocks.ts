// Block Kit rendering of an approval request. Pure functions of the ApprovalView so that every
// post/update renders the same message for the same state (the workflow is the source of truth).
import type { types as slackTypes } from '@slack/bolt';
import { STATUS_TITLE, type ApprovalView } from '../channel.ts';
import { previewTable, previewTitle } from '../preview-text.ts';

export const APPROVE_ACTION = 'airlock_approve';
/** Approve as a reusable grant: the button value is `grantValue(...)`. */
export const APPROVE_GRANT_ACTION = 'airlock_approve_grant';
export const REJECT_ACTION = 'airlock_reject';
export const DECISION_BLOCK = 'airlock_decision';
export const REJECT_MODAL = 'airlock_reject_modal';
export const REASON_BLOCK = 'airlock_reason';
export const REASON_ACTION = 'reason';

/** Slack's limits (https://docs.slack.dev/reference/block-kit/blocks): section text 3000, header 150, field 2000. */
const SECTION_MAX = 3000;
const HEADER_MAX = 150;
const FIELD_MAX = 2000;
/** Room left for the statement inside the "What" section after its label and the code fences. */
export const CODE_MAX = SECTION_MAX - 100;
/** chat.postMessage `text` is cut by Slack at 40,000; keep notifications short anyway. */
const FALLBACK_MAX = 300;

export type Block = Record<string, unknown> & { type: string };

/** Escapes the three characters mrkdwn treats as control (so `<!channel>` in a statement pings no one). */
export function escapeMrkdwn(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Code block content: escaped, and a literal ``` cannot close the fence early. */
function escapeCode(s: string): string {
  return escapeMrkdwn(s).replace(/```/g, '`\u200b`\u200b`');
}

function escapedLength(ch: string): number {
  return ch === '&' ? 5 : ch === '<' || ch === '>' ? 4 : ch === '`' ? 2 : ch.length;
}

/**
 * Longest prefix of `raw` whose code-escaped form fits in `limit` characters (never splitting a
 * surrogate pair). The escaped length of "`" is over-estimated, which only errs on the short side.
 */
export function fitCode(raw: string, limit: number): { shown: string; truncated: boolean } {
  let used = 0;
  let end = 0;
  for (const ch of raw) {
    const n = escapedLength(ch);
    if (used + n > limit) return { shown: raw.slice(0, end), truncated: true };
    used += n;
    end += ch.length;
  }
  return { shown: raw, truncated: false };
}

/** Splits `raw` into pieces that each fit `limit` once escaped, preferring to cut at line ends. */
export function chunkCode(raw: string, limit: number): string[] {
  const out: string[] = [];
  let rest = raw;
  while (rest.length > 0) {
    const { shown, truncated } = fitCode(rest, limit);
    if (!truncated) {
      out.push(rest);
      break;
    }
    const nl = shown.lastIndexOf('\n');
    const cut = nl > shown.length / 2 ? nl + 1 : shown.length;
    out.push(rest.slice(0, cut));
    rest = rest.slice(cut);
  }
  return out;
}

function clip(s: string, max: number): string {
  if (s.length <= max) return s;
  return `${s.slice(0, max - 1)}…`;
}

/** `<!date^…>` renders in each reader's own time zone; the fallback is shown by old clients. */
export function slackDate(iso: string | undefined, format = '{date_short_pretty} at {time}'): string {
  if (!iso) return 'unknown';
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return escapeMrkdwn(iso);
  return `<!date^${Math.floor(ms / 1000)}^${format}|${new Date(ms).toISOString()}>`;
}

function code(s: string): string {
  return `\`${escapeMrkdwn(s).replace(/`/g, "'")}\``;
}

function list(names: string[]): string {
  return names.map(code).join(', ');
}

const statusEmoji: Record<ApprovalView['status'], string> = {
  pending: ':lock:',
  approved: ':white_check_mark:',
  rejected: ':x:',
  expired: ':hourglass:',
  cancelled: ':no_entry_sign:',
  abandoned: ':ghost:',
};

/** Milliseconds as people say them: 90s, 10 minutes, 2 hours. */
export function humanDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} hour${ms === 3_600_000 ? '' : 's'}`;
  if (ms % 60_000 === 0) return `${ms / 60_000} minute${ms === 60_000 ? '' : 's'}`;
  return `${Math.round(ms / 1000)} seconds`;
}

/** The grant button's value: which request, for how long (the worker caps it at the rule's grantTtl anyway). */
export function grantValue(requestId: string, forMs: number): string {
  return JSON.stringify({ requestId, forMs });
}

export function parseGrantValue(v: string | undefined): { requestId: string; forMs: number } | undefined {
  try {
    const o = JSON.parse(v ?? '') as { requestId?: unknown; forMs?: unknown };
    if (typeof o.requestId === 'string' && o.requestId && typeof o.forMs === 'number' && Number.isInteger(o.forMs) && o.forMs > 0) return { requestId: o.requestId, forMs: o.forMs };
  } catch {
    // a damaged button: refused by the caller
  }
  return undefined;
}

/** One-line plain summary: notifications, screen readers and the message's `text`. */
export function fallbackText(view: ApprovalView): string {
  const head = view.status === 'pending' ? 'Approval required' : `${STATUS_TITLE[view.status]}`;
  const one = view.text.replace(/\s+/g, ' ').trim();
  return escapeMrkdwn(clip(`${head}: ${view.identity} on ${view.connection} (${view.protocol}): ${one}`, FALLBACK_MAX));
}

/** The status line under the request: decisions, partial quorum, escalation. */
export function statusLine(view: ApprovalView): string {
  const by = view.decidedBy.length ? list(view.decidedBy) : 'nobody';
  const when = view.decidedAt ? ` ${slackDate(view.decidedAt)}` : '';
  const why = view.decisionReason ? `\n>${escapeMrkdwn(clip(view.decisionReason, 1500)).replace(/\n/g, '\n>')}` : '';
  switch (view.status) {
    case 'pending': {
      const parts: string[] = [];
      if (view.decidedBy.length > 0) parts.push(`:ballot_box_with_check: Approved so far by ${by} (${view.decidedBy.length} of ${view.quorum})`);
      else parts.push(`:hourglass_flowing_sand: Waiting for ${view.quorum} approval${view.quorum > 1 ? 's' : ''}`);
      if (view.escalated) parts.push(':rotating_light: *Escalated*: no decision yet');
      return parts.join('\n');
    }
    case 'approved': {
      const g = view.grant;
      const reuse = g ? `\n:repeat: Reusable for ${humanDuration(g.forMs)}${g.runs ? ` (at most ${g.runs} run${g.runs === 1 ? '' : 's'})` : ''}` : '\n_Approved once: the same operation asks again._';
      const uses = view.uses ? ` · ran ${view.uses} time${view.uses === 1 ? '' : 's'}` : '';
      return `${statusEmoji.approved} *Approved* by ${by}${when}${reuse}${uses}${why}`;
    }
    case 'rejected':
      return `${statusEmoji.rejected} *Rejected* by ${by}${when}${why}`;
    case 'expired':
      return `${statusEmoji.expired} *Expired*: no decision by the deadline${view.escalated ? ' (after escalation)' : ''}; the operation was rejected${when}${why}`;
    case 'cancelled':
      return `${statusEmoji.cancelled} *Cancelled*${when}${why || '\n>the client went away before a decision'}`;
    case 'abandoned':
      return `${statusEmoji.abandoned} *Abandoned*: the gateway holding the operation is gone; nothing is waiting, nothing would run${when}${why}`;
  }
}

export interface RenderedApproval {
  text: string;
  blocks: Block[];
  /** True when the statement did not fit: the caller posts the full text in the thread. */
  truncated: boolean;
}

export function renderApproval(view: ApprovalView): RenderedApproval {
  const who = view.owner ? `${code(view.identity)} (agent of ${code(view.owner)})` : code(view.identity);
  const { shown, truncated } = fitCode(view.text, CODE_MAX);
  const what = `*What*\n\`\`\`${escapeCode(shown)}${truncated ? '\n…' : ''}\`\`\`${truncated ? `\n_Truncated (${view.text.length} characters): the full text is in the thread._` : ''}`;
  const groups = list(view.approverGroups);
  const blocks: Block[] = [
    {
      type: 'header',
      text: { type: 'plain_text', text: clip(`${STATUS_TITLE[view.status]}: ${view.protocol} on ${view.connection}`, HEADER_MAX), emoji: true },
    },
    {
      type: 'section',
      block_id: 'airlock_request',
      fields: [
        { type: 'mrkdwn', text: clip(`*Who*\n${who}`, FIELD_MAX) },
        { type: 'mrkdwn', text: clip(`*Where*\n${code(view.connection)} (${escapeMrkdwn(view.protocol)})`, FIELD_MAX) },
        { type: 'mrkdwn', text: clip(`*Why*\nrule ${code(view.rule)}: ${escapeMrkdwn(view.reason)}`, FIELD_MAX) },
        { type: 'mrkdwn', text: `*Deadline*\n${slackDate(view.deadline)}` },
        { type: 'mrkdwn', text: clip(`*Approvers needed*\n${view.quorum} from ${groups}`, FIELD_MAX) },
      ],
    },
    { type: 'section', block_id: 'airlock_what', text: { type: 'mrkdwn', text: what } },
    ...contextBlocks(view),
    { type: 'section', block_id: 'airlock_status', text: { type: 'mrkdwn', text: clip(statusLine(view), SECTION_MAX) } },
    {
      type: 'context',
      block_id: 'airlock_meta',
      elements: [{ type: 'mrkdwn', text: `Request ${code(view.requestId)} · the requester and the agent's owner cannot approve` }],
    },
  ];
  // Buttons only while a decision can still be made; partial quorum keeps them for the next approver.
  if (view.status === 'pending') {
    const ttl = view.grantTtlMs ?? 0;
    const elements: Block[] = [
      {
        type: 'button',
        action_id: APPROVE_ACTION,
        style: 'primary',
        text: { type: 'plain_text', text: 'Approve once', emoji: true },
        value: view.requestId,
        confirm: {
          title: { type: 'plain_text', text: 'Approve once?' },
          text: { type: 'plain_text', text: clip(`This exact operation runs once on ${view.connection} as ${view.identity}. Running it again asks again.`, 300) },
          confirm: { type: 'plain_text', text: 'Approve once' },
          deny: { type: 'plain_text', text: 'Cancel' },
        },
      },
    ];
    if (ttl > 0) {
      elements.push({
        type: 'button',
        action_id: APPROVE_GRANT_ACTION,
        text: { type: 'plain_text', text: clip(`Approve for ${humanDuration(ttl)}`, 75), emoji: true },
        value: grantValue(view.requestId, ttl),
        confirm: {
          title: { type: 'plain_text', text: 'Make it reusable?' },
          text: {
            type: 'plain_text',
            text: clip(`The approval becomes reusable: ${view.identity} may run this exact operation again on ${view.connection} for ${humanDuration(ttl)} without a new request. Each run is reported in this thread.`, 300),
          },
          confirm: { type: 'plain_text', text: `Approve for ${humanDuration(ttl)}`.slice(0, 30) },
          deny: { type: 'plain_text', text: 'Cancel' },
        },
      });
    }
    blocks.push({
      type: 'actions',
      block_id: DECISION_BLOCK,
      elements: [
        ...elements,
        {
          type: 'button',
          action_id: REJECT_ACTION,
          style: 'danger',
          text: { type: 'plain_text', text: 'Reject', emoji: true },
          value: view.requestId,
        },
      ],
    });
  }
  return { text: fallbackText(view), blocks, truncated };
}

/** Parameters, details (tables, session, client address) and how many sessions wait, when known. */
function contextBlocks(view: ApprovalView): Block[] {
  const out: Block[] = [];
  if (view.parameters && view.parameters.length > 0) {
    const lines = view.parameters.map((p, i) => `$${i + 1} = ${p}`).join('\n');
    const { shown, truncated } = fitCode(lines, CODE_MAX);
    out.push({ type: 'section', block_id: 'airlock_parameters', text: { type: 'mrkdwn', text: `*Parameters* (the approval covers exactly these values)\n\`\`\`${escapeCode(shown)}${truncated ? '\n…' : ''}\`\`\`` } });
  }
  if (view.preview) {
    const table = previewTable(view.preview);
    const { shown, truncated } = fitCode(table, CODE_MAX);
    const text = `*${escapeMrkdwn(previewTitle(view.preview))}*${table ? `\n\`\`\`${escapeCode(shown)}${truncated ? '\n…' : ''}\`\`\`` : ''}`;
    out.push({ type: 'section', block_id: 'airlock_preview', text: { type: 'mrkdwn', text: clip(text, SECTION_MAX) } });
  }
  const details = [...(view.details ?? [])];
  if (view.waiting !== undefined && view.waiting > 1) details.push(`${view.waiting} sessions are waiting on this request`);
  if (details.length > 0) {
    out.push({ type: 'section', block_id: 'airlock_details', text: { type: 'mrkdwn', text: clip(`*Details*\n${details.map((d) => `• ${escapeMrkdwn(d)}`).join('\n')}`, SECTION_MAX) } });
  }
  return out;
}

/** The modal that asks a rejecter for a reason. */
export function rejectModal(requestId: string, channel: string, ts: string): slackTypes.ModalView {
  return {
    type: 'modal',
    callback_id: REJECT_MODAL,
    private_metadata: JSON.stringify({ requestId, channel, ts }),
    title: { type: 'plain_text', text: 'Reject request' },
    submit: { type: 'plain_text', text: 'Reject' },
    close: { type: 'plain_text', text: 'Cancel' },
    blocks: [
      { type: 'section', text: { type: 'mrkdwn', text: `Rejecting request ${code(requestId)}. The requester sees your reason.` } },
      {
        type: 'input',
        block_id: REASON_BLOCK,
        label: { type: 'plain_text', text: 'Reason' },
        element: { type: 'plain_text_input', action_id: REASON_ACTION, multiline: true, min_length: 1, max_length: 1000 },
      },
    ],
  };
}

/** `<!subteam^S…>` for Slack user groups, `<@U…>` for users, `<!here>` etc.; other names as plain `@name`. */
export function formatMention(m: string): string {
  const s = m.trim();
  if (/^<[@!#].*>$/.test(s)) return s;
  const bare = s.replace(/^@/, '');
  if (/^S[A-Z0-9]{6,}$/.test(bare)) return `<!subteam^${bare}>`;
  if (/^[UW][A-Z0-9]{6,}$/.test(bare)) return `<@${bare}>`;
  if (bare === 'here' || bare === 'channel' || bare === 'everyone') return `<!${bare}>`;
  return `@${escapeMrkdwn(bare)}`;
}

/** `/airlock pending`: one line per pending request, oldest deadline first. */
export function pendingList(views: ApprovalView[]): string {
  const pending = views.filter((v) => v.status === 'pending').sort((a, b) => Date.parse(a.deadline) - Date.parse(b.deadline));
  if (pending.length === 0) return ':white_check_mark: No approval requests are pending.';
  const lines = pending.slice(0, 20).map((v) => {
    const one = clip(v.text.replace(/\s+/g, ' ').trim(), 120);
    return `• ${code(v.requestId)} ${code(v.identity)} on ${code(v.connection)}: ${code(one)} (${v.decidedBy.length}/${v.quorum} approvals, deadline ${slackDate(v.deadline, '{time}')})`;
  });
  const more = pending.length > 20 ? `\n…and ${pending.length - 20} more` : '';
  return clip(`*${pending.length} pending approval request${pending.length === 1 ? '' : 's'}*\n${lines.join('\n')}${more}`, SECTION_MAX);
}
