// Airlock's token signing keys: asymmetric (ES256 or EdDSA/Ed25519), each with a key id (kid).
// One key signs (the active one); every configured key verifies, so rotation is: add the new key
// (replicas and relying services pick it up from the JWKS), make it active, remove the old key once
// the tokens it signed have expired. Public keys only (no private part) verify but never sign.
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';

export type AsymmetricAlg = 'ES256' | 'EdDSA';

export interface VerifyKey {
  kid: string;
  alg: AsymmetricAlg;
  publicKey: KeyObject;
}

export interface SignKey extends VerifyKey {
  privateKey: KeyObject;
}

export interface KeyRing {
  /** The key new tokens are signed with; absent on verify-only replicas. */
  active?: SignKey;
  /** Every key whose tokens are accepted, by kid. */
  verify: Map<string, VerifyKey>;
}

export class KeyError extends Error {
  override name = 'KeyError';
}

/** The algorithm a key supports; refuses key types Airlock does not sign with. */
function algOf(key: KeyObject, kid: string): AsymmetricAlg {
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  throw new KeyError(`key ${kid}: only Ed25519 (EdDSA) and P-256 (ES256) keys are supported, got ${key.asymmetricKeyType}`);
}

export interface KeySpec {
  kid: string;
  alg?: AsymmetricAlg;
  /** PEM (PKCS#8) private key; the public key is derived from it. */
  privateKey?: string;
  /** PEM (SPKI) public key or a JWK as JSON, for verify-only keys. */
  publicKey?: string;
}

function parsePublic(text: string, kid: string): KeyObject {
  try {
    const t = text.trim();
    return t.startsWith('{') ? createPublicKey({ key: JSON.parse(t) as import('node:crypto').JsonWebKey, format: 'jwk' }) : createPublicKey(t);
  } catch (err) {
    throw new KeyError(`key ${kid}: public key is not a PEM or JWK public key (${(err as Error).message})`);
  }
}

export function buildKeyRing(specs: KeySpec[], activeKid?: string): KeyRing {
  const verify = new Map<string, VerifyKey>();
  let active: SignKey | undefined;
  for (const s of specs) {
    if (verify.has(s.kid)) throw new KeyError(`key id ${s.kid} appears twice`);
    let privateKey: KeyObject | undefined;
    let publicKey: KeyObject;
    if (s.privateKey) {
      try {
        privateKey = createPrivateKey(s.privateKey);
      } catch (err) {
        throw new KeyError(`key ${s.kid}: private key is not a PEM private key (${(err as Error).message})`);
      }
      publicKey = createPublicKey(privateKey);
    } else if (s.publicKey) publicKey = parsePublic(s.publicKey, s.kid);
    else throw new KeyError(`key ${s.kid}: needs a privateKey or a publicKey`);
    const alg = algOf(publicKey, s.kid);
    if (s.alg && s.alg !== alg) throw new KeyError(`key ${s.kid}: configured as ${s.alg} but the key is ${alg}`);
    verify.set(s.kid, { kid: s.kid, alg, publicKey });
    const wanted = activeKid ? s.kid === activeKid : !active;
    if (privateKey && wanted) active = { kid: s.kid, alg, publicKey, privateKey };
  }
  if (activeKid && !active) throw new KeyError(`active key ${activeKid} is not a configured key with a private key`);
  return { active, verify };
}

/** The public JWKS (RFC 7517) of a key ring: what /.well-known/jwks.json serves. */
export function publicJwks(ring: KeyRing): { keys: Array<Record<string, unknown>> } {
  return {
    keys: [...ring.verify.values()].map((k) => ({ ...k.publicKey.export({ format: 'jwk' }), kid: k.kid, alg: k.alg, use: 'sig' })),
  };
}

/** A fresh key pair as PEM, for `airlock auth keygen` and tests. */
export function generateSigningKey(alg: AsymmetricAlg): { privateKey: string; publicKey: string } {
  const pair = alg === 'EdDSA' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    privateKey: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKey: pair.publicKey.export({ format: 'pem', type: 'spki' }).toString(),
  };
}
