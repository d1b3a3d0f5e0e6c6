// The audit store's tamper evidence: every write is an entry of an append-only hash chain, and the
// chain head is signed (Ed25519) from time to time. Pure functions and types; the store appends,
// verify.ts checks.
//
// Entry: { seq, kind, at, data } serialized as canonical JSON (RFC 8785 style: keys sorted by UTF-16
// code units, no whitespace, ECMAScript number formatting). hash = sha256_hex(prevHash + canonical),
// with prevHash = 64 zeros before the first entry. The `data` of each kind is exactly the column
// values written to the projection tables (JSON columns as the stored text), so a row can be
// compared with the entry that produced it byte for byte.
//
// Kinds:
//   session.start    data: a sessions row without its end (startedAt...); a repeated start is a no-op
//   session.end      data: { id, endedAt, reason, toClient, fromClient }; no-op for an unknown session
//   session.snapshot data: a full sessions row (written by prune for a retained session whose earlier
//                    entries are pruned, and when an old store is first put under the chain)
//   operation        data: a full operations row; a later entry for the same (sessionId, seq) replaces it
//   audit            data: a full audit row including its id
//   prune            data: { before, base, sessions, operations, audit }: what a prune removed
// The projection tables are thus a pure function of the chain (see replay in verify.ts): updates are
// appended entries, never edits of an entry.
import * as nodeCrypto from 'node:crypto';
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';

/** Node's one-shot digest (20.12+, missing from our @types/node): half the cost of a Hash object. */
const oneShotHash = (nodeCrypto as { hash?: (algorithm: string, data: string, encoding: 'hex') => string }).hash;

export const GENESIS_HASH = '0'.repeat(64);

export type EntryKind = 'session.start' | 'session.end' | 'session.snapshot' | 'operation' | 'audit' | 'prune';
export const ENTRY_KINDS: readonly EntryKind[] = ['session.start', 'session.end', 'session.snapshot', 'operation', 'audit', 'prune'];

export type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue };

/** Canonical JSON: sorted keys, no whitespace; undefined object members are left out. */
export function canonicalJson(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError('canonical JSON cannot hold a non-finite number');
      return JSON.stringify(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'object': {
      // Built by concatenation (one entry per audit record is serialized on the proxy's thread).
      if (Array.isArray(v)) {
        let out = '[';
        for (let i = 0; i < v.length; i++) out += (i === 0 ? '' : ',') + canonicalJson(v[i]);
        return `${out}]`;
      }
      const obj = v as Record<string, unknown>;
      const shape = objectShape(Object.keys(obj));
      let out = '{';
      for (let i = 0; i < shape.sorted.length; i++) {
        const x = obj[shape.sorted[i]];
        if (x === undefined) continue;
        out += (out.length === 1 ? '' : ',') + shape.quoted[i] + canonicalJson(x);
      }
      return `${out}}`;
    }
    default:
      throw new TypeError(`canonical JSON cannot hold a ${typeof v}`);
  }
}

/** An object's keys in canonical order, each quoted with its colon. */
interface Shape {
  keys: string[];
  sorted: string[];
  quoted: string[];
}

/** Recent key lists: records of one kind have the same keys in the same order, so sorting and
 * quoting them once is enough (a hit compares the key list element by element). */
const shapes: Shape[] = [];
const MAX_SHAPES = 32;
const MAX_SHAPE_KEYS = 64;

function objectShape(keys: string[]): Shape {
  for (const s of shapes) {
    if (s.keys.length !== keys.length) continue;
    let same = true;
    for (let i = 0; i < keys.length; i++) {
      if (s.keys[i] !== keys[i]) {
        same = false;
        break;
      }
    }
    if (same) return s;
  }
  // Default sort compares UTF-16 code units, as RFC 8785 orders keys.
  const sorted = [...keys].sort();
  const shape = { keys, sorted, quoted: sorted.map((k) => `${JSON.stringify(k)}:`) };
  if (keys.length > MAX_SHAPE_KEYS) return shape; // a large free-form object is not kept
  if (shapes.length >= MAX_SHAPES) shapes.shift();
  shapes.push(shape);
  return shape;
}

/** The canonical text of one chain entry (what is hashed and stored). */
export function entryText(seq: number, kind: EntryKind, at: number, data: Record<string, unknown>): string {
  return canonicalJson({ seq, kind, at, data });
}

