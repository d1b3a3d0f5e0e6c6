// The chain's building blocks: canonical JSON, entry hashes, Ed25519 keys as operators supply them
// (PEM file, base64 or hex seed in an env variable) and signed checkpoints.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import {
  canonicalJson,
  checkpointSignedBy,
  entryHash,
  entryText,
  GENESIS_HASH,
  keyId,
  makeCheckpoint,
  parseCheckpoint,
  parsePrivateKey,
  parsePublicKey,
  publicKeyPem,
  SigningKeyError,
} from '../../gateway/recording/chain.ts';

describe('canonical JSON', () => {
  test('sorts keys at every level, drops undefined members, keeps arrays in order', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [3, { z: null, y: 'é' }], c: undefined } }), '{"a":{"d":[3,{"y":"é","z":null}]},"b":1}');
    assert.equal(canonicalJson({ '\u00e9': 1, z: 2, A: 3 }), '{"A":3,"z":2,"é":1}');
  });

  test('key orders seen before are reused only for exactly the same keys (the shape memo never changes the output)', () => {
    const seen = new Map<string, string>();
    for (let round = 0; round < 3; round++) {
      for (const o of [{ b: 1, a: 2 }, { a: 2, b: 1 }, { b: 1, c: 2 }, { b: 1, a: 2, c: 3 }, { b: 1 }, { 'a"': 1, a: 2 }, Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${99 - i}`, i]))]) {
        const text = canonicalJson(o);
        const keys = Object.keys(o).sort();
        assert.deepEqual(Object.keys(JSON.parse(text)), keys, text);
        const first = seen.get(keys.join()) ?? text;
        seen.set(keys.join(), first);
        assert.equal(text, first);
      }
    }
    assert.equal(canonicalJson({ 'a"': 1, a: 2 }), '{"a":2,"a\\"":1}');
  });

  test('refuses what has no canonical form', () => {
    assert.throws(() => canonicalJson({ x: Number.NaN }), TypeError);
    assert.throws(() => canonicalJson({ x: () => 1 }), TypeError);
  });

  test('an entry hash commits to the previous hash and to every byte of the entry', () => {
    const text = entryText(1, 'operation', 1000, { text: 'SELECT 1' });
    assert.equal(text, '{"at":1000,"data":{"text":"SELECT 1"},"kind":"operation","seq":1}');
    const h = entryHash(GENESIS_HASH, text);
    assert.match(h, /^[0-9a-f]{64}$/);
    assert.notEqual(entryHash('1'.repeat(64), text), h);
    assert.notEqual(entryHash(GENESIS_HASH, text.replace('SELECT 1', 'SELECT 2')), h);
  });

  test('the entry hash is sha256_hex(prevHash + canonical text), over the UTF-8 bytes', () => {
    // Fixed values: existing stores were hashed this way; a change of digest routine must keep them.
    assert.equal(entryHash(GENESIS_HASH, '{"at":1000,"data":{"text":"SELECT 1"},"kind":"operation","seq":1}'), 'e1304dc15d9d29d00cb06e718629d8818fe3b34b08b31f011ebf893790b55118');
    const text = entryText(2, 'operation', 1, { text: 'SELECT \'\u00e9\u20ac\ud83d\ude00\'' });
    const bytes = Buffer.concat([Buffer.from('ab'.repeat(32)), Buffer.from(text, 'utf8')]);
    assert.equal(entryHash('ab'.repeat(32), text), createHash('sha256').update(bytes).digest('hex'));
  });
});

describe('signing keys and checkpoints', () => {
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);

  test('a private key is read from a PEM, a base64 seed or a hex seed, all the same key', () => {
    const ids = [parsePrivateKey(pem), parsePrivateKey(seed.toString('base64')), parsePrivateKey(seed.toString('hex'))].map(keyId);
    assert.deepEqual(new Set(ids).size, 1);
    assert.equal(ids[0], keyId(privateKey));
    assert.equal(keyId(parsePublicKey(publicKeyPem(privateKey))), ids[0]);
  });

  test('anything but an Ed25519 key is refused with a clear error', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    assert.throws(() => parsePrivateKey(rsa), (e: unknown) => e instanceof SigningKeyError && /must be Ed25519, got rsa/.test(e.message));
    assert.throws(() => parsePrivateKey('too short'), SigningKeyError);
    assert.throws(() => parsePublicKey('-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----'), SigningKeyError);
  });

  test('a checkpoint verifies with its public key only, and not once any field changed', () => {
    const cp = makeCheckpoint(42, 'a'.repeat(64), new Date('2026-11-24T10:00:00Z'), privateKey);
    const pub = parsePublicKey(publicKeyPem(privateKey));
    assert.equal(checkpointSignedBy(cp, pub), true);
    assert.equal(checkpointSignedBy(cp, generateKeyPairSync('ed25519').publicKey), false);
    for (const changed of [{ seq: 43 }, { hash: 'b'.repeat(64) }, { at: '2026-11-24T10:00:01.000Z' }, { base: true }, { sig: '' }]) {
      assert.equal(checkpointSignedBy({ ...cp, ...changed }, pub), false, JSON.stringify(changed));
    }
    const line = JSON.stringify(cp);
    assert.deepEqual(parseCheckpoint(line), cp);
    assert.equal(parseCheckpoint('{"type":"other"}'), undefined);
    assert.equal(parseCheckpoint('not json'), undefined);
    const unsigned = makeCheckpoint(1, GENESIS_HASH, new Date(), undefined, true);
    assert.equal(unsigned.sig, '');
    assert.equal(checkpointSignedBy(unsigned, pub), false);
  });
});
