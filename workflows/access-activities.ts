// Activities of access requests (request kind `access`, gateway/elevation/): the worker, from its
// OWN configuration, decides whether an approved request may open a window (role, connection,
// requester, break-glass eligibility, duration cap) and writes the window to the audit store that
// every gateway replica reads. Nothing the requester sent is trusted beyond what it asks for.
import type { AirlockConfig } from '../gateway/config/schema.ts';
import { parseDuration } from '../gateway/config/load.ts';
import type { Store } from '../gateway/recording/store.ts';

export interface AccessDeps {
  store: Store;
  /** The worker's configuration; absent: no window can be opened (fail closed). */
  config?: AirlockConfig;
}

export interface OpenWindow {
  identity: string;
  owner?: string;
  role: string;
  connection: string;
  forMs: number;
  reason: string;
  approvers: string[];
  breakGlass: boolean;
}

export type WindowResult = { ok: true; until: string; forMs: number } | { ok: false; error: string };

function groupsOf(config: AirlockConfig, identity: string): string[] {
  return config.identities.find((i) => i.name === identity)?.groups ?? [];
}

/** Why `identity` may not break glass (by the worker's config), or null. */
export function breakGlassRefusalFor(config: AirlockConfig | undefined, identity: string): string | null {
  const bg = config?.breakGlass;
  if (!bg) return 'break-glass is not configured (breakGlass: in the config)';
  const groups = groupsOf(config, identity);
  if (bg.identities.includes(identity) || groups.some((g) => bg.groups.includes(g))) return null;
  return `${identity} may not break glass (breakGlass.identities / breakGlass.groups)`;
}

/** Why `identity` may not have `role` on `connection` for `forMs` (by the worker's config), or the capped duration. */
export function accessCheck(config: AirlockConfig | undefined, w: Pick<OpenWindow, 'identity' | 'role' | 'connection' | 'forMs' | 'breakGlass'>): { ok: true; forMs: number } | { ok: false; error: string } {
  if (!config) return { ok: false, error: 'this worker has no configuration to check access requests against' };
  const role = config.roles?.[w.role];
  if (!role) return { ok: false, error: `there is no role ${w.role} (roles: in the config)` };
  if (!role.connections.includes(w.connection)) return { ok: false, error: `role ${w.role} does not cover connection ${w.connection} (it covers: ${role.connections.join(', ')})` };
  const groups = groupsOf(config, w.identity);
  const req = role.requesters;
  if ((req.identities.length > 0 || req.groups.length > 0) && !req.identities.includes(w.identity) && !groups.some((g) => req.groups.includes(g))) {
    return { ok: false, error: `${w.identity} may not ask for role ${w.role} (roles.${w.role}.requesters)` };
  }
  if (!(Number.isFinite(w.forMs) && w.forMs > 0)) return { ok: false, error: 'the window must have a positive duration' };
  let max = parseDuration(role.maxDuration);
  if (w.breakGlass) {
    const why = breakGlassRefusalFor(config, w.identity);
    if (why) return { ok: false, error: why };
    max = Math.min(max, parseDuration(config.breakGlass!.maxDuration));
  }
  return { ok: true, forMs: Math.min(w.forMs, max) };
}

export function createAccessActivities(deps: AccessDeps) {
  const audit = (kind: string, subject: string, detail: Record<string, unknown>, actor?: string) => deps.store.recordAudit({ at: new Date(), kind, subject, actor, detail });
  return {
    async breakGlassRefusal(identity: string): Promise<string | null> {
      return breakGlassRefusalFor(deps.config, identity);
    },

    /** Opens the window (idempotent: a retry returns the window already written). */
    async activateElevation(requestId: string, w: OpenWindow): Promise<WindowResult> {
      const existing = deps.store.getElevation(requestId);
      if (existing) return { ok: true, until: existing.until.toISOString(), forMs: existing.until.getTime() - existing.startsAt.getTime() };
      const check = accessCheck(deps.config, w);
      if (!check.ok) {
        audit('elevation.refused', requestId, { identity: w.identity, role: w.role, connection: w.connection, breakGlass: w.breakGlass, error: check.error }, w.identity);
        return check;
      }
      const startsAt = new Date();
      const until = new Date(startsAt.getTime() + check.forMs);
      deps.store.putElevation({ id: requestId, identity: w.identity, ...(w.owner ? { owner: w.owner } : {}), role: w.role, connection: w.connection, reason: w.reason, approvers: w.approvers, breakGlass: w.breakGlass, startsAt, until });
      audit(
        'elevation.started',
        requestId,
        { identity: w.identity, owner: w.owner, role: w.role, connection: w.connection, reason: w.reason, approvers: w.approvers, breakGlass: w.breakGlass, requestedMs: w.forMs, forMs: check.forMs, until: until.toISOString() },
        w.breakGlass ? w.identity : w.approvers[0],
      );
      return { ok: true, until: until.toISOString(), forMs: check.forMs };
    },

    /** Audits the end of the window (expired at its time, or revoked before). */
    async elevationEnded(requestId: string): Promise<{ how: 'expired' | 'revoked'; by?: string; reason?: string } | null> {
      const e = deps.store.getElevation(requestId);
      if (!e) return null;
      const how = e.revokedAt && e.revokedAt < e.until ? 'revoked' : 'expired';
      audit('elevation.ended', requestId, { identity: e.identity, role: e.role, connection: e.connection, breakGlass: e.breakGlass, how, until: e.until.toISOString(), ...(e.revokedAt ? { revokedAt: e.revokedAt.toISOString(), revokedBy: e.revokedBy, revokeReason: e.revokeReason } : {}) });
      return { how, ...(e.revokedBy ? { by: e.revokedBy } : {}), ...(e.revokeReason ? { reason: e.revokeReason } : {}) };
    },
  };
}

export type AccessActivities = ReturnType<typeof createAccessActivities>;
