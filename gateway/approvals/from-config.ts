// The gateway's approver from the config: Temporal when `temporal:` is set, otherwise every
// review fails closed with a reason saying what to configure.
import type { Tracer } from '@opentelemetry/api';
import type { LoadedConfig } from '../config/load.ts';
import type { Store } from '../recording/store.ts';
import { approvalChannelsDescription, connectClient, temporalSettings } from '../../workflows/client.ts';
import { FailClosedApprover, type Approver } from './approver.ts';
import { TemporalApprover } from './temporal-approver.ts';

export async function approverFromConfig(loaded: LoadedConfig, store: Store, opts: { tracer?: Tracer } = {}): Promise<{ approver: Approver; close(): Promise<void> }> {
  if (!loaded.config.temporal) return { approver: new FailClosedApprover(), close: async () => {} };
  // Lazy: the gateway starts (and serves allowed traffic) while Temporal is down; holds fail closed.
  const client = await connectClient(loaded, { lazy: true });
  const approver = new TemporalApprover({
    client,
    taskQueue: temporalSettings(loaded).taskQueue,
    store,
    channelsDescription: approvalChannelsDescription(loaded),
    ...(opts.tracer ? { tracer: opts.tracer } : {}),
  });
  return {
    approver,
    close: async () => {
      await approver.drain();
      await client.connection.close();
    },
  };
}
