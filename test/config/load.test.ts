import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseConfig, parseDuration, resolveSecret } from '../../gateway/config/load.ts';

const minimal = `
auth:
  signingKey: { env: AIRLOCK_TEST_KEY }
connections:
  - name: app
    type: postgres
    host: 127.0.0.1
    database: app
    user: airlock
    password: { file: secrets/app.password }
`;

test('a minimal config loads with defaults filled in', () => {
  const { config } = parseConfig(minimal);
  assert.equal(config.listen.postgres, undefined);
  assert.equal(config.auth.defaultTtl, '10m');
  assert.equal(config.connections[0].port, 5432);
  assert.equal(config.policy.default, 'allow');
  assert.deepEqual(config.masking.columns, []);
});

test('schema errors name the file, the path in the document and what was expected', () => {
  const bad = minimal.replace('database: app', 'database: 42').replace('type: postgres', 'type: postgres\n    port: "x"');
  assert.throws(
    () => parseConfig(bad, '/etc/airlock.yaml'),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /invalid config \/etc\/airlock\.yaml/);
      assert.match(e.message, /connections\[0\]\.database: .*string/i);
      assert.match(e.message, /connections\[0\]\.port: .*number/i);
      return true;
    },
  );
});

test('unknown keys are refused rather than silently ignored', () => {
  assert.throws(() => parseConfig(minimal + 'listne: {}\n', 'a.yaml'), /a\.yaml[\s\S]*listne|Unrecognized key/);
});

test('YAML syntax errors name the file and line', () => {
  assert.throws(() => parseConfig('auth:\n  signingKey: [unclosed\n', 'b.yaml'), /invalid YAML in b\.yaml line \d+/);
});

test('inline secrets are not accepted: a password must be an env or file reference', () => {
  assert.throws(() => parseConfig(minimal.replace('{ file: secrets/app.password }', 'hunter2')), /connections\[0\]\.password/);
});

test('a review rule without its review block is refused', () => {
  const cfg = minimal + `policy:\n  rules:\n    - name: hold-writes\n      match: { kinds: [write] }\n      action: review\n`;
  assert.throws(() => parseConfig(cfg), /policy\.rules\[0\]\.review: a review rule needs a review block/);
});

test('secrets resolve from environment variables and files relative to the config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-cfg-'));
  writeFileSync(join(dir, 'pw'), 's3cret\n');
  assert.equal(resolveSecret({ file: 'pw' }, dir, 'x'), 's3cret');
  process.env.AIRLOCK_TEST_SECRET = 'from-env';
  assert.equal(resolveSecret({ env: 'AIRLOCK_TEST_SECRET' }, dir, 'x'), 'from-env');
  assert.throws(() => resolveSecret({ env: 'AIRLOCK_TEST_MISSING' }, dir, 'connection app'), /connection app: environment variable AIRLOCK_TEST_MISSING is not set/);
  assert.throws(() => resolveSecret({ file: 'nope' }, dir, 'connection app'), /cannot read secret file .*nope: ENOENT/);
});

test('a missing config file is a clear error', () => {
  assert.throws(() => loadConfig('/nonexistent/airlock.yaml'), /cannot read config \/nonexistent\/airlock\.yaml: ENOENT/);
});

test('durations parse to milliseconds', () => {
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('10m'), 600_000);
  assert.equal(parseDuration('2h'), 7_200_000);
  assert.throws(() => parseDuration('10 minutes'), /invalid duration/);
});

test('the shipped reference config (airlock.example.yaml) is valid', () => {
  const loaded = loadConfig(new URL('../../airlock.example.yaml', import.meta.url).pathname);
  assert.equal(loaded.config.connections[0].name, 'prod');
  assert.equal(loaded.config.policy.rules.find((r) => r.action === 'review')?.review?.approvers[0], 'dba');
});

test('the docker-compose config (deploy/airlock.yaml) is valid', () => {
  const loaded = loadConfig(new URL('../../deploy/airlock.yaml', import.meta.url).pathname);
  assert.equal(loaded.config.temporal?.address, 'temporal:7233');
});

test('new PostgreSQL policy fields: profile, settings matcher, maxStatementTime, allowSuperuser (off unless said)', () => {
  const { config } = parseConfig(`${minimal}
policy:
  profile: recommended
  rules:
    - { name: slow, match: { settings: [work_mem] }, action: allow, limits: { maxStatementTime: 30s } }
`);
  assert.equal(config.policy.profile, 'recommended');
  assert.equal(config.connections[0].allowSuperuser, false);
  assert.deepEqual(config.policy.rules[0].limits, { maxStatementTime: '30s' });
  assert.equal(parseConfig(minimal).config.policy.profile, 'none');
  assert.throws(() => parseConfig(`${minimal}\npolicy:\n  profile: lax\n`), /policy\.profile/);
  assert.throws(() => parseConfig(`${minimal}\npolicy:\n  rules:\n    - { name: x, action: allow, limits: { maxStatementTime: 5min } }\n`), /maxStatementTime: a duration/);
});

test('the loader warns about rules that can never take effect', () => {
  const { warnings } = parseConfig(`${minimal}
policy:
  rules:
    - { name: no-drops, match: { statements: [DropStmt] }, action: deny }
    - { name: no-drops-again, match: { statements: [DropStmt] }, action: deny }
    - { name: allow-drops-for-dba, match: { statements: [DropStmt], groups: [dba] }, action: allow }
    - { name: empty, match: { kinds: [] }, action: deny }
    - { name: ssh-tables, match: { protocols: [ssh], tables: [customers] }, action: deny }
    - { name: typo-kind, match: { kinds: [wrtie] }, action: deny }
    - { name: ghost, match: { connections: [prod] }, action: deny }
    - { name: fine, match: { connections: [app], kinds: [write] }, action: deny }
    - { name: also-fine, match: { statements: [DropStmt] }, unless: { groups: [dba] }, action: review, review: { approvers: [dba] } }
`);
  const text = (warnings ?? []).join('\n');
  assert.match(text, /no-drops-again\) repeats policy\.rules\[0\] \(no-drops\)/);
  assert.match(text, /allow-drops-for-dba\) is shadowed: policy\.rules\[0\] \(no-drops\) denies everything it matches/);
  assert.match(text, /\(empty\) can never match: match\.kinds is an empty list/);
  assert.match(text, /\(ssh-tables\) can never match: match\.tables is PostgreSQL-only/);
  assert.match(text, /\(typo-kind\) can never match: match\.kinds \[wrtie\] names no operation kind/);
  assert.match(text, /\(ghost\) can never match: match\.connections \[prod\] names no configured connection/);
  assert.doesNotMatch(text, /\(fine\)/);
  assert.match(text, /also-fine\) is shadowed/, 'an unless does not save a rule from an earlier unconditional deny');
  assert.deepEqual(parseConfig(minimal).warnings, []);
});
