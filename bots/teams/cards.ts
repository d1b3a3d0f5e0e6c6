// Adaptive Card (1.5) rendering of an approval request: a pure function of the ApprovalView, so
// every post/update shows the workflow's state and nothing else. Buttons are Universal Actions
// (`Action.Execute`, verbs approve/reject) with an `Action.Submit` fallback for clients that do
// not know them; the statement is a Teams `CodeBlock` with a monospace TextBlock fallback.
import { STATUS_TITLE, type ApprovalView } from '../channel.ts';
import { previewTable, previewTitle } from '../preview-text.ts';

export const ADAPTIVE_CARD = 'application/vnd.microsoft.card.adaptive';
export const VERB_APPROVE = 'approve';
export const VERB_REJECT = 'reject';
export const REASON_INPUT = 'reason';
/** The approve confirm step's choice: 'once', or a grant duration in milliseconds. */
export const GRANT_INPUT = 'grant';
/** Statement characters shown on the card; the rest goes to the thread. */
export const CARD_CODE_MAX = 3000;
const REASON_MAX = 1000;

export type CardElement = Record<string, unknown> & { type: string };

export interface AdaptiveCard {
  type: 'AdaptiveCard';
  $schema: string;
  version: '1.5';
  body: CardElement[];
  actions?: CardElement[];
  msteams?: Record<string, unknown>;
  fallbackText?: string;
}

export interface CardNotice {
  text: string;
  tone: 'good' | 'attention' | 'warning';
}

export interface RenderedCard {
  card: AdaptiveCard;
  /** True when the statement did not fit: the caller posts the full text in the thread. */
  truncated: boolean;
}

