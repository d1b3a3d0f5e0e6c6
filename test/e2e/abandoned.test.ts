// Requests never outlive their statement silently: a statement is held by a gateway PROCESS, which
// is then SIGKILLed (no `leave` is ever sent). Its waiter lease lapses in the workflow, the request
// ends `abandoned` within the bound, the Slack message says so, `airlock approvals approve` on it
// prints a clear error, and nothing ran.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { ApprovalResult } from '../../workflows/definitions.ts';
import type { FakeMessage } from '../support/fake-slack.ts';
import { finished, startApprovalsStack, waitFor, type ApprovalsStack } from '../support/approvals-stack.ts';

let stack: ApprovalsStack;
const LEASE = '3s';

before(
  async () => {
    stack = await startApprovalsStack({
      setup: `CREATE TABLE t_gone (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t_gone VALUES (1, 1);`,
      identities: [
        { name: 'erin', groups: ['engineers'] },
        { name: 'bob', groups: ['dba'] },
      ],
      rules: [{ name: 'review-gone', match: { tables: ['public.t_gone'], statements: ['UpdateStmt'] }, action: 'review', reason: 'writes need a DBA', review: { approvers: ['dba'], timeout: '10m' } }],
      extendConfig: () => ({ gateway: { waiterLease: LEASE } }),
    });
  },
  { timeout: 300_000 },
);

after(async () => {
  await stack?.close();
});

function statusOf(m: FakeMessage): string {
  const b = m.blocks.find((x) => x.block_id === 'airlock_status') as { text?: { text?: string } } | undefined;
  return b?.text?.text ?? '';
}

test('a gateway process SIGKILLed while a statement is held: the request ends abandoned within the lease, Slack says so, and approving it is refused clearly', { timeout: 240_000 }, async () => {
  const proc = await stack.spawnGateway();
  const held = await stack.psql('erin', 'UPDATE t_gone SET v = v + 1 WHERE id = 1;\n', proc.port);
  const msg = await waitFor(() => stack.slack.messagesIn(stack.channelId).find((m) => !m.thread_ts && JSON.stringify(m.blocks).includes('t_gone')), 'the request in Slack');
  const requestId = /airlock-[0-9a-f]{16}/.exec(JSON.stringify(msg.blocks))?.[0];
  assert.ok(requestId);
  await waitFor(() => held.stderr.includes(`approval required: request ${requestId} posted to`), 'the NOTICE on the held connection');

  await proc.crash();
  const killedAt = Date.now();
  const lost = await finished(held, 'psql on the killed gateway');
  assert.notEqual(lost.code, 0);

  const result = (await stack.temporal.client.workflow.getHandle(requestId).result()) as ApprovalResult;
  assert.equal(result.outcome, 'abandoned');
  assert.match(result.reason ?? '', /stopped renewing its lease/);
  // The bound: the 3 s lease plus scheduling on a busy machine, far below the 10 min deadline.
  assert.ok(Date.now() - killedAt < 45_000, `abandoned ${Date.now() - killedAt} ms after the kill`);

  await waitFor(() => /\*Abandoned\*/.test(statusOf(msg)) && !msg.blocks.some((b) => b.type === 'actions'), 'the Slack message to show the request abandoned, without buttons');

  const cli = spawnSync(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'airlock.js'), 'approvals', 'approve', requestId, '--as', 'bob', '--config', stack.configFile], {
    env: { ...process.env, AIRLOCK_LOG_LEVEL: 'silent' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(cli.status, 1, cli.stdout + cli.stderr);
  assert.match(cli.stderr, new RegExp(`airlock: refused: request ${requestId} was abandoned: the gateway holding the operation stopped renewing its lease.*Approving it would run nothing`));
  assert.doesNotMatch(cli.stdout, /runs now/);
  assert.equal((await stack.pg.query('SELECT v FROM t_gone WHERE id = 1')).rows[0].v, 1, 'nothing ran');
});
