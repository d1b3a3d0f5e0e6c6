// `airlock request`: just-in-time elevated access (gateway/elevation/). The requester proves who
// they are with their Airlock token (--token, AIRLOCK_TOKEN, or the cached `airlock login`
// credential, verified here against the config's keys); the request (kind `access`) goes through
// the same approval workflow and chat messages as a held operation. Break-glass self-approves at
// once with a signed decision (operator key, like `airlock approvals approve`), which the worker
// only counts for identities its own config allows to break glass.
import { randomBytes } from 'node:crypto';
import { userInfo } from 'node:os';
import { Command } from 'commander';
import { accessCheck } from '../../workflows/access-activities.ts';
import type { ApprovalInput } from '../../workflows/definitions.ts';
import { signerFromConfig } from '../../workflows/decision-proof.ts';
import { loadConfig, parseDuration, type LoadedConfig } from '../config/load.ts';
import type { Identity } from '../policy/operation.ts';
import type { ElevationRecord } from '../recording/store.ts';

const DEFAULT_CONFIG = process.env.AIRLOCK_CONFIG ?? 'airlock.yaml';

function withConfig(cmd: Command): Command {
  return cmd.option('-c, --config <file>', 'config file (or AIRLOCK_CONFIG)', DEFAULT_CONFIG);
}

function refuse(message: string): void {
  process.stderr.write(`airlock: refused: ${message}\n`);
  process.exitCode = 1;
}

function operatorName(): string {
  try {
    return userInfo().username || 'unknown';
  } catch {
    return 'unknown';
  }
}

function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** The identity a verified Airlock token names: --token, AIRLOCK_TOKEN, else the cached login. */
export async function tokenIdentity(loaded: LoadedConfig, token?: string): Promise<Identity> {
  let t = token ?? process.env.AIRLOCK_TOKEN;
  if (!t) {
    const { freshCredential } = await import('../auth/login.ts');
    t = (await freshCredential()).token;
  }
  const { tokenSettings } = await import('../auth/settings.ts');
  const { verifyToken } = await import('../auth/tokens.ts');
  const v = await verifyToken(tokenSettings(loaded), t);
  return { name: v.name, groups: v.groups, ...(v.owner ? { owner: v.owner } : {}) };
}

/** One line per window, for `whoami` and `request list`. */
export function elevationLine(e: ElevationRecord, now = Date.now()): string {
  const state = e.revokedAt ? `revoked ${e.revokedAt.toISOString()} by ${e.revokedBy ?? '?'}` : e.until.getTime() <= now ? 'ended' : `active until ${e.until.toISOString()}`;
  return `${e.id}  ${e.breakGlass ? 'BREAK-GLASS ' : ''}role ${e.role} on ${e.connection} for ${e.identity}: ${state} (${e.breakGlass ? 'self-approved' : `approved by ${e.approvers.join(', ')}`}; reason: ${e.reason})`;
}

interface RequestOptions {
  config: string;
  connection?: string;
  role?: string;
  for?: string;
  reason?: string;
  breakGlass?: boolean;
  token?: string;
  wait: boolean;
}

