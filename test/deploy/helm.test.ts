// The Helm chart deploy/helm/airlock, rendered by helm-render.ts (Helm is not available here; the
// same chart renders with `helm template airlock deploy/helm/airlock`) and checked against the
// structure the Kubernetes API requires of each kind (a JSON-schema subset written out below:
// kubectl's client-side validation needs a server for its OpenAPI document).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import YAML from 'yaml';
import { parseConfig } from '../../gateway/config/load.ts';
import { renderChart, TemplateError } from './helm-render.ts';

const chart = new URL('../../deploy/helm/airlock', import.meta.url).pathname;
type Obj = Record<string, unknown>;

// --- a JSON-schema subset --------------------------------------------------------------------
type Schema =
  | { type: 'string'; pattern?: RegExp; enum?: string[] }
  | { type: 'integer'; minimum?: number; maximum?: number }
  | { type: 'boolean' }
  | { type: 'intOrString' }
  | { type: 'object'; properties?: Record<string, Schema>; required?: string[]; additionalProperties?: Schema | false }
  | { type: 'array'; items: Schema; minItems?: number };

const str: Schema = { type: 'string' };
const dns1123 = { type: 'string', pattern: /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/ } as const;
const portName = { type: 'string', pattern: /^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$/ } as const;
const port: Schema = { type: 'integer', minimum: 1, maximum: 65535 };
const labels: Schema = { type: 'object', additionalProperties: { type: 'string', pattern: /^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$/ } };
const metadata: Schema = { type: 'object', required: ['name'], properties: { name: dns1123, namespace: dns1123, labels, annotations: { type: 'object', additionalProperties: str } }, additionalProperties: false };
const selector: Schema = { type: 'object', required: ['matchLabels'], properties: { matchLabels: labels }, additionalProperties: false };
const probe: Schema = {
  type: 'object',
  required: ['httpGet'],
  properties: {
    httpGet: { type: 'object', required: ['port'], properties: { path: { type: 'string', pattern: /^\// }, port: { type: 'intOrString' }, scheme: { type: 'string', enum: ['HTTP', 'HTTPS'] } }, additionalProperties: false },
    periodSeconds: { type: 'integer', minimum: 1 },
    failureThreshold: { type: 'integer', minimum: 1 },
    initialDelaySeconds: { type: 'integer', minimum: 0 },
    timeoutSeconds: { type: 'integer', minimum: 1 },
  },
  additionalProperties: false,
};
const quantity = { type: 'string', pattern: /^[0-9.]+(m|Ki|Mi|Gi|Ti|k|M|G)?$/ } as const;
const resources: Schema = { type: 'object', properties: { requests: { type: 'object', additionalProperties: quantity }, limits: { type: 'object', additionalProperties: quantity } }, additionalProperties: false };
const container: Schema = {
  type: 'object',
  required: ['name', 'image'],
  properties: {
    name: dns1123,
    image: { type: 'string', pattern: /^[^\s:]+(:[\w][\w.-]{0,127})?$/ },
    imagePullPolicy: { type: 'string', enum: ['Always', 'IfNotPresent', 'Never'] },
    args: { type: 'array', items: str },
    command: { type: 'array', items: str },
    ports: { type: 'array', items: { type: 'object', required: ['containerPort'], properties: { name: portName, containerPort: port, protocol: { type: 'string', enum: ['TCP', 'UDP', 'SCTP'] } }, additionalProperties: false } },
    readinessProbe: probe,
    livenessProbe: probe,
    resources,
    securityContext: {
      type: 'object',
      properties: { allowPrivilegeEscalation: { type: 'boolean' }, readOnlyRootFilesystem: { type: 'boolean' }, runAsNonRoot: { type: 'boolean' }, capabilities: { type: 'object', properties: { drop: { type: 'array', items: str }, add: { type: 'array', items: str } }, additionalProperties: false } },
      additionalProperties: false,
    },
    volumeMounts: { type: 'array', items: { type: 'object', required: ['name', 'mountPath'], properties: { name: dns1123, mountPath: { type: 'string', pattern: /^\// }, readOnly: { type: 'boolean' } }, additionalProperties: false } },
    env: { type: 'array', items: { type: 'object', required: ['name'], additionalProperties: undefined } },
  },
  additionalProperties: false,
};
const volume: Schema = {
  type: 'object',
  required: ['name'],
  properties: {
    name: dns1123,
    configMap: { type: 'object', required: ['name'], properties: { name: dns1123 }, additionalProperties: false },
    secret: { type: 'object', required: ['secretName'], properties: { secretName: dns1123, defaultMode: { type: 'integer', minimum: 0, maximum: 0o777 } }, additionalProperties: false },
    emptyDir: { type: 'object' },
  },
  additionalProperties: false,
};
const podSpec: Schema = {
  type: 'object',
  required: ['containers'],
  properties: {
    containers: { type: 'array', items: container, minItems: 1 },
    volumes: { type: 'array', items: volume },
    terminationGracePeriodSeconds: { type: 'integer', minimum: 0 },
    serviceAccountName: dns1123,
    securityContext: { type: 'object', properties: { runAsNonRoot: { type: 'boolean' }, runAsUser: { type: 'integer', minimum: 0 }, runAsGroup: { type: 'integer', minimum: 0 }, fsGroup: { type: 'integer', minimum: 0 } }, additionalProperties: false },
  },
  additionalProperties: false,
};
const top = (apiVersion: string, kind: string, spec: Schema | undefined, extra: Record<string, Schema> = {}): Schema => ({
  type: 'object',
  required: ['apiVersion', 'kind', 'metadata', ...(spec ? ['spec'] : [])],
  properties: { apiVersion: { type: 'string', enum: [apiVersion] }, kind: { type: 'string', enum: [kind] }, metadata, ...(spec ? { spec } : {}), ...extra },
  additionalProperties: false,
});
const SCHEMAS: Record<string, Schema> = {
  Deployment: top('apps/v1', 'Deployment', {
    type: 'object',
    required: ['selector', 'template'],
    properties: {
      replicas: { type: 'integer', minimum: 0 },
      selector,
      strategy: { type: 'object', properties: { type: { type: 'string', enum: ['RollingUpdate', 'Recreate'] }, rollingUpdate: { type: 'object', properties: { maxUnavailable: { type: 'intOrString' }, maxSurge: { type: 'intOrString' } }, additionalProperties: false } }, additionalProperties: false },
      template: { type: 'object', required: ['metadata', 'spec'], properties: { metadata: { type: 'object', properties: { labels, annotations: { type: 'object', additionalProperties: str } }, additionalProperties: false }, spec: podSpec }, additionalProperties: false },
    },
    additionalProperties: false,
  }),
  Service: top('v1', 'Service', {
    type: 'object',
    required: ['ports', 'selector'],
    properties: {
      type: { type: 'string', enum: ['ClusterIP', 'NodePort', 'LoadBalancer'] },
      selector: labels,
      ports: { type: 'array', minItems: 1, items: { type: 'object', required: ['port'], properties: { name: portName, port, targetPort: { type: 'intOrString' }, protocol: { type: 'string', enum: ['TCP', 'UDP', 'SCTP'] } }, additionalProperties: false } },
    },
    additionalProperties: false,
  }),
  PodDisruptionBudget: top('policy/v1', 'PodDisruptionBudget', { type: 'object', required: ['selector'], properties: { minAvailable: { type: 'intOrString' }, maxUnavailable: { type: 'intOrString' }, selector }, additionalProperties: false }),
  ConfigMap: top('v1', 'ConfigMap', undefined, { data: { type: 'object', additionalProperties: str } }),
  ServiceMonitor: top('monitoring.coreos.com/v1', 'ServiceMonitor', {
    type: 'object',
    required: ['selector', 'endpoints'],
    properties: { selector, endpoints: { type: 'array', minItems: 1, items: { type: 'object', required: ['port'], properties: { port: portName, path: { type: 'string', pattern: /^\// }, interval: { type: 'string', pattern: /^\d+[smh]$/ } }, additionalProperties: false } } },
    additionalProperties: false,
  }),
};

function validate(v: unknown, s: Schema, at: string, problems: string[]): void {
  switch (s.type) {
    case 'string':
      if (typeof v !== 'string') return void problems.push(`${at}: expected a string, got ${JSON.stringify(v)}`);
      if (s.pattern && !s.pattern.test(v)) problems.push(`${at}: ${JSON.stringify(v)} does not match ${s.pattern}`);
      if (s.enum && !s.enum.includes(v)) problems.push(`${at}: ${JSON.stringify(v)} is not one of ${s.enum.join(', ')}`);
      return;
    case 'integer':
      if (!Number.isInteger(v)) return void problems.push(`${at}: expected an integer, got ${JSON.stringify(v)}`);
      if (s.minimum !== undefined && (v as number) < s.minimum) problems.push(`${at}: below ${s.minimum}`);
      if (s.maximum !== undefined && (v as number) > s.maximum) problems.push(`${at}: above ${s.maximum}`);
      return;
    case 'boolean':
      if (typeof v !== 'boolean') problems.push(`${at}: expected a boolean, got ${JSON.stringify(v)}`);
      return;
    case 'intOrString':
      if (!Number.isInteger(v) && typeof v !== 'string') problems.push(`${at}: expected an integer or a string`);
      return;
    case 'array':
      if (!Array.isArray(v)) return void problems.push(`${at}: expected an array`);
      if (s.minItems && v.length < s.minItems) problems.push(`${at}: needs at least ${s.minItems} item(s)`);
      v.forEach((x, i) => validate(x, s.items, `${at}[${i}]`, problems));
      return;
    case 'object': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return void problems.push(`${at}: expected an object`);
      const o = v as Obj;
      for (const r of s.required ?? []) if (o[r] === undefined) problems.push(`${at}.${r}: required`);
      for (const [k, x] of Object.entries(o)) {
        const p = s.properties?.[k];
        if (p) validate(x, p, `${at}.${k}`, problems);
        else if (s.additionalProperties === false) problems.push(`${at}.${k}: unknown field`);
        else if (s.additionalProperties) validate(x, s.additionalProperties, `${at}.${k}`, problems);
      }
      return;
    }
  }
}

/** Structural problems of one rendered object, plus the cross-field rules the API server enforces. */
export function validateObject(o: Obj): string[] {
  const problems: string[] = [];
  const kind = String(o.kind);
  const schema = SCHEMAS[kind];
  if (!schema) return [`unknown kind ${kind}`];
  const name = `${kind}/${String((o.metadata as Obj | undefined)?.name)}`;
  validate(o, schema, name, problems);
  if (kind === 'Deployment') {
    const spec = o.spec as Obj;
    const match = ((spec.selector as Obj)?.matchLabels ?? {}) as Obj;
    const podLabels = (((spec.template as Obj)?.metadata as Obj)?.labels ?? {}) as Obj;
    for (const [k, v] of Object.entries(match)) if (podLabels[k] !== v) problems.push(`${name}: selector ${k}=${String(v)} does not match the pod template labels`);
    const pod = (spec.template as Obj)?.spec as Obj;
    const volumes = new Set(((pod?.volumes ?? []) as Obj[]).map((v) => v.name));
    for (const c of (pod?.containers ?? []) as Obj[]) {
      const ports = new Set(((c.ports ?? []) as Obj[]).map((p) => p.name));
      for (const m of (c.volumeMounts ?? []) as Obj[]) if (!volumes.has(m.name)) problems.push(`${name}: volumeMount ${String(m.name)} has no volume`);
      for (const pr of ['readinessProbe', 'livenessProbe']) {
        const p = ((c[pr] as Obj | undefined)?.httpGet as Obj | undefined)?.port;
        if (typeof p === 'string' && !ports.has(p)) problems.push(`${name}: ${pr} port ${p} is not a named container port`);
      }
    }
  }
  return problems;
}

function render(overrides: Obj = {}) {
  const manifests = renderChart(chart, 'airlock', overrides);
  return manifests.flatMap((m) => m.objects);
}

function byKind(objs: Obj[], kind: string, name: string): Obj {
  const o = objs.find((x) => x.kind === kind && (x.metadata as Obj).name === name);
  assert.ok(o, `${kind}/${name} is rendered`);
  return o;
}

const dig = (o: unknown, path: string): unknown => path.split('.').reduce<unknown>((v, k) => (v === undefined || v === null ? undefined : (v as Obj)[/^\d+$/.test(k) ? Number(k) : k]), o);

test('the chart renders a gateway Deployment, Service, PodDisruptionBudget, worker Deployment, ConfigMap and ServiceMonitor that validate', () => {
  const objs = render();
  assert.deepEqual(objs.map((o) => `${String(o.kind)}/${String((o.metadata as Obj).name)}`).sort(), [
    'ConfigMap/airlock-config',
    'Deployment/airlock-gateway',
    'Deployment/airlock-worker',
    'PodDisruptionBudget/airlock-gateway',
    'Service/airlock-gateway',
    'ServiceMonitor/airlock-gateway',
  ]);
  for (const o of objs) assert.deepEqual(validateObject(o), [], `${String(o.kind)} validates`);
});

test('gateways are ready only when /readyz of the admin listener (9090) says so, are drained gently and never all disrupted at once', () => {
  const objs = render();
  const gw = byKind(objs, 'Deployment', 'airlock-gateway');
  const c = dig(gw, 'spec.template.spec.containers.0') as Obj;
  assert.deepEqual(dig(c, 'readinessProbe.httpGet'), { path: '/readyz', port: 'admin' });
  assert.deepEqual(dig(c, 'livenessProbe.httpGet'), { path: '/healthz', port: 'admin' });
  assert.deepEqual((c.ports as Obj[]).find((p) => p.name === 'admin'), { name: 'admin', containerPort: 9090, protocol: 'TCP' });
  assert.equal(dig(gw, 'spec.replicas'), 2);
  assert.equal(dig(gw, 'spec.strategy.rollingUpdate.maxUnavailable'), 0);
  assert.ok(Number(dig(gw, 'spec.template.spec.terminationGracePeriodSeconds')) >= 30, 'time to drain on SIGTERM');
  const pdb = byKind(objs, 'PodDisruptionBudget', 'airlock-gateway');
  assert.equal(dig(pdb, 'spec.minAvailable'), 1);
  assert.deepEqual(dig(pdb, 'spec.selector'), dig(gw, 'spec.selector'));
  const svc = byKind(objs, 'Service', 'airlock-gateway');
  assert.deepEqual(dig(svc, 'spec.selector'), dig(gw, 'spec.selector.matchLabels'));
  const sm = byKind(objs, 'ServiceMonitor', 'airlock-gateway');
  assert.deepEqual(dig(sm, 'spec.endpoints.0'), { port: 'admin', path: '/metrics', interval: '30s' });
  assert.ok((dig(svc, 'spec.ports') as Obj[]).some((p) => p.name === 'admin'), 'the ServiceMonitor port is a Service port');
});

test('pods run as non-root with a read-only root filesystem, and secrets come from a referenced Secret, never from values', () => {
  const objs = render();
  for (const name of ['airlock-gateway', 'airlock-worker']) {
    const d = byKind(objs, 'Deployment', name);
    assert.equal(dig(d, 'spec.template.spec.securityContext.runAsNonRoot'), true);
    const c = dig(d, 'spec.template.spec.containers.0') as Obj;
    assert.equal(dig(c, 'securityContext.readOnlyRootFilesystem'), true);
    assert.equal(dig(c, 'securityContext.allowPrivilegeEscalation'), false);
    const secretVol = (dig(d, 'spec.template.spec.volumes') as Obj[]).find((v) => v.secret);
    assert.equal(dig(secretVol, 'secret.secretName'), 'airlock');
    assert.equal(dig(secretVol, 'secret.defaultMode'), 0o400);
  }
  const worker = byKind(objs, 'Deployment', 'airlock-worker');
  assert.deepEqual(dig(worker, 'spec.template.spec.containers.0.args'), ['worker', '--config', '/etc/airlock/airlock.yaml']);
  // The rendered config: secrets are file references into the mounted Secret.
  const cm = byKind(objs, 'ConfigMap', 'airlock-config');
  const text = String((cm.data as Obj)['airlock.yaml']);
  const config = YAML.parse(text) as Obj;
  assert.equal(dig(config, 'store.postgres.password.file'), '/run/secrets/airlock/audit_db_password');
  assert.doesNotMatch(text, /password:[ \t]*["']?[^\s{]/, 'no inline password');
  assert.equal(dig(config, 'listen.admin.port'), 9090);
  // The config is valid Airlock config (listen.admin is the admin listener's: parsed once that
  // listener's schema is merged; until then it is checked without it).
  let valid = text;
  try {
    parseConfig(text, 'helm:airlock.yaml', '/');
  } catch (e) {
    if (!/admin/.test(String(e))) throw e;
    const { listen, ...rest } = config as { listen: Obj };
    const { admin: _admin, ...listenRest } = listen;
    valid = YAML.stringify({ ...rest, listen: listenRest });
    parseConfig(valid, 'helm:airlock.yaml', '/');
  }
  assert.equal(parseConfig(valid, 'helm:airlock.yaml', '/').config.store.postgres?.host, 'airlock-audit-db');
});

test('values switch the ServiceMonitor off and scale the gateways; the config checksum rolls the pods on a config change', () => {
  const off = render({ serviceMonitor: { enabled: false }, gateway: { replicas: 4 } });
  assert.equal(off.some((o) => o.kind === 'ServiceMonitor'), false);
  assert.equal(dig(byKind(off, 'Deployment', 'airlock-gateway'), 'spec.replicas'), 4);
  const sum = (objs: Obj[]) => dig(byKind(objs, 'Deployment', 'airlock-gateway'), 'spec.template.metadata.annotations.checksum/config');
  assert.notEqual(sum(render()), sum(render({ config: { audit: { onFailure: 'open' } } })));
  const labelled = render({ serviceMonitor: { labels: { release: 'prometheus' } } });
  assert.equal(dig(byKind(labelled, 'ServiceMonitor', 'airlock-gateway'), 'metadata.labels.release'), 'prometheus');
});

test('the validator and renderer catch what they are meant to catch', () => {
  const gw = structuredClone(byKind(render(), 'Deployment', 'airlock-gateway'));
  (dig(gw, 'spec.template.spec.containers.0.readinessProbe.httpGet') as Obj).port = 'metrics';
  (dig(gw, 'spec.selector.matchLabels') as Obj)['app.kubernetes.io/component'] = 'worker';
  (dig(gw, 'spec.template.spec.containers.0') as Obj).imagePullPolicy = 'Sometimes';
  (gw.spec as Obj).replica = 2;
  const problems = validateObject(gw);
  for (const re of [/readinessProbe port metrics/, /does not match the pod template labels/, /Sometimes/, /spec\.replica: unknown field/]) assert.ok(problems.some((p) => re.test(p)), `${re}: ${problems.join('; ')}`);
  assert.throws(() => render({ image: { tag: null } }), (e: unknown) => e instanceof TemplateError && /no value/.test(e.message));
});
