// The airlock.yaml schema. Secrets are never inline: they are `{ env: NAME }` or `{ file: path }`
// references, resolved at load time (see load.ts).
import { z } from 'zod';
import { authBlock } from './auth-schema.ts';
import { approversBlock, consoleOidcBlock } from './idp-schema.ts';

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
    /**
     * Start even if the upstream role is a superuser or may run programs / read or write server
     * files (pg_execute_server_program, pg_read_server_files, pg_write_server_files). Off by default:
     * with such a role any policy gap becomes command execution on the database host.
     */
    allowSuperuser: z.boolean().default(false),
    /**
     * Defence in depth for read-only agents: only reads (and transaction/session statements) are
     * allowed, nothing may lift read-only mode, and the gateway refuses to start unless the upstream
     * role already defaults to read-only transactions (ALTER ROLE ... SET default_transaction_read_only = on).
     */
    readOnly: z.boolean().default(false),
    /**
     * Upstream pooling (gateway/postgres/pool.ts; README "Upstream pooling"). Absent: one upstream
     * backend per client session. `transaction`: a backend per transaction, returned (and reset with
     * DISCARD ALL) at ReadyForQuery idle; sessions that create session state are pinned.
     * `session`: a backend per client session, reset and reused after it ends.
     */
    pool: z
      .object({
        mode: z.enum(['session', 'transaction']).default('transaction'),
        /** Most upstream backends of this connection, across its pools (upstream roles, startup settings). */
        size: z.number().int().min(1).max(10_000).default(10),
        /** An idle backend is closed after this long. */
        idleTimeout: duration.default('5m'),
        /** A client waits at most this long for a free backend; then its session ends with an error naming pool.queueTimeout. */
        queueTimeout: duration.default('60s'),
      })
      .strict()
      .optional(),
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
    protocols: z.array(z.enum(['postgres', 'ssh', 'http', 'kubernetes', 'mcp'])).optional(),
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
    /** Run-time settings the statement changes (SET, RESET, set_config, ALTER ... SET), globs: `log_*`. */
    settings: z.array(z.string().min(1)).optional(),
    // HTTP and Kubernetes (see gateway/http/README.md). Operations of other protocols never match these.
    /** HTTP methods, upper-case (`GET`, `DELETE`). */
    methods: z.array(z.string().min(1)).optional(),
    /** Globs (`*` spans `/`) on the normalized, decoded path below the connection prefix: `/admin/*`. */
    paths: z.array(z.string().min(1)).optional(),
    /** Kubernetes verbs: get, list, watch, create, update, patch, delete, deletecollection. */
    verbs: z.array(z.string().min(1)).optional(),
    /** Kubernetes resources: `secrets`, or `apps/deployments` to pin the API group (core group: `/pods` or `pods`). */
    resources: z.array(z.string().min(1)).optional(),
    /** Kubernetes subresources: exec, attach, portforward, log, status, scale ... */
    subresources: z.array(z.string().min(1)).optional(),
    /** Kubernetes namespaces (globs). */
    namespaces: z.array(z.string().min(1)).optional(),
    /** Kubernetes object names (globs). */
    names: z.array(z.string().min(1)).optional(),
    /** Kubernetes: the resource is cluster-scoped (nodes, namespaces, clusterroles ...). */
    clusterScoped: z.boolean().optional(),
  })
  .strict();
export type RuleMatch = z.infer<typeof matchSchema>;

const limits = z
  .object({
    maxRowsPerStatement: z.number().int().positive().optional(),
    maxBytesPerSession: z.number().int().positive().optional(),
    /** Longest a matching statement may run upstream (e.g. 30s); the gateway cancels it after that. */
    maxStatementTime: duration.optional(),
  })
  .strict();