export function entryHash(prevHash: string, text: string): string {
  if (oneShotHash) return oneShotHash('sha256', prevHash + text, 'hex');
  return createHash('sha256').update(prevHash).update(text).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Signed checkpoints

export interface CheckpointBody {
  v: 1;
  type: 'airlock.audit.checkpoint';
  /** Chain entry covered (the head when signed). */
  seq: number;
  /** Hash of entry `seq`. */
  hash: string;
  /** ISO-8601 signing time. */
  at: string;
  /** First 16 hex chars of sha256 over the raw public key. */
  keyId: string;
  /** True for the checkpoint a prune leaves: the chain now starts right after `seq`. */
  base: boolean;
}

export interface Checkpoint extends CheckpointBody {
  /** base64 Ed25519 signature over canonicalJson(body). Empty when the store had no signing key. */
  sig: string;
}

export class SigningKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SigningKeyError';
  }
}

/**
 * An Ed25519 private key from text: a PKCS#8 PEM (`openssl genpkey -algorithm ed25519`), or the
 * 32-byte seed as base64 / hex (what an env variable can hold).
 */
export function parsePrivateKey(text: string): KeyObject {
  const t = text.trim();
  let key: KeyObject;
  try {
    if (t.includes('-----BEGIN')) key = createPrivateKey(t);
    else {
      const seed = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64');
      if (seed.length !== 32) throw new SigningKeyError('expected a PEM private key or a 32-byte Ed25519 seed (base64 or hex)');
      // PKCS#8 prefix for an Ed25519 seed (RFC 8410).
      const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
      key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    }
  } catch (e) {
    if (e instanceof SigningKeyError) throw e;
    throw new SigningKeyError(`not a usable Ed25519 private key: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new SigningKeyError(`the audit signing key must be Ed25519, got ${key.asymmetricKeyType}`);
  return key;
}

/** An Ed25519 public key from a PEM (SPKI) text, or the raw 32 bytes as base64 / hex. */
export function parsePublicKey(text: string): KeyObject {
  const t = text.trim();
  let key: KeyObject;
  try {
    if (t.includes('-----BEGIN')) key = createPublicKey(t);
    else {
      const raw = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64');
      if (raw.length !== 32) throw new SigningKeyError('expected a PEM public key or 32 raw bytes (base64 or hex)');
      key = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), raw]), format: 'der', type: 'spki' });
    }
  } catch (e) {
    if (e instanceof SigningKeyError) throw e;
    throw new SigningKeyError(`not a usable Ed25519 public key: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new SigningKeyError(`the audit public key must be Ed25519, got ${key.asymmetricKeyType}`);
  return key;
}

export function publicKeyPem(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return pub.export({ format: 'pem', type: 'spki' }).toString();
}

export function keyId(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const der = pub.export({ format: 'der', type: 'spki' });
  return createHash('sha256').update(der.subarray(der.length - 32)).digest('hex').slice(0, 16);
}

/** Signs the chain head `seq`/`hash`; without a key the checkpoint is recorded unsigned. */
export function makeCheckpoint(seq: number, hash: string, at: Date, key: KeyObject | undefined, base = false): Checkpoint {
  const body: CheckpointBody = { v: 1, type: 'airlock.audit.checkpoint', seq, hash, at: at.toISOString(), keyId: key ? keyId(key) : '', base };
  const sig = key ? sign(null, Buffer.from(canonicalJson(body)), key).toString('base64') : '';
  return { ...body, sig };
}

/** True when `cp` carries a valid signature by `pub`. */
export function checkpointSignedBy(cp: Checkpoint, pub: KeyObject): boolean {
  if (!cp.sig) return false;
  const body: CheckpointBody = { v: 1, type: 'airlock.audit.checkpoint', seq: cp.seq, hash: cp.hash, at: cp.at, keyId: cp.keyId, base: cp.base };
  try {
    return verify(null, Buffer.from(canonicalJson(body)), pub, Buffer.from(cp.sig, 'base64'));
  } catch {
    return false;
  }
}

/** Parses one anchored checkpoint line; undefined when it is not one. */
export function parseCheckpoint(line: string): Checkpoint | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  const c = v as Partial<Checkpoint>;
  if (typeof c !== 'object' || c === null || c.type !== 'airlock.audit.checkpoint' || c.v !== 1) return undefined;
  if (!Number.isSafeInteger(c.seq) || typeof c.hash !== 'string' || typeof c.at !== 'string' || typeof c.keyId !== 'string' || typeof c.sig !== 'string') return undefined;
  return { v: 1, type: 'airlock.audit.checkpoint', seq: c.seq as number, hash: c.hash, at: c.at, keyId: c.keyId, base: c.base === true, sig: c.sig };
}