function clip(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

/**
 * TextBlocks render a markdown subset: text from the request (names, reasons) must not become a
 * link that an approver clicks. A zero-width space breaks `[text](url)` without changing what a
 * reader sees; emphasis is left alone (cosmetic only, and ids stay copyable).
 */
export function neutralizeMarkdown(s: string): string {
  return s.replace(/\]\(/g, ']\u200b(');
}

/** Adaptive Card date functions need second precision with a Z; clients then show local time. */
export function cardDate(iso: string | undefined): string {
  if (!iso) return 'unknown';
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return neutralizeMarkdown(iso);
  const z = new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
  return `{{DATE(${z}, SHORT)}} {{TIME(${z})}} (${z.replace('T', ' ').replace('Z', ' UTC')})`;
}

function names(list: string[]): string {
  return list.length ? list.map(neutralizeMarkdown).join(', ') : 'nobody';
}

/** The status line: decisions, partial quorum, escalation. */
export function statusText(view: ApprovalView): string {
  const by = names(view.decidedBy);
  const when = view.decidedAt ? ` on ${cardDate(view.decidedAt)}` : '';
  const why = view.decisionReason ? `\n\nReason: ${neutralizeMarkdown(clip(view.decisionReason, REASON_MAX))}` : '';
  switch (view.status) {
    case 'pending': {
      const parts: string[] = [];
      parts.push(view.decidedBy.length > 0 ? `Approved so far by ${by} (${view.decidedBy.length} of ${view.quorum})` : `Waiting for ${view.quorum} approval${view.quorum > 1 ? 's' : ''}`);
      if (view.escalated) parts.push('**Escalated**: no decision yet');
      return parts.join('\n\n');
    }
    case 'approved': {
      const g = view.grant;
      const reuse = g ? `\n\nReusable for ${duration(g.forMs)}${g.runs ? ` (at most ${g.runs} runs)` : ''}` : '\n\nApproved once: the same operation asks again.';
      return `**Approved** by ${by}${when}${reuse}${why}`;
    }
    case 'rejected':
      return `**Rejected** by ${by}${when}${why}`;
    case 'expired':
      return `**Expired**: no decision by the deadline${view.escalated ? ' (after escalation)' : ''}; the operation was rejected${when}${why}`;
    case 'cancelled':
      return `**Cancelled**${when}${why || '\n\nThe client went away before a decision.'}`;
    case 'abandoned':
      return `**Abandoned**: the gateway holding the operation is gone; nothing is waiting, nothing would run${when}${why}`;
  }
}

const statusColor: Record<ApprovalView['status'], string> = {
  pending: 'Default',
  approved: 'Good',
  rejected: 'Attention',
  expired: 'Warning',
  cancelled: 'Warning',
  abandoned: 'Warning',
};

/** Plain one-line summary: notifications and the activity's `summary`. */
export function summaryText(view: ApprovalView): string {
  const one = view.text.replace(/\s+/g, ' ').trim();
  return clip(`${STATUS_TITLE[view.status]}: ${view.identity} on ${view.connection} (${view.protocol}): ${one}`, 300);
}

/** Milliseconds as people say them. */
export function duration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} hour${ms === 3_600_000 ? '' : 's'}`;
  if (ms % 60_000 === 0) return `${ms / 60_000} minute${ms === 60_000 ? '' : 's'}`;
  return `${Math.round(ms / 1000)} seconds`;
}

/**
 * Approve opens a confirm step (Action.ShowCard: works in every Teams client) that says what
 * approving does and, when the rule allows reuse, offers the grant choice; only its Confirm
 * button submits the approval.
 */
function approveStep(view: ApprovalView): CardElement {
  const ttl = view.grantTtlMs ?? 0;
  const body: CardElement[] = [
    { type: 'TextBlock', text: neutralizeMarkdown(`Approve: this exact operation runs on ${view.connection} as ${view.identity}.`), weight: 'Bolder', wrap: true },
  ];
  if (ttl > 0) {
    body.push({
      type: 'Input.ChoiceSet',
      id: GRANT_INPUT,
      label: 'How long does this approval hold?',
      style: 'expanded',
      value: 'once',
      choices: [
        { title: 'Once: running it again asks again', value: 'once' },
        { title: `For ${duration(ttl)}: the approval becomes reusable for this exact operation`, value: String(ttl) },
      ],
    });
  } else {
    body.push({ type: 'TextBlock', text: 'The approval releases it once; running it again asks again.', isSubtle: true, wrap: true });
  }
  return {
    type: 'Action.ShowCard',
    title: 'Approve…',
    style: 'positive',
    card: { type: 'AdaptiveCard', body, actions: [decisionAction(VERB_APPROVE, 'Confirm approval', 'positive', view.requestId, true)] },
  };
}

function decisionAction(verb: string, title: string, style: 'positive' | 'destructive', requestId: string, withInputs: boolean): CardElement {
  return {
    type: 'Action.Execute',
    verb,
    title,
    style,
    data: { requestId },
    associatedInputs: withInputs ? 'auto' : 'none',
    // Clients without Universal Actions send a message activity whose `value` carries this data.
    fallback: { type: 'Action.Submit', title, style, data: { verb, requestId }, associatedInputs: withInputs ? 'auto' : 'none' },
  };
}

export function renderCard(view: ApprovalView, notice?: CardNotice): RenderedCard {
  const truncated = view.text.length > CARD_CODE_MAX;
  const shown = truncated ? `${view.text.slice(0, CARD_CODE_MAX)}\n…` : view.text;
  const who = view.owner ? `${view.identity} (agent of ${view.owner})` : view.identity;
  const body: CardElement[] = [
    { type: 'TextBlock', text: clip(`${STATUS_TITLE[view.status]}: ${view.protocol} on ${view.connection}`, 150), size: 'Large', weight: 'Bolder', wrap: true, style: 'heading' },
    {
      type: 'FactSet',
      facts: [
        { title: 'Who', value: neutralizeMarkdown(who) },
        { title: 'Where', value: neutralizeMarkdown(`${view.connection} (${view.protocol})`) },
        { title: 'Why', value: neutralizeMarkdown(`rule ${view.rule}: ${clip(view.reason, 500)}`) },
        { title: 'Deadline', value: cardDate(view.deadline) },
        { title: 'Approvers', value: `${view.quorum} from ${names(view.approverGroups)}` },
        { title: 'Request', value: neutralizeMarkdown(view.requestId) },
      ],
    },
    { type: 'TextBlock', text: 'What', weight: 'Bolder', spacing: 'Medium' },
    {
      type: 'CodeBlock',
      codeSnippet: shown,
      language: view.protocol === 'postgres' ? 'SQL' : 'PlainText',
      startLineNumber: 1,
      fallback: { type: 'TextBlock', text: neutralizeMarkdown(shown), fontType: 'Monospace', wrap: true },
    },
  ];
  if (truncated) body.push({ type: 'TextBlock', text: `Truncated (${view.text.length} characters): the full text is in the thread.`, isSubtle: true, size: 'Small', wrap: true });
  if (view.parameters && view.parameters.length > 0) {
    body.push({ type: 'TextBlock', text: 'Parameters (the approval covers exactly these values)', weight: 'Bolder', spacing: 'Medium' });
    body.push({ type: 'TextBlock', text: neutralizeMarkdown(clip(view.parameters.map((p, i) => `$${i + 1} = ${p}`).join('\n'), CARD_CODE_MAX)), fontType: 'Monospace', wrap: true });
  }
  if (view.preview) {
    body.push({ type: 'TextBlock', id: 'preview', text: neutralizeMarkdown(previewTitle(view.preview)), weight: 'Bolder', wrap: true, spacing: 'Medium' });
    const table = previewTable(view.preview);
    if (table) body.push({ type: 'TextBlock', id: 'preview-sample', text: neutralizeMarkdown(clip(table, CARD_CODE_MAX)), fontType: 'Monospace', wrap: true });
  }
  const details = [...(view.details ?? [])];
  if (view.waiting !== undefined && view.waiting > 1) details.push(`${view.waiting} sessions are waiting on this request`);
  if (details.length > 0) body.push({ type: 'TextBlock', id: 'details', text: neutralizeMarkdown(clip(details.map((d) => `- ${d}`).join('\n'), 2000)), wrap: true, spacing: 'Medium' });
  body.push({ type: 'TextBlock', id: 'status', text: statusText(view), color: statusColor[view.status], wrap: true, spacing: 'Medium' });
  if (notice) body.push({ type: 'TextBlock', id: 'notice', text: neutralizeMarkdown(notice.text), color: notice.tone === 'good' ? 'Good' : notice.tone === 'warning' ? 'Warning' : 'Attention', weight: 'Bolder', wrap: true });
  body.push({ type: 'TextBlock', text: 'The requester and the agent\u2019s owner cannot approve.', isSubtle: true, size: 'Small', wrap: true });

  const card: AdaptiveCard = {
    type: 'AdaptiveCard',
    $schema: 'http://adaptivecards.io/schemas/adaptive-card.json',
    version: '1.5',
    body,
    msteams: { width: 'Full' },
    fallbackText: summaryText(view),
  };
  // Buttons only while a decision can still be made; partial quorum keeps them for the next approver.
  if (view.status === 'pending') {
    body.push({
      type: 'Input.Text',
      id: REASON_INPUT,
      label: 'Reason (required to reject)',
      placeholder: 'Why should this not run? The requester sees this.',
      isMultiline: true,
      maxLength: REASON_MAX,
    });
    card.actions = [approveStep(view), decisionAction(VERB_REJECT, 'Reject', 'destructive', view.requestId, true)];
  }
  return { card, truncated };
}

export function cardAttachment(card: AdaptiveCard): { contentType: string; content: AdaptiveCard } {
  return { contentType: ADAPTIVE_CARD, content: card };
}

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Moves a cut back so it splits neither a surrogate pair nor an HTML entity (`&amp;`). */
export function safeCut(s: string, cut: number): number {
  let c = Math.min(cut, s.length);
  const code = s.charCodeAt(c - 1);
  if (code >= 0xd800 && code <= 0xdbff) c -= 1;
  const amp = s.lastIndexOf('&', c - 1);
  if (amp !== -1 && c - amp <= 8 && s.indexOf(';', amp) >= c) c = amp;
  return c > 0 ? c : Math.min(cut, s.length);
}

/**
 * Splits text into pieces of at most `max` characters, preferring line ends, never splitting a
 * surrogate pair or an HTML entity (so escaped text can be chunked after escaping).
 */
export function chunkText(text: string, max: number): string[] {
  const out: string[] = [];
  let rest = text;
  while (rest.length > max) {
    let cut = rest.lastIndexOf('\n', max);
    if (cut < max / 2) cut = safeCut(rest, max);
    out.push(rest.slice(0, cut));
    rest = rest.slice(cut);
  }
  if (rest.length > 0 || out.length === 0) out.push(rest);
  return out;
}
