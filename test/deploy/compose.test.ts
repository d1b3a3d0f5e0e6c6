// docker-compose.yml checked statically (no Docker daemon here): the rules of the Compose
// specification that `docker compose config` would enforce for the features this file uses, plus
// the topology Airlock needs (two gateways behind one address, PostgreSQL-backed Temporal, the
// worker, the shared PostgreSQL audit store).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import YAML from 'yaml';
import { loadConfig } from '../../gateway/config/load.ts';

const root = new URL('../../', import.meta.url).pathname;
type Obj = Record<string, unknown>;

const TOP_KEYS = new Set(['name', 'services', 'volumes', 'secrets', 'configs', 'networks']);
const SERVICE_KEYS = new Set(['image', 'build', 'command', 'entrypoint', 'environment', 'env_file', 'secrets', 'configs', 'volumes', 'ports', 'depends_on', 'deploy', 'healthcheck', 'restart', 'stop_grace_period', 'working_dir', 'user', 'networks', 'expose', 'labels']);
const CONDITIONS = new Set(['service_started', 'service_healthy', 'service_completed_successfully']);

function dependsOn(s: Obj): Record<string, string> {
  const d = s.depends_on;
  if (d === undefined) return {};
  if (Array.isArray(d)) return Object.fromEntries(d.map((n) => [String(n), 'service_started']));
  return Object.fromEntries(Object.entries(d as Obj).map(([n, v]) => [n, String((v as Obj)?.condition ?? 'service_started')]));
}

function publishedPorts(s: Obj): { host: string; port: number; target: number }[] {
  return ((s.ports ?? []) as unknown[]).map((p) => {
    const m = /^(?:([\d.]+):)?(\d+):(\d+)(?:\/(tcp|udp))?$/.exec(String(p));
    assert.ok(m, `port mapping ${String(p)} is HOST:CONTAINER`);
    return { host: m[1] ?? '0.0.0.0', port: Number(m[2]), target: Number(m[3]) };
  });
}

