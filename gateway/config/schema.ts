// The airlock.yaml schema. Secrets are never inline: they are `{ env: NAME }` or `{ file: path }`
// references, resolved at load time (see load.ts).
import { z } from 'zod';

const duration = z
  .string()
  .regex(/^\d+(ms|s|m|h|d)$/, 'a duration such as 500ms, 30s, 10m, 2h or 1d');

export const secretRef = z.union([
  z.object({ env: z.string().min(1) }).strict(),
  z.object({ file: z.string().min(1) }).strict(),
]);
export type SecretRef = z.infer<typeof secretRef>;

const tlsServer = z
  .object({
    cert: z.string().describe('PEM certificate file'),
    key: z.string().describe('PEM private key file'),
    /** Refuse clients that do not negotiate TLS. */
    required: z.boolean().default(false),
  })
  .strict();

const strategy = z.enum(['redact', 'partial', 'hash', 'null']);
const detector = z.enum(['email', 'card', 'ssn', 'phone', 'iban', 'secret']);

const postgresConnection = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . -'),
    type: z.literal('postgres'),
    host: z.string(),
    port: z.number().int().min(1).max(65535).default(5432),
    database: z.string(),
    user: z.string(),
    password: secretRef.optional(),
    tls: z.enum(['disable', 'prefer', 'require']).default('prefer'),
    /** Who may use this connection at all; empty means everyone with a valid token. */
    allow: z
      .object({
        identities: z.array(z.string()).default([]),
        groups: z.array(z.string()).default([]),
      })
      .strict()
      .default({ identities: [], groups: [] }),
  })
  .strict();

const matchSchema = z
  .object({
    identities: z.array(z.string()).optional(),
    groups: z.array(z.string()).optional(),
    connections: z.array(z.string()).optional(),
    protocols: z.array(z.enum(['postgres', 'ssh', 'http', 'kubernetes'])).optional(),
    kinds: z.array(z.string()).optional(),
    /** Schema-qualified table names; `*` wildcards allowed (`public.*`). Bare names match schema `public`. */
    tables: z.array(z.string()).optional(),
    functions: z.array(z.string()).optional(),
    /** libpg-query statement node names, e.g. DropStmt, TruncateStmt. */
    statements: z.array(z.string()).optional(),
    /** Regular expressions tested against the statement text (case-insensitive). */
    text: z.array(z.string()).optional(),
    /** DELETE/UPDATE lacking WHERE (true) or having one (false). */
    missingWhere: z.boolean().optional(),
    copy: z.array(z.enum(['to-stdout', 'from-stdin', 'to-file', 'from-file', 'to-program', 'from-program'])).optional(),
  })
  .strict();
export type RuleMatch = z.infer<typeof matchSchema>;

const limits = z
  .object({
    maxRowsPerStatement: z.number().int().positive().optional(),
    maxBytesPerSession: z.number().int().positive().optional(),
  })
  .strict();

const review = z
  .object({
    approvers: z.array(z.string()).min(1),
    quorum: z.number().int().positive().default(1),
    timeout: duration.default('15m'),
    channel: z.string().optional(),
    escalation: z
      .array(
        z
          .object({ after: duration, mention: z.array(z.string()).min(1), channel: z.string().optional() })
          .strict(),
      )
      .default([]),
    grantTtl: duration.default('10m'),
  })
  .strict();

const rule = z
  .object({
    name: z.string().min(1),
    description: z.string().optional(),
    match: matchSchema.default({}),
    /** Exceptions: the rule does not apply when this matches. */
    unless: matchSchema.optional(),
    action: z.enum(['allow', 'deny', 'mask', 'review']),
    reason: z.string().optional(),
    mask: z
      .object({
        columns: z.array(z.object({ column: z.string(), strategy }).strict()).default([]),
        detectors: z.array(z.object({ detector, strategy }).strict()).default([]),
      })
      .strict()
      .optional(),
    limits: limits.optional(),
    review: review.optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.action === 'review' && !r.review) ctx.addIssue({ code: 'custom', path: ['review'], message: 'a review rule needs a review block (approvers, quorum, timeout)' });
    if (r.action === 'mask' && !r.mask) ctx.addIssue({ code: 'custom', path: ['mask'], message: 'a mask rule needs a mask block (columns and/or detectors)' });
  });
export type RuleConfig = z.infer<typeof rule>;

export const builtinRuleNames = [
  'block-destructive-ddl',
  'block-unbounded-writes',
  'block-copy-program',
  'block-server-file-access',
  'block-remote-connections',
  'block-role-changes',
] as const;
export type BuiltinRuleName = (typeof builtinRuleNames)[number];

export const configSchema = z
  .object({
    listen: z
      .object({
        postgres: z
          .object({
            host: z.string().default('127.0.0.1'),
            port: z.number().int().min(0).max(65535).default(6432),
            tls: tlsServer.optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .default({}),
    auth: z
      .object({
        issuer: z.string().default('airlock'),
        audience: z.string().default('airlock'),
        /** HMAC secret (HS256) used to sign and verify tokens. */
        signingKey: secretRef,
        defaultTtl: duration.default('10m'),
        maxTtl: duration.default('1h'),
      })
      .strict(),
    store: z
      .object({ sqlite: z.string().default('.airlock/airlock.db') })
      .strict()
      .default({ sqlite: '.airlock/airlock.db' }),
    identities: z
      .array(z.object({ name: z.string(), groups: z.array(z.string()).default([]), owner: z.string().optional(), email: z.string().optional() }).strict())
      .default([]),
    connections: z.array(postgresConnection).default([]),
    masking: z
      .object({
        /** Key for the deterministic `hash` strategy (HMAC-SHA256), so hashes cannot be precomputed. */
        hashKey: secretRef.optional(),
        columns: z.array(z.object({ column: z.string(), strategy }).strict()).default([]),
        detectors: z.array(z.object({ detector, strategy }).strict()).default([]),
        /** Deny a query that reads a masked column inside an expression (lower(email), email || ''). */
        denyMaskedExpressions: z.boolean().default(false),
      })
      .strict()
      .default({ columns: [], detectors: [], denyMaskedExpressions: false }),
    policy: z
      .object({
        /** What happens when no rule matches. */
        default: z.enum(['allow', 'deny']).default('allow'),
        builtins: z.array(z.enum(builtinRuleNames)).default([]),
        rules: z.array(rule).default([]),
      })
      .strict()
      .default({ default: 'allow', builtins: [], rules: [] }),
    temporal: z
      .object({
        address: z.string().default('127.0.0.1:7233'),
        namespace: z.string().default('default'),
        taskQueue: z.string().default('airlock-approvals'),
        tls: z.object({ ca: z.string().optional(), cert: z.string().optional(), key: z.string().optional() }).strict().optional(),
      })
      .strict()
      .optional(),
    slack: z
      .object({
        botToken: secretRef,
        signingSecret: secretRef,
        channel: z.string(),
        escalationChannel: z.string().optional(),
        apiUrl: z.string().optional(),
        listen: z.object({ host: z.string().default('127.0.0.1'), port: z.number().int().default(3000) }).strict().default({ host: '127.0.0.1', port: 3000 }),
        /** Slack user id -> Airlock identity; otherwise mapped by email through users.info. */
        users: z.record(z.string(), z.string()).default({}),
      })
      .strict()
      .optional(),
  })
  .strict();

export type AirlockConfigInput = z.input<typeof configSchema>;
export type AirlockConfig = z.infer<typeof configSchema>;
export type PostgresConnectionConfig = z.infer<typeof postgresConnection>;
