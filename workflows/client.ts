// Connections to Temporal from the config's `temporal:` block, shared by the gateway, the worker
// and the CLI. TLS files resolve relative to the config file. No worker (native) imports here:
// the gateway loads this module.
import { readFileSync } from 'node:fs';
import { Client, Connection } from '@temporalio/client';
import proto from '@temporalio/proto';
import { ConfigError, configPath, resolveSecret, type LoadedConfig } from '../gateway/config/load.ts';
import { SEARCH_ATTRIBUTES } from './search-attributes.ts';

export interface TemporalSettings {
  address: string;
  namespace: string;
  taskQueue: string;
  tls?: { serverRootCACertificate?: Buffer; clientCertPair?: { crt: Buffer; key: Buffer }; serverNameOverride?: string };
  /** Bearer API key (Temporal Cloud, or a frontend with an authorizer); always sent over TLS. */
  apiKey?: string;
}

const DEFAULTS = { address: '127.0.0.1:7233', namespace: 'default', taskQueue: 'airlock-approvals' };

export function temporalSettings(loaded: LoadedConfig): TemporalSettings {
  const t = loaded.config.temporal ?? DEFAULTS;
  const read = (p: string, what: string) => {
    const file = configPath(loaded, p);
    try {
      return readFileSync(file);
    } catch (err) {
      throw new ConfigError(`temporal.tls.${what}: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  };
  let tls: TemporalSettings['tls'];
  const cfg = loaded.config.temporal?.tls;
  const serverName = loaded.config.temporal?.serverName;
  if (cfg) {
    if ((cfg.cert === undefined) !== (cfg.key === undefined)) throw new ConfigError('temporal.tls: cert and key go together (mTLS client certificate)');
    tls = {
      serverRootCACertificate: cfg.ca ? read(cfg.ca, 'ca') : undefined,
      clientCertPair: cfg.cert && cfg.key ? { crt: read(cfg.cert, 'cert'), key: read(cfg.key, 'key') } : undefined,
      ...(serverName ? { serverNameOverride: serverName } : {}),
    };
  }
  const keyRef = loaded.config.temporal?.apiKey;
  const apiKey = keyRef ? resolveSecret(keyRef, loaded.baseDir, 'temporal.apiKey') : undefined;
  // A bearer key never travels in clear text: with an API key, TLS is on (system CAs unless tls.ca).
  if (apiKey && !tls) tls = serverName ? { serverNameOverride: serverName } : {};
  return { address: t.address, namespace: t.namespace, taskQueue: t.taskQueue, tls, ...(apiKey ? { apiKey } : {}) };
}

/**
 * A client for the gateway and the CLI. `lazy` (the gateway's choice) connects on first use, so
 * the gateway starts and serves allowed traffic while Temporal is down; holds then fail closed.
 */
export async function connectClient(loaded: LoadedConfig, opts: { lazy?: boolean; connectTimeoutMs?: number } = {}): Promise<Client> {
  const s = temporalSettings(loaded);
  const options = { address: s.address, tls: s.tls ?? false, connectTimeout: opts.connectTimeoutMs ?? 5000, ...(s.apiKey ? { apiKey: s.apiKey } : {}) };
  let connection: Connection;
  if (opts.lazy) connection = Connection.lazy(options);
  else {
    try {
      connection = await Connection.connect(options);
    } catch (err) {
      throw new Error(`cannot reach Temporal at ${s.address}: ${err instanceof Error ? err.message : String(err)} (is the server running? see temporal.address in ${loaded.file})`);
    }
  }
  return new Client({ connection, namespace: s.namespace });
}

type OperatorService = Pick<Connection['operatorService'], 'listSearchAttributes' | 'addSearchAttributes'>;

// @temporalio/proto is CommonJS: take the enum off its default export.
const { IndexedValueType } = proto.temporal.api.enums.v1;
const INDEXED: Record<string, proto.temporal.api.enums.v1.IndexedValueType> = {
  Keyword: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  KeywordList: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
};

/** Registers Airlock's search attributes where missing; returns the names it added. */
export async function ensureSearchAttributes(operator: OperatorService, namespace: string): Promise<string[]> {
  const existing = await operator.listSearchAttributes({ namespace });
  const known = new Set([...Object.keys(existing.customAttributes ?? {}), ...Object.keys(existing.systemAttributes ?? {})]);
  const missing = Object.entries(SEARCH_ATTRIBUTES).filter(([name]) => !known.has(name));
  if (missing.length === 0) return [];
  await operator.addSearchAttributes({ namespace, searchAttributes: Object.fromEntries(missing.map(([n, t]) => [n, INDEXED[t]])) });
  return missing.map(([n]) => n);
}

/** The commands an operator runs when the worker lacks the permission to register them itself. */
export function searchAttributeCommands(namespace: string): string {
  return Object.entries(SEARCH_ATTRIBUTES)
    .map(([n, t]) => `temporal operator search-attribute create --namespace ${namespace} --name ${n} --type ${t}`)
    .join('\n');
}

/** Where approvers are asked, as the gateway tells held clients (TemporalApprover channelsDescription). */
export function approvalChannelsDescription(loaded: LoadedConfig): string {
  const { slack, teams } = loaded.config;
  const chats = [slack ? `Slack ${slack.channel}` : undefined, teams ? `Microsoft Teams${teams.channelId ? ` ${teams.channelId}` : ''}` : undefined].filter(Boolean);
  if (chats.length > 0) return chats.join(' and ');
  return 'the local channel (run `airlock approvals list`)';
}
