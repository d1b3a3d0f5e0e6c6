// SSH policy over a shell is an allowlist: with the real OpenSSH ssh/scp clients through the
// gateway to a real sshd, what Airlock cannot police (shell syntax, interpreters, wrappers,
// shells, environment variables, the legacy scp protocol) is refused or held, never passed on.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:net';
import type { OperationRecord } from '../../gateway/recording/store.ts';
import { EXIT_DENIED } from '../../gateway/ssh/server.ts';
import { giveToUser } from '../support/sshd.ts';
import { startSshHarness, type SshHarness } from './harness.ts';

let h: SshHarness;
let work: string;

before(async () => {
  h = await startSshHarness({
    default: 'allow',
    rules: [
      { name: 'agent-no-rm', match: { protocols: ['ssh'], identities: ['agent-1'], functions: ['rm'] }, action: 'deny', reason: 'agents do not delete files' },
      { name: 'bob-restarts-reviewed', match: { protocols: ['ssh'], identities: ['bob'], functions: ['systemctl'] }, action: 'review', reason: 'restarts need a second pair of eyes', review: { approvers: ['ops'], timeout: '10m' } },
    ],
  });
  work = mkdtempSync(join(tmpdir(), 'airlock-ssh-fc-'));
  giveToUser(h.sshd, work);
});

