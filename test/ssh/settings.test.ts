// The `ssh:` config block: mistakes are caught at load time with a message naming the place.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ConfigError, parseConfig } from '../../gateway/config/load.ts';
import { sshSettings } from '../../gateway/ssh/settings.ts';
import { generateKey } from '../support/sshd.ts';

let dir: string;
let host: ReturnType<typeof generateKey>;
let user: ReturnType<typeof generateKey>;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'airlock-ssh-settings-'));
  host = generateKey(dir, 'host');
  user = generateKey(dir, 'user');
});
after(() => rmSync(dir, { recursive: true, force: true }));

const FP = 'SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s';

function load(ssh: Record<string, unknown>, identities: unknown[] = [{ name: 'alice', groups: ['ops'] }]) {
  return parseConfig(stringify({ auth: { signingKey: { env: 'X' } }, identities, ssh }), 'airlock.yaml', dir);
}

test('a valid block resolves: host key fingerprint, targets, keys bound to identities, defaults', () => {
  const s = sshSettings(
    load({
      hostKey: { file: 'host' },
      targets: [{ name: 'web-1', host: '10.0.0.5', user: 'deploy', privateKey: { file: 'user' }, hostKeyFingerprints: [FP] }],
      publicKeys: [{ identity: 'alice', key: user.publicLine }],
    }),
  );
  assert.equal(s.hostKeyFingerprint, host.fingerprint, 'same fingerprint ssh-keygen -l prints');
  assert.equal(s.config.listen.port, 2222);
  assert.equal(s.targets.get('web-1')?.port, 22);
  assert.equal(s.publicKeys[0].identity.name, 'alice');
  assert.deepEqual(s.publicKeys[0].identity.groups, ['ops']);
  assert.equal(s.loginTimeoutMs, 60_000);
  assert.equal(s.recordingsDir, join(dir, '.airlock', 'recordings'));
});

test('a target without upstream credentials is refused', () => {
  assert.throws(() => load({ hostKey: { file: 'host' }, targets: [{ name: 'web', host: 'h', user: 'u', hostKeyFingerprints: [FP] }] }), (e: Error) => e instanceof ConfigError && /ssh\.targets\[0\]\.privateKey: an ssh target needs privateKey or password/.test(e.message));
});

test('host key fingerprints must be OpenSSH SHA256 fingerprints, and at least one', () => {
  assert.throws(() => load({ hostKey: { file: 'host' }, targets: [{ name: 'web', host: 'h', user: 'u', password: { env: 'P' }, hostKeyFingerprints: ['aa:bb:cc'] }] }), /hostKeyFingerprints\[0\]: an OpenSSH SHA256 fingerprint/);
  assert.throws(() => load({ hostKey: { file: 'host' }, targets: [{ name: 'web', host: 'h', user: 'u', password: { env: 'P' }, hostKeyFingerprints: [] }] }), /hostKeyFingerprints/);
});

test('a public key for an unknown identity, or a public host key, is refused', () => {
  assert.throws(() => sshSettings(load({ hostKey: { file: 'host' }, publicKeys: [{ identity: 'eve', key: user.publicLine }] })), /ssh\.publicKeys\[0\]: identity "eve" is not in identities/);
  assert.throws(() => sshSettings(load({ hostKey: { file: 'host.pub' } })), /ssh\.hostKey: this is a public key/);
});
