import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatSessionList,
  formatSessionDetail,
  formatSessionLog,
  sessionToJson,
  sessionDetailToJson,
  formatDuration,
  formatBytes,
} from '../../gateway/recording/format.ts';
import type { SessionSummary } from '../../gateway/recording/sqlite-store.ts';
import type { AuditEvent, OperationRecord, SessionRecord } from '../../gateway/recording/store.ts';

const t0 = Date.UTC(2026, 10, 24, 22, 31, 8);
const at = (ms: number) => new Date(t0 + ms);

const session: SessionSummary = {
  id: '3f2a9c1e-4b7d-4c2a-9e1f-0a1b2c3d4e5f',
  protocol: 'postgres',
  identity: 'agent-support-bot',
  groups: ['agents', 'readers'],
  connection: 'shop-prod',
  clientAddress: '127.0.0.1:53122',
  startedAt: at(0),
  endedAt: at(242_000),
  endReason: 'client terminated',
  bytesToClient: 123_456,
  bytesFromClient: 2_345,
  operationCount: 4,
  deniedCount: 1,
  reviewCount: 1,
  maskedCount: 1,
  errorCount: 1,
};

const longUpdate = `UPDATE orders SET status = 'refunded' WHERE id IN (${Array.from({ length: 200 }, (_, i) => i + 1).join(', ')})`;

const operations: OperationRecord[] = [
  {
    sessionId: session.id,
    seq: 2,
    at: at(5_000),
    text: 'DROP TABLE customers',
    kind: 'ddl',
    classification: { tables: ['public.customers'], statementTypes: ['DropStmt'] },
    decision: 'deny',
    rule: 'block-destructive-ddl',
    reason: 'DROP and TRUNCATE are blocked on production',
    maskedColumns: [],
  },
  {
    sessionId: session.id,
    seq: 1,
    at: at(1_000),
    text: 'SELECT id, full_name, email,\n       card_number\n  FROM customers\n LIMIT 10',
    kind: 'read',
    classification: { statementTypes: ['SelectStmt'], tables: ['public.customers'] },
    decision: 'mask',
    rule: 'mask-pii',
    rows: 10,
    bytes: 1_834,
    maskedColumns: ['public.customers.email', 'detector:card@notes'],
    durationMs: 3.2,
  },
  {
    sessionId: session.id,
    seq: 3,
    at: at(9_000),
    text: longUpdate,
    kind: 'write',
    classification: { tables: ['public.orders'] },
    decision: 'review',
    rule: 'review-prod-writes',
    reason: 'writes on shop-prod need a second pair of eyes',
    rows: 200,
    maskedColumns: [],
    durationMs: 64_000,
    approval: { requestId: 'apr-7f3a', outcome: 'approved', approvers: ['alice', 'bob'] },
  },
  {
    sessionId: session.id,
    seq: 4,
    at: at(99_000),
    text: 'SELECT * FROM orders',
    kind: 'read',
    classification: {},
    decision: 'allow',
    rows: 1000,
    bytes: 98_000,
    maskedColumns: [],
    error: 'row limit 1000 reached (rule limit-bulk-export); statement cancelled',
    durationMs: 120,
  },
];

const audit: AuditEvent[] = [
  { at: at(20_000), kind: 'approval.decided', subject: 'apr-7f3a', actor: 'alice', detail: { valid: true, outcome: 'approve' } },
];

function maxLineLength(s: string): number {
  return Math.max(...s.split('\n').map((l) => Array.from(l).length));
}

