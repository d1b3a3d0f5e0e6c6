// Just-in-time elevation as the gateway applies it. An approved access request (or a break-glass
// self-approval) is an elevation window in the audit store (recording/store.ts ElevationRecord):
// identity X may act as role R on connection C until T. Every gateway replica polls the store;
// while a window is open, X's operations on C are decided by R's policy (config `roles`: the normal
// policy with the role's `lift` rules taken out and its `rules` first, see policy/engine.ts
// ElevatedRole), each decision is tagged with the elevation id, and the client is told.
//
// Fail closed: a window whose role is not configured on this gateway (or does not cover the
// connection) elevates nothing; each use re-reads the window from the store, so a revocation by any
// replica counts from the next operation; any store error means the normal rules.
import type { Logger } from 'pino';
import type { AirlockConfig, RuleConfig } from '../config/schema.ts';
import type { Decision, ElevationTag } from '../policy/decision.ts';
import { PolicyConfigError, PolicyEngine } from '../policy/engine.ts';
import type { Operation } from '../policy/operation.ts';
import type { ElevationRecord, Store } from '../recording/store.ts';

/** The policy as the seam uses it (PolicyEngine satisfies it). */
export interface ElevatedPolicy {
  decideAll(ops: Operation[]): { decision: Decision; operation: Operation };
}

export interface ActiveElevation {
  tag: ElevationTag;
  record: ElevationRecord;
  policy: ElevatedPolicy;
}

/** What the enforcement seam asks, per operation. */
export interface ElevationSource {
  /** The open elevation window of `identity` on `connection` now, or undefined (the normal rules apply). */
  forOperation(identity: string, connection: string): ActiveElevation | undefined;
}

export interface RolePolicy {
  policy: ElevatedPolicy;
  connections: ReadonlySet<string>;
}

/**
 * One policy engine per configured role. Throws PolicyConfigError for a role that does not fit the
 * policy. `http`: the HTTP listener's engine (its Kubernetes rules first, no connection list).
 */
export function rolePolicies(config: AirlockConfig, http?: { rules: RuleConfig[] }): Map<string, RolePolicy> {
  const out = new Map<string, RolePolicy>();
  for (const [role, r] of Object.entries(config.roles ?? {})) {
    // HTTP field masks are compiled from the listener's own rules only: a role may not add any (it would not mask).
    const fields = r.rules.find((x) => (x.mask?.fields.length ?? 0) > 0);
    if (fields) throw new PolicyConfigError(`roles.${role}.rules: ${fields.name} has mask.fields, which roles cannot add (HTTP field masks come from policy.rules only)`);
    const policy = http
      ? new PolicyEngine({ ...config.policy, rules: [...http.rules, ...config.policy.rules] }, config.masking, [], { role, lift: r.lift, rules: r.rules })
      : new PolicyEngine(config.policy, config.masking, config.connections, { role, lift: r.lift, rules: r.rules });
    out.set(role, { policy, connections: new Set(r.connections) });
  }
  return out;
}

/** The HTTP response header during a window. */
export function elevationHeader(t: ElevationTag): string {
  return `${t.id}; role=${t.role}; until=${t.until}${t.breakGlass ? '; break-glass' : ''}`;
}

/** The line a client sees on every operation (and session start) during a window. */
export function elevationNotice(e: ElevationRecord): string {
  const kind = e.breakGlass ? 'BREAK-GLASS access' : 'elevated access';
  const by = e.breakGlass ? 'self-approved; a post-incident review is required' : `approved by ${e.approvers.join(', ') || 'an approver'}`;
  return `Airlock: ${kind} as role ${e.role} on ${e.connection} until ${e.until.toISOString()} (elevation ${e.id}, ${by}); every operation is recorded under it`;
}

/** The per-statement line, from a decision's tag. */
export function elevationTagNotice(t: ElevationTag, connection: string): string {
  return `Airlock: ${t.breakGlass ? 'BREAK-GLASS access' : 'elevated access'} as role ${t.role} on ${connection} until ${t.until} (elevation ${t.id})`;
}

export function elevationTag(e: ElevationRecord): ElevationTag {
  return { id: e.id, role: e.role, until: e.until.toISOString(), breakGlass: e.breakGlass };
}

export class ElevationRegistry implements ElevationSource {
  #byIdentity = new Map<string, ElevationRecord[]>();
  #timer?: NodeJS.Timeout;

  constructor(
    private readonly store: Store,
    private readonly roles: ReadonlyMap<string, RolePolicy>,
    private readonly logger?: Logger,
  ) {}

  /** Re-reads the open windows; on a store error the last snapshot stays (each use re-checks its window anyway). */
  refresh(): void {
    if (this.roles.size === 0) return;
    try {
      const next = new Map<string, ElevationRecord[]>();
      for (const e of this.store.listElevations({ activeAt: new Date() })) {
        const list = next.get(e.identity) ?? [];
        list.push(e);
        next.set(e.identity, list);
      }
      this.#byIdentity = next;
    } catch (err) {
      this.logger?.warn({ err }, 'reading elevation windows failed; keeping the last snapshot');
    }
  }

  startPolling(intervalMs: number): void {
    this.refresh();
    this.#timer ??= setInterval(() => this.refresh(), Math.max(50, intervalMs));
    this.#timer.unref();
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  forOperation(identity: string, connection: string): ActiveElevation | undefined {
    return this.lookup(identity, connection, this.roles);
  }

  /** The same windows decided by other role policies (the HTTP listener's engine). */
  withPolicies(roles: ReadonlyMap<string, RolePolicy>): ElevationSource {
    return { forOperation: (identity, connection) => this.lookup(identity, connection, roles) };
  }

  private lookup(identity: string, connection: string, roles: ReadonlyMap<string, RolePolicy>): ActiveElevation | undefined {
    const list = this.#byIdentity.get(identity);
    if (!list) return undefined;
    const now = Date.now();
    for (const e of list) {
      if (e.connection !== connection || now < e.startsAt.getTime() || now >= e.until.getTime() || e.revokedAt) continue;
      const role = roles.get(e.role);
      if (!role || !role.connections.has(connection)) continue;
      let fresh: ElevationRecord | undefined;
      try {
        fresh = this.store.getElevation(e.id);
      } catch (err) {
        this.logger?.warn({ err, elevation: e.id }, 'could not re-read an elevation window; the normal rules apply');
        return undefined;
      }
      if (!fresh || fresh.revokedAt || now >= fresh.until.getTime() || fresh.identity !== identity || fresh.connection !== connection || fresh.role !== e.role) {
        e.revokedAt = fresh?.revokedAt ?? new Date(now); // gone from this snapshot until the next refresh
        continue;
      }
      return { tag: elevationTag(fresh), record: fresh, policy: role.policy };
    }
    return undefined;
  }
}
