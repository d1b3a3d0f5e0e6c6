// The upstream login is Airlock's blast radius. If it is a superuser (or may run programs or
// read/write server files), any gap in the policy -- a function it misjudges, a new PostgreSQL
// feature -- becomes command execution on the database host. So the gateway checks each
// PostgreSQL connection's role at start and refuses to run with a dangerous one unless the
// connection says `allowSuperuser: true`.
import type pg from 'pg';
import { connectSide } from './side-connection.ts';
import { ConfigError, type LoadedConfig } from '../config/load.ts';
import type { PostgresConnectionConfig } from '../config/schema.ts';

/** Predefined roles whose members reach the server's shell or file system. */
export const DANGEROUS_ROLES = ['pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files'] as const;

export interface UpstreamRole {
  role: string;
  superuser: boolean;
  /** Superuser roles this role can SET ROLE to (membership; superuser status itself is not inherited). */
  superuserMemberships: string[];
  /** Members (directly or not) of DANGEROUS_ROLES. */
  dangerousMemberships: string[];
  /** CREATEROLE before PostgreSQL 16 can grant itself any non-superuser role, including DANGEROUS_ROLES. */
  createRoleGrantsAny: boolean;
  /** default_transaction_read_only as this login sees it (role and database defaults applied). */
  readOnlyDefault: boolean;
}

interface Queryable {
  query(sql: string): Promise<{ rows: unknown[] }>;
}

const ROLE_SQL = `SELECT current_user::text AS role, r.rolsuper AS superuser,
  (r.rolcreaterole AND current_setting('server_version_num')::int < 160000) AS create_role_grants_any,
  current_setting('default_transaction_read_only') = 'on' AS read_only_default,
  ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_roles g
         WHERE g.rolname = ANY ($1) AND pg_catalog.pg_has_role(current_user, g.oid, 'MEMBER') ORDER BY 1) AS dangerous,
  ARRAY(SELECT s.rolname::text FROM pg_catalog.pg_roles s
         WHERE s.rolsuper AND s.rolname <> current_user AND pg_catalog.pg_has_role(current_user, s.oid, 'MEMBER') ORDER BY 1) AS supers
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user`;

export async function inspectUpstreamRole(client: Queryable & { query(sql: string, params: unknown[]): Promise<{ rows: unknown[] }> }): Promise<UpstreamRole> {
  const { rows } = await client.query(ROLE_SQL, [[...DANGEROUS_ROLES]]);
  const r = rows[0] as { role: string; superuser: boolean; create_role_grants_any: boolean; read_only_default: boolean; dangerous: string[]; supers: string[] } | undefined;
  if (!r) throw new Error('the upstream role is not in pg_roles');
  return {
    role: r.role,
    superuser: r.superuser,
    superuserMemberships: r.supers,
    dangerousMemberships: r.dangerous,
    createRoleGrantsAny: r.create_role_grants_any,
    readOnlyDefault: r.read_only_default,
  };
}

/** What makes the role dangerous, one phrase each; [] for a least-privilege role. */
export function upstreamRoleProblems(r: UpstreamRole): string[] {
  // A superuser is a member of every role; saying so once is enough.
  if (r.superuser) return ['is a superuser'];
  const out: string[] = [];
  if (r.superuserMemberships.length > 0) out.push(`can SET ROLE to the superuser role(s) ${r.superuserMemberships.join(', ')}`);
  if (r.dangerousMemberships.length > 0) out.push(`is a member of ${r.dangerousMemberships.join(', ')}`);
  if (r.createRoleGrantsAny) out.push('has CREATEROLE on PostgreSQL before 16, so it can grant itself pg_execute_server_program');
  return out;
}

export function upstreamRoleMessage(connection: string, r: UpstreamRole, problems: string[]): string {
  return (
    `connection ${connection}: the upstream role ${r.role} ${problems.join('; ')}. ` +
    'Airlock refuses to start with it: with such a login, any statement that slips past the policy can run programs on the ' +
    'database host (COPY ... TO PROGRAM) or read and write its files. Connect as a dedicated role with only the grants ' +
    `your agents need (see README, "Upstream role"), or set allowSuperuser: true on connection ${connection} to accept that risk explicitly.`
  );
}

export interface CheckOptions {
  /** How to open a connection as the configured upstream user. */
  connect?: (c: PostgresConnectionConfig) => Promise<pg.Client>;
  /** Retry window for an upstream that is still starting (docker-compose); default 30s. */
  waitMs?: number;
  warn?: (message: string) => void;
}

function defaultConnect(loaded: LoadedConfig): (c: PostgresConnectionConfig) => Promise<pg.Client> {
  return (c) => connectSide(loaded, c, 'airlock-role-check');
}

const TRANSIENT = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EAI_AGAIN', '57P03']);

async function inspectWithRetry(c: PostgresConnectionConfig, connect: (c: PostgresConnectionConfig) => Promise<pg.Client>, waitMs: number): Promise<UpstreamRole> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    let client: pg.Client | undefined;
    try {
      client = await connect(c);
      return await inspectUpstreamRole(client);
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      if (!TRANSIENT.has(code) || Date.now() >= deadline) {
        throw new ConfigError(`connection ${c.name}: cannot check the upstream role (${(err as Error).message}); Airlock does not start without knowing it is not a superuser`);
      }
      await new Promise((r) => setTimeout(r, 1000));
    } finally {
      await client?.end().catch(() => undefined);
    }
  }
}

/**
 * Checks every PostgreSQL connection's upstream role. Throws a ConfigError naming the connection
 * and why when one is dangerous and not explicitly allowed; warns when it is allowed.
 */
export async function checkUpstreamRoles(loaded: LoadedConfig, opts: CheckOptions = {}): Promise<Map<string, UpstreamRole>> {
  const connect = opts.connect ?? defaultConnect(loaded);
  const out = new Map<string, UpstreamRole>();
  for (const c of loaded.config.connections) {
    const role = await inspectWithRetry(c, connect, opts.waitMs ?? 30_000);
    out.set(c.name, role);
    if (c.readOnly && !role.readOnlyDefault) {
      throw new ConfigError(
        `connection ${c.name} is readOnly, but its upstream role ${role.role} does not default to read-only transactions; ` +
          `run ALTER ROLE ${role.role} SET default_transaction_read_only = on (Airlock refuses any change to it on this connection)`,
      );
    }
    const problems = upstreamRoleProblems(role);
    if (problems.length === 0) continue;
    if (!c.allowSuperuser) throw new ConfigError(upstreamRoleMessage(c.name, role, problems));
    opts.warn?.(`connection ${c.name}: the upstream role ${role.role} ${problems.join('; ')}; allowed by allowSuperuser: true`);
  }
  return out;
}