describe('formatSessionList', () => {
  const running: SessionSummary = {
    ...session,
    id: '3f2a9c1e-0000-4000-8000-000000000000',
    identity: 'dana@example.com',
    startedAt: at(600_000),
    endedAt: undefined,
    endReason: undefined,
    operationCount: 0,
    deniedCount: 0,
    reviewCount: 0,
    maskedCount: 0,
    errorCount: 0,
  };

  test('shows who, where, when, how long, counts and why it ended, one row per session', () => {
    const out = formatSessionList([running, session], { width: 140 });
    const [header, first, second] = out.split('\n');
    assert.match(header, /^ID\s+STARTED \(UTC\)\s+DURATION\s+IDENTITY\s+CONNECTION\s+CLIENT\s+OPS\s+DENIED\s+END$/);
    // Both ids start with 3f2a9c1e-: the shown prefix is the shortest that tells them apart.
    assert.match(first, /^3f2a9c1e-0 {2}2026-11-24 22:41:08 {6}open {2}dana@example\.com/);
    assert.match(second, /^3f2a9c1e-4 {2}2026-11-24 22:31:08 {4}4m 02s {2}agent-support-bot {2}shop-prod {3}127\.0\.0\.1:53122 {4}4 {7}1 {2}client terminated$/);
    assert.match(out, /\n\n2 sessions, 1 open, 1 denied operation\n$/);
  });

  test('fits 80, 100 and 120 columns, dropping detail before it wraps', () => {
    const wide = { ...session, identity: 'an-agent-with-a-very-long-identity-name@agents.example.com', endReason: 'upstream closed the connection unexpectedly: server terminated' };
    for (const width of [80, 100, 120]) {
      const out = formatSessionList([running, wide], { width });
      assert.ok(maxLineLength(out) <= width, `width ${width}:\n${out}`);
      assert.match(out, /3f2a9c1e-4/);
      assert.match(out, /\b4\s+1\b/, 'counts survive narrowing');
    }
    assert.doesNotMatch(formatSessionList([running, wide], { width: 80 }), /CLIENT/);
  });

  test('says so when there is nothing, and shows "-" for counts it was not given', () => {
    assert.equal(formatSessionList([]), 'No sessions recorded.\n');
    const plain: SessionRecord = { ...session };
    delete (plain as Partial<SessionSummary>).operationCount;
    const out = formatSessionList([plain]);
    assert.match(out.split('\n')[1], /127\.0\.0\.1:53122\s+-\s+-\s+client terminated$/);
  });

  test('escapes terminal control sequences from client-supplied text', () => {
    const evil = { ...session, identity: 'agent\u001b[2J\u001b[31mroot', endReason: 'bye\u0007' };
    const out = formatSessionList([evil]);
    assert.doesNotMatch(out, /[\u001b\u0007]/);
    assert.match(out, /agent\\u001b\[2J/);
  });
});

describe('formatSessionDetail', () => {
  test('a header with the session facts and one block per operation in seq order', () => {
    const out = formatSessionDetail({ session, operations }, audit);
    assert.match(out, /^Session 3f2a9c1e-4b7d-4c2a-9e1f-0a1b2c3d4e5f\n/);
    assert.match(out, /identity {4}agent-support-bot {2}\(groups: agents, readers\)/);
    assert.match(out, /connection {2}shop-prod {2}\(postgres, client 127\.0\.0\.1:53122\)/);
    assert.match(out, /started {5}2026-11-24 22:31:08 UTC/);
    assert.match(out, /ended {7}2026-11-24 22:35:10 UTC, after 4m 02s: client terminated/);
    assert.match(out, /traffic {5}120\.6 KiB to client, 2\.3 KiB from client/);
    assert.match(out, /operations {2}4: 1 allowed, 1 masked, 1 denied, 1 held for approval; 1 result with masked values, 1 error/);

    const blocks = out.split('\n\n').filter((b) => b.startsWith('#'));
    assert.deepEqual(blocks.map((b) => b.split('  ')[0]), ['#1', '#2', '#3', '#4']);
    const [masked, denied, held, limited] = blocks;
    assert.match(masked, /^#1 {2}22:31:09\.000 {2}MASK {2}read {2}rule mask-pii {2}3ms/);
    assert.match(masked, /tables {4}public\.customers/);
    assert.match(masked, /sql {7}SELECT id, full_name, email, card_number FROM customers LIMIT 10/);
    assert.match(masked, /result {4}10 rows, 1\.8 KiB/);
    assert.match(masked, /masked {4}public\.customers\.email, detector:card@notes/);
    assert.match(denied, /^#2 {2}22:31:13\.000 {2}DENY {2}ddl {2}rule block-destructive-ddl/);
    assert.match(denied, /reason {4}DROP and TRUNCATE are blocked on production/);
    assert.match(held, /^#3 {2}22:31:17\.000 {2}REVIEW {2}write {2}rule review-prod-writes {2}1m 04s/);
    assert.match(held, /approval {2}approved by alice, bob \(request apr-7f3a\)/);
    assert.match(held, /result {4}200 rows/);
    assert.match(limited, /^#4 {2}22:32:47\.000 {2}ALLOW {2}read {2}120ms/);
    assert.match(limited, /error {5}row limit 1000 reached \(rule limit-bulk-export\); statement cancelled/);
    assert.match(out, /Audit \(1 event\)\n {2}2026-11-24 22:31:28 {2}approval\.decided {2}apr-7f3a {2}by alice {2}\{"outcome":"approve","valid":true\}/);
  });

  test('shortens long statements unless asked for them in full, and stays within the width', () => {
    for (const width of [80, 120]) {
      const out = formatSessionDetail({ session, operations }, audit, { width });
      assert.ok(maxLineLength(out) <= width, `width ${width}:\n${out}`);
      assert.match(out.replace(/\n\s+/g, ' '), /90… \(\d+ more characters\)/);
      assert.doesNotMatch(out, /199, 200\)/);
    }
    const full = formatSessionDetail({ session, operations }, audit, { full: true, width: 100 });
    assert.ok(maxLineLength(full) <= 100);
    assert.match(full.replace(/\n\s+/g, ' '), /198, 199, 200\)/);
    assert.match(full, /sql {7}SELECT id, full_name, email,\n {14} {7}card_number\n/, 'full text keeps its line breaks');
  });

  test('an open session and one without operations say so', () => {
    const out = formatSessionDetail({ session: { ...session, endedAt: undefined, endReason: undefined }, operations: [] });
    assert.match(out, /ended {7}not yet/);
    assert.match(out, /No operations recorded\./);
    assert.match(out, /operations {2}none/);
  });

  test('operations on a later day carry their date', () => {
    const late = { ...operations[3], at: new Date(t0 + 86_400_000) };
    const out = formatSessionDetail({ session, operations: [late] });
    assert.match(out, /#4 {2}2026-11-25 22:31:08\.000 {2}ALLOW/);
  });
});

describe('formatSessionLog', () => {
  test('a compact transcript with every operation, its outcome and the full statement', () => {
    const out = formatSessionLog({ session, operations }, audit);
    const lines = out.split('\n');
    assert.equal(lines[0], 'Airlock session log 3f2a9c1e-4b7d-4c2a-9e1f-0a1b2c3d4e5f');
    assert.match(out, /identity: {3}agent-support-bot \(agents, readers\)/);
    assert.match(out, /time: {7}started 2026-11-24 22:31:08 UTC, ended 2026-11-24 22:35:10 UTC after 4m 02s \(client terminated\)/);
    assert.ok(lines.includes('22:31:09.000 #1 MASK read | rule mask-pii | 10 rows, 1.8 KiB | 3ms'));
    assert.ok(lines.includes('  masked: public.customers.email, detector:card@notes'));
    assert.ok(lines.includes('22:31:13.000 #2 DENY ddl | rule block-destructive-ddl'));
    assert.ok(lines.includes('  reason: DROP and TRUNCATE are blocked on production'));
    assert.ok(lines.includes('22:31:17.000 #3 REVIEW write | rule review-prod-writes | approved by alice, bob (request apr-7f3a) | 200 rows | 1m 04s'));
    assert.ok(lines.includes(`  > ${longUpdate}`), 'statements appear in full');
    assert.ok(lines.includes('  >        card_number'), 'multi-line statements keep their shape');
    assert.ok(lines.includes('  error: row limit 1000 reached (rule limit-bulk-export); statement cancelled'));
    assert.ok(lines.indexOf('22:31:09.000 #1 MASK read | rule mask-pii | 10 rows, 1.8 KiB | 3ms') < lines.findIndex((l) => l.startsWith('22:31:13.000 #2')));
    assert.match(out, /audit:\n2026-11-24 22:31:28 approval\.decided apr-7f3a by alice \{"outcome":"approve","valid":true\}\n$/);
  });
});

describe('JSON', () => {
  test('a session has a fixed shape: every key present, dates in ISO-8601 UTC, counts when known', () => {
    assert.deepEqual(sessionToJson(session), {
      id: session.id,
      protocol: 'postgres',
      identity: 'agent-support-bot',
      groups: ['agents', 'readers'],
      connection: 'shop-prod',
      clientAddress: '127.0.0.1:53122',
      startedAt: '2026-11-24T22:31:08.000Z',
      endedAt: '2026-11-24T22:35:10.000Z',
      durationMs: 242_000,
      endReason: 'client terminated',
      bytesToClient: 123_456,
      bytesFromClient: 2_345,
      counts: { operations: 4, denied: 1, review: 1, masked: 1, errors: 1 },
    });
    const open: SessionRecord = { ...session, endedAt: undefined, endReason: undefined };
    delete (open as Partial<SessionSummary>).operationCount;
    const j = sessionToJson(open);
    assert.equal(j.endedAt, null);
    assert.equal(j.endReason, null);
    assert.equal(j.durationMs, null);
    assert.equal(j.counts, null);
  });

  test('a session detail serializes identically whatever the key order of its JSON-able parts', () => {
    const reordered = operations.map((o) => ({ ...o, classification: Object.fromEntries(Object.entries(o.classification).reverse()) }));
    const auditReordered = audit.map((e) => ({ ...e, detail: { outcome: 'approve', valid: true } }));
    const a = JSON.stringify(sessionDetailToJson({ session, operations }, audit));
    const b = JSON.stringify(sessionDetailToJson({ session, operations: [...reordered].reverse() }, auditReordered));
    assert.equal(a, b);
    const parsed = JSON.parse(a);
    assert.deepEqual(parsed.operations.map((o: { seq: number }) => o.seq), [1, 2, 3, 4]);
    assert.deepEqual(parsed.operations[0], {
      seq: 1,
      at: '2026-11-24T22:31:09.000Z',
      kind: 'read',
      decision: 'mask',
      rule: 'mask-pii',
      reason: null,
      text: operations[1].text,
      classification: { statementTypes: ['SelectStmt'], tables: ['public.customers'] },
      rows: 10,
      bytes: 1834,
      maskedColumns: ['public.customers.email', 'detector:card@notes'],
      error: null,
      durationMs: 3.2,
      approval: null,
    });
    assert.deepEqual(parsed.operations[2].approval, { requestId: 'apr-7f3a', outcome: 'approved', approvers: ['alice', 'bob'], reason: null });
    assert.deepEqual(parsed.audit, [{ at: '2026-11-24T22:31:28.000Z', kind: 'approval.decided', subject: 'apr-7f3a', actor: 'alice', detail: { outcome: 'approve', valid: true } }]);
  });
});

describe('units', () => {
  test('durations and sizes read naturally', () => {
    assert.deepEqual([340, 2_500, 12_345, 242_000, 7_500_000, 100_000_000].map(formatDuration), ['340ms', '2.50s', '12.3s', '4m 02s', '2h 05m', '1d 03h']);
    assert.deepEqual([0, 512, 1_834, 5 * 1024 * 1024].map(formatBytes), ['0 B', '512 B', '1.8 KiB', '5.0 MiB']);
  });
});

test('a recorded terminal session names its asciicast file, and a write shows its command tag', () => {
  const ops: OperationRecord[] = [
    { sessionId: session.id, seq: 1, at: at(0), text: 'shell', kind: 'shell', classification: { recording: '/var/lib/airlock/recordings/s-1.cast' }, decision: 'allow', maskedColumns: [] },
    { sessionId: session.id, seq: 2, at: at(10), text: "UPDATE t SET x = 1 WHERE id = 2", kind: 'write', classification: { tag: 'UPDATE 1' }, decision: 'allow', rows: 0, bytes: 0, maskedColumns: [] },
  ];
  const out = formatSessionDetail({ session, operations: ops });
  assert.match(out, /recording +\/var\/lib\/airlock\/recordings\/s-1\.cast/);
  assert.match(out, /result +UPDATE 1, 0 rows, 0 B/);
});
