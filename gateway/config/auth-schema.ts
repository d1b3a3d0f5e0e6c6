// The `auth:` block of airlock.yaml: token signing keys, token exchange (RFC 8693) issuers and agent
// mappings, the human OIDC login, revocation. A function of the shared secretRef/duration schemas so
// schema.ts stays the single entry point without an import cycle.
import { z } from 'zod';

export function authBlock<S extends z.ZodTypeAny>(secretRef: S, duration: z.ZodString) {
  const audience = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);
  const exchangeIssuer = z
    .object({
      /** Name agents' mappings refer to. */
      name: z.string().min(1),
      /** Exact `iss` of subject tokens. */
      issuer: z.string().min(1),
      /** Where the issuer's keys are: a JWKS URL (fetched and cached) ... */
      jwksUrl: z.string().url().optional(),
      /** ... or a JWKS JSON file (relative to the config file), e.g. a cluster's /openid/v1/jwks. */
      jwksFile: z.string().min(1).optional(),
      /** Accepted `aud` value(s) of subject tokens: the audience the platform mints them for Airlock with. */
      audience,
      algorithms: z.array(z.enum(['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'])).default(['RS256', 'ES256', 'EdDSA']),
      /** once: each subject token (by jti, which is then required) is exchanged at most once. */
      replay: z.enum(['once', 'allow']).default('once'),
      /** agent: subjects must match auth.exchange.agents; human: the identity is a claim, groups the group claim. */
      kind: z.enum(['agent', 'human']).default('agent'),
      /** human issuers: claim naming the identity (default email) and the claim listing groups. */
      usernameClaim: z.string().default('email'),
      groupsClaim: z.string().default('groups'),
      /** Allowed clock skew on exp/nbf/iat. */
      clockTolerance: duration.default('30s'),
    })
    .strict()
    .refine((i) => !!i.jwksUrl !== !!i.jwksFile, { message: 'set exactly one of jwksUrl or jwksFile' });
  const claimValue = z.union([z.string(), z.array(z.string()).min(1)]);
  const exchangeAgent = z
    .object({
      /** Airlock identity the subject becomes (groups default to identities[] of that name). */
      identity: z.string().min(1),
      /** Human accountable for the agent; required. */
      owner: z.string().min(1),
      /** Name of an auth.exchange.issuers entry. */
      issuer: z.string().min(1),
      /** Exact `sub` of the subject token (e.g. system:serviceaccount:ns:name, repo:org/repo:ref:refs/heads/main). */
      subject: z.string().min(1),
      /** Further claims that must match exactly (a list: any of). E.g. { repository: org/repo, ref: refs/heads/main }. */
      claims: z.record(z.string(), claimValue).default({}),
      groups: z.array(z.string()).optional(),
    })
    .strict();
  return z
    .object({
      issuer: z.string().default('airlock'),
      audience: z.string().default('airlock'),
      /** Shared secret: signs/verifies HS256 tokens when no auth.keys are configured (offline demo, local use) and derives the masking/binding keys. */
      signingKey: secretRef.optional(),
      /** With auth.keys configured, HS256 tokens (auth.signingKey) are refused unless this is true. */
      allowHs256: z.boolean().default(false),
      /** Asymmetric signing keys (Ed25519 or P-256 PEM). All verify; the active one signs. Served at /.well-known/jwks.json. */
      keys: z
        .array(
          z
            .object({
              id: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . -'),
              alg: z.enum(['ES256', 'EdDSA']).optional(),
              privateKey: secretRef.optional(),
              publicKey: secretRef.optional(),
            })
            .strict()
            .refine((k) => !!k.privateKey || !!k.publicKey, { message: 'a key needs a privateKey or a publicKey' }),
        )
        .default([]),
      /** Key id that signs new tokens (default: the first key with a private key). */
      activeKey: z.string().optional(),
      defaultTtl: duration.default('10m'),
      maxTtl: duration.default('1h'),
      /** OAuth 2.0 Token Exchange at POST /oauth/token on the HTTP listener. */
      exchange: z
        .object({
          /** Lifetime of an exchanged Airlock token. */
          ttl: duration.default('5m'),
          issuers: z.array(exchangeIssuer).default([]),
          agents: z.array(exchangeAgent).default([]),
        })
        .strict()
        .optional(),
      /** `airlock login` defaults: the identity provider humans sign in with (also listed in exchange.issuers, kind human). */
      login: z
        .object({
          issuer: z.string().url(),
          clientId: z.string().min(1),
          /** Airlock's token endpoint (http(s)://airlock-host:port/oauth/token). */
          airlockUrl: z.string().url(),
          scopes: z.string().default('openid email profile groups offline_access'),
        })
        .strict()
        .optional(),
      /** Revocations and exchanged subject-token ids (SQLite, relative to the config file), shared by replicas. */
      stateFile: z.string().default('.airlock/auth.db'),
      /** How often every replica re-reads the revocation table; revocations take effect within this. */
      revocationPoll: duration.default('2s'),
    })
    .strict()
    .superRefine((a, ctx) => {
      if (!a.signingKey && a.keys.length === 0) ctx.addIssue({ code: 'custom', path: ['keys'], message: 'configure auth.keys (asymmetric) or auth.signingKey (HS256, local use)' });
      const ids = new Set((a.exchange?.issuers ?? []).map((i) => i.name));
      for (const [n, ag] of (a.exchange?.agents ?? []).entries()) {
        if (!ids.has(ag.issuer)) ctx.addIssue({ code: 'custom', path: ['exchange', 'agents', n, 'issuer'], message: `no auth.exchange.issuers entry named ${ag.issuer}` });
      }
    });
}
