// `airlock approvals`: the offline (local channel) approval inbox. Decisions take the same path
// as Slack's buttons, a validated Update on the request's workflow, so the same rules apply (no
// self-approval, approver groups, quorum) and every attempt is audited.
//
// Decisions are signed with the operator key (`decisions.keys.cli.privateKey`), so only someone
// holding it can decide from the command line. `--as NAME` is taken on trust from that operator:
// the local channel is for single-machine and offline setups. Where people must prove who they
// are, use Slack or Teams, whose identity comes from the chat account. Request ids may be given
// as a unique prefix.
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { Command } from 'commander';
import type { ApprovalView, GrantChoice } from '../../bots/channel.ts';
import { LocalChannel, type LocalRequest } from '../../bots/local/local-channel.ts';
import { previewTable, previewTitle } from '../../bots/preview-text.ts';
import { signerFromConfig } from '../../workflows/decision-proof.ts';
import { configPath, loadConfig, parseDuration, type LoadedConfig } from '../config/load.ts';

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
    out += '\napprove: airlock approvals approve <ID> --as <NAME> [--for 10m [--runs N]]\nreject:  airlock approvals reject <ID> --as <NAME> --reason "<why>"\n';
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
    ...(v.parameters && v.parameters.length > 0 ? ['parameters (the approval covers exactly these)', ...v.parameters.map((p, i) => `  $${i + 1} = ${oneLine(p, 300)}`)] : []),
    ...(v.preview ? [`preview     ${oneLine(previewTitle(v.preview), 300)}`, ...previewTable(v.preview).split('\n').filter(Boolean).map((l) => `  ${clean(l)}`)] : []),
    ...(v.details ?? []).map((d) => `detail      ${oneLine(d, 300)}`),
    ...(v.waiting !== undefined && v.waiting > 1 ? [`waiting     ${v.waiting} sessions`] : []),
    ...(v.grantTtlMs ? [`reuse       approve --for up to ${duration(v.grantTtlMs)} to make it reusable; default: once`] : []),
    ...(v.grant ? [`grant       reusable for ${duration(v.grant.forMs)}${v.grant.runs ? `, at most ${v.grant.runs} runs` : ''}`] : []),
    `thread`,
    ...thread.map((m) => `  ${m.at.toISOString()}  ${m.kind.padEnd(9)} ${oneLine(m.text, 300)}${m.filename ? ` [${clean(m.filename)}]` : ''}`),
  ];
  return lines.join('\n') + '\n';
}

function openLocal(loaded: LoadedConfig): LocalChannel {
  return LocalChannel.open(configPath(loaded, loaded.config.store.sqlite));
}

/** `--for 10m` / `--runs 3`: an explicit reusable grant (default: approve once). */
function grantOption(o: { for?: string; runs?: string }): GrantChoice | undefined {
  if (o.for === undefined && o.runs === undefined) return undefined;
  if (o.for === undefined) throw new Error('--runs needs --for DURATION (how long the approval stays reusable)');
  const forMs = parseDuration(o.for);
  if (forMs <= 0) throw new Error('--for must be a positive duration');
  if (o.runs === undefined) return { forMs };
  const runs = Number(o.runs);
  if (!Number.isInteger(runs) || runs <= 0) throw new Error(`--runs must be a positive integer, not ${JSON.stringify(o.runs)}`);
  return { forMs, runs };
}

/** A request id, or a unique prefix of one the local channel knows (as `list` prints them). */
function resolveRequestId(loaded: LoadedConfig, id: string): string {
  const local = openLocal(loaded);
  try {
    return local.resolveId(id) ?? id.trim();
  } finally {
    local.close();
  }
}

