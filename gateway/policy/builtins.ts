// Built-in deny rules, enabled by name in `policy.builtins`. They are ordinary rule objects that
// go through the same matcher as configured rules; only `any` / `alterDrops` (see match.ts) are
// beyond what a YAML rule can say today.
import type { BuiltinRuleName, RuleConfig } from '../config/schema.ts';
import type { MatchSpec } from './match.ts';

export type BuiltinRule = RuleConfig & { match: MatchSpec };

// Functions that read, list or write files on the database server, or move them in and out of
// large objects (core, adminpack).
const SERVER_FILE_FUNCTIONS = [
  'pg_read_file',
  'pg_read_binary_file',
  'pg_ls_dir',
  'pg_stat_file',
  'pg_ls_logdir',
  'pg_ls_waldir',
  'pg_ls_tmpdir',
  'pg_ls_archive_statusdir',
  'pg_ls_logicalsnapdir',
  'pg_ls_logicalmapdir',
  'pg_ls_replslotdir',
  'pg_ls_summariesdir',
  'lo_import',
  'lo_export',
  'pg_file_write',
  'pg_file_rename',
  'pg_file_unlink',
  'pg_file_sync',
  'pg_logdir_ls',
  'pg_file_read',
  'pg_file_length',
];

const REMOTE_FUNCTIONS = ['dblink', 'dblink_*', 'postgres_fdw_*'];

const REMOTE_STATEMENTS = [
  'CreateForeignServerStmt',
  'AlterForeignServerStmt',
  'CreateFdwStmt',
  'AlterFdwStmt',
  'CreateUserMappingStmt',
  'AlterUserMappingStmt',
  'ImportForeignSchemaStmt',
  'CreateForeignTableStmt',
  // A subscription opens a replication connection to another server.
  'CreateSubscriptionStmt',
  'AlterSubscriptionStmt',
];

const ROLE_STATEMENTS = [
  'CreateRoleStmt',
  'AlterRoleStmt',
  'AlterRoleSetStmt',
  'DropRoleStmt',
  'GrantStmt',
  'GrantRoleStmt',
  'AlterDefaultPrivilegesStmt',
  'ReassignOwnedStmt',
  'AlterSystemStmt',
];

const rules: Record<BuiltinRuleName, BuiltinRule> = {
  'block-destructive-ddl': {
    name: 'block-destructive-ddl',
    description: 'DROP, TRUNCATE, DROP DATABASE, DROP OWNED and ALTER TABLE ... DROP',
    action: 'deny',
    reason: 'destructive DDL (DROP, TRUNCATE, ALTER ... DROP) is not allowed through Airlock',
    match: {
      protocols: ['postgres'],
      any: [
        { statements: ['DropStmt', 'TruncateStmt', 'DropdbStmt', 'DropOwnedStmt', 'DropTableSpaceStmt', 'DropSubscriptionStmt'] },
        { alterDrops: true },
      ],
    },
  },
  'block-unbounded-writes': {
    name: 'block-unbounded-writes',
    description: 'DELETE or UPDATE without a WHERE clause (also inside CTEs, PREPARE, EXPLAIN ANALYZE, DO)',
    action: 'deny',
    reason: 'DELETE/UPDATE without a WHERE clause that references a column affects every row; add a WHERE clause',
    match: { protocols: ['postgres'], missingWhere: true },
  },
  'block-copy-program': {
    name: 'block-copy-program',
    description: 'COPY to or from a program or a file on the database server',
    action: 'deny',
    reason: 'COPY ... PROGRAM and COPY to/from server files run commands or touch files on the database host; use COPY ... TO STDOUT / FROM STDIN',
    match: { protocols: ['postgres'], copy: ['to-program', 'from-program', 'to-file', 'from-file'] },
  },
  'block-server-file-access': {
    name: 'block-server-file-access',
    description: 'functions that read, list or write files on the database server',
    action: 'deny',
    reason: 'functions that read or write files on the database server (pg_read_file, pg_ls_dir, lo_import, lo_export, ...) are not allowed',
    match: { protocols: ['postgres'], functions: SERVER_FILE_FUNCTIONS },
  },
  'block-remote-connections': {
    name: 'block-remote-connections',
    description: 'dblink, foreign servers, user mappings, subscriptions',
    action: 'deny',
    reason: 'connections from the database to other servers (dblink, postgres_fdw, subscriptions) are not allowed',
    match: {
      protocols: ['postgres'],
      any: [
        { functions: REMOTE_FUNCTIONS },
        { statements: REMOTE_STATEMENTS },
        // Installing the extensions is the first step of every remote-connection trick.
        { statements: ['CreateExtensionStmt'], text: ['\\b(dblink|postgres_fdw)\\b'] },
      ],
    },
  },
  'block-role-changes': {
    name: 'block-role-changes',
    description: 'roles, grants, SET ROLE / SESSION AUTHORIZATION, ALTER SYSTEM',
    action: 'deny',
    reason: 'changing roles, privileges or server settings (CREATE/ALTER/DROP ROLE, GRANT, REVOKE, SET ROLE, ALTER SYSTEM) is not allowed',
    match: {
      protocols: ['postgres'],
      any: [
        { statements: ROLE_STATEMENTS },
        // The classifier makes a top-level SET ROLE / SET SESSION AUTHORIZATION (not RESET)
        // admin; the text check keeps a DO block's `SET search_path` out of this rule.
        { statements: ['VariableSetStmt'], kinds: ['admin'], text: ['\\b(role|authorization)\\b'] },
        // set_config('role', ...) is SET ROLE by another name.
        { functions: ['set_config'], text: ["set_config\\s*\\(\\s*[eu&]*'\\s*(role|session_authorization)"] },
      ],
    },
  },
  'block-agent-shell-language': {
    name: 'block-agent-shell-language',
    description: 'SSH complex command lines (shell syntax, interpreters, wrappers) and interactive shells of agents',
    action: 'deny',
    reason:
      'agents may run only simple commands over SSH (a program and plain arguments, no shell syntax, interpreters or wrappers): a shell language cannot be policed by parsing, so Airlock cannot check what this would run',
    // kinds exec-complex also covers shell (restricting rules, see match.ts).
    match: { protocols: ['ssh'], kinds: ['exec-complex', 'shell'], agents: true },
  },
};

/** Fresh copies, so a caller cannot alter the built-ins for everyone else. */
export function builtinRules(): Record<BuiltinRuleName, BuiltinRule> {
  return structuredClone(rules);
}
