// The real kubectl through Airlock to a local HTTPS API server: discovery and reads pass, secrets
// are masked or denied, deletes in a protected namespace and exec are held for approval in the
// real Temporal workflow (decided through workflows/decide.ts, as the CLI and Slack do), exec is
// recorded as a replayable asciicast, and watches and followed logs stream without buffering.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { WebSocket } from 'ws';
import { TemporalApprover } from '../../gateway/approvals/temporal-approver.ts';
import { parseAsciicast } from '../../gateway/kubernetes/asciicast.ts';
import { submitDecision } from '../../workflows/decide.ts';
import { eventually, startHarness, type Harness } from '../workflows/harness.ts';
import { startKubeHarness, type KubeHarness } from './support.ts';

const AGENT = { name: 'agent-x', groups: ['agents'], owner: 'carol' };

let h: Harness;
let k: KubeHarness;
let agentConfig: string;

before(async () => {
  h = await startHarness();
  const approver = new TemporalApprover({ client: h.temporal.client, taskQueue: h.taskQueue, store: h.store, channelsDescription: 'the local channel' });
  k = await startKubeHarness({
    store: h.store,
    approver,
    yaml: (kube) => `
auth: { signingKey: { file: signing.key } }
identities:
  - { name: agent-x, groups: [agents], owner: carol }
  - { name: bob, groups: [dba] }
masking:
  detectors: [{ detector: email, strategy: redact }]
policy:
  rules:
    - name: no-secrets-on-locked
      match: { connections: [locked], resources: [secrets] }
      action: deny
      reason: secrets are off limits on this cluster
http:
  listen: { host: 127.0.0.1, port: 0, tls: { cert: GW_CERT, key: GW_KEY } }
  maxHold: 30s
  clusters:
    - name: prod
      server: ${kube.url}
      ca: ${kube.pki.caFile}
      auth: { token: { file: cluster.token } }
      impersonate: true
    - name: locked
      server: ${kube.url}
      ca: ${kube.pki.caFile}
      auth: { clientCert: ${kube.pki.clientCertFile}, clientKey: { file: ${kube.pki.clientKeyFile} } }
  kubernetesRules:
    enable: [k8s-mask-secret-data, k8s-review-exec, k8s-review-protected-deletes, k8s-review-cluster-writes]
    protectedNamespaces: [prod, kube-system]
    approvers: [dba]
    timeout: 5m
`,
  });
  k.kube.addPod('default', 'web-1');
  k.kube.addPod('default', 'web-2');
  k.kube.addPod('prod', 'api-1');
  k.kube.addPod('prod', 'api-2');
  k.kube.addPod('prod', 'shell-1');
  k.kube.addSecret('default', 'db-creds', { password: 'hunter2-very-secret', username: 'app' });
  agentConfig = k.kubeconfig('prod', await k.token(AGENT));
});

after(async () => {
  await k?.close();
  await h?.close();
});

/** The pending local-channel request whose text contains `text`. */
function pending(text: string) {
  return eventually(() => h.local.list().find((r) => r.view.text.includes(text))?.view, 20_000, `approval request for ${text}`);
}

function decide(requestId: string, decision: 'approve' | 'reject', reason?: string) {
  return submitDecision(h.temporal.client, h.store, h.sign({ requestId, approver: 'bob', approverGroups: ['dba'], decision, via: 'test', ...(reason ? { reason } : {}) }));
}

function lastOperation(connection: string, pred: (text: string) => boolean) {
  const sessions = h.store.listSessions({ connection, limit: 200 });
  for (const s of sessions) {
    const got = h.store.getSession(s.id);
    const op = got?.operations.filter((o) => pred(o.text)).pop();
    if (op) return { session: got!.session, op };
  }
  return undefined;
}

