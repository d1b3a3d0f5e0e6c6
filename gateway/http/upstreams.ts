// Upstream targets resolved from config at start: URL, keep-alive agent with the pinned CA (and
// client certificate for clusters), and the credential headers Airlock injects. Secrets are read
// once here; a missing secret stops the gateway from starting, naming what is missing.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { ConfigError, configPath, resolveSecret, type LoadedConfig } from '../config/load.ts';
import type { HttpServiceConfig, KubernetesClusterConfig } from '../config/schema.ts';
import { forwardTarget, type ForwardTarget } from './forward.ts';

export interface Upstream {
  name: string;
  kind: 'http' | 'kubernetes';
  url: URL;
  agent: http.Agent;
  /** Host, port, base path and agent of the upstream request (forward.ts), computed once. */
  target: ForwardTarget;
  /** TLS material for websocket upgrades (ws opens its own connections). */
  tls: { ca?: string; cert?: string; key?: string };
  /** Headers that carry Airlock's credential upstream. */
  authHeaders: Record<string, string>;
  /** Selected request headers exposed to rules (lower-case). */
  ruleHeaders: string[];
  impersonate: boolean;
  allow: { identities: string[]; groups: string[] };
  /** Rule paths match case-sensitively (off by default). */
  caseSensitivePaths: boolean;
  /** Identity/method-override headers the client may send to this upstream (lower-case). */
  trustHeaders: Set<string>;
}

function readPem(loaded: LoadedConfig, file: string, what: string): string {
  const p = configPath(loaded, file);
  try {
    return readFileSync(p, 'utf8');
  } catch (err) {
    throw new ConfigError(`${what}: cannot read ${p}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

function agentFor(url: URL, tls: Upstream['tls']): http.Agent {
  const common = { keepAlive: true, maxSockets: 256, maxFreeSockets: 64, scheduling: 'lifo' as const };
  if (url.protocol === 'https:') return new https.Agent({ ...common, ...tls, rejectUnauthorized: true });
  if (url.protocol === 'http:') return new http.Agent(common);
  throw new ConfigError(`upstream ${url.href}: only http and https URLs are supported`);
}

function service(loaded: LoadedConfig, s: HttpServiceConfig, i: number): Upstream {
  const where = `http.services[${i}] (${s.name})`;
  const url = new URL(s.url);
  const tls: Upstream['tls'] = s.ca ? { ca: readPem(loaded, s.ca, `${where}.ca`) } : {};
  const authHeaders: Record<string, string> = {};
  const a = s.auth;
  if (a.type === 'bearer') authHeaders.authorization = `Bearer ${resolveSecret(a.token, loaded.baseDir, `${where}.auth.token`)}`;
  else if (a.type === 'basic') {
    const pw = resolveSecret(a.password, loaded.baseDir, `${where}.auth.password`);
    authHeaders.authorization = `Basic ${Buffer.from(`${a.username}:${pw}`).toString('base64')}`;
  } else if (a.type === 'header') authHeaders[a.name.toLowerCase()] = resolveSecret(a.value, loaded.baseDir, `${where}.auth.value`);
  const agent = agentFor(url, tls);
  return {
    name: s.name,
    kind: 'http',
    url,
    agent,
    target: forwardTarget(url, agent),
    tls,
    authHeaders,
    ruleHeaders: s.headers.map((h) => h.toLowerCase()),
    impersonate: false,
    allow: s.allow,
    caseSensitivePaths: s.caseSensitivePaths,
    trustHeaders: new Set(s.trustHeaders.map((h) => h.toLowerCase())),
  };
}

function cluster(loaded: LoadedConfig, c: KubernetesClusterConfig, i: number): Upstream {
  const where = `http.clusters[${i}] (${c.name})`;
  const url = new URL(c.server);
  if (url.protocol !== 'https:') throw new ConfigError(`${where}.server: the API server must be https (its CA is pinned)`);
  const tls: Upstream['tls'] = { ca: readPem(loaded, c.ca, `${where}.ca`) };
  const authHeaders: Record<string, string> = {};
  if ('token' in c.auth) authHeaders.authorization = `Bearer ${resolveSecret(c.auth.token, loaded.baseDir, `${where}.auth.token`)}`;
  else {
    tls.cert = readPem(loaded, c.auth.clientCert, `${where}.auth.clientCert`);
    tls.key = resolveSecret(c.auth.clientKey, loaded.baseDir, `${where}.auth.clientKey`);
  }
  const agent = agentFor(url, tls);
  return {
    name: c.name,
    kind: 'kubernetes',
    url,
    agent,
    target: forwardTarget(url, agent),
    tls,
    authHeaders,
    ruleHeaders: ['content-type', 'accept', 'user-agent'],
    impersonate: c.impersonate,
    allow: c.allow,
    caseSensitivePaths: false,
    trustHeaders: new Set(),
  };
}

export function resolveUpstreams(loaded: LoadedConfig): Map<string, Upstream> {
  const h = loaded.config.http;
  const out = new Map<string, Upstream>();
  if (!h) return out;
  h.services.forEach((s, i) => out.set(s.name, service(loaded, s, i)));
  h.clusters.forEach((c, i) => out.set(c.name, cluster(loaded, c, i)));
  return out;
}
