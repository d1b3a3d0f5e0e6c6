// One gateway worker of `airlock gateway --workers N`: the ordinary gateway (app.ts) on the
// listening sockets node:cluster shares, with the audit store replaced by WorkerStore (records go
// to the primary), cancel keys that carry this worker's index (other workers' keys are forwarded
// through the primary), and no admin listener, sinks or console (the primary runs those). The MCP
// listener keeps per-session state in memory, so only worker 1 runs it: with one listener on the
// port, cluster hands every MCP connection to that worker.
import { AggregatorRegistry } from 'prom-client';
import { installCrashGuard, startGateway } from '../app.ts';
import { configPath, type LoadedConfig } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { CancelRegistry, sendCancel } from '../postgres/cancel.ts';
import { postgresConnection, storeOptions } from '../recording/open.ts';
import { PostgresStore } from '../recording/postgres-store.ts';
import { SqliteStore } from '../recording/sqlite-store.ts';
import { isAirlockMessage, type ToPrimary, type ToWorker } from './protocol.ts';
import { WorkerStore, type StoreReader } from './worker-store.ts';

function send(m: ToPrimary): void {
  if (process.connected) process.send?.(m);
}

/** A read-only handle on the store the primary writes, for the few reads a gateway makes. */
function openReader(loaded: LoadedConfig): StoreReader {
  const pg = postgresConnection(loaded);
  if (pg) {
    const { maxPageCount: _m, busyTimeoutMs: _b, readonly: _r, ...rest } = storeOptions(loaded, { signer: false });
    return PostgresStore.open(pg, rest);
  }
  return SqliteStore.open(configPath(loaded, loaded.config.store.sqlite), { ...storeOptions(loaded, { signer: false }), readonly: true });
}

export async function runWorker(loaded: LoadedConfig, index: number, logger: Logger): Promise<void> {
  const log = logger.child({ worker: index });
  const a = loaded.config.audit;
  const { maxPendingMs } = storeOptions(loaded, { signer: false });
  const store = new WorkerStore({ send, connected: () => process.connected }, { policy: a.onFailure, maxPending: a.maxPending, maxPendingMs: maxPendingMs ?? 5000, openReader: () => openReader(loaded) });
  const cancels = new CancelRegistry({ worker: index, forward: (pid, secret) => send({ t: 'airlock:cancel', pid, secret }) });
  // The primary decides when to stop: a terminal's Ctrl-C reaches the whole process group, and a
  // worker that stopped on its own would be taken for a crashed one.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGQUIT'] as const) process.on(sig, () => log.debug({ signal: sig }, 'signal left to the gateway primary'));

  let gw: Awaited<ReturnType<typeof startGateway>> | undefined;
  let stopping = false;
  const stop = async (mode: 'drain' | 'fast') => {
    if (stopping) return;
    stopping = true;
    try {
      await gw?.shutdown(mode);
    } finally {
      store.close();
      process.disconnect?.();
      process.exit(0);
    }
  };
  process.on('message', (m: unknown) => {
    if (!isAirlockMessage(m)) return;
    const msg = m as ToWorker;
    if (msg.t === 'airlock:ack') store.acknowledged(msg.n, msg.health);
    else if (msg.t === 'airlock:health') store.primaryHealth(msg.health);
    else if (msg.t === 'airlock:cancel') {
      // A key of ours that arrived at another worker: the secret is checked here, as for a local one.
      const key = cancels.lookup(msg.pid, Buffer.from(msg.secret));
      if (key) void sendCancel(key).then((err) => err && log.warn({ err }, 'upstream cancel request failed'));
    } else if (msg.t === 'airlock:shutdown') void stop(msg.mode);
  });
  // Without the primary nothing can be recorded: end every session (fail closed) and exit.
  process.once('disconnect', () => {
    store.disconnected();
    if (stopping) return;
    log.error('the gateway primary is gone: ending every session (no audit trail, no access)');
    stopping = true;
    void (gw?.close() ?? Promise.resolve()).finally(() => process.exit(1));
  });

  try {
    gw = await startGateway(loaded, { store, cancels, logger: log, without: ['admin', 'auditSinks', 'console', ...(index === 1 ? [] : (['mcp'] as const))] });
  } catch (err) {
    // The IPC channel would keep this process alive: exit, so the primary reports the failure.
    process.stderr.write(`airlock: gateway worker ${index}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  installCrashGuard(log);
  // prom-client answers the primary's aggregation requests with this registry.
  AggregatorRegistry.setRegistries([gw.metrics.registry]);
  new AggregatorRegistry();
  send({ t: 'airlock:ready', listeners: gw.listeners });
}
