// Kubernetes request classification, as the API server's RequestInfo does it, and the built-in rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig } from '../../gateway/config/load.ts';
import { classifyKubernetes, describeKubernetes } from '../../gateway/kubernetes/classify.ts';
import { kubernetesRules } from '../../gateway/kubernetes/rules.ts';
import { PolicyEngine } from '../../gateway/policy/engine.ts';
import type { Operation } from '../../gateway/policy/operation.ts';

test('verbs, groups, namespaces, names and subresources', () => {
  assert.deepEqual(classifyKubernetes('GET', '/api/v1/namespaces/prod/pods', 'limit=500'), { verb: 'list', apiGroup: '', apiVersion: 'v1', resource: 'pods', namespace: 'prod', clusterScoped: false });
  assert.equal(classifyKubernetes('GET', '/api/v1/namespaces/prod/pods', 'watch=true').verb, 'watch');
  assert.equal(classifyKubernetes('GET', '/api/v1/watch/namespaces/prod/pods', '').verb, 'watch');
  assert.deepEqual(classifyKubernetes('DELETE', '/apis/apps/v1/namespaces/prod/deployments/web', ''), { verb: 'delete', apiGroup: 'apps', apiVersion: 'v1', resource: 'deployments', namespace: 'prod', name: 'web', clusterScoped: false });
  assert.equal(classifyKubernetes('DELETE', '/api/v1/namespaces/prod/pods', '').verb, 'deletecollection');
  assert.equal(classifyKubernetes('PATCH', '/apis/apps/v1/namespaces/p/deployments/w/scale', '').subresource, 'scale');
  const exec = classifyKubernetes('GET', '/api/v1/namespaces/prod/pods/web-1/exec', 'command=sh&command=-c&command=id&stdin=true');
  assert.deepEqual(exec, { verb: 'create', apiGroup: '', apiVersion: 'v1', resource: 'pods', subresource: 'exec', namespace: 'prod', name: 'web-1', clusterScoped: false, command: ['sh', '-c', 'id'] });
  assert.equal(describeKubernetes(exec, 'GET', '', ''), 'create pods/web-1/exec -n prod -- sh -c id');
  assert.deepEqual(classifyKubernetes('DELETE', '/api/v1/namespaces/prod', ''), { verb: 'delete', apiGroup: '', apiVersion: 'v1', resource: 'namespaces', namespace: 'prod', name: 'prod', clusterScoped: true });
  assert.equal(classifyKubernetes('PUT', '/api/v1/namespaces/prod/finalize', '').subresource, 'finalize');
  assert.deepEqual(classifyKubernetes('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', ''), { verb: 'create', apiGroup: 'rbac.authorization.k8s.io', apiVersion: 'v1', resource: 'clusterrolebindings', clusterScoped: true });
  assert.deepEqual(classifyKubernetes('GET', '/version', ''), { verb: 'get', apiGroup: '', apiVersion: '', resource: '', clusterScoped: false });
});

function op(method: string, path: string, query = ''): Operation {
  const k = classifyKubernetes(method, path, query);
  return {
    protocol: 'kubernetes',
    identity: { name: 'agent', groups: [] },
    connection: { name: 'prod', clientAddress: '', sessionId: 's' },
    kind: 'kubernetes',
    text: describeKubernetes(k, method, path, query),
    tables: [],
    functions: [],
    http: { method, path, query, headers: {} },
    kubernetes: k,
  };
}

test('the built-in rules decide as documented', () => {
  const loaded = parseConfig(`
auth: { signingKey: { env: UNUSED } }
http:
  kubernetesRules: { enable: [k8s-deny-secret-reads, k8s-review-exec, k8s-review-protected-deletes, k8s-review-cluster-writes], protectedNamespaces: [prod], approvers: [sre] }
`);
  const h = loaded.config.http!;
  const engine = new PolicyEngine({ ...loaded.config.policy, rules: kubernetesRules(h.kubernetesRules) }, loaded.config.masking);
  const d = (m: string, p: string, q = '') => {
    const x = engine.decide(op(m, p, q));
    return `${x.action}${'rule' in x && x.rule ? `:${x.rule}` : ''}`;
  };
  assert.equal(d('GET', '/api/v1/namespaces/default/secrets/db'), 'deny:k8s-deny-secret-reads');
  assert.equal(d('GET', '/api/v1/secrets', 'watch=1'), 'deny:k8s-deny-secret-reads');
  assert.equal(d('GET', '/apis/example.com/v1/namespaces/x/secrets'), 'allow', 'a CRD named secrets in another group is not core secrets');
  assert.equal(d('GET', '/api/v1/namespaces/default/pods/w/exec', 'command=ls'), 'review:k8s-review-exec');
  assert.equal(d('POST', '/api/v1/namespaces/default/pods/w/portforward'), 'review:k8s-review-exec');
  assert.equal(d('DELETE', '/api/v1/namespaces/prod/pods/w'), 'review:k8s-review-protected-deletes');
  assert.equal(d('DELETE', '/api/v1/namespaces/prod/pods'), 'review:k8s-review-protected-deletes');
  assert.equal(d('DELETE', '/api/v1/namespaces/default/pods/w'), 'allow');
  assert.equal(d('DELETE', '/api/v1/namespaces/prod'), 'review:k8s-review-protected-deletes');
  assert.equal(d('POST', '/apis/rbac.authorization.k8s.io/v1/clusterrolebindings'), 'review:k8s-review-cluster-writes');
  assert.equal(d('GET', '/api/v1/nodes'), 'allow');
  assert.equal(d('GET', '/api/v1/namespaces/prod/pods'), 'allow');
});

