// Asymmetric Airlock tokens: ES256/EdDSA with a kid, the public JWKS, rotation without downtime,
// HS256 only where configured, and no algorithm confusion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, createLocalJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';
import { parseConfig, ConfigError } from '../../gateway/config/load.ts';
import { keyRing, tokenSettings } from '../../gateway/auth/settings.ts';
import { generateSigningKey, publicJwks } from '../../gateway/auth/keys.ts';
import { mintToken, verifyToken, TokenError } from '../../gateway/auth/tokens.ts';

const dir = mkdtempSync(join(tmpdir(), 'airlock-keys-'));
const ec = generateSigningKey('ES256');
const ed = generateSigningKey('EdDSA');
writeFileSync(join(dir, 'old.pem'), ec.privateKey);
writeFileSync(join(dir, 'old.pub'), ec.publicKey);
writeFileSync(join(dir, 'new.pem'), ed.privateKey);
writeFileSync(join(dir, 'hs.key'), 'h'.repeat(48));

function config(auth: string) {
  return parseConfig(`listen: {}\nauth:\n${auth}\n`, join(dir, 'airlock.yaml'), dir);
}
const AGENT = { name: 'agent-7', groups: ['agents'], owner: 'alice' };

test('tokens are signed with the active key, carry its kid and verify to the identity', async () => {
  const s = tokenSettings(config(`  keys:\n    - { id: k-2026-01, privateKey: { file: old.pem } }`));
  const t = await mintToken(s, AGENT);
  assert.deepEqual(decodeProtectedHeader(t), { alg: 'ES256', kid: 'k-2026-01', typ: 'JWT' });
  const v = await verifyToken(s, t);
  assert.equal(v.name, 'agent-7');
  assert.equal(v.owner, 'alice');
  assert.ok(v.tokenId);
});

test('the JWKS holds every configured public key (no private parts) and verifies tokens for other services', async () => {
  const loaded = config(`  keys:\n    - { id: old, privateKey: { file: old.pem } }\n    - { id: new, privateKey: { file: new.pem } }\n  activeKey: new`);
  const jwks = publicJwks(keyRing(loaded));
  assert.deepEqual(jwks.keys.map((k) => [k.kid, k.alg, k.use]), [['old', 'ES256', 'sig'], ['new', 'EdDSA', 'sig']]);
  for (const k of jwks.keys) assert.equal(k.d, undefined, 'no private key material');
  const t = await mintToken(tokenSettings(loaded), AGENT);
  const { payload, protectedHeader } = await jwtVerify(t, createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]), { issuer: 'airlock', audience: 'airlock' });
  assert.equal(protectedHeader.kid, 'new');
  assert.equal(payload.sub, 'agent-7');
});

test('rotation: add the new key, switch, old tokens verify until the old key is removed', async () => {
  const before = tokenSettings(config(`  keys:\n    - { id: old, privateKey: { file: old.pem } }`));
  const oldToken = await mintToken(before, AGENT);
  // Step 1: the new key is added (verify-only elsewhere), old key still signs.
  const both = tokenSettings(config(`  keys:\n    - { id: old, privateKey: { file: old.pem } }\n    - { id: new, privateKey: { file: new.pem } }\n  activeKey: new`));
  const newToken = await mintToken(both, AGENT);
  assert.equal(decodeProtectedHeader(newToken).kid, 'new');
  assert.equal((await verifyToken(both, oldToken)).name, 'agent-7', 'old tokens still verify during rotation');
  // A replica that only has the old key's public part (verify-only) also accepts old tokens.
  const verifyOnly = tokenSettings(config(`  keys:\n    - { id: old, publicKey: { file: old.pub } }\n  signingKey: { file: hs.key }`));
  assert.equal(verifyOnly.keys?.active, undefined);
  assert.equal((await verifyToken(verifyOnly, oldToken)).name, 'agent-7');
  // Step 2: the old key is removed; its tokens are refused, the new ones keep working.
  const after = tokenSettings(config(`  keys:\n    - { id: new, privateKey: { file: new.pem } }`));
  await assert.rejects(verifyToken(after, oldToken), (e: unknown) => e instanceof TokenError && /unknown signing key/.test(e.message));
  assert.equal((await verifyToken(after, newToken)).name, 'agent-7');
});

test('HS256 tokens are refused once keys are configured, unless allowHs256 is set', async () => {
  const hsOnly = tokenSettings(config(`  signingKey: { file: hs.key }`));
  const hsToken = await mintToken(hsOnly, AGENT);
  assert.equal(decodeProtectedHeader(hsToken).alg, 'HS256');
  const strict = tokenSettings(config(`  signingKey: { file: hs.key }\n  keys:\n    - { id: new, privateKey: { file: new.pem } }`));
  await assert.rejects(verifyToken(strict, hsToken), /HS256 tokens are not accepted/);
  const lenient = tokenSettings(config(`  signingKey: { file: hs.key }\n  allowHs256: true\n  keys:\n    - { id: new, privateKey: { file: new.pem } }`));
  assert.equal((await verifyToken(lenient, hsToken)).name, 'agent-7');
  assert.equal(decodeProtectedHeader(await mintToken(lenient, AGENT)).alg, 'EdDSA', 'the asymmetric key still signs');
});

test('algorithm confusion: the public key as an HMAC secret, a kid with the wrong alg, no kid, alg none', async () => {
  const s = tokenSettings(config(`  keys:\n    - { id: old, privateKey: { file: old.pem } }`));
  const claims = { groups: ['dba'] };
  const asHmac = await new SignJWT(claims).setProtectedHeader({ alg: 'HS256', kid: 'old' }).setSubject('alice').setIssuer('airlock').setAudience('airlock')
    .setIssuedAt().setExpirationTime('5m').sign(new TextEncoder().encode(ec.publicKey));
  await assert.rejects(verifyToken(s, asHmac), TokenError);
  const edSigned = await mintToken(tokenSettings(config(`  keys:\n    - { id: old, privateKey: { file: new.pem } }`)), AGENT);
  await assert.rejects(verifyToken(s, edSigned), /unknown signing key/, 'kid old is ES256 here; an EdDSA token naming it is refused');
  const body = Buffer.from(JSON.stringify({ sub: 'alice', groups: ['dba'], iss: 'airlock', aud: 'airlock', iat: 1, exp: 9e9 })).toString('base64url');
  await assert.rejects(verifyToken(s, `${Buffer.from('{"alg":"none","kid":"old"}').toString('base64url')}.${body}.`), TokenError);
  await assert.rejects(verifyToken(s, `${Buffer.from('{"alg":"ES256"}').toString('base64url')}.${body}.AAAA`), /unknown signing key/);
});

test('config refuses: no key at all, an RSA key, a duplicate kid, an active key without a private part', () => {
  assert.throws(() => config(`  issuer: airlock`), /auth\.keys .*or auth\.signingKey/);
  writeFileSync(join(dir, 'rsa.pem'), generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'pem', type: 'pkcs8' }));
  assert.throws(() => tokenSettings(config(`  keys:\n    - { id: r, privateKey: { file: rsa.pem } }`)), (e: unknown) => e instanceof ConfigError && /Ed25519 .* P-256/.test(e.message));
  assert.throws(() => tokenSettings(config(`  keys:\n    - { id: a, privateKey: { file: old.pem } }\n    - { id: a, privateKey: { file: new.pem } }`)), /appears twice/);
  assert.throws(() => tokenSettings(config(`  keys:\n    - { id: a, publicKey: { file: old.pub } }\n  activeKey: a\n  signingKey: { file: hs.key }`)), /not a configured key with a private key/);
});
