// Audit durability as a policy, against a REAL full disk: the store lives on a 1 MiB tmpfs that a
// filler file fills up (SQLite answers SQLITE_FULL). Where tmpfs cannot be mounted (not root), the
// same SQLITE_FULL comes from SQLite's own max_page_count limit on a normal file.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statfsSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore, type SqliteStoreOptions } from '../../gateway/recording/sqlite-store.ts';
import { ThreadedSqliteStore } from '../../gateway/recording/sqlite-writer.ts';
import { AuditUnavailableError, type OperationRecord } from '../../gateway/recording/store.ts';

type AnySqliteStore = SqliteStore | ThreadedSqliteStore;

/** Both ways a SQLite store writes: inline (the CLI) and on a writer thread (a running gateway). */
const kinds: { name: string; open(path: string, opts?: SqliteStoreOptions): AnySqliteStore }[] = [
  { name: 'inline', open: (path, opts) => SqliteStore.open(path, opts) },
  { name: 'writer thread', open: (path, opts) => ThreadedSqliteStore.open(path, opts) },
];

interface FullDisk {
  path: string;
  /** Takes (nearly) all the remaining space. */
  fill(store: AnySqliteStore): void;
  /** Gives the space back. */
  free(store: AnySqliteStore): void;
}

function fullDisk(t: { after(fn: () => void): void }): FullDisk {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-disk-'));
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  let mounted = false;
  if (!process.env.AIRLOCK_TEST_NO_TMPFS) {
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'tmpfs', mnt], { stdio: 'ignore' });
      mounted = true;
    } catch {
      // not root: SQLite's own size limit below
    }
  }
  t.after(() => {
    if (mounted) execFileSync('umount', ['-l', mnt], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  });
  const path = join(mnt, 'airlock.db');
  const filler = join(mnt, 'filler');
  if (mounted) {
    return {
      path,
      fill() {
        const st = statfsSync(mnt);
        const free = Number(st.bavail) * Number(st.bsize);
        const fd = openSync(filler, 'w');
        const chunk = Buffer.alloc(4096, 1);
        try {
          for (let i = 0; i < Math.ceil(free / chunk.length) + 1; i++) writeSync(fd, chunk);
        } catch {
          // ENOSPC: the disk is full, which is the point
        } finally {
          closeSync(fd);
        }
      },
      free() {
        unlinkSync(filler);
      },
    };
  }
  // SQLite clamps the limit to the current size: the next page it needs fails with SQLITE_FULL.
  return {
    path,
    fill(store) {
      // A limit is per connection: the writer thread's connection needs the real full disk (root).
      if (!(store instanceof SqliteStore)) throw new Error('a full disk for the writer thread needs a tmpfs mount (run as root)');
      store.database.pragma('max_page_count = 1');
    },
    free(store) {
      store.database.pragma('max_page_count = 1073741823');
    },
  };
}

function op(seq: number, text = `SELECT ${seq}, '${'x'.repeat(2000)}'`): OperationRecord {
  return { sessionId: 's', seq, at: new Date(), text, kind: 'read', classification: {}, decision: 'allow', maskedColumns: [] };
}

