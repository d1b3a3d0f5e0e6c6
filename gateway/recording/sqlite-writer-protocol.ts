// Messages between the SQLite audit store's writer thread (sqlite-writer-thread.ts) and the gateway
// thread that hands it records (sqlite-writer.ts).
import type { AuditCall } from './audit-call.ts';
import type { Checkpoint } from './chain.ts';
import type { PruneResult, SqliteStoreOptions, StoreStats } from './sqlite-store.ts';
import type { VerifyReport } from './verify.ts';
import type { AuditHealth } from './store.ts';

export interface WriterInit {
  path: string;
  /** The store options, minus the signing key (a KeyObject does not cross threads as workerData). */
  options: Omit<SqliteStoreOptions, 'signingKey' | 'readonly'>;
  /** PKCS#8 PEM of the Ed25519 checkpoint key: the writer signs checkpoints as it appends. */
  signingKeyPem?: string;
  /** Int32[1], incremented and notified after every message the writer posts on `port`. */
  signal: SharedArrayBuffer;
  port: unknown;
}

export type ToWriter =
  /** Batch `n` of calls, in order; acknowledged (`ack` with upTo >= n) once committed or queued for retry. */
  | { t: 'write'; n: number; calls: AuditCall[] }
  /** Commit what was received now and acknowledge it (a reader is waiting). */
  | { t: 'flush' }
  | { t: 'call'; id: number; op: 'checkpoint' | 'close' }
  /** Retention (SqliteStore.prune) by the writer, which appends the prune entry and signs the base. */
  | { t: 'call'; id: number; op: 'prune'; before: number; publicKeyPem?: string; from?: number; anchored?: Checkpoint[] };

export type FromWriter =
  | { t: 'ready' }
  | { t: 'open-failed'; error: string }
  /** Every batch up to `upTo` was applied and its commit attempted; the writer's store health after it. */
  | { t: 'ack'; upTo: number; health: AuditHealth; stats: StoreStats }
  /** The health changed without new batches (a retry succeeded or failed). */
  | { t: 'health'; health: AuditHealth; stats: StoreStats }
  | { t: 'reply'; id: number; ok: true; value: Checkpoint | PruneResult | null; stats: StoreStats }
  /** `report`: the failed verification when prune refused (PruneRefusedError). */
  | { t: 'reply'; id: number; ok: false; error: string; report?: VerifyReport };
