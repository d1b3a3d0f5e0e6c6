// Built-in Kubernetes rules, written as ordinary rule configs (the same match fields users write),
// turned on with `http.kubernetesRules.enable`. They are placed before `policy.rules`.
//
//   k8s-deny-secret-reads         deny every request on secrets: reads, and also writes (create,
//                                 update, patch, server-side apply, dry runs, delete), since
//                                 their responses echo the object back
//   k8s-mask-secret-data          mask secret `data` / `stringData` values (and the
//                                 last-applied-configuration annotation, which holds them in clear)
//   k8s-review-exec               review interactive access and credential minting: pod exec,
//                                 attach, portforward, ephemeral containers (kubectl debug), the
//                                 pods/nodes/services proxy subresources (the kubelet API runs
//                                 commands), serviceaccounts/token
//   k8s-review-protected-deletes  review delete/deletecollection, pod evictions and writes to the
//                                 `scale` subresource in the protected namespaces
//   k8s-review-cluster-writes     review writes to cluster-scoped resources (nodes, namespaces, RBAC ...)
import type { HttpConfig, KubernetesRuleName, RuleConfig } from '../config/schema.ts';
import type { MatchSpec } from '../policy/match.ts';
import { WRITE_VERBS } from './classify.ts';

const LAST_APPLIED = 'metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]';

/** Field paths that hold secret values, in a Secret, a list, a watch event and a Table row. */
export const SECRET_FIELD_PATHS = ['', 'items.', 'object.', 'rows.object.'].flatMap((p) => [`${p}data.*`, `${p}stringData.*`, `${p}${LAST_APPLIED}`]);

export function kubernetesRules(cfg: HttpConfig['kubernetesRules']): Array<RuleConfig & { match: MatchSpec }> {
  const review = () => ({
    approvers: [...cfg.approvers],
    quorum: 1,
    timeout: cfg.timeout,
    escalation: [],
    grantTtl: '10m',
  });
  const all: Record<KubernetesRuleName, RuleConfig & { match: MatchSpec }> = {
    'k8s-deny-secret-reads': {
      name: 'k8s-deny-secret-reads',
      // Every verb: create/update/patch/apply/delete (and their dry runs) answer with the object.
      match: { protocols: ['kubernetes'], resources: ['/secrets'] },
      action: 'deny',
      reason: 'reading Kubernetes secrets through Airlock is not allowed (writes are refused too: their responses echo the secret)',
    },
    'k8s-mask-secret-data': {
      name: 'k8s-mask-secret-data',
      match: { protocols: ['kubernetes'], resources: ['/secrets'] },
      action: 'mask',
      reason: 'secret values are masked',
      // `data` values are base64: masked as base64 of the token, so typed clients (describe, operators) still decode them.
      mask: { columns: [], detectors: [], fields: SECRET_FIELD_PATHS.map((path) => ({ path, strategy: 'redact' as const, ...(/(^|\.)data\.\*$/.test(path) ? { encoding: 'base64' as const } : {}) })) },
    },
    'k8s-review-exec': {
      name: 'k8s-review-exec',
      match: {
        protocols: ['kubernetes'],
        any: [
          { resources: ['/pods'], subresources: ['exec', 'attach', 'portforward', 'ephemeralcontainers', 'proxy'] },
          { resources: ['/nodes', '/services'], subresources: ['proxy'] },
          { resources: ['/serviceaccounts'], subresources: ['token'] },
        ],
      },
      action: 'review',
      reason: 'interactive access to a pod or node (exec, attach, port-forward, debug, proxy) or minting a service account token needs approval',
      review: review(),
    },
    'k8s-review-protected-deletes': {
      name: 'k8s-review-protected-deletes',
      match: {
        protocols: ['kubernetes'],
        namespaces: [...cfg.protectedNamespaces],
        any: [
          { verbs: ['delete', 'deletecollection'] },
          { resources: ['/pods'], subresources: ['eviction'] },
          { subresources: ['scale'], verbs: ['create', 'update', 'patch'] },
        ],
      },
      action: 'review',
      reason: `deletes, evictions and scaling in protected namespaces (${cfg.protectedNamespaces.join(', ')}) need approval`,
      review: review(),
    },
    'k8s-review-cluster-writes': {
      name: 'k8s-review-cluster-writes',
      match: { protocols: ['kubernetes'], verbs: WRITE_VERBS, clusterScoped: true },
      action: 'review',
      reason: 'writes to cluster-scoped resources need approval',
      review: review(),
    },
  };
  return cfg.enable.map((n) => all[n]);
}