async function waitFor(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

for (const kind of kinds) describe(`audit durability (${kind.name})`, () => {
  test('fail-closed: on a full disk the store reports unhealthy at once, refuses new work, keeps every record and writes them all once space is back', async (t) => {
    const disk = fullDisk(t);
    const store = kind.open(disk.path, { onFailure: 'closed', maxPendingMs: 60_000 });
    t.after(() => store.close());
    store.startSession({ id: 's', protocol: 'postgres', identity: 'agent-7', groups: [], connection: 'shop', clientAddress: 'x', startedAt: new Date() });
    store.flush();
    assert.equal(store.health().ok, true);
    assert.doesNotThrow(() => store.assertWritable());

    disk.fill(store);
    let seq = 0;
    while (store.health().ok && seq < 2000) {
      store.recordOperation(op(++seq));
      store.flush();
    }
    const h = store.health();
    assert.equal(h.ok, false, 'a full disk makes the trail unhealthy');
    assert.equal(h.policy, 'closed');
    assert.match(h.reason ?? '', /cannot be written: .*(SQLITE_FULL|full)/i);
    assert.ok(h.pending >= 1);
    assert.equal(store.writable(), false);
    assert.throws(
      () => store.assertWritable(),
      (e: unknown) => e instanceof AuditUnavailableError && e.sqlstate === '53100' && e.httpStatus === 503 && /no audit trail, no access/.test(e.message) && e.health.ok === false,
    );

    // Operations already running still finish and are recorded: kept, not dropped.
    const failedAt = seq;
    for (let i = 0; i < 20; i++) store.recordOperation(op(++seq));
    store.endSession('s', new Date(), 'client terminated', { toClient: 1, fromClient: 2 });
    store.flush();
    assert.equal(store.stats().dropped, 0);
    assert.ok(store.health().pending >= 21, `pending ${store.health().pending}`);
    assert.equal(store.writable(), false, 'still refusing while records wait');

    disk.free(store);
    await waitFor(() => store.health().ok, 'the backlog to drain once space is back');
    assert.equal(store.writable(), true);
    assert.equal(store.stats().dropped, 0);
    const got = store.getSession('s');
    assert.equal(got?.operations.length, seq, `every operation recorded, including the ${seq - failedAt + 1} that waited`);
    assert.deepEqual(got?.operations.map((o) => o.seq), Array.from({ length: seq }, (_, i) => i + 1), 'in order');
    assert.equal(got?.session.endReason, 'client terminated', 'the end did not overtake the operations');
    assert.deepEqual(store.verify().problems, [], 'the chain has no hole where the disk was full');
  });

  test('fail-open: the same full disk is reported unhealthy but traffic is not refused', async (t) => {
    const disk = fullDisk(t);
    const store = kind.open(disk.path, { onFailure: 'open' });
    t.after(() => store.close());
    store.startSession({ id: 's', protocol: 'postgres', identity: 'agent-7', groups: [], connection: 'shop', clientAddress: 'x', startedAt: new Date() });
    store.flush();
    disk.fill(store);
    let seq = 0;
    while (store.health().ok && seq < 2000) {
      store.recordOperation(op(++seq));
      store.flush();
    }
    assert.equal(store.health().ok, false);
    assert.equal(store.health().policy, 'open');
    assert.equal(store.writable(), true);
    assert.doesNotThrow(() => store.assertWritable());
    disk.free(store);
    await waitFor(() => store.health().ok, 'recovery');
  });

  test('a lock held by another process is tolerated up to maxPendingMs, then the store is unhealthy until it drains', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-lag-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'airlock.db');
    const store = kind.open(path, { busyTimeoutMs: 10, maxPendingMs: 300 });
    t.after(() => store.close());
    store.startSession({ id: 's', protocol: 'postgres', identity: 'a', groups: [], connection: 'c', clientAddress: 'x', startedAt: new Date() });
    store.flush();
    const other = new Database(path);
    t.after(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    store.recordOperation(op(1, 'select 1'));
    store.flush();
    const h = store.health();
    assert.equal(h.pending, 1);
    assert.equal(h.ok, true, 'a short lock is normal between processes');
    await waitFor(() => !store.health().ok, 'the lag bound to be crossed');
    assert.match(store.health().reason ?? '', /waited \d+ ms to be written \(bound 300 ms\)/);
    assert.ok(store.health().lagMs >= 300);
    assert.throws(() => store.assertWritable(), AuditUnavailableError);
    other.exec('COMMIT');
    await waitFor(() => store.health().ok, 'drain after the lock is released');
    assert.equal(store.getSession('s')?.operations.length, 1);
  });

  test('more records waiting than maxPending is unhealthy; closed policy keeps up to twice the bound before dropping anything', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'airlock-bound-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'airlock.db');
    const store = kind.open(path, { busyTimeoutMs: 0, maxPending: 5, maxPendingMs: 60_000 });
    t.after(() => store.close());
    store.flush();
    const other = new Database(path);
    t.after(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    for (let i = 1; i <= 4; i++) store.recordOperation(op(i, 'select'));
    store.flush();
    assert.equal(store.health().ok, true);
    store.recordOperation(op(5, 'select'));
    store.flush();
    assert.equal(store.health().ok, false);
    assert.match(store.health().reason ?? '', /5 audit records wait to be written \(bound 5\)/);
    for (let i = 6; i <= 12; i++) store.recordOperation(op(i, 'select'));
    store.flush();
    assert.equal(store.health().pending, 10);
    assert.equal(store.stats().dropped, 2, 'beyond twice the bound the newest records are dropped (and counted, and logged)');
    other.exec('ROLLBACK');
  });
});
