// Kubernetes through Airlock when Airlock's model and the API server's could differ (real kubectl
// and curl against the fake API server): secrets stay masked whatever format the client asks for
// (YAML, protobuf-then-YAML, Table with included objects, a websocket watch, a plain GET with
// upgrade headers), every `watch` spelling is a watch, the approver sees the query (dryRun,
// selectors) and headers the API server trusts never come from the client.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { ManualApprover } from '../support/manual-approver.ts';
import { startKubeHarness, type KubeHarness } from './support.ts';

const AGENT = { name: 'agent-x', groups: ['agents'], owner: 'carol' };
const SECRET = 'hunter2-very-secret';
const SECRET_B64 = Buffer.from(SECRET).toString('base64');

let k: KubeHarness;
let store: SqliteStore;
let storeDir: string;
const approver = new ManualApprover();
let token: string;

before(async () => {
  storeDir = mkdtempSync(join(tmpdir(), 'airlock-k8s-store-'));
  store = SqliteStore.open(join(storeDir, 'airlock.db'));
  k = await startKubeHarness({
    store,
    approver,
    yaml: (kube) => `
auth: { signingKey: { file: signing.key } }
identities:
  - { name: agent-x, groups: [agents], owner: carol }
policy:
  rules:
    - name: no-watching-pods
      match: { connections: [prod], resources: [pods], verbs: [watch], namespaces: [kube-system] }
      action: deny
      reason: no watches in kube-system
    - name: mask-pod-ips
      match: { connections: [prod], resources: [pods] }
      action: mask
      mask: { fields: [{ path: status.podIP, strategy: redact }] }
http:
  listen: { host: 127.0.0.1, port: 0, tls: { cert: GW_CERT, key: GW_KEY } }
  clusters:
    - name: prod
      server: ${kube.url}
      ca: ${kube.pki.caFile}
      auth: { token: { file: cluster.token } }
      impersonate: true
  kubernetesRules:
    enable: [k8s-mask-secret-data, k8s-review-protected-deletes]
    protectedNamespaces: [prod, kube-system]
    approvers: [dba]
`,
  });
  k.kube.addPod('default', 'web-1');
  k.kube.addPod('kube-system', 'dns-1');
  k.kube.addPod('prod', 'api-1');
  k.kube.addSecret('default', 'db-creds', { password: SECRET });
  token = await k.token(AGENT);
});

after(async () => {
  await k?.close();
  store?.close();
  if (storeDir) rmSync(storeDir, { recursive: true, force: true });
});

function curl(path: string, args: string[] = []): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const c = spawn('curl', ['-sS', '--cacert', k.gwPki.caFile, '-o', '-', '-w', '\n%{http_code}', '-H', `Authorization: Bearer ${token}`, ...args, `${k.gw.url}/prod${path}`]);
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('close', () => {
      const nl = out.lastIndexOf('\n');
      resolve({ status: Number(out.slice(nl + 1)), body: out.slice(0, nl) });
    });
  });
}

const SECRET_PATH = '/api/v1/namespaces/default/secrets/db-creds';

