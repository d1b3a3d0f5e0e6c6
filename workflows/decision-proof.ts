// Proof of origin for approval decisions. Anyone who can reach Temporal can send the `decide`
// Update, so a decision counts only when the component that authenticated the human signed it:
// the Slack app (after Slack's request signature), the Teams app (after the Bot Framework JWT),
// the operator's CLI (holder of the operator key). Each source has its own Ed25519 key
// (`decisions.keys.<source>`); the worker holds the public halves and verifies in an activity
// (Node crypto cannot run in the workflow sandbox), the workflow refuses replays within its run.
import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { DecisionArgs, DecisionProof, DecisionRequest, DecisionSource } from '../bots/channel.ts';
import { ConfigError, configPath, parseDuration, resolveSecret, type LoadedConfig } from '../gateway/config/load.ts';

export const DECISION_SOURCES: readonly DecisionSource[] = ['slack', 'teams', 'cli'];
const DEFAULT_MAX_AGE_MS = 5 * 60_000;
/** Signer clocks may run a little ahead of the worker's. */
const FUTURE_SKEW_MS = 30_000;

/**
 * The exact bytes signed: a JSON array in fixed order, so signer and verifier can never disagree
 * about field order, and every field a decision's meaning depends on is covered.
 */
export function canonicalDecision(requestId: string, d: Pick<DecisionArgs, 'approver' | 'decision' | 'reason' | 'grant'>, p: Omit<DecisionProof, 'signature'>): Buffer {
  const grant = d.grant ? [d.grant.forMs, d.grant.runs ?? null] : null;
  return Buffer.from(
    JSON.stringify(['airlock-decision/1', p.source, requestId, d.approver, p.channelUser, d.decision, d.reason ?? '', grant, p.signedAt, p.nonce, ...(p.notAfter !== undefined ? [p.notAfter] : [])]),
    'utf8',
  );
}

export interface DecisionSigner {
  readonly source: DecisionSource;
  /** Signs `d` for the authenticated `channelUser`; returns the request with its proof attached. */
  sign(d: DecisionRequest, channelUser: string): DecisionRequest;
}

/** How long a submitter waits for the worker to apply a decision (decisions.deadline). */
export const DEFAULT_DECISION_DEADLINE_MS = 20_000;

export function decisionSigner(source: DecisionSource, privateKey: KeyObject, now: () => number = Date.now, deadlineMs = DEFAULT_DECISION_DEADLINE_MS): DecisionSigner {
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new ConfigError(`decisions.keys.${source}.privateKey must be an Ed25519 key (got ${privateKey.asymmetricKeyType ?? 'unknown'})`);
  return {
    source,
    sign(d, channelUser) {
      const signedAt = now();
      const base = { source, channelUser, signedAt, nonce: randomBytes(16).toString('base64url'), notAfter: signedAt + deadlineMs };
      const signature = sign(null, canonicalDecision(d.requestId, d, base), privateKey).toString('base64');
      return { ...d, via: `${source}:${channelUser}`, proof: { ...base, signature } };
    },
  };
}

