// Elevation windows on the SSH listener, with the real ssh client: a command a deny rule refuses runs
// while the identity's window for a role that lifts the rule is open, with an `airlock: elevated
// access ...` line on stderr, and is refused again once the window is revoked.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startSshHarness, type SshHarness } from '../ssh/harness.ts';

let h: SshHarness;
before(async () => {
  h = await startSshHarness(
    { rules: [{ name: 'no-touch', match: { connections: ['box'], text: ['^touch '] }, action: 'deny', reason: 'changes need elevated access' }] },
    { roles: { toucher: { connections: ['box'], lift: ['no-touch'], approvers: ['ops'] } } },
  );
});
after(async () => {
  await h?.close();
});

test('a window lifts the rule for its identity on its target, says so on stderr, and ends with its revocation', async () => {
  const denied = await h.ssh('box', 'touch /tmp/airlock-elevation-ssh');
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /denied by policy rule no-touch/);

  const id = 'airlock-access-00000000000000ss';
  h.store.putElevation({ id, identity: 'alice', role: 'toucher', connection: 'box', reason: 'INC-8', approvers: ['bob'], breakGlass: false, startsAt: new Date(Date.now() - 10), until: new Date(Date.now() + 60_000) });
  h.elevations!.refresh();
  const ok = await h.ssh('box', 'touch /tmp/airlock-elevation-ssh');
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stderr, new RegExp(`airlock: elevated access as role toucher on box until \\S+ \\(elevation ${id}\\)`));

  assert.equal(h.store.revokeElevation(id, new Date(), 'bob', 'done'), true);
  const again = await h.ssh('box', 'touch /tmp/airlock-elevation-ssh');
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /denied by policy rule no-touch/);
  assert.ok(h.store.listAudit(id).some((e) => e.kind === 'elevation.used' && e.detail.protocol === 'ssh'));
});
