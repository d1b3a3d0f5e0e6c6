// Which SSH command lines Airlock can police by program (simple) and which it cannot (complex),
// and how rules naming programs treat the latter: they fail closed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyCommand } from '../../gateway/ssh/command-class.ts';
import { parseCommand } from '../../gateway/ssh/command.ts';
import { PolicyEngine } from '../../gateway/policy/engine.ts';
import type { Operation, OperationKind } from '../../gateway/policy/operation.ts';
import { parseConfig } from '../../gateway/config/load.ts';
import { stringify } from 'yaml';

/** The bypass class of issue 11: each of these runs `rm` (or could) on a bash login shell. */
export const RM_VARIANTS: string[] = [
  'echo hi\nrm -rf /tmp/x',
  'echo hi; rm -rf /tmp/x',
  'true && rm -rf /tmp/x',
  'false || rm -rf /tmp/x',
  'true & rm -rf /tmp/x',
  'echo | rm -rf /tmp/x',
  '{ rm -rf /tmp/x; }',
  '(rm -rf /tmp/x)',
  'rm${IFS}-rf${IFS}/tmp/x',
  '{rm,-rf,/tmp/x}',
  '$(echo rm) -rf /tmp/x',
  '`echo rm` -rf /tmp/x',
  'eval "rm -rf /tmp/x"',
  "eval 'rm -rf /tmp/x'",
  'r=rm; $r -rf /tmp/x',
  'X=rm sh -c \'$X -rf /tmp/x\'',
  'sh <<EOF\nrm -rf /tmp/x\nEOF',
  'bash <<< "rm -rf /tmp/x"',
  'echo cm0gLXJmIC90bXAveA== | base64 -d | sh',
  'base64 -d <<< cm0gLXJmIC90bXAveA== | bash',
  'python3 -c "import shutil; shutil.rmtree(\'/tmp/x\')"',
  'python3 -c \'import os; os.system("rm -rf /tmp/x")\'',
  'perl -e \'system("rm -rf /tmp/x")\'',
  "awk 'BEGIN{system(\"rm -rf /tmp/x\")}'",
  'awk BEGIN{system("rm")}',
  'ruby -e \'`rm -rf /tmp/x`\'',
  'node -e "require(\'fs\').rmSync(\'/tmp/x\',{recursive:true})"',
  'find /tmp/x -delete',
  'find /tmp -name x -exec rm -rf {} +',
  'find /tmp -name x -execdir rm -rf {} ;',
  'env -u FOO rm -rf /tmp/x',
  'env rm -rf /tmp/x',
  'command -p rm -rf /tmp/x',
  'time -p rm -rf /tmp/x',
  'flock /tmp/lock rm -rf /tmp/x',
  'xargs -a /tmp/list rm -rf',
  'echo /tmp/x | xargs rm -rf',
  'ls #; rm -rf /tmp/x',
  'ls a#b; rm -rf /tmp/x',
  'echo a#b',
  'sudo -s rm -rf /tmp/x',
  'sudo -u root sh -c "rm -rf /tmp/x"',
  'nice -n 5 bash -c "rm -rf /tmp/x"',
  'timeout 5 env rm -rf /tmp/x',
  'r\\m -rf /tmp/x',
  '"r"m -rf /tmp/*',
  'rm -rf ~/x',
  'PATH=/tmp/evil ls',
  'exec rm -rf /tmp/x',
  'builtin eval rm',
  'sed -n "1e rm -rf /tmp/x" /etc/hostname',
  'ls > /tmp/x',
  'cat < /dev/tcp/127.0.0.1/22',
  'exec 3<>/dev/tcp/10.0.0.1/5432',
  '/usr/lib/openssh/sftp-server',
  "mapfile -C 'rm -rf /tmp/x' -c 1",
  '- rm -rf /tmp/x',
  'repeat 1 rm -rf /tmp/x',
  'not rm -rf /tmp/x',
  'ip netns exec n rm -rf /tmp/x',
  '',
];

