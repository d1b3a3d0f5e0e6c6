// The SQLite audit store's writer thread (see sqlite-writer.ts): owns the one connection that
// appends the gateway's records, so the redaction, canonical JSON, hashing and SQLite inserts of
// every record run here, off the thread that relays client traffic. It is an ordinary SqliteStore
// (same group commit, retry queue, durability and checkpoint rules); this module only feeds it the
// batches it receives, commits them, and reports its health back after every commit.
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { workerData, type MessagePort } from 'node:worker_threads';
import { applyAuditCall } from './audit-call.ts';
import { PruneRefusedError, SqliteStore } from './sqlite-store.ts';
import type { FromWriter, ToWriter, WriterInit } from './sqlite-writer-protocol.ts';

/** How long received batches wait to be committed together (a commit costs far more than a row). */
const COMMIT_DELAY_MS = 5;
/** While records wait for a retry or the store is unhealthy, report its health this often. */
const HEALTH_EVERY_MS = 100;

const init = workerData as WriterInit;
const port = init.port as MessagePort;
const signal = new Int32Array(init.signal);

function post(m: FromWriter): void {
  port.postMessage(m);
  Atomics.add(signal, 0, 1);
  Atomics.notify(signal, 0);
}

let store: SqliteStore;
try {
  store = SqliteStore.open(init.path, { ...init.options, ...(init.signingKeyPem ? { signingKey: createPrivateKey(init.signingKeyPem) } : {}) });
} catch (e) {
  post({ t: 'open-failed', error: e instanceof Error ? e.message : String(e) });
  port.close();
  throw e;
}

let received = 0;
let commitTimer: NodeJS.Timeout | undefined;
let lastReported = '';

function healthKey(): string {
  const h = store.health();
  return `${h.ok}|${h.pending}|${h.dropped}|${h.lastError ?? ''}`;
}

function commit(): void {
  if (commitTimer) clearTimeout(commitTimer);
  commitTimer = undefined;
  store.flush();
  lastReported = healthKey();
  post({ t: 'ack', upTo: received, health: store.health(), stats: store.stats() });
}

// Retries happen on the store's own timer: tell the gateway thread when that changes the health
// (a lock released, a full disk freed), so it stops refusing work without waiting for new records.
const watch = setInterval(() => {
  const key = healthKey();
  if (key !== lastReported) {
    lastReported = key;
    post({ t: 'health', health: store.health(), stats: store.stats() });
  }
}, HEALTH_EVERY_MS);

port.on('message', (m: ToWriter) => {
  if (m.t === 'write') {
    for (const c of m.calls) {
      try {
        applyAuditCall(store, c);
      } catch {
        // Only the synchronous calls throw; the store already counted and logged the failure.
      }
    }
    received = m.n;
    // Session starts and ends and audit events are rare and worth more than a few ms of batching:
    // committed at once, which keeps what a crash can lose of them to the hand-over interval.
    if (m.calls.some((c) => c.k !== 'op')) commit();
    else commitTimer ??= setTimeout(commit, COMMIT_DELAY_MS);
  } else if (m.t === 'flush') {
    commit();
  } else if (m.op === 'checkpoint' || m.op === 'prune') {
    try {
      commit();
      const value =
        m.op === 'prune'
          ? store.prune(new Date(m.before), {
              ...(m.publicKeyPem ? { publicKey: createPublicKey(m.publicKeyPem) } : {}),
              ...(m.from !== undefined ? { from: new Date(m.from) } : {}),
              ...(m.anchored ? { anchored: m.anchored } : {}),
            })
          : (store.checkpoint() ?? null);
      post({ t: 'reply', id: m.id, ok: true, value, stats: store.stats() });
    } catch (e) {
      post({ t: 'reply', id: m.id, ok: false, error: e instanceof Error ? e.message : String(e), ...(e instanceof PruneRefusedError ? { report: e.report } : {}) });
    }
  } else if (m.op === 'close') {
    if (commitTimer) clearTimeout(commitTimer);
    clearInterval(watch);
    store.close(); // commits what it can, signs the head
    post({ t: 'reply', id: m.id, ok: true, value: null, stats: store.stats() });
    port.close();
  }
});

post({ t: 'ready' });
