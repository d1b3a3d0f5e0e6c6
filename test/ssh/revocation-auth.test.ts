// SSH and revocation: revoking the identity of a live SSH connection closes it (and its running
// channel) within the poll interval, and new logins of that identity are refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AuthStateStore } from '../../gateway/auth/revocation.ts';
import { closeAuthState, openAuthState } from '../../gateway/auth/settings.ts';
import { configPath } from '../../gateway/config/load.ts';
import { startSshHarness, type SshHarness } from './harness.ts';

let h: SshHarness;

before(async () => {
  h = await startSshHarness({ default: 'allow', rules: [] });
  openAuthState(h.loaded);
});
after(async () => {
  closeAuthState(h.loaded);
  await h?.close();
});

test('revoking the identity closes its running SSH session; a new login is refused', async () => {
  const started = Date.now();
  const running = h.ssh('box', 'echo started; sleep 60; echo finished', { timeoutMs: 30_000 });
  await new Promise((r) => setTimeout(r, 1500));
  const cli = AuthStateStore.open(configPath(h.loaded, h.loaded.config.auth.stateFile));
  cli.revoke('identity', 'alice', 'INC-11', 'carol');
  cli.close();
  const r = await running;
  assert.notEqual(r.code, 0);
  assert.equal(r.stdout.toString(), 'started\n', 'the command never finished');
  assert.ok(Date.now() - started < 30_000, 'closed by the revocation, not by the command');
  const again = await h.ssh('box', 'echo hi', { timeoutMs: 20_000 });
  assert.notEqual(again.code, 0);
  assert.doesNotMatch(again.stdout.toString(), /hi/);
});