test('plain argv commands are simple, with their programs', () => {
  const cases: Array<[string, string[], string[]]> = [
    ['ls -la /var/log', ['ls', '-la', '/var/log'], ['ls']],
    [`grep -r "needle in" '/var/log/app'`, ['grep', '-r', 'needle in', '/var/log/app'], ['grep']],
    ['/usr/bin/uptime', ['/usr/bin/uptime'], ['uptime']],
    ['sudo -u postgres pg_dump app', ['sudo', '-u', 'postgres', 'pg_dump', 'app'], ['sudo', 'pg_dump']],
    ['sudo -n -u postgres -- /usr/lib/postgresql/16/bin/pg_dump app', ['sudo', '-n', '-u', 'postgres', '--', '/usr/lib/postgresql/16/bin/pg_dump', 'app'], ['sudo', 'pg_dump']],
    ['timeout 30 nice -n 10 du -sh /srv', ['timeout', '30', 'nice', '-n', '10', 'du', '-sh', '/srv'], ['timeout', 'nice', 'du']],
    ['find /var/log -name app.log -mtime +3', ['find', '/var/log', '-name', 'app.log', '-mtime', '+3'], ['find']],
    ['echo key=value', ['echo', 'key=value'], ['echo']],
  ];
  for (const [line, argv, programs] of cases) {
    const c = classifyCommand(line);
    assert.ok(c.simple, `${line}: ${c.simple ? '' : c.reason}`);
    assert.deepEqual(c.argv, argv, line);
    assert.deepEqual(c.programs, programs, line);
  }
});

test('every variant of the rm bypass class is complex', () => {
  for (const line of RM_VARIANTS) {
    const c = classifyCommand(line);
    assert.equal(c.simple, false, `${JSON.stringify(line)} must be complex`);
    assert.ok(!c.simple && c.reason.length > 0);
  }
});

test('wrappers are unwrapped only with options they are known to take', () => {
  assert.equal(classifyCommand('sudo -i').simple, false);
  assert.equal(classifyCommand('sudo -E rm x').simple, false);
  assert.equal(classifyCommand('sudo -uroot rm x').simple, true);
  assert.equal(classifyCommand('timeout --kill-after=3 5 rm x').simple, true);
  assert.equal(classifyCommand('timeout -k').simple, false);
  assert.equal(classifyCommand('timeout 5').simple, false);
  assert.equal(classifyCommand('nohup').simple, false);
  assert.equal(classifyCommand('sudo sudo sudo sudo sudo sudo ls').simple, false);
});

// ---- rule semantics

function engine(rules: unknown[], def: 'allow' | 'deny' = 'allow', builtins: string[] = []): PolicyEngine {
  const cfg = parseConfig(stringify({ auth: { signingKey: { env: 'X' } }, policy: { default: def, builtins, rules } }), 'airlock.yaml', '/tmp');
  return new PolicyEngine(cfg.config.policy, cfg.config.masking);
}

/** The Operation the SSH gateway builds for a command line (see gateway/ssh/server.ts exec()). */
function sshOp(line: string, identity: Operation['identity'] = { name: 'agent-1', groups: ['agents'], owner: 'alice' }): Operation {
  const c = classifyCommand(line);
  let guess: string[] = [];
  try {
    guess = parseCommand(line).programs;
  } catch {
    // unparseable: no guess
  }
  const kind: OperationKind = c.simple ? 'exec' : 'exec-complex';
  return { protocol: 'ssh', identity, connection: { name: 'box', clientAddress: '127.0.0.1:1', sessionId: 's' }, kind, text: line, tables: [], functions: c.simple ? c.programs : guess };
}

function shellOp(): Operation {
  return { ...sshOp('ls'), kind: 'shell', text: 'shell', functions: [] };
}

test('a deny rule naming rm refuses every variant, every complex command and every shell of the identities it matches', () => {
  const e = engine([{ name: 'no-rm', match: { protocols: ['ssh'], identities: ['agent-1'], functions: ['rm'] }, action: 'deny' }]);
  for (const line of RM_VARIANTS) assert.equal(e.decide(sshOp(line)).action, 'deny', JSON.stringify(line));
  assert.equal(e.decide(shellOp()).action, 'deny');
  assert.equal(e.decide(sshOp('rm -rf /tmp/x')).action, 'deny');
  assert.equal(e.decide(sshOp('sudo -u root rm -rf /tmp/x')).action, 'deny');
  // A simple command that provably runs something else is not caught...
  assert.equal(e.decide(sshOp('ls -la /tmp')).action, 'allow');
  // ...and other identities are not matched at all.
  assert.equal(e.decide(sshOp('echo a; rm x', { name: 'alice', groups: ['ops'] } as Operation['identity'])).action, 'allow');
});

