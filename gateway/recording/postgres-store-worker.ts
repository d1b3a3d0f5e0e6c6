// The PostgreSQL audit store's I/O thread (see postgres-store.ts). It owns two connections: one
// writer that commits the ordered queue of records in batches, and one reader for the synchronous
// reads the main thread blocks on. Records are written in the order they were handed over; a batch
// that fails as a whole is retried (or, when the failure is the record's own fault, replayed one by
// one so one bad record cannot sink the others).
//
// Several gateways share one database: every batch takes a transaction-scoped advisory lock before
// reading the chain head, so the journal stays one chain however many writers append to it.
import { appendFileSync } from 'node:fs';
import { createPrivateKey, type KeyObject } from 'node:crypto';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import pg from 'pg';
import { entryHash, entryText, GENESIS_HASH, makeCheckpoint, type Checkpoint, type EntryKind } from './chain.ts';
import { PG_MIGRATIONS, PG_SCHEMA_VERSION, SUMMARY_SELECT_PG } from './postgres-schema.ts';
import type { WorkerInit, WriteItem, ToWorker, ToMain, SyncRequest, SyncReply } from './postgres-store-protocol.ts';

const init = workerData as WorkerInit;
const BATCH_MAX = 500;
/** Chain appends of every gateway on this database serialize on this advisory lock. */
const CHAIN_LOCK = 0x4149524c; // 'AIRL'
const MIGRATE_LOCK = 0x4149524d;

const signal = new Int32Array(init.signal);
const replyPort = init.replyPort as MessagePort;
const signingKey: KeyObject | undefined = init.signingKeyPem ? createPrivateKey(init.signingKeyPem) : undefined;

// int8 (counts, ms timestamps, serial ids) as JS numbers: the values fit, and the chain's canonical
// form must see the same numbers SQLite returns.
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === 20 ? (v: string) => Number(v) : (pg.types.getTypeParser as (o: number, f?: string) => unknown)(oid, format)) as typeof pg.types.getTypeParser,
};

let writer: pg.Client | undefined;
let reader: pg.Client | undefined;
const queue: WriteItem[] = [];
let pumping = false;
let backoffMs = 50;
let retryTimer: NodeJS.Timeout | undefined;
let closing = false;
let entriesSinceCheckpoint = 0;
let lastCheckpointSeq = -1;
let checkpointTimer: NodeJS.Timeout | undefined;

function post(m: ToMain): void {
  parentPort?.postMessage(m);
}

async function connect(): Promise<pg.Client> {
  const c = new pg.Client({ ...init.connection, types, application_name: 'airlock-audit', connectionTimeoutMillis: init.connectTimeoutMs });
  // A dropped connection surfaces as an 'error' event; without a listener it would kill the thread.
  c.on('error', () => {
    if (writer === c) writer = undefined;
    if (reader === c) reader = undefined;
  });
  await c.connect();
  return c;
}

async function writerClient(): Promise<pg.Client> {
  if (!writer) writer = await connect();
  return writer;
}

async function readerClient(): Promise<pg.Client> {
  if (!reader) reader = await connect();
  return reader;
}

function errorText(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    return typeof code === 'string' && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
  }
  return String(e);
}

/** SQLSTATE classes a retry of the same record cannot fix: the record itself is unacceptable. */
function isPermanent(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return typeof code === 'string' && /^(22|23|42)/.test(code);
}

/** Failures that clear on their own within moments (the lag bound covers them). */
function isTransient(e: unknown): boolean {
  const code = (e as { code?: unknown })?.code;
  return code === '40001' || code === '40P01' || code === '55P03';
}

// ---------------------------------------------------------------------------------------------
// Writes

interface Head {
  seq: number;
  hash: string;
}

async function head(c: pg.Client): Promise<Head> {
  const h = await c.query<{ seq: number; hash: string }>('SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1');
  if (h.rows[0]) return h.rows[0];
  const b = await c.query<{ seq: number; hash: string }>('SELECT seq, hash FROM checkpoints WHERE base = 1 ORDER BY seq DESC LIMIT 1');
  return b.rows[0] ?? { seq: 0, hash: GENESIS_HASH };
}

