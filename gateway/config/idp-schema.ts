// Config blocks for identities that come from the company's identity provider: `approvers:` (where
// chat approvers' identities and groups come from) and `console.auth.oidc` (auditors' sign-in to
// the console). Functions of the shared secretRef/duration schemas, like auth-schema.ts.
import { z } from 'zod';

export function approversBlock(duration: z.ZodString) {
  return z
    .object({
      /**
       * config: chat users map to `identities` (slack.users / teams.users / identities[].email) and
       * groups come from YAML (the offline demo). oidc: the chat account's verified email must
       * match an identity the IdP vouched for at sign-in (the identity registry), and the groups
       * are that sign-in's group claim.
       */
      source: z.enum(['config', 'oidc']).default('config'),
      /** oidc: a registry entry older than this no longer counts (the approver signs in again). */
      maxAge: duration.default('12h'),
    })
    .strict();
}

export function consoleOidcBlock<S extends z.ZodTypeAny>(secretRef: S, duration: z.ZodString) {
  return z
    .object({
      /** The IdP's issuer URL (discovery at /.well-known/openid-configuration); https unless loopback. */
      issuer: z.string().url(),
      clientId: z.string().min(1),
      /** Confidential clients; public clients rely on PKCE alone. */
      clientSecret: secretRef.optional(),
      /** The console's public callback URL, registered at the IdP (https://console.example/callback). */
      redirectUrl: z.string().url(),
      /** A user must carry this value in the group claim to read the console. */
      group: z.string().min(1),
      /** The claim listing groups or roles. */
      groupsClaim: z.string().default('groups'),
      scopes: z.string().default('openid email profile groups'),
      /** Signs and encrypts the session cookie (AES-256-GCM, key derived with HKDF); 32+ characters. */
      cookieKey: secretRef,
      /** Lifetime of a console session (no sliding renewal). */
      sessionTtl: duration.default('30m'),
    })
    .strict();
}