const review = z
  .object({
    approvers: z.array(z.string()).min(1),
    quorum: z.number().int().positive().default(1),
    timeout: duration.default('15m'),
    /** Slack channel for this rule's requests, instead of `slack.channel` (Teams and the local channel use their own). */
    channel: z.string().optional(),
    escalation: z
      .array(
        z
          .object({ after: duration, mention: z.array(z.string()).min(1), channel: z.string().optional() })
          .strict(),
      )
      .default([]),
    grantTtl: duration.default('10m'),
    /**
     * Hold a statement that arrives inside an open transaction (its locks stay held for the whole
     * approval). Default false: such a statement is refused with an explanation.
     */
    holdInTransaction: z.boolean().optional(),
    /**
     * PostgreSQL: what approvers see of a held write's effect. explain: the planner's estimate
     * (separate connection, nothing runs); dry-run: run and roll back on a separate connection
     * (falls back to explain for effects a rollback cannot undo); hold-commit: run on the
     * agent's connection and hold the COMMIT. Default none.
     */
    preview: z.enum(['none', 'explain', 'dry-run', 'hold-commit']).optional(),
    /** hold-commit: longest the held transaction's locks may be kept (then rejected and rolled back). */
    maxLockHold: duration.optional(),
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
        /** HTTP/Kubernetes JSON response field paths (`data.*`, `items.email`); see gateway/http/json-mask.ts. */
        fields: z.array(z.object({ path: z.string().min(1), strategy, encoding: z.enum(['base64']).optional() }).strict()).default([]),
      })
      .strict()
      .optional(),
    limits: limits.optional(),
    review: review.optional(),
    /** SSH: record keystrokes (asciicast "i" events) of terminal sessions this rule allows. */
    recordInput: z.boolean().optional(),
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
  'block-agent-shell-language',
] as const;
export type BuiltinRuleName = (typeof builtinRuleNames)[number];

const httpUpstreamAuth = z.discriminatedUnion('type', [
  z.object({ type: z.literal('none') }).strict(),
  z.object({ type: z.literal('bearer'), token: secretRef }).strict(),
  z.object({ type: z.literal('basic'), username: z.string(), password: secretRef }).strict(),
  z.object({ type: z.literal('header'), name: z.string().regex(/^[A-Za-z0-9-]+$/, 'an HTTP header name'), value: secretRef }).strict(),
]);

const connectionAllow = z
  .object({ identities: z.array(z.string()).default([]), groups: z.array(z.string()).default([]) })
  .strict()
  .default({ identities: [], groups: [] });

const connectionName = z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . -');

/** An HTTP service behind the gateway, reached at /<name>/... */
const httpService = z
  .object({
    name: connectionName,
    /** Upstream base URL; the request path below /<name> is appended to its path. */
    url: z.string().url(),
    auth: httpUpstreamAuth.default({ type: 'none' }),
    /** PEM CA file that must have signed the upstream's certificate (pinned; system CAs are not used). */
    ca: z.string().optional(),
    /** Request headers (lower-case) exposed to rules and recordings; others are forwarded but not recorded. */
    headers: z.array(z.string()).default(['content-type', 'accept', 'user-agent']),
    allow: connectionAllow,
    /** Match rule `paths` case-sensitively. Off by default: many servers route `/Admin` like `/admin`. */
    caseSensitivePaths: z.boolean().default(false),
    /**
     * Identity and method-override headers this upstream may receive from clients (lower-case),
     * e.g. `x-forwarded-user`. By default all of them are stripped (see gateway/http/headers.ts).
     */
    trustHeaders: z.array(z.string().regex(/^[A-Za-z0-9-]+$/, 'an HTTP header name')).default([]),
  })
  .strict();

/** A Kubernetes API server reached with Airlock's own credentials, at /<name>/... */
const kubernetesCluster = z
  .object({
    name: connectionName,
    server: z.string().url(),
    /** PEM CA file of the API server (pinned). */
    ca: z.string(),
    auth: z.union([
      z.object({ token: secretRef }).strict(),
      z.object({ clientCert: z.string().describe('PEM file'), clientKey: secretRef }).strict(),
    ]),
    /** Send Impersonate-User/Impersonate-Group so the cluster's RBAC also applies to the identity. */
    impersonate: z.boolean().default(false),
    allow: connectionAllow,
  })
  .strict();

export const kubernetesRuleNames = [
  'k8s-deny-secret-reads',
  'k8s-mask-secret-data',
  'k8s-review-exec',
  'k8s-review-protected-deletes',
  'k8s-review-cluster-writes',
] as const;

