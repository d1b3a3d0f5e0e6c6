// The protocol-neutral unit the policy engine decides on. Every proxy (PostgreSQL, SSH, HTTP,
// Kubernetes) turns its traffic into Operations; nothing here knows about bytes or chat.

export type Protocol = 'postgres' | 'ssh' | 'http' | 'kubernetes' | 'mcp';

/** Who is acting. Agents carry the human `owner` they act for (self-approval checks use it). */
export interface Identity {
  name: string;
  groups: string[];
  owner?: string;
}

/** Where the client came from and which configured connection it targets. */
export interface ConnectionContext {
  /** Configured connection name (e.g. the `dbname` a psql client asked for). */
  name: string;
  clientAddress: string;
  sessionId: string;
}

/** SQL statement kinds, the PostgreSQL slice of OperationKind. */
export type SqlKind = 'read' | 'write' | 'ddl' | 'admin' | 'transaction' | 'utility';
/**
 * SSH: `exec` is a simple command (plain argv, see gateway/ssh/command-class.ts); `exec-complex` is
 * any other command line (shell syntax, interpreters, wrappers): Airlock cannot know what it runs.
 */
export type OperationKind = SqlKind | 'exec' | 'exec-complex' | 'shell' | 'sftp' | 'forward' | 'http' | 'kubernetes' | 'mcp-tool';

export type CopyDirection = 'to-stdout' | 'from-stdin' | 'to-file' | 'from-file' | 'to-program' | 'from-program';

/** What the SQL classifier learned about one statement. */
export interface SqlFacts {
  /** libpg-query node name, e.g. SelectStmt, DeleteStmt, DropStmt. Nested statements (CTEs) are listed too. */
  statementTypes: string[];
  /** For DELETE/UPDATE (top level or inside CTEs): false if any of them lacks a WHERE clause. */
  hasWhere: boolean;
  /** True when the top-level SELECT has LIMIT/FETCH FIRST. */
  hasLimit: boolean;
  copy?: CopyDirection;
  /** ALTER TABLE ... DROP COLUMN / DROP CONSTRAINT and similar destructive sub-commands. */
  alterDrops: boolean;
  /** Fingerprint of the statement (constants stripped); stable across literal values. */
  fingerprint: string;
  /** Column references (lower-case, as written: `email`, `c.email`) used inside expressions in the
   * SELECT list (`lower(email)`, `email || ''`), for the deny-masked-expressions option. */
  expressionColumns: string[];
  /** Set when the text did not parse; such statements are always denied. */
  parseError?: string;
  /** Run-time settings (GUCs) the statement changes, lower-case: SET/RESET, set_config with a constant
   * name, ALTER SYSTEM / ROLE / DATABASE ... SET, a function's SET clause. `*` = all of them (RESET ALL). */
  settings?: string[];
  /** Relations (`schema.table`) and schemas (`schema.*`) this statement renames or moves to another schema. */
  renamed?: string[];
  /** LOCK statements: the lock mode, e.g. `AccessExclusiveLock`. */
  lockMode?: string;
  /** The statement reads rows through a name Airlock cannot see into (SQL EXECUTE of a prepared statement). */
  opaqueSource?: boolean;
  /** SQL `EXECUTE name`: the prepared statement's name, so the session can apply the decision it
   * recorded for a protocol-level (Parse) statement of that name. */
  executeName?: string;
  /** SQL Airlock found and checked inside this statement (DO and function bodies, query_to_xml('...')),
   * in order, for the audit record: what really runs is listed with the outer statement. Bounded. */
  embedded?: string[];
}

export interface Operation {
  protocol: Protocol;
  identity: Identity;
  connection: ConnectionContext;
  kind: OperationKind;
  /** The statement, command line, or method + path, as the client sent it. */
  text: string;
  /** Schema-qualified, lower-case relation names touched (e.g. `public.customers`). */
  tables: string[];
  /** Function names called, lower-case; schema-qualified when the query qualified them (`pg_catalog.pg_read_file`) and bare otherwise. */
  functions: string[];
  sql?: SqlFacts;
  /** HTTP and Kubernetes requests (both set this). */
  http?: HttpFacts;
  kubernetes?: KubernetesFacts;
}

/** An HTTP request as the policy sees it. `path` is normalized and decoded (what was decided is what is forwarded). */
export interface HttpFacts {
  method: string;
  /** Below the connection prefix, starting with `/`. */
  path: string;
  /** Raw query string without `?` ('' when none). */
  query: string;
  /** The service's selected request headers, lower-case names. */
  headers: Record<string, string>;
  /** The parsed request body (JSON, or YAML), when it parsed and was within the size limit. */
  body?: unknown;
  /** Rule `paths` match case-sensitively (the service's caseSensitivePaths); unset: case-insensitive. */
  caseSensitivePaths?: boolean;
}

/** A Kubernetes API request, classified like the API server's own RequestInfo. */
export interface KubernetesFacts {
  /** get, list, watch, create, update, patch, delete, deletecollection; for non-resource URLs the lower-case method. */
  verb: string;
  /** '' for the core group. */
  apiGroup: string;
  apiVersion: string;
  /** '' for non-resource URLs (/version, /apis, /healthz). */
  resource: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  clusterScoped: boolean;
  /** exec/attach: the command line from the `command` query parameters. */
  command?: string[];
}
