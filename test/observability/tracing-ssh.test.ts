// SSH: the TRACEPARENT env request (OpenSSH `SetEnv`) parents the span of the command it comes
// with; a malformed one is ignored. Real ssh -> the Airlock SSH gateway (with a tracer from
// observability/tracing.ts) -> a real sshd; spans reach a local OTLP/HTTP receiver and carry no
// command line.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { FailClosedApprover } from '../../gateway/approvals/approver.ts';
import { configuredIdentity, tokenSettings } from '../../gateway/auth/settings.ts';
import { mintToken } from '../../gateway/auth/tokens.ts';
import { approvalBindingKey } from '../../gateway/config/keys.ts';
import { loadConfig, type LoadedConfig } from '../../gateway/config/load.ts';
import { startTracing, type GatewayTracing } from '../../gateway/observability/tracing.ts';
import { PolicyEngine } from '../../gateway/policy/engine.ts';
import { SqliteStore } from '../../gateway/recording/sqlite-store.ts';
import { startSshGateway, type SshGateway } from '../../gateway/ssh/server.ts';
import { clientArgs, generateKey, run, startSshd, type RunningSshd } from '../support/sshd.ts';
import { startOtlpReceiver, type OtlpReceiver } from '../support/otlp-receiver.ts';

let sshd: RunningSshd;
let otlp: OtlpReceiver;
let tracing: GatewayTracing;
let gateway: SshGateway;
let store: SqliteStore;
let loaded: LoadedConfig;
let dir: string;
let knownHosts: string;

const MARKER = 'Zebediah-was-here';

before(async () => {
  otlp = await startOtlpReceiver();
  sshd = await startSshd();
  dir = mkdtempSync(join(tmpdir(), 'airlock-ssh-trace-'));
  writeFileSync(join(dir, 'signing.key'), randomBytes(48).toString('base64'));
  generateKey(dir, 'gateway_host_key');
  writeFileSync(join(dir, 'upstream.key'), sshd.clientKey);
  writeFileSync(
    join(dir, 'airlock.yaml'),
    stringify({
      auth: { signingKey: { file: 'signing.key' } },
      store: { sqlite: 'airlock.db' },
      identities: [{ name: 'agent-1', groups: ['agents'] }],
      ssh: {
        listen: { host: '127.0.0.1', port: 0 },
        hostKey: { file: 'gateway_host_key' },
        targets: [{ name: 'box', host: sshd.host, port: sshd.port, user: sshd.user, privateKey: { file: 'upstream.key' }, hostKeyFingerprints: [sshd.hostKeyFingerprint], allow: { groups: ['agents'] } }],
      },
      policy: { default: 'allow', rules: [] },
    }),
  );
  loaded = loadConfig(join(dir, 'airlock.yaml'));
  const t = startTracing({ enabled: true, endpoint: otlp.url, serviceName: 'airlock-ssh-test', sampleRatio: 1 });
  assert.ok(t);
  tracing = t;
  store = SqliteStore.open(join(dir, 'airlock.db'));
  gateway = await startSshGateway({ config: loaded, policy: new PolicyEngine(loaded.config.policy, loaded.config.masking), store, approver: new FailClosedApprover(), bindingKey: approvalBindingKey(loaded), tracer: tracing.tracer });
  knownHosts = join(dir, 'known_hosts');
  writeFileSync(knownHosts, `[127.0.0.1]:${gateway.port} ${gateway.hostPublicKey}\n`);
});

after(async () => {
  await gateway?.close();
  await tracing?.shutdown();
  store?.close();
  await sshd?.stop();
  await otlp?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function ssh(traceparent: string, command: string) {
  const token = await mintToken(tokenSettings(loaded), configuredIdentity(loaded, 'agent-1'));
  const { args, env } = clientArgs(dir, knownHosts, { token });
  return run('ssh', [...args, '-o', `SetEnv=TRACEPARENT=${traceparent}`, '-p', String(gateway.port), 'box@127.0.0.1', command], { env, timeoutMs: 60_000 });
}

test('ssh: a TRACEPARENT env request parents the command span; a malformed one is ignored; no command line in spans', { timeout: 120_000 }, async () => {
  const traceId = randomBytes(16).toString('hex');
  const spanId = randomBytes(8).toString('hex');
  const r = await ssh(`00-${traceId}-${spanId}-01`, `echo ${MARKER}`);
  assert.equal(r.code, 0, r.stderr.toString());
  assert.equal(r.stdout.toString(), `${MARKER}\n`);
  const bad = await ssh(`00-${traceId}-${spanId}-01-and-more`, `echo ${MARKER}-2`);
  assert.equal(bad.code, 0, bad.stderr.toString());
  await tracing.forceFlush();
  const s = await otlp.waitForSpan((x) => x.traceId === traceId && x.attributes['airlock.protocol'] === 'ssh', 'the ssh command span');
  assert.equal(s.parentSpanId, spanId);
  assert.equal(s.attributes['airlock.trace.source'], 'ssh env');
  assert.equal(s.attributes['airlock.connection'], 'box');
  assert.equal(s.attributes['airlock.decision'], 'allow');
  const others = await otlp.waitForSpan((x) => x.traceId !== traceId && x.attributes['airlock.protocol'] === 'ssh', 'the span of the command with a malformed TRACEPARENT');
  assert.equal(others.parentSpanId, '');
  for (const b of otlp.bodies) assert.ok(!b.includes('Zebediah'), 'the command line reached a span');
});