describe('kubectl through Airlock', () => {
  test('kubectl get pods is allowed; Airlock sends its own cluster token and impersonates the agent', async () => {
    const r = await k.kubectl(agentConfig, ['get', 'pods', '-n', 'default']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^NAME\s+READY\s+STATUS/m);
    assert.match(r.stdout, /^web-1\s+1\/1\s+Running/m);
    assert.match(r.stdout, /^web-2\s/m);
    const list = k.kube.seen.filter((s) => s.url.startsWith('/api/v1/namespaces/default/pods'));
    assert.ok(list.length > 0, 'the API server saw the list');
    for (const s of list) {
      assert.equal(s.headers.authorization, `Bearer ${k.kube.token}`, 'the cluster credential, never the agent token');
      assert.equal(s.headers['impersonate-user'], 'agent-x');
      assert.equal(s.auth, 'token');
    }
    const rec = lastOperation('prod', (t) => t === 'list pods -n default ?limit=500');
    assert.ok(rec, 'recorded');
    assert.equal(rec.op.decision, 'allow');
    assert.equal(rec.session.identity, 'agent-x');
    assert.equal(rec.session.protocol, 'kubernetes');
    assert.deepEqual((rec.op.classification as { kubernetes: unknown }).kubernetes, { verb: 'list', apiGroup: '', apiVersion: 'v1', resource: 'pods', namespace: 'default', clusterScoped: false });
  });

  test('kubectl get secret -o yaml: values masked on one cluster, denied on another (client certificate auth)', async () => {
    const r = await k.kubectl(agentConfig, ['get', 'secret', 'db-creds', '-n', 'default', '-o', 'yaml']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /kind: Secret/);
    // base64 of "[redacted]": still valid Secret data, so typed clients keep working.
    assert.match(r.stdout, /password: W3JlZGFjdGVkXQ==/);
    assert.match(r.stdout, /username: W3JlZGFjdGVkXQ==/);
    const described = await k.kubectl(agentConfig, ['describe', 'secret', 'db-creds', '-n', 'default']);
    assert.equal(described.code, 0, described.stderr);
    assert.match(described.stdout, /password:\s+10 bytes/);
    assert.ok(!r.stdout.includes(Buffer.from('hunter2-very-secret').toString('base64')), 'the secret value never reaches the client');
    const rec = lastOperation('prod', (t) => t.startsWith('get secrets/db-creds'));
    assert.equal(rec?.op.decision, 'mask');
    assert.equal(rec?.op.rule, 'k8s-mask-secret-data');
    assert.deepEqual([...(rec?.op.maskedColumns ?? [])].sort(), ['data.password', 'data.username']);

    const locked = k.kubeconfig('locked', await k.token(AGENT));
    const d = await k.kubectl(locked, ['get', 'secret', 'db-creds', '-n', 'default', '-o', 'yaml']);
    assert.notEqual(d.code, 0);
    assert.match(d.stderr, /Error from server \(Forbidden\): airlock: denied \(rule no-secrets-on-locked\): secrets are off limits on this cluster/);
    const pods = await k.kubectl(locked, ['get', 'pods', '-n', 'default', '-o', 'name']);
    assert.equal(pods.code, 0, pods.stderr);
    assert.match(pods.stdout, /pod\/web-1/);
    assert.ok(k.kube.seen.some((s) => s.auth === 'cert'), 'the locked cluster is reached with the client certificate');
  });

  test('a bad token gets 401 and kubectl says so', async () => {
    const bad = k.kubeconfig('prod', 'not-a-token');
    const r = await k.kubectl(bad, ['get', 'pods']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /You must be logged in to the server|Unauthorized/);
  });

  test('kubectl delete in a protected namespace is held, approved and runs; the next one is rejected', async () => {
    const running = k.kubectl(agentConfig, ['delete', 'pod', 'api-1', '-n', 'prod', '--wait=false']);
    const view = await pending('delete pods/api-1 -n prod');
    assert.equal(view.rule, 'k8s-review-protected-deletes');
    assert.equal(view.identity, 'agent-x');
    assert.ok(k.kube.hasPod('prod', 'api-1'), 'nothing reached the cluster before approval');
    assert.equal((await decide(view.requestId, 'approve')).ok, true);
    const r = await running;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /pod "api-1" deleted/);
    assert.equal(k.kube.hasPod('prod', 'api-1'), false);
    const rec = lastOperation('prod', (t) => t.startsWith('delete pods/api-1'));
    assert.equal(rec?.op.approval?.outcome, 'approved');
    assert.deepEqual(rec?.op.approval?.approvers, ['bob']);

    const second = k.kubectl(agentConfig, ['delete', 'pod', 'api-2', '-n', 'prod', '--wait=false']);
    const v2 = await pending('delete pods/api-2 -n prod');
    assert.equal((await decide(v2.requestId, 'reject', 'not during the freeze')).ok, true);
    const r2 = await second;
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /Forbidden.*approval rejected by bob: not during the freeze/);
    assert.ok(k.kube.hasPod('prod', 'api-2'), 'the rejected delete never reached the cluster');

    // Outside the protected namespaces deletes are not held.
    const free = await k.kubectl(agentConfig, ['delete', 'pod', 'web-2', '-n', 'default', '--wait=false']);
    assert.equal(free.code, 0, free.stderr);
  });

  test('kubectl exec is held, approved, proxied over websocket and recorded as a replayable asciicast', async () => {
    const running = k.kubectl(agentConfig, ['exec', '-i', '-n', 'prod', 'shell-1', '--', 'sh', '-c', 'read line; echo "got: $line"; echo oops >&2'], { stdin: 'hello airlock\n' });
    const view = await pending('pods/shell-1/exec -n prod');
    assert.equal(view.rule, 'k8s-review-exec');
    assert.match(view.text, /^create pods\/shell-1\/exec -n prod \?container=main&stderr=true&stdin=true&stdout=true -- sh -c 'read line; echo "got: \$line"; echo oops >&2'$/);
    assert.equal((await decide(view.requestId, 'approve')).ok, true);
    const r = await running;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'got: hello airlock\n');
    assert.match(r.stderr, /oops/);

    const upgrade = k.kube.seen.filter((s) => s.url.includes('/pods/shell-1/exec')).pop();
    assert.match(String(upgrade?.headers['sec-websocket-protocol']), /v5\.channel\.k8s\.io/);

    const rec = await eventually(() => lastOperation('prod', (t) => t.includes('pods/shell-1/exec')), 5000, 'exec recorded');
    const cls = rec.op.classification as { recording?: string; websocket?: { protocol: string; frames: { toClient: number; fromClient: number }; status?: string } };
    assert.equal(cls.websocket?.protocol, 'v5.channel.k8s.io');
    assert.ok(cls.websocket.frames.toClient >= 3 && cls.websocket.frames.fromClient >= 1, JSON.stringify(cls.websocket));
    assert.match(String(cls.websocket.status), /"status":"Success"/);
    assert.equal(rec.op.approval?.outcome, 'approved');
    assert.ok(cls.recording, 'recording path stored with the operation');
    const cast = parseAsciicast(readFileSync(cls.recording, 'utf8'));
    assert.equal(cast.header.version, 2);
    const out = cast.events.filter((e) => e[1] === 'o').map((e) => e[2]).join('');
    const input = cast.events.filter((e) => e[1] === 'i').map((e) => e[2]).join('');
    assert.equal(input, 'hello airlock\n');
    assert.match(out, /got: hello airlock\n/);
    assert.match(out, /oops\n/);
  });

  test('exec over the older v4.channel.k8s.io protocol is proxied and recorded too', async () => {
    const token = await k.token(AGENT);
    const url = `${k.gw.url.replace('https', 'wss')}/prod/api/v1/namespaces/prod/pods/shell-1/exec?command=echo&command=v4%20works&stdout=true&stderr=true`;
    const ws = new WebSocket(url, ['v4.channel.k8s.io'], { headers: { authorization: `Bearer ${token}` }, ca: readFileSync(k.gwPki.caFile) });
    const frames: Buffer[] = [];
    ws.on('message', (d: Buffer) => frames.push(d));
    const opened = new Promise<void>((r, j) => (ws.once('open', () => r()), ws.once('error', j)));
    const view = await pending("pods/shell-1/exec -n prod ?stdout=true&stderr=true -- echo 'v4 works'");
    assert.equal((await decide(view.requestId, 'approve')).ok, true);
    await opened;
    assert.equal(ws.protocol, 'v4.channel.k8s.io');
    await new Promise((r) => ws.once('close', r));
    const stdout = Buffer.concat(frames.filter((f) => f[0] === 1).map((f) => f.subarray(1))).toString();
    assert.equal(stdout, 'v4 works\n');
    assert.match(frames.find((f) => f[0] === 3)!.subarray(1).toString(), /"status":"Success"/);
    const rec = await eventually(() => lastOperation('prod', (t) => t.includes("-- echo 'v4 works'")), 5000, 'recorded');
    const cast = parseAsciicast(readFileSync((rec.op.classification as { recording: string }).recording, 'utf8'));
    assert.equal(cast.events.filter((e) => e[1] === 'o').map((e) => e[2]).join(''), 'v4 works\n');
  });

  test('watch and logs -f stream through without buffering (masked line by line)', async () => {
    const child = spawn('kubectl', ['--kubeconfig', agentConfig, '--cache-dir', `${k.dir}/cache`, 'get', 'pods', '-n', 'default', '-w', '-o', 'name'], { env: { PATH: process.env.PATH ?? '', HOME: k.dir } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await eventually(() => out.includes('pod/web-1'), 20_000, 'initial list');
      await eventually(() => k.kube.watching() > 0, 20_000, 'the watch request reached the API server');
      const before = out.length;
      k.kube.touchPod('default', 'web-1');
      await eventually(() => out.length > before, 10_000, 'the watch event, while the stream is still open');
      assert.equal(child.exitCode, null, 'kubectl is still watching');
    } finally {
      child.kill();
    }

    const logs = spawn('kubectl', ['--kubeconfig', agentConfig, '--cache-dir', `${k.dir}/cache`, 'logs', '-f', '-n', 'default', 'web-1'], { env: { PATH: process.env.PATH ?? '', HOME: k.dir } });
    let lines = '';
    logs.stdout.on('data', (d: Buffer) => (lines += d.toString()));
    const firstAt = await eventually(() => lines.includes('log line 1') && Date.now(), 20_000, 'first log line');
    const done = new Promise<number>((r) => logs.on('close', () => r(Date.now())));
    const endedAt = await done;
    assert.match(lines, /log line 3 from web-1/);
    assert.match(lines, /^log line 1 from web-1 \(paged \[redacted:email\]\)$/m, 'text streams are masked line by line');
    assert.ok(endedAt - firstAt >= 300, `the first line arrived before the stream ended (${endedAt - firstAt} ms earlier)`);
  });

  test('client-sent impersonation headers are stripped (curl)', async () => {
    const token = await k.token(AGENT);
    const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = spawn('curl', ['-sS', '--cacert', k.gwPki.caFile, '-H', `Authorization: Bearer ${token}`, '-H', 'Impersonate-User: system:admin', '-H', 'Impersonate-Group: system:masters', `${k.gw.url}/prod/api/v1/namespaces/default/pods/web-1`]);
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.on('close', (code) => resolve({ code, out }));
    });
    assert.equal(r.code, 0);
    assert.equal(JSON.parse(r.out).metadata.name, 'web-1');
    const seen = k.kube.seen.filter((s) => s.url === '/api/v1/namespaces/default/pods/web-1').pop();
    assert.equal(seen?.headers['impersonate-user'], 'agent-x');
    assert.deepEqual(String(seen?.headers['impersonate-group']), 'agents');
  });
});
