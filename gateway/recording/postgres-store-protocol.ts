// Messages between the PostgreSQL audit store (main thread) and its I/O thread.
import type { ClientConfig } from 'pg';

export interface WorkerInit {
  connection: Pick<ClientConfig, 'host' | 'port' | 'database' | 'user' | 'password' | 'ssl'>;
  connectTimeoutMs: number;
  /** How long a read waits for queued writes to commit first (read-your-writes within a bound). */
  readWaitMs: number;
  checkpointEvery: number;
  checkpointIntervalMs: number;
  anchorFile?: string;
  /** PKCS#8 PEM of the Ed25519 checkpoint key. */
  signingKeyPem?: string;
  /** Int32[1]: set to 1 and notified when a synchronous reply is posted on replyPort. */
  signal: SharedArrayBuffer;
  replyPort: unknown;
}

export type WriteKind = 'start' | 'end' | 'operation' | 'audit';

export interface WriteItem {
  id: number;
  what: string;
  kind: WriteKind;
  data: Record<string, unknown>;
}

export type SyncOp = 'open' | 'schemaVersion' | 'listSessions' | 'getSession' | 'listAudit' | 'findSessionIds' | 'dump' | 'prune' | 'checkpoint' | 'close' | 'putElevation' | 'revokeElevation' | 'getElevation' | 'listElevations';

export interface SyncRequest {
  call: number;
  op: SyncOp;
  args: unknown[];
}

export type SyncReply = { call: number; ok: true; value: unknown } | { call: number; ok: false; error: string; code?: string };

export type ToWorker = { t: 'write'; items: WriteItem[] } | { t: 'drop'; ids: number[] } | { t: 'sync'; req: SyncRequest };

export type ToMain =
  | { t: 'settled'; ids: number[]; dropped: number[] }
  | { t: 'failure'; error: string; transient: boolean; permanent?: boolean }
  | { t: 'log'; level: 'warn' | 'error'; msg: string; detail: Record<string, unknown> };
