// What a role means to the policy engine (roles.<name>.lift / rules), and how the gateway's
// registry applies elevation windows from the audit store: only for the identity, the connection
// and the time of the window, re-read on every use, and never for a role it does not know.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { parseConfig } from '../../gateway/config/load.ts';
import { ElevationRegistry, rolePolicies } from '../../gateway/elevation/registry.ts';
import { PolicyConfigError, PolicyEngine, sqlOperations } from '../../gateway/policy/engine.ts';
import type { Identity } from '../../gateway/policy/operation.ts';
import { initSqlParser } from '../../gateway/policy/sql/classify.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import type { ElevationRecord } from '../../gateway/recording/store.ts';

before(async () => {
  await initSqlParser();
});

const erin: Identity = { name: 'erin', groups: ['engineers'] };

function config(roles: string) {
  return parseConfig(`auth:\n  signingKey: { env: AIRLOCK_TEST_KEY }
connections:
  - { name: prod, type: postgres, host: 127.0.0.1, database: app, user: app }
  - { name: ro, type: postgres, host: 127.0.0.1, database: app, user: app, readOnly: true }
policy:
  default: deny
  builtins: [block-destructive-ddl]
  rules:
    - { name: reads, match: { kinds: [read] }, action: allow }
    - { name: no-writes, match: { statements: [InsertStmt, UpdateStmt] }, action: deny }
    - { name: review-deletes, match: { statements: [DeleteStmt] }, action: review, review: { approvers: [dba] } }
${roles}`).config;
}

const WRITER = `roles:
  writer:
    connections: [prod, ro]
    lift: [no-writes, review-deletes]
    rules: [{ name: writer-writes, match: { kinds: [write] }, action: allow }]
    approvers: [dba]`;

function decide(policy: ReturnType<typeof rolePolicies> extends Map<string, infer R> ? R : never, sql: string, connection = 'prod') {
  return policy.policy.decideAll(sqlOperations(sql, { protocol: 'postgres', identity: erin, connection: { name: connection, clientAddress: '127.0.0.1', sessionId: 's' } })).decision;
}

describe('role policies', () => {
  it('lift takes named deny/review rules out and the role rules come first; the engine checks and other rules stay', () => {
    const writer = rolePolicies(config(WRITER)).get('writer')!;
    const c = config(WRITER);
    const normal = new PolicyEngine(c.policy, c.masking, c.connections);
    const ops = (sql: string) => sqlOperations(sql, { protocol: 'postgres', identity: erin, connection: { name: 'prod', clientAddress: '127.0.0.1', sessionId: 's' } });
    assert.equal((normal.decideAll(ops('INSERT INTO t VALUES (1)')).decision as { rule: string }).rule, 'no-writes');
    assert.equal(normal.decideAll(ops('DELETE FROM t WHERE id = 1')).decision.action, 'review');
    const ins = decide(writer, 'INSERT INTO t VALUES (1)');
    assert.equal(ins.action, 'allow');
    assert.equal((ins as { rule?: string }).rule, 'writer-writes');
    assert.equal(decide(writer, 'DELETE FROM t WHERE id = 1').action, 'allow');
    const drop = decide(writer, 'DROP TABLE t');
    assert.equal(drop.action, 'deny');
    assert.equal((drop as { rule: string }).rule, 'block-destructive-ddl');
    assert.equal((decide(writer, "SET client_encoding = 'LATIN1'") as { rule: string }).rule, 'client-encoding');
    // A read-only connection stays read-only whatever the role says.
    assert.equal((decide(writer, 'INSERT INTO t VALUES (1)', 'ro') as { rule: string }).rule, 'read-only-connection');
  });

  it('refuses a role that does not fit the policy (fail closed at start)', () => {
    const bad = (roles: string, re: RegExp) => assert.throws(() => rolePolicies(config(roles)), (e: unknown) => e instanceof PolicyConfigError && re.test(e.message));
    bad(`roles:\n  w: { connections: [prod], lift: [no-wirtes], approvers: [dba] }`, /roles\.w\.lift: there is no rule named "no-wirtes"/);
    bad(`roles:\n  w: { connections: [prod], lift: [reads], approvers: [dba] }`, /reads is an allow rule; only deny and review rules can be lifted/);
    bad(`roles:\n  w: { connections: [prod], rules: [{ name: reads, action: allow }], approvers: [dba] }`, /duplicate rule name reads/);
    bad(`roles:\n  w: { connections: [prod], rules: [{ name: default-deny, action: allow }], approvers: [dba] }`, /reserved for the engine/);
  });
});

describe('elevation registry', () => {
  const window = (over: Partial<ElevationRecord> = {}): ElevationRecord => ({
    id: `airlock-access-${Math.random().toString(16).slice(2, 18)}`,
    identity: 'erin',
    role: 'writer',
    connection: 'prod',
    reason: 'INC-1 call me at +1 415 555 0100',
    approvers: ['bob'],
    breakGlass: false,
    startsAt: new Date(Date.now() - 1000),
    until: new Date(Date.now() + 60_000),
    ...over,
  });

  it('applies a window to its identity and connection only, while it lasts, and not after a revocation', () => {
    const store = SqliteStore.open(':memory:');
    try {
      const reg = new ElevationRegistry(store, rolePolicies(config(WRITER)));
      const e = window();
      store.putElevation(e);
      store.putElevation(window({ identity: 'erin', connection: 'prod', role: 'unknown-role' }));
      store.putElevation(window({ until: new Date(Date.now() - 1) }));
      reg.refresh();
      assert.equal(reg.forOperation('erin', 'prod')?.tag.id, e.id);
      assert.equal(reg.forOperation('erin', 'other'), undefined);
      assert.equal(reg.forOperation('dave', 'prod'), undefined);
      // The reason is redacted before it is stored, like every free text in the audit store.
      assert.match(store.getElevation(e.id)!.reason, /^INC-1 call me at \[redacted:phone\]/);
      // Revoked by another process: no refresh needed, the use re-reads the window.
      assert.equal(store.revokeElevation(e.id, new Date(), 'bob', 'done'), true);
      assert.equal(reg.forOperation('erin', 'prod'), undefined);
      assert.equal(store.revokeElevation(e.id, new Date(), 'bob', 'again'), false);
      assert.deepEqual(store.listElevations({ identity: 'erin', activeAt: new Date() }).map((x) => x.role), ['unknown-role']);
    } finally {
      store.close();
    }
  });
});
