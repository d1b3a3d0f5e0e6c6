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
        // Decided on the parse tree: SET ROLE / SET SESSION AUTHORIZATION anywhere in the statement
        // (DO bodies, function SET clauses) and set_config('role', ...) however the constant is
        // spelled ($$role$$, E'\x72ole', 'ROLE'); a computed name never reaches here (refused).
        // A top-level RESET ROLE (kind utility) only returns to the login role.
        { settings: ['role', 'session_authorization'], kinds: ['admin', 'write', 'read', 'ddl'] },
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

// ---------------------------------------------------------------------------------------------
// The `recommended` profile (policy.profile: recommended): every built-in above plus these, all
// deny. Each can be replaced by a policy.rules entry of the same name (e.g. to review instead).

const SERVER_CODE_STATEMENTS = [
  'CreateFunctionStmt', 'AlterFunctionStmt', 'CreateTrigStmt', 'CreateEventTrigStmt', 'AlterEventTrigStmt',
  'RuleStmt', 'CreatePLangStmt', 'CreateTransformStmt', 'CreateCastStmt', 'DefineStmt', 'CreateConversionStmt',
  'CreateAmStmt', 'CreateOpClassStmt', 'CreateOpFamilyStmt', 'AlterOperatorStmt',
];

const BACKEND_CONTROL_FUNCTIONS = [
  'pg_reload_conf', 'pg_terminate_backend', 'pg_cancel_backend', 'pg_signal_backend', 'pg_rotate_logfile',
  'pg_promote', 'pg_log_backend_memory_contexts', 'pg_switch_wal', 'pg_create_restore_point',
  'pg_backup_start', 'pg_backup_stop', 'pg_start_backup', 'pg_stop_backup', 'pg_create_physical_replication_slot',
  'pg_create_logical_replication_slot', 'pg_drop_replication_slot', 'pg_replication_origin_*', 'pg_stat_reset*',
  'pg_wal_replay_pause', 'pg_wal_replay_resume',
];

const DANGEROUS_SETTINGS = [
  'session_replication_role', // disables triggers and rules, including audit and integrity triggers
  'log_*', 'debug_*', 'trace_*', // hides what ran from the server's own log
  'local_preload_libraries', 'session_preload_libraries', 'dynamic_library_path', 'jit_provider',
  'default_transaction_read_only', 'transaction_read_only', // a read-only connection stays read-only
];

const profileRules: BuiltinRule[] = [
  {
    name: 'recommended-no-dynamic-code',
    description: 'DO blocks (any language) and the dynamic SQL inside them',
    action: 'deny',
    reason: 'DO blocks run code (and dynamic SQL) that Airlock cannot check statement by statement; send the statements themselves',
    match: { protocols: ['postgres'], statements: ['DoStmt', 'PLpgSQL_stmt_dynexecute', 'PLpgSQL_stmt_dynfors'] },
  },
  {
    name: 'recommended-no-server-side-code',
    description: 'CREATE FUNCTION/PROCEDURE, triggers, event triggers, rules, languages, casts, operators, aggregates',
    action: 'deny',
    reason: 'creating code that runs later or on other sessions (functions, procedures, triggers, event triggers, rules, operators) is not allowed through Airlock',
    match: { protocols: ['postgres'], statements: SERVER_CODE_STATEMENTS },
  },
  {
    name: 'recommended-no-extensions',
    description: 'CREATE/ALTER EXTENSION and LOAD',
    action: 'deny',
    reason: 'installing extensions or loading shared libraries runs native code on the database server',
    match: { protocols: ['postgres'], statements: ['CreateExtensionStmt', 'AlterExtensionStmt', 'AlterExtensionContentsStmt', 'LoadStmt'] },
  },
  {
    name: 'recommended-no-server-settings',
    description: 'ALTER SYSTEM, ALTER DATABASE, ALTER ROLE/DATABASE ... SET',
    action: 'deny',
    reason: 'changing server, database or role settings affects every later session, not just this one',
    match: { protocols: ['postgres'], statements: ['AlterSystemStmt', 'AlterDatabaseStmt', 'AlterDatabaseSetStmt', 'AlterRoleSetStmt'] },
  },
  {
    name: 'recommended-no-dangerous-settings',
    description: 'session_replication_role, log_*/debug_*/trace_*, preload libraries, read-only settings',
    action: 'deny',
    reason: 'this setting disables triggers, hides statements from the server log, loads libraries or lifts read-only mode',
    match: { protocols: ['postgres'], settings: DANGEROUS_SETTINGS },
  },
  {
    name: 'recommended-no-backend-control',
    description: 'pg_reload_conf, terminating or cancelling other backends, WAL/backup/replication-slot control',
    action: 'deny',
    reason: 'reloading the configuration, signalling other sessions or controlling WAL and replication is an operator task',
    match: { protocols: ['postgres'], functions: BACKEND_CONTROL_FUNCTIONS },
  },
  {
    name: 'recommended-no-create-database',
    description: 'CREATE DATABASE',
    action: 'deny',
    reason: 'creating databases is an operator task',
    match: { protocols: ['postgres'], statements: ['CreatedbStmt'] },
  },
  {
    name: 'recommended-no-exclusive-locks',
    description: 'LOCK ... ACCESS EXCLUSIVE / EXCLUSIVE (also LOCK without a mode)',
    action: 'deny',
    reason: 'an exclusive table lock blocks every other session (ACCESS EXCLUSIVE even readers) until the transaction ends',
    match: { protocols: ['postgres'], lockModes: ['AccessExclusiveLock', 'ExclusiveLock'] },
  },
];

/** The recommended profile: every built-in, then the safe-default rules; fresh copies. */
export function recommendedProfileRules(): BuiltinRule[] {
  return structuredClone([...Object.values(rules), ...profileRules]);
}

/** Fresh copies, so a caller cannot alter the built-ins for everyone else. */
export function builtinRules(): Record<BuiltinRuleName, BuiltinRule> {
  return structuredClone(rules);
}