const httpBlock = z
  .object({
    listen: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8443),
        tls: z.object({ cert: z.string(), key: z.string() }).strict().optional(),
        /** URL clients use to reach this listener (for kubeconfigs); defaults to http(s)://host:port. */
        publicUrl: z.string().url().optional(),
        /** PgBouncer's max_client_conn: connections beyond it are answered 503 with Retry-After and closed. */
        maxClientConnections: z.number().int().min(1).default(1000),
        /** Time a client has to send the request line and headers (slowloris); then 408 and closed. */
        clientLoginTimeout: duration.default('60s'),
        /** Time a client has to send a whole request, body included; then 408 and closed. */
        requestTimeout: duration.default('5m'),
        /** Largest websocket message either side may send (1009 closes the connection beyond it). */
        maxMessageBytes: z.number().int().min(1024).max(1 << 30).default(16_777_216),
        /** Bytes a websocket may have queued towards a slow peer before Airlock stops reading the other side. */
        maxBufferedBytes: z.number().int().min(16_384).default(4_194_304),
      })
      .strict()
      .default({ host: '127.0.0.1', port: 8443, maxClientConnections: 1000, clientLoginTimeout: '60s', requestTimeout: '5m', maxMessageBytes: 16_777_216, maxBufferedBytes: 4_194_304 }),
    /** Request bodies up to this size are buffered and JSON bodies shown to rules; larger ones are refused (413). */
    maxBodyBytes: z.number().int().positive().default(1_048_576),
    /** Responses that must be masked are buffered up to this size; larger ones fail closed (502). */
    maxMaskedResponseBytes: z.number().int().positive().default(16_777_216),
    /** How long a held request stays open waiting for approval before the client gets 503 + Retry-After. */
    maxHold: duration.default('55s'),
    /** Directory for terminal recordings (asciicast v2) of kubectl exec/attach, relative to the config. */
    recordings: z.string().default('.airlock/recordings'),
    services: z.array(httpService).default([]),
    clusters: z.array(kubernetesCluster).default([]),
    /** Built-in Kubernetes rules to turn on (placed before policy.rules). */
    kubernetesRules: z
      .object({
        enable: z.array(z.enum(kubernetesRuleNames)).default([]),
        protectedNamespaces: z.array(z.string()).default(['kube-system']),
        approvers: z.array(z.string()).default([]),
        timeout: duration.default('15m'),
      })
      .strict()
      .default({ enable: [], protectedNamespaces: ['kube-system'], approvers: [], timeout: '15m' }),
  })
  .strict()
  .superRefine((h, ctx) => {
    const seen = new Set<string>();
    for (const [i, c] of [...h.services.map((s) => ['services', s] as const), ...h.clusters.map((c) => ['clusters', c] as const)].entries()) {
      const [list, conn] = c;
      if (seen.has(conn.name)) ctx.addIssue({ code: 'custom', path: [list], message: `duplicate connection name ${conn.name} (services and clusters share the /<name> prefix space) at entry ${i}` });
      seen.add(conn.name);
    }
    const reviews = h.kubernetesRules.enable.filter((n) => n.startsWith('k8s-review-'));
    if (reviews.length > 0 && h.kubernetesRules.approvers.length === 0) {
      ctx.addIssue({ code: 'custom', path: ['kubernetesRules', 'approvers'], message: `review rules (${reviews.join(', ')}) need at least one approver group` });
    }
  });

