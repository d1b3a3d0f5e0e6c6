// The identity registry: people as the company's identity provider last vouched for them, kept in
// the audit store so every replica (gateway, worker, chat apps) reads the same answer. Filled when a
// human completes an OIDC sign-in (`airlock login` through the /oauth/token exchange, or the
// console's OIDC login); read when a chat click must be turned into an approver (approvers.source:
// oidc). Each entry says when the IdP vouched (`verifiedAt`, the ID token's iat): past the
// configured max age it no longer counts, and the person has to sign in again. Group changes at the
// IdP therefore take effect at the next sign-in or, at the latest, when the entry goes stale.
// Every registration is also an `identity.registered` audit event, so it is in the hash chain.
import type { AuditEvent } from './store.ts';

export interface IdpIdentity {
  /** `iss` and `sub` of the ID token: the entry's key. */
  issuer: string;
  subject: string;
  /** The Airlock identity name the sign-in mapped to (the issuer's usernameClaim). */
  identity: string;
  /** Lower-cased email claim ('' when the IdP released none). */
  email: string;
  /** `email_verified` was exactly true in the ID token. */
  emailVerified: boolean;
  /** The issuer's group claim, as released. */
  groups: string[];
  /** When the IdP asserted these claims (the ID token's iat, never later than when Airlock saw it). */
  verifiedAt: Date;
  /** How the entry was made: 'login' (token exchange) or 'console'. */
  via: string;
}

export interface IdentityRegistry {
  /** Inserts or refreshes the entry for (issuer, subject); an older assertion never overwrites a newer one. */
  recordIdpIdentity(e: IdpIdentity): void;
  /** Entries whose email (case-insensitive) or identity name is the one given, newest first. */
  findIdpIdentities(q: { email: string } | { identity: string }): IdpIdentity[];
}

export interface IdpIdentityRow {
  issuer: string;
  subject: string;
  identity: string;
  email: string;
  email_verified: number | boolean;
  groups: string;
  verified_at: number | string;
  via: string;
}

export function toIdpIdentity(r: IdpIdentityRow): IdpIdentity {
  let groups: unknown;
  try {
    groups = JSON.parse(r.groups);
  } catch {
    groups = [];
  }
  return {
    issuer: r.issuer,
    subject: r.subject,
    identity: r.identity,
    email: r.email,
    emailVerified: r.email_verified === true || r.email_verified === 1,
    groups: Array.isArray(groups) ? groups.filter((g): g is string => typeof g === 'string') : [],
    verifiedAt: new Date(Number(r.verified_at)),
    via: r.via,
  };
}

/** Column values of an entry (both stores write the same). */
export function idpIdentityData(e: IdpIdentity): { issuer: string; subject: string; identity: string; email: string; emailVerified: number; groups: string; verifiedAt: number; via: string } {
  const at = e.verifiedAt instanceof Date && Number.isFinite(e.verifiedAt.getTime()) ? e.verifiedAt.getTime() : 0;
  return {
    issuer: String(e.issuer),
    subject: String(e.subject),
    identity: String(e.identity),
    email: String(e.email ?? '').trim().toLowerCase(),
    emailVerified: e.emailVerified === true ? 1 : 0,
    groups: JSON.stringify((e.groups ?? []).filter((g) => typeof g === 'string')),
    verifiedAt: at,
    via: String(e.via ?? ''),
  };
}

/** The chained audit record of a registration (who may now approve with which groups, and why). */
export function registrationEvent(e: IdpIdentity): AuditEvent {
  return {
    at: new Date(),
    kind: 'identity.registered',
    subject: String(e.identity),
    actor: String(e.identity),
    detail: { issuer: e.issuer, subject: e.subject, email: e.email, emailVerified: e.emailVerified, groups: e.groups, verifiedAt: e.verifiedAt.toISOString(), via: e.via },
  };
}
