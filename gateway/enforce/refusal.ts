// Why an operation did not run, in protocol-neutral words. The enforcement seam produces these;
// each proxy renders them in its own protocol (PostgreSQL SQLSTATE, HTTP status + JSON, SSH exit
// status + stderr). The kinds are distinct on purpose: a client (or an agent's retry logic) must be
// able to tell "policy says no" from "a person said no", "nobody answered in time" and "Airlock
// could not ask" without parsing messages. docs/threat-model.md lists the mapping.

export type RefusalKind =
  /** A deny rule (or a fail-closed policy error). Retrying the same operation will not help. */
  | 'denied'
  /** An approver rejected the request. */
  | 'rejected'
  /** Nobody decided before the deadline. */
  | 'expired'
  /** The request was cancelled (by the client, an operator, or because it covered another session). */
  | 'cancelled'
  /** The approval service could not be reached or did not post the request: failed closed. */
  | 'unavailable'
  /** Holding it would keep an open transaction's locks for the whole approval. */
  | 'in-transaction'
  /** The token the session logged in with has expired. */
  | 'token-expired'
  /** The audit trail cannot record it: no record, no access. */
  | 'audit-unavailable'
  /** The identity or the token was revoked (`airlock revoke`). */
  | 'revoked';

export interface Refusal {
  kind: RefusalKind;
  /** The rule that caused it, when one did. */
  rule?: string;
  /** One line for the client, already prefixed with what happened. */
  message: string;
  /** What the client can do about it. */
  hint?: string;
  /** The approval request, for refusals after a hold. */
  requestId?: string;
}

/** PostgreSQL SQLSTATE of each refusal kind (documented in docs/threat-model.md). */
export const POSTGRES_SQLSTATE: Record<RefusalKind, string> = {
  denied: '42501',
  rejected: 'AL001',
  expired: 'AL002',
  unavailable: 'AL003',
  'in-transaction': 'AL004',
  cancelled: 'AL005',
  'token-expired': '57P01',
  'audit-unavailable': '53100',
  revoked: '57P01',
};

/** HTTP status of each refusal kind; the JSON body's `error` field is the kind. */
export const HTTP_STATUS: Record<RefusalKind, number> = {
  denied: 403,
  rejected: 403,
  expired: 403,
  unavailable: 503,
  'in-transaction': 409,
  cancelled: 409,
  'token-expired': 401,
  'audit-unavailable': 503,
  revoked: 401,
};

/** SSH exit status of a refused exec (126: "cannot execute", the shell's own convention, plus detail). */
export const SSH_EXIT_STATUS: Record<RefusalKind, number> = {
  denied: 126,
  rejected: 125,
  expired: 124,
  unavailable: 123,
  'in-transaction': 122,
  cancelled: 130,
  'token-expired': 126,
  'audit-unavailable': 122,
  revoked: 126,
};

/**
 * MCP: a refusal is a tool error (`isError: true`) whose structured content carries the kind as
 * `error` and whether sending the same call again can help (a new request is made after expiry or
 * an outage; a policy denial or a person's rejection stays).
 */
export const MCP_RETRYABLE: Record<RefusalKind, boolean> = {
  denied: false,
  rejected: false,
  expired: true,
  unavailable: true,
  'in-transaction': false,
  cancelled: true,
  'token-expired': false,
  'audit-unavailable': true,
  revoked: false,
};