async function request(o: RequestOptions): Promise<void> {
  const loaded = loadConfig(o.config);
  if (!o.connection || !o.role || !o.for) return refuse('give --connection NAME --role ROLE --for DURATION --reason TEXT');
  const reason = (o.reason ?? '').trim();
  if (!reason) return refuse(o.breakGlass ? 'break-glass needs a written justification (--reason)' : 'a request needs a reason (--reason), shown to the approvers');
  const who = await tokenIdentity(loaded, o.token);
  const role = loaded.config.roles[o.role];
  const breakGlass = o.breakGlass === true;
  const check = accessCheck(loaded.config, { identity: who.name, role: o.role, connection: o.connection, forMs: parseDuration(o.for), breakGlass });
  if (!check.ok || !role) return refuse(check.ok ? `there is no role ${o.role}` : check.error);
  const signer = breakGlass ? signerFromConfig(loaded, 'cli') : undefined;
  if (breakGlass && !signer) return refuse(`break-glass is signed with the operator key (decisions.keys.cli.privateKey in ${loaded.file}), which this config does not have`);
  const bg = loaded.config.breakGlass;
  const requestId = `airlock-access-${randomBytes(8).toString('hex')}`;
  const input: ApprovalInput = {
    requestId,
    operation: {
      protocol: 'access',
      connection: o.connection,
      identity: who.name,
      ...(who.owner ? { owner: who.owner } : {}),
      groups: who.groups,
      text: `${breakGlass ? 'BREAK-GLASS: ' : ''}elevated access for ${who.name}: role ${o.role} on ${o.connection} for ${formatMs(check.forMs)}`,
      details: [
        'request kind: access (a time window of elevated rights, not one operation)',
        `role ${o.role}: lifts ${role.lift.join(', ') || 'no rules'}; adds ${role.rules.map((r) => `${r.name} (${r.action})`).join(', ') || 'no rules'}`,
        `window: ${formatMs(check.forMs)} from the approval (role maximum ${role.maxDuration}${breakGlass && bg ? `, break-glass maximum ${bg.maxDuration}` : ''})`,
        `requester groups: ${who.groups.join(', ') || 'none'}`,
      ],
      kind: 'access',
      tables: [],
      rule: `role:${o.role}`,
      reason,
    },
    approverGroups: [...role.approvers],
    quorum: role.quorum,
    timeoutMs: parseDuration(role.timeout),
    escalation: [],
    grantTtlMs: 0,
    access: {
      role: o.role,
      forMs: check.forMs,
      ...(breakGlass && bg ? { breakGlass: true, reviewEscalationMs: parseDuration(bg.reviewEscalation), mention: [...bg.mention] } : {}),
    },
  };
  const { connectClient, temporalSettings } = await import('../../workflows/client.ts');
  const { startAccessRequest } = await import('../../workflows/start.ts');
  const { submitDecision } = await import('../../workflows/decide.ts');
  const { cancelSignal, stateQuery } = await import('../../workflows/definitions.ts');
  const { openStore } = await import('../recording/open.ts');
  const client = await connectClient(loaded);
  const store = openStore(loaded);
  try {
    await startAccessRequest(client, temporalSettings(loaded).taskQueue, input);
    store.recordAudit({ at: new Date(), kind: 'elevation.requested', subject: requestId, actor: who.name, detail: { identity: who.name, owner: who.owner, role: o.role, connection: o.connection, forMs: check.forMs, reason, breakGlass } });
    const handle = client.workflow.getHandle(requestId);
    if (signer) {
      const r = await submitDecision(client, store, signer.sign({ requestId, approver: who.name, approverGroups: who.groups, decision: 'approve', reason, via: 'cli' }, operatorName()));
      if (!r.ok) {
        await handle.signal(cancelSignal, { reason: `break-glass refused: ${r.error}`, by: who.name }).catch(() => undefined);
        return refuse(r.error);
      }
    } else {
      process.stdout.write(`${requestId}: asked ${role.approvers.join(', ')} for role ${o.role} on ${o.connection} (${formatMs(check.forMs)}); waiting up to ${role.timeout} for a decision\n`);
    }
    if (!o.wait) return;
    // Until decided, then until the worker has opened the window.
    const until = Date.now() + parseDuration(role.timeout) + 60_000;
    for (;;) {
      const v = await handle.query(stateQuery).catch(() => undefined);
      if (v && v.status !== 'pending' && v.status !== 'approved') return refuse(`${requestId} was ${v.status}${v.decisionReason ? `: ${v.decisionReason}` : ''}`);
      const e = v?.status === 'approved' ? store.getElevation(requestId) : undefined;
      if (e) {
        process.stdout.write(`${e.breakGlass ? 'BREAK-GLASS ' : ''}elevation ${e.id}: ${e.identity} has role ${e.role} on ${e.connection} until ${e.until.toISOString()}${e.breakGlass ? ` (approver groups notified; a post-incident review is required: airlock approvals review ${e.id} --as NAME --notes "...")` : ` (approved by ${e.approvers.join(', ')})`}\n`);
        return;
      }
      if (v?.status === 'approved') {
        // Approved, but the worker may have refused to open the window (its own config decides): say why.
        const d = await handle.describe().catch(() => undefined);
        if (d && d.status.name !== 'RUNNING' && !store.getElevation(requestId)) {
          const r = (await handle.result().catch(() => undefined)) as { closedBecause?: string } | undefined;
          return refuse(`${requestId}: ${r?.closedBecause ?? `the request closed (${d.status.name.toLowerCase()}) without opening a window`}`);
        }
      }
      if (Date.now() > until) return refuse(`${requestId}: no decision (or no window opened) in time; see \`airlock request list\``);
      await new Promise((r) => setTimeout(r, 300));
    }
  } finally {
    store.close();
    await client.connection.close();
  }
}