// SSH gateway (gateway/ssh). Users pick the target by SSH user name: `<identity>+<target>` or
// `<target>` with the Airlock token as password, or `<target>` with a key from `publicKeys`.
const sshTarget = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . -'),
    host: z.string(),
    port: z.number().int().min(1).max(65535).default(22),
    user: z.string(),
    /** PEM/OpenSSH private key Airlock logs in with; the client never sees it. */
    privateKey: secretRef.optional(),
    password: secretRef.optional(),
    /** Strict upstream host-key checking: the host must present one of these (`ssh-keygen -lf`). */
    hostKeyFingerprints: z.array(z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}=?$/, 'an OpenSSH SHA256 fingerprint, e.g. SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s')).min(1),
    allow: z
      .object({ identities: z.array(z.string()).default([]), groups: z.array(z.string()).default([]) })
      .strict()
      .default({ identities: [], groups: [] }),
    /** Record keystrokes ("i" events) of every terminal session on this target. */
    recordInput: z.boolean().default(false),
    /**
     * Environment variables a client may set (`SetEnv`, `SendEnv`): names, `*` globs (`LC_*`).
     * Every other `env` request is refused: a variable such as BASH_ENV, LD_PRELOAD or PROMPT_COMMAND
     * runs code the audited command line does not show. Default: none, not even LANG/LC_*.
     */
    allowEnv: z.array(z.string().regex(/^[A-Za-z_*][A-Za-z0-9_*]*$/, 'a variable name or a * glob')).default([]),
  })
  .strict()
  .superRefine((t, ctx) => {
    if (!t.privateKey && !t.password) ctx.addIssue({ code: 'custom', path: ['privateKey'], message: 'an ssh target needs privateKey or password for the upstream login' });
  });

/** Airlock as an MCP server and gateway (gateway/mcp/README.md). */
const mcpBlock = z
  .object({
    /** The Streamable HTTP endpoint (`/mcp`) and its protected-resource metadata. */
    listen: z.object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535).default(8766) }).strict().default({ host: '127.0.0.1', port: 8766 }),
    /** The URL clients use for the endpoint (protected-resource metadata `resource`); default from listen. */
    resource: z.string().url().optional(),
    /** Authorization servers advertised in the protected-resource metadata (OIDC issuer, once it lands). */
    authorizationServers: z.array(z.string().url()).default([]),
    /** Longest a held tool call keeps its client waiting before it answers `pending` (then `airlock_wait`). */
    maxHold: duration.default('50s'),
    /** Upstream MCP servers proxied as `<name>__<tool>`; tools/call is an Operation (protocol mcp, kind mcp-tool). */
    upstreams: z
      .array(
        z
          .object({
            // Tools are exposed as `<name>__<tool>`: a name with `__` would make that ambiguous.
            name: z.string().regex(/^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$/, 'letters, digits, - and single _'),
            url: z.string().url(),
            /** Sent upstream as `Authorization: Bearer ...` (Airlock keeps the credential). */
            token: secretRef.optional(),
          })
          .strict(),
      )
      .default([]),
  })
  .strict();
export type McpConfig = z.infer<typeof mcpBlock>;

const sshBlock = z
  .object({
    listen: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(2222),
        /** PgBouncer's max_client_conn: connections beyond it get an SSH disconnect saying so. */
        maxClientConnections: z.number().int().min(1).default(1000),
        /** Time a client has to finish the handshake and authenticate (default: ssh.loginTimeout, 60s). */
        clientLoginTimeout: duration.optional(),
        /** Largest SFTP packet a client may send (OpenSSH's sftp-server takes 256 KiB); larger closes the channel. */
        maxMessageBytes: z.number().int().min(34_000).max(1 << 30).default(262_144),
        /** Channels (sessions and forwards) open at once on one connection (OpenSSH MaxSessions). */
        maxChannelsPerConnection: z.number().int().min(1).default(10),
        /** Bytes one channel may have queued for a recording or a masker before its data is paused. */
        maxBufferedBytes: z.number().int().min(65_536).default(4_194_304),
      })
      .strict()
      .default({ host: '127.0.0.1', port: 2222, maxClientConnections: 1000, maxMessageBytes: 262_144, maxChannelsPerConnection: 10, maxBufferedBytes: 4_194_304 }),
    /** The gateway's own host key (PEM/OpenSSH private key); its fingerprint is logged at start. */
    hostKey: secretRef,
    targets: z.array(sshTarget).default([]),
    /** Public keys that log in as a configured identity (`ssh-ed25519 AAAA... comment`). */
    publicKeys: z.array(z.object({ identity: z.string(), key: z.string() }).strict()).default([]),
    /** Time a client has to finish the handshake and authenticate (listen.clientLoginTimeout wins). */
    loginTimeout: duration.default('60s'),
    /** Directory for asciicast recordings; default `recordings/` next to the SQLite store. */
    recordings: z.string().optional(),
  })
  .strict();