async function decide(id: string, o: { config: string; as: string; reason?: string; for?: string; runs?: string }, decision: 'approve' | 'reject'): Promise<void> {
  const loaded = loadConfig(o.config);
  const name = o.as.trim();
  const identity = loaded.config.identities.find((i) => i.name === name);
  const grant = decision === 'approve' ? grantOption(o) : undefined;
  // The operator key proves the decision comes from someone trusted with this config; the worker
  // still decides who may approve from its own identities.
  const signer = signerFromConfig(loaded, 'cli');
  if (!signer) {
    process.stderr.write(`airlock: refused: no operator key (decisions.keys.cli.privateKey in ${loaded.file}): the worker only counts signed decisions\n`);
    process.exitCode = 1;
    return;
  }
  const requestId = resolveRequestId(loaded, id);
  // Loaded here, not at the top: `airlock approvals list` must not pay for the Temporal client.
  const { connectClient } = await import('../../workflows/client.ts');
  const { submitDecision } = await import('../../workflows/decide.ts');
  const { openStore } = await import('../recording/open.ts');
  const client = await connectClient(loaded);
  const store = openStore(loaded);
  try {
    // Sent even when obviously refusable (no reason, unknown name): the workflow audits every attempt.
    const r = await submitDecision(
      client,
      store,
      signer.sign(
        { requestId, approver: name, approverGroups: identity?.groups ?? [], decision, reason: o.reason?.trim() || undefined, via: 'cli', ...(grant ? { grant } : {}) },
        operatorName(),
      ),
    );
    if (!r.ok) {
      const hint = identity ? '' : ` (${name} is not listed under identities: in ${loaded.file})`;
      process.stderr.write(`airlock: refused: ${r.error}${hint}\n`);
      process.exitCode = 1;
      return;
    }
    const v = r.view;
    if (v.status === 'approved') {
      const reuse = v.grant ? `; reusable for ${duration(v.grant.forMs)}${v.grant.runs ? ` or ${v.grant.runs} runs` : ''}` : ' (once)';
      process.stdout.write(`${v.requestId}: approved by ${v.decidedBy.join(', ')}; the held operation runs now${reuse}\n`);
    } else if (v.status === 'rejected') process.stdout.write(`${v.requestId}: rejected by ${name}: ${v.decisionReason ?? ''}\n`);
    else {
      const more = v.quorum - v.decidedBy.length;
      process.stdout.write(`${v.requestId}: approval by ${name} recorded (${v.decidedBy.length}/${v.quorum}); waiting for ${more} more approver${more === 1 ? '' : 's'}\n`);
    }
  } finally {
    store.close();
    await client.connection.close();
  }
}

/** The OS account running the CLI: recorded as the channel user of a CLI decision. */
function operatorName(): string {
  try {
    return userInfo().username || 'unknown';
  } catch {
    return 'unknown';
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

  withConfig(cmd.command('show').description('show one request and its thread').argument('<id>', 'request id (or a unique prefix)')).action((id: string, o: { config: string }) => {
    const local = openLocal(loadConfig(o.config));
    try {
      const got = local.get(local.resolveId(id) ?? id.trim());
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

  cmd
    .command('keygen')
    .description('write an Ed25519 decision key pair: FILE (private, for the signer) and FILE.pub (for the worker)')
    .argument('<file>', 'where to write the private key (PEM); refuses to overwrite')
    .action((file: string) => {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
      writeFileSync(`${file}.pub`, publicKey.export({ type: 'spki', format: 'pem' }), { flag: 'wx' });
      process.stdout.write(
        `wrote ${file} (private: keep it where the decisions are signed) and ${file}.pub (public: for the worker)\n` +
          `decisions:\n  keys:\n    cli: { privateKey: { file: ${file} } }   # or slack / teams; the worker may use { publicKey: ${file}.pub }\n`,
      );
    });

  withConfig(cmd.command('approve').description('approve a request (once, unless --for makes it a reusable grant)').argument('<id>', 'request id (or a unique prefix)'))
    .requiredOption('--as <name>', 'your identity (from identities: in the config)')
    .option('--for <duration>', "make the approval reusable for this long (e.g. 10m; at most the rule's grantTtl)")
    .option('--runs <n>', 'with --for: at most this many runs')
    .action((id: string, o: { config: string; as: string; for?: string; runs?: string }) => decide(id, o, 'approve'));

  withConfig(cmd.command('reject').description('reject a request').argument('<id>', 'request id (or a unique prefix)'))
    .requiredOption('--as <name>', 'your identity (from identities: in the config)')
    .requiredOption('--reason <text>', 'why (shown to the requester)')
    .action((id: string, o: { config: string; as: string; reason: string }) => decide(id, o, 'reject'));

  withConfig(cmd.command('review').description('record the post-incident review of a break-glass elevation').argument('<id>', 'elevation (request) id'))
    .requiredOption('--as <name>', 'your identity (an approver of the role)')
    .requiredOption('--notes <text>', 'what happened and whether the access was justified')
    .action(async (id: string, o: { config: string; as: string; notes: string }) => (await import('./request.ts')).review(id, o));

  return cmd;
}