async function append(c: pg.Client, h: Head, kind: EntryKind, entity: string, item: number | null, at: number, data: Record<string, unknown>): Promise<void> {
  const seq = h.seq + 1;
  const text = entryText(seq, kind, at, data);
  const hash = entryHash(h.hash, text);
  await c.query('INSERT INTO journal (seq, at, kind, entity, item, entry, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)', [seq, at, kind, entity, item, text, hash]);
  h.seq = seq;
  h.hash = hash;
}

async function apply(c: pg.Client, h: Head, w: WriteItem): Promise<void> {
  const d = w.data as Record<string, never>;
  switch (w.kind) {
    case 'start':
      await c.query(
        `INSERT INTO sessions (id, protocol, identity, groups, connection, client_address, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`,
        [d.id, d.protocol, d.identity, d.groups, d.connection, d.clientAddress, d.startedAt],
      );
      await append(c, h, 'session.start', `s:${d.id}`, null, d.startedAt, w.data);
      return;
    case 'end':
      await c.query(`UPDATE sessions SET ended_at = $2, end_reason = $3, bytes_to_client = $4, bytes_from_client = $5 WHERE id = $1`, [d.id, d.endedAt, d.reason, d.toClient, d.fromClient]);
      await append(c, h, 'session.end', `s:${d.id}`, null, d.endedAt, w.data);
      return;
    case 'operation':
      await c.query(
        `INSERT INTO operations (session_id, seq, at, text, kind, classification, decision, rule, reason, rows, bytes,
           masked_columns, error, duration_ms, approval)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (session_id, seq) DO UPDATE SET
           at = excluded.at, text = excluded.text, kind = excluded.kind, classification = excluded.classification,
           decision = excluded.decision, rule = excluded.rule, reason = excluded.reason, rows = excluded.rows,
           bytes = excluded.bytes, masked_columns = excluded.masked_columns, error = excluded.error,
           duration_ms = excluded.duration_ms, approval = excluded.approval`,
        [d.sessionId, d.seq, d.at, d.text, d.kind, d.classification, d.decision, d.rule, d.reason, d.rows, d.bytes, d.maskedColumns, d.error, d.durationMs, d.approval],
      );
      await append(c, h, 'operation', `s:${d.sessionId}`, d.seq, d.at, w.data);
      return;
    case 'audit': {
      const r = await c.query<{ id: number }>(`INSERT INTO audit (at, kind, subject, actor, detail) VALUES ($1, $2, $3, $4, $5) RETURNING id`, [d.at, d.kind, d.subject, d.actor, d.detail]);
      const id = r.rows[0].id;
      await append(c, h, 'audit', `a:${id}`, null, d.at, { id, ...w.data });
      return;
    }
  }
}

/** Commits `items` in one transaction under the chain lock. */
async function commit(items: WriteItem[]): Promise<void> {
  const c = await writerClient();
  try {
    await c.query('BEGIN');
    await c.query('SELECT pg_advisory_xact_lock($1)', [CHAIN_LOCK]);
    const h = await head(c);
    for (const w of items) await apply(c, h, w);
    await c.query('COMMIT');
  } catch (e) {
    await c.query('ROLLBACK').catch(() => {
      // the connection is gone; a new one is made on the next attempt
      if (writer === c) writer = undefined;
      c.end().catch(() => {});
    });
    throw e;
  }
}

function settle(ids: number[], dropped: number[] = []): void {
  post({ t: 'settled', ids, dropped });
}

async function pump(): Promise<void> {
  if (pumping) return;
  pumping = true;
  try {
    while (queue.length > 0) {
      const batch = queue.slice(0, BATCH_MAX);
      try {
        await commit(batch);
        queue.splice(0, batch.length);
        backoffMs = 50;
        settle(batch.map((w) => w.id));
        committed(batch.length);
        continue;
      } catch (e) {
        if (!isPermanent(e)) {
          post({ t: 'failure', error: `${batch[0].what}: ${errorText(e)}`, transient: isTransient(e) });
          scheduleRetry();
          return;
        }
      }
      // Some record in the batch is unacceptable: commit them one by one, dropping only the bad one.
      for (const w of batch) {
        try {
          await commit([w]);
          queue.shift();
          settle([w.id]);
          committed(1);
        } catch (e) {
          if (isPermanent(e)) {
            queue.shift();
            post({ t: 'failure', error: `${w.what}: ${errorText(e)}`, transient: false, permanent: true });
            settle([], [w.id]);
            continue;
          }
          post({ t: 'failure', error: `${w.what}: ${errorText(e)}`, transient: isTransient(e) });
          scheduleRetry();
          return;
        }
      }
    }
  } finally {
    pumping = false;
  }
}