/** Problems `docker compose config` (and `up`) would report, for the subset of the spec used here. */
export function validateCompose(doc: Obj, baseDir: string, text: string): string[] {
  const problems: string[] = [];
  for (const k of Object.keys(doc)) if (!TOP_KEYS.has(k)) problems.push(`unknown top-level key ${k}`);
  const services = (doc.services ?? {}) as Record<string, Obj>;
  if (Object.keys(services).length === 0) problems.push('no services');
  const named = (k: string) => new Set(Object.keys((doc[k] ?? {}) as Obj));
  const volumes = named('volumes');
  const secrets = named('secrets');
  const configs = named('configs');
  const hostPorts = new Map<string, string>();
  // Images this file builds itself (another service may run the same one).
  const built = new Set(Object.values(services).filter((s) => s.build).map((s) => String(s.image)));
  for (const [name, s] of Object.entries(services)) {
    if (!/^[a-z0-9][a-z0-9_.-]*$/.test(name)) problems.push(`service name ${name} is invalid`);
    for (const k of Object.keys(s)) if (!SERVICE_KEYS.has(k)) problems.push(`${name}: unknown key ${k}`);
    if (!s.image && !s.build) problems.push(`${name}: neither image nor build`);
    if (typeof s.image === 'string') {
      const tag = s.image.includes(':') ? s.image.slice(s.image.lastIndexOf(':') + 1) : '';
      if (!built.has(s.image) && (!tag || tag === 'latest' || !/\d+\.\d+/.test(tag))) problems.push(`${name}: image ${s.image} is not pinned to a version`);
    }
    for (const [dep, cond] of Object.entries(dependsOn(s))) {
      if (!services[dep]) problems.push(`${name}: depends_on ${dep}, which is not a service`);
      else if (!CONDITIONS.has(cond)) problems.push(`${name}: depends_on ${dep} with unknown condition ${cond}`);
      else if (cond === 'service_healthy' && !services[dep].healthcheck) problems.push(`${name}: waits for ${dep} to be healthy, but ${dep} has no healthcheck`);
      if (dep === name) problems.push(`${name}: depends on itself`);
    }
    const replicas = Number((s.deploy as Obj | undefined)?.replicas ?? 1);
    for (const p of publishedPorts(s)) {
      const key = `${p.host}:${p.port}`;
      if (hostPorts.has(key)) problems.push(`${name}: host port ${key} is already published by ${hostPorts.get(key)}`);
      hostPorts.set(key, name);
      if (replicas > 1) problems.push(`${name}: ${replicas} replicas cannot all publish host port ${p.port}`);
    }
    for (const v of (s.volumes ?? []) as unknown[]) {
      const src = String(v).split(':')[0];
      if (!src.startsWith('.') && !src.startsWith('/') && !volumes.has(src)) problems.push(`${name}: volume ${src} is not declared`);
    }
    for (const sec of (s.secrets ?? []) as unknown[]) {
      const n = typeof sec === 'string' ? sec : String((sec as Obj).source);
      if (!secrets.has(n)) problems.push(`${name}: secret ${n} is not declared`);
    }
    for (const c of (s.configs ?? []) as unknown[]) {
      const n = typeof c === 'string' ? c : String((c as Obj).source);
      if (!configs.has(n)) problems.push(`${name}: config ${n} is not declared`);
    }
  }
  // Declared configs are files that exist; secrets are files under deploy/secrets (the operator's).
  for (const [n, c] of Object.entries((doc.configs ?? {}) as Record<string, Obj>)) {
    if (!existsSync(baseDir + String(c.file))) problems.push(`config ${n}: ${String(c.file)} does not exist`);
  }
  for (const [n, c] of Object.entries((doc.secrets ?? {}) as Record<string, Obj>)) {
    if (!String(c.file).startsWith('./deploy/secrets/')) problems.push(`secret ${n}: kept outside deploy/secrets (which .dockerignore and git keep out)`);
  }
  // A cycle in depends_on would make `up` fail.
  const visiting = new Set<string>();
  const done = new Set<string>();
  const visit = (n: string, path: string[]) => {
    if (done.has(n) || !services[n]) return;
    if (visiting.has(n)) return void problems.push(`depends_on cycle: ${[...path, n].join(' -> ')}`);
    visiting.add(n);
    for (const d of Object.keys(dependsOn(services[n]))) visit(d, [...path, n]);
    visiting.delete(n);
    done.add(n);
  };
  for (const n of Object.keys(services)) visit(n, []);
  // Interpolation: `$$` is a literal `$`; every `${VAR}` must say what happens when it is unset.
  for (const m of text.replaceAll('$$', '').matchAll(/\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g)) {
    const ref = m[1] ?? m[2];
    if (m[2] !== undefined) problems.push(`unbraced variable $${ref}`);
    else if (!/^[A-Za-z_][A-Za-z0-9_]*(:?[-?].*)?$/.test(ref)) problems.push(`invalid interpolation \${${ref}}`);
    else if (!/:?[-?]/.test(ref)) problems.push(`\${${ref}} has no default and no required-message (:- or :?)`);
  }
  return problems;
}

const text = readFileSync(root + 'docker-compose.yml', 'utf8');
const doc = YAML.parse(text) as Obj;
const services = doc.services as Record<string, Obj>;

test('docker-compose.yml is valid against the Compose rules it relies on', () => {
  assert.deepEqual(validateCompose(doc, root, text), []);
});

test('Temporal runs on PostgreSQL with its schema set up by the official image, not start-dev', () => {
  assert.doesNotMatch(text, /start-dev/);
  const t = services.temporal;
  assert.match(String(t.image), /^temporalio\/(auto-setup|server):\d+\.\d+\.\d+$/);
  const env = t.environment as Obj;
  assert.equal(env.DB, 'postgres12');
  const db = services[String(env.POSTGRES_SEEDS)];
  assert.ok(db, 'POSTGRES_SEEDS names a service');
  assert.match(String(db.image), /^postgres:/);
  assert.equal(dependsOn(t)[String(env.POSTGRES_SEEDS)], 'service_healthy');
  // The approval workflow's search attributes are created with the CLI of the admin-tools image.
  const setup = services['temporal-setup'];
  for (const a of ['AirlockRequester', 'AirlockConnection', 'AirlockOutcome', 'AirlockApprovers']) assert.match(JSON.stringify(setup.command), new RegExp(a));
});

