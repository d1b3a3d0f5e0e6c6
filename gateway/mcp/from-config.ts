// The MCP listener as `airlock gateway` starts it from the config's `mcp` block: native tools reach
// this gateway's own PostgreSQL listener with tokens minted for the caller.
import { tokenSettings } from '../auth/settings.ts';
import { mintToken } from '../auth/tokens.ts';
import type { Approver } from '../approvals/approver.ts';
import { approvalBindingKey } from '../config/keys.ts';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseDuration, resolveSecret, type LoadedConfig } from '../config/load.ts';
import type { PolicyDecider } from '../enforce/session.ts';
import type { Logger } from '../log.ts';
import type { Store } from '../recording/store.ts';
import { startMcpHttpGateway, type McpHttpGateway } from './http.ts';
import { PendingCalls } from './pending.ts';


export async function startMcpFromConfig(o: {
  loaded: LoadedConfig;
  policy: PolicyDecider;
  store: Store;
  approver: Approver;
  logger: Logger;
  postgres?: { host: string; port: number };
  /** Airlock's SSH listener and its host key fingerprint, when it runs. */
  ssh?: { host: string; port: number; hostKeyFingerprint: string };
  /** Airlock's HTTP/Kubernetes listener, when it runs. */
  http?: { host: string; port: number };
  host?: string;
  port?: number;
}): Promise<McpHttpGateway> {
  const m = o.loaded.config.mcp!;
  const tokens = tokenSettings(o.loaded);
  return startMcpHttpGateway({
    tokens,
    host: o.host ?? m.listen.host,
    port: o.port ?? m.listen.port,
    resource: m.resource,
    authorizationServers: m.authorizationServers,
    deps: {
      enforcement: { policy: o.policy, approver: o.approver, store: o.store, logger: o.logger },
      bindingKey: approvalBindingKey(o.loaded),
      upstreams: m.upstreams.map((u) => ({ name: u.name, url: u.url, ...(u.token ? { token: resolveSecret(u.token, o.loaded.baseDir, `mcp.upstreams ${u.name} token`) } : {}) })),
      postgres: o.postgres ? { host: loopback(o.postgres.host), port: o.postgres.port, connections: o.loaded.config.connections.map((c) => c.name) } : undefined,
      // The native session lives as long as the caller's own token, no longer (a held statement may wait that long).
      ssh: o.ssh ? { host: loopback(o.ssh.host), port: o.ssh.port, hostKeyFingerprint: o.ssh.hostKeyFingerprint, targets: (o.loaded.config.ssh?.targets ?? []).map((t) => t.name) } : undefined,
      http: o.http ? httpTarget(o.loaded, o.http) : undefined,
      mint: (identity, notAfter) => mintToken(tokens, identity, Math.max(1000, Math.min(tokens.maxTtlMs, (notAfter?.getTime() ?? Date.now() + tokens.defaultTtlMs) - Date.now()))),
      maxHoldMs: parseDuration(m.maxHold),
      pending: new PendingCalls(),
      logger: o.logger,
    },
  });
}

/** How this process reaches its own HTTP listener (loopback for a wildcard bind), trusting its certificate. */
function httpTarget(loaded: LoadedConfig, l: { host: string; port: number }): { url: string; ca?: string; services: string[]; clusters: string[] } {
  const h = loaded.config.http;
  const tls = h?.listen.tls;
  const h0 = loopback(l.host);
  const host = h0.includes(':') ? `[${h0}]` : h0;
  return {
    url: `${tls ? 'https' : 'http'}://${host}:${l.port}`,
    ...(tls ? { ca: readFileSync(resolve(loaded.baseDir, tls.cert), 'utf8') } : {}),
    services: (h?.services ?? []).map((s) => s.name),
    clusters: (h?.clusters ?? []).map((c) => c.name),
  };
}

/** A wildcard bind is reached on loopback. */
function loopback(host: string): string {
  return host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host;
}
