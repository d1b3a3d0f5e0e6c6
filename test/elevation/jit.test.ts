// Just-in-time access and break-glass, end to end: the real `airlock request` CLI (a child process)
// -> a real Temporal dev server and the approval worker posting to a fake Slack -> signed decisions
// -> the elevation window in the audit store -> the real PostgreSQL gateway deciding the SAME live
// node-postgres session's statements under the role's rules while the window is open, and under
// the normal rules again once it ended or was revoked.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import { configuredIdentity, tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { signerFromConfig } from '../../workflows/decision-proof.ts';
import { stateQuery, type ApprovalResult } from '../../workflows/definitions.ts';
import { pgPort, startApprovalsStack, waitFor, type ApprovalsStack } from '../support/approvals-stack.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'airlock.js');
const TEST_TIMEOUT = 240_000;
let stack: ApprovalsStack;

before(
  async () => {
    stack = await startApprovalsStack({
      setup: 'CREATE TABLE t_jit (id int PRIMARY KEY);',
      identities: [
        { name: 'erin', groups: ['engineers'] },
        { name: 'bob', groups: ['dba'] },
        { name: 'olga', groups: ['oncall'] },
      ],
      rules: [{ name: 'no-writes', match: { connections: ['app'], kinds: ['write'] }, action: 'deny', reason: 'writes on app need elevated access' }],
      extendConfig: () => ({
        auth: { signingKey: { file: 'signing.key' }, revocationPoll: '200ms' },
        roles: { writer: { connections: ['app'], lift: ['no-writes'], approvers: ['dba'], timeout: '2m', maxDuration: '1h' } },
        breakGlass: { groups: ['oncall'], maxDuration: '4s', reviewEscalation: '2s', mention: ['S0ONCALL1'] },
      }),
    });
  },
  { timeout: TEST_TIMEOUT },
);
after(async () => {
  await stack?.close();
});

async function tokenFor(identity: string): Promise<string> {
  return mintToken(tokenSettings(stack.loaded), configuredIdentity(stack.loaded, identity));
}

interface LiveCli {
  readonly stdout: string;
  readonly stderr: string;
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

/** The real CLI as a person runs it, with `identity`'s token in AIRLOCK_TOKEN. */
async function airlock(identity: string | undefined, ...args: string[]): Promise<LiveCli> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', AIRLOCK_LOG_LEVEL: 'silent' };
  if (identity) env.AIRLOCK_TOKEN = await tokenFor(identity);
  const p = spawn(process.execPath, [BIN, ...args, '--config', stack.configFile], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => p.on('close', (code) => resolve({ code, stdout, stderr })));
  return {
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    done,
  };
}

/** A live node-postgres session through the gateway that keeps every NOTICE it receives. */
async function session(identity: string): Promise<{ client: pg.Client; notices: string[]; run(sql: string): Promise<{ ok: true } | { ok: false; message: string; code?: string }> }> {
  const notices: string[] = [];
  const client = new pg.Client({ host: '127.0.0.1', port: pgPort(stack.gateway), database: 'app', user: identity, password: await tokenFor(identity) });
  client.on('notice', (n) => notices.push(n.message ?? ''));
  await client.connect();
  return {
    client,
    notices,
    async run(sql) {
      try {
        await client.query(sql);
        return { ok: true };
      } catch (err) {
        const e = err as { message: string; code?: string };
        return { ok: false, message: e.message, code: e.code };
      }
    },
  };
}

/** A decision signed with the operator key, as `airlock approvals approve|reject` sends it. */
async function decide(requestId: string, approver: string, decision: 'approve' | 'reject', reason?: string) {
  const signer = signerFromConfig(stack.loaded, 'cli')!;
  const groups = stack.loaded.config.identities.find((i) => i.name === approver)?.groups ?? [];
  return submitDecision(stack.temporal.client, stack.store, signer.sign({ requestId, approver, approverGroups: groups, decision, ...(reason ? { reason } : {}), via: 'cli' }, 'test'));
}

async function requestIdOf(cli: LiveCli): Promise<string> {
  return waitFor(() => /^(airlock-access-[0-9a-f]{16}): asked/m.exec(cli.stdout)?.[1], `the request id on stdout (stderr: ${cli.stderr})`);
}