function privateKeyOf(loaded: LoadedConfig, source: DecisionSource): KeyObject | undefined {
  const ref = loaded.config.decisions?.keys[source]?.privateKey;
  if (!ref) return undefined;
  const pem = resolveSecret(ref, loaded.baseDir, `decisions.keys.${source}.privateKey`);
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new ConfigError(`decisions.keys.${source}.privateKey is not a PEM private key: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** The signer of `source` from the config, or undefined when this config holds no private key for it. */
export function signerFromConfig(loaded: LoadedConfig, source: DecisionSource): DecisionSigner | undefined {
  const key = privateKeyOf(loaded, source);
  return key ? decisionSigner(source, key, Date.now, decisionDeadlineMs(loaded)) : undefined;
}

/** decisions.deadline: how long a submitter waits for the worker; the proof stops counting then. */
export function decisionDeadlineMs(loaded: LoadedConfig): number {
  const d = loaded.config.decisions?.deadline;
  return d ? parseDuration(d) : DEFAULT_DECISION_DEADLINE_MS;
}

/** Public keys the worker verifies with: `publicKey` files, else the public half of `privateKey`. */
export function verificationKeys(loaded: LoadedConfig): Map<DecisionSource, KeyObject> {
  const keys = new Map<DecisionSource, KeyObject>();
  for (const source of DECISION_SOURCES) {
    const cfg = loaded.config.decisions?.keys[source];
    if (!cfg) continue;
    let key: KeyObject;
    if (cfg.publicKey) {
      const file = configPath(loaded, cfg.publicKey);
      try {
        key = createPublicKey(readFileSync(file));
      } catch (err) {
        throw new ConfigError(`decisions.keys.${source}.publicKey: cannot read a PEM public key from ${file}: ${err instanceof Error ? err.message : String(err)}`);
      }
    } else {
      key = createPublicKey(privateKeyOf(loaded, source)!);
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new ConfigError(`decisions.keys.${source} must be an Ed25519 key (got ${key.asymmetricKeyType ?? 'unknown'})`);
    keys.set(source, key);
  }
  return keys;
}

export function maxAgeMs(loaded: LoadedConfig): number {
  const a = loaded.config.decisions?.maxAge;
  return a ? parseDuration(a) : DEFAULT_MAX_AGE_MS;
}

export type ProofCheck = { ok: true; proof: DecisionProof } | { ok: false; error: string };

function isProof(p: unknown): p is DecisionProof {
  if (!p || typeof p !== 'object') return false;
  const o = p as Record<string, unknown>;
  return (
    typeof o.source === 'string' &&
    typeof o.channelUser === 'string' &&
    typeof o.signedAt === 'number' &&
    Number.isFinite(o.signedAt) &&
    typeof o.nonce === 'string' &&
    o.nonce.length >= 16 &&
    typeof o.signature === 'string' &&
    (o.notAfter === undefined || (typeof o.notAfter === 'number' && Number.isFinite(o.notAfter)))
  );
}

/**
 * Checks a decision's proof: known source, valid signature over exactly these fields, fresh
 * (`notBefore`: the workflow run's start, so a proof for an earlier run of the same request id
 * cannot be replayed into a later one; `maxAgeMs` after signing). Replays within a run are the
 * workflow's to refuse (it remembers nonces).
 */
export function checkProof(
  keys: ReadonlyMap<DecisionSource, KeyObject>,
  requestId: string,
  d: DecisionArgs,
  opts: { now: number; maxAgeMs: number; notBefore: number },
): ProofCheck {
  const p: unknown = d.proof;
  if (p === undefined || p === null) return { ok: false, error: 'unsigned decision: decisions must be signed by Slack, Teams or the operator CLI' };
  if (!isProof(p)) return { ok: false, error: 'malformed decision proof' };
  const key = keys.get(p.source as DecisionSource);
  if (!key) return { ok: false, error: `no decision key for source ${JSON.stringify(p.source)} is configured on the worker (decisions.keys)` };
  let good = false;
  try {
    good = verify(null, canonicalDecision(requestId, d, p), key, Buffer.from(p.signature, 'base64'));
  } catch {
    good = false;
  }
  if (!good) return { ok: false, error: `bad signature: the decision was not signed by the ${p.source} key, or was altered` };
  if (p.signedAt > opts.now + FUTURE_SKEW_MS) return { ok: false, error: 'the decision proof is dated in the future' };
  if (opts.now - p.signedAt > opts.maxAgeMs) return { ok: false, error: `stale decision proof (signed ${Math.round((opts.now - p.signedAt) / 1000)}s ago)` };
  if (p.signedAt < opts.notBefore) return { ok: false, error: 'the decision proof predates this request (replay from an earlier run)' };
  if (p.notAfter !== undefined && opts.now > p.notAfter) return { ok: false, error: `the decision arrived after its deadline (${new Date(p.notAfter).toISOString()}): its submitter was told it was not applied, so it is not` };
  return { ok: true, proof: p };
}
