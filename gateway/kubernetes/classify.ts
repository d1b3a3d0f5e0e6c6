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
      const watch = params.get('watch');
      if (watchPrefix || watch === 'true' || watch === '1') verb = 'watch';
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

/** A one-line description for approvers and recordings: `delete pods/web-1 -n prod`, `create pods/web-1/exec -n prod -- sh -c id`. */
export function describeKubernetes(k: KubernetesFacts, method: string, path: string, query: string): string {
  if (k.resource === '') return `${method} ${path}${query ? `?${query}` : ''}`;
  const res = (k.apiGroup ? `${k.resource}.${k.apiGroup}` : k.resource) + (k.name !== undefined ? `/${k.name}` : '') + (k.subresource ? `/${k.subresource}` : '');
  const ns = k.namespace !== undefined && k.resource !== 'namespaces' ? ` -n ${k.namespace}` : '';
  const cmd = k.command ? ` -- ${k.command.map(shellQuote).join(' ')}` : '';
  return `${k.verb} ${res}${ns}${cmd}`;
}

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