function scheduleRetry(): void {
  if (retryTimer) return;
  retryTimer = setTimeout(() => {
    retryTimer = undefined;
    void pump();
  }, backoffMs);
  backoffMs = Math.min(backoffMs * 2, 1000);
}

function committed(n: number): void {
  if (!signingKey) return;
  entriesSinceCheckpoint += n;
  if (entriesSinceCheckpoint >= init.checkpointEvery) void checkpointSafely();
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

async function checkpoint(): Promise<Checkpoint | undefined> {
  if (!signingKey) return undefined;
  const c = await writerClient();
  const r = await c.query<{ seq: number; hash: string }>('SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1');
  const h = r.rows[0];
  if (!h || h.seq === lastCheckpointSeq) return undefined;
  const cp = makeCheckpoint(h.seq, h.hash, new Date(), signingKey);
  const ins = await c.query(
    `INSERT INTO checkpoints (seq, base, at, hash, key_id, sig) VALUES ($1, 0, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
    [cp.seq, cp.at, cp.hash, cp.keyId, cp.sig],
  );
  lastCheckpointSeq = h.seq;
  entriesSinceCheckpoint = 0;
  if (ins.rowCount === 0) return undefined;
  anchor(cp);
  return cp;
}

function anchor(cp: Checkpoint): void {
  if (!init.anchorFile) return;
  try {
    appendFileSync(init.anchorFile, JSON.stringify(cp) + '\n', { mode: 0o600 });
  } catch (e) {
    post({ t: 'log', level: 'error', msg: 'audit store: appending a checkpoint to the anchor file failed', detail: { anchor: init.anchorFile, seq: cp.seq, err: errorText(e) } });
  }
}

interface PruneCounts {
  sessions: number;
  operations: number;
  audit: number;
  entries: number;
  base: number;
}

/**
 * Retention, as SqliteStore.prune (read its comment): the caller verified the chain up to
 * `verifiedSeq`/`verifiedHash` first. Deletes what ended before `cutoff`, re-records retained state
 * that depended on pruned entries as snapshots, appends a `prune` entry and leaves a base checkpoint.
 */
async function prune(cutoff: number, verifiedSeq: number, verifiedHash: string, verifiedEntries: number): Promise<PruneCounts> {
  const c = await writerClient();
  await c.query('BEGIN');
  try {
    await c.query('SELECT pg_advisory_xact_lock($1)', [CHAIN_LOCK]);
    if (verifiedEntries > 0) {
      const r = await c.query<{ hash: string }>('SELECT hash FROM journal WHERE seq = $1', [verifiedSeq]);
      if (r.rows[0]?.hash !== verifiedHash) throw new Error('the audit chain changed under prune (another prune?); run it again');
    }
    await c.query(`CREATE TEMP TABLE prune_sessions (entity text PRIMARY KEY, id text NOT NULL) ON COMMIT DROP;
      CREATE TEMP TABLE prune_ops (session_id text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (session_id, seq)) ON COMMIT DROP;
      CREATE TEMP TABLE prune_audit (entity text PRIMARY KEY, id bigint NOT NULL) ON COMMIT DROP;`);
    await c.query(`INSERT INTO prune_sessions SELECT 's:' || id, id FROM sessions s
      WHERE coalesce(ended_at, greatest(started_at, coalesce((SELECT max(at) FROM operations o WHERE o.session_id = s.id), started_at))) < $1`, [cutoff]);
    await c.query(`INSERT INTO prune_ops SELECT session_id, seq FROM operations
      WHERE session_id IN (SELECT id FROM prune_sessions) OR (at < $1 AND session_id NOT IN (SELECT id FROM sessions))`, [cutoff]);
    await c.query(`INSERT INTO prune_audit SELECT 'a:' || id, id FROM audit WHERE at < $1`, [cutoff]);
    const counts = (await c.query<{ s: number; o: number; a: number }>(`SELECT (SELECT count(*) FROM prune_sessions) AS s, (SELECT count(*) FROM prune_ops) AS o, (SELECT count(*) FROM prune_audit) AS a`)).rows[0];
    const base = Number((await c.query<{ m: number | null }>(`SELECT max(seq) AS m FROM journal WHERE entity IN (SELECT entity FROM prune_sessions)
      OR entity IN (SELECT entity FROM prune_audit)
      OR (item IS NOT NULL AND EXISTS (SELECT 1 FROM prune_ops p WHERE p.session_id = substr(journal.entity, 3) AND p.seq = journal.item))`)).rows[0].m ?? 0);
    const h = await head(c);
    const first = Number((await c.query<{ m: number | null }>('SELECT min(seq) AS m FROM journal')).rows[0].m ?? h.seq + 1);
    if (base < first) {
      await c.query('COMMIT');
      return { sessions: 0, operations: 0, audit: 0, entries: 0, base: first - 1 };
    }
    const now = Date.now();
    const keptSessions = (await c.query(`SELECT s.* FROM sessions s WHERE 's:' || s.id NOT IN (SELECT entity FROM prune_sessions)
      AND EXISTS (SELECT 1 FROM journal j WHERE j.entity = 's:' || s.id AND j.item IS NULL AND j.seq <= $1) ORDER BY s.ord`, [base])).rows as Record<string, never>[];
    for (const r of keptSessions) {
      await append(c, h, 'session.snapshot', `s:${r.id}`, null, now, {
        id: r.id, protocol: r.protocol, identity: r.identity, groups: r.groups, connection: r.connection, clientAddress: r.client_address,
        startedAt: r.started_at, endedAt: r.ended_at, endReason: r.end_reason, toClient: r.bytes_to_client, fromClient: r.bytes_from_client,
      });
    }
    const keptOps = (await c.query(`SELECT o.* FROM operations o WHERE NOT EXISTS (SELECT 1 FROM prune_ops p WHERE p.session_id = o.session_id AND p.seq = o.seq)
      AND (SELECT max(j.seq) FROM journal j WHERE j.entity = 's:' || o.session_id AND j.item = o.seq) <= $1 ORDER BY o.session_id, o.seq`, [base])).rows as Record<string, never>[];
    for (const r of keptOps) {
      await append(c, h, 'operation', `s:${r.session_id}`, r.seq, r.at, {
        sessionId: r.session_id, seq: r.seq, at: r.at, text: r.text, kind: r.kind, classification: r.classification, decision: r.decision,
        rule: r.rule, reason: r.reason, rows: r.rows, bytes: r.bytes, maskedColumns: r.masked_columns, error: r.error, durationMs: r.duration_ms, approval: r.approval,
      });
    }
    const keptAudit = (await c.query(`SELECT a.* FROM audit a WHERE a.id NOT IN (SELECT id FROM prune_audit)
      AND EXISTS (SELECT 1 FROM journal j WHERE j.entity = 'a:' || a.id AND j.seq <= $1) ORDER BY a.id`, [base])).rows as Record<string, never>[];
    for (const r of keptAudit) await append(c, h, 'audit', `a:${r.id}`, null, r.at, { id: r.id, at: r.at, kind: r.kind, subject: r.subject, actor: r.actor, detail: r.detail });
    await append(c, h, 'prune', '', null, now, { before: cutoff, base, sessions: counts.s, operations: counts.o, audit: counts.a });
    const baseHash = (await c.query<{ hash: string }>('SELECT hash FROM journal WHERE seq = $1', [base])).rows[0]?.hash;
    if (!baseHash) throw new Error(`chain entry #${base} is missing`);
    await c.query(`DELETE FROM operations WHERE EXISTS (SELECT 1 FROM prune_ops p WHERE p.session_id = operations.session_id AND p.seq = operations.seq)`);
    await c.query(`DELETE FROM sessions WHERE id IN (SELECT id FROM prune_sessions)`);
    await c.query(`DELETE FROM audit WHERE id IN (SELECT id FROM prune_audit)`);
    const entries = (await c.query('DELETE FROM journal WHERE seq <= $1', [base])).rowCount ?? 0;
    await c.query('DELETE FROM checkpoints WHERE seq <= $1', [base]);
    const cp = makeCheckpoint(base, baseHash, new Date(now), signingKey, true);
    await c.query(`INSERT INTO checkpoints (seq, base, at, hash, key_id, sig) VALUES ($1, 1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, [cp.seq, cp.at, cp.hash, cp.keyId, cp.sig]);
    await c.query('COMMIT');
    anchor(cp);
    return { sessions: counts.s, operations: counts.o, audit: counts.a, entries, base };
  } catch (e) {
    await c.query('ROLLBACK').catch(() => {});
    throw e;
  }
}

async function checkpointSafely(): Promise<void> {
  try {
    await checkpoint();
  } catch (e) {
    post({ t: 'log', level: 'warn', msg: 'audit store: signing a checkpoint failed, will retry', detail: { err: errorText(e) } });
  }
}

// ---------------------------------------------------------------------------------------------
// Synchronous requests (the main thread blocks on `signal` until the reply is posted)

async function migrate(): Promise<number> {
  const c = await writerClient();
  await c.query('BEGIN');
  try {
    // Two gateways starting at once migrate one after the other.
    await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATE_LOCK]);
    await c.query(`CREATE TABLE IF NOT EXISTS airlock_schema_version (
      version    integer PRIMARY KEY,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const r = await c.query<{ v: number | null }>('SELECT max(version) AS v FROM airlock_schema_version');
    const current = r.rows[0]?.v ?? 0;
    if (current > PG_SCHEMA_VERSION) {
      throw Object.assign(new Error(`the audit database has schema version ${current}, newer than this Airlock understands (${PG_SCHEMA_VERSION}); upgrade Airlock`), { code: 'AIRLOCK_SCHEMA_NEWER' });
    }
    for (let v = current; v < PG_SCHEMA_VERSION; v++) {
      try {
        await c.query(PG_MIGRATIONS[v]);
      } catch (e) {
        throw new Error(`migrating the audit database from schema version ${v} to ${v + 1} failed: ${errorText(e)}`);
      }
      await c.query('INSERT INTO airlock_schema_version (version) VALUES ($1)', [v + 1]);
    }
    await c.query('COMMIT');
    return PG_SCHEMA_VERSION;
  } catch (e) {
    await c.query('ROLLBACK').catch(() => {});
    throw e;
  }
}

/** Lets queued writes commit before a read, so a reader sees what was recorded before it asked. */
async function writesSettled(ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while ((queue.length > 0 || pumping) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}

async function handleSync(req: SyncRequest): Promise<unknown> {
  switch (req.op) {
    case 'open': {
      const version = await migrate();
      if (signingKey) {
        checkpointTimer = setInterval(() => void checkpointSafely(), Math.max(10, init.checkpointIntervalMs));
      }
      return version;
    }
    case 'schemaVersion': {
      const r = await (await readerClient()).query<{ v: number | null }>('SELECT max(version) AS v FROM airlock_schema_version');
      return r.rows[0]?.v ?? 0;
    }
    case 'listSessions': {
      await writesSettled(init.readWaitMs);
      const [identity, connection, limit] = req.args as [string | null, string | null, number | null];
      const r = await (await readerClient()).query(
        `${SUMMARY_SELECT_PG} WHERE ($1::text IS NULL OR s.identity = $1) AND ($2::text IS NULL OR s.connection = $2)
         ORDER BY s.started_at DESC, s.ord DESC LIMIT $3`,
        [identity, connection, limit],
      );
      return r.rows;
    }
    case 'getSession': {
      await writesSettled(init.readWaitMs);
      const c = await readerClient();
      // One snapshot for the session and its operations.
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      try {
        const s = await c.query(`${SUMMARY_SELECT_PG} WHERE s.id = $1`, [req.args[0]]);
        const ops = s.rows[0] ? await c.query('SELECT * FROM operations WHERE session_id = $1 ORDER BY seq', [req.args[0]]) : undefined;
        return s.rows[0] ? { session: s.rows[0], operations: ops?.rows ?? [] } : null;
      } finally {
        await c.query('COMMIT').catch(() => {});
      }
    }
    case 'listAudit': {
      await writesSettled(init.readWaitMs);
      const subject = req.args[0] as string | null;
      const r = await (await readerClient()).query(
        subject === null ? 'SELECT * FROM audit ORDER BY at, id' : 'SELECT * FROM audit WHERE subject = $1 ORDER BY at, id',
        subject === null ? [] : [subject],
      );
      return r.rows;
    }
    case 'findSessionIds': {
      await writesSettled(init.readWaitMs);
      const [prefix, limit] = req.args as [string, number];
      const r = await (await readerClient()).query<{ id: string }>(
        'SELECT id FROM sessions WHERE left(id, length($1)) = $1 ORDER BY started_at DESC, ord DESC LIMIT $2',
        [prefix, limit],
      );
      return r.rows.map((x) => x.id);
    }
    case 'dump': {
      await writesSettled(init.readWaitMs);
      const c = await readerClient();
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      try {
        const q = async (sql: string) => (await c.query(sql)).rows;
        return {
          sessions: await q('SELECT id, protocol, identity, groups, connection, client_address, started_at, ended_at, end_reason, bytes_to_client, bytes_from_client FROM sessions ORDER BY ord'),
          operations: await q('SELECT * FROM operations'),
          audit: await q('SELECT * FROM audit ORDER BY id'),
          journal: await q('SELECT seq, at, kind, entity, item, entry, hash FROM journal ORDER BY seq'),
          checkpoints: await q('SELECT seq, base, at, hash, key_id, sig FROM checkpoints ORDER BY seq, base'),
        };
      } finally {
        await c.query('COMMIT').catch(() => {});
      }
    }
    case 'prune': {
      await writesSettled(init.readWaitMs);
      const [cutoff, seq, hash, entries] = req.args as [number, number, string, number];
      const r = await prune(cutoff, seq, hash, entries);
      await checkpointSafely();
      return r;
    }
    // Elevation windows: written and read at once (no wait for queued audit writes).
    case 'putElevation': {
      const e = req.args[0] as Record<string, unknown>;
      await (await writerClient()).query(
        `INSERT INTO elevations (id, identity, owner, role, connection, reason, approvers, break_glass, starts_at, until)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING`,
        [e.id, e.identity, e.owner, e.role, e.connection, e.reason, e.approvers, e.breakGlass, e.startsAt, e.until],
      );
      return null;
    }
    case 'revokeElevation': {
      const [id, at, by, reason] = req.args as [string, number, string, string];
      const r = await (await writerClient()).query('UPDATE elevations SET revoked_at = $2, revoked_by = $3, revoke_reason = $4 WHERE id = $1 AND revoked_at IS NULL AND until > $2', [id, at, by, reason]);
      return (r.rowCount ?? 0) > 0;
    }
    case 'getElevation': {
      const r = await (await readerClient()).query('SELECT * FROM elevations WHERE id = $1', [req.args[0]]);
      return r.rows[0] ?? null;
    }
    case 'listElevations': {
      const [identity, at, limit] = req.args as [string | null, number | null, number];
      const r = await (await readerClient()).query(
        `SELECT * FROM elevations WHERE ($1::text IS NULL OR identity = $1)
         AND ($2::bigint IS NULL OR (starts_at <= $2 AND until > $2 AND revoked_at IS NULL)) ORDER BY starts_at DESC LIMIT $3`,
        [identity, at, limit],
      );
      return r.rows;
    }
    case 'checkpoint':
      await writesSettled(init.readWaitMs);
      return (await checkpoint()) ?? null;
    case 'close': {
      closing = true;
      if (checkpointTimer) clearInterval(checkpointTimer);
      const deadline = Date.now() + (req.args[0] as number);
      while ((queue.length > 0 || pumping) && Date.now() < deadline) {
        if (!pumping && !retryTimer) void pump();
        await new Promise((r) => setTimeout(r, 10));
      }
      if (retryTimer) clearTimeout(retryTimer);
      const lost = queue.length;
      queue.length = 0;
      if (lost === 0) await checkpointSafely();
      await writer?.end().catch(() => {});
      await reader?.end().catch(() => {});
      return lost;
    }
  }
}

parentPort?.on('message', (m: ToWorker) => {
  if (m.t === 'write') {
    if (closing) return;
    queue.push(...m.items);
    if (!retryTimer) void pump();
  } else if (m.t === 'drop') {
    // Open policy past maxPending: the oldest records not being committed right now go.
    const from = pumping ? Math.min(queue.length, BATCH_MAX) : 0;
    const drop = new Set(m.ids);
    for (let i = queue.length - 1; i >= from; i--) if (drop.has(queue[i].id)) queue.splice(i, 1);
  } else if (m.t === 'sync') {
    const reply = (r: SyncReply) => {
      replyPort.postMessage(r);
      Atomics.store(signal, 0, 1);
      Atomics.notify(signal, 0);
    };
    handleSync(m.req).then(
      (value) => reply({ call: m.req.call, ok: true, value }),
      (e: unknown) => reply({ call: m.req.call, ok: false, error: errorText(e), code: typeof (e as { code?: unknown })?.code === 'string' ? (e as { code: string }).code : undefined }),
    );
  }
});
