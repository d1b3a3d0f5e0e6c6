// How Airlock connects to a protected Temporal: mTLS files and an API key from the config, and a
// bearer key never sent without TLS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../../gateway/config/load.ts';
import { temporalSettings } from '../../workflows/client.ts';

const base = 'auth: { signingKey: { env: AIRLOCK_TEST_UNUSED_KEY } }\n';

test('an API key turns TLS on (system CAs) and is passed to the connection; serverName overrides the verified name', () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-temporal-'));
  writeFileSync(join(dir, 'temporal.key'), 'tmprl-api-key-123\n');
  const s = temporalSettings(parseConfig(`${base}temporal: { address: "ns.tmprl.cloud:7233", namespace: ns, apiKey: { file: temporal.key }, serverName: ns.tmprl.cloud }\n`, join(dir, 'airlock.yaml'), dir));
  assert.equal(s.apiKey, 'tmprl-api-key-123');
  assert.deepEqual(s.tls, { serverNameOverride: 'ns.tmprl.cloud' });
});

test('mTLS files are read relative to the config; without apiKey or tls the connection is plain', () => {
  const dir = mkdtempSync(join(tmpdir(), 'airlock-temporal-'));
  for (const f of ['ca.pem', 'client.pem', 'client.key']) writeFileSync(join(dir, f), `-----${f}-----`);
  const s = temporalSettings(parseConfig(`${base}temporal: { address: "t:7233", tls: { ca: ca.pem, cert: client.pem, key: client.key } }\n`, join(dir, 'airlock.yaml'), dir));
  assert.equal(s.tls?.serverRootCACertificate?.toString(), '-----ca.pem-----');
  assert.equal(s.tls?.clientCertPair?.crt.toString(), '-----client.pem-----');
  assert.equal(s.apiKey, undefined);
  const plain = temporalSettings(parseConfig(`${base}temporal: { address: "t:7233" }\n`, join(dir, 'airlock.yaml'), dir));
  assert.equal(plain.tls, undefined);
  assert.throws(() => temporalSettings(parseConfig(`${base}temporal: { address: "t:7233", apiKey: { env: AIRLOCK_TEST_NO_SUCH_KEY } }\n`, join(dir, 'airlock.yaml'), dir)), /temporal\.apiKey: environment variable AIRLOCK_TEST_NO_SUCH_KEY is not set/);
});