after(async () => {
  await h?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

function opsOf(text: string): OperationRecord[] {
  return h.store
    .listSessions({ limit: 500 })
    .flatMap((s) => h.store.getSession(s.id)?.operations ?? [])
    .filter((o) => o.text === text);
}

test('a simple command the deny rule does not name runs; rm itself is refused', async () => {
  const auth = { token: await h.token('agent-1') };
  const victim = join(work, 'plain-victim');
  writeFileSync(victim, 'x');
  giveToUser(h.sshd, victim);
  const ok = await h.ssh('box', `ls ${victim}`, { auth });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.toString(), `${victim}\n`);
  const r = await h.ssh('box', `rm -f ${victim}`, { auth });
  assert.equal(r.code, EXIT_DENIED);
  assert.match(r.stderr, /denied by policy rule agent-no-rm/);
  assert.ok(existsSync(victim));
});

test('shell-language variants of a denied rm are refused end to end, and the file survives', async () => {
  const auth = { token: await h.token('agent-1') };
  const victim = join(work, 'victim');
  const variants = [
    `echo hi\nrm -f ${victim}`,
    `{ rm -f ${victim}; }`,
    `rm\${IFS}-f\${IFS}${victim}`,
    `{rm,-f,${victim}}`,
    `$(echo rm) -f ${victim}`,
    `\`echo rm\` -f ${victim}`,
    `eval "rm -f ${victim}"`,
    `r=rm; $r -f ${victim}`,
    `sh <<EOF\nrm -f ${victim}\nEOF`,
    `echo ${Buffer.from(`rm -f ${victim}`).toString('base64')} | base64 -d | sh`,
    `python3 -c "import os; os.remove('${victim}')"`,
    `perl -e 'unlink "${victim}"'`,
    `awk 'BEGIN{system("rm -f ${victim}")}'`,
    `find ${victim} -delete`,
    `env -u FOO rm -f ${victim}`,
    `command -p rm -f ${victim}`,
    `time -p rm -f ${victim}`,
    `flock ${work}/lock rm -f ${victim}`,
    `echo ${victim} > ${work}/list; xargs -a ${work}/list rm -f`,
    `ls a#b; rm -f ${victim}`,
  ];
  for (const cmd of variants) {
    writeFileSync(victim, 'still here');
    giveToUser(h.sshd, victim);
    const r = await h.ssh('box', cmd, { auth });
    assert.equal(r.code, EXIT_DENIED, `${JSON.stringify(cmd)}: ${r.stderr}`);
    assert.match(r.stderr, /denied by policy rule agent-no-rm/, cmd);
    assert.ok(existsSync(victim), `${JSON.stringify(cmd)} deleted the file`);
    const op = opsOf(cmd)[0];
    assert.equal(op?.kind, 'exec-complex', cmd);
    assert.equal(op?.decision, 'deny', cmd);
    assert.equal(typeof op?.classification.complex, 'string', cmd);
  }
});

test('/dev/tcp redirection cannot replace refused port forwarding: it is shell syntax, so refused', async () => {
  let reached = false;
  const server: Server = createServer((s) => {
    reached = true;
    s.end('SECRET-BANNER\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  try {
    const auth = { token: await h.token('agent-1') };
    const fwd = await h.ssh('box', undefined, { auth, extra: ['-W', `127.0.0.1:${port}`] });
    assert.notEqual(fwd.code, 0, 'forwarding itself is refused');
    for (const cmd of [`cat < /dev/tcp/127.0.0.1/${port}`, `exec 3<>/dev/tcp/127.0.0.1/${port}; cat <&3`]) {
      const r = await h.ssh('box', cmd, { auth });
      assert.equal(r.code, EXIT_DENIED, `${cmd}: ${r.stderr}`);
      assert.doesNotMatch(r.stdout.toString(), /SECRET-BANNER/);
    }
    assert.equal(reached, false, 'nothing connected to the service');
  } finally {
    server.close();
  }
});

test('an interactive shell of an identity whose deny rule names programs is refused before it opens', async () => {
  const r = await h.ssh('box', undefined, { auth: { token: await h.token('agent-1') }, extra: ['-tt'], input: 'echo opened\nexit 0\n', timeoutMs: 30_000 });
  assert.equal(r.code, EXIT_DENIED, r.stderr);
  assert.doesNotMatch(r.stdout.toString(), /opened/);
  assert.match(r.stderr + r.stdout.toString(), /denied by policy rule agent-no-rm/);
});

test('an interactive shell of an identity whose review rule names programs is held as a whole; the approver sees a shell', async () => {
  const marker = join(work, 'shell-ran');
  const p = h.ssh('box', undefined, { auth: { token: await h.token('bob') }, extra: ['-tt'], input: `echo ran > ${marker}\nexit 0\n`, timeoutMs: 30_000 });
  const req = await h.approver.next();
  assert.equal(req.req.rule, 'bob-restarts-reviewed');
  assert.equal(req.req.operation.kind, 'shell');
  assert.equal(req.req.operation.identity.name, 'bob');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(existsSync(marker), false, 'nothing runs while the shell is held');
  req.resolve({ outcome: 'approved', requestId: req.id, approvers: ['alice'], viaGrant: false });
  const r = await p;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(marker, 'utf8'), 'ran\n');
  // The same identity's simple commands that do not run systemctl are not held.
  const ok = await h.ssh('box', 'uptime', { auth: { token: await h.token('bob') } });
  assert.equal(ok.code, 0, ok.stderr);
});

test('a shell closes when its token expires, with a warning on the terminal first', async () => {
  const started = Date.now();
  const r = await h.ssh('box', undefined, { auth: { token: await h.token('alice', 4000) }, extra: ['-tt'], input: 'echo shell-""open; sleep 25; echo surv""ived\n', timeoutMs: 40_000 });
  // (the terminal echoes the input line, so the quotes tell it from the output)
  const all = r.stdout.toString() + r.stderr;
  assert.match(all, /shell-open/);
  assert.match(all, /airlock: the token of this session expires in \d+ s; this terminal session will be closed then/);
  assert.match(all, /airlock: the token of this session has expired; closing this terminal session/);
  assert.doesNotMatch(all, /survived/);
  assert.ok(Date.now() - started < 20_000, 'closed at expiry, not when the command ended');
  const op = opsOf('shell').find((o) => o.classification.closed === 'token expired');
  assert.ok(op, 'the record says why the shell closed');
});

test('environment variables are refused unless the target allows them by name', async () => {
  const cmd = 'printenv AIRLOCK_TEST_SMUGGLED';
  const r = await h.ssh('box', cmd, { extra: ['-o', 'SetEnv=AIRLOCK_TEST_SMUGGLED=touch-/tmp/pwned'] });
  assert.equal(r.code, 1, 'the variable is not set upstream');
  assert.equal(r.stdout.toString(), '');
  const op = opsOf(cmd).at(-1);
  assert.deepEqual(op?.classification.refusedEnv, ['AIRLOCK_TEST_SMUGGLED']);
  const ok = await h.ssh('box', 'printenv AIRLOCK_TEST_OK_1', { extra: ['-o', 'SetEnv=AIRLOCK_TEST_OK_1=fine'] });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.toString(), 'fine\n');
  assert.deepEqual(opsOf('printenv AIRLOCK_TEST_OK_1').at(-1)?.classification.env, ['AIRLOCK_TEST_OK_1']);
  // LANG / LC_* too: not allowed by default (sshd here accepts them).
  const lang = await h.ssh('box', 'printenv LC_AIRLOCK', { extra: ['-o', 'SetEnv=LC_AIRLOCK=x'] });
  assert.equal(lang.stdout.toString(), '');
});

test('the legacy scp protocol (scp -O) is refused with a clear message; scp over SFTP works', async () => {
  const src = join(work, 'legacy.txt');
  writeFileSync(src, 'legacy\n');
  const dest = join(work, 'legacy-copy.txt');
  const up = await h.scp('box', src, `gw:${dest}`, { extra: ['-O'] });
  assert.notEqual(up.code, 0);
  assert.match(up.stderr, /legacy scp protocol .* is not supported through Airlock/);
  assert.equal(existsSync(dest), false);
  const down = await h.scp('box', `gw:/etc/hostname`, join(work, 'legacy-down'), { extra: ['-O'] });
  assert.notEqual(down.code, 0);
  assert.equal(existsSync(join(work, 'legacy-down')), false);
  const sftp = await h.scp('box', src, `gw:${dest}`);
  assert.equal(sftp.code, 0, sftp.stderr);
  assert.equal(readFileSync(dest, 'utf8'), 'legacy\n');
});
