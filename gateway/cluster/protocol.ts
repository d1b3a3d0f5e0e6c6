// Messages between the cluster primary and its gateway workers (node:cluster IPC with 'advanced'
// serialization, so Dates and Buffers arrive as such). Every type is prefixed `airlock:` so
// prom-client's own aggregation messages on the same channel never collide with ours.
import os from 'node:os';
import type { Listener } from '../app.ts';
import type { AuditCall } from '../recording/audit-call.ts';
import type { AuditHealth } from '../recording/store.ts';

export type { AuditCall };

export type ToPrimary =
  /** A batch of audit calls; `n` is acknowledged once the primary's store accepted them. */
  | { t: 'airlock:audit'; n: number; calls: AuditCall[] }
  /** A CancelRequest whose key belongs to another worker (never checked here: the owner checks). */
  | { t: 'airlock:cancel'; pid: number; secret: Uint8Array }
  | { t: 'airlock:ready'; listeners: Listener[] };

export type ToWorker =
  | { t: 'airlock:ack'; n: number; health: AuditHealth }
  | { t: 'airlock:health'; health: AuditHealth }
  | { t: 'airlock:cancel'; pid: number; secret: Uint8Array }
  | { t: 'airlock:shutdown'; mode: 'drain' | 'fast' };

export function isAirlockMessage(m: unknown): m is { t: string } {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string' && (m as { t: string }).t.startsWith('airlock:');
}

/** Env variable telling a forked process which worker slot (1..255) it is. */
export const WORKER_INDEX_ENV = 'AIRLOCK_WORKER_INDEX';

/** Highest worker count: the worker index lives in the low 8 bits of cancel keys (postgres/cancel.ts). */
export const MAX_WORKERS = 255;

/** `gateway.workers` / `--workers` as a number of processes. */
export function workerCount(setting: 'auto' | number): number {
  const n = setting === 'auto' ? os.availableParallelism() : setting;
  return Math.max(1, Math.min(MAX_WORKERS, Math.floor(n)));
}

/** Session end reason of the sessions a worker had when it died. */
export const WORKER_CRASH_REASON = 'worker crashed';
