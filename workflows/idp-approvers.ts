// Approvers as the identity provider knows them (`approvers.source: oidc`): a chat account counts
// only through an entry of the identity registry (gateway/recording/identity-registry.ts) that the
// IdP vouched for recently, with a verified email, and its groups are that sign-in's group claim.
// The chat apps look people up by the chat account's verified email; the worker, which trusts no
// caller, looks the signed approver name up again and takes the groups from the registry itself.
import type { AirlockConfig } from '../gateway/config/schema.ts';
import { parseDuration } from '../gateway/config/load.ts';
import type { IdentityRegistry, IdpIdentity } from '../gateway/recording/identity-registry.ts';
import type { AuditEvent } from '../gateway/recording/store.ts';

export type IdpApproverLookup = { ok: true; identity: string; groups: string[]; entry: IdpIdentity } | { ok: false; error: string };

const SIGN_IN = 'sign in at the identity provider once (`airlock login`, or the audit console) so Airlock learns your identity and groups';

/** True when chat approvers must come from the IdP (the YAML mapping is not consulted). */
export function approversFromIdp(config: AirlockConfig): boolean {
  return config.approvers?.source === 'oidc';
}

function maxAgeMs(config: AirlockConfig): number {
  return parseDuration(config.approvers?.maxAge ?? '12h');
}

/** Picks the entry that counts among a person's entries, or says why none does. */
function choose(config: AirlockConfig, entries: IdpIdentity[], what: string, now: number): IdpApproverLookup {
  if (entries.length === 0) return { ok: false, error: `no sign-in at the identity provider is known for ${what}: ${SIGN_IN}` };
  const verified = entries.filter((e) => e.emailVerified && e.email !== '');
  if (verified.length === 0) return { ok: false, error: `the identity provider has not verified the email of ${what}; an unverified email cannot approve` };
  const limit = maxAgeMs(config);
  const fresh = verified.filter((e) => now - e.verifiedAt.getTime() <= limit);
  if (fresh.length === 0) {
    const last = verified.reduce((a, b) => (a.verifiedAt > b.verifiedAt ? a : b));
    return {
      ok: false,
      error: `the last sign-in of ${what} at the identity provider (${last.verifiedAt.toISOString()}) is older than approvers.maxAge (${config.approvers?.maxAge ?? '12h'}): sign in again (\`airlock login\`) so Airlock has your current groups`,
    };
  }
  const names = new Set(fresh.map((e) => e.identity));
  // Two issuers vouching for one email as different people: nobody can tell which one clicked.
  if (names.size > 1) return { ok: false, error: `${what} signed in as several identities (${[...names].join(', ')}); Airlock cannot tell which one this is` };
  const e = fresh.reduce((a, b) => (a.verifiedAt >= b.verifiedAt ? a : b));
  return { ok: true, identity: e.identity, groups: [...e.groups], entry: e };
}

/** The chat apps: a chat account's verified email to the approver the IdP vouched for. */
export function idpApproverByEmail(config: AirlockConfig, registry: IdentityRegistry | undefined, email: string, now = Date.now()): IdpApproverLookup {
  if (!registry) return { ok: false, error: 'this Airlock has no identity registry to check approvers against (approvers.source: oidc needs the audit store)' };
  const wanted = email.trim().toLowerCase();
  if (!wanted) return { ok: false, error: 'your chat account has no email to match with the identity provider' };
  let entries: IdpIdentity[];
  try {
    entries = registry.findIdpIdentities({ email: wanted });
  } catch (err) {
    return { ok: false, error: `the identity registry could not be read (${err instanceof Error ? err.message : String(err)}); nothing was decided` };
  }
  return choose(config, entries, wanted, now);
}

/** The worker: the signed approver name to its registry entry and groups. */
export function idpApproverByIdentity(config: AirlockConfig, registry: IdentityRegistry | undefined, identity: string, now = Date.now()): IdpApproverLookup {
  if (!registry) return { ok: false, error: 'this worker has no identity registry to check approvers against (approvers.source: oidc)' };
  let entries: IdpIdentity[];
  try {
    entries = registry.findIdpIdentities({ identity });
  } catch (err) {
    return { ok: false, error: `the identity registry could not be read (${err instanceof Error ? err.message : String(err)})` };
  }
  return choose(config, entries, identity, now);
}

/** A chat click refused before it became a decision: who, from where, and why, in the audit store. */
export function auditRefusal(audit: ((e: AuditEvent) => void) | undefined, requestId: string, via: string, decision: string, error: string): void {
  if (!audit) return;
  try {
    audit({ at: new Date(), kind: 'approval.decision-refused', subject: requestId, actor: `unverified:${via}`, detail: { decision, via, error, stage: 'approver-identity' } });
  } catch {
    // the attempt also reaches the workflow, which audits it there
  }
}