test('request -> approve: a write denied before runs during the window with a NOTICE on the same live session, and is denied again after expiry; self-approval is refused', { timeout: TEST_TIMEOUT }, async () => {
  const s = await session('erin');
  try {
    const before = await s.run('INSERT INTO t_jit VALUES (1)');
    assert.equal(before.ok, false);
    assert.match((before as { message: string }).message, /rule no-writes/);

    const cli = await airlock('erin', 'request', '--connection', 'app', '--role', 'writer', '--for', '6s', '--reason', 'INC-123: backfill t_jit');
    const requestId = await requestIdOf(cli);
    // The approvers see who, whose, where, which role, how long and why, in the same Slack message as held operations.
    const msg = await waitFor(() => stack.slack.messagesIn(stack.channelId).find((m) => JSON.stringify(m.blocks).includes(requestId)), 'the access request in Slack');
    const shown = JSON.stringify(msg.blocks);
    for (const part of ['erin', 'role writer on app for 6s', 'INC-123: backfill t_jit', 'request kind: access']) assert.ok(shown.includes(part), `Slack shows ${part}: ${shown}`);

    const self = await decide(requestId, 'erin', 'approve');
    assert.equal(self.ok, false);
    assert.match((self as { error: string }).error, /erin requested this operation and cannot approve it \(no self-approval\)/);

    const ok = await decide(requestId, 'bob', 'approve');
    assert.equal(ok.ok, true, JSON.stringify(ok));
    const out = await cli.done;
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, new RegExp(`elevation ${requestId}: erin has role writer on app until \\S+ \\(approved by bob\\)`));
    const e = stack.store.getElevation(requestId);
    assert.ok(e && !e.breakGlass && e.role === 'writer' && e.connection === 'app');

    // The gateway polls the store (auth.revocationPoll, 200 ms here): same live session, now allowed.
    const during = await waitFor(async () => {
      const r = await s.run('INSERT INTO t_jit VALUES (1) ON CONFLICT DO NOTHING');
      return r.ok ? r : undefined;
    }, 'the write allowed during the window', 5_000);
    assert.equal(during.ok, true);
    // A named statement prepared (Parse) during the window; node-postgres reuses it without a new Parse.
    await s.client.query({ name: 'ins', text: 'INSERT INTO t_jit VALUES ($1) ON CONFLICT DO NOTHING', values: [30] });
    assert.ok(s.notices.some((n) => n.includes(`elevated access as role writer on app until ${e.until.toISOString()} (elevation ${requestId})`)), `NOTICE: ${s.notices.join(' | ')}`);
    // A session that starts during the window hears so at once.
    const fresh = await session('erin');
    await fresh.client.end();
    assert.ok(fresh.notices.some((n) => n.includes(`elevation ${requestId}`)), `session-start NOTICE: ${fresh.notices.join(' | ')}`);

    // After the window: the next statement on the same session is decided by the normal rules again.
    await new Promise((r) => setTimeout(r, Math.max(0, e.until.getTime() - Date.now() + 50)));
    const afterIt = await s.run('INSERT INTO t_jit VALUES (2)');
    assert.equal(afterIt.ok, false);
    assert.match((afterIt as { message: string }).message, /rule no-writes/);
    // Its Bind/Execute after the window is not run on the decision made under it.
    await assert.rejects(s.client.query({ name: 'ins', text: 'INSERT INTO t_jit VALUES ($1) ON CONFLICT DO NOTHING', values: [31] }), /rule elevation-ended/);
    assert.equal((await stack.pg.query("SELECT count(*)::int AS n FROM t_jit WHERE id = 31")).rows[0].n, 0);

    // The audit names the elevation: every operation under it, each use, its start and its end.
    const ops = stack.store.listSessions({ identity: 'erin' }).flatMap((x) => stack.store.getSession(x.id)?.operations ?? []);
    assert.ok(ops.some((o) => o.decision === 'allow' && o.classification.elevation === requestId && /INSERT INTO t_jit VALUES \(1\)/.test(o.text)));
    assert.ok(!ops.some((o) => /VALUES \(2\)/.test(o.text) && o.classification.elevation));
    const audit = await waitFor(() => {
      const a = stack.store.listAudit(requestId);
      return a.some((x) => x.kind === 'elevation.ended') ? a : undefined;
    }, 'elevation.ended in the audit');
    const kinds = audit.map((x) => x.kind);
    for (const k of ['elevation.requested', 'elevation.started', 'elevation.used', 'elevation.ended']) assert.ok(kinds.includes(k), `${k} in ${kinds.join(', ')}`);
    assert.equal(audit.find((x) => x.kind === 'elevation.ended')?.detail.how, 'expired');
  } finally {
    await s.client.end();
  }
});

