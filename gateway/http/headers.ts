// Request headers a client must not be able to set on the way upstream, because upstreams commonly
// trust them for who is calling (auth proxies, oauth2-proxy, Kubernetes front proxies, cloud load
// balancers) or for which method runs (method overrides turn a policy-checked GET into a DELETE).
// Airlock is the authenticating proxy here: it strips them unless a service lists one in
// `trustHeaders`. Kubernetes clusters strip them always (plus `Impersonate-*`, which Airlock sets
// itself when `impersonate: true`).

/** Exact names (lower-case). */
const IDENTITY_HEADERS = new Set([
  'x-forwarded-user',
  'x-forwarded-email',
  'x-forwarded-groups',
  'x-forwarded-preferred-username',
  'x-forwarded-access-token',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-forwarded-prefix',
  'x-forwarded-uri',
  'x-forwarded-port',
  'forwarded',
  'x-real-ip',
  'x-client-ip',
  'true-client-ip',
  'x-remote-user',
  'x-remote-group',
  'remote-user',
  'x-user',
  'x-user-id',
  'x-username',
  'x-email',
  'x-webauth-user',
  'x-authenticated-user',
  'x-authenticated-userid',
  'x-authenticated-groups',
  'x-auth-user',
  'x-goog-authenticated-user-email',
  'x-goog-authenticated-user-id',
  'cf-access-authenticated-user-email',
  'cf-access-jwt-assertion',
  'x-http-method-override',
  'x-method-override',
  'x-http-method',
  'x-original-method',
  'x-original-url',
  'x-rewrite-url',
  'x-original-uri',
]);

/** Prefixes (lower-case): families of identity headers. */
const IDENTITY_PREFIXES = ['x-remote-extra-', 'x-auth-request-', 'x-consumer-', 'x-ms-client-principal', 'x-amzn-oidc-', 'impersonate-', 'x-airlock-'];

/** Whether a client-sent header is an identity or method-override header (see above). */
export function isIdentityHeader(name: string): boolean {
  return isIdentityLower(name.toLowerCase());
}

function isIdentityLower(h: string): boolean {
  return IDENTITY_HEADERS.has(h) || IDENTITY_PREFIXES.some((p) => h.startsWith(p));
}

/** Whether the header `lower` (a lower-case name) is withheld from an upstream that trusts `trust`. */
export function identityHeaderWithheld(lower: string, trust: ReadonlySet<string>): boolean {
  if (!isIdentityLower(lower)) return false;
  return !(trust.has(lower) && !lower.startsWith('impersonate-') && !lower.startsWith('x-airlock-'));
}

/** Deletes, in place, every identity/method-override header not in `trust`; returns what was removed. */
export function stripIdentityHeaders(headers: Record<string, unknown>, trust: ReadonlySet<string>): string[] {
  const removed: string[] = [];
  for (const h of Object.keys(headers)) {
    const lower = h.toLowerCase();
    if (!identityHeaderWithheld(lower, trust)) continue;
    delete headers[h];
    removed.push(lower);
  }
  return removed;
}
