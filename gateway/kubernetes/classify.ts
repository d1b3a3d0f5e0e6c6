// Kubernetes request classification, following the API server's own RequestInfoFactory
// (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go), so rules mean what RBAC means:
//   /api/v1/namespaces/{ns}/{resource}/{name}/{subresource}
//   /apis/{group}/{version}/namespaces/{ns}/{resource}/{name}/{subresource}
//   /api/v1/{resource}/{name}            (cluster-scoped)
//   /api/v1/watch/...                    (legacy watch prefix)
// Verbs: GET list/get (watch with ?watch=true), POST create, PUT update, PATCH patch, DELETE
// delete/deletecollection. exec/attach/portforward are `create` whatever the method (websocket
// clients send GET; they are writes in every sense that matters).
import type { KubernetesFacts } from '../policy/operation.ts';

const NAMESPACE_SUBRESOURCES = new Set(['status', 'finalize']);
export const WRITE_VERBS = ['create', 'update', 'patch', 'delete', 'deletecollection'];
const STREAM_SUBRESOURCES = new Set(['exec', 'attach', 'portforward']);

/**
 * The API server decodes `watch` like every bool query parameter (Convert_Slice_string_To_bool):
 * present and anything but `0` or `false` (any case) is true, the empty value included.
 */
export function isWatchParam(params: URLSearchParams): boolean {
  return boolParam(params, 'watch');
}

/** A bool query parameter as the API server reads it (see isWatchParam). */
export function boolParam(params: URLSearchParams, name: string): boolean {
  if (!params.has(name)) return false;
  const v = params.get(name) ?? '';
  return v !== '0' && v.toLowerCase() !== 'false';
}

/** `path` is the normalized path below the cluster prefix; `query` the raw query string. */
export function classifyKubernetes(method: string, path: string, query: string): KubernetesFacts {
  const params = new URLSearchParams(query);
  const parts = path.split('/').filter((p) => p !== '');
  const m = method.toUpperCase();
  const nonResource = (): KubernetesFacts => ({ verb: m.toLowerCase(), apiGroup: '', apiVersion: '', resource: '', clusterScoped: false });

  let rest: string[];
  let apiGroup = '';
  let apiVersion: string;
  if (parts[0] === 'api' && parts.length >= 2) {
    apiVersion = parts[1];
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 3) {
    apiGroup = parts[1];
    apiVersion = parts[2];
    rest = parts.slice(3);
  } else {
    return nonResource();
  }
  if (rest.length === 0) return { ...nonResource(), apiGroup, apiVersion };

  let watchPrefix = false;
  if (rest[0] === 'watch') {
    watchPrefix = true;
    rest = rest.slice(1);
  }
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length > 1) {
    namespace = rest[1];
    if (rest.length > 2 && !NAMESPACE_SUBRESOURCES.has(rest[2])) rest = rest.slice(2);
  }
  const resource = (rest[0] ?? '').toLowerCase();
  const name = rest[1];
  const subresource = rest[2];

  let verb: string;
  switch (m) {
    case 'POST':
      verb = 'create';
      break;
    case 'PUT':
      verb = 'update';
      break;
    case 'PATCH':
      verb = 'patch';
      break;
    case 'DELETE':
      verb = name === undefined ? 'deletecollection' : 'delete';
      break;
    case 'GET':
    case 'HEAD': {
      if (watchPrefix || isWatchParam(params)) verb = 'watch';
      else verb = name === undefined ? 'list' : 'get';
      break;
    }
    default:
      verb = m.toLowerCase();
  }
  if (subresource && STREAM_SUBRESOURCES.has(subresource)) verb = 'create';

  const facts: KubernetesFacts = {
    verb,
    apiGroup,
    apiVersion,
    resource,
    clusterScoped: resource === 'namespaces' || namespace === undefined,
  };
  if (subresource) facts.subresource = subresource;
  if (namespace !== undefined) facts.namespace = namespace;
  if (name !== undefined) facts.name = name;
  if (subresource === 'exec' || subresource === 'attach') {
    const command = params.getAll('command');
    if (command.length > 0) facts.command = command;
  }
  return facts;
}

/**
 * A one-line description for approvers and recordings: `delete pods/web-1 -n prod`,
 * `list pods -n prod ?labelSelector=app=web`, `create pods/web-1/exec -n prod ?container=main&stdin=true -- sh -c id`.
 * Every query parameter is shown (decoded, in the order sent; `command` as the `--` part), since
 * selectors, container, stdin/tty and dryRun change what the operation does.
 */
export function describeKubernetes(k: KubernetesFacts, method: string, path: string, query: string): string {
  if (k.resource === '') return `${method} ${path}${query ? ` ?${renderQuery(query)}` : ''}`;
  const res = (k.apiGroup ? `${k.resource}.${k.apiGroup}` : k.resource) + (k.name !== undefined ? `/${k.name}` : '') + (k.subresource ? `/${k.subresource}` : '');
  const ns = k.namespace !== undefined && k.resource !== 'namespaces' ? ` -n ${k.namespace}` : '';
  const rest = renderQuery(query, k.command ? ['command'] : []);
  const cmd = k.command ? ` -- ${k.command.map(shellQuote).join(' ')}` : '';
  return `${k.verb} ${res}${ns}${rest ? ` ?${rest}` : ''}${cmd}`;
}

/** `a=1&b=x y`: decoded for reading; characters that would make it ambiguous stay escaped. */
export function renderQuery(query: string, skip: string[] = []): string {
  const out: string[] = [];
  for (const [key, value] of new URLSearchParams(query)) {
    if (skip.includes(key)) continue;
    out.push(`${readable(key).replace(/=/g, '%3D')}=${readable(value)}`);
  }
  return out.join('&');
}

function readable(s: string): string {
  // Controls, `&`, `%`, whitespace and non-ASCII stay percent-encoded: what is shown cannot be mistaken for another query.
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u0020\u007f-\u{10ffff}&%#+]/gu, (c) => encodeURIComponent(c));
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