test('reject: nothing changes', { timeout: TEST_TIMEOUT }, async () => {
  const cli = await airlock('erin', 'request', '--connection', 'app', '--role', 'writer', '--for', '10m', '--reason', 'INC-124');
  const requestId = await requestIdOf(cli);
  const r = await decide(requestId, 'bob', 'reject', 'use the migration pipeline');
  assert.equal(r.ok, true, JSON.stringify(r));
  const out = await cli.done;
  assert.equal(out.code, 1);
  assert.match(out.stderr, new RegExp(`refused: ${requestId} was rejected: use the migration pipeline`));
  assert.equal(stack.store.getElevation(requestId), undefined);
  const s = await session('erin');
  try {
    const w = await s.run('INSERT INTO t_jit VALUES (3)');
    assert.equal(w.ok, false);
    assert.ok(!s.notices.some((n) => /elevat/.test(n)));
  } finally {
    await s.client.end();
  }
});

test('revocation ends the window on the next operation; whoami shows the window while it is open', { timeout: TEST_TIMEOUT }, async () => {
  const cli = await airlock('erin', 'request', '--connection', 'app', '--role', 'writer', '--for', '10m', '--reason', 'INC-125');
  const requestId = await requestIdOf(cli);
  assert.equal((await decide(requestId, 'bob', 'approve')).ok, true);
  assert.equal((await cli.done).code, 0);

  const who = await (await airlock('erin', 'whoami', '--json')).done;
  assert.equal(who.code, 0, who.stderr);
  const info = JSON.parse(who.stdout) as { identity: string; elevations: { id: string; role: string; connection: string }[] };
  assert.equal(info.identity, 'erin');
  assert.deepEqual(info.elevations.map((x) => [x.id, x.role, x.connection]), [[requestId, 'writer', 'app']]);

  const s = await session('erin');
  try {
    await waitFor(async () => (await s.run('INSERT INTO t_jit VALUES (10) ON CONFLICT DO NOTHING')).ok, 'the write allowed during the window', 5_000);
    // A write prepared in SQL would run at EXECUTE (decided as a read), after the window: refused now.
    const prepared = await s.run('PREPARE later AS INSERT INTO t_jit VALUES (12)');
    assert.equal(prepared.ok, false);
    assert.match((prepared as { message: string }).message, /rule elevation-deferred/);
    const revoke = await (await airlock(undefined, 'request', 'revoke', requestId, '--reason', 'incident closed', '--by', 'bob')).done;
    assert.equal(revoke.code, 0, revoke.stderr);
    // No wait for a poll: each use re-reads its window.
    const next = await s.run('INSERT INTO t_jit VALUES (11)');
    assert.equal(next.ok, false);
    assert.match((next as { message: string }).message, /rule no-writes/);
    assert.ok(stack.store.listAudit(requestId).some((x) => x.kind === 'elevation.revoked' && x.actor === 'bob'));
  } finally {
    await s.client.end();
  }
});

