// `airlock approvals`: the offline (local channel) approval inbox. Decisions take the same path
// as Slack's buttons, a validated Update on the request's workflow, so the same rules apply (no
// self-approval, approver groups, quorum) and every attempt is audited.
//
// `--as NAME` is taken on trust from whoever can run this command with the config: the local
// channel is for single-machine and offline setups. Where people must prove who they are, use
// Slack or Teams, whose identity comes from the chat account.
import { Command } from 'commander';
import type { ApprovalView } from '../../bots/channel.ts';
import { LocalChannel, type LocalRequest } from '../../bots/local/local-channel.ts';
import { configPath, loadConfig, type LoadedConfig } from '../config/load.ts';

const DEFAULT_CONFIG = process.env.AIRLOCK_CONFIG ?? 'airlock.yaml';

function withConfig(cmd: Command): Command {
  return cmd.option('-c, --config <file>', 'config file (or AIRLOCK_CONFIG)', DEFAULT_CONFIG);
}

/** Statement text and names come from clients: never let them drive the terminal. */
function clean(s: string): string {
  return s.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function oneLine(s: string, max: number): string {
  const flat = clean(s).replace(/\s+/g, ' ').trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${s % 60 ? `${String(s % 60).padStart(2, '0')}s` : ''}`;
  const h = Math.floor(m / 60);
  return `${h}h${m % 60 ? `${String(m % 60).padStart(2, '0')}m` : ''}`;
}

function who(v: ApprovalView): string {
  return v.owner ? `${v.identity} (owner ${v.owner})` : v.identity;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd()).join('\n') + '\n';
}

function formatList(reqs: LocalRequest[], all: boolean, now = Date.now()): string {
  if (reqs.length === 0) return all ? 'no approval requests\n' : 'no pending approval requests\n';
  const rows = [['ID', 'STATUS', 'AGE', 'WHO', 'CONNECTION', 'RULE', 'APPROVALS', 'EXPIRES IN', 'STATEMENT']];
  for (const { view: v, postedAt } of reqs) {
    const left = Date.parse(v.deadline) - now;
    rows.push([
      v.requestId,
      v.status,
      duration(now - postedAt.getTime()),
      oneLine(who(v), 40),
      oneLine(v.connection, 24),
      oneLine(v.rule, 32),
      `${v.status === 'rejected' ? v.decidedBy.length - 1 : v.decidedBy.length}/${v.quorum}`, // decidedBy ends with the rejecter
      v.status === 'pending' ? (left > 0 ? duration(left) : 'expiring') : '-',
      oneLine(v.text, 70),
    ]);
  }
  let out = table(rows);
  if (reqs.some((r) => r.view.status === 'pending')) {
    out += '\napprove: airlock approvals approve <ID> --as <NAME>\nreject:  airlock approvals reject <ID> --as <NAME> --reason "<why>"\n';
  }
  return out;
}

function formatShow(r: LocalRequest, thread: { at: Date; kind: string; text: string; filename?: string }[]): string {
  const v = r.view;
  const lines = [
    `request     ${v.requestId}`,
    `status      ${v.status}${v.decidedBy.length ? ` (${v.decidedBy.map((x) => clean(x)).join(', ')})` : ''}${v.decisionReason ? `: ${clean(v.decisionReason)}` : ''}`,
    `who         ${clean(who(v))}`,
    `where       ${clean(v.connection)} (${clean(v.protocol)})`,
    `rule        ${clean(v.rule)}: ${clean(v.reason)}`,
    `approvers   any of ${v.approverGroups.map(clean).join(', ')}; quorum ${v.quorum}`,
    `deadline    ${v.deadline}${v.escalated ? ' (escalated)' : ''}`,
    `statement`,
    ...clean(v.text).split('\n').map((l) => `  ${l}`),
    `thread`,
    ...thread.map((m) => `  ${m.at.toISOString()}  ${m.kind.padEnd(9)} ${oneLine(m.text, 300)}${m.filename ? ` [${clean(m.filename)}]` : ''}`),
  ];
  return lines.join('\n') + '\n';
}

function openLocal(loaded: LoadedConfig): LocalChannel {
  return LocalChannel.open(configPath(loaded, loaded.config.store.sqlite));
}

async function decide(id: string, o: { config: string; as: string; reason?: string }, decision: 'approve' | 'reject'): Promise<void> {
  const loaded = loadConfig(o.config);
  const name = o.as.trim();
  const identity = loaded.config.identities.find((i) => i.name === name);
  if (decision === 'reject' && !o.reason?.trim()) {
    process.stderr.write('airlock: refused: a rejection needs a reason (--reason TEXT)\n');
    process.exitCode = 1;
    return;
  }
  // Loaded here, not at the top: `airlock approvals list` must not pay for the Temporal client.
  const { connectClient } = await import('../../workflows/client.ts');
  const { submitDecision } = await import('../../workflows/decide.ts');
  const { openStore } = await import('../recording/open.ts');
  const client = await connectClient(loaded);
  const store = openStore(loaded);
  try {
    const r = await submitDecision(client, store, {
      requestId: id.trim(),
      approver: name,
      // An unknown name has no groups: the workflow's validator refuses it (and it is audited).
      approverGroups: identity?.groups ?? [],
      decision,
      reason: o.reason?.trim() || undefined,
      via: 'cli',
    });
    if (!r.ok) {
      const hint = identity ? '' : ` (${name} is not listed under identities: in ${loaded.file})`;
      process.stderr.write(`airlock: refused: ${r.error}${hint}\n`);
      process.exitCode = 1;
      return;
    }
    const v = r.view;
    if (v.status === 'approved') process.stdout.write(`${v.requestId}: approved by ${v.decidedBy.join(', ')}; the held operation runs now\n`);
    else if (v.status === 'rejected') process.stdout.write(`${v.requestId}: rejected by ${name}: ${v.decisionReason ?? ''}\n`);
    else {
      const more = v.quorum - v.decidedBy.length;
      process.stdout.write(`${v.requestId}: approval by ${name} recorded (${v.decidedBy.length}/${v.quorum}); waiting for ${more} more approver${more === 1 ? '' : 's'}\n`);
    }
  } finally {
    store.close();
    await client.connection.close();
  }
}

export function approvalsCommand(): Command {
  const cmd = new Command('approvals').description('approval requests in the local channel (used when no Slack or Teams is configured)');

  withConfig(cmd.command('list').description('list pending approval requests'))
    .option('-a, --all', 'include decided, expired and cancelled requests')
    .option('-n, --limit <n>', 'how many', '50')
    .option('--json', 'machine-readable output')
    .action((o: { config: string; all?: boolean; limit: string; json?: boolean }) => {
      const limit = Number(o.limit);
      if (!Number.isInteger(limit) || limit <= 0) throw new Error(`--limit must be a positive integer, not ${JSON.stringify(o.limit)}`);
      const local = openLocal(loadConfig(o.config));
      try {
        const reqs = local.list({ all: o.all, limit });
        process.stdout.write(
          o.json ? JSON.stringify(reqs.map((r) => ({ ...r.view, postedAt: r.postedAt.toISOString(), updatedAt: r.updatedAt.toISOString() })), null, 2) + '\n' : formatList(reqs, o.all === true),
        );
      } finally {
        local.close();
      }
    });

  withConfig(cmd.command('show').description('show one request and its thread').argument('<id>', 'request id')).action((id: string, o: { config: string }) => {
    const local = openLocal(loadConfig(o.config));
    try {
      const got = local.get(id.trim());
      if (!got) {
        process.stderr.write(`airlock: no approval request ${id} in the local channel; see \`airlock approvals list --all\`\n`);
        process.exitCode = 1;
        return;
      }
      process.stdout.write(formatShow(got.request, got.thread));
    } finally {
      local.close();
    }
  });

  withConfig(cmd.command('approve').description('approve a request').argument('<id>', 'request id'))
    .requiredOption('--as <name>', 'your identity (from identities: in the config)')
    .action((id: string, o: { config: string; as: string }) => decide(id, o, 'approve'));

  withConfig(cmd.command('reject').description('reject a request').argument('<id>', 'request id'))
    .requiredOption('--as <name>', 'your identity (from identities: in the config)')
    .requiredOption('--reason <text>', 'why (shown to the requester)')
    .action((id: string, o: { config: string; as: string; reason: string }) => decide(id, o, 'reject'));

  return cmd;
}
