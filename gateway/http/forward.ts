// Sends a decided request upstream: one http(s).request on the upstream's keep-alive agent, the
// headers given as one flat array (written once by Node, no per-header setHeader), the buffered
// body in one end(). This replaced http-proxy-3 on the request path (its setupOutgoing copied the
// headers twice and parsed the URL again, and a Readable was built and piped per request); what
// reaches the upstream is what it sent:
// - the client's headers as Node parsed them (`req.headers`: what rules and masking saw), after
//   the caller's removals, with `trailer` dropped, the caller's additions over them, and `host`
//   set to the upstream's (http-proxy-3 `changeOrigin`); hop-by-hop headers (Connection and what it
//   names, Keep-Alive, TE, Upgrade) are not forwarded: the upstream connection is Airlock's own;
// - the path joined under the upstream URL's path, its query merged after the upstream URL's
//   query, both as WHATWG URL serializes them (as http-proxy-3's getPath/urlJoin did);
// - framing from the buffered body: `content-length` is the body's length (the client's
//   content-length / transfer-encoding are replaced, so the upstream reads exactly the bytes that
//   were decided on), and is sent for every method but GET/HEAD without a body.
import http from 'node:http';
import https from 'node:https';

/** Where requests to one upstream go: computed once per upstream. */
export interface ForwardTarget {
  https: boolean;
  /** Host name for the socket (IPv6 without brackets). */
  hostname: string;
  port: number;
  /** `Host` header value (host[:port], as in the URL). */
  hostHeader: string;
  basePath: string;
  /** The upstream URL's own query (without `?`), merged before the request's. */
  baseQuery: string;
  agent: http.Agent;
}

export function forwardTarget(url: URL, agent: http.Agent): ForwardTarget {
  const isHttps = url.protocol === 'https:';
  const hostname = url.hostname.startsWith('[') && url.hostname.endsWith(']') ? url.hostname.slice(1, -1) : url.hostname;
  return {
    https: isHttps,
    hostname,
    port: url.port ? Number(url.port) : isHttps ? 443 : 80,
    hostHeader: url.host,
    basePath: url.pathname || '/',
    baseQuery: url.search.slice(1),
    agent,
  };
}

/** Query characters WHATWG URL leaves as they are (for http(s)); anything else goes through URL. */
const URL_STABLE_QUERY = /^[A-Za-z0-9\-._~!$&()*+,;=:@/?%]*$/;

/**
 * The upstream request target: `encodedRest` (the canonical path below the connection prefix,
 * normalize.ts; URL keeps it as it is) joined under the upstream's path, and the query as URL
 * serializes it (a `#` ends it, `"` `<` `>` `'` space and non-ASCII are percent-encoded).
 */
export function upstreamPath(t: ForwardTarget, encodedRest: string, query: string): string {
  let q = query;
  if (q !== '' && !URL_STABLE_QUERY.test(q)) q = new URL(`/?${q}`, 'http://base.invalid').search.slice(1);
  const base = t.basePath;
  const path = base.endsWith('/') ? base + (encodedRest.startsWith('/') ? encodedRest.slice(1) : encodedRest) : base + (encodedRest.startsWith('/') ? encodedRest : `/${encodedRest}`);
  const merged = t.baseQuery && q ? `${t.baseQuery}&${q}` : t.baseQuery || q;
  return merged ? `${path}?${merged}` : path;
}

/** Request headers Airlock sets itself from the buffered body and the target, never the client's. */
const REPLACED = new Set(['host', 'content-length', 'transfer-encoding', 'trailer']);
/** Hop-by-hop (RFC 9110 7.6.1): they describe the client's connection to Airlock, not Airlock's to the upstream. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade']);

/** Header names the client's `Connection` header declares hop-by-hop: never forwarded either. */
function nominated(connection: string | string[] | undefined): Set<string> | undefined {
  if (connection === undefined) return undefined;
  const names = new Set<string>();
  for (const v of Array.isArray(connection) ? connection : [connection]) {
    for (const t of v.split(',')) {
      const n = t.trim().toLowerCase();
      if (n) names.add(n);
    }
  }
  return names;
}

/**
 * The upstream request's headers as a flat [name, value, ...] array: `src` (the client's, as Node
 * parsed them: lower-case names) minus what is `withheld`, what `add` overrides and what Airlock
 * sets itself, then `add`, `host` and the framing.
 */
export function forwardHeaders(src: http.IncomingHttpHeaders, add: Record<string, string | string[]>, t: ForwardTarget, method: string, bodyLength: number, withheld?: (name: string) => boolean): Array<string | string[]> {
  const out: Array<string | string[]> = [];
  let framed = false;
  const hop = nominated(src.connection);
  for (const k in src) {
    const v = src[k];
    if (v === undefined) continue;
    if (REPLACED.has(k)) {
      if (k === 'content-length' || k === 'transfer-encoding') framed = true;
      continue;
    }
    if (HOP_BY_HOP.has(k) || hop?.has(k)) continue;
    if (Object.hasOwn(add, k) || withheld?.(k)) continue;
    out.push(k, v);
  }
  for (const k in add) out.push(k, add[k]);
  out.push('host', t.hostHeader);
  if (bodyLength > 0 || framed || (method !== 'GET' && method !== 'HEAD')) out.push('content-length', String(bodyLength));
  return out;
}

/** Starts the upstream request and sends `body`; the caller listens for 'response' and 'error'. */
export function sendUpstream(t: ForwardTarget, method: string, path: string, headers: Array<string | string[]>, body: Buffer): http.ClientRequest {
  const opts: http.RequestOptions = { hostname: t.hostname, port: t.port, method, path, agent: t.agent, headers: headers as unknown as http.OutgoingHttpHeaders };
  const req = t.https ? https.request(opts) : http.request(opts);
  if (body.length > 0) req.end(body);
  else req.end();
  return req;
}
