// Revocations and exchanged subject-token ids, in a small SQLite file every replica on the host (or
// a shared volume) reads: `airlock revoke` writes, gateways poll (auth.revocationPoll) and consult an
// in-memory snapshot on the hot path, so a revocation takes effect within one poll everywhere.
// Token-exchange replay protection (`jti` seen once) is an atomic INSERT, so two replicas cannot
// both accept the same subject token.
import Database from 'better-sqlite3';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export type RevocationKind = 'identity' | 'token';

export interface Revocation {
  kind: RevocationKind;
  /** Identity name or token id (jti). */
  value: string;
  reason: string;
  by: string;
  at: Date;
}

export class AuthStateStore {
  readonly #db: Database.Database;
  #identities = new Map<string, Revocation>();
  #tokens = new Map<string, Revocation>();
  #timer?: NodeJS.Timeout;
  #listeners = new Set<() => void>();

  private constructor(db: Database.Database) {
    this.#db = db;
    db.exec(`CREATE TABLE IF NOT EXISTS revocations (kind TEXT NOT NULL, value TEXT NOT NULL, reason TEXT NOT NULL, by TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (kind, value));
             CREATE TABLE IF NOT EXISTS exchanged (issuer TEXT NOT NULL, jti TEXT NOT NULL, expires INTEGER NOT NULL, PRIMARY KEY (issuer, jti));`);
    this.refresh();
  }

  /** Opens (creating, mode 0600) the file at path, or ':memory:' for tests. */
  static open(path: string): AuthStateStore {
    const full = path === ':memory:' ? path : resolve(path);
    if (full !== ':memory:') {
      mkdirSync(dirname(full), { recursive: true, mode: 0o700 });
      closeSync(openSync(full, 'a', 0o600));
    }
    const db = new Database(full, { timeout: 2000 });
    if (full !== ':memory:') db.pragma('journal_mode = WAL');
    return new AuthStateStore(db);
  }

  /** Re-reads the table; listeners run when anything changed. */
  refresh(): void {
    const rows = this.#db.prepare(`SELECT kind, value, reason, by, at FROM revocations`).all() as Array<{ kind: RevocationKind; value: string; reason: string; by: string; at: number }>;
    const ids = new Map<string, Revocation>();
    const toks = new Map<string, Revocation>();
    for (const r of rows) (r.kind === 'identity' ? ids : toks).set(r.value, { ...r, at: new Date(r.at) });
    const changed = ids.size !== this.#identities.size || toks.size !== this.#tokens.size || [...ids.keys()].some((k) => !this.#identities.has(k)) || [...toks.keys()].some((k) => !this.#tokens.has(k));
    this.#identities = ids;
    this.#tokens = toks;
    if (changed) for (const l of this.#listeners) l();
  }

  /** Polls every intervalMs (unref'd) until close(). */
  startPolling(intervalMs: number): void {
    this.#timer ??= setInterval(() => {
      try {
        this.refresh();
      } catch {
        // a locked or briefly unreadable file: keep the last snapshot, try again next tick
      }
    }, intervalMs);
    this.#timer.unref();
  }

  onChange(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  revoke(kind: RevocationKind, value: string, reason: string, by: string): void {
    this.#db.prepare(`INSERT INTO revocations (kind, value, reason, by, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, value) DO UPDATE SET reason = excluded.reason, by = excluded.by, at = excluded.at`).run(kind, value, reason, by, Date.now());
    this.refresh();
  }

  /** Lifts a revocation; true when there was one. */
  unrevoke(kind: RevocationKind, value: string): boolean {
    const n = this.#db.prepare(`DELETE FROM revocations WHERE kind = ? AND value = ?`).run(kind, value).changes;
    this.refresh();
    return n > 0;
  }

  list(): Revocation[] {
    return [...this.#identities.values(), ...this.#tokens.values()];
  }

  /** The revocation that applies to an identity or a token id, from the last snapshot. */
  revoked(identity: string, tokenId?: string): Revocation | undefined {
    return this.#identities.get(identity) ?? (tokenId !== undefined ? this.#tokens.get(tokenId) : undefined);
  }

  /** Records a subject token as exchanged; false when it already was (a replay). Expired rows are pruned. */
  claimOnce(issuer: string, jti: string, expiresMs: number): boolean {
    const now = Date.now();
    this.#db.prepare(`DELETE FROM exchanged WHERE expires < ?`).run(now);
    return this.#db.prepare(`INSERT INTO exchanged (issuer, jti, expires) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`).run(issuer, jti, expiresMs).changes === 1;
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#listeners.clear();
    this.#db.close();
  }
}
