// The held write's effect (ApprovalView.preview) as compact monospace text, the same in every
// chat: one summary line, then a small aligned table of the (masked) sample rows.
import type { ApprovalPreview } from './channel.ts';

const MAX_ROWS = 6;
const MAX_COLS = 8;
const MAX_CELL = 24;

function cell(v: string): string {
  // eslint-disable-next-line no-control-regex
  const one = v.replace(/[\u0000-\u001f\u007f]+/g, ' ');
  return one.length > MAX_CELL ? `${one.slice(0, MAX_CELL - 1)}…` : one;
}

/** The sample as an aligned text table (header, rule line, rows), or '' without a sample. */
export function previewTable(p: ApprovalPreview): string {
  const sample = p.sample;
  if (!sample || sample.length === 0) return '';
  const rows = sample.slice(0, MAX_ROWS + 1).map((r) => {
    const cut = r.slice(0, MAX_COLS).map(cell);
    if (r.length > MAX_COLS) cut.push('…');
    return cut;
  });
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  const line = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join(' | ').trimEnd();
  const out = [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('-+-'), ...rows.slice(1).map(line)];
  if (sample.length - 1 > MAX_ROWS) out.push(`… ${sample.length - 1 - MAX_ROWS} more sample rows`);
  return out.join('\n');
}

/** Title line: `Preview (dry-run): UPDATE 3, rolled back`. */
export function previewTitle(p: ApprovalPreview): string {
  return `Preview (${p.kind}): ${p.summary}`;
}