export type SshConfig = z.infer<typeof sshBlock>;
export type SshTargetConfig = z.infer<typeof sshTarget>;

/**
 * A role an identity may be elevated to for a time (`airlock request --role`, gateway/elevation/).
 * During an approved window, on the role's connections only, the identity's operations are decided
 * by the normal policy with the role's `lift` rules taken out and the role's `rules` put first.
 */
const roleSchema = z
  .object({
    /** Connections an elevation to this role may be asked for; elsewhere it changes nothing. */
    connections: z.array(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . -')).min(1),
    /** deny/review rules (policy.rules, profile or built-in names) that do not apply during the window. */
    lift: z.array(z.string().min(1)).default([]),
    /** Rules that apply during the window only, before every other rule (e.g. allow writes under default: deny). */
    rules: z.array(rule).default([]),
    /** Who may ask for it; empty: any authenticated identity (it still needs approval). */
    requesters: z
      .object({ identities: z.array(z.string()).default([]), groups: z.array(z.string()).default([]) })
      .strict()
      .default({ identities: [], groups: [] }),
    /** Groups whose members approve requests for this role (and are told of break-glass use). */
    approvers: z.array(z.string()).min(1),
    quorum: z.number().int().positive().default(1),
    /** How long a request waits for a decision. */
    timeout: duration.default('15m'),
    /** Longest window an approval grants. */
    maxDuration: duration.default('1h'),
  })
  .strict();
export type RoleConfig = z.infer<typeof roleSchema>;

/** An Ed25519 key of one decision source (see workflows/decision-proof.ts). */
const decisionKey = z
  .object({
    /** PKCS#8 PEM private key, where this source signs (its chat app, the operator's CLI). */
    privateKey: secretRef.optional(),
    /** SPKI PEM public key file the worker verifies with; derived from privateKey when absent. */
    publicKey: z.string().min(1).optional(),
  })
  .strict()
  .refine((k) => k.privateKey !== undefined || k.publicKey !== undefined, { message: 'a decision key needs privateKey (signer) and/or publicKey (worker)' });

export const configSchema = z
  .object({
    listen: z
      .object({
        postgres: z
          .object({
            host: z.string().default('127.0.0.1'),
            port: z.number().int().min(0).max(65535).default(6432),
            tls: tlsServer.optional(),
            /** Largest message a client may send after authentication (default 16 MiB); a larger declared length ends the session (08P01) before it is buffered. Startup packets are capped at 10,000 bytes. */
            maxMessageBytes: z.number().int().min(8192).max(1 << 30).optional(),
            /** PgBouncer's max_client_conn: connections (authenticating or in session) beyond it are refused with 53300. */
            maxClientConnections: z.number().int().min(1).default(1000),
            /** PgBouncer's client_login_timeout: time a client has to finish startup and authentication. */
            clientLoginTimeout: duration.default('60s'),
            /** Responses a session may have outstanding; beyond it the client is not read until they drain (no Sync in flight: ended with 54000). */
            maxPipelinedMessages: z.number().int().min(16).default(10_000),
          })
          .strict()
          .optional(),
        /** Health, readiness and Prometheus metrics (/healthz, /readyz, /metrics); off unless given. */
        admin: z.object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535).default(9187) }).strict().optional(),
      })
      .strict()
      .default({}),
    /** Signals: SIGTERM drains for up to drainTimeout (running statements finish), SIGINT does not wait for them. */
    shutdown: z.object({ drainTimeout: duration.default('30s'), auditFlushTimeout: duration.default('5s') }).strict().default({ drainTimeout: '30s', auditFlushTimeout: '5s' }),
    /** This gateway process among several sharing one audit store and one Temporal (README "Operating Airlock"). */
    gateway: z
      .object({
        /** Stamped on every session it records; default host-pid-random (one per process). Set it to a
         * stable name (pod name) so a restarted instance reconciles what it left open at once. */
        instanceId: z.string().trim().min(1).max(200).optional(),
        /** A peer not seen for this long is dead: its open sessions are ended at the next gateway start. Renewed every third. */
        instanceLease: duration.default('30s'),
        /** A held operation's approval request learns its gateway is gone within this long (renewed every third): then it ends `abandoned`. */
        waiterLease: duration.default('30s'),
        /** Gateway processes (README "Operating Airlock" → workers): `auto` forks one worker per CPU
         * (os.availableParallelism()) sharing the listeners, with the primary as the one audit writer;
         * 1 runs everything in one process. `airlock gateway --workers N` overrides it. */
        workers: z.union([z.literal('auto'), z.number().int().min(1).max(255)]).default('auto'),
      })
      .strict()
      .default({ instanceLease: '30s', waiterLease: '30s', workers: 'auto' }),
    auth: authBlock(secretRef, duration),
    /** Where chat approvers' identities and groups come from (idp-schema.ts). */
    approvers: approversBlock(duration).default({ source: 'config', maxAge: '12h' }),
    /** The audit store: one SQLite file (default), or PostgreSQL (`postgres:`), which several gateways
     * share. With `postgres`, `sqlite` only locates the local files placed next to it (the local
     * approval channel, SSH recordings). */
    store: z
      .object({
        sqlite: z.string().default('.airlock/airlock.db'),
        postgres: z
          .object({
            host: z.string().min(1),
            port: z.number().int().min(1).max(65535).default(5432),
            database: z.string().min(1),
            user: z.string().min(1),
            password: secretRef.optional(),
            /** true: TLS verified against the system CAs; or a CA bundle file (and whether to verify). */
            tls: z.union([z.boolean(), z.object({ ca: z.string().min(1).optional(), rejectUnauthorized: z.boolean().default(true) }).strict()]).default(false),
          })
          .strict()
          .optional(),
      })
      .strict()
      .default({ sqlite: '.airlock/airlock.db' }),
    /** Audit durability, retention and tamper evidence (gateway/recording; README "Audit durability and verification"). */
    audit: z
      .object({
        /** closed: refuse new sessions and operations while records cannot be persisted; open: serve and log. */
        onFailure: z.enum(['closed', 'open']).default('closed'),
        /** Records waiting to be written beyond which the trail is unhealthy. */
        maxPending: z.number().int().positive().default(10_000),
        /** Age of the oldest unwritten record beyond which the trail is unhealthy. */
        maxPendingMs: duration.default('5s'),
        /** Default cutoff of `airlock audit prune` (records older than this go); unset keeps everything. */
        retention: duration.optional(),
        /** Ed25519 private key (PEM, or a base64/hex 32-byte seed) that signs chain checkpoints. */
        signingKey: secretRef.optional(),
        /** Sign the chain head after this many new entries ... */
        checkpointEvery: z.number().int().positive().default(1000),
        /** ... or this long after the last checkpoint when there are new entries. */
        checkpointInterval: duration.default('1m'),
        /** Copy every checkpoint (a JSON line) outside the store. */
        anchor: z.object({ file: z.string().min(1) }).strict().optional(),
        /** HMAC key of parameter digests (recording/redact.ts parameterDigest); default: masking.hashKey. */
        digestKey: secretRef.optional(),
        /** Stream the audit journal to SIEMs (recording/sinks.ts); positions survive restarts, a failing sink only lags. */
        sinks: z
          .array(
            z.discriminatedUnion('type', [
              z.object({ type: z.literal('stdout'), name: z.string().optional(), format: z.enum(['jsonl', 'ocsf']).optional() }).strict(),
              z.object({ type: z.literal('file'), name: z.string().optional(), format: z.enum(['jsonl', 'ocsf']).optional(), path: z.string().min(1), maxBytes: z.number().int().positive().optional(), keep: z.number().int().min(1).max(100).optional() }).strict(),
              z.object({ type: z.literal('webhook'), name: z.string().optional(), format: z.enum(['jsonl', 'ocsf']).optional(), url: z.string().url(), headers: z.record(z.string(), z.string()).optional(), timeoutMs: z.number().int().positive().optional() }).strict(),
              z.object({ type: z.literal('syslog'), name: z.string().optional(), format: z.enum(['jsonl', 'ocsf']).optional(), host: z.string().optional(), port: z.number().int().min(1).max(65535).optional() }).strict(),
            ]),
          )
          .optional(),
      })
      .strict()
      .default({ onFailure: 'closed', maxPending: 10_000, maxPendingMs: '5s', checkpointEvery: 1000, checkpointInterval: '1m' }),
    /** Read-only auditor console (gateway/console): `airlock console`, and `airlock gateway` when enabled. */
    console: z
      .object({
        enabled: z.boolean().default(false),
        listen: z.object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535).default(7480) }).strict().default({ host: '127.0.0.1', port: 7480 }),
        /** An Airlock token must carry one of these groups to read the console. */
        groups: z.array(z.string().min(1)).min(1).default(['auditors']),
        /** Auditors sign in at the IdP (authorization code + PKCE); the token login stays for the offline demo. */
        auth: z.object({ oidc: consoleOidcBlock(secretRef, duration).optional() }).strict().optional(),
      })
      .strict()
      .optional(),
    /** OpenTelemetry traces (gateway/observability/tracing.ts; README "Traces"). Off unless enabled. */
    observability: z
      .object({
        tracing: z
          .object({
            enabled: z.boolean().default(false),
            /** OTLP/HTTP traces URL, e.g. http://otel-collector:4318/v1/traces (JSON encoding). */
            endpoint: z.string().url().default('http://127.0.0.1:4318/v1/traces'),
            serviceName: z.string().min(1).default('airlock-gateway'),
            /** Share of root traces sampled (a client's traceparent's sampled flag decides for its traces). */
            sampleRatio: z.number().min(0).max(1).default(1),
            /** Extra request headers (an API key): secret references, resolved at startup. */
            headers: z.record(z.string().regex(/^[A-Za-z0-9-]+$/), secretRef).optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .optional(),
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
        /**
         * `recommended`: every built-in rule plus the safe-default rules (gateway/policy/builtins.ts),
         * and masked columns may only be read as plain output columns. A rule in `rules` with the
         * same name as a profile rule replaces it.
         */
        profile: z.enum(['none', 'recommended']).default('none'),
        builtins: z.array(z.enum(builtinRuleNames)).default([]),
        rules: z.array(rule).default([]),
      })
      .strict()
      .default({ default: 'allow', profile: 'none', builtins: [], rules: [] }),
    http: httpBlock.optional(),
    ssh: sshBlock.optional(),
    mcp: mcpBlock.optional(),
    temporal: z
      .object({
        address: z.string().default('127.0.0.1:7233'),
        namespace: z.string().default('default'),
        taskQueue: z.string().default('airlock-approvals'),
        tls: z.object({ ca: z.string().optional(), cert: z.string().optional(), key: z.string().optional() }).strict().optional(),
        /** Temporal Cloud / an API-key-protected frontend: sent as a bearer token on every call. */
        apiKey: secretRef.optional(),
        /** TLS server name to verify, when it differs from the address host. */
        serverName: z.string().optional(),
      })
      .strict()
      .optional(),
    /** Roles for just-in-time elevation (`airlock request`); see gateway/elevation/. */
    roles: z.record(z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, _ . -'), roleSchema).default({}),
    /** Who may self-approve an elevation in an emergency (`airlock request --break-glass`). */
    breakGlass: z
      .object({
        identities: z.array(z.string()).default([]),
        groups: z.array(z.string()).default([]),
        /** Longest break-glass window (shorter than any role's normal maximum, usually). */
        maxDuration: duration.default('15m'),
        /** Until someone records the post-incident review, the approver groups are reminded this often. */
        reviewEscalation: duration.default('4h'),
        /** Also mentioned at the start and at every reminder (Slack user-group ids, names). */
        mention: z.array(z.string()).default([]),
      })
      .strict()
      .optional(),
    /** Proof of origin for approval decisions: a decision counts only when signed by its source's key. */
    decisions: z
      .object({
        keys: z.object({ slack: decisionKey.optional(), teams: decisionKey.optional(), cli: decisionKey.optional() }).strict().default({}),
        /** Signed decisions older than this are refused (replay window). */
        maxAge: duration.default('5m'),
        /** How long the CLI and chat apps wait for the worker to apply a decision; after it the decision never counts. */
        deadline: duration.optional(),
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
        /** Escalation mention name (an approver group) -> Slack ids to ping: user-group ids (S…) or user ids (U…). */
        mentions: z.record(z.string(), z.array(z.string().regex(/^[SUW][A-Z0-9]{6,}$/, 'a Slack user-group id (S…) or user id (U…)')).min(1)).default({}),
      })
      .strict()
      .optional(),
    teams: z
      .object({
        /** Microsoft App ID of the bot registration; incoming activities must carry a token for it. */
        appId: z.string(),
        /** Client secret of the app registration (outgoing calls); this or `certificate` whenever appId is set. */
        appPassword: secretRef.optional(),
        /** Certificate credential instead of a secret: PEM certificate file and its private key. */
        certificate: z.object({ cert: z.string().min(1), key: secretRef }).strict().optional(),
        tenantId: z.string().optional(),
        appType: z.enum(['MultiTenant', 'SingleTenant']).default('MultiTenant'),
        /** Bot Connector base URL for proactive posts when no installation reference supplies one. */
        serviceUrl: z.string().url().default('https://smba.trafficmanager.net/teams/'),
        /** Team channel conversation id (19:…@thread.tacv2) for requests; else the channel the bot was installed in. */
        channelId: z.string().optional(),
        escalationChannelId: z.string().optional(),
        /** Link target for session logs: `${sessionUrlBase}/${sessionId}`; else the CLI command is shown. */
        sessionUrlBase: z.string().optional(),
        /** Where installation conversation references are kept (JSON), relative to the config file. */
        referenceStore: z.string().default('.airlock/teams-conversations.json'),
        listen: z.object({ host: z.string().default('127.0.0.1'), port: z.number().int().min(0).max(65535).default(3978) }).strict().default({ host: '127.0.0.1', port: 3978 }),
        /** AAD object id or user principal name -> Airlock identity; otherwise mapped by email/UPN (TeamsInfo.getMember). */
        users: z.record(z.string(), z.string()).default({}),
        /** Bot Framework endpoints; defaults are the public Azure cloud. Overridden for sovereign clouds (and tests). */
        botFramework: z
          .object({
            openIdMetadataUrl: z.string().url().optional(),
            tokenIssuer: z.string().optional(),
            /** Authority for the bot's own tokens, e.g. https://login.microsoftonline.com/<tenant>. */
            loginUrl: z.string().url().optional(),
            oauthScope: z.string().optional(),
          })
          .strict()
          .default({}),
        /** Accept unauthenticated activities (appId ''): local experiments only, loopback listener enforced. */
        insecureSkipAuth: z.boolean().default(false),
      })
      .strict()
      .superRefine((t, ctx) => {
        if (!t.appId && !t.insecureSkipAuth) ctx.addIssue({ code: 'custom', path: ['appId'], message: 'an app id is required (or set insecureSkipAuth: true for a local, unauthenticated bot)' });
        if (t.appId && !t.appPassword && !t.certificate) ctx.addIssue({ code: 'custom', path: ['appPassword'], message: 'the bot needs its app password (or a certificate) to call the Bot Connector' });
        if (t.appPassword && t.certificate) ctx.addIssue({ code: 'custom', path: ['certificate'], message: 'configure either appPassword or certificate, not both' });
        if (t.appType === 'SingleTenant' && !t.tenantId) ctx.addIssue({ code: 'custom', path: ['tenantId'], message: 'a SingleTenant bot needs tenantId' });
      })
      .optional(),
  })
  .strict();

export type AirlockConfigInput = z.input<typeof configSchema>;
export type AirlockConfig = z.infer<typeof configSchema>;
export type PostgresConnectionConfig = z.infer<typeof postgresConnection>;
export type HttpConfig = z.infer<typeof httpBlock>;
export type HttpServiceConfig = z.infer<typeof httpService>;
export type KubernetesClusterConfig = z.infer<typeof kubernetesCluster>;
export type KubernetesRuleName = (typeof kubernetesRuleNames)[number];
