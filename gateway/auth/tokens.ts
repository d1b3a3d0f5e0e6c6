// Short-lived Airlock tokens (JWTs). Signed with the active asymmetric key (ES256 or EdDSA, with a
// kid; see keys.ts) when keys are configured; HS256 with the shared secret only when a secret is
// configured (offline demo, local use). Issuer, audience, expiry are always checked; a TTL above the
// configured maximum is refused at mint time. The algorithm is chosen by the verifier's key, never
// by the token: an HS256 token is refused unless a secret is configured, an asymmetric one unless
// its kid names a configured key of that algorithm.
import { SignJWT, jwtVerify, decodeProtectedHeader, errors } from 'jose';
import type { Identity } from '../policy/operation.ts';
import type { KeyRing } from './keys.ts';
import type { RevocationSource } from '../enforce/session.ts';

export interface TokenSettings {
  issuer: string;
  audience: string;
  /** HS256 shared secret; unset: HS256 tokens are neither minted nor accepted. */
  key?: string;
  /** Asymmetric keys; when one is active it signs every new token. */
  keys?: KeyRing;
  defaultTtlMs: number;
  maxTtlMs: number;
  /** Revoked identities and token ids; a verified token of either is refused. */
  revocations?: RevocationSource;
}

export class TokenError extends Error {
  constructor(
    message: string,
    readonly reason: 'expired' | 'invalid' | 'audience' | 'issuer' | 'claims' | 'revoked',
  ) {
    super(message);
    this.name = 'TokenError';
  }
}

/** What a verified token says: the identity, when it ends, its id (for revocation) and how it was obtained. */
export type VerifiedToken = Identity & { expiresAt: Date; tokenId?: string; issuedAt?: Date };

/** Extra claims a minted token carries (e.g. how a token exchange obtained it). */
export interface MintExtras {
  /** RFC 8693 `act`-style provenance: the subject token's issuer and subject. */
  via?: { iss: string; sub: string };
  /** Authentication method, e.g. 'oidc', 'token-exchange', 'local'. */
  amr?: string;
}

const MIN_KEY_BYTES = 32;

function keyBytes(key: string): Uint8Array {
  const bytes = new TextEncoder().encode(key);
  if (bytes.length < MIN_KEY_BYTES) throw new Error(`token signing key must be at least ${MIN_KEY_BYTES} bytes`);
  return bytes;
}

export async function mintToken(s: TokenSettings, identity: Identity, ttlMs = s.defaultTtlMs, extras: MintExtras = {}): Promise<string> {
  if (ttlMs <= 0) throw new Error('token TTL must be positive');
  if (ttlMs > s.maxTtlMs) throw new Error(`token TTL ${ttlMs / 1000}s exceeds the configured maximum of ${s.maxTtlMs / 1000}s`);
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = { groups: identity.groups };
  if (identity.owner) claims.owner = identity.owner;
  if (extras.via) claims.act = { iss: extras.via.iss, sub: extras.via.sub };
  if (extras.amr) claims.amr = [extras.amr];
  const jwt = new SignJWT(claims)
    .setSubject(identity.name)
    .setIssuer(s.issuer)
    .setAudience(s.audience)
    .setIssuedAt(now)
    .setExpirationTime(now + Math.ceil(ttlMs / 1000))
    .setJti(crypto.randomUUID());
  const active = s.keys?.active;
  if (active) return jwt.setProtectedHeader({ alg: active.alg, kid: active.kid, typ: 'JWT' }).sign(active.privateKey);
  if (s.key !== undefined) return jwt.setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(keyBytes(s.key));
  throw new Error('no token signing key: configure auth.keys (with a private key) or auth.signingKey');
}

export async function verifyToken(s: TokenSettings, token: string): Promise<VerifiedToken> {
  try {
    let header: ReturnType<typeof decodeProtectedHeader>;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new TokenError('token is not a valid Airlock token (bad format or signature)', 'invalid');
    }
    let key: Uint8Array | import('node:crypto').KeyObject;
    let alg: string;
    if (header.alg === 'HS256') {
      if (s.key === undefined) throw new TokenError('token is not a valid Airlock token (HS256 tokens are not accepted here)', 'invalid');
      key = keyBytes(s.key);
      alg = 'HS256';
    } else {
      const k = typeof header.kid === 'string' ? s.keys?.verify.get(header.kid) : undefined;
      if (!k || k.alg !== header.alg) throw new TokenError('token is not a valid Airlock token (unknown signing key; was it removed?)', 'invalid');
      key = k.publicKey;
      alg = k.alg;
    }
    const { payload } = await jwtVerify(token, key, {
      issuer: s.issuer,
      audience: s.audience,
      algorithms: [alg],
      requiredClaims: ['sub', 'exp', 'iat'],
    });
    const groups = payload.groups;
    if (!Array.isArray(groups) || !groups.every((g) => typeof g === 'string')) {
      throw new TokenError('token has no valid groups claim', 'claims');
    }
    const owner = typeof payload.owner === 'string' ? payload.owner : undefined;
    const revoked = s.revocations?.revoked(payload.sub as string, typeof payload.jti === 'string' ? payload.jti : undefined);
    if (revoked) throw new TokenError(`token was revoked by ${revoked.by}: ${revoked.reason}`, 'revoked');
    return {
      name: payload.sub as string,
      groups,
      owner,
      expiresAt: new Date((payload.exp as number) * 1000),
      ...(typeof payload.jti === 'string' ? { tokenId: payload.jti } : {}),
      issuedAt: new Date((payload.iat as number) * 1000),
    };
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