test('review rules without approvers are a config error', () => {
  assert.throws(() => parseConfig(`
auth: { signingKey: { env: UNUSED } }
http: { kubernetesRules: { enable: [k8s-review-exec] } }
`), /kubernetesRules\.approvers: review rules \(k8s-review-exec\) need at least one approver group/);
});

test('any watch value but 0 or false is a watch, as the API server decodes bool parameters', () => {
  for (const q of ['watch=true', 'watch=1', 'watch=yes', 'watch=TRUE', 'watch=', 'watch', 'watch=on&watch=false', 'labelSelector=a&watch=x'])
    assert.equal(classifyKubernetes('GET', '/api/v1/namespaces/p/pods', q).verb, 'watch', q);
  for (const q of ['watch=false', 'watch=0', 'watch=FALSE', 'watch=False&watch=true', 'watchx=true'])
    assert.equal(classifyKubernetes('GET', '/api/v1/namespaces/p/pods', q).verb, 'list', q);
});

test('the description shows every query parameter, decoded, with the command after --', () => {
  const list = classifyKubernetes('GET', '/api/v1/namespaces/p/pods', 'labelSelector=app%3Dweb&fieldSelector=spec.nodeName%3Dn1');
  assert.equal(describeKubernetes(list, 'GET', '', 'labelSelector=app%3Dweb&fieldSelector=spec.nodeName%3Dn1'), 'list pods -n p ?labelSelector=app=web&fieldSelector=spec.nodeName=n1');
  const q = 'container=db&stdin=true&tty=true&command=psql&command=-c&command=drop%20table%20x';
  const exec = classifyKubernetes('GET', '/api/v1/namespaces/p/pods/w/exec', q);
  assert.equal(describeKubernetes(exec, 'GET', '', q), "create pods/w/exec -n p ?container=db&stdin=true&tty=true -- psql -c 'drop table x'");
  // Characters that could fake another parameter stay escaped.
  const tricky = 'labelSelector=a%26dryRun%3DAll&x=%0Ay';
  assert.equal(describeKubernetes(classifyKubernetes('GET', '/api/v1/pods', tricky), 'GET', '', tricky), 'list pods ?labelSelector=a%26dryRun=All&x=%0Ay');
  const del = classifyKubernetes('DELETE', '/api/v1/namespaces/prod/pods/w', 'dryRun=All');
  assert.equal(describeKubernetes(del, 'DELETE', '', 'dryRun=All'), 'delete pods/w -n prod ?dryRun=All');
});

test('built-in rules: secret writes are denied like reads (their responses echo the object); debug, proxy, token, eviction and scale are reviewed', () => {
  const loaded = parseConfig(`
auth: { signingKey: { env: UNUSED } }
http:
  kubernetesRules: { enable: [k8s-deny-secret-reads, k8s-review-exec, k8s-review-protected-deletes, k8s-review-cluster-writes], protectedNamespaces: [prod], approvers: [sre] }
`);
  const engine = new PolicyEngine({ ...loaded.config.policy, rules: kubernetesRules(loaded.config.http!.kubernetesRules) }, loaded.config.masking);
  const d = (m: string, p: string, q = '') => {
    const x = engine.decide(op(m, p, q));
    return `${x.action}${'rule' in x && x.rule ? `:${x.rule}` : ''}`;
  };
  for (const [m, p, q] of [
    ['PATCH', '/api/v1/namespaces/default/secrets/db', ''],
    ['PATCH', '/api/v1/namespaces/default/secrets/db', 'fieldManager=kubectl&force=true'],
    ['PUT', '/api/v1/namespaces/default/secrets/db', ''],
    ['POST', '/api/v1/namespaces/default/secrets', 'dryRun=All'],
    ['DELETE', '/api/v1/namespaces/default/secrets/db', 'dryRun=All'],
  ]) assert.equal(d(m, p, q), 'deny:k8s-deny-secret-reads', `${m} ${p}?${q}`);
  assert.equal(d('PATCH', '/api/v1/namespaces/default/pods/w/ephemeralcontainers'), 'review:k8s-review-exec');
  assert.equal(d('GET', '/api/v1/nodes/node-1/proxy/run/default/w/main', 'cmd=id'), 'review:k8s-review-exec');
  assert.equal(d('POST', '/api/v1/nodes/node-1/proxy/exec/default/w/main'), 'review:k8s-review-exec');
  assert.equal(d('GET', '/api/v1/namespaces/default/pods/w/proxy/admin'), 'review:k8s-review-exec');
  assert.equal(d('GET', '/api/v1/namespaces/default/services/web/proxy/'), 'review:k8s-review-exec');
  assert.equal(d('POST', '/api/v1/namespaces/default/serviceaccounts/builder/token'), 'review:k8s-review-exec');
  assert.equal(d('POST', '/api/v1/namespaces/prod/pods/w/eviction'), 'review:k8s-review-protected-deletes');
  assert.equal(d('PATCH', '/apis/apps/v1/namespaces/prod/deployments/web/scale'), 'review:k8s-review-protected-deletes');
  assert.equal(d('PUT', '/apis/apps/v1/namespaces/prod/statefulsets/db/scale'), 'review:k8s-review-protected-deletes');
  assert.equal(d('GET', '/apis/apps/v1/namespaces/prod/deployments/web/scale'), 'allow', 'reading the scale is not a change');
  assert.equal(d('POST', '/api/v1/namespaces/default/pods/w/eviction'), 'allow', 'outside the protected namespaces');
  assert.equal(d('GET', '/api/v1/namespaces/prod/pods', 'watch=yes'), 'allow');
});