describe('Kubernetes fails closed', () => {
  test('secrets stay masked whatever the Accept: YAML, protobuf then YAML, JSON (Airlock asks for JSON only)', async () => {
    for (const accept of ['application/yaml', 'application/vnd.kubernetes.protobuf, application/yaml', 'application/yaml;q=1, application/json;q=0.5', 'application/json']) {
      const r = await curl(SECRET_PATH, ['-H', `Accept: ${accept}`]);
      assert.equal(r.status, 200, `${accept}: ${r.body}`);
      assert.ok(!r.body.includes(SECRET_B64), `${accept} leaked the secret`);
      assert.equal(JSON.parse(r.body).data.password, Buffer.from('[redacted]').toString('base64'), accept);
      assert.equal(k.kube.seen.filter((s) => s.url === SECRET_PATH).pop()?.headers.accept, 'application/json', 'the API server was asked for JSON');
    }
  });

  test('field masks written for an object also cover lists and Tables with included objects; kubectl still lists', async () => {
    const table = await curl('/api/v1/namespaces/default/pods?includeObject=Object', ['-H', 'Accept: application/json;as=Table;v=v1;g=meta.k8s.io']);
    assert.equal(table.status, 200, table.body);
    assert.ok(!table.body.includes('10.0.0.7'), 'the pod IP never leaves through a Table row');
    const list = JSON.parse((await curl('/api/v1/namespaces/default/pods')).body) as { items: Array<{ status: { podIP: string } }> };
    assert.equal(list.items[0].status.podIP, '[redacted]');
    const get = await k.kubectl(k.kubeconfig('prod', token), ['get', 'pods', '-n', 'default', '-o', 'wide']);
    assert.equal(get.code, 0, get.stderr);
    assert.match(get.stdout, /web-1/);
    assert.ok(!get.stdout.includes('10.0.0.7'));
  });

  test('a websocket watch of secrets is masked message by message', async () => {
    const ws = new WebSocket(`${k.gw.url.replace('https', 'wss')}/prod/api/v1/namespaces/default/secrets?watch=true`, { headers: { authorization: `Bearer ${token}` }, ca: readFileSync(k.gwPki.caFile) });
    const got = await new Promise<string[]>((resolve, reject) => {
      const out: string[] = [];
      ws.on('message', (d) => out.push(d.toString()));
      ws.once('close', () => resolve(out));
      ws.once('error', reject);
    });
    assert.equal(got.length, 1);
    const ev = JSON.parse(got[0]) as { type: string; object: { data: { password: string } } };
    assert.equal(ev.type, 'ADDED');
    assert.equal(ev.object.data.password, Buffer.from('[redacted]').toString('base64'));
  });

  test('a plain GET with upgrade headers does not relay the unmasked object on the refusal path', async () => {
    const r = await curl(SECRET_PATH, ['-H', 'Connection: Upgrade', '-H', 'Upgrade: websocket', '-H', 'Sec-WebSocket-Version: 13', '-H', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']);
    assert.equal(r.status, 502, r.body);
    assert.ok(!r.body.includes(SECRET_B64));
  });

  test('upgrades whose frames cannot be masked are refused: port-forward, and exec under a field mask', async () => {
    const before = k.kube.seen.length;
    for (const path of ['/api/v1/namespaces/default/pods/web-1/portforward?ports=5432', '/api/v1/namespaces/default/pods/web-1/exec?command=cat&command=%2Fetc%2Fhosts&stdout=true']) {
      const ws = new WebSocket(`${k.gw.url.replace('https', 'wss')}/prod${path}`, ['v4.channel.k8s.io', 'portforward.k8s.io'], { headers: { authorization: `Bearer ${token}` }, ca: readFileSync(k.gwPki.caFile) });
      const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        ws.once('unexpected-response', (_q, r) => {
          let body = '';
          r.on('data', (d: Buffer) => (body += d.toString()));
          r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
        });
        ws.once('open', () => reject(new Error(`${path} was relayed`)));
      });
      assert.equal(res.status, 502, path);
      assert.match(JSON.parse(res.body).message, /unmaskable response \(rule mask-pod-ips\)/, path);
    }
    assert.equal(k.kube.seen.length, before, 'the API server was never dialled');
  });

  test('every spelling of watch is a watch', async () => {
    for (const q of ['watch=yes', 'watch=', 'watch=TRUE', 'watch=on&watch=false']) {
      const r = await curl(`/api/v1/namespaces/kube-system/pods?${q}`, ['--max-time', '5']);
      assert.equal(r.status, 403, `${q}: ${r.body}`);
      assert.match(r.body, /no-watching-pods/);
    }
  });

  test('the approver sees the query (dryRun) and the request binding covers it', async () => {
    const running = k.kubectl(k.kubeconfig('prod', token), ['delete', 'pod', 'api-1', '-n', 'prod', '--dry-run=server']);
    const p = await approver.next();
    // kubectl sends dryRun in the DeleteOptions body: the whole body is part of the operation.
    assert.equal(p.req.operation.text, 'delete pods/api-1 -n prod\n{"propagationPolicy":"Background","dryRun":["All"]}');
    p.resolve({ outcome: 'rejected', requestId: p.id, by: 'bob', reason: 'not now' });
    const r = await running;
    assert.notEqual(r.code, 0);
    assert.ok(k.kube.hasPod('prod', 'api-1'));

    const viaQuery = curl('/api/v1/namespaces/prod/pods/api-1?gracePeriodSeconds=0&dryRun=All', ['-X', 'DELETE']);
    const q = await approver.next();
    assert.equal(q.req.operation.text, 'delete pods/api-1 -n prod ?gracePeriodSeconds=0&dryRun=All');
    assert.equal(q.req.operation.http?.query, 'gracePeriodSeconds=0&dryRun=All');
    q.resolve({ outcome: 'rejected', requestId: q.id, by: 'bob', reason: 'not now' });
    assert.equal((await viaQuery).status, 403);
  });

  test('identity, impersonation and method-override headers from the client never reach the API server', async () => {
    const r = await curl('/api/v1/namespaces/default/pods/web-1', ['-H', 'X-Remote-User: system:admin', '-H', 'X-Remote-Group: system:masters', '-H', 'Impersonate-User: system:admin', '-H', 'X-HTTP-Method-Override: DELETE', '-H', 'X-Forwarded-User: admin']);
    assert.equal(r.status, 200, r.body);
    const seen = k.kube.seen.filter((s) => s.url === '/api/v1/namespaces/default/pods/web-1').pop()!;
    for (const h of ['x-remote-user', 'x-remote-group', 'x-http-method-override', 'x-forwarded-user']) assert.equal(seen.headers[h], undefined, h);
    assert.equal(seen.headers['impersonate-user'], 'agent-x');
  });
});