test('break-glass: an allowed identity gets a short window at once, approvers are told, the review escalates until recorded; others are refused', { timeout: TEST_TIMEOUT }, async () => {
  const refused = await (await airlock('erin', 'request', '--break-glass', '--connection', 'app', '--role', 'writer', '--for', '30m', '--reason', 'INC-126')).done;
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /refused: erin may not break glass/);

  const noWhy = await (await airlock('olga', 'request', '--break-glass', '--connection', 'app', '--role', 'writer', '--for', '30m', '--reason', '  ')).done;
  assert.equal(noWhy.code, 1);
  assert.match(noWhy.stderr, /break-glass needs a written justification/);

  const s = await session('olga');
  try {
    const bg = await (await airlock('olga', 'request', '--break-glass', '--connection', 'app', '--role', 'writer', '--for', '30m', '--reason', 'INC-127: primary is read-only, fixing the flag')).done;
    assert.equal(bg.code, 0, bg.stderr);
    const requestId = /BREAK-GLASS elevation (airlock-access-[0-9a-f]{16}): olga has role writer on app until/.exec(bg.stdout)?.[1];
    assert.ok(requestId, bg.stdout);
    const e = stack.store.getElevation(requestId)!;
    assert.ok(e.breakGlass);
    assert.ok(e.until.getTime() - e.startsAt.getTime() <= 4000, 'capped by breakGlass.maxDuration');

    // Approver groups notified at once: the request in the channel and a mention.
    await waitFor(() => stack.slack.messagesIn(stack.escalationChannelId).some((m) => m.text.includes(requestId) && m.text.includes('S0ONCALL1')), 'the break-glass mention');
    await waitFor(() => stack.slack.messagesIn(stack.channelId).some((m) => JSON.stringify(m.blocks).includes(requestId)), 'the break-glass request in the channel');

    const w = await waitFor(async () => {
      const r = await s.run('INSERT INTO t_jit VALUES (20) ON CONFLICT DO NOTHING');
      return r.ok ? r : undefined;
    }, 'the write allowed at once', 3_000);
    assert.equal(w.ok, true);
    assert.ok(s.notices.some((n) => n.includes(`BREAK-GLASS access as role writer on app`) && n.includes(requestId)), s.notices.join(' | '));

    // Nobody reviews: the reminder fires (and is audited) on its timer.
    await waitFor(() => stack.store.listAudit(requestId).some((x) => x.kind === 'elevation.review-escalated'), 'a review escalation', 20_000);
    const self = await (await airlock(undefined, 'approvals', 'review', requestId, '--as', 'olga', '--notes', 'all good')).done;
    assert.equal(self.code, 1);
    assert.match(self.stderr, /olga broke the glass .* cannot review it/);
    const rev = await (await airlock(undefined, 'approvals', 'review', requestId, '--as', 'bob', '--notes', 'justified: INC-127 postmortem')).done;
    assert.equal(rev.code, 0, rev.stderr);
    assert.match(rev.stdout, new RegExp(`${requestId}: post-incident review recorded by bob`));

    // The run completes once the window has ended and the review is in.
    const result = (await stack.temporal.client.workflow.getHandle(requestId).result()) as ApprovalResult;
    assert.equal(result.outcome, 'approved');
    assert.match(result.closedBecause ?? '', /elevation window expired; reviewed by bob/);
    // The run writes its own events before it completes: the review and its reminders are there at once.
    const atClose = stack.store.listAudit(requestId).map((x) => x.kind);
    for (const k of ['elevation.review-escalated', 'elevation.reviewed']) assert.ok(atClose.includes(k), `${k} at completion, in ${atClose.join(', ')}`);
    // The gateway's own records (elevation.used) go through its store's group commit: waited for.
    const wanted = ['elevation.started', 'elevation.used', 'elevation.ended', 'elevation.review-escalated', 'elevation.reviewed'];
    const kinds = await waitFor(() => {
      const seen = stack.store.listAudit(requestId).map((x) => x.kind);
      return wanted.every((k) => seen.includes(k)) ? seen : undefined;
    }, `audit events ${wanted.join(', ')}`).catch(() => stack.store.listAudit(requestId).map((x) => x.kind));
    for (const k of wanted) assert.ok(kinds.includes(k), `${k} in ${kinds.join(', ')}`);
    const view = await stack.temporal.client.workflow.getHandle(requestId).query(stateQuery);
    assert.equal(view.status, 'approved');
    assert.match(view.decisionReason ?? '', /^break-glass: INC-127/);
  } finally {
    await s.client.end();
  }
});