test('a review rule naming programs holds complex commands and shells', () => {
  const e = engine([{ name: 'review-restarts', match: { protocols: ['ssh'], functions: ['systemctl'] }, action: 'review', review: { approvers: ['ops'] } }]);
  assert.equal(e.decide(sshOp('echo a | cat')).action, 'review');
  assert.equal(e.decide(shellOp()).action, 'review');
  assert.equal(e.decide(sshOp('uptime')).action, 'allow');
});

test('an allow rule naming programs allows only simple commands whose every program is listed', () => {
  const e = engine([{ name: 'agent-readonly', match: { protocols: ['ssh'], functions: ['ls', 'cat', 'uptime', 'pg_dump'] }, action: 'allow' }], 'deny');
  assert.equal(e.decide(sshOp('ls -la /srv')).action, 'allow');
  assert.equal(e.decide(sshOp('ls; rm -rf /srv')).action, 'deny');
  assert.equal(e.decide(sshOp('cat /etc/hostname | sh')).action, 'deny');
  assert.equal(e.decide(sshOp('sudo -u postgres pg_dump app')).action, 'deny', 'sudo is not listed');
  assert.equal(e.decide(shellOp()).action, 'deny');
  for (const line of RM_VARIANTS) assert.equal(e.decide(sshOp(line)).action, 'deny', JSON.stringify(line));
});

test('kinds: a restricting exec rule covers complex commands and shells; allowing exec does not allow them', () => {
  const deny = engine([{ name: 'no-exec', match: { protocols: ['ssh'], kinds: ['exec'] }, action: 'deny' }]);
  assert.equal(deny.decide(sshOp('echo a; echo b')).action, 'deny');
  assert.equal(deny.decide(shellOp()).action, 'deny');
  const allow = engine([{ name: 'exec-ok', match: { protocols: ['ssh'], kinds: ['exec'] }, action: 'allow' }], 'deny');
  assert.equal(allow.decide(sshOp('uptime')).action, 'allow');
  assert.equal(allow.decide(sshOp('uptime; id')).action, 'deny');
  assert.equal(allow.decide(shellOp()).action, 'deny');
  // an exception for programs is an allow-like reading: only simple commands of listed programs
  const except = engine([{ name: 'no-exec-but-ls', match: { protocols: ['ssh'], kinds: ['exec'] }, unless: { functions: ['ls'] }, action: 'deny' }]);
  assert.equal(except.decide(sshOp('ls /')).action, 'allow');
  assert.equal(except.decide(sshOp('ls / ; rm x')).action, 'deny');
});

test('the built-in block-agent-shell-language denies complex commands and shells of agents only', () => {
  const e = engine([], 'allow', ['block-agent-shell-language']);
  assert.equal(e.decide(sshOp('echo a; rm x')).action, 'deny');
  assert.equal(e.decide(shellOp()).action, 'deny');
  assert.equal(e.decide(sshOp('uptime')).action, 'allow');
  const human = { name: 'alice', groups: ['ops'] } as Operation['identity'];
  assert.equal(e.decide(sshOp('echo a; echo b', human)).action, 'allow');
});

// Red team: interpreters installed under versioned or variant names (this machine has
// /usr/bin/perl5.36-x86_64-linux-gnu) were simple commands, so `functions`-allow rules and the
// shell-language block did not see that they run code.
test('interpreters with version, variant or target suffixes are complex', () => {
  for (const line of [
    "perl5.36-x86_64-linux-gnu -e 'unlink q(/tmp/x)'",
    "/usr/bin/ksh93 -c 'rm -rf /tmp/x'",
    "tclsh8.6 /tmp/script.tcl",
    "vim.tiny -c '!rm -rf /tmp/x'",
    "sh.distrib -c 'rm /tmp/x'",
    "x86_64-linux-gnu-python3.11 -c 'import os'",
    "zsh-5.9 -c 'rm /tmp/x'",
    "yash -c 'rm /tmp/x'",
    "gawk-5.2 'BEGIN{system(1)}'",
  ]) {
    const c = classifyCommand(line);
    assert.equal(c.simple, false, `${line} must be complex`);
  }
  for (const line of ['do-release-upgrade --help', 'ls -la', 'sha256sum /etc/hosts', 'pg_dump --version', 'df -h']) {
    assert.equal(classifyCommand(line).simple, true, `${line} stays simple`);
  }
});