/** `airlock approvals review ID --as NAME --notes TEXT`: the post-incident review of a break-glass elevation. */
export async function review(id: string, o: { config: string; as: string; notes: string }): Promise<void> {
  const loaded = loadConfig(o.config);
  const signer = signerFromConfig(loaded, 'cli');
  if (!signer) return refuse(`no operator key (decisions.keys.cli.privateKey in ${loaded.file}): the worker only counts signed reviews`);
  const name = o.as.trim();
  const { connectClient } = await import('../../workflows/client.ts');
  const { reviewProofId, reviewUpdate } = await import('../../workflows/definitions.ts');
  const { WorkflowUpdateFailedError } = await import('@temporalio/client');
  const client = await connectClient(loaded);
  try {
    const { requestId: _signedOver, ...args } = signer.sign(
      { requestId: reviewProofId(id), approver: name, approverGroups: loaded.config.identities.find((i) => i.name === name)?.groups ?? [], decision: 'approve', reason: o.notes.trim(), via: 'cli' },
      operatorName(),
    );
    const r = await client.workflow.getHandle(id).executeUpdate(reviewUpdate, { args: [args] });
    process.stdout.write(`${id}: post-incident review recorded by ${r.reviewedBy}\n`);
  } catch (err) {
    const cause = err instanceof WorkflowUpdateFailedError && err.cause ? err.cause : err;
    return refuse(cause instanceof Error ? cause.message : String(cause));
  } finally {
    await client.connection.close();
  }
}

async function revoke(id: string | undefined, o: { config: string; reason?: string; by?: string }): Promise<void> {
  if (!id) return refuse('give the elevation id: airlock request revoke ID --reason TEXT');
  if (!o.reason?.trim()) return refuse('a revocation needs --reason (recorded)');
  const loaded = loadConfig(o.config);
  const by = o.by ?? process.env.USER ?? 'operator';
  const { openStore } = await import('../recording/open.ts');
  const store = openStore(loaded);
  try {
    const e = store.getElevation(id);
    if (!e) return refuse(`no elevation ${id}; see \`airlock request list --all\``);
    if (!store.revokeElevation(id, new Date(), by, o.reason)) return refuse(`elevation ${id} has already ended`);
    store.recordAudit({ at: new Date(), kind: 'elevation.revoked', subject: id, actor: by, detail: { identity: e.identity, role: e.role, connection: e.connection, breakGlass: e.breakGlass, reason: o.reason } });
    process.stdout.write(`elevation ${id} revoked: ${e.identity} is back to the normal rules on ${e.connection} from the next operation\n`);
  } finally {
    store.close();
  }
}

async function list(o: { config: string; identity?: string; all?: boolean }): Promise<void> {
  const loaded = loadConfig(o.config);
  const { openStore } = await import('../recording/open.ts');
  const store = openStore(loaded);
  try {
    const found = store.listElevations({ ...(o.identity ? { identity: o.identity } : {}), ...(o.all ? {} : { activeAt: new Date() }) });
    process.stdout.write(found.length === 0 ? 'no elevation windows\n' : `${found.map((e) => elevationLine(e)).join('\n')}\n`);
  } finally {
    store.close();
  }
}

/**
 * `airlock request --connection C --role R --for D --reason TEXT [--break-glass]`, and
 * `airlock request revoke ID --reason TEXT` / `airlock request list [--all]`. One command with an
 * optional action word (not subcommands): its options, such as --reason, mean the same in each.
 */
export function requestCommand(): Command {
  return withConfig(
    new Command('request')
      .description('ask for time-boxed elevated access to a role on a connection (just-in-time), or break glass; `request revoke ID`, `request list`')
      .argument('[action]', 'revoke | list (omit to make a request)')
      .argument('[id]', 'revoke: the elevation (request) id'),
  )
    .option('--connection <name>', 'the connection (dbname, target, service)')
    .option('--role <role>', 'a role from roles: in the config')
    .option('--for <duration>', 'how long (e.g. 30m); capped by the role (and breakGlass) maxDuration')
    .option('--reason <text>', 'why (an incident, a ticket): shown to the approvers and recorded; revoke: why it ends')
    .option('--break-glass', 'emergency: self-approve at once (breakGlass: in the config); approvers are notified and must review it')
    .option('--token <token>', 'your Airlock token (default: AIRLOCK_TOKEN, else the `airlock login` credential)')
    .option('--no-wait', 'return once the request is posted')
    .option('--by <name>', 'revoke: who revokes (default $USER)')
    .option('--identity <name>', 'list: only this identity')
    .option('-a, --all', 'list: include ended and revoked windows')
    .action(async (action: string | undefined, id: string | undefined, o: RequestOptions & { by?: string; identity?: string; all?: boolean }) => {
      if (action === undefined) return request(o);
      if (action === 'revoke') return revoke(id, o);
      if (action === 'list') return list(o);
      return refuse(`unknown action ${JSON.stringify(action)}: use revoke or list (or no action to make a request)`);
    });
}
