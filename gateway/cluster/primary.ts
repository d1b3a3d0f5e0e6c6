// The primary of `airlock gateway --workers N` (node:cluster): it serves no client itself. It owns
// the audit store, the ONE writer (workers send their records over IPC in batches; it appends them
// in arrival order, so the hash chain stays linear, and acknowledges each batch with the store's
// health, which workers enforce fail-closed), routes CancelRequests to the worker whose key it is,
// runs the admin listener (metrics aggregated over the workers), audit sinks and the console,
// forwards shutdown to the workers, and replaces a worker that died after closing its sessions in
// the record (reason `worker crashed`). IPC is a local pipe between processes of one user.
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import type { Listener } from '../app.ts';
import { AuthStateStore } from '../auth/revocation.ts';
import { configPath, parseDuration, type LoadedConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { startAdminServer, type Check } from '../observability/admin-server.ts';
import { cancelKeyWorker } from '../postgres/cancel.ts';
import { openStore, type AuditStore } from '../recording/open.ts';
import { canReconcile, reconcileCrashed, reconcileSessions } from '../recording/reconcile.ts';
import { PostgresStore } from '../recording/postgres-store.ts';
import { applyAuditCall } from '../recording/audit-call.ts';
import { isAirlockMessage, WORKER_CRASH_REASON, WORKER_INDEX_ENV, type AuditCall, type ToPrimary, type ToWorker } from './protocol.ts';

export interface ClusterPrimary {
  listeners: Listener[];
  store: AuditStore;
  /** Worker slots and their current process ids. */
  workers(): { index: number; pid: number | undefined }[];
  shutdown(mode: 'drain' | 'fast'): Promise<void>;
}

interface Slot {
  index: number;
  worker: Worker;
  /** Sessions this worker process started and has not ended (closed in the record if it dies). */
  open: Set<string>;
  startedAt: number;
  ready: boolean;
  /** We asked it to stop: its exit is no crash. */
  stopping: boolean;
  crashesInRow: number;
}

const HEALTH_EVERY_MS = 250;
const START_TIMEOUT_MS = 120_000;

function safeSend(w: Worker, m: ToWorker): void {
  if (!w.isConnected()) return;
  // The callback swallows a channel that closed in between (the exit handler deals with the worker).
  w.send(m, undefined, () => undefined);
}

export async function startPrimary(loaded: LoadedConfig, count: number, logger: Logger): Promise<ClusterPrimary> {
  const log = logger.child({ component: 'cluster' });
  for (const w of loaded.warnings ?? []) log.warn(`config ${loaded.file}: ${w}`);
  const store = openStore(loaded, { writerThread: true });
  const closers: (() => Promise<void>)[] = [async () => store.close()];
  if (canReconcile(store)) {
    const r = reconcileCrashed(store);
    if (r.sessions.length) log.warn({ sessions: r.sessions.length, holds: r.holds, instances: r.instances }, `startup: ${r.sessions.length} session(s) left open by a crash were ended (reason: gateway crashed)`);
    // The primary records every worker's sessions under its own instance id; peers see it alive.
    store.startInstanceLease();
  }
  if (!(store instanceof PostgresStore)) store.flush(); // workers open it read-only: it must exist
  // Created (schema, WAL mode) once here, so N workers starting together only read and poll it.
  AuthStateStore.open(configPath(loaded, loaded.config.auth.stateFile)).close();

  const own = new Registry();
  const up = new Gauge({ name: 'airlock_cluster_workers', help: 'Gateway worker processes serving now', registers: [own] });
  const restarts = new Counter({ name: 'airlock_cluster_worker_restarts_total', help: 'Gateway workers replaced after they died', registers: [own] });
  const workerInfo = new Gauge({ name: 'airlock_cluster_worker', help: 'Gateway worker processes by slot and process id (1 per live worker)', labelNames: ['worker', 'pid'], registers: [own] });
  const cancelsRouted = new Counter({ name: 'airlock_cluster_cancels_routed_total', help: 'CancelRequests forwarded to the worker that owns their key', registers: [own] });
  const aggregator = new AggregatorRegistry();

  cluster.setupPrimary({ serialization: 'advanced' });
  const slots = new Map<number, Slot>();
  let stopping = false;
  let starting = true;
  let startFailure: ((e: Error) => void) | undefined;
  let allReady: (() => void) | undefined;
  const exits = new Set<Promise<void>>();

  const apply = (slot: Slot, c: AuditCall) => {
    try {
      applyAuditCall(store, c);
      if (c.k === 'start') slot.open.add(c.s.id);
      else if (c.k === 'end') slot.open.delete(c.id);
    } catch (err) {
      log.error({ err, worker: slot.index, kind: c.k }, 'audit store: a worker record could not be appended');
    }
  };

  const onMessage = (slot: Slot, m: unknown) => {
    if (!isAirlockMessage(m)) return;
    const msg = m as ToPrimary;
    if (msg.t === 'airlock:audit') {
      for (const c of msg.calls) apply(slot, c);
      safeSend(slot.worker, { t: 'airlock:ack', n: msg.n, health: store.health() });
    } else if (msg.t === 'airlock:cancel') {
      // Routed by the index in the key only; the owning worker checks the secret.
      const owner = slots.get(cancelKeyWorker(msg.pid));
      if (owner && owner.worker !== slot.worker) {
        cancelsRouted.inc();
        safeSend(owner.worker, { t: 'airlock:cancel', pid: msg.pid, secret: msg.secret });
      }
    } else if (msg.t === 'airlock:ready') {
      slot.ready = true;
      if (slot.index === 1) served = msg.listeners; // worker 1 runs every listener (MCP only there)
      log.info({ worker: slot.index, pid: slot.worker.process.pid }, `gateway worker ${slot.index} (pid ${slot.worker.process.pid}) ready`);
      if ([...slots.values()].every((s) => s.ready)) allReady?.();
    }
  };
  let served: Listener[] = [];
  const listeners: Listener[] = [];

  const fork = (index: number, crashesInRow = 0) => {
    const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(index) });
    const slot: Slot = { index, worker, open: new Set(), startedAt: Date.now(), ready: false, stopping: false, crashesInRow };
    slots.set(index, slot);
    workerInfo.set({ worker: String(index), pid: String(worker.process.pid) }, 1);
    worker.on('message', (m: unknown) => onMessage(slot, m));
    worker.on('error', (err) => log.warn({ err, worker: index }, 'gateway worker IPC error'));
    let exited!: () => void;
    const done = new Promise<void>((r) => (exited = r));
    exits.add(done);
    worker.once('exit', (code, signal) => {
      // Records still in the pipe arrive before 'disconnect': reconcile after them.
      const settle = () => {
        onExit(slot, code, signal);
        exits.delete(done);
        exited();
      };
      if (worker.isConnected()) worker.once('disconnect', settle);
      else settle();
    });
  };

  const onExit = (slot: Slot, code: number | null, signal: string | null) => {
    workerInfo.remove({ worker: String(slot.index), pid: String(slot.worker.process.pid) });
    const crashed = !slot.stopping;
    if (slot.open.size > 0) {
      const r = reconcileSessions(store, slot.open, crashed ? WORKER_CRASH_REASON : 'gateway worker stopped before the session ended');
      log.warn({ worker: slot.index, sessions: r.sessions.length, holds: r.holds.length }, `gateway worker ${slot.index}: ${r.sessions.length} session(s) closed in the record (${crashed ? WORKER_CRASH_REASON : 'stopped'})`);
    }
    if (slots.get(slot.index) !== slot) return;
    if (starting && crashed) {
      startFailure?.(new Error(`gateway worker ${slot.index} exited during startup (${signal ?? `code ${code}`}); see its log above`));
      return;
    }
    if (stopping || !crashed) {
      slots.delete(slot.index);
      return;
    }
    restarts.inc();
    const lived = Date.now() - slot.startedAt;
    const inRow = lived < 5000 ? slot.crashesInRow + 1 : 0;
    const delay = Math.min(10_000, 250 * 2 ** inRow);
    log.error({ worker: slot.index, pid: slot.worker.process.pid, code, signal, restartInMs: delay }, `gateway worker ${slot.index} (pid ${slot.worker.process.pid}) died (${signal ?? `code ${code}`}): replacing it`);
    setTimeout(() => {
      if (!stopping) fork(slot.index, inRow);
    }, delay).unref();
  };

  const healthTimer = setInterval(() => {
    const health = store.health();
    for (const s of slots.values()) safeSend(s.worker, { t: 'airlock:health', health });
  }, HEALTH_EVERY_MS);
  healthTimer.unref();

  const killAll = () => {
    for (const s of slots.values()) s.worker.process.kill('SIGKILL');
  };

  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`gateway workers not ready within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
      allReady = () => {
        clearTimeout(t);
        resolve();
      };
      startFailure = (e) => {
        clearTimeout(t);
        reject(e);
      };
      for (let i = 1; i <= count; i++) fork(i);
    });
    starting = false;
    up.set(count);

    const adminCfg = loaded.config.listen.admin;
    if (adminCfg) {
      const workersCheck = (): Check => {
        const live = [...slots.values()].filter((s) => s.ready && s.worker.isConnected()).length;
        return live === count ? { ok: true } : { ok: false, error: `${live} of ${count} gateway workers serving` };
      };
      const admin = await startAdminServer({
        host: adminCfg.host,
        port: adminCfg.port,
        logger: log,
        metrics: {
          registry: { contentType: aggregator.contentType },
          text: async () => {
            up.set([...slots.values()].filter((s) => s.ready && s.worker.isConnected()).length);
            const [workers, mine] = await Promise.all([aggregator.clusterMetrics(), own.metrics()]);
            return `${workers.trimEnd()}\n${mine}`;
          },
        },
        targets: {
          store,
          temporal: loaded.config.temporal?.address,
          upstreams: loaded.config.connections.map((c) => ({ name: c.name, host: c.host, port: c.port })),
          extra: () => ({ workers: workersCheck() }),
        },
      });
      closers.unshift(() => admin.close());
      listeners.push({ protocol: 'admin', host: admin.host, port: admin.port, detail: '/healthz /readyz /metrics' });
    }
    if (loaded.config.audit.sinks?.length) {
      const { startAuditSinks } = await import('../recording/sinks.ts');
      const sinks = startAuditSinks(configPath(loaded, loaded.config.store.sqlite), loaded.config.audit.sinks, loaded.baseDir);
      closers.unshift(() => sinks.close());
    }
    if (loaded.config.console?.enabled) {
      if (store instanceof PostgresStore) throw new Error('console.enabled needs a store the console can read (the SQLite store)');
      const { openConsole } = await import('../console/open.ts');
      const c = await openConsole(loaded, { store });
      closers.unshift(() => c.close());
      listeners.push({ protocol: 'console', host: c.host, port: c.port, detail: c.url });
    }
  } catch (err) {
    stopping = true;
    clearInterval(healthTimer);
    killAll();
    await Promise.race([Promise.all([...exits]), new Promise((r) => setTimeout(r, 5000))]);
    for (const c of closers) await c().catch(() => undefined);
    throw err;
  }
  log.info({ workers: count }, `gateway primary: ${count} workers serving`);

  return {
    listeners: [...served, ...listeners],
    store,
    workers: () => [...slots.values()].map((s) => ({ index: s.index, pid: s.worker.process.pid })),
    async shutdown(mode) {
      stopping = true;
      const drainMs = mode === 'drain' ? parseDuration(loaded.config.shutdown.drainTimeout) : 0;
      const flushMs = parseDuration(loaded.config.shutdown.auditFlushTimeout);
      log.info({ mode, drainMs }, 'gateway primary: stopping the workers');
      for (const s of slots.values()) {
        s.stopping = true;
        safeSend(s.worker, { t: 'airlock:shutdown', mode });
      }
      // Each worker drains, waits for its records to be acknowledged, then exits.
      const all = Promise.all([...exits]);
      const late = await Promise.race([all.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), drainMs + flushMs + 10_000).unref())]);
      if (late) {
        log.error('gateway workers did not stop in time: killing them');
        killAll();
        await Promise.race([all, new Promise((r) => setTimeout(r, 5000))]);
      }
      clearInterval(healthTimer);
      const flush = (store as Partial<{ whenDrained(ms: number): Promise<boolean> }>).whenDrained;
      if (flush && !(await flush.call(store, flushMs))) log.error('audit store: records still pending at shutdown (see audit.onFailure)');
      for (const c of closers) await c().catch((err: unknown) => log.warn({ err }, 'error while closing'));
    },
  };
}
