import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT } from 'jose';
import { mintToken, verifyToken, TokenError, type TokenSettings } from '../../gateway/auth/tokens.ts';

const settings: TokenSettings = { issuer: 'airlock', audience: 'airlock', key: 'k'.repeat(40), defaultTtlMs: 600_000, maxTtlMs: 3_600_000 };

test('a minted token verifies to the same identity, groups and owner', async () => {
  const t = await mintToken(settings, { name: 'agent-7', groups: ['agents', 'readers'], owner: 'alice' });
  const id = await verifyToken(settings, t);
  assert.equal(id.name, 'agent-7');
  assert.deepEqual(id.groups, ['agents', 'readers']);
  assert.equal(id.owner, 'alice');
  assert.ok(id.expiresAt.getTime() - Date.now() <= 600_000);
});

test('tokens signed with another key are refused', async () => {
  const t = await mintToken({ ...settings, key: 'x'.repeat(40) }, { name: 'a', groups: [] });
  await assert.rejects(verifyToken(settings, t), (e: unknown) => e instanceof TokenError && e.reason === 'invalid');
});

test('expired tokens are refused with a message that says so', async () => {
  const now = Math.floor(Date.now() / 1000);
  const t = await new SignJWT({ groups: [] }).setProtectedHeader({ alg: 'HS256' }).setSubject('a').setIssuer('airlock').setAudience('airlock')
    .setIssuedAt(now - 120).setExpirationTime(now - 60).sign(new TextEncoder().encode(settings.key));
  await assert.rejects(verifyToken(settings, t), /token has expired/);
});

test('audience and issuer are checked', async () => {
  const other = await mintToken({ ...settings, audience: 'someone-else' }, { name: 'a', groups: [] });
  await assert.rejects(verifyToken(settings, other), /another audience/);
  const iss = await mintToken({ ...settings, issuer: 'evil' }, { name: 'a', groups: [] });
  await assert.rejects(verifyToken(settings, iss), /another issuer/);
});

test('garbage and alg=none tokens are refused', async () => {
  await assert.rejects(verifyToken(settings, 'not-a-jwt'), TokenError);
  const none = Buffer.from('{"alg":"none"}').toString('base64url') + '.' + Buffer.from('{"sub":"a","groups":[]}').toString('base64url') + '.';
  await assert.rejects(verifyToken(settings, none), TokenError);
});

test('a TTL above the configured maximum is refused at mint time', async () => {
  await assert.rejects(mintToken(settings, { name: 'a', groups: [] }, 2 * 3_600_000), /exceeds the configured maximum/);
});

test('short signing keys are refused', async () => {
  await assert.rejects(mintToken({ ...settings, key: 'short' }, { name: 'a', groups: [] }), /at least 32 bytes/);
});
