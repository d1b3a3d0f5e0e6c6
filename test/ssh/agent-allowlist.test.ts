// The recommended SSH policy for agents, end to end with the real ssh client: an allowlist of
// programs for simple commands, and the built-in block-agent-shell-language for everything a
// shell would interpret. Humans keep their shell.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EXIT_DENIED } from '../../gateway/ssh/server.ts';
import { startSshHarness, type SshHarness } from './harness.ts';

let h: SshHarness;

before(async () => {
  h = await startSshHarness({
    default: 'deny',
    builtins: ['block-agent-shell-language'],
    rules: [
      { name: 'agents-readonly', match: { protocols: ['ssh'], groups: ['agents'], functions: ['uptime', 'ls', 'cat', 'sudo'] }, action: 'allow' },
      { name: 'ops-anything', match: { protocols: ['ssh'], groups: ['ops'] }, action: 'allow' },
    ],
  });
});

after(async () => {
  await h?.close();
});

test('an agent runs listed programs as simple commands, and nothing else', async () => {
  const auth = { token: await h.token('agent-1') };
  const ok = await h.ssh('box', 'ls -d /', { auth });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.toString(), '/\n');
  const unlisted = await h.ssh('box', 'id', { auth });
  assert.equal(unlisted.code, EXIT_DENIED);
  assert.match(unlisted.stderr, /denied by policy rule default-deny/);
  for (const cmd of ['ls /; id', 'ls $(id -u)', 'sh -c id', 'ls /dev/tcp/127.0.0.1/22 && id', 'cat /etc/hostname | sh']) {
    const r = await h.ssh('box', cmd, { auth });
    assert.equal(r.code, EXIT_DENIED, `${cmd}: ${r.stderr}`);
    assert.match(r.stderr, /denied by policy rule block-agent-shell-language: agents may run only simple commands/, cmd);
    assert.equal(r.stdout.length, 0, cmd);
  }
});

test("an agent's interactive shell is refused before it opens; a human's opens", async () => {
  const agent = await h.ssh('box', undefined, { auth: { token: await h.token('agent-1') }, extra: ['-tt'], input: 'echo op""ened\nexit 0\n', timeoutMs: 30_000 });
  assert.equal(agent.code, EXIT_DENIED);
  assert.doesNotMatch(agent.stdout.toString(), /opened/);
  const human = await h.ssh('box', undefined, { extra: ['-tt'], input: 'echo op""ened\nexit 0\n', timeoutMs: 30_000 });
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout.toString(), /opened/);
  // ... and a human's complex command runs.
  const r = await h.ssh('box', 'echo a; echo b');
  assert.equal(r.stdout.toString(), 'a\nb\n');
});