test('two gateway replicas sit behind one address; the worker and both gateways share the PostgreSQL audit store', () => {
  const gw = services.gateway;
  assert.equal((gw.deploy as Obj).replicas, 2);
  assert.equal(gw.ports, undefined, 'replicas publish nothing themselves');
  assert.deepEqual(dependsOn(services['gateway-lb']), { gateway: 'service_started' });
  assert.deepEqual(publishedPorts(services['gateway-lb']), [{ host: '0.0.0.0', port: 6432, target: 6432 }]);
  const haproxy = readFileSync(root + 'deploy/compose/haproxy.cfg', 'utf8');
  assert.match(haproxy, /server-template gw 2 gateway:6432 check/);
  assert.equal(services.worker.image, gw.image, 'one image, two roles');
  assert.deepEqual(services.worker.command, ['worker', '--config', '/etc/airlock/airlock.yaml']);

  const config = loadConfig(root + 'deploy/airlock.yaml').config;
  const pg = config.store.postgres;
  assert.ok(pg, 'store.postgres is configured');
  const auditDb = services[pg.host];
  assert.ok(auditDb, `the audit store host ${pg.host} is a service`);
  assert.equal((auditDb.environment as Obj).POSTGRES_DB, pg.database);
  assert.equal((auditDb.environment as Obj).POSTGRES_USER, pg.user);
  assert.equal(config.temporal?.address, 'temporal:7233');
  assert.ok(services[String(config.temporal?.address).split(':')[0]]);
  // Every secret file the config reads is mounted into both roles.
  const refs = [...readFileSync(root + 'deploy/airlock.yaml', 'utf8').matchAll(/\/run\/secrets\/([\w.-]+)/g)].map((m) => m[1]);
  assert.ok(refs.length >= 3);
  for (const role of ['gateway', 'worker']) for (const r of refs) assert.ok((services[role].secrets as string[]).includes(r), `${role} mounts secret ${r}`);
  for (const c of config.connections) assert.ok(services[(c as { host?: string }).host ?? ''], `connection ${c.name} points at a service`);
});

test('the validator rejects what it is meant to reject', () => {
  const mutate = (f: (d: Obj & { services: Record<string, Obj> }) => void) => {
    const d = structuredClone(doc) as Obj & { services: Record<string, Obj> };
    f(d);
    return validateCompose(d, root, YAML.stringify(d));
  };
  const cases: [string, string[], RegExp][] = [
    ['unknown dependency', mutate((d) => (d.services.worker.depends_on = ['temporall'])), /not a service/],
    ['healthy without healthcheck', mutate((d) => (d.services.worker.depends_on = { 'app-db': { condition: 'service_healthy' } })), /has no healthcheck/],
    ['duplicate host port', mutate((d) => (d.services['app-db'].ports = ['6432:5432'])), /already published/],
    ['replicas with a host port', mutate((d) => (d.services.gateway.ports = ['7000:6432'])), /cannot all publish/],
    ['undeclared secret', mutate((d) => (d.services.worker.secrets = ['nope'])), /secret nope is not declared/],
    ['undeclared volume', mutate((d) => (d.services.worker.volumes = ['data:/x'])), /volume data is not declared/],
    ['latest image', mutate((d) => (d.services['app-db'].image = 'postgres:latest')), /not pinned/],
    ['cycle', mutate((d) => (d.services['temporal-db'].depends_on = ['temporal'])), /cycle/],
    ['unknown key', mutate((d) => (d.services.worker.replicas = 2)), /unknown key replicas/],
  ];
  for (const [name, problems, re] of cases) assert.ok(problems.some((p) => re.test(p)), `${name}: ${JSON.stringify(problems)}`);
  assert.ok(validateCompose(doc, root, 'x: ${UNSET}').some((p) => /no default/.test(p)));
});
