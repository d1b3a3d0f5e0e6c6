// `airlock worker`: the approval worker plus the chat side it needs. With a `slack:` block the
// requests go to Slack (and the Bolt app receives the clicks); without one, to the offline local
// channel (`airlock approvals list/approve/reject`).
import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import type { ApprovalChannel } from '../bots/channel.ts';
import { LocalChannel } from '../bots/local/local-channel.ts';
import { configPath, type LoadedConfig } from '../gateway/config/load.ts';
import { openStore } from '../gateway/recording/open.ts';
import type { Store } from '../gateway/recording/store.ts';
import { connectClient, temporalSettings } from './client.ts';
import { listPending, submitDecision } from './decide.ts';
import { signerFromConfig } from './decision-proof.ts';
import { stateQuery } from './definitions.ts';
import { runWorker } from './worker.ts';

export interface ApprovalService {
  /** One line for the operator: where requests go, which task queue. */
  description: string;
  shutdown(): Promise<void>;
}

export async function startApprovalService(
  loaded: LoadedConfig,
  opts: { store?: Store; connection?: NativeConnection } = {},
): Promise<ApprovalService> {
  const ownStore = opts.store === undefined;
  const store = opts.store ?? openStore(loaded);
  const s = temporalSettings(loaded);
  const closers: (() => Promise<void> | void)[] = [];
  const closeAll = async () => {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => undefined);
    if (ownStore) store.close();
  };
  try {
    const channels: ApprovalChannel[] = [];
    const where: string[] = [];
    // One client for the chat apps' decisions (Updates); loaded only when a chat is configured.
    let client: Client | undefined;
    const decisionClient = async (): Promise<Client> => {
      if (!client) {
        const c = await connectClient(loaded);
        closers.push(() => c.connection.close());
        client = c;
      }
      return client;
    };
    if (loaded.config.slack) {
      // Loaded only when configured: the local-only worker must not need the Slack SDK.
      const { SlackChannel } = await import('../bots/slack/slack-channel.ts');
      const { startSlackApp, resolveSlackSecrets } = await import('../bots/slack/slack-app.ts');
      const c = await decisionClient();
      channels.push(SlackChannel.fromConfig(loaded));
      const app = await startSlackApp({
        loaded,
        ...resolveSlackSecrets(loaded),
        signer: signerFromConfig(loaded, 'slack'),
        registry: store,
        audit: (e) => store.recordAudit(e),
        decide: (d) => submitDecision(c, store, d),
        pending: () => listPending(c, s.taskQueue),
      });
      closers.push(() => app.stop());
      where.push(`Slack ${loaded.config.slack.channel}, Slack events on port ${app.port}`);
    }
    if (loaded.config.teams) {
      const { TeamsChannel } = await import('../bots/teams/teams-channel.ts');
      const { startTeamsApp } = await import('../bots/teams/teams-app.ts');
      const c = await decisionClient();
      channels.push(TeamsChannel.fromConfig(loaded));
      const app = await startTeamsApp({
        loaded,
        signer: signerFromConfig(loaded, 'teams'),
        registry: store,
        audit: (e) => store.recordAudit(e),
        decide: (d) => submitDecision(c, store, d),
        lookup: (id) => c.workflow.getHandle(id).query(stateQuery).catch(() => undefined),
      });
      closers.push(() => app.stop());
      where.push(`Teams, bot endpoint on port ${app.port}`);
    }
    if (channels.length === 0) {
      const local = LocalChannel.open(configPath(loaded, loaded.config.store.sqlite));
      closers.push(() => local.close());
      channels.push(local);
      where.push('local channel (`airlock approvals list`)');
    }
    const worker = await runWorker({ loaded, store, channels, connection: opts.connection });
    closers.push(() => worker.shutdown());
    return {
      description: `Temporal ${s.address}, namespace ${s.namespace}, task queue ${s.taskQueue}; approvals via ${where.join('; ')}`,
      shutdown: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
