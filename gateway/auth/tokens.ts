// Short-lived Airlock tokens: HS256 JWTs signed with the configured key. Issuer, audience and
// expiry are always checked; a TTL above the configured maximum is refused at mint time.
import { SignJWT, jwtVerify, errors } from 'jose';
import type { Identity } from '../policy/operation.ts';

export interface TokenSettings {
  issuer: string;
  audience: string;
  key: string;
  defaultTtlMs: number;
  maxTtlMs: number;
}

export class TokenError extends Error {
  constructor(
    message: string,
    readonly reason: 'expired' | 'invalid' | 'audience' | 'issuer' | 'claims',
  ) {
    super(message);
    this.name = 'TokenError';
  }
}

const MIN_KEY_BYTES = 32;

function keyBytes(key: string): Uint8Array {
  const bytes = new TextEncoder().encode(key);
  if (bytes.length < MIN_KEY_BYTES) throw new Error(`token signing key must be at least ${MIN_KEY_BYTES} bytes`);
  return bytes;
}

export async function mintToken(s: TokenSettings, identity: Identity, ttlMs = s.defaultTtlMs): Promise<string> {
  if (ttlMs <= 0) throw new Error('token TTL must be positive');
  if (ttlMs > s.maxTtlMs) throw new Error(`token TTL ${ttlMs / 1000}s exceeds the configured maximum of ${s.maxTtlMs / 1000}s`);
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = { groups: identity.groups };
  if (identity.owner) claims.owner = identity.owner;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(identity.name)
    .setIssuer(s.issuer)
    .setAudience(s.audience)
    .setIssuedAt(now)
    .setExpirationTime(now + Math.ceil(ttlMs / 1000))
    .setJti(crypto.randomUUID())
    .sign(keyBytes(s.key));
}

export async function verifyToken(s: TokenSettings, token: string): Promise<Identity & { expiresAt: Date }> {
  try {
    const { payload } = await jwtVerify(token, keyBytes(s.key), {
      issuer: s.issuer,
      audience: s.audience,
      algorithms: ['HS256'],
      requiredClaims: ['sub', 'exp', 'iat'],
    });
    const groups = payload.groups;
    if (!Array.isArray(groups) || !groups.every((g) => typeof g === 'string')) {
      throw new TokenError('token has no valid groups claim', 'claims');
    }
    const owner = typeof payload.owner === 'string' ? payload.owner : undefined;
    return { name: payload.sub as string, groups, owner, expiresAt: new Date((payload.exp as number) * 1000) };
  } catch (err) {
    if (err instanceof TokenError) throw err;
    if (err instanceof errors.JWTExpired) throw new TokenError('token has expired; mint a new one with `airlock token`', 'expired');
    if (err instanceof errors.JWTClaimValidationFailed) {
      if (err.claim === 'aud') throw new TokenError('token was issued for another audience', 'audience');
      if (err.claim === 'iss') throw new TokenError('token was issued by another issuer', 'issuer');
      throw new TokenError(`token claim ${err.claim} is invalid`, 'claims');
    }
    throw new TokenError('token is not a valid Airlock token (bad format or signature)', 'invalid');
  }
}
