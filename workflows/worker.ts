// The approval worker: runs approval workflows and their activities (chat I/O, audit). The
// workflow bundle (webpack) is built once per process and shared by every worker it starts.
import { fileURLToPath } from 'node:url';
import { DefaultLogger, NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import type { ApprovalChannel } from '../bots/channel.ts';
import type { LoadedConfig } from '../gateway/config/load.ts';
import { log } from '../gateway/log.ts';
import type { Store } from '../gateway/recording/store.ts';
import { createActivities } from './activities.ts';
import { createAccessActivities } from './access-activities.ts';
import { maxAgeMs, verificationKeys } from './decision-proof.ts';
import { installTemporalLogging } from './runtime.ts';
import { ensureSearchAttributes, searchAttributeCommands, temporalSettings } from './client.ts';

export const WORKFLOWS_PATH = fileURLToPath(new URL('./approval-workflow.ts', import.meta.url));

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;

/** The workflow bundle, built on first use and cached for the life of the process. */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflowCode({
    workflowsPath: WORKFLOWS_PATH,
    // Webpack's info chatter is dropped; its warnings and errors reach the operator.
    logger: new DefaultLogger('WARN', (e) => (e.level === 'ERROR' ? log.error(e.meta ?? {}, e.message) : log.warn(e.meta ?? {}, e.message))),
  }).catch((err: unknown) => {
    bundle = undefined; // let a later call retry (e.g. after fixing a syntax error in dev)
    throw err;
  });
  return bundle;
}

/** A worker connection from the config (the gateway's client uses workflows/client.ts instead). */
export async function connectWorkerConnection(loaded: LoadedConfig): Promise<NativeConnection> {
  installTemporalLogging();
  const s = temporalSettings(loaded);
  try {
    return await NativeConnection.connect({ address: s.address, tls: s.tls ?? false, ...(s.apiKey ? { apiKey: s.apiKey } : {}) });
  } catch (err) {
    throw new Error(`cannot reach Temporal at ${s.address}: ${err instanceof Error ? err.message : String(err)} (is the server running? see temporal.address in ${loaded.file})`);
  }
}

export interface RunWorkerOptions {
  loaded: LoadedConfig;
  store: Store;
  channels: ApprovalChannel[];
  /** An existing connection (tests, a shared process); otherwise one is opened from the config and closed on shutdown. */
  connection?: NativeConnection;
}

export interface RunningWorker {
  taskQueue: string;
  namespace: string;
  shutdown(): Promise<void>;
}

export async function runWorker(opts: RunWorkerOptions): Promise<RunningWorker> {
  if (opts.channels.length === 0) throw new Error('the approval worker needs at least one approval channel (Slack, Teams or local)');
  installTemporalLogging();
  const s = temporalSettings(opts.loaded);
  // Read before connecting: a bad key stops the worker at start, not at the first decision.
  const keys = verificationKeys(opts.loaded);
  if (keys.size === 0) log.warn({}, 'no decision keys configured (decisions.keys): every approval decision will be refused');
  const decisions = { config: opts.loaded.config, keys, maxAgeMs: maxAgeMs(opts.loaded) };
  const ownConnection = opts.connection === undefined;
  const connection = opts.connection ?? (await connectWorkerConnection(opts.loaded));
  try {
    try {
      const added = await connection.withDeadline(Date.now() + 10_000, () => ensureSearchAttributes(connection.operatorService, s.namespace));
      if (added.length > 0) log.info({ added, namespace: s.namespace }, 'registered Temporal search attributes');
    } catch (err) {
      // Temporal Cloud and locked-down clusters refuse this from workers: say what to run instead.
      log.warn(
        { err: err instanceof Error ? err.message : String(err) },
        `could not check/register Airlock search attributes; if approvals fail to start, run:\n${searchAttributeCommands(s.namespace)}`,
      );
    }
    const worker = await Worker.create({
      connection,
      namespace: s.namespace,
      taskQueue: s.taskQueue,
      workflowBundle: await workflowBundle(),
      activities: { ...createActivities({ channels: opts.channels, store: opts.store, decisions }), ...createAccessActivities({ store: opts.store, config: opts.loaded.config }) },
    });
    const running = worker.run();
    running.catch((err: unknown) => log.error({ err }, 'approval worker stopped with an error'));
    let stopped: Promise<void> | undefined;
    return {
      taskQueue: s.taskQueue,
      namespace: s.namespace,
      shutdown() {
        stopped ??= (async () => {
          if (worker.getState() === 'RUNNING') worker.shutdown();
          await running.catch(() => undefined);
          if (ownConnection) await connection.close();
        })();
        return stopped;
      },
    };
  } catch (err) {
    if (ownConnection) await connection.close().catch(() => undefined);
    throw err;
  }
}
