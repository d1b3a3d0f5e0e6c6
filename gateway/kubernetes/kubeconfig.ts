// `airlock kubeconfig --connection NAME`: a kubeconfig that points kubectl at Airlock (not at the
// cluster) with the agent's Airlock token. The cluster's own credentials never leave Airlock.
import { readFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { ConfigError, configPath, type LoadedConfig } from '../config/load.ts';

/** The URL clients use for the HTTP listener: `http.listen.publicUrl`, else http(s)://host:port. */
export function httpGatewayUrl(loaded: LoadedConfig): string {
  const h = loaded.config.http;
  if (!h) throw new ConfigError(`${loaded.file}: no http: block, so there is no HTTP/Kubernetes listener`);
  if (h.listen.publicUrl) return h.listen.publicUrl.replace(/\/+$/, '');
  const host = h.listen.host === '0.0.0.0' || h.listen.host === '::' ? '127.0.0.1' : h.listen.host;
  return `${h.listen.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${h.listen.port}`;
}

/**
 * A kubeconfig (YAML) for `connection`, authenticating with `token`. `gatewayUrl` overrides the
 * listener URL (e.g. a load balancer). When the listener has TLS, its certificate is embedded as
 * the CA to trust (self-signed or private-CA deployments work without extra flags).
 */
export function kubeconfigFor(loaded: LoadedConfig, connection: string, token: string, gatewayUrl?: string): string {
  const h = loaded.config.http;
  const cluster = h?.clusters.find((c) => c.name === connection);
  if (!h || !cluster) {
    const known = h?.clusters.map((c) => c.name) ?? [];
    throw new ConfigError(`no Kubernetes cluster connection named ${JSON.stringify(connection)} in ${loaded.file} (known: ${known.length ? known.join(', ') : 'none'})`);
  }
  const base = (gatewayUrl ?? httpGatewayUrl(loaded)).replace(/\/+$/, '');
  const name = `airlock-${connection}`;
  const clusterEntry: Record<string, string> = { server: `${base}/${encodeURIComponent(connection)}` };
  if (base.startsWith('https:') && h.listen.tls) {
    clusterEntry['certificate-authority-data'] = readFileSync(configPath(loaded, h.listen.tls.cert)).toString('base64');
  }
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster: clusterEntry }],
    users: [{ name, user: { token } }],
    contexts: [{ name, context: { cluster: name, user: name } }],
    'current-context': name,
    preferences: {},
  });
}
