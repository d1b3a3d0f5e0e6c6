// Gateway instance identity and leases, for crash reconciliation on a store several gateways share.
//
// Every gateway process has an instance id (config `gateway.instanceId`; default host-pid-random,
// stable for the process). The stores stamp it on each session they start (`sessions.instance`) and
// keep a row per running instance in `gateway_instances` whose `last_seen` the gateway refreshes
// every lease/3. At startup a gateway claims, under one lock, the instances that are certainly dead:
//  - its own id (a previous incarnation: the process that is starting now replaces it);
//  - a peer whose lease lapsed (last_seen older than the lease bound);
//  - a peer on this same host whose process no longer exists (so a restart after a crash does not
//    wait for the lease; `hostname` identifies the host).
// A claimed instance's row is deleted in the same transaction, so two gateways starting at once
// never both reconcile it; its sessions still open are then ended by the claimer (reconcile.ts).
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

export interface InstanceRow {
  id: string;
  boot: string;
  host: string;
  pid: number;
  started_at: number;
  last_seen: number;
}

/** Who this process is, as stores record it. */
export interface InstanceIdentity {
  id: string;
  /** Random per process: tells this incarnation of an explicitly configured id from an earlier one. */
  boot: string;
  host: string;
  pid: number;
  startedAt: number;
}

/** Default lease: a peer not seen for this long is dead. Renewed every third of it. */
export const DEFAULT_INSTANCE_LEASE_MS = 30_000;

let processIdentity: InstanceIdentity | undefined;

function identityFor(id?: string): InstanceIdentity {
  processIdentity ??= {
    id: `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`,
    boot: randomBytes(8).toString('hex'),
    host: hostname(),
    pid: process.pid,
    startedAt: Date.now(),
  };
  return id ? { ...processIdentity, id } : processIdentity;
}

/** This process' identity: `configured` (gateway.instanceId) or the process default (host-pid-random). */
export function instanceIdentity(configured?: string): InstanceIdentity {
  return identityFor(configured?.trim() || undefined);
}

/** Whether `row` (a peer, not this process) is certainly gone. */
export function peerIsDead(row: InstanceRow, self: InstanceIdentity, leaseMs: number, now = Date.now()): boolean {
  if (row.id === self.id) return row.boot !== self.boot; // an earlier incarnation of this instance id
  if (Number(row.last_seen) < now - leaseMs) return true;
  if (row.host !== self.host) return false;
  const pid = Number(row.pid);
  if (pid === self.pid) return row.boot !== self.boot; // a container restarted: same host name, same pid, new process
  return !processExists(pid);
}

function processExists(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, owned by someone else.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** What a store's claim found: dead instances (rows now removed) and the open sessions they leave. */
export interface OrphanClaim {
  deadInstances: string[];
  sessions: string[];
}
